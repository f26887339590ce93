"""hardmine.violations and hardmine.similarity against float64 NumPy (SPEC 5.1)."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from conftest import scores64, tolerance
from data import KINDS, gaussian


def expected(dense, positive_mask, margin):
    """Plain float64 SPEC 5.1 with s_p = min over positives."""
    s_p = np.where(positive_mask, dense, np.inf).min(axis=1)
    negatives = np.where(positive_mask, -np.inf, dense)
    return s_p, negatives


def check(queries, candidates, positive_mask, backend, margin, metric="dot", half=False, **kwargs):
    result = hardmine.violations(queries, candidates, margin=margin, metric=metric, backend=backend, **kwargs)
    dense = scores64(queries, candidates, metric)
    s_p, negatives = expected(dense, positive_mask, margin)
    tol = tolerance(queries, candidates, metric, half)
    np.testing.assert_allclose(result.positive_scores, s_p, rtol=0, atol=tol.max())
    threshold = (s_p - margin)[:, None]
    # Candidates within the tolerance of the threshold may fall either way.
    low = (negatives > threshold + tol[:, None]).sum(axis=1)
    high = (negatives > threshold - tol[:, None]).sum(axis=1)
    assert np.all((low <= result.count) & (result.count <= high))
    hinge = np.maximum(0.0, margin + negatives - s_p[:, None]).sum(axis=1)
    np.testing.assert_allclose(result.hinge_sum, hinge, rtol=0, atol=(tol * (high + 1) * 2).max())
    best = negatives.max(axis=1)
    has_negative = np.isfinite(best)
    np.testing.assert_array_equal(result.argmax >= 0, has_negative)
    rows = np.flatnonzero(has_negative)
    np.testing.assert_allclose(dense[rows, result.argmax[rows]], best[rows], rtol=0, atol=tol.max())
    assert not positive_mask[rows, result.argmax[rows]].any()
    np.testing.assert_allclose(result.max[rows], np.maximum(0, margin + best[rows] - s_p[rows]), rtol=0,
                               atol=2 * tol.max())
    assert np.all(result.max[~has_negative] == 0)
    return result


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 0.2, 5.0])
def test_single_positive(backend, kind, metric, margin):
    rng = np.random.default_rng(3)
    queries, candidates = KINDS[kind](rng, 33, 12), KINDS[kind](rng, 150, 12)
    queries[np.linalg.norm(queries, axis=1) == 0, 0] = 1
    candidates[np.linalg.norm(candidates, axis=1) == 0, 0] = 1
    positives = rng.integers(0, 150, 33)
    mask = np.zeros((33, 150), bool)
    mask[np.arange(33), positives] = True
    check(queries, candidates, mask, backend, margin, metric, positives=positives, block_size=(8, 40))


def test_several_positives_use_the_hardest(backend):
    rng = np.random.default_rng(4)
    queries, candidates = gaussian(rng, 20, 16), gaussian(rng, 90, 16)
    positives = [rng.choice(90, size=1 + q % 3, replace=False) for q in range(20)]
    mask = np.zeros((20, 90), bool)
    for q, ids in enumerate(positives):
        mask[q, ids] = True
    check(queries, candidates, mask, backend, 0.5, positives=[list(p) for p in positives])


def test_groups_as_positives(backend):
    rng = np.random.default_rng(5)
    queries, candidates = KINDS["clustered"](rng, 25, 8), KINDS["clustered"](rng, 125, 8)
    query_groups, candidate_groups = np.arange(25), np.repeat(np.arange(25), 5)
    mask = query_groups[:, None] == candidate_groups[None, :]
    check(queries, candidates, mask, backend, 0.2, metric="cosine", query_groups=query_groups,
          candidate_groups=candidate_groups)


def test_given_positive_scores(backend):
    rng = np.random.default_rng(6)
    queries, candidates = gaussian(rng, 10, 8), gaussian(rng, 40, 8)
    given = rng.standard_normal(10).astype(np.float32) * 3
    result = hardmine.violations(queries, candidates, given, margin=0.1, backend=backend)
    dense = scores64(queries, candidates)
    np.testing.assert_array_equal(result.positive_scores, given)
    low = (dense > (given[:, None] - 0.1) + 1e-4).sum(axis=1)
    high = (dense > (given[:, None] - 0.1) - 1e-4).sum(axis=1)
    assert np.all((low <= result.count) & (result.count <= high))


def test_half_precision(backend):
    rng = np.random.default_rng(7)
    queries, candidates = gaussian(rng, 16, 32).astype(np.float16), gaussian(rng, 80, 32).astype(np.float16)
    positives = rng.integers(0, 80, 16)
    mask = np.zeros((16, 80), bool)
    mask[np.arange(16), positives] = True
    check(queries, candidates, mask, backend, 1.0, half=True, positives=positives)


def test_all_candidates_positive_gives_no_hardest(backend):
    queries = np.ones((2, 3), np.float32)
    candidates = np.ones((2, 3), np.float32)
    result = hardmine.violations(queries, candidates, query_groups=[0, 0], candidate_groups=[0, 0], backend=backend)
    assert result.argmax.tolist() == [-1, -1] and result.count.tolist() == [0, 0]


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_similarity_matches_numpy(backend, metric, dtype):
    rng = np.random.default_rng(8)
    queries, candidates = gaussian(rng, 31, 20).astype(dtype), gaussian(rng, 77, 20).astype(dtype)
    result = hardmine.similarity(queries, candidates, metric=metric, backend=backend, block_size=(8, 16))
    tol = tolerance(queries, candidates, metric, dtype == np.float16)
    np.testing.assert_allclose(result, scores64(queries, candidates, metric), rtol=0, atol=tol.max())
    assert result.dtype == np.float32 and result.shape == (31, 77)
