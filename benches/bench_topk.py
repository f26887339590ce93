"""Exact top-k: hardmine backends side by side with FAISS, NumPy and NumPy's sgemm.

    HARDMINE_BENCH_SIZE=full python -m pytest benches/bench_topk.py \
        --benchmark-json benches/results/topk_full.json

Throughput is 2*Q*C*d / time (the score GEMM's flops); the summary table gives it
as a ratio to NumPy's sgemm of the same shape and to faiss.knn, all in one process.
"""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from hardmine import backends

from conftest import NUMPY_BLOCK, flops, numpy_sgemm, run  # noqa: E402  (benches/ is on sys.path)

faiss = pytest.importorskip("faiss")

KS = (10, 100)


@pytest.fixture(scope="module")
def data(size):
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((size["queries"], size["dim"]), dtype=np.float32)
    candidates = rng.standard_normal((size["candidates"], size["dim"]), dtype=np.float32)
    return queries, candidates


def numpy_topk(queries, candidates, k):
    """Blocked matmul + argpartition, merging per-block winners (the common NumPy recipe)."""
    best_scores = np.full((queries.shape[0], k), -np.inf, dtype=np.float32)
    best_ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
    for start in range(0, candidates.shape[0], NUMPY_BLOCK):
        scores = queries @ candidates[start : start + NUMPY_BLOCK].T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, part + start], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, 1)
        best_ids = np.take_along_axis(merged_ids, keep, 1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1), np.take_along_axis(best_scores, order, 1)


def test_numpy_sgemm(benchmark, data, record):
    queries, candidates = data
    run(benchmark, lambda: numpy_sgemm(queries, candidates))
    record("sgemm", "numpy sgemm (same shape)", benchmark, flops(queries, candidates))


@pytest.mark.parametrize("k", KS)
def test_faiss_knn(benchmark, data, record, k):
    queries, candidates = data
    distances, ids = run(benchmark, lambda: faiss.knn(queries, candidates, k, metric=faiss.METRIC_INNER_PRODUCT))
    record(f"fp32 k={k}", "faiss.knn", benchmark, flops(queries, candidates))
    check_against_hardmine(queries, candidates, k, ids, distances)


@pytest.mark.parametrize("k", KS)
def test_numpy_matmul_argpartition(benchmark, data, record, k):
    queries, candidates = data
    ids, scores = run(benchmark, lambda: numpy_topk(queries, candidates, k))
    record(f"fp32 k={k}", "numpy matmul+argpartition", benchmark, flops(queries, candidates))
    check_against_hardmine(queries, candidates, k, ids, scores)


def available(name: str) -> bool:
    return backends.status()[name] is None


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_hardmine_topk(benchmark, data, record, k, dtype, backend):
    if not available(backend):
        pytest.skip(f"{backend} backend not available: {backends.status()[backend]}")
    queries, candidates = data
    if dtype == "fp16":
        queries, candidates = queries.astype(np.float16), candidates.astype(np.float16)
    result = run(benchmark, lambda: hardmine.topk(queries, candidates, k, backend=backend))
    record(f"{dtype} k={k}", f"hardmine {backend}", benchmark, flops(queries, candidates))
    assert result.indices.shape == (queries.shape[0], k)


def check_against_hardmine(queries, candidates, k, ids, scores):
    """The peers must be computing the same thing: compare a sample of rows."""
    rows = slice(0, 64)
    ours = hardmine.topk(queries[rows], candidates, k)
    np.testing.assert_allclose(np.asarray(scores)[rows], ours.scores, rtol=1e-4, atol=1e-3)


#: a training-loop or single-lookup shape: a handful of queries against many fp16 candidates,
#: where the work must be shared by candidate ranges rather than query blocks
FEW_QUERIES = 4


@pytest.fixture(scope="module")
def few_queries_data(size):
    rng = np.random.default_rng(1)
    candidates = np.empty((size["candidates"] * 8, size["dim"]), dtype=np.float16)
    for start in range(0, candidates.shape[0], 65536):
        stop = min(start + 65536, candidates.shape[0])
        candidates[start:stop] = rng.standard_normal((stop - start, size["dim"]), dtype=np.float32)
    return candidates[:FEW_QUERIES].astype(np.float32), candidates


def test_numpy_few_queries(benchmark, few_queries_data, record):
    queries, candidates = few_queries_data
    run(benchmark, lambda: numpy_topk(queries, candidates, 10))
    record(f"fp16 {FEW_QUERIES} queries k=10", "numpy matmul+argpartition", benchmark, flops(queries, candidates))


@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_hardmine_few_queries(benchmark, few_queries_data, record, backend):
    if not available(backend):
        pytest.skip(f"{backend} backend not available: {backends.status()[backend]}")
    queries, candidates = few_queries_data
    result = run(benchmark, lambda: hardmine.topk(queries, candidates, 10, backend=backend))
    record(f"fp16 {FEW_QUERIES} queries k=10", f"hardmine {backend}", benchmark, flops(queries, candidates))
    np.testing.assert_array_equal(result.indices[:, 0], np.arange(FEW_QUERIES))
