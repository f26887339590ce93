"""Native runtime behaviour: GIL release, Ctrl-C, worker errors, memory bound."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import hardmine


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("failing_block", [0, 5, 63])
def test_worker_error_reaches_the_caller(native, num_threads, failing_block):
    from hardmine import _core

    with pytest.raises(RuntimeError, match=f"worker failure injected in query block {failing_block}"):
        _core._fail_in_block(64, failing_block, num_threads)


def test_gil_is_released_during_native_work(native):
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((2048, 256), dtype=np.float32)
    candidates = rng.standard_normal((60000, 256), dtype=np.float32)
    done = threading.Event()
    ticks = 0

    def work():
        hardmine.topk(queries, candidates, 10, backend="cpu", num_threads=1, check_finite=False)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    while not done.is_set():
        ticks += 1  # only runs while the worker does not hold the GIL
        time.sleep(0.001)
    worker.join()
    assert ticks > 50


SCRIPT = textwrap.dedent(
    """
    import signal, sys, time, numpy as np, hardmine
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (nohup)
    rng = np.random.default_rng(0)
    q = rng.standard_normal((8192, 256), dtype=np.float32)
    c = rng.standard_normal((524288, 256), dtype=np.float32)
    print("ready", flush=True)
    start = time.perf_counter()
    try:
        hardmine.topk(q, c, 10, backend="{backend}", check_finite=False)
    except KeyboardInterrupt:
        print("interrupted after", time.perf_counter() - start, flush=True)
        sys.exit(7)
    print("finished", time.perf_counter() - start, flush=True)
    """
)


def test_ctrl_c_interrupts_a_long_call(native, tmp_path):
    # cwd outside the source tree, so the child imports the installed package
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(backend="cpu")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    sent = time.perf_counter()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    latency = time.perf_counter() - sent
    assert process.returncode == 7, (out, err)
    # The full call takes over ten seconds here; the interrupt must land within
    # about a second, not at the end.
    assert latency < 3.0, latency


def test_peak_memory_does_not_grow_with_candidates(native, tmp_path):
    """Anonymous (non-file) memory during a call is O(blocks + Q*k), independent of C:
    the memory-mapped candidates only ever occupy page cache."""
    script = textwrap.dedent(
        """
        import sys, threading, numpy as np, hardmine

        def anon_kb():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("RssAnon"))

        c = np.load(sys.argv[1], mmap_mode="r")
        q = np.ones((2048, 64), dtype=np.float32)
        hardmine.topk(q[:8], c[:1000], 16, backend="cpu")  # load everything first
        before, peak, done = anon_kb(), [0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], anon_kb())
                done.wait(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        hardmine.topk(q, c, 16, backend="cpu")
        done.set()
        sampler.join()
        print(peak[0] - before)
        """
    )
    growth = {}
    rng = np.random.default_rng(1)
    for rows in (50_000, 800_000):
        path = tmp_path / f"c{rows}.npy"
        np.save(path, rng.standard_normal((rows, 64), dtype=np.float32))
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                             cwd=tmp_path)
        growth[rows] = int(out.stdout.strip())
        path.unlink()
    # 16x the candidates (205 MB of input); an O(C) or O(Q*C) buffer would show
    # up as several MB to GB here.
    assert growth[800_000] - growth[50_000] < 2048, growth
