"""Fuzzing as a test: hypothesis draws shapes, dtypes, layouts, extreme scales, exclusion forms,
rank windows, strategies, seeds and backends; every answer is checked against a float64
oracle written here (not the library's reference backend). Seeded and bounded for CI."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardmine
from conftest import available_engine_backends
from test_fuzz import LAYOUTS, layout

SCALES = (1e-30, 1e-12, 1.0, 1e12, 1e30)
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_queries, num_candidates, dim = draw(st.integers(0, 9)), draw(st.integers(0, 30)), draw(st.integers(1, 7))
    metric = draw(st.sampled_from(["dot", "cosine"]))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    values = draw(st.sampled_from(["gaussian", "ties", "duplicates"]))

    def make(rows: int) -> np.ndarray:
        if values == "ties":
            return rng.integers(-2, 3, (rows, dim)).astype(np.float64)
        base = rng.standard_normal((rows, dim))
        if values == "duplicates" and rows > 1:
            base[rng.integers(0, rows, rows // 2)] = base[0]
        return base

    queries, candidates = make(num_queries), make(num_candidates)
    if metric == "cosine":
        queries[~queries.any(axis=1), 0] = 1.0
        candidates[~candidates.any(axis=1), 0] = 1.0
        if dtype == np.float32:  # per-row extreme scales: the cosine must not care
            queries *= rng.choice(SCALES, size=(num_queries, 1))
            candidates *= rng.choice(SCALES, size=(num_candidates, 1))
    queries = layout(queries.astype(dtype), draw(st.sampled_from(LAYOUTS)))
    candidates = layout(candidates.astype(dtype), draw(st.sampled_from(LAYOUTS)))
    exclusion = draw(st.sampled_from(["none", "ids", "lists", "groups"]))
    excluded = np.zeros((num_queries, num_candidates), dtype=bool)
    options: dict = {}
    if exclusion == "ids" and num_candidates:
        ids = rng.integers(0, num_candidates, num_queries)
        options["exclude"] = ids
        excluded[np.arange(num_queries), ids] = True
    elif exclusion == "lists" and num_candidates:
        lists = [rng.choice(num_candidates, size=rng.integers(0, min(4, num_candidates) + 1), replace=False)
                 for _ in range(num_queries)]
        options["exclude"] = [list(ids) for ids in lists]
        for q, ids in enumerate(lists):
            excluded[q, ids] = True
    elif exclusion == "groups":
        query_groups, candidate_groups = rng.integers(0, 4, num_queries), rng.integers(0, 4, num_candidates)
        options.update(query_groups=query_groups, candidate_groups=candidate_groups)
        excluded = query_groups[:, None] == candidate_groups[None, :]
    block = draw(st.one_of(st.none(), st.tuples(st.integers(1, 8), st.integers(1, 16))))
    return queries, candidates, metric, options, excluded, block


def oracle_scores(queries: np.ndarray, candidates: np.ndarray, metric: str) -> np.ndarray:
    """float64 scores of the values the engine sees (fp16 rounding included)."""
    q = np.asarray(queries, dtype=np.float64)
    c = np.asarray(candidates, dtype=np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return q @ c.T


def oracle_topk(scores: np.ndarray, excluded: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) ids: best score first, ties by the smaller id, -1 padded."""
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for q in range(scores.shape[0]):
        admissible = np.flatnonzero(~excluded[q])
        order = admissible[np.lexsort((admissible, -scores[q, admissible]))][:k]
        out[q, : order.size] = order
    return out


def tolerance(queries, candidates, metric) -> float:
    half = np.asarray(queries).dtype == np.float16
    relative = 2e-3 if half else 1e-5
    if metric == "cosine":
        return relative
    scale = (np.abs(np.asarray(queries, np.float64)).sum(axis=1).max(initial=0)
             * np.abs(np.asarray(candidates, np.float64)).max(initial=0))
    return relative * (1.0 + scale)


def assert_same_ranking(indices, scores, expected, exact, excluded, tol):
    indices, scores = np.asarray(indices), np.asarray(scores)
    np.testing.assert_array_equal(indices >= 0, expected >= 0, err_msg="number of admissible results differs")
    assert np.isneginf(scores[indices < 0]).all()
    rows = np.arange(indices.shape[0])[:, None]
    valid = indices >= 0
    # one spare column, so that -1 (padding) indexes something; its values are masked out
    exact = np.concatenate([exact, np.zeros((exact.shape[0], 1))], axis=1)
    excluded = np.concatenate([excluded, np.zeros((excluded.shape[0], 1), dtype=bool)], axis=1)
    got = np.where(valid, exact[rows, indices], 0)
    want = np.where(valid, exact[rows, expected], 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol, err_msg="not the top-k (beyond ties)")
    np.testing.assert_allclose(np.where(valid, scores, 0), got, rtol=0, atol=tol, err_msg="scores are off")
    assert not excluded[rows, indices][valid].any(), "an excluded candidate came back"
    for row in range(indices.shape[0]):
        ids = indices[row][valid[row]]
        assert len(set(ids.tolist())) == ids.size, "duplicate ids"


@FUZZ
@given(case=problems(), k=st.integers(1, 35), backend=st.sampled_from(available_engine_backends()))
def test_topk_matches_the_float64_oracle(case, k, backend):
    queries, candidates, metric, options, excluded, block = case
    result = hardmine.topk(queries, candidates, k, metric=metric, backend=backend, block_size=block, **options)
    exact = oracle_scores(queries, candidates, metric)
    assert_same_ranking(result.indices, result.scores, oracle_topk(exact, excluded, k), exact, excluded,
                        tolerance(queries, candidates, metric))


@FUZZ
@given(case=problems(), count=st.integers(1, 6), first=st.integers(0, 8), span=st.one_of(st.none(), st.integers(1, 12)),
       strategy=st.sampled_from(["top", "random", "softmax"]), seed=st.integers(0, 2**31),
       backend=st.sampled_from(available_engine_backends()))
def test_mined_negatives_come_from_the_oracle_window(case, count, first, span, strategy, seed, backend):
    queries, candidates, metric, options, excluded, block = case
    rank_range = (first, None if span is None else first + span)
    positives = options.pop("exclude", None)
    result = hardmine.mine(queries, candidates, positives=positives, num_negatives=count, strategy=strategy,
                           rank_range=rank_range, seed=seed, temperature=0.5 if strategy == "softmax" else None,
                           metric=metric, backend=backend, block_size=block, **options)
    exact = oracle_scores(queries, candidates, metric)
    tol = tolerance(queries, candidates, metric)
    ranked = oracle_topk(exact, excluded, candidates.shape[0] or 1)
    stop = ranked.shape[1] if span is None else first + span
    indices = np.asarray(result.indices)
    for q in range(indices.shape[0]):
        window = ranked[q, first:stop]
        window = window[window >= 0]
        picked = indices[q][indices[q] >= 0]
        assert picked.size == min(count, window.size), "wrong number of negatives"
        assert result.num_valid[q] == picked.size
        if picked.size == 0:
            continue
        # every pick ranks inside the window, up to ties at its edges
        low, high = exact[q, window].min(), exact[q, window].max()
        assert ((exact[q, picked] >= low - tol) & (exact[q, picked] <= high + tol)).all(), "pick outside the window"
        assert not excluded[q, picked].any() and len(set(picked.tolist())) == picked.size
        assert np.all(np.diff(np.asarray(result.scores)[q, : picked.size]) <= 0), "picks not sorted by score"
        if strategy == "top":
            np.testing.assert_allclose(exact[q, picked], exact[q, window[: picked.size]], rtol=0, atol=tol)


@FUZZ
@given(dim=st.integers(1, 6), peak=st.sampled_from([1e-20, 1.0, 1e10, 1e16, 1e19, 3e38]),
       backend=st.sampled_from(available_engine_backends()))
def test_dot_products_are_exact_or_refused_never_overflowed(dim, peak, backend):
    rng = np.random.default_rng(dim)
    queries = (rng.uniform(-1, 1, (4, dim)) * peak).astype(np.float32)
    candidates = (rng.uniform(-1, 1, (6, dim)) * peak).astype(np.float32)
    bound = dim * np.abs(queries.astype(np.float64)).max() * np.abs(candidates.astype(np.float64)).max()
    try:
        result = hardmine.topk(queries, candidates, 3, backend=backend)
    except ValueError as error:
        assert bound > 2.0**100 and "overflow" in str(error)
        return
    assert bound <= 2.0**100, "a possible overflow was accepted"
    exact = oracle_scores(queries, candidates, "dot")
    assert np.isfinite(result.scores).all()
    assert_same_ranking(result.indices, result.scores, oracle_topk(exact, np.zeros(exact.shape, bool), 3), exact,
                        np.zeros(exact.shape, bool), 1e-5 * (1 + np.abs(exact).max()))


@pytest.mark.parametrize("backend", available_engine_backends())
def test_no_memory_leak_over_many_calls(backend):
    psutil = pytest.importorskip("psutil")
    rng = np.random.default_rng(0)
    queries, candidates = rng.standard_normal((64, 32), dtype=np.float32), rng.standard_normal((3000, 32),
                                                                                               dtype=np.float32)
    positives = rng.integers(0, 3000, 64)

    def calls():
        hardmine.topk(queries, candidates, 10, exclude=positives, backend=backend)
        hardmine.mine(queries, candidates, positives=positives, strategy="random", rank_range=(2, 30),
                      num_negatives=4, metric="cosine", backend=backend)
        hardmine.violations(queries, candidates, positives=positives, backend=backend)

    for _ in range(20):  # warm-up: JIT, allocator pools
        calls()
    before = psutil.Process().memory_info().rss
    for _ in range(200):
        calls()
    grown_mib = (psutil.Process().memory_info().rss - before) / 2**20
    assert grown_mib < 16, f"RSS grew by {grown_mib:.1f} MiB over 200 calls"


@pytest.mark.parametrize("backend", available_engine_backends())
def test_concurrent_calls_from_python_threads_give_the_sequential_answers(backend):
    rng = np.random.default_rng(1)
    candidates = rng.standard_normal((4000, 24), dtype=np.float32)
    inputs = [rng.standard_normal((50, 24), dtype=np.float32) for _ in range(6)]
    expected = [hardmine.topk(q, candidates, 8, backend=backend).indices for q in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = hardmine.topk(inputs[i], candidates, 8, backend=backend, num_threads=2).indices
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for i, indices in enumerate(expected):
        np.testing.assert_array_equal(results[i], indices)


@pytest.mark.parametrize("backend", available_engine_backends())
def test_concurrent_calls_leave_the_blas_thread_count_as_they_found_it(backend):
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return sorted((info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()
                      if info["user_api"] == "blas")

    before = blas_threads()
    rng = np.random.default_rng(2)
    candidates = rng.standard_normal((3000, 16), dtype=np.float32)

    def work() -> None:
        for _ in range(20):
            hardmine.topk(candidates[:40], candidates, 5, backend=backend)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert blas_threads() == before
