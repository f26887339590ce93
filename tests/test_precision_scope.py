"""precision="int8" / "bf16" past the plain top-k: candidate keys (one negative per key), violations
(count, hinge sum, hardest negative), against the float64 reference and the fp32 engine,
with the fallback paths forced."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import hardmine
from hardmine import backends

from conftest import scores64

if backends.status()["cpu"] is not None:
    pytest.skip(f"int8 scoring lives in the compiled core: {backends.status()['cpu']}", allow_module_level=True)


def pytest_generate_tests(metafunc):
    if "codes" in metafunc.fixturenames:  # both low-precision codes (docs/precision.md)
        metafunc.parametrize("codes", ["int8", "bf16"])


def _clustered(rng, n, d, spread=0.05):
    centres = rng.standard_normal((8, d))
    return (centres[rng.integers(0, 8, n)] + spread * rng.standard_normal((n, d))).astype(np.float32)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("num_keys", [3, 40, 900])
@pytest.mark.parametrize("options", [dict(), dict(relative_margin=0.05),
                                     dict(strategy="random", rank_range=(2, 30), max_score=2.0)])
def test_mine_with_keys_equals_the_reference(metric, num_keys, options, codes):
    """One negative per key, none sharing a positive's key: the same negatives as the reference.
    Duplicated rows share keys (as captions of one text would), so keys tie in score too."""
    rng = np.random.default_rng(zlib.crc32(f"{metric} {num_keys} {sorted(options.items())}".encode()))
    queries, candidates = _clustered(rng, 50, 20), _clustered(rng, 900, 20)
    keys = rng.integers(0, num_keys, 900)
    candidates[1::7] = candidates[0:-1:7]  # exact duplicates of their neighbour ...
    keys[1::7] = keys[0:-1:7]  # ... under the same key
    if metric == "dot":
        queries /= np.float32(4)
    positives = rng.integers(0, 900, 50)
    common = dict(positives=positives, num_negatives=6, metric=metric, exclude_keys=keys, **options)
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    reference = hardmine.mine(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.num_valid, reference.num_valid)
    dense = scores64(queries, candidates, metric)
    for row in range(50):
        found = ours.indices[row][ours.indices[row] >= 0]
        assert np.unique(keys[found]).size == found.size  # one per key
        assert keys[positives[row]] not in keys[found]
        np.testing.assert_allclose(ours.scores[row], reference.scores[row], rtol=0, atol=2e-6)
        np.testing.assert_allclose(dense[row, found], ours.scores[row][: found.size], atol=2e-6)
        if metric == "dot":  # exact sums: the reference's picks, ties by index
            np.testing.assert_array_equal(ours.indices[row], reference.indices[row])
    assert ours.stats.removed == reference.stats.removed


def test_keys_threshold_counts_distinct_keys(codes):
    """The k best lower bounds must come from k distinct keys: with 30 copies of the best row
    under one key, a threshold over copies would drop the true second-best key."""
    rng = np.random.default_rng(5)
    candidates = rng.standard_normal((600, 16)).astype(np.float32)
    query = rng.standard_normal((1, 16)).astype(np.float32)
    best = int(np.argmax(candidates @ query[0]))
    candidates[:30] = candidates[best]
    keys = np.arange(600)
    keys[:30] = 10_000
    keys[best] = 10_000
    ours = hardmine.mine(query, candidates, positives=[[]], num_negatives=5, exclude_keys=keys, precision=codes)
    reference = hardmine.mine(query, candidates, positives=[[]], num_negatives=5, exclude_keys=keys,
                              backend="reference")
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert list(ours.indices[0]).count(0) == 1  # the copies' key once, at its smallest index


def _violations(queries, candidates, codes, **kwargs):
    ours = hardmine.violations(queries, candidates, precision=codes, **kwargs)
    fp32 = hardmine.violations(queries, candidates, **kwargs)
    reference = hardmine.violations(queries, candidates, backend="reference", **kwargs)
    return ours, fp32, reference


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 0.2, 1.5])
@pytest.mark.parametrize("spread", [0.05, 1.0])
def test_violations_with_int8_equal_the_reference(metric, margin, spread, codes):
    rng = np.random.default_rng(zlib.crc32(f"{metric} {margin} {spread}".encode()))
    margin = margin if metric == "dot" else margin / 10  # cosines span [-1, 1]
    candidates = _clustered(rng, 1200, 24, spread)
    positives = [[p] for p in rng.integers(0, 1200, 70)]
    positives[::10] = [list(rng.integers(0, 1200, 3)) for _ in positives[::10]]  # far positives: many violators
    # each query near its first positive, as after training: few violators, so most queries
    # stay on the int8 path (the rest show the fallback)
    queries = candidates[[p[0] for p in positives]] + np.float32(0.3 * spread) * _clustered(rng, 70, 24, 1.0)
    if metric == "dot":
        queries /= np.float32(8)
    ours, fp32, reference = _violations(queries, candidates, codes, positives=positives, margin=margin, metric=metric)
    np.testing.assert_array_equal(ours.positive_scores, reference.positive_scores)
    dense = scores64(queries, candidates, metric)
    for q in range(70):
        negatives = np.setdiff1d(np.arange(1200), positives[q])
        threshold = np.float32(ours.positive_scores[q]) - np.float32(margin)
        exact = dense[q, negatives].astype(np.float32)  # fl32 of the exact score, as int8 returns it
        # (a query with more possible violators than the cap runs on fp32: its scores round
        # differently, so counts may differ where a score lies within rounding of the threshold)
        near = np.count_nonzero(np.abs(dense[q, negatives] - threshold) <= 4e-6 * max(1, abs(threshold)))
        assert abs(int(ours.count[q]) - np.count_nonzero(exact > threshold)) <= near
        assert abs(int(ours.count[q]) - int(reference.count[q])) <= near
        hinge = (np.float64(np.float32(margin)) + exact[exact > threshold] - ours.positive_scores[q]).sum()
        np.testing.assert_allclose(ours.hinge_sum[q], hinge, rtol=1e-6, atol=1e-5 * (near + 1))
        assert dense[q, ours.argmax[q]] == pytest.approx(dense[q, negatives].max(), abs=2e-6)
        assert ours.argmax[q] not in positives[q]
    assert np.count_nonzero(ours.count < 250) > 35  # mostly below the cap (272): the int8 path answers
    np.testing.assert_allclose(ours.max, reference.max, atol=4e-6)
    np.testing.assert_allclose(ours.hinge_sum, fp32.hinge_sum, rtol=1e-4, atol=1e-3)


def test_violations_int8_falls_back_where_violators_abound(codes):
    """Random rows and a wide margin: nearly every candidate violates, past the re-scoring cap
    (C/32), so the queries run on the fp32 engine: the same answer as the fp32 call."""
    rng = np.random.default_rng(11)
    queries, candidates = rng.standard_normal((30, 32)).astype(np.float32), rng.standard_normal((4000, 32)).astype(np.float32)
    positives = rng.integers(0, 4000, 30)
    ours = hardmine.violations(queries, candidates, positives=positives, margin=50.0, precision=codes)
    fp32 = hardmine.violations(queries, candidates, positives=positives, margin=50.0)
    assert (ours.count > 4000 // 32).all()
    np.testing.assert_array_equal(ours.count, fp32.count)
    np.testing.assert_array_equal(ours.argmax, fp32.argmax)
    np.testing.assert_allclose(ours.hinge_sum, fp32.hinge_sum, rtol=1e-6)


def test_violations_int8_groups_positive_scores_and_no_negatives(codes):
    rng = np.random.default_rng(12)
    queries, candidates = _clustered(rng, 20, 12), _clustered(rng, 300, 12)
    query_groups, candidate_groups = np.arange(20) % 5, np.arange(300) % 5
    common = dict(query_groups=query_groups, candidate_groups=candidate_groups, margin=0.3)
    ours = hardmine.violations(queries, candidates, precision=codes, **common)
    reference = hardmine.violations(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.argmax, reference.argmax)
    assert (candidate_groups[ours.argmax] != query_groups).all()
    given = hardmine.violations(queries, candidates, positive_scores=np.full(20, 0.5, np.float32), margin=0.1,
                                precision=codes)
    assert given.count.shape == (20,)
    # every candidate a positive: no negative, as the exact engine reports it
    none = hardmine.violations(queries[:2], candidates[:5], query_groups=np.zeros(2, np.int64),
                               candidate_groups=np.zeros(5, np.int64), precision=codes)
    exact = hardmine.violations(queries[:2], candidates[:5], query_groups=np.zeros(2, np.int64),
                                candidate_groups=np.zeros(5, np.int64))
    np.testing.assert_array_equal(none.argmax, exact.argmax)
    np.testing.assert_array_equal(none.count, exact.count)
    np.testing.assert_array_equal(none.max, exact.max)


def test_mining_stats_report_the_shortlists(codes):
    rng = np.random.default_rng(13)
    candidates = _clustered(rng, 3000, 32, 1.0)
    positives = rng.integers(0, 3000, 90)
    queries = candidates[positives] + np.float32(0.2) * rng.standard_normal((90, 32)).astype(np.float32)
    queries[:4] = 0  # zero rows: answered by the fp32 engine
    common = dict(positives=positives, num_negatives=10, relative_margin=0.05)
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    shortlists = ours.stats.shortlists
    assert shortlists.fell_back == 4
    assert 10 <= shortlists.mean <= shortlists.p99 <= shortlists.max <= 3000
    assert "int8: re-scored per query" in ours.stats.table()
    assert hardmine.mine(queries, candidates, **common).stats.shortlists is None  # fp32: nothing re-scored
    # over shards: the per-shard counts add up (each shard re-scores at least its own top 10)
    sharded = hardmine.mine(queries, [candidates[:1000], candidates[1000:]], precision=codes, **common)
    assert sharded.stats.shortlists.fell_back >= 4 and sharded.stats.shortlists.mean >= 20
    np.testing.assert_array_equal(sharded.indices, ours.indices)


def _as_the_reference(queries, candidates, codes, common):
    """Mines with certified ``codes`` and with the reference backend; the same negatives, exact scores."""
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    reference = hardmine.mine(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_allclose(ours.scores, reference.scores, rtol=0, atol=2e-6)
    return ours, reference


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("options", [dict(), dict(rank_range=(4, None)), dict(rank_range=(3, None), relative_margin=0.05),
                                     dict(max_score=0.0, seed=7), dict(rank_range=(2, 5000)), dict(query_offset=1000)])
def test_open_random_window_with_int8_equals_the_reference(metric, options, codes):
    """Uniform draws over the whole window visit candidates by priority and score only those:
    the reference's draws (same seeded priorities), scores exact, counts from the int8 screen."""
    rng = np.random.default_rng(zlib.crc32(f"{metric} {sorted(options.items())}".encode()))
    queries, candidates = _clustered(rng, 80, 20, 1.0), _clustered(rng, 1500, 20, 1.0)
    positives = [list(rng.integers(0, 1500, rng.integers(0, 3))) for _ in range(80)]
    common = dict(positives=positives, num_negatives=7, strategy="random", metric=metric, **options)
    ours, reference = _as_the_reference(queries, candidates, codes, common)
    for name, count in reference.stats.removed.items():  # a bound equal to a score may round either way
        assert abs(ours.stats.removed[name] - count) <= 2, name


def test_open_random_window_int8_fallback_shards_and_scope(codes):
    rng = np.random.default_rng(21)
    queries, candidates = _clustered(rng, 40, 16, 1.0), _clustered(rng, 6400, 16, 1.0)
    positives = rng.integers(0, 6400, 40)
    # a window that admits about 1 candidate in 500: more draws to score than the cap (C/32), so
    # those queries are drawn by the fp32 sampler (the same rows, hence the same draws)
    limit = np.quantile(queries @ candidates.T, 0.002, axis=1).min()
    common = dict(positives=positives, num_negatives=5, strategy="random", max_score=float(limit), seed=3)
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    fp32 = hardmine.mine(queries, candidates, **common)
    np.testing.assert_array_equal(ours.indices, fp32.indices)
    assert (ours.num_valid > 0).any()
    # candidate shards: the draws carry global ids
    common = dict(positives=positives, num_negatives=6, strategy="random", rank_range=(2, None), seed=9)
    sharded = hardmine.mine(queries, [candidates[:2500], candidates[2500:]], precision=codes, **common)
    np.testing.assert_array_equal(sharded.indices, hardmine.mine(queries, candidates, **common).indices)
    # keyed open draws: a key draws once and is represented by its best admissible candidate
    keys = np.arange(6400) % 900
    candidates[1::9] = candidates[0:-1:9]  # duplicates under one key: ties inside a key
    keys[1::9] = keys[0:-1:9]
    for strategy in ("random", "softmax"):
        keyed = dict(positives=positives, strategy=strategy, temperature=0.1 if strategy == "softmax" else None,
                     exclude_keys=keys, num_negatives=8, rank_range=(2, None), seed=5)
        ours = hardmine.mine(queries, candidates, precision=codes, **keyed)
        reference = hardmine.mine(queries, candidates, backend="reference", **keyed)
        np.testing.assert_array_equal(ours.indices, reference.indices)
        for row in ours.indices:
            found = row[row >= 0]
            assert np.unique(keys[found]).size == found.size


@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("options", [dict(temperature=0.05), dict(temperature=1.0, rank_range=(3, None)),
                                     dict(temperature=0.02, relative_margin=0.05, seed=4),
                                     dict(temperature=0.3, max_score=0.2, query_offset=77)])
def test_open_softmax_window_with_certified_scores_equals_the_reference(metric, options, codes):
    """Softmax draws bound each priority s / T + G from the screen's score bounds: the reference's
    draws (the same seeded Gumbel noise on exact scores), sharp and flat temperatures alike."""
    rng = np.random.default_rng(zlib.crc32(f"softmax {metric} {sorted(options.items())}".encode()))
    queries, candidates = _clustered(rng, 70, 20, 0.5), _clustered(rng, 1800, 20, 0.5)
    if metric == "dot":
        queries /= np.float32(6)
    positives = [list(rng.integers(0, 1800, rng.integers(1, 3))) for _ in range(70)]
    common = dict(positives=positives, num_negatives=6, strategy="softmax", metric=metric, **options)
    ours, _ = _as_the_reference(queries, candidates, codes, common)
    fp32 = hardmine.mine(queries, candidates, **common)
    np.testing.assert_array_equal(ours.indices, fp32.indices)
