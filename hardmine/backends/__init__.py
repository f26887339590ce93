"""Backend registry: lazy factories, a priority list for ``"auto"`` and the
reason each backend could not load (shown by :func:`hardmine.info`).

A backend named explicitly never falls back silently: it raises with the
recorded reason. ``HARDMINE_BACKEND`` overrides the default ``"auto"``.
"""

from __future__ import annotations

import importlib
import os
from typing import Protocol

import numpy as np

from .._validation import Problem


class Backend(Protocol):
    name: str

    def topk(self, problem: Problem, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, scores, counts): counts is (Q, len(problem.count_bounds)) int64."""
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
}
#: the order ``"auto"`` tries; the float64 reference is for tests and benches only
AUTO_ORDER = ("cpu", "numba")

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


def get(name: str | None = "auto") -> Backend:
    """Returns the backend called ``name`` (``"auto"``: the first that loads)."""
    if name is None or name == "auto":
        name = os.environ.get("HARDMINE_BACKEND", "auto") or "auto"
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = _load(candidate)
            if backend is not None:
                return backend
        reasons = "; ".join(f"{n}: {_failures.get(n)}" for n in AUTO_ORDER)
        raise RuntimeError(f"no hardmine backend could be loaded ({reasons})")
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(f"backend must be 'auto' or one of {names()}; got {name!r}")
    backend = _load(name)
    if backend is None:
        raise RuntimeError(f"backend {name!r} is not available: {_failures[name]}")
    return backend


def status() -> dict[str, str | None]:
    """name -> None when the backend loads, else the reason it does not."""
    return {name: (None if _load(name) is not None else _failures[name]) for name in _FACTORIES}
