"""hardmine.cluster.kmeans against faiss.Kmeans, same data, k, iterations and sampling, one process.

Shapes (HARDMINE_BENCH_SIZE=full / ci): n=500,000 / 50,000 rows, d=128, k=1024 / 128,
20 iterations, at most 256 training rows per centroid (FAISS's default, used by both).
Reported: median time and the final inertia over all rows (lower is better).
"""

from __future__ import annotations

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from conftest import SIZE_NAME, record_peer  # noqa: E402
from hardmine import cluster  # noqa: E402

N, K = {"full": (500_000, 1024), "ci": (50_000, 128)}[SIZE_NAME]
DIM, ITERS = 128, 20


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    centres = 3 * rng.standard_normal((4 * K, DIM), dtype=np.float32)
    return centres[rng.integers(0, centres.shape[0], N)] + rng.standard_normal((N, DIM), dtype=np.float32)


def inertia(x, centroids) -> float:
    index = faiss.IndexFlatL2(DIM)
    index.add(centroids)
    distances, _ = index.search(x, 1)
    return float(distances.sum())


@pytest.mark.parametrize("side", ["hardmine", "faiss"])
def test_kmeans(benchmark, data, side):
    if side == "hardmine":
        def run():
            return cluster.kmeans(data, K, iters=ITERS, seed=0).centroids
    else:
        def run():
            model = faiss.Kmeans(DIM, K, niter=ITERS, seed=1234, max_points_per_centroid=256)
            model.train(data)
            return model.centroids
    centroids = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    record_peer(f"kmeans n={N:,} d={DIM} k={K}", "faiss.Kmeans" if side == "faiss" else "hardmine.cluster.kmeans",
                benchmark.stats.stats.median, None, int(round(inertia(data, np.ascontiguousarray(centroids)))))
