"""Arrays in and out: NumPy (memory maps included), torch tensors (DLPack views) and
bfloat16 through ml_dtypes, in one place. Results go back in the caller's library."""

from __future__ import annotations

from typing import Any

import numpy as np

try:  # bfloat16 is optional (the ``bf16`` extra)
    import ml_dtypes

    BFLOAT16: np.dtype | None = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - exercised only without ml_dtypes
    BFLOAT16 = None


def as_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        if x.device.type != "cpu":
            raise TypeError(
                f"{name} is a torch tensor on {x.device}; device arrays are not read in place yet. "
                f"Pass {name}.cpu() (backend='cupy' or 'cuda' then scores it on the GPU, a tile at a time)"
            )
        # negated and conjugated views are lazy in torch and refuse .numpy(): materialise them
        tensor = x.detach().resolve_conj().resolve_neg()
        if str(tensor.dtype) == "torch.bfloat16":
            if BFLOAT16 is None:
                raise TypeError(f"{name} is bfloat16; install ml_dtypes (pip install hardmine[bf16])")
            import torch

            return tensor.view(torch.int16).numpy().view(BFLOAT16)
        return tensor.numpy()
    if module == "cupy":
        raise TypeError(f"{name} is a CuPy array; device arrays are not read in place yet. Pass cupy.asnumpy({name}) "
                        f"(backend='cupy' or 'cuda' then scores it on the GPU, a tile at a time)")
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except Exception as error:  # e.g. ragged nested lists
        raise TypeError(f"{name} must be a 2-D array of embeddings; got {type(x).__name__}") from error
    return array


def like_input(template: Any, *arrays: np.ndarray) -> tuple:
    """Returns results in the library of the input (NumPy in, NumPy out; torch in, torch out)."""
    if type(template).__module__.split(".")[0] == "torch":
        import torch

        return tuple(torch.from_numpy(a) for a in arrays)
    return arrays
