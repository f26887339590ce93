"""Device arrays read in place by the GPU backends (SPEC 3: inputs). Without a GPU the CUDA
simulator's device arrays (``numba.cuda.to_device``) stand in for CuPy arrays and torch CUDA
tensors: the same validation, routing (``auto`` -> cuda > cupy), tile loop and result
conversion run, with NumPy as the array module. The last tests need a real device."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from hardmine import backends
from hardmine._problem import DEVICE
from hardmine.backends import gpu_rows

if backends.status()["cupy"] is not None:
    pytest.skip(f"no GPU backend: {backends.status()['cupy']}", allow_module_level=True)

from numba import cuda  # noqa: E402  (numba-cuda is present when the cupy backend loads)

from hardmine.backends import cupy as gpu_module  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the simulator's uint64 hash
BLOCK = (4, 8)


def _data(seed=0, num_queries=6, num_candidates=30, dim=5, dtype=np.float32):
    rng = np.random.default_rng(seed)
    queries = rng.integers(-3, 4, (num_queries, dim)).astype(dtype)
    candidates = rng.integers(-3, 4, (num_candidates, dim)).astype(dtype)
    return rng, queries, candidates


def _host(x) -> np.ndarray:
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    return gpu_module.xp.asnumpy(x) if gpu_module.xp is not np else np.asarray(x)


def test_auto_routes_device_inputs_to_a_gpu_backend():
    chosen = backends.get("auto", device=DEVICE)
    assert chosen.name == ("cuda" if backends.status()["cuda"] is None else "cupy")
    assert backends.get("auto").name in ("cpu", "numba")  # host inputs stay on the CPU


@pytest.mark.parametrize("metric", ["dot", "cosine"])
def test_topk_reads_device_arrays_in_place_and_returns_device_arrays(metric):
    _, queries, candidates = _data()
    q_dev, c_dev = cuda.to_device(queries), cuda.to_device(candidates)
    exclude = cuda.to_device(np.arange(6, dtype=np.int64))
    result = hardmine.topk(q_dev, c_dev, 7, metric=metric, exclude=exclude, block_size=BLOCK)
    on_host = hardmine.topk(queries, candidates, 7, metric=metric, exclude=np.arange(6), backend="cupy",
                            block_size=BLOCK)
    expected = hardmine.topk(queries, candidates, 7, metric=metric, exclude=np.arange(6), backend="reference")
    assert type(result.indices) is type(q_dev)  # results on the caller's device
    np.testing.assert_array_equal(_host(result.indices), on_host.indices)  # the same float32 arithmetic
    np.testing.assert_array_equal(_host(result.scores), on_host.scores)
    np.testing.assert_allclose(_host(result.scores), expected.scores, rtol=1e-6)
    np.testing.assert_array_equal(q_dev.copy_to_host(), queries)  # the caller's rows are not scaled in place


def test_mine_with_every_input_on_the_device():
    rng, queries, candidates = _data(1)
    positives = rng.integers(0, 30, 6)
    keys = rng.integers(0, 12, 30)
    options = dict(num_negatives=4, relative_margin=0.1, strategy="random", rank_range=(1, None), seed=3)
    ours = hardmine.mine(cuda.to_device(queries), cuda.to_device(candidates), positives=cuda.to_device(positives),
                         exclude_keys=cuda.to_device(keys), block_size=BLOCK, **options)
    expected = hardmine.mine(queries, candidates, positives=positives, exclude_keys=keys, backend="reference",
                             **options)
    np.testing.assert_array_equal(_host(ours.indices), expected.indices)
    np.testing.assert_allclose(_host(ours.positive_scores), expected.positive_scores, rtol=1e-6)
    assert (ours.stats.removed, ours.stats.key_excluded) == (expected.stats.removed, expected.stats.key_excluded)


def test_violations_and_similarity_on_the_device():
    rng, queries, candidates = _data(2)
    positives = rng.integers(0, 30, 6)
    ours = hardmine.violations(cuda.to_device(queries), cuda.to_device(candidates), positives=positives,
                               margin=0.5, block_size=BLOCK)
    expected = hardmine.violations(queries, candidates, positives=positives, margin=0.5, backend="reference")
    for mine, reference in zip(ours, expected):
        np.testing.assert_allclose(_host(mine), reference, rtol=1e-6)
    dense = hardmine.similarity(cuda.to_device(queries), cuda.to_device(candidates), block_size=BLOCK)
    np.testing.assert_array_equal(_host(dense), queries @ candidates.T)


def test_mixed_host_and_device_inputs_and_half_precision():
    _, queries, candidates = _data(3, dtype=np.float16)
    ours = hardmine.topk(queries, cuda.to_device(candidates), 5, block_size=BLOCK)
    expected = hardmine.topk(queries, candidates, 5, backend="reference")
    np.testing.assert_array_equal(ours.indices, expected.indices)  # host queries: NumPy results
    doubles = hardmine.topk(cuda.to_device(queries.astype(np.float64)), candidates, 5, block_size=BLOCK)
    np.testing.assert_array_equal(_host(doubles.indices), expected.indices)


def test_extreme_norms_under_cosine_are_rescaled_on_the_device():
    _, queries, candidates = _data(4)
    candidates[3] *= np.float32(1e30)
    candidates[5] *= np.float32(1e-30)
    ours = hardmine.topk(cuda.to_device(queries), cuda.to_device(candidates), 30, metric="cosine", block_size=BLOCK)
    on_host = hardmine.topk(queries, candidates, 30, metric="cosine", backend="cupy", block_size=BLOCK)
    expected = hardmine.topk(queries, candidates, 30, metric="cosine", backend="reference")
    np.testing.assert_array_equal(_host(ours.indices), on_host.indices)
    np.testing.assert_allclose(_host(ours.scores), expected.scores, rtol=1e-6, atol=1e-6)


def test_streamed_candidates_equal_resident_ones(monkeypatch):
    """Host candidates too large for the device stream a tile at a time (the simulator copies
    synchronously; on a GPU through pinned double buffers) with the same answers."""
    rng, queries, candidates = _data(5)
    positives = rng.integers(0, 30, 6)
    resident = hardmine.mine(queries, candidates, positives=positives, num_negatives=4, backend="cupy",
                             block_size=BLOCK, margin=0.2)
    monkeypatch.setattr(gpu_rows, "RESIDENT_FRACTION", 0.0)
    streamed = hardmine.mine(queries, candidates, positives=positives, num_negatives=4, backend="cupy",
                             block_size=BLOCK, margin=0.2)
    np.testing.assert_array_equal(streamed.indices, resident.indices)
    assert streamed.stats == resident.stats


def test_bad_device_inputs_get_clear_errors():
    _, queries, candidates = _data()
    c_dev = cuda.to_device(candidates)
    with pytest.raises(ValueError, match=r"backend 'reference' reads \['host'\].*cuda inputs.*copy them to the host"):
        hardmine.topk(cuda.to_device(queries), c_dev, 3, backend="reference")
    bad = queries.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="queries row 2 contains NaN or inf"):
        hardmine.topk(cuda.to_device(bad), c_dev, 3)
    with pytest.raises(TypeError, match="queries must hold float32 or float16 values on the device; got dtype int64"):
        hardmine.topk(cuda.to_device(queries.astype(np.int64)), c_dev, 3)
    with pytest.raises(ValueError, match=r"queries must be 2-D \(n, d\); got shape \(6,\)"):
        hardmine.topk(cuda.to_device(queries[:, 0].copy()), c_dev, 3)
    with pytest.raises(TypeError, match="candidates is a list of device arrays"):
        hardmine.topk(queries, [c_dev, c_dev], 3)
    zero = queries.copy()
    zero[4] = 0
    with pytest.raises(ValueError, match="queries row 4 has zero norm"):
        hardmine.topk(cuda.to_device(zero), c_dev, 3, metric="cosine")


@pytest.mark.gpu
def test_cupy_and_torch_cuda_inputs_on_a_device():
    """CuPy arrays and torch CUDA tensors (grad-tracking, bfloat16, on a side stream) in place."""
    if gpu_module.xp is np:
        pytest.skip("needs a GPU (HARDMINE_GPU_TESTS=1): the simulator has no CuPy arrays or CUDA tensors")
    import cupy

    torch = pytest.importorskip("torch")
    rng, queries, candidates = _data(6, num_queries=300, num_candidates=5000, dim=64)
    positives = rng.integers(0, 5000, 300)
    expected = hardmine.mine(queries, candidates, positives=positives, num_negatives=50, backend="numba")
    ours = hardmine.mine(cupy.asarray(queries), cupy.asarray(candidates), positives=positives, num_negatives=50)
    assert isinstance(ours.indices, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(ours.indices), expected.indices)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        q = torch.from_numpy(queries).cuda().requires_grad_()
        c = torch.from_numpy(candidates).cuda().to(torch.bfloat16)
        ours = hardmine.mine(q, c, positives=torch.from_numpy(positives).cuda(), num_negatives=50)
    assert ours.indices.device == q.device
    expected = hardmine.mine(queries, candidates, positives=positives, num_negatives=50, backend="numba")
    np.testing.assert_array_equal(ours.indices.cpu().numpy(), expected.indices)  # integers: exact in bfloat16
