"""The offline CLI against the in-memory API on the same dump (not run in CI at full size).

    HARDMINE_BENCH_SIZE=full python -m pytest benches/bench_cli.py -s \
        --benchmark-json benches/results/cli_full.json

Full size: 100k queries x 1M candidates, d=384, fp16 dump, top 5 with positives
excluded. Reports wall time, rows/s and the child's peak RSS (``ru_maxrss``,
which includes the page cache of its memory maps).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np
import pytest

import hardmine

SIZES = {"full": (100_000, 1_000_000, 384), "ci": (4_000, 50_000, 384)}
QUERIES, CANDIDATES, DIM = SIZES[os.environ.get("HARDMINE_BENCH_SIZE", "ci")]


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-dump")
    rng = np.random.default_rng(0)
    for name, rows in (("candidates", CANDIDATES), ("queries", QUERIES)):
        array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float16, shape=(rows, DIM))
        for start in range(0, rows, 100_000):
            stop = min(rows, start + 100_000)
            array[start:stop] = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        array.flush()
        del array
    np.save(folder / "positives.npy", rng.integers(0, CANDIDATES, QUERIES))
    return folder


def flops() -> float:
    return 2.0 * QUERIES * CANDIDATES * DIM


def test_cli(benchmark, dump, record):
    out = dump / "out.parquet"

    def run():
        if out.exists():
            out.unlink()
        subprocess.run([sys.executable, "-m", "hardmine", "mine", "--queries", "queries.npy", "--candidates",
                        "candidates.npy", "--positives", "positives.npy", "--out", "out.parquet",
                        "--memory-limit", "2GB", "--quiet"], cwd=dump, check=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**10
    record("cli", f"hardmine mine CLI (peak RSS {peak:,.0f} MiB)", benchmark, flops())
    print(f"\nCLI: {QUERIES / benchmark.stats.stats.median:,.0f} rows/s, child peak RSS {peak:,.0f} MiB")


def test_in_memory_api(benchmark, dump, record):
    queries = np.load(dump / "queries.npy", mmap_mode="r")
    candidates = np.load(dump / "candidates.npy", mmap_mode="r")
    positives = np.load(dump / "positives.npy")
    benchmark.pedantic(lambda: hardmine.mine(queries, candidates, positives=positives), rounds=1, iterations=1)
    record("cli", "hardmine.mine in memory", benchmark, flops())
    print(f"\nAPI: {QUERIES / benchmark.stats.stats.median:,.0f} rows/s")
