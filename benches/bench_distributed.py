"""The same `hardmine mine` job in one process and on a 2-worker local Ray cluster (this machine).

    HARDMINE_BENCH_SIZE=full python -m pytest benches/bench_distributed.py -s \
        --benchmark-json benches/results/distributed_full.json

On 2 cores parity is the best to expect: the single process runs the engine on 2 threads, the
cluster 2 one-thread tasks. Also measured: the cluster's startup (a one-block job on a tiny dump,
less the same job in one process) and, from those, the overhead per block. Each run is a fresh
`hardmine mine` process, as a user runs it (a local cluster is started and stopped by each).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("ray", reason='the [ray] extra: pip install "hardmine[ray]"')

#: (queries, candidates, d, rows per block): full = 64 blocks, each re-reading 400 MB of candidates
SIZES = {"full": (16384, 262144, 384, 256), "ci": (2048, 32768, 384, 256)}
QUERIES, CANDIDATES, DIM, BLOCK_ROWS = SIZES[os.environ.get("HARDMINE_BENCH_SIZE", "ci")]
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed-dump")
    rng = np.random.default_rng(0)
    np.save(folder / "candidates.npy", rng.standard_normal((CANDIDATES, DIM), dtype=np.float32))
    np.save(folder / "queries.npy", rng.standard_normal((QUERIES, DIM), dtype=np.float32))
    np.save(folder / "tiny.npy", rng.standard_normal((BLOCK_ROWS, DIM), dtype=np.float32))
    np.save(folder / "tiny-candidates.npy", rng.standard_normal((1024, DIM), dtype=np.float32))
    return folder


def _mine(folder, queries: str, candidates: str, *extra: str) -> float:
    out = folder / "out.npz"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hardmine", "mine", "--queries", queries, "--candidates", candidates,
                    "--num-negatives", "10", "--block-rows", str(BLOCK_ROWS), "--out", "out.npz", "--quiet",
                    *extra], cwd=folder, env=ENV, check=True)
    return time.perf_counter() - start


@pytest.mark.parametrize("how", ["single process, 2 threads", "ray local:2, 2 tasks x 1 thread"])
def test_job(benchmark, dump, record, how):
    extra = ("--threads", "2") if how.startswith("single") else ("--ray", "local:2", "--cpus-per-task", "1")
    benchmark.pedantic(lambda: _mine(dump, "queries.npy", "candidates.npy", *extra), rounds=1, iterations=1)
    _TIMES[how] = benchmark.stats.stats.median
    record("distributed", f"hardmine mine, {how}", benchmark, 2.0 * QUERIES * CANDIDATES * DIM)


def test_startup_and_overhead_per_block(benchmark, dump):
    def startup() -> float:
        alone = _mine(dump, "tiny.npy", "tiny-candidates.npy", "--threads", "1")
        return _mine(dump, "tiny.npy", "tiny-candidates.npy", "--ray", "local:2") - alone

    benchmark.pedantic(startup, rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median
    blocks = -(-QUERIES // BLOCK_ROWS)
    info = {"startup_s": seconds, "blocks": blocks}
    single, cluster = _TIMES.get("single process, 2 threads"), _TIMES.get("ray local:2, 2 tasks x 1 thread")
    if single and cluster:
        info.update(ratio=single / cluster, overhead_per_block_s=(cluster - seconds - single) / blocks)
    benchmark.extra_info.update(info)
    print(f"\nray local:2 startup {seconds:.2f} s; {blocks} blocks"
          + (f"; single/cluster {info['ratio']:.2f}x, overhead per block {info['overhead_per_block_s'] * 1e3:.0f} ms"
             if "ratio" in info else ""))
