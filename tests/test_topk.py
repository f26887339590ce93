"""hardmine.topk on every backend against the float64 reference (SPEC 5.1, 6)."""

from __future__ import annotations

import zlib

import ml_dtypes
import numpy as np
import pytest

import hardmine
from conftest import assert_topk_matches, scores64, tolerance
from data import KINDS, gaussian


def excluded_mask(num_queries, num_candidates, exclude_csr=None, groups=None) -> np.ndarray:
    mask = np.zeros((num_queries, num_candidates), dtype=bool)
    if exclude_csr is not None:
        indptr, indices = exclude_csr
        for q in range(num_queries):
            mask[q, indices[indptr[q] : indptr[q + 1]]] = True
    if groups is not None:
        mask |= groups[0][:, None] == groups[1][None, :]
    return mask


def check(queries, candidates, k, backend, *, metric="dot", half=False, mask=None, **kwargs):
    result = hardmine.topk(queries, candidates, k, metric=metric, backend=backend, **kwargs)
    kwargs.pop("block_size", None)
    kwargs.pop("num_threads", None)
    reference = hardmine.topk(queries, candidates, k, metric=metric, backend="reference", **kwargs)
    dense = scores64(queries, candidates, metric)
    if mask is None:
        mask = np.zeros(dense.shape, dtype=bool)
    assert_topk_matches(result, reference, dense, mask, tolerance(queries, candidates, metric, half))
    return result, reference


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("k", [1, 5, 32, "C", "C+3"])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
@pytest.mark.parametrize("block_size", [None, (8, 48)])
def test_matches_reference(backend, kind, k, metric, block_size):
    rng = np.random.default_rng(zlib.crc32(f"{kind} {k} {metric}".encode()))  # stable: hash() is salted per run
    queries, candidates = KINDS[kind](rng, 37, 24), KINDS[kind](rng, 203, 24)
    if metric == "cosine":  # integer rows may be all zero
        queries[np.linalg.norm(queries, axis=1) == 0, 0] = 1
        candidates[np.linalg.norm(candidates, axis=1) == 0, 0] = 1
    k = {"C": 203, "C+3": 206}.get(k, k)
    check(queries, candidates, k, backend, metric=metric, block_size=block_size)


@pytest.mark.parametrize("block_size", [None, (8, 48), (5, 7)])
def test_exact_ties_break_by_smaller_index(backend, block_size):
    rng = np.random.default_rng(1)
    queries, candidates = KINDS["integer_ties"](rng, 29, 3), KINDS["integer_ties"](rng, 300, 3)
    result, reference = check(queries, candidates, 40, backend, block_size=block_size)
    # Integer dot products are exact, so the order is fully determined.
    np.testing.assert_array_equal(result.indices, reference.indices)
    np.testing.assert_array_equal(result.scores, reference.scores)


@pytest.mark.parametrize("d", [1, 3, 384])
@pytest.mark.parametrize("num_queries", [1, 70])
def test_dimensions_and_single_query(backend, d, num_queries):
    rng = np.random.default_rng(d)
    check(gaussian(rng, num_queries, d), gaussian(rng, 517, d), 10, backend, block_size=(16, 100))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_half_precision(backend, dtype, metric):
    rng = np.random.default_rng(5)
    queries = gaussian(rng, 40, 64).astype(dtype)
    candidates = gaussian(rng, 333, 64).astype(dtype)
    check(queries, candidates, 12, backend, metric=metric, half=True)


def test_half_precision_mixed_with_fp32(backend):
    rng = np.random.default_rng(6)
    check(gaussian(rng, 20, 16), gaussian(rng, 100, 16).astype(np.float16), 7, backend, half=True)


@pytest.mark.parametrize(
    "layout",
    ["fortran", "strided", "negative", "column_slice"],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_contiguous_layouts(backend, layout, dtype):
    rng = np.random.default_rng(7)
    base_q, base_c = gaussian(rng, 80, 48).astype(dtype), gaussian(rng, 500, 48).astype(dtype)
    make = {
        "fortran": lambda x: np.asfortranarray(x),
        "strided": lambda x: x[::2, ::3],
        "negative": lambda x: x[::-1, ::-1],
        "column_slice": lambda x: x[:, 5:29],
    }[layout]
    queries, candidates = make(base_q), make(base_c)
    assert not candidates.flags.c_contiguous
    check(queries, candidates, 9, backend, half=dtype == np.float16, block_size=(16, 64))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_memmap_inputs(backend, tmp_path, dtype):
    rng = np.random.default_rng(8)
    np.save(tmp_path / "q.npy", gaussian(rng, 50, 32).astype(dtype))
    np.save(tmp_path / "c.npy", gaussian(rng, 700, 32).astype(dtype))
    queries = np.load(tmp_path / "q.npy", mmap_mode="r")
    candidates = np.load(tmp_path / "c.npy", mmap_mode="r")
    check(queries, candidates, 6, backend, half=dtype == np.float16)


def test_float64_input_is_converted(backend):
    rng = np.random.default_rng(9)
    queries, candidates = rng.standard_normal((10, 8)), rng.standard_normal((90, 8))
    check(queries, candidates, 4, backend)


@pytest.mark.parametrize("form", ["one_per_query", "matrix", "csr_tuple", "list_of_lists", "csr", "csc", "coo",
                                  "lil"])
def test_exclusion_forms(backend, form):
    rng = np.random.default_rng(10)
    queries, candidates = KINDS["duplicated"](rng, 30, 16), KINDS["duplicated"](rng, 120, 16)
    per_query = [np.sort(rng.choice(120, size=q % 4 + (form in ("one_per_query", "matrix")), replace=False))
                 for q in range(30)]
    if form == "one_per_query":
        ids = np.array([p[0] for p in per_query])
        exclude, rows = ids, [[i] for i in ids]
    elif form == "matrix":
        ids = np.stack([rng.choice(120, size=3, replace=False) for _ in range(30)])
        exclude, rows = ids, [list(r) for r in ids]
    else:
        indptr = np.concatenate([[0], np.cumsum([p.size for p in per_query])])
        indices = np.concatenate(per_query)[::1]
        if form in ("csr", "csc", "coo", "lil"):  # every scipy format is read as (Q, C), whatever its layout
            sparse = pytest.importorskip("scipy.sparse")
            matrix = sparse.csr_matrix((np.ones(indices.size), indices, indptr), shape=(30, 120))
            exclude = matrix.asformat(form)
        else:
            exclude = {"csr_tuple": (indptr, indices), "list_of_lists": [list(p) for p in per_query]}[form]
        rows = per_query
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    mask = excluded_mask(30, 120, (indptr, np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])))
    result, _ = check(queries, candidates, 15, backend, exclude=exclude, mask=mask)
    for q in range(30):
        assert not set(np.asarray(result.indices[q]).tolist()) & set(np.asarray(rows[q]).tolist())


def test_unsorted_and_repeated_exclusions(backend):
    rng = np.random.default_rng(11)
    queries, candidates = gaussian(rng, 3, 8), gaussian(rng, 40, 8)
    exclude = [[5, 3, 5, 39], [0], [17, 2]]
    mask = np.zeros((3, 40), dtype=bool)
    for q, ids in enumerate(exclude):
        mask[q, ids] = True
    check(queries, candidates, 40, backend, exclude=exclude, mask=mask)


@pytest.mark.parametrize("with_exclude", [False, True])
def test_groups(backend, with_exclude):
    rng = np.random.default_rng(12)
    queries, candidates = KINDS["clustered"](rng, 40, 16), KINDS["clustered"](rng, 200, 16)
    query_groups = rng.integers(0, 10, 40)
    candidate_groups = rng.integers(-3, 10, 200)  # any integer labels
    exclude = rng.integers(0, 200, 40) if with_exclude else None
    mask = excluded_mask(40, 200, None if exclude is None else (np.arange(41), exclude),
                         (query_groups, candidate_groups))
    result, _ = check(queries, candidates, 25, backend, exclude=exclude, query_groups=query_groups,
                      candidate_groups=candidate_groups, mask=mask)
    valid = result.indices >= 0
    assert np.all(candidate_groups[result.indices[valid]] != np.repeat(query_groups, valid.sum(1)))


def test_fewer_admissible_than_k_is_padded(backend):
    rng = np.random.default_rng(13)
    queries, candidates = gaussian(rng, 4, 8), gaussian(rng, 6, 8)
    groups_c = np.array([0, 0, 0, 1, 1, 2])
    result, _ = check(queries, candidates, 10, backend, query_groups=np.array([0, 1, 2, 3]),
                      candidate_groups=groups_c, mask=np.array([0, 1, 2, 3])[:, None] == groups_c[None, :])
    assert (np.asarray(result.indices) >= 0).sum(axis=1).tolist() == [3, 4, 5, 6]
    assert np.all(np.asarray(result.scores)[:, 6:] == -np.inf)


@pytest.mark.parametrize("shape", [(0, 10), (10, 0), (0, 0)])
def test_empty_inputs(backend, shape):
    queries = np.zeros((shape[0], 4), dtype=np.float32)
    candidates = np.ones((shape[1], 4), dtype=np.float32)
    result = hardmine.topk(queries, candidates, 3, backend=backend)
    assert result.indices.shape == (shape[0], 3)
    assert np.all(result.indices == -1) and np.all(result.scores == -np.inf)


def test_nan_rows_are_never_returned_without_check(backend):
    rng = np.random.default_rng(14)
    queries, candidates = gaussian(rng, 10, 8), gaussian(rng, 50, 8)
    candidates[[3, 17]] = np.nan
    candidates[20, 0] = np.inf
    result = hardmine.topk(queries, candidates, 50, backend=backend, check_finite=False)
    reference = hardmine.topk(queries, candidates, 50, backend="reference", check_finite=False)
    for q in range(10):
        got = set(np.asarray(result.indices[q]).tolist()) - {-1}
        assert not got & {3, 17}
    np.testing.assert_array_equal(result.indices >= 0, reference.indices >= 0)


@pytest.mark.parametrize("block_size", [(1, 1), (3, 17), (64, 256), 1000])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_block_and_thread_invariance(backend, block_size, num_threads):
    rng = np.random.default_rng(15)
    queries, candidates = KINDS["duplicated"](rng, 65, 20), KINDS["duplicated"](rng, 301, 20)
    baseline = hardmine.topk(queries, candidates, 11, backend=backend)
    result = hardmine.topk(queries, candidates, 11, backend=backend, block_size=block_size, num_threads=num_threads)
    assert_topk_matches(result, baseline, scores64(queries, candidates), np.zeros((65, 301), bool),
                        tolerance(queries, candidates, "dot", False))


def test_backends_agree_with_each_other():
    from conftest import available_engine_backends

    names = available_engine_backends()
    rng = np.random.default_rng(16)
    queries, candidates = KINDS["clustered"](rng, 90, 40), KINDS["clustered"](rng, 1000, 40)
    results = [hardmine.topk(queries, candidates, 20, backend=name, metric="cosine") for name in names]
    for other in results[1:]:
        assert_topk_matches(other, results[0], scores64(queries, candidates, "cosine"),
                            np.zeros((90, 1000), bool), tolerance(queries, candidates, "cosine", False))


def test_auto_backend_and_env_override(monkeypatch):
    rng = np.random.default_rng(17)
    queries, candidates = gaussian(rng, 5, 4), gaussian(rng, 9, 4)
    monkeypatch.setenv("HARDMINE_BACKEND", "reference")
    forced = hardmine.topk(queries, candidates, 3)
    monkeypatch.delenv("HARDMINE_BACKEND")
    auto = hardmine.topk(queries, candidates, 3)
    np.testing.assert_array_equal(forced.indices, auto.indices)


def test_torch_tensors_round_trip(backend):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(18)
    queries, candidates = gaussian(rng, 6, 8), gaussian(rng, 30, 8)
    result = hardmine.topk(torch.from_numpy(queries), torch.from_numpy(candidates), 4, backend=backend)
    assert isinstance(result.indices, torch.Tensor)
    np.testing.assert_array_equal(result.indices.numpy(), hardmine.topk(queries, candidates, 4).indices)


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_inputs_are_never_modified_and_read_only_maps_work(backend, metric, tmp_path):
    rng = np.random.default_rng(19)
    queries, candidates = gaussian(rng, 30, 8), gaussian(rng, 90, 8)
    np.save(tmp_path / "q.npy", queries)
    np.save(tmp_path / "c.npy", candidates)
    mapped_q = np.load(tmp_path / "q.npy", mmap_mode="r")
    mapped_c = np.load(tmp_path / "c.npy", mmap_mode="r")
    original_q, original_c = queries.copy(), candidates.copy()
    hardmine.topk(queries, candidates, 5, metric=metric, backend=backend)
    hardmine.violations(queries, candidates, positives=np.arange(30), metric=metric, backend=backend)
    hardmine.similarity(queries, candidates, metric=metric, backend=backend)
    np.testing.assert_array_equal(queries, original_q)
    np.testing.assert_array_equal(candidates, original_c)
    from_maps = hardmine.topk(mapped_q, mapped_c, 5, metric=metric, backend=backend)
    np.testing.assert_array_equal(from_maps.indices, hardmine.topk(queries, candidates, 5, metric=metric).indices)
