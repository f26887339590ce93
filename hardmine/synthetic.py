"""Synthetic image-caption embedding worlds with known truth (demo, tests, benches)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CaptionWorld(NamedTuple):
    """Image embeddings, their captions' embeddings and the ground truth linking them."""

    images: np.ndarray  # (n_images, dim)
    captions: np.ndarray  # (n_images * captions_per_image, dim)
    caption_image: np.ndarray  # (n_captions,) the image each caption describes
    image_cluster: np.ndarray  # (n_images,) the scene cluster of each image


def caption_world(
    n_images: int,
    *,
    captions_per_image: int = 5,
    dim: int = 64,
    n_clusters: int = 256,
    seed: int = 0,
    dtype: np.dtype | type = np.float16,
) -> CaptionWorld:
    """Clustered "images" with several noisy "captions" each, L2-normalised.

    Images of one cluster are near each other (hard negatives); each caption is
    a different noisy linear view of its image's latent, so the modalities do
    not align exactly.

    Examples
    --------
    >>> w = caption_world(10, n_clusters=2, dim=8)
    >>> w.images.shape, w.captions.shape, int(w.caption_image[7])
    ((10, 8), (50, 8), 1)
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    image_cluster = rng.integers(0, n_clusters, size=n_images)
    latent = centers[image_cluster] + 0.6 * rng.standard_normal((n_images, dim), dtype=np.float32)
    text_map = np.eye(dim, dtype=np.float32) + 0.3 * rng.standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim)
    images = latent + 0.2 * rng.standard_normal((n_images, dim), dtype=np.float32)
    caption_image = np.repeat(np.arange(n_images), captions_per_image)
    captions = latent[caption_image] @ text_map
    captions += 0.45 * rng.standard_normal(captions.shape, dtype=np.float32)
    for x in (images, captions):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return CaptionWorld(images.astype(dtype), captions.astype(dtype), caption_image, image_cluster)
