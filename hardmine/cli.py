"""The ``hardmine`` command line: ``info``, ``demo``, ``mine``, ``merge``, ``report``, ``eval``, ``select``, ``bench``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import api, backends
from .io.command import add_commands as offline_commands
from .synthetic import demo_world


def _demo(args: argparse.Namespace) -> int:
    n_images = args.images
    print(f"hardmine demo: {n_images} images x {args.captions} captions, d={args.dim}, fp16 dump")
    world = demo_world(n_images, captions_per_image=args.captions, dim=args.dim, seed=args.seed)
    if args.keep_dump:
        return _write_dump(world, args.keep_dump)
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
    fine = world.fine
    for image in range(min(3, n_images)):
        print(f"image {image} (fine category {fine[image]}), hardest positive score "
              f"{positives.positive_scores[image]:.3f}:")
        for rank in range(min(args.k, 3)):
            caption = int(result.indices[image, rank])
            owner = int(world.caption_image[caption])
            kind = "generic caption" if world.generic[caption] else "caption"
            same = "same category" if fine[owner] == fine[image] else "other category"
            print(f"  #{rank} {kind} {caption:>7} of image {owner:>6} ({same})  score {result.scores[image, rank]:.3f}")
    hardest = result.indices[:, 0]
    same_fine = fine[world.caption_image[hardest]] == fine
    false_negative = same_fine & world.generic[hardest]
    print(f"hardest negative from the same fine category: {same_fine.mean():.1%} of images, and a generic caption "
          f"of that category (it describes the image too: a false negative): {false_negative.mean():.1%}; "
          f"images violating margin {args.margin}: {(positives.count > 0).mean():.1%}")
    return 0


def _write_dump(world, folder: str) -> int:
    """Saves the world as a dump for `hardmine mine`: images, captions in 4 shards, and the
    group files that make each image's own captions its positives."""
    root = Path(folder)
    if root.exists() and any(root.iterdir()):
        print(f"hardmine demo: error: {root} is not empty", file=sys.stderr)
        return 2
    (root / "captions").mkdir(parents=True, exist_ok=True)
    np.save(root / "images.npy", world.images)
    np.save(root / "image_ids.npy", np.arange(world.images.shape[0]))
    np.save(root / "caption_image.npy", world.caption_image)
    cuts = np.linspace(0, world.captions.shape[0], 5).astype(int)
    for shard, (start, stop) in enumerate(zip(cuts[:-1], cuts[1:])):
        np.save(root / "captions" / f"captions-{shard:02d}.npy", world.captions[start:stop])
    print(f"hardmine demo: wrote {root}: images.npy {world.images.shape}, captions/ "
          f"{world.captions.shape} in 4 shards (fp16), image_ids.npy, caption_image.npy\nmine it with:\n"
          f"  hardmine mine --queries {root}/images.npy --candidates {root}/captions "
          f"--query-groups {root}/image_ids.npy --candidate-groups {root}/caption_image.npy "
          f"--metric cosine --num-negatives 5 --out negatives.parquet")
    return 0


def _select(args: argparse.Namespace) -> int:
    from . import active
    from .io.dumps import DumpError, load_ids, read_npy
    from .io.outputs import atomic_write

    out = Path(args.out)
    if out.suffix not in (".npy", ".txt"):
        raise ValueError(f"--out must end in .npy or .txt; got {out}")
    arrays = {}
    for name in ("unpaired", "images", "texts"):
        path = getattr(args, name)
        try:
            arrays[name] = read_npy(path, f"--{name} {path}")
        except DumpError as error:
            raise ValueError(str(error)) from None
    try:
        pairs = load_ids(args.pairs, "pairs") if args.pairs else None
    except DumpError as error:
        raise ValueError(str(error)) from None
    scores = active.score_unpaired(
        arrays["unpaired"], arrays["images"], arrays["texts"], pairs, side=args.side, margin=args.margin,
        threshold=args.threshold, weight=args.weight, variant=args.variant, minibatch_size=args.minibatch_size,
        k=args.k, seed=args.seed, metric=args.metric, backend=args.backend,
    )
    chosen = active.select(scores, args.budget)
    if out.suffix == ".npy":
        atomic_write(out, lambda target: np.save(target, chosen))
    else:
        atomic_write(out, lambda target: target.write("".join(f"{i}\n" for i in chosen).encode()))
    print(f"hardmine select: {chosen.size} of {scores.size} unpaired {args.side}s -> {out} "
          f"(scores {scores[chosen].min():g} to {scores[chosen].max():g}; "
          f"{int((scores > 0).sum())} with a non-zero score)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from . import eval as evaluation
    from .io.dumps import DumpError, read_npy

    try:
        images = read_npy(args.images, f"--images {args.images}")
        texts = read_npy(args.texts, f"--texts {args.texts}")
        owner = read_npy(args.text_to_image, f"--text-to-image {args.text_to_image}", mmap_mode=None)
    except DumpError as error:
        raise ValueError(str(error)) from None
    ks = tuple(int(k) for k in args.ks.split(","))
    result = evaluation.recall_at_k(images, texts, owner, ks=ks, metric=args.metric, backend=args.backend)
    print(f"{'':<6}" + "".join(f"{'R@' + str(k):>9}" for k in ks))
    print(f"{'i2t':<6}" + "".join(f"{result.i2t[k]:>9.2f}" for k in ks))
    print(f"{'t2i':<6}" + "".join(f"{result.t2i[k]:>9.2f}" for k in ks))
    print(f"rsum {result.rsum:.2f}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """A quick side-by-side table on generated data: hardmine's backends and NumPy's matmul + argpartition."""
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    candidates = rng.standard_normal((args.candidates, args.dim), dtype=np.float32)
    flops = 2.0 * args.queries * args.candidates * args.dim

    def numpy_topk():
        scores = queries @ candidates.T
        part = np.argpartition(-scores, args.k - 1, axis=1)[:, : args.k]
        return np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1), 1)

    runs = [("numpy matmul+argpartition", numpy_topk)]
    simulated = []
    for name, reason in backends.status().items():
        if reason is not None or name == "reference":
            continue
        if getattr(backends.get(name), "simulated", False):  # a CUDA simulator's time says nothing
            simulated.append(name)
            continue
        runs.append((f"hardmine {name}", lambda name=name: api.topk(queries, candidates, args.k, backend=name)))
    print(f"top-{args.k}: {args.queries} queries x {args.candidates} candidates, d={args.dim} (best of 3)")
    for name in simulated:
        print(f"  hardmine {name}: runs under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not timed")
    for label, run in runs:
        run()  # warm-up (JIT, page faults)
        best = min(_timed(run) for _ in range(3))
        print(f"  {label:<28} {best * 1e3:9.1f} ms {flops / best / 1e9:8.1f} GFLOP/s")
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _info(args: argparse.Namespace) -> int:
    api.info()
    return 0


def _demo_command(commands) -> None:
    """The ``hardmine demo`` subcommand and its options."""
    demo = commands.add_parser("demo", help="generate a small embedding dump and mine it")
    demo.add_argument("--images", type=int, default=30_000, help="number of images (default 30000)")
    demo.add_argument("--captions", type=int, default=5, help="captions per image (default 5)")
    demo.add_argument("--dim", type=int, default=64, help="embedding dimension (default 64)")
    demo.add_argument("--k", type=int, default=5, help="negatives per image (default 5)")
    demo.add_argument("--margin", type=float, default=0.2, help="triplet margin (default 0.2)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto")
    demo.add_argument("--keep-dump", metavar="DIR", help="only write the dump to DIR (for hardmine mine) and exit")
    demo.set_defaults(run=_demo)


def _eval_command(commands) -> None:
    """The ``hardmine eval`` subcommand and its options."""
    evaluate = commands.add_parser("eval", help="Recall@K both ways for image and text embedding dumps")
    evaluate.add_argument("--images", required=True, help=".npy (N, d)")
    evaluate.add_argument("--texts", required=True, help=".npy (M, d)")
    evaluate.add_argument("--text-to-image", required=True, help=".npy (M,) image row of each text")
    evaluate.add_argument("--ks", default="1,5,10", help="comma-separated K values (default 1,5,10)")
    evaluate.add_argument("--metric", default="cosine", choices=["dot", "cosine"])
    evaluate.add_argument("--backend", default="auto")
    evaluate.set_defaults(run=_eval)


def _bench_command(commands) -> None:
    """The ``hardmine bench`` subcommand and its options."""
    bench = commands.add_parser("bench", help="quick top-k benchmark table on generated data")
    bench.add_argument("--queries", type=int, default=1024)
    bench.add_argument("--candidates", type=int, default=65536)
    bench.add_argument("--dim", type=int, default=384)
    bench.add_argument("--k", type=int, default=10)
    bench.set_defaults(run=_bench)


def _select_command(commands) -> None:
    """The ``hardmine select`` subcommand and its options."""
    select = commands.add_parser(
        "select", help="active learning: the unpaired samples worth annotating (Jo et al. 2024)",
        description="Scores unpaired images (or texts with --side text) by how many paired texts they would be "
                    "hard negatives for (SPEC 5.4) and writes the --budget best ids, best first, ties by id.",
    )
    select.add_argument("--unpaired", required=True, help=".npy (U, d) unpaired images (or texts)")
    select.add_argument("--images", required=True, help=".npy (N, d) paired images")
    select.add_argument("--texts", required=True, help=".npy (T, d) paired texts")
    select.add_argument("--pairs", help=".npy (T,) image row of each text (default: text j <-> image j)")
    select.add_argument("--budget", type=int, required=True, help="how many ids to select")
    select.add_argument("--out", required=True, help="selected ids: .npy or .txt (one per line)")
    select.add_argument("--side", default="image", choices=["image", "text"])
    select.add_argument("--weight", default="binary", choices=["binary", "hinge"])
    select.add_argument("--variant", default="full", choices=["full", "minibatch", "topk"])
    select.add_argument("--minibatch-size", type=int)
    select.add_argument("--k", type=int)
    select.add_argument("--margin", type=float, default=0.2)
    select.add_argument("--threshold", type=float, default=0.0)
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--metric", default="cosine", choices=["dot", "cosine"])
    select.add_argument("--backend", default="auto")
    select.set_defaults(run=_select)


def _report(args: argparse.Namespace) -> int:
    from . import report
    from .io.dumps import load_ids, read_npy

    candidate_ids = None if args.candidate_ids is None else read_npy(args.candidate_ids, "--candidate-ids")
    result = report.read_output(args.out, candidate_ids)
    options = None
    if args.options is not None:
        text = Path(args.options).read_text() if os.path.exists(args.options) else args.options
        try:
            options = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"--options must be a JSON object or a file holding one ({error})") from None
        if not isinstance(options, dict):
            raise ValueError("--options must be a JSON object")
    numbers = report.write(
        result, read_npy(args.queries, "--queries"), read_npy(args.candidates, "--candidates"), args.html,
        positives=None if args.positives is None else load_ids(args.positives, "--positives"),
        keys=None if args.keys is None else read_npy(args.keys, "--keys"),
        texts=None if args.texts is None else report.read_texts(args.texts),
        query_texts=None if args.query_texts is None else report.read_texts(args.query_texts),
        margin=args.margin, near_duplicate=args.near_duplicate, options=options,
        png_path=args.png, source=f"{args.out}: {Path(args.out).name}",
    )
    print(f"hardmine report: {args.html}: {numbers.negatives} negatives for {numbers.queries} queries, "
          f"{numbers.above_positive:.2%} above their positive, {numbers.suspects} suspected false negatives, "
          f"{numbers.short_queries} queries short of negatives")
    return 0


def _report_command(commands) -> None:
    """The ``hardmine report`` subcommand and its options."""
    rep = commands.add_parser("report", help="an HTML page about mined negatives: scores, suspects, coverage")
    rep.add_argument("out", help="the output of hardmine mine (.parquet, .npz or .jsonl)")
    rep.add_argument("--queries", required=True, help=".npy (Q, d) the run's queries")
    rep.add_argument("--candidates", required=True, help=".npy (C, d) the run's candidates")
    rep.add_argument("--positives", help=".npy ids (Q,) or (Q, m), or .npz CSR: needed to find suspects")
    rep.add_argument("--keys", help=".npy (C,) integer keys: a negative sharing its positive's key is a suspect")
    rep.add_argument("--texts", help="candidate texts, one per row (.txt, .jsonl/.parquet 'text' column, .npy)")
    rep.add_argument("--query-texts", help="query texts, one per row (same formats)")
    rep.add_argument("--candidate-ids", help=".npy the run's --candidate-ids, when OUT names negatives by id")
    rep.add_argument("--margin", type=float, default=0.05, help="the band below the positive to count (0.05)")
    rep.add_argument("--near-duplicate", type=float, default=0.95,
                     help="cosine to a positive from which a negative is a suspect (0.95)")
    rep.add_argument("--options", help="the mining options shown on the page: JSON, or a file holding it")
    rep.add_argument("--html", required=True, help="the page to write")
    rep.add_argument("--png", help="the main plot as PNG (default: the page's path with .png)")
    rep.set_defaults(run=_report)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C / SIGINT stops a command cleanly however it was started: a process launched
        # with SIGINT ignored (nohup, some CI runners) would otherwise never see it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(prog="hardmine", description="Exact, fast hard-negative mining.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, backends and build facts").set_defaults(run=_info)
    for add in (_demo_command, _eval_command, _bench_command, _select_command, offline_commands, _report_command):
        add(commands)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, RuntimeError) as error:
        parser.exit(2, f"hardmine {args.command}: error: {error}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"\nhardmine {args.command}: interrupted\n")
