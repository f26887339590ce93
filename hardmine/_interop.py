"""Arrays in and out: NumPy (memory maps included), torch tensors (DLPack views), device
arrays (CuPy, torch CUDA tensors, anything with ``__cuda_array_interface__``) and bfloat16
through ml_dtypes, in one place. Results go back in the caller's library and, for device
inputs, on the caller's device."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._problem import DeviceMatrix

try:  # bfloat16 is optional (the ``bf16`` extra)
    import ml_dtypes

    BFLOAT16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    BFLOAT16 = None


def _module(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _simulated(x: Any) -> bool:
    """A device array of numba's CUDA simulator (CI's stand-in for a GPU)."""
    return type(x).__name__ == "FakeCUDAArray" and type(x).__module__.startswith("numba")


def is_device_array(x: Any) -> bool:
    """True for arrays in GPU memory: CuPy, torch CUDA tensors, Numba device arrays, any
    ``__cuda_array_interface__`` exporter, and the CUDA simulator's stand-ins."""
    if isinstance(x, (np.ndarray, DeviceMatrix)):
        return isinstance(x, DeviceMatrix)
    if _module(x) == "torch":
        return x.device.type == "cuda"
    return _module(x) == "cupy" or _simulated(x) or hasattr(type(x), "__cuda_array_interface__")


def array_module():
    """The array library that reads device arrays in place: CuPy on a GPU, NumPy under the
    CUDA simulator (whose device arrays wrap NumPy arrays)."""
    import numba

    if numba.config.ENABLE_CUDASIM:
        return np
    try:
        import cupy
    except ImportError as error:
        raise ImportError(f"cupy is not installed ({error}); pip install cupy-cuda12x or cupy-cuda13x") from None
    return cupy


def device_view(x: Any, name: str) -> DeviceMatrix:
    """The device array ``x`` viewed in place (no copy) by :func:`array_module`; a torch
    bfloat16 tensor, which CuPy cannot read, is converted to float32 on its device (a copy)."""
    if isinstance(x, DeviceMatrix):
        return x
    try:
        xp = array_module()
    except ImportError as error:
        raise TypeError(f"{name} is a device array ({type(x).__name__}), which needs CuPy to be read: {error}") from None
    if _module(x) == "torch":
        tensor = x.detach().resolve_conj().resolve_neg()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        import torch

        # torch may still be writing the tensor on its own stream: CuPy's stream waits for that
        # work on the device (no host synchronisation) before anything reads it
        written = xp.cuda.Event(disable_timing=True)
        written.record(xp.cuda.ExternalStream(torch.cuda.current_stream(tensor.device).cuda_stream))
        xp.cuda.get_current_stream().wait_event(written)
        return DeviceMatrix(xp.asarray(tensor), xp)
    if _simulated(x):
        return DeviceMatrix(np.asarray(x), np)  # shares the wrapped array's memory
    return DeviceMatrix(xp.asarray(x), xp)


def to_host(x: Any) -> Any:
    """Device arrays copied to a NumPy array; anything else unchanged (small per-query inputs:
    ids, labels, positives)."""
    if not is_device_array(x):
        return x
    if _module(x) == "torch":
        return x.detach().cpu().numpy()
    if _simulated(x):
        return x.copy_to_host()
    view = device_view(x, "array")
    return view.xp.asnumpy(view.data) if view.xp is not np else np.array(view.data)


def as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    module = _module(x)
    if module == "torch":
        if x.device.type != "cpu":
            raise TypeError(f"{name} is a torch tensor on {x.device}; this function reads host memory: pass "
                            f"{name}.cpu()")
        # negated and conjugated views are lazy in torch and refuse .numpy(): materialise them
        tensor = x.detach().resolve_conj().resolve_neg()
        if str(tensor.dtype) == "torch.bfloat16":
            if BFLOAT16 is None:
                raise TypeError(f"{name} is bfloat16; install ml_dtypes (pip install hardmine[bf16])")
            import torch

            return tensor.view(torch.int16).numpy().view(BFLOAT16)
        return tensor.numpy()
    if is_device_array(x):
        raise TypeError(f"{name} is a device array ({type(x).__name__}); this function reads host memory: copy "
                        f"it to the host first")
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except Exception as error:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}") from error
    return array


def like_input(template: Any, *arrays: np.ndarray) -> tuple:
    """Returns results in the library of the input (NumPy in, NumPy out; torch in, torch out),
    on the input's device."""
    module = _module(template)
    if module == "torch":
        import torch

        return tuple(torch.from_numpy(a).to(template.device) for a in arrays)
    if _simulated(template):
        from numba import cuda

        return tuple(cuda.to_device(a) for a in arrays)
    if is_device_array(template):
        with template.device:  # a CuPy array (or another exporter read through CuPy): its own GPU
            return tuple(array_module().asarray(a) for a in arrays)
    return arrays
