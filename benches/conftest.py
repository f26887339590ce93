"""Shared bench machinery: problem sizes, and the summary table printed at the end.

Results are recorded (pytest-benchmark JSON under benches/results/), never asserted.
"""

from __future__ import annotations

import os
import platform

import pytest

#: HARDMINE_BENCH_SIZE=full is the issue's shape; "ci" (default) is small enough for CI
SIZES = {
    "full": dict(queries=8192, candidates=262144, dim=384),
    "ci": dict(queries=1024, candidates=32768, dim=384),
}
SIZE_NAME = os.environ.get("HARDMINE_BENCH_SIZE", "ci")
SIZE = SIZES[SIZE_NAME]

_ROWS: list[dict] = []


@pytest.fixture(scope="session")
def size() -> dict:
    return SIZE


@pytest.fixture
def record():
    """record(group, name, benchmark): adds the benchmark's median to the summary table."""

    def add(group: str, name: str, benchmark, flops: float) -> None:
        _ROWS.append(dict(group=group, name=name, seconds=benchmark.stats.stats.median, flops=flops))

    return add


def pytest_terminal_summary(terminalreporter):
    if not _ROWS:
        return
    write = terminalreporter.write_line
    cpu = platform.processor() or platform.machine()
    write("")
    write(f"hardmine benches, size {SIZE_NAME} (shapes in each file's docstring), {os.cpu_count()} cores ({cpu})")
    baseline = {r["group"]: r["seconds"] for r in _ROWS if r["name"] == "numpy sgemm (same shape)"}
    sgemm = next(iter(baseline.values()), None)
    faiss = {r["group"]: r["seconds"] for r in _ROWS if r["name"] == "faiss.knn"}
    alone = {r["group"]: r["seconds"] for r in _ROWS if "(alone)" in r["name"]}
    write(f"{'group':<14} {'implementation':<30} {'median s':>9} {'GFLOP/s':>8} {'x sgemm':>8} {'x faiss':>8} "
          f"{'x topk':>7}")
    for row in _ROWS:
        gflops = row["flops"] / row["seconds"] / 1e9
        vs_sgemm = f"{sgemm / row['seconds']:.2f}" if sgemm else "-"
        peer = faiss.get(row["group"])
        vs_faiss = f"{peer / row['seconds']:.2f}" if peer else "-"
        base = alone.get(row["group"])
        vs_topk = f"{row['seconds'] / base:.2f}" if base else "-"
        write(f"{row['group']:<14} {row['name']:<30} {row['seconds']:>9.3f} {gflops:>8.1f} {vs_sgemm:>8} "
              f"{vs_faiss:>8} {vs_topk:>7}")
    write("x sgemm: throughput relative to NumPy's sgemm on the same shape; x faiss: speed-up over faiss.knn "
          "(>1 = faster); x topk: time relative to hardmine's plain top-k (<1 = faster)")
