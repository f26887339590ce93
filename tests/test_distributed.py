"""`hardmine mine --ray` / `hardmine.distributed.mine` on a real Ray cluster on this machine
(a 0-CPU head and two 1-CPU nodes, on loopback): the single-process bytes, through a killed
worker, a lost node and a killed driver; clear errors, nothing written, for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hardmine.io.state import JobError
from conftest import hardmine_mine
from test_distributed_blocks import make_dump

if os.environ.get("HARDMINE_EXPECT_RAY") == "1":  # .ci/run installs the extra: these tests must run there
    import ray
else:
    ray = pytest.importorskip("ray", reason='the [ray] extra (pip install "hardmine[ray]")')
psutil = pytest.importorskip("psutil")
from ray.cluster_utils import Cluster  # noqa: E402

import hardmine.distributed  # noqa: E402

#: Ray on loopback only, no usage reports, no token, one BLAS thread per worker
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


def _tree(pid: int) -> set[int]:
    try:
        return {pid} | {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = {**RAY_ENV, "HARDMINE_CACHE": str(tmp_path_factory.mktemp("cache"))}  # inputs named by URI land here
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    before = _tree(os.getpid())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 << 20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    nodes = [cluster.add_node(**NODE) for _ in range(2)]
    cluster.wait_for_nodes()
    started = _tree(os.getpid()) - before
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()
        # Ray's agents can outlive SIGTERM: reap every process the cluster started, by pid
        for pid in (started | _tree(os.getpid())) - before - {os.getpid()}:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _driver(folder, address, *args):
    return subprocess.Popen([sys.executable, "-m", "hardmine", "mine", *args, "--ray", address], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for_parts(process, parts, count: int) -> None:
    deadline = time.monotonic() + 120
    while process.poll() is None and len(list(parts.glob("part-*.npz"))) < count:
        assert time.monotonic() < deadline, "no parts appeared"
        time.sleep(0.01)
    assert process.poll() is None, "the job finished before the fault could be injected; make it bigger"


def _reference(folder, args, out):
    done = hardmine_mine(folder, *args, "--out", out)
    assert done.returncode == 0, done.stderr
    return (folder / out).read_bytes()


BIG = {"queries": 6000, "candidates": 40_000}  # 30 blocks of about 0.1 s each on one core


def test_the_cluster_writes_the_single_process_bytes(cluster, tmp_path, monkeypatch):
    args = make_dump(tmp_path)
    # through the command line: Parquet out, ids, sharded queries, random draws, tied candidates
    reference = _reference(tmp_path, args, "reference.parquet")
    driver = _driver(tmp_path, cluster[0].address, *args, "--out", "out.parquet")
    _, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err
    assert (tmp_path / "out.parquet").read_bytes() == reference
    # through the Python API: npz out, inputs and output named by URI (inputs staged once per machine)
    reference = _reference(tmp_path, args, "reference.npz")
    options = dict(positives=(tmp_path / "positives.npy").as_uri(), query_ids="query_ids.npy", strategy="random",
                   rank_range=(0, 40), num_negatives=6, seed=11, block_rows=200, quiet=True)
    monkeypatch.chdir(tmp_path)
    out = (tmp_path / "store" / "out.npz").as_uri()  # the object-store path: each part one whole write
    written = hardmine.distributed.mine((tmp_path / "queries").as_uri(), (tmp_path / "candidates.npy").as_uri(),
                                        out, address=cluster[0].address, **options)
    assert written == out and (tmp_path / "store" / "out.npz").read_bytes() == reference
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["out.npz"] and not ray.is_initialized()


def test_a_worker_killed_mid_task_is_retried_to_the_same_bytes(cluster, tmp_path):
    args = make_dump(tmp_path, **BIG)
    reference = _reference(tmp_path, args, "reference.npz")
    driver = _driver(tmp_path, cluster[0].address, *args, "--out", "out.npz")
    killed, deadline = None, time.monotonic() + 120
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline", "pid"]):
            if (process.info["cmdline"] or [""])[0].startswith("ray::_block_task"):  # the task's process title
                process.send_signal(signal.SIGKILL)
                killed = process.info["pid"]
                break
        time.sleep(0.005)
    assert killed is not None, "no task was seen running"
    _, err = driver.communicate(timeout=240)
    assert driver.returncode == 0, err
    assert (tmp_path / "out.npz").read_bytes() == reference


def test_a_node_lost_mid_run_costs_only_its_blocks(cluster, tmp_path):
    head, nodes = cluster
    args = make_dump(tmp_path, **BIG)
    reference = _reference(tmp_path, args, "reference.npz")
    driver = _driver(tmp_path, head.address, *args, "--out", "out.npz")
    _wait_for_parts(driver, tmp_path / "out.npz.parts", 4)
    head.remove_node(nodes.pop(), allow_graceful=False)
    try:
        _, err = driver.communicate(timeout=240)
        assert driver.returncode == 0, err
        assert (tmp_path / "out.npz").read_bytes() == reference
    finally:
        nodes.append(head.add_node(**NODE))
        head.wait_for_nodes()


def test_a_killed_driver_resumes_from_the_parts_on_disk(cluster, tmp_path):
    args = make_dump(tmp_path, **BIG)
    reference = _reference(tmp_path, args, "reference.npz")
    parts = tmp_path / "out.npz.parts"
    driver = _driver(tmp_path, cluster[0].address, *args, "--out", "out.npz")
    _wait_for_parts(driver, parts, 6)
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    saved = len(list(parts.glob("part-*.npz")))
    assert 6 <= saved < 30 and not (tmp_path / "out.npz").exists()
    loud = [a for a in args if a != "--quiet"]  # progress: log lines, as stderr is no terminal
    again = _driver(tmp_path, cluster[0].address, *loud, "--out", "out.npz", "--resume")
    _, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    assert "hardmine mine: 6,000/6,000 queries (100.0%)" in err and "blocks 30/30, workers 2" in err, err
    assert (tmp_path / "out.npz").read_bytes() == reference


def test_bad_address_missing_extra_and_mismatched_manifest(cluster, tmp_path, monkeypatch):
    args = make_dump(tmp_path, queries=400)
    listener = __import__("socket").socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # a port nobody listens on
    start = time.monotonic()
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--ray", f"127.0.0.1:{port}")
    assert done.returncode == 2 and f"--ray 127.0.0.1:{port}: no Ray head answers there" in done.stderr
    assert time.monotonic() - start < 60
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--ray", "somewhere")
    assert done.returncode == 2 and "--ray takes auto, local, local:N or HOST:PORT" in done.stderr
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--ray", "local:1", "--cpus-per-task", "0")
    assert done.returncode == 2 and "--cpus-per-task must be an integer >= 1; got 0" in done.stderr
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--ray", cluster[0].address, "--gpus-per-task", "1")
    assert done.returncode == 2 and "--gpus-per-task needs --backend cuda or cupy" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    monkeypatch.chdir(tmp_path)
    with pytest.raises(JobError, match=r'--ray needs Ray, an optional extra: pip install "hardmine\[ray\]"'):
        hardmine.distributed.mine("queries", "candidates.npy", "out.npz", address=cluster[0].address)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("out")) == []
    monkeypatch.undo()
    (tmp_path / "out.npz.parts").mkdir()
    (tmp_path / "out.npz.parts" / "manifest.json").write_text('{"parameters": {"seed": 3}, "block_rows": 200}')
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--ray", cluster[0].address, "--resume")
    assert done.returncode == 2 and "--resume refused" in done.stderr and "parameters.seed: was 3, now 11" in done.stderr
    assert [p.name for p in (tmp_path / "out.npz.parts").iterdir()] == ["manifest.json"]
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(TypeError, match="unknown options"):
        hardmine.distributed.mine("queries", "candidates.npy", "out.npz", address="local", num_negative=3)
