"""The ``hardmine`` command line: ``info`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from . import api
from .synthetic import caption_world


def _demo(args: argparse.Namespace) -> int:
    n_images = args.images
    print(f"hardmine demo: {n_images} images x {args.captions} captions, d={args.dim}, fp16 dump")
    world = caption_world(n_images, captions_per_image=args.captions, dim=args.dim, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="hardmine-demo-") as folder:
        paths = {}
        for name, array in (("images", world.images), ("captions", world.captions)):
            paths[name] = os.path.join(folder, f"{name}.npy")
            np.save(paths[name], array)
        images = np.load(paths["images"], mmap_mode="r")
        captions = np.load(paths["captions"], mmap_mode="r")
        print(f"dump: {paths['images']} {images.shape}, {paths['captions']} {captions.shape} (memory-mapped)")
        start = time.perf_counter()
        result = api.topk(
            images, captions, args.k, metric="cosine", query_groups=np.arange(n_images),
            candidate_groups=world.caption_image, backend=args.backend,
        )
        seconds = time.perf_counter() - start
        positives = api.violations(
            images, captions, query_groups=np.arange(n_images), candidate_groups=world.caption_image,
            metric="cosine", margin=args.margin, backend=args.backend,
        )
    flops = 2.0 * images.shape[0] * captions.shape[0] * args.dim
    print(f"top-{args.k} hardest non-positive captions for every image in {seconds:.2f} s "
          f"({images.shape[0] * captions.shape[0] / seconds / 1e9:.2f} G scores/s, {flops / seconds / 1e9:.0f} GFLOP/s)")
    for image in range(min(3, n_images)):
        print(f"image {image} (scene {world.image_cluster[image]}), hardest positive score "
              f"{positives.positive_scores[image]:.3f}:")
        for rank in range(min(args.k, 3)):
            caption = int(result.indices[image, rank])
            owner = int(world.caption_image[caption])
            same = "same scene" if world.image_cluster[owner] == world.image_cluster[image] else "other scene"
            print(f"  #{rank} caption {caption:>7} of image {owner:>6} ({same})  score {result.scores[image, rank]:.3f}")
    same_scene = world.image_cluster[world.caption_image[result.indices[:, 0]]] == world.image_cluster
    print(f"hardest negative from the same scene: {same_scene.mean():.1%} of images; "
          f"images violating margin {args.margin}: {(positives.count > 0).mean():.1%} "
          f"(mean {positives.count.mean():.1f} violating captions each)")
    return 0


def _info(args: argparse.Namespace) -> int:
    api.info()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hardmine", description="Exact, fast hard-negative mining.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, backends and build facts").set_defaults(run=_info)
    demo = commands.add_parser("demo", help="generate a small embedding dump and mine it")
    demo.add_argument("--images", type=int, default=30_000, help="number of images (default 30000)")
    demo.add_argument("--captions", type=int, default=5, help="captions per image (default 5)")
    demo.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    demo.add_argument("--k", type=int, default=5, help="negatives per image (default 5)")
    demo.add_argument("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, RuntimeError) as error:
        parser.exit(2, f"hardmine {args.command}: error: {error}\n")
