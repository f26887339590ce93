"""Regression tests for the reliability findings of issue 16: each case here once hung,
crashed, lost data or returned a wrong answer silently."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import hardmine
from conftest import available_engine_backends

#: a child that hangs is killed after this long; a healthy run takes a few seconds
_CHILD_TIMEOUT = 240

_FORK_SCRIPT = textwrap.dedent("""
    import multiprocessing, sys
    import numpy as np
    import hardmine

    backend, method = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    candidates = rng.standard_normal((5000, 16)).astype(np.float32)

    def work(first):
        return hardmine.topk(queries[first:first + 8], candidates, 5, backend=backend).indices

    if __name__ == "__main__":
        whole = hardmine.topk(queries, candidates, 5, backend=backend).indices  # starts the thread pools
        if method == "dataloader":
            import torch
            loader = torch.utils.data.DataLoader(range(0, 64, 8), batch_size=None, num_workers=2,
                                                 collate_fn=lambda first: torch.from_numpy(work(first)))
            pieces = [batch.numpy() for batch in loader]
        else:
            with multiprocessing.get_context(method).Pool(2) as pool:
                pieces = pool.map(work, range(0, 64, 8))
        assert (np.concatenate(pieces) == whole).all(), "children disagree with the parent"
        print("children agree")
""")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver", "dataloader"])
@pytest.mark.parametrize("engine", available_engine_backends())
def test_workers_started_after_the_thread_pool_neither_hang_nor_die(tmp_path, engine, method):
    if method == "dataloader":
        pytest.importorskip("torch")
    script = tmp_path / "pool.py"
    script.write_text(_FORK_SCRIPT)
    try:
        done = subprocess.run([sys.executable, str(script), engine, method], capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method} workers hung on the {engine} backend")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "children agree" in done.stdout
