"""Shared fixtures: the backends under test and the float64 comparison helpers."""

from __future__ import annotations

import os

# No GPU in CI: the `cupy` backend's numba-cuda kernels run under the CUDA simulator, with NumPy
# standing in for CuPy (read by numba when it is first imported, so it is set before anything
# imports it). HARDMINE_GPU_TESTS=1 on a GPU machine runs them on the device instead.
if os.environ.get("HARDMINE_GPU_TESTS") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import subprocess
import sys

import numpy as np
import pytest

from hardmine import backends

#: every backend that is compared with the float64 reference
ENGINE_BACKENDS = ("cpu", "numba")


def available_engine_backends() -> list[str]:
    status = backends.status()
    return [name for name in ENGINE_BACKENDS if status[name] is None]


@pytest.fixture(params=available_engine_backends())
def backend(request) -> str:
    return request.param


@pytest.fixture
def native() -> str:
    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    return "cpu"


def as64(x) -> np.ndarray:
    """The values a backend actually sees (fp16/bf16 rounding included), in float64."""
    return np.asarray(x).astype(np.float32).astype(np.float64)


def scores64(queries, candidates, metric: str = "dot") -> np.ndarray:
    q, c = as64(queries), as64(candidates)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return q @ c.T


def tolerance(queries, candidates, metric: str, half: bool) -> np.ndarray:
    """Per-query absolute tolerance: SPEC 6's relative bound on the scale ||q|| * max ||c||
    (1 for cosine), 1e-5 for fp32 inputs and 2e-3 for fp16/bf16."""
    relative = 2e-3 if half else 1e-5
    if metric == "cosine":
        return np.full(len(queries), relative)
    q, c = as64(queries), as64(candidates)
    c_max = np.linalg.norm(c, axis=1).max() if len(c) else 0.0
    return relative * (1.0 + np.linalg.norm(q, axis=1) * c_max)


def assert_topk_matches(result, reference, dense: np.ndarray, excluded: np.ndarray, tol: np.ndarray) -> None:
    """FAISS-style comparison with the float64 reference.

    ``dense`` holds the exact float64 scores and ``excluded`` the (Q, C) mask of
    inadmissible candidates. Scores must match position by position; where indices
    differ (ties), the exact scores of the returned indices must equal the reference's.
    """
    indices, scores = np.asarray(result.indices), np.asarray(result.scores)
    ref_indices, ref_scores = np.asarray(reference.indices), np.asarray(reference.scores)
    assert indices.shape == ref_indices.shape and indices.dtype == np.int64
    assert scores.shape == ref_scores.shape and scores.dtype == np.float32
    valid = indices >= 0
    np.testing.assert_array_equal(valid, ref_indices >= 0, err_msg="number of admissible results differs")
    assert np.all(scores[~valid] == -np.inf)
    for row in range(indices.shape[0]):
        got = indices[row, valid[row]]
        assert len(set(got.tolist())) == got.size, f"row {row}: duplicate indices"
        assert not excluded[row, got].any(), f"row {row}: an excluded candidate was returned"
        exact_got = dense[row, got]
        exact_ref = np.asarray(ref_scores[row, valid[row]], dtype=np.float64)
        np.testing.assert_allclose(exact_got, dense[row, ref_indices[row, valid[row]]], rtol=0, atol=tol[row],
                                   err_msg=f"row {row}: returned set is not the top-k")
        np.testing.assert_allclose(scores[row, valid[row]], exact_ref, rtol=0, atol=tol[row] * 1.01,
                                   err_msg=f"row {row}: scores differ from the reference")
        assert np.all(np.diff(scores[row, valid[row]]) <= 0), f"row {row}: not sorted by score"


def paired_dump(folder, num_candidates: int, num_queries: int, dim: int):
    """Writes candidates.npy, queries.npy (each query near its positive candidate) and
    positives.npy into ``folder``; returns (candidates, queries, positives)."""
    rng = np.random.default_rng(0)
    candidates = rng.standard_normal((num_candidates, dim), dtype=np.float32)
    positives = rng.integers(0, num_candidates, num_queries)
    queries = candidates[positives] + 0.5 * rng.standard_normal((num_queries, dim), dtype=np.float32)
    np.save(folder / "candidates.npy", candidates)
    np.save(folder / "queries.npy", queries)
    np.save(folder / "positives.npy", positives)
    return candidates, queries, positives


def hardmine_mine(cwd, *args, **popen):
    """`hardmine mine ARGS` in a subprocess (the installed package), its output captured."""
    return subprocess.run([sys.executable, "-m", "hardmine", "mine", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, **popen)
