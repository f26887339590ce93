"""``random`` and ``softmax`` over any rank window (issue 12): the backends' one-pass samplers
against the draw from the window held in memory, their independence from how the work is
cut, and chi-square tests of the laws they draw from."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import available_engine_backends

import hardmine
import oracle
from hardmine import _draws

ALL_BACKENDS = [*available_engine_backends(), "reference"]
STRATEGIES = [("random", None), ("softmax", 0.3)]


def _problem(seed: int = 0, num_queries: int = 12, num_candidates: int = 600, dim: int = 8):
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((num_queries, dim)).astype(np.float32)
    candidates = rng.standard_normal((num_candidates, dim)).astype(np.float32)
    positives = rng.integers(0, num_candidates, num_queries)
    keys = rng.integers(0, num_candidates // 3, num_candidates)
    return queries, candidates, positives, keys


def _p_value(statistic: float, dof: int) -> float:
    """Upper tail of the chi-square law (Wilson-Hilferty; accurate to ~1e-3 for dof >= 3)."""
    ratio = (statistic / dof) ** (1 / 3)
    z = (ratio - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def _chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    """p-value of observed counts against expected ones; neighbouring bins expecting fewer
    than 5 are merged first, as the test needs."""
    assert observed.sum() == pytest.approx(expected.sum())
    merged_observed, merged_expected, held = [], [], [0.0, 0.0]
    for seen, wanted in zip(observed, expected):
        held = [held[0] + seen, held[1] + wanted]
        if held[1] >= 5:
            merged_observed.append(held[0])
            merged_expected.append(held[1])
            held = [0.0, 0.0]
    merged_observed[-1] += held[0]
    merged_expected[-1] += held[1]
    o, e = np.array(merged_observed), np.array(merged_expected)
    assert o.size >= 4, "too few bins for a chi-square test"
    return _p_value(float(((o - e) ** 2 / e).sum()), o.size - 1)


def test_core_draw_is_the_python_draw(native):
    from hardmine import _core

    for seed, row, key in [(0, 0, 0), (7, 3, 11), (2**64 - 1, 2**40, 2**62), (123, -1, -5), (2**63, 99, 10**12)]:
        expected = float(_draws.uniform(seed, np.array([row]), np.array([key]))[0])
        assert _core.uniform_draw(seed % 2**64, row, key) == expected


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("strategy, temperature", STRATEGIES)
@pytest.mark.parametrize("with_keys", [False, True])
@pytest.mark.parametrize("first", [0, 7])
def test_open_window_draws_what_the_window_in_memory_draws(backend, strategy, temperature, with_keys, first):
    queries, candidates, positives, keys = _problem()
    common = dict(positives=positives, num_negatives=9, strategy=strategy, temperature=temperature, seed=5,
                  exclude_keys=keys if with_keys else None, query_offset=3)
    open_window = hardmine.mine(queries, candidates, rank_range=(first, None), backend=backend, **common)
    # b = C - 1 covers every admissible rank (each query has a positive) but is drawn in memory
    in_memory = hardmine.mine(queries, candidates, rank_range=(first, candidates.shape[0] - 1),
                              backend=backend, **common)
    np.testing.assert_array_equal(open_window.indices, in_memory.indices)
    np.testing.assert_array_equal(open_window.scores, in_memory.scores)
    assert (open_window.num_valid == 9).all()
    top = hardmine.mine(queries, candidates, positives=positives, num_negatives=first or 1,
                        exclude_keys=keys if with_keys else None, backend=backend)
    for drawn, best in zip(np.asarray(open_window.indices), np.asarray(top.indices)):
        assert first == 0 or not np.isin(drawn, best).any(), "a top-a candidate was drawn"
    if with_keys:  # one draw per key, each its key's best admissible candidate
        exact = queries @ candidates.T
        for q, row in enumerate(np.asarray(open_window.indices)):
            assert np.unique(keys[row]).size == row.size, "two draws share a key"
            admissible = keys != keys[positives[q]]
            for j in row:
                rivals = admissible & (keys == keys[j])
                assert exact[q, j] >= exact[q, rivals].max() - 1e-5
    assert open_window.stats.table() == in_memory.stats.table()


@pytest.mark.parametrize("strategy, temperature", STRATEGIES)
@pytest.mark.parametrize("with_keys", [False, True])
def test_engine_backends_agree_and_match_the_reference(strategy, temperature, with_keys):
    # small integers: every score is exact in float32, so the float64 reference ranks the same
    rng = np.random.default_rng(3)
    queries = rng.integers(-3, 4, (10, 6)).astype(np.float32)
    candidates = rng.integers(-3, 4, (900, 6)).astype(np.float32)
    keys = rng.integers(0, 200, 900) if with_keys else None
    found = {
        backend: hardmine.mine(queries, candidates, positives=np.arange(10), num_negatives=15, strategy=strategy,
                               temperature=temperature, rank_range=(4, None), exclude_keys=keys, seed=9,
                               backend=backend)
        for backend in ALL_BACKENDS
    }
    for backend in ALL_BACKENDS:
        np.testing.assert_array_equal(found[backend].indices, found["reference"].indices)
        np.testing.assert_array_equal(found[backend].scores, found["reference"].scores)
    # the independent oracle's window: ranks 4 on of the admissible candidates (one per key)
    excluded = np.zeros((10, 900), dtype=bool)
    excluded[np.arange(10), np.arange(10)] = True
    order = oracle.topk(queries, candidates, 900, "dot", excluded=excluded, keys=keys)
    for row in range(10):
        window = order[row, 4:]
        got = found["reference"].indices[row]
        got = got[got >= 0]
        assert len(set(got.tolist())) == got.size and set(got.tolist()) <= set(window[window >= 0].tolist())
        assert got.size == min(15, int((window >= 0).sum()))


@pytest.mark.parametrize("backend", available_engine_backends())
@pytest.mark.parametrize("strategy, temperature", STRATEGIES)
@pytest.mark.parametrize("with_keys", [False, True])
def test_draws_do_not_depend_on_how_the_work_is_cut(backend, strategy, temperature, with_keys):
    queries, candidates, positives, keys = _problem(num_queries=3, num_candidates=5000)
    common = dict(positives=positives, num_negatives=25, strategy=strategy, temperature=temperature,
                  rank_range=(6, None), seed=2, exclude_keys=keys if with_keys else None, backend=backend)
    expected = hardmine.mine(queries, candidates, **common)
    cuts = [
        dict(block_size=(1, 64), num_threads=1),
        dict(block_size=(2, 512), num_threads=2),  # few queries: candidate ranges run side by side
        dict(num_threads=2),
    ]
    for cut in cuts:
        np.testing.assert_array_equal(hardmine.mine(queries, candidates, **common, **cut).indices, expected.indices)
    shards = [candidates[:1700], candidates[1700:1701], candidates[1701:]]
    np.testing.assert_array_equal(hardmine.mine(queries, shards, **common).indices, expected.indices)
    pieces = [hardmine.mine(queries[r : r + 1], candidates, **{**common, "positives": positives[r : r + 1]},
                            query_offset=r).indices for r in range(3)]
    np.testing.assert_array_equal(np.concatenate(pieces), expected.indices)


@pytest.mark.parametrize("backend", available_engine_backends())
def test_open_window_respects_filters_and_pads(backend):
    queries, candidates, positives, _ = _problem(num_candidates=300)
    result = hardmine.mine(queries, candidates, positives=positives, num_negatives=50, strategy="random",
                           rank_range=(0, None), max_score=-1.0, backend=backend)
    scores = np.asarray(result.scores)
    valid = np.asarray(result.indices) >= 0
    assert (scores[valid] <= -1.0).all()
    exact = queries @ candidates.T
    for q in range(queries.shape[0]):
        admissible = int(((exact[q] <= -1.0) & (np.arange(300) != positives[q])).sum())
        assert result.num_valid[q] == min(50, admissible)
        assert (scores[q, ~valid[q]] == -np.inf).all()
    # nothing admissible beyond rank a: all padding
    empty = hardmine.mine(queries, candidates, num_negatives=4, strategy="softmax", temperature=1.0,
                          rank_range=(300, None), backend=backend)
    assert (np.asarray(empty.indices) == -1).all()


def _ranked_single_query(num_candidates: int, rows: int, seed: int = 0):
    """``rows`` copies of one query (each row draws on its own) and candidates with distinct
    scores; returns the inputs and every candidate's rank."""
    rng = np.random.default_rng(seed)
    query = np.array([1, 0, 0, 0], dtype=np.float32)
    candidates = rng.standard_normal((num_candidates, 4)).astype(np.float32)
    # distinct scores that every backend computes exactly: the first coordinate
    candidates[:, 0] = rng.permutation(num_candidates).astype(np.float32) * np.float32(4.0 / num_candidates) - 2
    scores = candidates[:, 0].copy()
    rank = np.empty(num_candidates, dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(num_candidates)
    return np.tile(query, (rows, 1)), candidates, rank, np.sort(scores)[::-1]


# (window, candidates, rows, picks, bins): 10 ranks in memory, 10^4 ranks open from rank 10,
# every one of 10^5 candidates
WINDOWS = [((5, 15), 40, 3000, 3, 10), ((10, None), 10_010, 1000, 5, 100), ((0, None), 100_000, 2000, 5, 100)]


@pytest.mark.parametrize("backend", available_engine_backends())
@pytest.mark.parametrize("window, num_candidates, rows, picks, bins", WINDOWS)
def test_random_draws_are_uniform_over_the_window(backend, window, num_candidates, rows, picks, bins):
    queries, candidates, rank, _ = _ranked_single_query(num_candidates, rows)
    result = hardmine.mine(queries, candidates, num_negatives=picks, strategy="random", rank_range=window, seed=1,
                           backend=backend)
    picked = rank[np.asarray(result.indices)]
    first = window[0]
    width = (window[1] or num_candidates) - first
    assert picked.min() >= first and picked.max() < first + width
    for row in picked:
        assert np.unique(row).size == picks, "drawn twice"
    counts = np.bincount(((picked - first) * bins // width).ravel(), minlength=bins)
    expected = np.full(bins, rows * picks / bins)
    assert _chi_square(counts, expected) > 1e-3
    # the test can fail: always drawing the window's best ranks is far from uniform
    top = np.arange(picks)[None, :].repeat(rows, axis=0)
    assert _chi_square(np.bincount(top.ravel() * bins // width, minlength=bins), expected) < 1e-12


@pytest.mark.parametrize("backend", available_engine_backends())
@pytest.mark.parametrize("window, num_candidates, rows, _, bins", WINDOWS)
def test_softmax_first_draw_follows_the_softmax_law(backend, window, num_candidates, rows, _, bins):
    queries, candidates, rank, sorted_scores = _ranked_single_query(num_candidates, rows * 2, seed=4)
    temperature = 0.7
    result = hardmine.mine(queries, candidates, num_negatives=1, strategy="softmax", temperature=temperature,
                           rank_range=window, seed=8, backend=backend)
    first = window[0]
    width = (window[1] or num_candidates) - first
    scores = sorted_scores[first : first + width].astype(np.float64)
    law = np.exp((scores - scores.max()) / temperature)
    law /= law.sum()
    picked = rank[np.asarray(result.indices)[:, 0]] - first
    assert picked.min() >= 0 and picked.max() < width
    # bins of about equal probability (by the cumulative law before each rank)
    bin_of_rank = np.minimum((np.cumsum(law) - law) * bins, bins - 1).astype(np.int64)
    expected = np.bincount(bin_of_rank, weights=law, minlength=bins) * picked.size
    counts = np.bincount(bin_of_rank[picked], minlength=bins)
    assert _chi_square(counts, expected) > 1e-3


@pytest.mark.parametrize("backend", available_engine_backends())
def test_softmax_pairs_follow_sampling_without_replacement(backend):
    # two draws from 5 ranks: P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j)
    rows = 20_000
    queries, candidates, rank, sorted_scores = _ranked_single_query(5, rows, seed=6)
    result = hardmine.mine(queries, candidates, num_negatives=2, strategy="softmax", temperature=0.5,
                           rank_range=(0, None), seed=3, backend=backend)
    law = np.exp(sorted_scores.astype(np.float64) / 0.5)
    law /= law.sum()
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    expected = np.array([law[i] * law[j] / (1 - law[i]) + law[j] * law[i] / (1 - law[j]) for i, j in pairs])
    picked = np.sort(rank[np.asarray(result.indices)], axis=1)
    counts = np.array([((picked[:, 0] == i) & (picked[:, 1] == j)).sum() for i, j in pairs])
    assert _chi_square(counts, expected * rows) > 1e-3


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_keys_may_be_any_int64(backend):
    # 64-bit text hashes, negative ones included: the top-a keys are matched as values, never combined
    queries, candidates, positives, small = _problem(num_candidates=400)
    hashes = np.random.default_rng(1).integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 200,
                                               dtype=np.int64, endpoint=True)[small % 200]
    common = dict(positives=positives, num_negatives=6, strategy="random", seed=4, backend=backend)
    by_hash = hardmine.mine(queries, candidates, rank_range=(5, None), exclude_keys=hashes, **common)
    in_memory = hardmine.mine(queries, candidates, rank_range=(5, 399), exclude_keys=hashes, **common)
    np.testing.assert_array_equal(by_hash.indices, in_memory.indices)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0)])
def test_empty_inputs_give_padding(backend, shape):
    queries = np.zeros((shape[0], 4), np.float32)
    candidates = np.zeros((shape[1], 4), np.float32)
    result = hardmine.mine(queries, candidates, num_negatives=2, strategy="softmax", temperature=1.0,
                           rank_range=(1, None), backend=backend)
    assert np.asarray(result.indices).shape == (shape[0], 2) and (np.asarray(result.indices) == -1).all()


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_ranks_past_the_candidates_cost_nothing(backend):
    # a = 10**9 or n = 100 over 50 candidates: the engine keeps at most the candidate count
    # per query (this asked for a (rows, 10**9) heap and died with std::bad_alloc)
    queries, candidates, _, _ = _problem(num_queries=3, num_candidates=50)
    skipped = hardmine.mine(queries, candidates, strategy="random", rank_range=(10**9, None), num_negatives=2,
                            backend=backend)
    assert (np.asarray(skipped.indices) == -1).all()
    wide = hardmine.mine(queries, candidates, strategy="softmax", temperature=1.0, rank_range=(45, None),
                         num_negatives=100, backend=backend)
    assert np.asarray(wide.indices).shape == (3, 100) and (np.asarray(wide.num_valid) == 5).all()


@pytest.mark.parametrize("temperature", [1e-3, 0.05, 1.0, 1e3])
def test_softmax_skipping_never_changes_a_draw(temperature):
    # the core skips the logarithms of candidates whose u cannot reach the heap; the reference
    # computes every priority: the draws must be the same, ties and extreme temperatures included
    rng = np.random.default_rng(7)
    queries = rng.integers(-2, 3, (6, 4)).astype(np.float32)  # many exactly tied scores
    candidates = rng.integers(-2, 3, (3000, 4)).astype(np.float32)
    common = dict(num_negatives=12, strategy="softmax", temperature=temperature, rank_range=(3, None), seed=11)
    expected = hardmine.mine(queries, candidates, backend="reference", **common)
    for backend in available_engine_backends():
        found = hardmine.mine(queries, candidates, backend=backend, **common)
        np.testing.assert_array_equal(found.indices, expected.indices)
