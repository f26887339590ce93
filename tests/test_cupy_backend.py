"""The GPU backends against the float64 reference: ``cupy`` (numba-cuda kernels) and ``cuda``
(the same kernels in CUDA C++). Without a GPU only ``cupy`` runs, under the CUDA simulator
(tests/conftest.py) with NumPy standing in for CuPy: the same kernels, launch shapes and tile
loop as on a device, on inputs small enough for the simulator. With HARDMINE_GPU_TESTS=1 on a
GPU machine both run on the device. Integer-valued embeddings make every score exact, so
indices (ties included) compare exactly."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
import oracle
from hardmine import backends

GPU_BACKENDS = [name for name in ("cupy", "cuda") if backends.status()[name] is None]
if not GPU_BACKENDS:
    pytest.skip(f"no GPU backend: {backends.status()['cupy']}", allow_module_level=True)


@pytest.fixture(params=GPU_BACKENDS)
def gpu(request) -> str:
    return request.param

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the simulator's uint64 hash

BLOCK = (4, 8)  # several query blocks and candidate tiles even on tiny inputs


def _data(seed=0, num_queries=5, num_candidates=27, dim=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    queries = rng.integers(-3, 4, (num_queries, dim)).astype(dtype)
    candidates = rng.integers(-3, 4, (num_candidates, dim)).astype(dtype)
    return rng, queries, candidates


def _both(backend, function, *args, **kwargs):
    ours = function(*args, backend=backend, block_size=BLOCK, **kwargs)
    reference = function(*args, backend="reference", **kwargs)
    return ours, reference


@pytest.mark.parametrize("k", [1, 4, 9, 40])  # 40 > the 27 candidates: padding
def test_topk_with_ties_matches_the_reference(gpu, k):
    _, queries, candidates = _data()
    ours, reference = _both(gpu, hardmine.topk, queries, candidates, k)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_array_equal(ours.scores, reference.scores)
    # integer scores are exact in float32: the independent oracle's order, ties by index
    np.testing.assert_array_equal(ours.indices, oracle.topk(queries, candidates, k, "dot"))


@pytest.mark.parametrize("options", [{}, dict(strategy="random", rank_range=(2, None), exclude_keys="keys")])
def test_first_tile_split(gpu, options):
    # one wide tile: its first 2k columns are selected alone, then the rest against their k-th best
    rng, queries, candidates = _data(8, num_queries=3, num_candidates=70)
    if options:
        options = {**options, "exclude_keys": rng.integers(0, 30, 70)}
    common = dict(positives=rng.integers(0, 70, 3), num_negatives=3, **options)
    ours = hardmine.mine(queries, candidates, backend=gpu, block_size=(3, 64), **common)
    reference = hardmine.mine(queries, candidates, backend="reference", **common)
    np.testing.assert_array_equal(ours.indices, reference.indices)


@pytest.mark.parametrize("exclusion", ["ids", "csr", "groups"])
def test_exclusions(gpu, exclusion):
    rng, queries, candidates = _data(1)
    if exclusion == "ids":
        options = {"exclude": rng.integers(0, 27, 5)}
    elif exclusion == "csr":
        options = {"exclude": [list(rng.choice(27, size=n, replace=False)) for n in (0, 3, 27, 1, 5)]}
    else:
        options = {"query_groups": rng.integers(0, 4, 5), "candidate_groups": rng.integers(0, 4, 27)}
    ours, reference = _both(gpu, hardmine.topk, queries, candidates, 6, **options)
    np.testing.assert_array_equal(ours.indices, reference.indices)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_cosine_and_half_precision(gpu, dtype):
    _, queries, candidates = _data(2, dtype=dtype)
    candidates[3] = candidates[4] * 2  # equal cosine, different ids
    ours = hardmine.topk(queries, candidates, 5, metric="cosine", backend=gpu, block_size=BLOCK)
    cpu_like = hardmine.topk(queries, candidates, 5, metric="cosine", backend="numba")
    np.testing.assert_array_equal(ours.indices, cpu_like.indices)


@pytest.mark.parametrize("options", [
    dict(relative_margin=0.1),
    dict(margin=1.0, max_score=6.0, min_score=-4.0),
    dict(strategy="semihard", margin=3.0),
    dict(exclude_keys="keys"),
    dict(rank_range=(2, 9), strategy="random", seed=3),
    dict(rank_range=(2, None), strategy="random", seed=4, exclude_keys="keys"),
    dict(rank_range=(1, None), strategy="softmax", temperature=0.7, seed=5),
])
def test_mining_filters_and_strategies(gpu, options):
    rng, queries, candidates = _data(3)
    if options.get("exclude_keys") == "keys":
        options = {**options, "exclude_keys": rng.integers(0, 9, 27)}
    common = dict(positives=rng.integers(0, 27, 5), num_negatives=3, **options)
    ours, reference = _both(gpu, hardmine.mine, queries, candidates, **common)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_array_equal(ours.scores, reference.scores)
    assert ours.stats.removed == reference.stats.removed


def test_violations(gpu):
    rng, queries, candidates = _data(4)
    positives = rng.integers(0, 27, 5)
    candidates[7] = candidates[9]  # a tie for the hardest negative: the smaller index wins
    ours, reference = _both(gpu, hardmine.violations, queries, candidates, positives=positives, margin=2.0)
    for mine, expected in zip(ours, reference):
        np.testing.assert_allclose(mine, expected, rtol=1e-6)


def test_empty_and_similarity(gpu):
    _, queries, candidates = _data(5)
    empty = hardmine.topk(queries, candidates[:0], 3, backend=gpu)
    assert (np.asarray(empty.indices) == -1).all()
    np.testing.assert_array_equal(hardmine.similarity(queries, candidates, backend=gpu, block_size=BLOCK),
                                  queries @ candidates.T)



def test_native_kernels_are_built_and_fail_cleanly_without_a_device():
    """The `_cuda` selection kernels (CUDA C++ twins of these) compile for sm_80/sm_90 with no
    register spill (the build fails on one); without a device a launch raises naming the CUDA error."""
    cuda = pytest.importorskip("hardmine._cuda", reason="_cuda module not built (no nvcc)")
    if cuda.device_count()[0] > 0:
        pytest.skip("a device is visible: the GPU check runs these kernels for real")
    selection = (0,) * 8 + (16,)
    cuda.select_reduce(0, 4, True, selection, False, 0)  # nothing to do: no launch
    with pytest.raises(RuntimeError, match="CUDA error in select_reduce launch"):
        cuda.select_reduce(2, 4, True, selection, False, 0)
    with pytest.raises(ValueError, match="selection: 8 device addresses"):
        cuda.select_reduce(2, 4, True, (0,) * 3, False, 0)
    assert "GPU only" in backends.status()["cuda"] or "cupy" in backends.status()["cuda"]


@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 32, 33, 256, 257, 2048, 2049, 4096])
def test_large_k_on_a_device(gpu, k):
    """Device sizes (several default tiles, k up to 4096) against the CPU engines; exact scores."""
    from hardmine.backends import cupy as gpu_module

    if gpu_module.xp is np:
        pytest.skip("device sizes are too slow for the CUDA simulator: run with HARDMINE_GPU_TESTS=1 on a GPU")
    rng, queries, candidates = _data(6, num_queries=300, num_candidates=40_000, dim=64)
    positives = rng.integers(0, 40_000, 300)
    ours = hardmine.topk(queries, candidates, k, exclude=positives, backend=gpu)
    expected = hardmine.topk(queries, candidates, k, exclude=positives, backend="numba")
    np.testing.assert_array_equal(ours.indices, expected.indices)
