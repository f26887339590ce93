"""The ``cuda`` backend: the ``cupy`` backend's tile loop (CuPy matmul, i.e. cuBLAS, per score
tile) with the selection and violation kernels of the compiled ``_cuda`` module (CUDA C++,
``csrc/cuda/select.cu``) instead of numba-cuda's. The kernels share their rules with the CPU
core (``draws.hpp``, ``views.hpp``) and are compiled for sm_80 and sm_90 whenever nvcc is found;
they need a GPU to run (the CUDA simulator runs the ``cupy`` backend's twins of them)."""

from __future__ import annotations

import numpy as np

from . import cupy as gpu
from .._draws import Rule

if gpu.xp is np:
    raise ImportError("the cuda backend runs on a GPU only (under the CUDA simulator, backend='cupy' runs "
                      "the same kernels' numba-cuda twins)")
try:
    from .. import _cuda
except ImportError as error:
    raise ImportError(f"the _cuda module is not built ({error}); it is built when nvcc is found") from None
_count, _reason = _cuda.device_count()
if _count == 0:
    raise ImportError(f"no CUDA device for the _cuda module: {_reason}")


def _address(array) -> int:
    return int(array.data.ptr)


class NativeLaunch:
    """The ``_cuda`` kernels, on CuPy's current stream, given device addresses."""

    @staticmethod
    def _exclusion(device: gpu.DeviceArrays) -> tuple:
        indptr, indices, has_csr, query_groups, candidate_groups, has_groups, keys, key_indptr, key_indices, \
            has_key_exclusion = device.exclusion
        return (
            _address(indptr) if has_csr else 0, _address(indices) if has_csr else 0,
            _address(query_groups) if has_groups else 0, _address(candidate_groups) if has_groups else 0,
            _address(keys) if device.has_keys else 0,
            _address(key_indptr) if has_key_exclusion else 0, _address(key_indices) if has_key_exclusion else 0,
        )

    @staticmethod
    def _selection(selection: gpu.Selection) -> tuple:
        return (*(_address(array) for array in selection.buffers), selection.width)

    @staticmethod
    def _stream() -> int:
        return int(gpu.xp.cuda.get_current_stream().ptr)

    def consume(self, selection: gpu.Selection, tile, columns: tuple[int, int], q0: int, c0: int,
                device: gpu.DeviceArrays, rule: Rule) -> None:
        upper, has_upper, lower, has_lower, exclusive = device.bounds
        start, stop = columns  # the kernel reads columns [0, stop - start) from the shifted address
        _cuda.select_consume(
            _address(tile) + 4 * start, tile.shape[0], stop - start, tile.shape[1], q0, c0 + start, selection.mode,
            rule.seed % 2**64, float(rule.temperature or 1.0), rule.first_row, rule.first_id,
            self._selection(selection), self._exclusion(device), _address(upper) if has_upper else 0,
            _address(lower) if has_lower else 0, exclusive, self._stream())
        self.reduce(selection, device, final=False)

    def reduce(self, selection: gpu.Selection, device: gpu.DeviceArrays, final: bool) -> None:
        _cuda.select_reduce(selection.rows, selection.k, final, self._selection(selection), device.has_keys,
                            self._stream())

    def violations(self, tile, q0: int, c0: int, positives, margin: float, outputs: tuple,
                   device: gpu.DeviceArrays) -> None:
        _cuda.violations(_address(tile), tile.shape[0], tile.shape[1], tile.shape[1], q0, c0, _address(positives),
                         float(margin), *(_address(array) for array in outputs), self._exclusion(device),
                         self._stream())


class CudaBackend(gpu.CupyBackend):
    name = "cuda"
    launch = NativeLaunch()
