"""precision="int8" and "bf16" (csrc/cpu/certified.cpp, docs/precision.md): int8 or bf16 scores screened by a
certified per-pair bound, the shortlist re-scored exactly. Checked against the independent oracle
(tests/oracle.py: the exact order of the real scores) and, score bytes, the reference backend, on
uniform, clustered, duplicated, tied, heavy-tailed and extreme-scale rows, half inputs, memory
maps and strided views; the bound itself is checked on every pair."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardmine
from hardmine import _precision, backends
from hardmine._problem import F32

import oracle

if backends.status()["cpu"] is not None:
    pytest.skip(f"int8 scoring lives in the compiled core: {backends.status()['cpu']}", allow_module_level=True)

from hardmine import _core  # noqa: E402


def _uniform(rng, n, d):
    return rng.standard_normal((n, d)).astype(np.float32)


def _clustered(rng, n, d):
    centres = rng.standard_normal((8, d))
    return (centres[rng.integers(0, 8, n)] + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def _duplicates(rng, n, d):
    rows = rng.standard_normal((n // 4 + 1, d)).astype(np.float32)
    return rows[rng.integers(0, rows.shape[0], n)]


def _ties(rng, n, d):
    return rng.integers(-2, 3, (n, d)).astype(np.float32)


def _heavy_tailed(rng, n, d):
    rows = rng.standard_normal((n, d)).astype(np.float32)
    spikes = rng.integers(0, d, n)
    rows[np.arange(n), spikes] *= np.float32(1e4)  # one huge coordinate per row sets its int8 scale
    return rows


DATA = {"uniform": _uniform, "clustered": _clustered, "duplicates": _duplicates, "ties": _ties,
        "heavy_tailed": _heavy_tailed}


def pytest_generate_tests(metafunc):
    if "codes" in metafunc.fixturenames:  # every certified test runs with both low-precision codes
        metafunc.parametrize("codes", ["int8", "bf16"])


def _exact(queries, candidates, k, metric, codes, **kwargs):
    ours = hardmine.topk(queries, candidates, k, metric=metric, precision=codes, **kwargs)
    reference = hardmine.topk(queries, candidates, k, metric=metric, backend="reference", **kwargs)
    return ours, reference


def _check(ours, reference, queries, candidates, metric, excluded=None):
    """The oracle's indices exactly, and the reference's score bytes (one exact score everywhere)."""
    want = oracle.topk(queries, candidates, ours.indices.shape[1], metric, excluded=excluded)
    np.testing.assert_array_equal(ours.indices, want)
    np.testing.assert_array_equal(reference.indices, want)
    assert ours.scores.tobytes() == reference.scores.tobytes()


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("k", [1, 10, 70])
def test_certified_equals_the_exact_top_k(data, metric, k, codes):
    rng = np.random.default_rng(zlib.crc32(f"{data} {metric} {k}".encode()))
    queries, candidates = DATA[data](rng, 37, 19), DATA[data](rng, 400, 19)  # d not a multiple of 4
    exclude = rng.integers(0, 400, (37, 3))
    ours, reference = _exact(queries, candidates, k, metric, codes, exclude=exclude)
    excluded = np.zeros((37, 400), dtype=bool)
    excluded[np.arange(37)[:, None], exclude] = True
    _check(ours, reference, queries, candidates, metric, excluded)


def test_integer_ties_are_broken_by_index_exactly(codes):
    rng = np.random.default_rng(1)
    queries, candidates = _ties(rng, 50, 8), _ties(rng, 3000, 8)
    ours, reference = _exact(queries, candidates, 40, "dot", codes)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_array_equal(ours.scores, reference.scores)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_inputs(dtype, codes):
    rng = np.random.default_rng(2)
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        cast = np.dtype(ml_dtypes.bfloat16)
    else:
        cast = np.float16
    queries, candidates = _uniform(rng, 20, 40).astype(cast), _uniform(rng, 900, 40).astype(cast)
    for metric in ("dot", "cosine"):
        ours, reference = _exact(queries, candidates, 15, metric, codes)
        _check(ours, reference, queries, candidates, metric)


def test_memory_maps_strided_views_and_groups(tmp_path, codes):
    rng = np.random.default_rng(3)
    path = tmp_path / "candidates.npy"
    np.save(path, _clustered(rng, 700, 24))
    candidates = np.load(path, mmap_mode="r")
    queries = np.asfortranarray(_clustered(rng, 60, 48))[:, ::2]  # non-contiguous, d=24
    groups_q, groups_c = rng.integers(0, 5, 60), rng.integers(0, 5, 700)
    ours, reference = _exact(queries, candidates, 9, "cosine", codes, query_groups=groups_q,
                             candidate_groups=groups_c)
    _check(ours, reference, queries, np.asarray(candidates), "cosine", groups_q[:, None] == groups_c[None, :])
    shards = [candidates[:250], candidates[250:600], candidates[600:]]  # each shard screened on its own, merged
    sharded = hardmine.topk(queries, shards, 9, metric="cosine", precision=codes, query_groups=groups_q,
                            candidate_groups=groups_c)
    np.testing.assert_array_equal(sharded.indices, ours.indices)
    np.testing.assert_array_equal(sharded.scores, ours.scores)


def test_extreme_scales_under_cosine_and_tiny_dot_products(codes):
    rng = np.random.default_rng(4)
    queries, candidates = _uniform(rng, 25, 16), _uniform(rng, 500, 16)
    candidates *= np.float32(10.0) ** rng.integers(-30, 31, (500, 1)).astype(np.float32)
    queries *= np.float32(10.0) ** rng.integers(-30, 31, (25, 1)).astype(np.float32)
    ours, reference = _exact(queries, candidates, 12, "cosine", codes)
    _check(ours, reference, queries, candidates, "cosine")
    tiny_q, tiny_c = _uniform(rng, 10, 16) * np.float32(1e-18), _uniform(rng, 300, 16) * np.float32(1e-17)
    ours, reference = _exact(tiny_q, tiny_c, 5, "dot", codes)
    _check(ours, reference, tiny_q, tiny_c, "dot")


def test_edges_k_past_the_candidates_empty_inputs_and_zero_rows(codes):
    rng = np.random.default_rng(5)
    queries, candidates = _uniform(rng, 9, 5), _uniform(rng, 30, 5)
    queries[4] = 0  # every score 0: left to the exact engine, first k ids by index
    ours, reference = _exact(queries, candidates, 45, "dot", codes, exclude=rng.integers(0, 30, 9))
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert (ours.indices[:, 29:] == -1).all() and (ours.scores[:, 29:] == -np.inf).all()
    empty = hardmine.topk(queries, candidates[:0], 3, precision=codes)
    assert (empty.indices == -1).all()
    assert hardmine.topk(queries[:0], candidates, 3, precision=codes).indices.shape == (0, 3)
    narrow_q, narrow_c = np.ascontiguousarray(queries[:, :1]), np.ascontiguousarray(candidates[:, :1])  # d = 1
    ours, reference = _exact(narrow_q, narrow_c, 4, "dot", codes)
    np.testing.assert_array_equal(ours.indices, reference.indices)


def test_exploding_shortlists_are_scored_exhaustively(codes):
    """800 exact copies of one row tie for the top: the shortlist outgrows its cap (16 k + 256)
    and the query scores every candidate exactly instead, with the same result."""
    rng = np.random.default_rng(6)
    candidates = _uniform(rng, 2000, 12)
    candidates[1000:1800] = candidates[7]
    queries = candidates[[7, 8, 9]] + np.float32(0.01) * _uniform(rng, 3, 12)
    problem = _problem(queries, candidates)
    indices, _, _, shortlist = backends.get("cpu").topk_certified(replace(problem, precision=codes), 2)
    assert shortlist[0] == -1 and shortlist[1] > 0
    np.testing.assert_array_equal(indices, oracle.topk(queries, candidates, 2, "dot"))


def _problem(queries, candidates, metric="dot"):
    from hardmine import _validation

    return _validation.problem(queries, candidates, metric_name=metric)


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_the_certified_bound_holds_for_every_pair(data, metric, codes):
    rng = np.random.default_rng(zlib.crc32(f"{data} {metric} bound".encode()))
    queries, candidates = DATA[data](rng, 30, 33), DATA[data](rng, 250, 33)
    if data == "heavy_tailed":
        candidates[::7] *= np.float32(1e-20)  # tiny rows beside large ones: the frame's underflow guard
    problem = _problem(queries, candidates, metric)
    lower, upper = np.full((30, 250), -np.inf), np.full((30, 250), np.inf)
    _core._int8_bounds(problem.queries.array, F32, problem.candidates.array, F32, problem.query_scales,
                       problem.candidate_scales, lower, upper, codes=codes)
    # the rows the engine scores (under cosine, extreme-norm rows arrive rescaled by a power of two)
    exact = problem.queries.array.astype(np.float64) @ problem.candidates.array.astype(np.float64).T
    if metric == "cosine":
        exact *= problem.query_scales[:, None].astype(np.float64) * problem.candidate_scales[None, :]
    assert (lower <= exact).all() and (exact <= upper).all()
    width = upper - lower
    assert np.isfinite(width).all() and (width > 0).all()
    if metric == "cosine" and data == "uniform":  # and it is tight enough to prune: a few percent of the range
        assert np.median(width) < 0.05


def test_precision_is_checked_and_auto_picks_an_exact_path(monkeypatch, codes):
    rng = np.random.default_rng(7)
    queries, candidates = _uniform(rng, 5, 8), _uniform(rng, 50, 8)
    with pytest.raises(ValueError, match=r"precision must be one of \('auto', 'fp32', 'int8', 'bf16'\); got 'int4'"):
        hardmine.topk(queries, candidates, 3, precision="int4")
    with pytest.raises(ValueError, match=f"backend 'numba' reads .* in \\['fp32'\\]; these are host inputs in {codes}"):
        hardmine.topk(queries, candidates, 3, precision=codes, backend="numba")
    untrusted = candidates.copy()
    # unscanned rows the bound cannot cover: re-scored by every query (a candidate row), scored
    # exhaustively (a query row); exact either way
    untrusted[3, 1], untrusted[9, 4] = np.nan, np.inf
    for rows in (untrusted, np.vstack([candidates[:5], np.full((1, 8), 3e30, np.float32)])):
        ours = hardmine.topk(queries, rows, 4, precision=codes, check_finite=False)
        exact = hardmine.topk(queries, rows, 4, backend="reference", check_finite=False)
        np.testing.assert_array_equal(ours.indices, exact.indices)
    bad_query = queries.copy()
    bad_query[1, 2] = np.nan
    ours = hardmine.topk(bad_query, candidates, 4, precision=codes, check_finite=False)
    exact = hardmine.topk(bad_query, candidates, 4, backend="reference", check_finite=False)
    np.testing.assert_array_equal(ours.indices, exact.indices)
    small = _problem(queries, candidates)
    assert _precision.resolve("auto", small, "auto", k=3) == "fp32"  # too small to pay off
    large = _problem(_uniform(rng, 4096, 8), _uniform(rng, 4096, 8))
    assert _precision.resolve("auto", large, "auto", k=10) == (_precision.auto_codes() or "fp32")
    assert _precision.resolve("auto", large, "auto", k=300) == "fp32"  # re-scoring dominates
    assert _precision.resolve("auto", large, "numba", k=10) == "fp32"
    monkeypatch.setenv("HARDMINE_BACKEND", "numba")  # auto means numba here: no int8
    assert _precision.resolve("auto", large, "auto", k=10) == "fp32"
    auto = hardmine.topk(queries, candidates, 3, precision="auto")
    np.testing.assert_array_equal(auto.indices, hardmine.topk(queries, candidates, 3, backend="reference").indices)


def test_threads_and_queries_beyond_one_block_agree(codes):
    rng = np.random.default_rng(8)
    queries, candidates = _clustered(rng, 600, 20), _clustered(rng, 1500, 20)  # 3 query blocks of 240
    one = hardmine.topk(queries, candidates, 7, precision=codes, num_threads=1)
    two = hardmine.topk(queries, candidates, 7, precision=codes, num_threads=2)
    np.testing.assert_array_equal(one.indices, two.indices)
    np.testing.assert_array_equal(one.scores, two.scores)
    reference = hardmine.topk(queries, candidates, 7, backend="reference")
    np.testing.assert_array_equal(one.indices, reference.indices)


def test_portable_kernels_give_the_same_answers(tmp_path, codes):
    """The kernels for CPUs without AVX-512 (HARDMINE_INT8_PORTABLE=1 picks them at load time)."""
    script = tmp_path / "portable.py"
    script.write_text(
        "import numpy as np, hardmine\n"
        "from hardmine import _core\n"
        "assert not _core.certified_int8_native() and not _core.certified_bf16_native()\n"
        "rng = np.random.default_rng(9)\n"
        "q = rng.standard_normal((50, 21)).astype(np.float32); c = rng.standard_normal((700, 21)).astype(np.float32)\n"
        "q[:, 3] *= 300; c[::5] = c[3]\n"
        "for metric in ('dot', 'cosine'):\n"
        f"    ours = hardmine.topk(q, c, 25, metric=metric, precision={codes!r}, exclude=np.arange(50))\n"
        "    ref = hardmine.topk(q, c, 25, metric=metric, backend='reference', exclude=np.arange(50))\n"
        "    assert np.array_equal(ours.indices, ref.indices), metric\n"
        "    assert np.allclose(ours.scores, ref.scores, rtol=1e-6, atol=1e-6), metric\n"
        "print('ok')\n")
    env = {**os.environ, "HARDMINE_INT8_PORTABLE": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@st.composite
def _cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    num_queries, num_candidates, dim = draw(st.integers(0, 30)), draw(st.integers(0, 300)), draw(st.integers(1, 40))
    kind = draw(st.sampled_from(sorted(DATA)))
    queries = DATA[kind](rng, num_queries, dim)
    candidates = DATA[kind](rng, num_candidates, dim)
    if draw(st.booleans()):  # rows of every magnitude
        queries *= np.float32(10.0) ** rng.integers(-12, 13, (num_queries, 1)).astype(np.float32)
        candidates *= np.float32(10.0) ** rng.integers(-12, 13, (num_candidates, 1)).astype(np.float32)
    exclude = rng.integers(0, num_candidates, (num_queries, 2)) if num_candidates and draw(st.booleans()) else None
    return queries, candidates, draw(st.integers(1, 60)), draw(st.sampled_from(["dot", "cosine"])), exclude


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_cases())
def test_random_problems_give_the_exact_answer(case, codes):
    queries, candidates, k, metric, exclude = case
    if metric == "cosine":
        queries[np.linalg.norm(queries, axis=1) == 0] = 1  # zero rows have no cosine
        candidates[np.linalg.norm(candidates, axis=1) == 0] = 1
    try:
        reference = hardmine.topk(queries, candidates, k, metric=metric, exclude=exclude, backend="reference")
    except ValueError:  # e.g. dot products that could overflow: int8 must refuse them the same way
        with pytest.raises(ValueError):
            hardmine.topk(queries, candidates, k, metric=metric, exclude=exclude, precision=codes)
        return
    ours = hardmine.topk(queries, candidates, k, metric=metric, exclude=exclude, precision=codes)
    excluded = np.zeros((len(queries), len(candidates)), dtype=bool)
    if exclude is not None:
        excluded[np.arange(len(queries))[:, None], exclude] = True
    # rows scaled by 10^e are collinear with inexact float64 sums: their real ties may be ordered
    # by float64 scores (docs/precision.md, "What is guaranteed"), alike on every exact path
    want = oracle.topk(queries, candidates, k, metric, excluded=excluded)
    assert oracle.differing_rows(ours.indices, want, oracle.scores(queries, candidates, metric)) == []
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert ours.scores.tobytes() == reference.scores.tobytes()


MINING = [dict(relative_margin=0.05), dict(margin=0.1), dict(strategy="semihard", margin=0.3),
          dict(max_score=0.3, min_score=-0.1), dict(strategy="random", rank_range=(3, 40), relative_margin=0.02)]


@pytest.mark.parametrize("options", MINING)
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_mine_with_certified_scores_equals_the_reference(options, metric, codes):
    """The window, the filters and their tallies apply to exact scores: the same negatives and
    counts as the reference, and the oracle's negatives where the window is a fixed score range."""
    rng = np.random.default_rng(zlib.crc32(f"{sorted(options.items())} {metric}".encode()))
    queries, candidates = _clustered(rng, 60, 24), _clustered(rng, 900, 24)
    if metric == "dot":
        queries /= np.float32(4)  # scores of the order of the filters' bounds
    positives = rng.integers(0, 900, 60)
    positives[::9] = -1  # queries without positives: NaN bounds, scored exhaustively
    lists = [[] if p < 0 else [p] for p in positives]
    common = dict(positives=lists, num_negatives=8, metric=metric, **options)
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    reference = hardmine.mine(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert ours.scores.tobytes() == reference.scores.tobytes()
    assert ours.stats.removed == reference.stats.removed
    np.testing.assert_array_equal(ours.num_valid, reference.num_valid)
    if set(options) == {"max_score", "min_score"}:  # a fixed window on fl32(s): the oracle's own top 8
        excluded = np.zeros((60, 900), dtype=bool)
        excluded[np.flatnonzero(positives >= 0), positives[positives >= 0]] = True

        def admissible(row, values):
            returned = values.astype(np.float32)
            return (returned <= np.float32(0.3)) & (returned >= np.float32(-0.1))

        want = oracle.topk(queries, candidates, 8, metric, excluded=excluded, admissible=admissible)
        np.testing.assert_array_equal(ours.indices, want)


def test_mine_straddle_fallback(codes):
    rng = np.random.default_rng(10)
    # min_score amid the scores: thousands of candidates may lie either side of it, past the cap
    # (C/32), so the queries are scored exhaustively; answers and counts exact
    queries, candidates = _uniform(rng, 40, 1536), _uniform(rng, 6000, 1536)  # (wide rows: bf16 straddles too)
    positives = rng.integers(0, 6000, 40)
    problem = replace(_problem(queries, candidates), lower_bounds=np.zeros(40, np.float32),
                      count_bounds=(np.zeros(40, np.float32),), count_below=(True,))
    assert (backends.get("cpu").topk_certified(replace(problem, precision=codes), 6)[3] < 0).all()
    common = dict(positives=positives, num_negatives=6, min_score=0.0)
    ours = hardmine.mine(queries, candidates, precision=codes, **common)
    reference = hardmine.mine(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    assert ours.stats.removed == reference.stats.removed
