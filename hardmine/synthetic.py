"""Synthetic image-caption embedding worlds with known truth (demo, tests, benches)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class FineGrainedWorld(NamedTuple):
    """A coarse -> fine -> instance image-caption world with known truth.

    ``generic[c]`` marks a caption that describes its fine category rather than its
    instance: it is a near-duplicate of the other generic captions of that category,
    so it truly describes every image of it (a false negative for them).
    """

    images: np.ndarray  # (n_instances, dim), L2-normalised
    captions: np.ndarray  # (n_instances * captions_per_instance, dim), L2-normalised
    caption_image: np.ndarray  # (n_captions,) the instance (image row) each caption was written for
    fine: np.ndarray  # (n_instances,) fine category
    coarse: np.ndarray  # (n_instances,) coarse category
    generic: np.ndarray  # (n_captions,) bool


def _random_mlp(rng: np.random.Generator, fan_in: int, hidden: int, fan_out: int):
    w1 = rng.standard_normal((fan_in, hidden)) / np.sqrt(fan_in)
    b1 = 0.5 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((hidden, fan_out)) / np.sqrt(hidden)
    return lambda z: np.tanh(z @ w1 + b1) @ w2


def fine_grained_world(
    n_coarse: int = 10,
    fine_per_coarse: int = 8,
    instances_per_fine: int = 12,
    *,
    captions_per_instance: int = 5,
    latent_dim: int = 16,
    dim: int = 64,
    generic_rate: float = 0.3,
    noise: float = 0.3,
    aligned: bool = False,
    seed: int = 0,
) -> FineGrainedWorld:
    """Latents: coarse centres, fine offsets, instance offsets. Images are one random
    non-linear map (a tanh MLP) of the instance latent plus noise; captions another
    map of the instance latent, or, with probability ``generic_rate``, of the fine
    category's latent (a generic caption), each plus noise. ``aligned=True`` uses the
    image map for the captions too: embeddings as a trained dual encoder gives them.

    Examples
    --------
    >>> w = fine_grained_world(2, 2, 3, dim=8, seed=1)
    >>> w.images.shape, w.captions.shape, int(w.fine[5]), bool(w.generic.any())
    ((12, 8), (60, 8), 1, True)
    """
    rng = np.random.default_rng(seed)
    n_fine = n_coarse * fine_per_coarse
    n_instances = n_fine * instances_per_fine
    coarse_centres = 2.0 * rng.standard_normal((n_coarse, latent_dim))
    fine_of = np.repeat(np.arange(n_coarse), fine_per_coarse)
    fine_centres = coarse_centres[fine_of] + 1.0 * rng.standard_normal((n_fine, latent_dim))
    fine = np.repeat(np.arange(n_fine), instances_per_fine)
    instances = fine_centres[fine] + 0.7 * rng.standard_normal((n_instances, latent_dim))
    image_map = _random_mlp(rng, latent_dim, 4 * latent_dim, dim)
    text_map = _random_mlp(rng, latent_dim, 4 * latent_dim, dim)
    if aligned:
        text_map = image_map
    images = image_map(instances) + noise * rng.standard_normal((n_instances, dim))
    caption_image = np.repeat(np.arange(n_instances), captions_per_instance)
    generic = rng.random(caption_image.size) < generic_rate
    latent = np.where(generic[:, None], fine_centres[fine[caption_image]], instances[caption_image])
    latent = latent + 0.15 * rng.standard_normal(latent.shape)
    captions = text_map(latent) + noise * rng.standard_normal((caption_image.size, dim))
    unit = [(x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32) for x in (images, captions)]
    return FineGrainedWorld(unit[0], unit[1], caption_image, fine, fine_of[fine], generic)


def demo_world(n_images: int, *, captions_per_image: int = 5, dim: int = 64, seed: int = 0) -> FineGrainedWorld:
    """An aligned ``fine_grained_world`` (as a trained dual encoder would embed it) with exactly
    ``n_images`` images (10 coarse categories, 12 instances per fine category), stored in
    float16 like a real embedding dump.

    Examples
    --------
    >>> w = demo_world(100, dim=8)
    >>> w.images.shape, w.captions.shape, w.images.dtype
    ((100, 8), (500, 8), dtype('float16'))
    """
    per_coarse = max(1, -(-n_images // 120))
    world = fine_grained_world(10, per_coarse, 12, captions_per_instance=captions_per_image, dim=dim, aligned=True,
                               seed=seed)
    keep = n_images * captions_per_image  # captions are stored instance by instance
    return FineGrainedWorld(world.images[:n_images].astype(np.float16), world.captions[:keep].astype(np.float16),
                            world.caption_image[:keep], world.fine[:n_images], world.coarse[:n_images],
                            world.generic[:keep])
