"""Regression tests for cases that once hung, crashed, lost data or returned a wrong answer
silently, grouped by the module that owns the behaviour (the offline job's are in
tests/test_io_job.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hardmine
from conftest import available_engine_backends

#: a child that hangs is killed after this long; a healthy run takes a few seconds
_CHILD_TIMEOUT = 240


def _peak_growth_mib(folder, setup: list[str], call: list[str]) -> float:
    """How much ``call`` raises the peak RSS of a fresh interpreter after ``setup`` (warm-up
    included). Measured in a child: in this process the peak of an earlier test would hide any
    growth below it, and the check could never fail. The child runs in ``folder``, outside the
    checkout, so that it imports the installed package (with its compiled core)."""
    lines = ["import resource", "import numpy as np", "import hardmine", *setup,
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss", *call,
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)"]
    done = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=_CHILD_TIMEOUT, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


# --- hardmine._runtime: worker processes and threads ------------------------------------------

_FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import numpy as np
    import hardmine

    backend, method = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    candidates = rng.standard_normal((5000, 16)).astype(np.float32)

    def work(first):
        return hardmine.topk(queries[first:first + 8], candidates, 5, backend=backend).indices

    if __name__ == "__main__":
        whole = hardmine.topk(queries, candidates, 5, backend=backend).indices  # starts the thread pools
        if method == "dataloader":
            import torch
            loader = torch.utils.data.DataLoader(range(0, 64, 8), batch_size=None, num_workers=2,
                                                 collate_fn=lambda first: torch.from_numpy(work(first)))
            pieces = [batch.numpy() for batch in loader]
        else:
            with multiprocessing.get_context(method).Pool(2) as pool:
                pieces = pool.map(work, range(0, 64, 8))
        assert (np.concatenate(pieces) == whole).all(), "children disagree with the parent"
        print("children agree")
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver", "dataloader"])
@pytest.mark.parametrize("engine", available_engine_backends())
def test_workers_started_after_the_thread_pool_neither_hang_nor_die(tmp_path, engine, method):
    if method == "dataloader":
        pytest.importorskip("torch")
    script = tmp_path / "pool.py"
    script.write_text(_FORK_SCRIPT)
    try:
        done = subprocess.run([sys.executable, str(script), engine, method], capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method} workers hung on the {engine} backend")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "children agree" in done.stdout


def test_many_threads_for_one_query_allocate_no_idle_tiles(tmp_path):
    if hardmine.backends.status()["cpu"] is not None:
        pytest.skip("compiled core absent")
    grown_mib = _peak_growth_mib(
        tmp_path,
        ["candidates = np.random.default_rng(0).standard_normal((50_000, 64)).astype(np.float32)",
         "hardmine.topk(candidates[:1], candidates, 10, backend='cpu')"],
        ["result = hardmine.topk(candidates[:1], candidates, 10, backend='cpu', num_threads=256)",
         "assert result.indices[0, 0] == 0"])
    assert grown_mib < 64, f"{grown_mib:.0f} MiB for one query on 256 threads"  # was 3.2 GB of idle tiles


# --- hardmine._validation and hardmine._rows: inputs taken or refused ------------------------

@pytest.mark.parametrize("form", ["csr", "csc", "coo", "lil", "dok", "bsr"])
def test_positives_as_scipy_sparse_in_any_format_are_read_as_query_rows(backend, form):
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    candidates = rng.standard_normal((40, 8)).astype(np.float32)
    own = rng.permutation(40)[:12]
    queries = candidates[own] + 0.01 * rng.standard_normal((12, 8)).astype(np.float32)
    matrix = sparse.csr_matrix((np.ones(12), own, np.arange(13)), shape=(12, 40)).asformat(form)
    result = hardmine.mine(queries, candidates, positives=matrix, num_negatives=3, backend=backend)
    expected = hardmine.mine(queries, candidates, positives=own, num_negatives=3, backend=backend)
    np.testing.assert_array_equal(result.indices, expected.indices)
    assert not (result.indices == own[:, None]).any(), "a query's own positive came back as its hardest negative"


def test_sparse_of_the_wrong_shape_says_so():
    sparse = pytest.importorskip("scipy.sparse")
    q, c = np.ones((3, 2), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"positives as a scipy.sparse matrix must have shape \(Q, C\) = \(3, 5\)"):
        hardmine.mine(q, c, positives=sparse.csc_matrix((5, 3)))


def test_explicit_zeros_of_a_sparse_matrix_are_not_ids():
    sparse = pytest.importorskip("scipy.sparse")
    q, c = np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32)
    matrix = sparse.csr_matrix((np.array([1.0, 0.0]), np.array([0, 1]), np.array([0, 2, 2])), shape=(2, 2))
    assert hardmine.topk(q, c, 2, exclude=matrix).indices[0].tolist() == [1, -1]


def test_bad_positives_are_reported_as_positives():
    q = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"^positives: id 9 at query 2"):
        hardmine.mine(q, q, positives=np.array([0, 1, 9]))
    with pytest.raises(ValueError, match=r"^positives: id 9 at query 2"):
        hardmine.violations(q, q, positives=np.array([0, 1, 9]))


def _cosine64(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    q, c = q.astype(np.float64), c.astype(np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return q @ c.T


@pytest.mark.parametrize("scale", [1e-38, 1e-30, 1e-20, 1.0, 1e20, 1e30, 1e38])
def test_cosine_holds_at_every_finite_scale(backend, scale):
    rng = np.random.default_rng(7)
    queries = rng.standard_normal((5, 6))
    candidates = rng.standard_normal((9, 6))
    q32 = (queries * scale).astype(np.float32)
    c32 = (candidates * np.where(np.arange(9) % 2, scale, 1.0)[:, None]).astype(np.float32)  # mixed scales
    result = hardmine.topk(q32, c32, 3, metric="cosine", backend=backend)
    exact = _cosine64(q32, c32)
    order = np.argsort(-exact, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(result.indices, order)
    np.testing.assert_allclose(result.scores, np.take_along_axis(exact, order, 1), atol=1e-5)


def test_rows_below_the_smallest_normal_float_still_have_a_cosine(backend):
    rows = np.array([[3e-39, 4e-39], [1e-45, 0.0], [-2e-40, 1e-40]], dtype=np.float32)  # subnormal values
    result = hardmine.topk(rows, rows, 3, metric="cosine", backend=backend)
    exact = _cosine64(rows, rows)
    np.testing.assert_allclose(result.scores, -np.sort(-exact, axis=1), atol=1e-5)


def test_dot_products_that_could_overflow_float32_are_refused(backend):
    q = np.full((2, 4), 1e19, dtype=np.float32)
    with pytest.raises(ValueError, match=r"dot products may overflow float32.*use metric='cosine'"):
        hardmine.topk(q, q, 1, backend=backend)
    with pytest.raises(ValueError, match="dot products may overflow"):
        hardmine.violations(q, q, positives=np.array([0, 1]), backend=backend)


@pytest.mark.parametrize("name", ["margin", "max_score", "min_score", "relative_margin"])
def test_absurd_margins_and_bounds_are_refused(name):
    q = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=f"{name} must be at most"):
        hardmine.mine(q, q, positives=np.array([0, 1]), **{name: 1e40})
    with pytest.raises(ValueError, match="margin must be at most"):
        hardmine.violations(q, q, positives=np.array([0, 1]), margin=1e40)


def test_without_the_finite_check_nan_and_minus_inf_scores_are_never_returned(backend):
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    c = np.array([[np.nan, 0.0], [0.5, 0.0], [np.inf, 0.0], [-np.inf, 0.0]], dtype=np.float32)
    result = hardmine.topk(q, c, 4, check_finite=False, backend=backend)
    assert result.indices[0].tolist() == [2, 1, -1, -1]  # +inf first; NaN and -inf (like padding) never
    with pytest.raises(ValueError, match="candidates row 0 contains NaN or inf"):
        hardmine.topk(q, c, 4, backend=backend)


def test_torch_negated_and_conjugated_views_are_read():
    torch = pytest.importorskip("torch")
    base = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negated = torch._neg_view(base)
    assert negated.is_neg()
    result = hardmine.topk(negated, base, 1)
    assert result.scores.tolist() == [[0.0], [0.0]]


def test_strides_that_are_not_a_multiple_of_the_item_size_are_copied_not_refused(backend):
    rng = np.random.default_rng(6)
    values = rng.standard_normal((6, 3)).astype(np.float32)
    raw = np.zeros((6, 13), dtype=np.uint8)  # 13-byte rows: float32 rows that are not 4-aligned
    odd = np.ndarray(shape=(6, 3), dtype=np.float32, buffer=raw, strides=(13, 4))
    odd[...] = values
    result = hardmine.topk(odd, odd, 2, backend=backend)
    np.testing.assert_array_equal(result.indices, hardmine.topk(values, values, 2, backend=backend).indices)


# --- hardmine.engine and the backends: results sized by the candidates, splits, conversions -

def test_a_window_past_the_candidates_costs_no_memory(backend, tmp_path):
    grown_mib = _peak_growth_mib(
        tmp_path,
        ["rng = np.random.default_rng(0)",
         "q, c = rng.standard_normal((1000, 8)).astype(np.float32), rng.standard_normal((100, 8)).astype(np.float32)",
         f"hardmine.mine(q, c, num_negatives=5, backend={backend!r})"],  # compiles and starts the pools
        [f"result = hardmine.mine(q, c, num_negatives=5, rank_range=(10**5, None), backend={backend!r})",
         "assert (result.indices == -1).all() and (result.num_valid == 0).all()"])
    assert grown_mib < 100, f"{grown_mib:.0f} MiB for a padding-only result"  # a (Q, 10**5) window is 1.2 GB


def test_k_beyond_the_candidates_is_padded_and_a_result_too_big_for_memory_is_refused(backend):
    q = np.eye(3, dtype=np.float32)
    result = hardmine.topk(q, q, 7, backend=backend)
    assert result.indices.shape == (3, 7) and (result.indices[:, 3:] == -1).all()
    assert np.isneginf(result.scores[:, 3:]).all()
    with pytest.raises(ValueError, match=r"k=1,000,000,000,000 asks for a \(3, 1,000,000,000,000\) result"):
        hardmine.topk(q, q, 10**12, backend=backend)
    with pytest.raises(ValueError, match="num_negatives=.* asks for a"):
        hardmine.mine(q, q, num_negatives=10**12, backend=backend)


def test_sharded_queries_work_on_every_backend(backend):
    rng = np.random.default_rng(2)
    q, c = rng.standard_normal((20, 5)).astype(np.float32), rng.standard_normal((30, 5)).astype(np.float32)
    shards = [q[:7], q[7:7], q[7:]]
    positives = rng.integers(0, 30, 20)
    whole = hardmine.topk(q, c, 4, exclude=positives, backend=backend)
    sharded = hardmine.topk(shards, c, 4, exclude=positives, backend=backend)
    np.testing.assert_array_equal(sharded.indices, whole.indices)
    mined = hardmine.mine(shards, [c[:11], c[11:]], positives=positives, strategy="random", rank_range=(0, 9),
                          num_negatives=3, margin=0.1, backend=backend)
    np.testing.assert_array_equal(mined.indices, hardmine.mine(q, c, positives=positives, strategy="random",
                                                               rank_range=(0, 9), num_negatives=3, margin=0.1,
                                                               backend=backend).indices)
    violated = hardmine.violations(shards, c, positives=positives, backend=backend)
    np.testing.assert_array_equal(violated.count, hardmine.violations(q, c, positives=positives,
                                                                      backend=backend).count)
    np.testing.assert_allclose(hardmine.similarity(shards, c, backend=backend), q @ c.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("engine", available_engine_backends())
def test_few_queries_against_many_candidates_split_the_candidates_exactly(engine):
    rng = np.random.default_rng(4)
    candidates = rng.standard_normal((20_000, 12)).astype(np.float16)
    candidates[7000:7010] = candidates[3]  # exact ties across the ranges the workers get
    queries = np.asarray(candidates[[3, 9]], dtype=np.float32)
    keys = rng.integers(0, 500, 20_000)
    for options in (dict(), dict(num_threads=2, block_size=(4, 1000))):
        result = hardmine.mine(queries, candidates, num_negatives=15, exclude_keys=keys, backend=engine, **options)
        reference = hardmine.mine(queries, candidates, num_negatives=15, exclude_keys=keys, backend="reference")
        np.testing.assert_array_equal(result.indices, reference.indices)
        violated = hardmine.violations(queries, candidates, positive_scores=np.zeros(2), backend=engine, **options)
        expected = hardmine.violations(queries, candidates, positive_scores=np.zeros(2), backend="reference")
        np.testing.assert_array_equal(violated.count, expected.count)
        np.testing.assert_array_equal(violated.argmax, expected.argmax)


def test_the_numba_half_conversion_is_exact_for_every_half():
    from hardmine.backends import numba_kernels

    bits = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = bits.view(np.float16).astype(np.float32)
    got = np.empty((256, 256), dtype=np.float32)
    numba_kernels.halves_to_float32(bits, got)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], expected.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()
