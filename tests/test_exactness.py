"""Exact means exact: the certified paths (``precision="int8"/"bf16"``) and the reference backend
against the independent oracle (tests/oracle.py) on data built to break them: clustered rows with
varying norms, fp16 and fp32, near-copies a few ulps apart that overflow the shortlist, exact
multiples of one row, tiny and huge rows, exclusions and score windows. docs/precision.md
("Exact scores") states the guarantee checked here."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import hardmine
import oracle
from hardmine import backends

#: the certified paths live in the compiled core (absent in the Numba-only install)
_CORE = backends.status()["cpu"]
needs_core = pytest.mark.skipif(_CORE is not None, reason=f"certified scoring lives in the compiled core: {_CORE}")
CODES = tuple(pytest.param(codes, marks=needs_core) for codes in ("int8", "bf16"))


def _near_copies(rng, row: np.ndarray, count: int, dtype) -> np.ndarray:
    """``count`` copies of ``row`` (in ``dtype``), each with one coordinate moved 1-5 ulps."""
    copies = np.repeat(row.astype(dtype)[None], count, axis=0)
    for r in range(count):
        j = rng.integers(row.size)
        value = copies[r, j]
        for _ in range(int(rng.integers(1, 6))):
            value = np.nextafter(value, dtype(np.inf) if rng.random() < 0.5 else dtype(-np.inf))
        copies[r, j] = value
    return copies


@functools.lru_cache(maxsize=None)
def _data(dtype_name: str, seed: int):
    """(queries, candidates, exclusion lists): 3000 clustered candidates (norms 0.5-3x) and 600
    near-copies of one of them; 30 clustered queries and 10 close to the copied row."""
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng(seed)
    d = 48
    centers = rng.standard_normal((40, d))
    clustered = centers[rng.integers(0, 40, 3000)] + 0.03 * rng.standard_normal((3000, d))
    clustered *= rng.uniform(0.5, 3.0, (3000, 1))
    copied = clustered[7]
    candidates = np.vstack([clustered.astype(dtype), _near_copies(rng, copied, 600, dtype)])
    queries = centers[rng.integers(0, 40, 30)] + 0.03 * rng.standard_normal((30, d))
    near = copied + 0.01 * rng.standard_normal((10, d))
    queries = np.vstack([queries, near]).astype(dtype) * rng.uniform(0.5, 3.0, (40, 1)).astype(dtype)
    exclude = [sorted(set(rng.integers(0, candidates.shape[0], int(rng.integers(0, 6))).tolist()))
               for _ in range(queries.shape[0])]
    return queries, candidates, exclude


def _mask(exclude, num_candidates: int) -> np.ndarray:
    mask = np.zeros((len(exclude), num_candidates), dtype=bool)
    for row, ids in enumerate(exclude):
        mask[row, ids] = True
    return mask


@functools.lru_cache(maxsize=None)
def _oracle_top(dtype_name: str, metric: str) -> np.ndarray:
    queries, candidates, exclude = _data(dtype_name, 23)
    return oracle.topk(queries, candidates, 100, metric, excluded=_mask(exclude, candidates.shape[0]))


@pytest.mark.parametrize("k", [1, 10, 100])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("codes", [*CODES, "reference"])
def test_exact_paths_return_the_oracles_top_k(codes, metric, dtype, k):
    queries, candidates, exclude = _data(dtype, 23)
    where = dict(backend="reference") if codes == "reference" else dict(precision=codes)
    ours = hardmine.topk(queries, candidates, k, metric=metric, exclude=exclude, **where)
    np.testing.assert_array_equal(ours.indices, _oracle_top(dtype, metric)[:, :k])


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("codes", CODES)
def test_certified_mining_with_filters_returns_the_oracles_negatives_even_past_the_shortlist(codes, metric):
    queries, candidates, exclude = _data("float32", 5)
    approx = oracle.scores(queries, candidates, metric)
    top, low = np.float32(np.quantile(approx, 0.999)), np.float32(np.quantile(approx, 0.2))
    ours = hardmine.mine(queries, candidates, positives=exclude, num_negatives=10, max_score=float(top),
                         min_score=float(low), metric=metric, precision=codes)

    def admissible(row, values):  # the window applies to the score returned, fl32(s)
        returned = values.astype(np.float32)
        return (returned <= top) & (returned >= low)

    want = oracle.topk(queries, candidates, 10, metric, excluded=_mask(exclude, candidates.shape[0]),
                       admissible=admissible)
    np.testing.assert_array_equal(ours.indices, want)
    # the queries beside the 600 near-copies outgrow their shortlists: scored exhaustively, exactly
    assert ours.stats.shortlists.fell_back >= 1


@pytest.mark.parametrize("codes", CODES)
def test_exact_paths_give_the_same_score_bytes(codes):
    # one formula, one order of additions (docs/precision.md "Exact scores"): bit-identical scores
    for metric in ("dot", "cosine"):
        queries, candidates, exclude = _data("float16", 31)
        ours = hardmine.topk(queries, candidates, 20, metric=metric, precision=codes)
        reference = hardmine.topk(queries, candidates, 20, metric=metric, backend="reference")
        np.testing.assert_array_equal(ours.indices, reference.indices)
        assert ours.scores.tobytes() == reference.scores.tobytes()


@pytest.mark.parametrize("path", [*CODES, "reference"])
def test_cosine_ties_of_exact_multiples_are_ordered_by_index(path):
    # every multiple j * c (integers: exact sums) has the same real cosine; ties go by index
    rng = np.random.default_rng(77)
    base = rng.integers(-4, 5, 24).astype(np.float32)
    multiples = np.arange(1, 120, dtype=np.float32)[:, None] * base[None, :]
    others = rng.integers(-4, 5, (60, 24)).astype(np.float32)
    candidates = np.vstack([others, multiples[::-1]])  # the multiples in reverse order of size
    queries = rng.integers(-4, 5, (5, 24)).astype(np.float32)
    queries[0] = base * 3
    where = dict(backend="reference") if path == "reference" else dict(precision=path)
    ours = hardmine.topk(queries, candidates, 15, metric="cosine", **where)
    np.testing.assert_array_equal(ours.indices, oracle.topk(queries, candidates, 15, "cosine"))
    np.testing.assert_array_equal(ours.indices[0], np.arange(60, 75))  # cosine 1 for all: by index


@pytest.mark.parametrize("codes", CODES)
def test_tiny_and_huge_rows_are_exact_without_falling_back(codes):
    # subnormal float32 queries; candidates 10^22 apart in magnitude within one call (the frame's
    # powers of two keep float32 in range; docs/precision.md says where that ends)
    rng = np.random.default_rng(8)
    for query_scale, small, large in ((1e-38, 1e-30, 1e-8), (1e8, 1e-4, 1e18)):
        queries = (rng.standard_normal((6, 20)) * query_scale).astype(np.float32)
        candidates = rng.standard_normal((1500, 20))
        candidates[:700] *= small
        candidates[700:] *= large
        candidates = candidates.astype(np.float32)
        ours = hardmine.mine(queries, candidates, num_negatives=8, precision=codes)
        np.testing.assert_array_equal(ours.indices, oracle.topk(queries, candidates, 8, "dot"))
        assert ours.stats.shortlists.fell_back == 0


@pytest.mark.parametrize("codes", CODES)
def test_rows_the_screen_cannot_decide_are_scored_exactly(codes):
    rng = np.random.default_rng(9)
    queries = rng.standard_normal((5, 12)).astype(np.float32)
    queries[2] = 0  # a zero query: every score 0, ties by index
    candidates = rng.standard_normal((400, 12)).astype(np.float32)
    candidates[[10, 50]] = np.nan  # check_finite=False: never returned
    candidates[70, 3] = np.inf
    options = dict(num_negatives=6, check_finite=False)
    ours = hardmine.mine(queries, candidates, precision=codes, **options)
    reference = hardmine.mine(queries, candidates, backend="reference", **options)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert ours.scores.tobytes() == reference.scores.tobytes()
    np.testing.assert_array_equal(ours.indices[2], np.arange(6))
    assert not np.isin(ours.indices, [10, 50]).any()
    # a NaN bound (a query without positives under a relative margin) is decided exactly too
    positives = [[1], [2], [], [4], [5]]
    options = dict(positives=positives, relative_margin=0.1, num_negatives=6, metric="cosine")
    finite = np.nan_to_num(candidates, nan=0.5, posinf=1.0)
    ours = hardmine.mine(queries + 1, finite, precision=codes, **options)
    reference = hardmine.mine(queries + 1, finite, backend="reference", **options)
    np.testing.assert_array_equal(ours.indices, reference.indices)


@pytest.mark.parametrize("codes", CODES)
def test_a_window_that_admits_few_candidates_draws_exactly(codes):
    # uniform draws past the old cap (the window admits few candidates) and softmax draws over
    # near-copies: the draws of the exact scores, never the fp32 sampler's
    queries, candidates, _ = _data("float32", 12)
    approx = oracle.scores(queries, candidates, "dot")
    for strategy, extra in (("random", {}), ("softmax", {"temperature": 0.05})):
        options = dict(num_negatives=4, strategy=strategy, rank_range=(0, None), seed=3,
                       min_score=float(np.quantile(approx, 0.9995)), **extra)
        ours = hardmine.mine(queries, candidates, precision=codes, **options)
        reference = hardmine.mine(queries, candidates, backend="reference", **options)
        np.testing.assert_array_equal(ours.indices, reference.indices)
        np.testing.assert_array_equal(ours.scores, reference.scores)


def test_softmax_temperatures_too_small_for_float32_priorities_are_refused():
    queries, candidates = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match=r"temperature must be at least 9\.54e-07"):
        hardmine.mine(queries, candidates, strategy="softmax", temperature=1e-310, rank_range=(0, None))


@needs_core
def test_the_smallest_softmax_temperature_draws_alike_on_the_certified_path():
    queries, candidates = np.ones((2, 3), np.float32), np.ones((5, 3), np.float32)
    smallest = hardmine.mine(queries, candidates, strategy="softmax", temperature=2.0**-20, rank_range=(0, None),
                             num_negatives=3, precision="int8")
    np.testing.assert_array_equal(smallest.indices, hardmine.mine(
        queries, candidates, strategy="softmax", temperature=2.0**-20, rank_range=(0, None), num_negatives=3,
        backend="reference").indices)
