"""The scoring precision of a call (``precision=``): ``"fp32"``, the float32 engine;
``"int8"`` or ``"bf16"``, low-precision scores screened by a certified per-pair error bound and
the shortlist re-scored exactly, which returns the exact engine's answer (docs/precision.md);
``"auto"``, the fastest exact path this machine and call allow."""

from __future__ import annotations

from typing import Any

from . import backends
from ._problem import CERTIFIED, Problem

PRECISIONS = ("auto", "fp32", "int8", "bf16")

#: the int8 path's int32 sums hold d <= this many products (the bf16 path takes the same limit)
MAX_INT8_DIM = 65536

#: ``auto`` tries these in order, the first whose native kernel this CPU runs: bf16 first, as
#: measured faster on Zen 4 (smaller shortlists for the same kernel speed; docs/benchmarks.md)
AUTO_ORDER = ("bf16", "int8")

#: ``auto`` takes a certified path from this many queries on (below, quantising and packing the
#: candidates, once per call, costs more than the low-precision products save) ...
AUTO_INT8_MIN_QUERIES = 1024
#: ... up to this k (past it the shortlists' exact re-scoring outweighs the savings); measured
#: on Zen 4 at d=384 (docs/precision.md)
AUTO_INT8_MAX_K = 256


def check(value: Any) -> str:
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {value!r}")
    return str(value)


def kernel(codes: str) -> tuple[bool, str]:
    """(whether the ``codes`` ("int8" or "bf16") path runs its native kernel here, why or why not)."""
    status = backends.status()["cpu"]
    if status is not None:
        return False, f"the compiled core is absent ({status})"
    cpu = backends.get("cpu")
    if codes == "int8":
        if not cpu.int8_native:
            return False, "this CPU lacks AVX-512 VNNI (int8 runs, on a portable kernel far slower than fp32)"
        return True, "AVX-512 VNNI int8 kernel"
    if not cpu.bf16_native:
        return False, "this CPU lacks AVX512_BF16 (bf16 runs, on a portable kernel far slower than fp32)"
    return True, "AVX512_BF16 bf16 kernel"


def auto_codes() -> str | None:
    """The certified path ``auto`` takes on this machine for a large call, or None."""
    return next((codes for codes in AUTO_ORDER if kernel(codes)[0]), None)


def resolve(requested: str, problem: Problem, backend: str | None, *, k: int) -> str:
    """The precision a call runs: ``requested`` checked against the problem, or what ``auto`` picks."""
    if requested in CERTIFIED:
        if problem.queries.dim > MAX_INT8_DIM:
            raise ValueError(f"precision={requested!r} takes d <= {MAX_INT8_DIM}; these rows have "
                             f"d={problem.queries.dim}")
        return requested
    if requested == "fp32":
        return requested
    codes = auto_codes()
    large = problem.queries.rows >= AUTO_INT8_MIN_QUERIES and problem.candidates.rows >= 8 * k and k <= AUTO_INT8_MAX_K
    try:  # the backend the call will get (HARDMINE_BACKEND included) must be the compiled core
        on_cpu = backends.get(backend, device=problem.device).name == "cpu"
    except (RuntimeError, ValueError):
        return "fp32"  # the call itself reports why it cannot run
    fits = problem.queries.dim <= MAX_INT8_DIM
    # unscanned inputs (check_finite=False) may hold rows the bound cannot cover: the certified path
    # notices them while quantising and hands the call to the fp32 engine (same answers)
    return codes if codes is not None and large and on_cpu and fits else "fp32"
