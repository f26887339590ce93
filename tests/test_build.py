"""What was built and what loaded: CI sets HARDMINE_EXPECT_* so that a silently
failed compile cannot pass as green."""

from __future__ import annotations

import os

import numpy as np
import pytest

import hardmine
from hardmine import backends


def test_expected_backends_loaded():
    expected = os.environ.get("HARDMINE_EXPECT_BACKENDS")
    status = backends.status()
    loaded = {name for name, reason in status.items() if reason is None}
    if expected is None:
        assert {"numba", "reference"} <= loaded, status
    else:
        assert loaded == set(expected.split(",")), status
    for name, reason in status.items():
        assert reason is None or reason.strip(), f"{name} failed without a reason"


def test_cuda_module_built_when_expected():
    facts = hardmine.info(print_result=False)
    expected = os.environ.get("HARDMINE_EXPECT_CUDA_MODULE")
    if expected == "1":
        from hardmine import _cuda

        assert facts["cpu_build"]["cuda_built"] is True
        assert "80" in _cuda.CUDA_ARCHITECTURES and "90" in _cuda.CUDA_ARCHITECTURES
    elif expected == "0":
        assert facts["cuda"]["built"] is False and "_cuda module absent" in facts["cuda"]["reason"]
    if facts["cpu_build"] is not None:  # the CPU core's record of the build agrees with what imports
        assert facts["cpu_build"]["cuda_built"] is facts["cuda"]["built"]
    assert facts["cuda"]["built"] or facts["cuda"]["reason"]


def test_info_reports_every_backend(capsys):
    facts = hardmine.info()
    printed = capsys.readouterr().out
    assert facts["version"] in printed
    for name in backends.names():
        assert name in printed
    assert "cuda" in printed and "scale-out (hardmine mine --ray): " in printed
    if os.environ.get("HARDMINE_EXPECT_RAY") == "1":
        assert facts["ray"] is not None and f"Ray {facts['ray']}" in printed
    if facts["backends"]["cpu"] is None:
        for key in ("blas", "openmp", "simd"):
            assert key in printed
        assert "OpenBLAS" in facts["cpu_build"]["blas"]
    else:
        assert "unavailable" in printed


@pytest.mark.gpu
def test_cuda_row_dot_matches_numpy():
    cuda = pytest.importorskip("hardmine._cuda", reason="_cuda module not built")
    count, reason = cuda.device_count()
    if count == 0:
        pytest.skip(f"no CUDA device visible: {reason}")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1000, 77), dtype=np.float32)
    b = rng.standard_normal((1000, 77), dtype=np.float32)
    np.testing.assert_allclose(cuda.row_dot(a, b), np.einsum("ij,ij->i", a, b), rtol=1e-5, atol=1e-4)
