"""Test inputs: random, clustered, tie-heavy and layout-adversarial embeddings."""

from __future__ import annotations

import numpy as np


def gaussian(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, d), dtype=np.float32)


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int = 4) -> np.ndarray:
    centers = 3 * rng.standard_normal((clusters, d), dtype=np.float32)
    return centers[rng.integers(0, clusters, n)] + 0.1 * rng.standard_normal((n, d), dtype=np.float32)


def integer_ties(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Small integer values: dot products are exact in fp32, so ties are exact and
    only the smaller-index rule decides the order."""
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


def duplicated(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    base = rng.standard_normal((max(1, n // 3), d), dtype=np.float32)
    return base[rng.integers(0, base.shape[0], n)]


KINDS = {"gaussian": gaussian, "clustered": clustered, "integer_ties": integer_ties, "duplicated": duplicated}
