"""Backend registry: lazy factories, a priority list per input location for ``"auto"``,
and the reason each backend could not load (shown by :func:`hardmine.info`).

A backend declares where the arrays it reads live (``devices``) and which scoring
precisions it runs (``precisions``); ``"auto"`` picks by the input's location first, then
by priority. A backend named explicitly never falls back silently: it raises with the
recorded reason, or says that it cannot read such inputs. ``HARDMINE_BACKEND`` overrides
the default ``"auto"``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol

import numpy as np

from .._draws import Rule
from .._problem import DEVICE, HOST, Problem


class Backend(Protocol):
    """What every backend implements. Each call gets a validated :class:`Problem` whose
    ``device`` is in ``devices`` and ``precision`` in ``precisions``."""

    name: str
    devices: frozenset[str]  # e.g. {HOST}: NumPy arrays and memory maps
    precisions: frozenset[str]  # e.g. {"fp32"}

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, scores, counts): counts is (Q, len(problem.count_bounds)) int64."""
        ...

    def sample(self, problem: Problem, count: int, rule: Rule, top_k: int = 0) -> tuple[np.ndarray, ...]:
        """(indices, scores, priorities, counts, top indices, top scores): ``count`` admissible
        candidates per query drawn without replacement by the seeded priorities of
        :func:`hardmine._draws.priorities`, and in the same pass the ``top_k`` best (as ``topk``)."""
        ...

    def violations(
        self, problem: Problem, positive_scores: np.ndarray, margin: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def similarity(self, problem: Problem) -> np.ndarray: ...


#: name -> "module:attribute" of a zero-argument factory
_FACTORIES = {
    "cpu": "hardmine.backends.cpu:CpuBackend",
    "numba": "hardmine.backends.numba:NumbaBackend",
    "reference": "hardmine.backends.reference:ReferenceBackend",
    "cupy": "hardmine.backends.cupy:CupyBackend",
    "cuda": "hardmine.backends.cuda:CudaBackend",
}
#: the order ``"auto"`` tries, per input location; the float64 reference is for tests and
#: benches only
AUTO_ORDER = {HOST: ("cpu", "numba"), DEVICE: ("cuda", "cupy")}

_loaded: dict[str, Backend] = {}
_failures: dict[str, str] = {}


def names() -> tuple[str, ...]:
    return tuple(_FACTORIES)


def _load(name: str) -> Backend | None:
    if name in _loaded:
        return _loaded[name]
    if name in _failures:
        return None
    module_name, attribute = _FACTORIES[name].split(":")
    try:
        backend = getattr(importlib.import_module(module_name), attribute)()
    except Exception as error:  # any import/initialisation failure is a reason to report
        _failures[name] = f"{type(error).__name__}: {error}"
        return None
    _loaded[name] = backend
    return backend


def _accepts(backend: Backend, device: str, precision: str) -> bool:
    return device in backend.devices and precision in backend.precisions


def get(name: str | None = "auto", *, device: str = HOST, precision: str = "fp32") -> Backend:
    """Returns the backend called ``name`` for inputs on ``device`` scored in ``precision``
    (``"auto"``: the first backend for that device that loads and runs that precision)."""
    if name is None or name == "auto":
        name = os.environ.get("HARDMINE_BACKEND", "auto") or "auto"
    if name == "auto":
        order = AUTO_ORDER.get(device, ())
        for candidate in order:
            backend = _load(candidate)
            if backend is not None and _accepts(backend, device, precision):
                return backend
        reasons = "; ".join(f"{n}: {_failures.get(n) or 'does not run ' + precision}" for n in order)
        raise RuntimeError(f"no hardmine backend for {device} inputs could be loaded ({reasons or 'none known'})")
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(f"backend must be 'auto' or one of {names()}; got {name!r}")
    backend = _load(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is not available: {_failures[name]}")
    if not _accepts(backend, device, precision):
        advice = (" (copy them to the host, e.g. cupy.asnumpy(x) or x.cpu(), or use backend='cuda' or 'cupy')"
                  if device == DEVICE and device not in backend.devices else "")
        raise ValueError(f"backend {name!r} reads {sorted(backend.devices)} inputs in {sorted(backend.precisions)}; "
                         f"these are {device} inputs in {precision}{advice}")
    return backend


def status() -> dict[str, str | None]:
    """name -> None when the backend loads, else the reason it does not."""
    return {name: (None if _load(name) is not None else _failures[name]) for name in _FACTORIES}


def cuda_status() -> dict[str, Any]:
    """The `_cuda` extension: built or not, its architectures, runtime and visible devices (or why none)."""
    try:
        from .. import _cuda
    except ImportError as error:
        return {"built": False, "reason": f"_cuda module absent ({error})"}
    count, reason = _cuda.device_count()
    return {
        "built": True,
        "architectures": _cuda.CUDA_ARCHITECTURES,
        "runtime_version": _cuda.runtime_version(),
        "devices": count,
        "reason": reason or None,
    }
