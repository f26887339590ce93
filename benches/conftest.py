"""Shared bench machinery: problem sizes, and the summary table printed at the end.

Results are recorded (pytest-benchmark JSON under benches/results/), never asserted.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest

#: HARDMINE_BENCH_SIZE=full is the issue's shape; "ci" (default) is small enough for CI
SIZES = {
    "full": dict(queries=8192, candidates=262144, dim=384),
    "ci": dict(queries=1024, candidates=32768, dim=384),
}
SIZE_NAME = os.environ.get("HARDMINE_BENCH_SIZE", "ci")
SIZE = SIZES[SIZE_NAME]

#: candidate rows per NumPy matmul call (the peers must stay blocked too)
NUMPY_BLOCK = 16384
ROUNDS = 3


def flops(queries, candidates) -> float:
    """The score GEMM's flops, 2 Q C d: every top-k's throughput is given on this count."""
    return 2.0 * queries.shape[0] * candidates.shape[0] * queries.shape[1]


def run(benchmark, fn):
    return benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def skip_unless_native(codes: str) -> None:
    """Skips a certified (int8/bf16) timing where the compiled core or its native kernel is absent:
    the portable kernels are a correctness fallback, far slower than fp32, and nothing is claimed
    of their speed."""
    from hardmine import _precision, backends

    if backends.status()["cpu"] is not None:
        pytest.skip(f"compiled core absent: {backends.status()['cpu']}")
    native, why = _precision.kernel(codes)
    if not native:
        pytest.skip(f"{codes}: {why}")


def numpy_sgemm(queries, candidates):
    """The fp32 floor: NumPy's sgemm over the same shape, blocked like the peers."""
    out = np.empty((queries.shape[0], NUMPY_BLOCK), dtype=np.float32)
    for start in range(0, candidates.shape[0], NUMPY_BLOCK):
        block = candidates[start : start + NUMPY_BLOCK]
        np.matmul(queries, block.T, out=out[:, : block.shape[0]])


_ROWS: list[dict] = []
_PEERS: list[dict] = []
#: the libraries the drop-ins replace: each task's ratio is against their row
_ORIGINALS = ("pytorch-metric-learning", "sentence-transformers", "faiss.Kmeans")


def record_peer(task: str, implementation: str, seconds: float, peak_bytes: int | None, outputs: int) -> None:
    """A row of the drop-in table: the same task by hardmine and by the library it replaces."""
    _PEERS.append(dict(task=task, implementation=implementation, seconds=seconds, peak=peak_bytes, outputs=outputs))


@pytest.fixture(scope="session")
def size() -> dict:
    return SIZE


@pytest.fixture
def record():
    """record(group, name, benchmark): adds the benchmark's median to the summary table."""

    def add(group: str, name: str, benchmark, flops: float) -> None:
        _ROWS.append(dict(group=group, name=name, seconds=benchmark.stats.stats.median, flops=flops))

    return add


def _peer_table(write) -> None:
    write("")
    write(f"drop-ins, size {SIZE_NAME}, {os.cpu_count()} cores: x original = the original's time / this time "
          f"(>1 = faster); memory = peak extra memory of one call; outputs = tuples, rows, or k-means inertia")
    write(f"{'task':<38} {'implementation':<30} {'median s':>9} {'x original':>10} {'memory MiB':>10} "
          f"{'outputs':>14}")
    originals = {r["task"]: r for r in _PEERS if r["implementation"] in _ORIGINALS}
    for row in sorted(_PEERS, key=lambda r: (r["task"], r["implementation"] in _ORIGINALS)):
        base = originals.get(row["task"])
        ratio = f"{base['seconds'] / row['seconds']:.2f}" if base else "-"
        memory = "-" if row["peak"] is None else f"{row['peak'] / 2**20:.1f}"
        write(f"{row['task']:<38} {row['implementation']:<30} {row['seconds']:>9.4f} {ratio:>10} {memory:>10} "
              f"{row['outputs']:>14,}")


def pytest_terminal_summary(terminalreporter):
    if _PEERS:
        _peer_table(terminalreporter.write_line)
    if not _ROWS:
        return
    write = terminalreporter.write_line
    cpu = platform.processor() or platform.machine()
    write("")
    write(f"hardmine benches, size {SIZE_NAME} (shapes in each file's docstring), {os.cpu_count()} cores ({cpu})")
    sgemm = {r["flops"]: r["seconds"] for r in _ROWS if r["name"] == "numpy sgemm (same shape)"}
    faiss = {r["group"]: r["seconds"] for r in _ROWS if r["name"] == "faiss.knn"}
    alone = {r["group"]: r["seconds"] for r in _ROWS if "(alone)" in r["name"]}
    write(f"{'group':<24} {'implementation':<30} {'median s':>9} {'GFLOP/s':>8} {'x sgemm':>8} {'x faiss':>8} "
          f"{'x topk':>7}")
    for row in _ROWS:
        gflops = row["flops"] / row["seconds"] / 1e9
        floor = sgemm.get(row["flops"])
        vs_sgemm = f"{floor / row['seconds']:.2f}" if floor else "-"
        peer = faiss.get(row["group"])
        vs_faiss = f"{peer / row['seconds']:.2f}" if peer else "-"
        base = alone.get(row["group"])
        vs_topk = f"{row['seconds'] / base:.2f}" if base else "-"
        write(f"{row['group']:<24} {row['name']:<30} {row['seconds']:>9.3f} {gflops:>8.1f} {vs_sgemm:>8} "
              f"{vs_faiss:>8} {vs_topk:>7}")
    write("x sgemm: throughput relative to NumPy's sgemm on the same shape; x faiss: speed-up over faiss.knn "
          "(>1 = faster); x topk: time relative to hardmine's plain top-k (<1 = faster)")
