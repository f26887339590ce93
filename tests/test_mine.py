"""hardmine.mine against a straightforward float64 NumPy implementation of SPEC 5.2."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from conftest import scores64
from data import KINDS, gaussian

TOL = 2e-5  # scores this close to a filter bound may fall either way; the data below keeps clear of that


def spec_window(dense, positives, *, keys=None, margin=None, relative_margin=None, max_score=None,
                min_score=None, semihard=False, rank_range=(0, None)):
    """Per query: the admissible negatives ranked best first, cut to the rank window (float64)."""
    windows, s_ps = [], []
    for q in range(dense.shape[0]):
        s = dense[q]
        pos = np.asarray(positives[q], dtype=np.int64)
        s_p = s[pos].min() if pos.size else np.nan
        ok = np.ones(s.shape, bool)
        ok[pos] = False
        if keys is not None and pos.size:
            ok &= ~np.isin(keys, keys[pos])
        if max_score is not None:
            ok &= s <= max_score
        if min_score is not None:
            ok &= s >= min_score
        if semihard:
            ok &= (s > s_p - margin) & (s < s_p)
        elif margin is not None:
            ok &= s <= s_p - margin
        if relative_margin is not None:
            ok &= s <= s_p - abs(s_p) * relative_margin
        ids = np.flatnonzero(ok)
        ids = ids[np.lexsort((ids, -s[ids]))]
        if keys is not None:
            _, first = np.unique(keys[ids], return_index=True)
            ids = ids[np.sort(first)]
        a, b = rank_range
        windows.append(ids[a:b])
        s_ps.append(s_p)
    return windows, np.array(s_ps)


def near_a_bound(dense, s_p, positives, semihard=False, **filters):
    """True when some non-positive score lies within TOL of a filter bound (an ambiguous case)."""
    dense = dense.copy()
    for q, pos in enumerate(positives):
        dense[q, pos] = np.inf
    bounds = []
    for name in ("max_score", "min_score"):
        if filters.get(name) is not None:
            bounds.append(np.full_like(s_p, filters[name]))
    if filters.get("margin") is not None:
        bounds.append(s_p - filters["margin"])
    if semihard:
        bounds.append(s_p)
    if filters.get("relative_margin") is not None:
        bounds.append(s_p - np.abs(s_p) * filters["relative_margin"])
    return any(np.any(np.abs(dense - b[:, None]) < TOL) for b in bounds)


def make(seed, kind="clustered", num_queries=40, num_candidates=300, dim=16):
    rng = np.random.default_rng(seed)
    queries, candidates = KINDS[kind](rng, num_queries, dim), KINDS[kind](rng, num_candidates, dim)
    positives = [rng.choice(num_candidates, size=1 + q % 3, replace=False) for q in range(num_queries)]
    return rng, queries, candidates, positives


FILTERS = [
    {},
    {"margin": 0.5},
    {"relative_margin": 0.05},
    {"max_score": 2.0},
    {"min_score": -1.0, "max_score": 3.0},
    {"margin": 0.2, "relative_margin": 0.1, "min_score": -5.0},
]


@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("rank_range", [(0, None), (3, 12)])
def test_top_matches_spec(backend, filters, with_keys, rank_range):
    rng, queries, candidates, positives = make(1)
    keys = rng.integers(0, 120, 300) if with_keys else None
    dense = scores64(queries, candidates)
    windows, s_p = spec_window(dense, positives, keys=keys, rank_range=rank_range, **filters)
    assert not near_a_bound(dense, s_p, positives, **filters), "test data lies on a filter bound"
    result = hardmine.mine(queries, candidates, positives=[list(p) for p in positives], num_negatives=6,
                           rank_range=rank_range, exclude_keys=keys, backend=backend, block_size=(7, 64), **filters)
    np.testing.assert_allclose(result.positive_scores, s_p, rtol=0, atol=TOL)
    for q, window in enumerate(windows):
        expected = window[:6]
        got = result.indices[q, : result.num_valid[q]]
        assert result.num_valid[q] == expected.size
        np.testing.assert_allclose(dense[q, got], dense[q, expected], rtol=0, atol=TOL)
        if keys is not None:
            assert len(set(keys[got].tolist())) == got.size
        assert np.all(result.indices[q, result.num_valid[q]:] == -1)


@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_semihard_matches_spec(backend, margin):
    _, queries, candidates, positives = make(2, kind="gaussian")
    dense = scores64(queries, candidates)
    windows, s_p = spec_window(dense, positives, margin=margin, semihard=True)
    assert not near_a_bound(dense, s_p, positives, semihard=True, margin=margin)
    result = hardmine.mine(queries, candidates, positives=[list(p) for p in positives], num_negatives=4,
                           strategy="semihard", margin=margin, backend=backend)
    for q, window in enumerate(windows):
        got = result.indices[q, : result.num_valid[q]]
        np.testing.assert_array_equal(got, window[:4])
        assert np.all((dense[q, got] > s_p[q] - margin) & (dense[q, got] < s_p[q]))


def test_groups_and_duplicate_keys_never_leak_positives(backend):
    """Captions duplicated across images (same key) are never negatives of their own image."""
    rng = np.random.default_rng(3)
    images = gaussian(rng, 30, 8)
    captions = np.repeat(images, 3, axis=0) + 0.01 * gaussian(rng, 90, 8)
    owner = np.repeat(np.arange(30), 3)
    keys = np.arange(90)
    keys[3] = keys[0]  # image 1's first caption has the same text as image 0's
    result = hardmine.mine(images, captions, query_groups=np.arange(30), candidate_groups=owner,
                           exclude_keys=keys, num_negatives=10, backend=backend)
    assert 3 not in result.indices[0].tolist()
    for q in range(30):
        got = result.indices[q, : result.num_valid[q]]
        assert not np.any(owner[got] == q)
        assert len(set(keys[got].tolist())) == got.size


def test_all_backends_block_sizes_and_threads_agree_for_random_draws():
    from conftest import available_engine_backends

    _, queries, candidates, positives = make(4, kind="duplicated", num_candidates=500)
    runs = []
    for backend in available_engine_backends() + ["reference"]:
        for block_size, threads in ((None, None), ((5, 33), 1), ((64, 7), 2)):
            if backend == "reference" and block_size is not None:
                continue
            runs.append(hardmine.mine(queries, candidates, positives=[list(p) for p in positives], strategy="random",
                                      rank_range=(2, 60), num_negatives=7, seed=11, backend=backend,
                                      block_size=block_size, num_threads=threads))
    # The same draws everywhere; their order follows scores, which differ in the last bit
    # between GEMM tile shapes, so two near-equal scores may swap places (SPEC 6).
    for other in runs[1:]:
        np.testing.assert_array_equal(np.sort(other.indices, axis=1), np.sort(runs[0].indices, axis=1))
        np.testing.assert_allclose(other.scores, runs[0].scores, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["random", "softmax"])
def test_mining_in_pieces_with_query_offset_draws_what_one_call_draws(backend, strategy):
    _, queries, candidates, positives = make(6, num_candidates=300)
    options = dict(strategy=strategy, rank_range=(1, 40), num_negatives=5, seed=4, backend=backend,
                   temperature=0.3 if strategy == "softmax" else None)
    whole = hardmine.mine(queries, candidates, positives=positives, **options)
    cuts = [0, 1, 9, len(queries)]
    pieces = [hardmine.mine(queries[a:b], candidates, positives=positives[a:b], query_offset=a, **options)
              for a, b in zip(cuts[:-1], cuts[1:])]
    np.testing.assert_array_equal(np.concatenate([p.indices for p in pieces]), whole.indices)
    unshifted = hardmine.mine(queries[9:], candidates, positives=positives[9:], **options)
    assert not np.array_equal(unshifted.indices, whole.indices[9:]), "the offset must change the draws"
    for offset in (-1, 2**62, 2**63):  # the same clear error on every backend
        with pytest.raises(ValueError, match=r"query_offset must be in \[0, 2\*\*62\)"):
            hardmine.mine(queries, candidates, query_offset=offset, backend=backend)


@pytest.mark.parametrize("strategy", ["random", "softmax"])
def test_draws_stay_in_the_window_and_depend_on_the_seed(backend, strategy):
    _, queries, candidates, positives = make(5)
    kwargs = dict(positives=[list(p) for p in positives], strategy=strategy, rank_range=(5, 25), num_negatives=5,
                  backend=backend, temperature=0.5 if strategy == "softmax" else None)
    dense = scores64(queries, candidates)
    windows, _ = spec_window(dense, positives, rank_range=(5, 25))
    first = hardmine.mine(queries, candidates, seed=1, **kwargs)
    again = hardmine.mine(queries, candidates, seed=1, **kwargs)
    other = hardmine.mine(queries, candidates, seed=2, **kwargs)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert not np.array_equal(first.indices, other.indices)
    for q, window in enumerate(windows):
        got = first.indices[q, : first.num_valid[q]]
        assert set(got.tolist()) <= set(window.tolist())
        assert np.all(np.diff(first.scores[q, : first.num_valid[q]]) <= 0)  # best first


SEEDS = list(range(400))


def chi_square_p(observed, expected):
    """Upper-tail p-value of Pearson's statistic (Wilson-Hilferty approximation)."""
    from math import erfc, sqrt

    statistic = float(((observed - expected) ** 2 / expected).sum())
    dof = observed.size - 1
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))
    return 0.5 * erfc(z / sqrt(2))


def test_random_is_uniform_over_the_window():
    """400 fixed seeds x 1 query picking 2 of a 10-wide window: every rank about equally often."""
    rng = np.random.default_rng(6)
    queries, candidates = gaussian(rng, 1, 8), gaussian(rng, 40, 8)
    order = np.argsort(-scores64(queries, candidates)[0], kind="stable")
    window = order[3:13]
    counts = np.zeros(10)
    for seed in SEEDS:
        got = hardmine.mine(queries, candidates, strategy="random", rank_range=(3, 13), num_negatives=2, seed=seed)
        for index in got.indices[0]:
            counts[np.flatnonzero(window == index)[0]] += 1
    assert chi_square_p(counts, np.full(10, counts.sum() / 10)) > 0.001


def test_softmax_follows_the_temperature():
    """Single draws: P(rank r) proportional to exp(s_r / T)."""
    rng = np.random.default_rng(7)
    queries, candidates = gaussian(rng, 1, 4), gaussian(rng, 12, 4)
    dense = scores64(queries, candidates)[0]
    order = np.argsort(-dense, kind="stable")[:6]
    temperature = 1.5
    weights = np.exp(dense[order] / temperature)
    counts = np.zeros(6)
    for seed in range(800):
        got = hardmine.mine(queries, candidates, strategy="softmax", rank_range=(0, 6), num_negatives=1,
                            temperature=temperature, seed=seed)
        counts[np.flatnonzero(order == got.indices[0, 0])[0]] += 1
    expected = weights / weights.sum() * counts.sum()
    assert chi_square_p(counts, expected) > 0.001
    uniform = np.full(6, counts.sum() / 6)
    assert chi_square_p(counts, uniform) < 0.001  # the temperature matters


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(strategy="best"), ValueError, r"strategy must be one of"),
        (dict(rank_range=(5, 5)), ValueError, r"rank_range must have a < b"),
        (dict(rank_range=5), TypeError, r"rank_range must be a pair"),
        (dict(rank_range=(-1, 4)), ValueError, r"rank_range\[0\] must be >= 0; got -1"),
        (dict(rank_range=("a", 4)), TypeError, r"rank_range\[0\] must be an integer"),
        (dict(strategy="softmax", rank_range=(0, 5)), ValueError, r"needs temperature > 0"),
        (dict(temperature=1.0), ValueError, r"temperature only applies to strategy='softmax'"),
        (dict(strategy="semihard"), ValueError, r"needs margin > 0"),
        (dict(num_negatives=0), ValueError, r"num_negatives must be >= 1"),
        (dict(margin=float("inf")), ValueError, r"margin must be a finite number"),
        (dict(exclude_keys=np.zeros(3, int)), ValueError, r"exclude_keys must have shape \(6,\)"),
        (dict(seed=1.5), TypeError, r"seed must be an integer"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    queries, candidates = np.ones((2, 3), np.float32), np.ones((6, 3), np.float32)
    with pytest.raises(error, match=message):
        hardmine.mine(queries, candidates, positives=np.array([0, 1]), **kwargs)


def test_positive_aware_filters_need_positives():
    with pytest.raises(ValueError, match=r"need positives or query/candidate groups"):
        hardmine.mine(np.ones((2, 3), np.float32), np.ones((6, 3), np.float32), margin=0.1)


def test_queries_without_positives_get_plain_ranking(backend):
    rng = np.random.default_rng(8)
    queries, candidates = gaussian(rng, 3, 4), gaussian(rng, 20, 4)
    result = hardmine.mine(queries, candidates, positives=[[1], [], [2]], num_negatives=3, backend=backend)
    assert np.isnan(result.positive_scores[1]) and not np.isnan(result.positive_scores[0])
    expected = hardmine.topk(queries[1:2], candidates, 3).indices[0]
    np.testing.assert_array_equal(result.indices[1], expected)
    with_margin = hardmine.mine(queries, candidates, positives=[[1], [], [2]], num_negatives=3, margin=0.0,
                                backend=backend)
    assert with_margin.num_valid[1] == 0


def test_stats_count_what_each_filter_removes(backend, capsys):
    rng, queries, candidates, positives = make(9)
    keys = rng.integers(0, 150, 300)
    filters = dict(margin=0.3, relative_margin=0.1, max_score=4.0, min_score=-2.0)
    dense = scores64(queries, candidates)
    _, s_p = spec_window(dense, positives, keys=keys, **filters)
    assert not near_a_bound(dense, s_p, positives, **filters)
    result = hardmine.mine(queries, candidates, positives=[list(p) for p in positives], exclude_keys=keys,
                           verbose=True, backend=backend, **filters)
    negative = np.ones(dense.shape, bool)
    key_shared = np.zeros(dense.shape, bool)
    for q, pos in enumerate(positives):
        negative[q, pos] = False
        key_shared[q] = np.isin(keys, keys[pos])
    expected = {
        "max_score": (negative & (dense > 4.0)).sum(),
        "min_score": (negative & (dense < -2.0)).sum(),
        "margin": (negative & (dense > (s_p - 0.3)[:, None])).sum(),
        "relative_margin": (negative & (dense > (s_p - np.abs(s_p) * 0.1)[:, None])).sum(),
    }
    stats = result.stats
    assert stats.removed == expected
    assert stats.key_excluded == (key_shared & negative).sum()
    assert stats.positive_pairs == sum(len(p) for p in positives)
    assert stats.negatives_returned == result.num_valid.sum()
    valid = result.scores[result.scores > -np.inf]
    assert stats.mean_negative_score == pytest.approx(valid.mean())
    printed = capsys.readouterr().out
    assert "beyond relative_margin" in printed and "mean positive score" in printed


def test_exact_ties_follow_the_smaller_index(backend):
    """Tie-heavy integer data: the mined order is fully determined, filters included."""
    rng = np.random.default_rng(10)
    queries, candidates = KINDS["integer_ties"](rng, 20, 3), KINDS["integer_ties"](rng, 200, 3)
    positives = [[int(i)] for i in rng.integers(0, 200, 20)]
    dense = scores64(queries, candidates)
    windows, _ = spec_window(dense, positives, max_score=2.0, rank_range=(1, None))
    result = hardmine.mine(queries, candidates, positives=positives, num_negatives=7, max_score=2.0,
                           rank_range=(1, None), backend=backend, block_size=(3, 17))
    for q, window in enumerate(windows):
        np.testing.assert_array_equal(result.indices[q, : result.num_valid[q]], window[:7])
