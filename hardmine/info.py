"""What this install can do: version, backends (and why a missing one failed), build facts."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np

from . import _precision, backends


def info(print_result: bool = True) -> dict[str, Any]:
    """Version, backends (with the reason each missing one failed) and build facts.

    Printed as a short report unless ``print_result=False``; always returned as a dict.
    """
    version = installed_version("hardmine") or "unknown (not installed)"
    status = backends.status()
    build = None
    if status.get("cpu") is None:
        cpu = backends.get("cpu")
        # with the BLAS kernel, what decides float32 score bytes (merges compare it: docs/scaling.md)
        build = dict(cpu.build_info, tiles=cpu.tiles(None))
    facts = {
        "version": version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backends": status,
        "cpu_build": build,
        "cuda": backends.cuda_status(),
        "certified": {codes: dict(zip(("native", "reason"), _precision.kernel(codes))) for codes in ("int8", "bf16")},
        "auto": _precision.auto_codes(),
        "ray": installed_version("ray"),
    }
    if print_result:
        print(format_info(facts))
    return facts


def installed_version(name: str) -> str | None:
    """The version of an installed distribution (None if absent), read without importing it."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def format_info(facts: dict[str, Any]) -> str:
    lines = [f"hardmine {facts['version']} (Python {facts['python']}, NumPy {facts['numpy']})", "backends:"]
    for name, reason in facts["backends"].items():
        lines.append(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    cuda = facts["cuda"]
    lines.append("_cuda module (the cuda backend's kernels):")
    if not cuda["built"]:
        lines.append(f"  not built: {cuda['reason']}")
    elif cuda["devices"] == 0:
        lines.append(f"  built ({cuda['architectures']}), no usable device: {cuda['reason']}")
    else:
        lines.append(f"  built ({cuda['architectures']}), {cuda['devices']} device(s)")
    for codes, kernel in facts["certified"].items():
        lines.append(f"precision={codes!r} (certified, exact answers): {kernel['reason']}")
    auto = f"takes {facts['auto']!r} for large calls" if facts["auto"] else "stays on fp32"
    lines.append(f"precision='auto': {auto}")
    ray = f"Ray {facts['ray']}" if facts["ray"] else 'Ray not installed (pip install "hardmine[ray]")'
    lines.append(f"scale-out (hardmine mine --ray): {ray}")
    build = facts["cpu_build"]
    if build:
        lines.append("cpu build:")
        for key in ("blas", "openmp", "max_threads", "tiles", "simd", "compiler", "cuda_reason"):
            lines.append(f"  {key:<12} {build[key]}")
    return "\n".join(lines)
