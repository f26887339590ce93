"""`hardmine mine --blocks A:B` + `hardmine merge`: a job cut into array tasks gives the bytes of
the single-process run; parts of kernels whose bytes may differ are never merged."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import hardmine
from conftest import hardmine_mine

pytest.importorskip("pyarrow")


def make_dump(folder, queries: int = 2400, candidates: int = 8000):
    """Sharded queries (uneven shards), candidates with duplicated rows (tied scores), positives
    and string query ids; returns the `hardmine mine` input arguments."""
    rng = np.random.default_rng(15)
    embeddings = rng.standard_normal((candidates, 32), dtype=np.float32)
    embeddings[candidates // 2 : candidates // 2 + 200] = embeddings[:200]  # ties between candidates
    positives = rng.integers(0, candidates, queries)
    rows = embeddings[positives] + 0.7 * rng.standard_normal((queries, 32), dtype=np.float32)
    (folder / "queries").mkdir()
    for number, (start, stop) in enumerate([(0, 1000), (1000, 1001), (1001, queries)]):
        np.save(folder / "queries" / f"q-{number}.npy", rows[start:stop])
    np.save(folder / "candidates.npy", embeddings)
    np.save(folder / "positives.npy", positives)
    np.save(folder / "query_ids.npy", np.array([f"q{i}" for i in range(queries)]))
    return ("--queries", "queries", "--candidates", "candidates.npy", "--positives", "positives.npy",
            "--query-ids", "query_ids.npy", "--strategy", "random", "--rank-range", "0:40", "--num-negatives", "6",
            "--seed", "11", "--block-rows", "200", "--threads", "1", "--quiet")


def merge(folder, out, *args, **popen):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hardmine", "merge", out, *args], cwd=folder, capture_output=True,
                          text=True, timeout=600, **popen)


@pytest.mark.parametrize("out", ["out.parquet", "out.npz"])
def test_array_tasks_merge_to_the_single_process_bytes(tmp_path, out):
    args = make_dump(tmp_path)
    reference = hardmine_mine(tmp_path, *args, "--out", "reference" + out[3:])
    assert reference.returncode == 0, reference.stderr
    # tasks in any order, one slice mined twice (a retried array task): 12 blocks of 200 rows
    for blocks in ("5:9", "0:2", "9:", "5:9"):
        done = hardmine_mine(tmp_path, *args, "--out", out, "--blocks", blocks)
        assert done.returncode == 0, done.stderr
    early = merge(tmp_path, out)
    assert early.returncode == 2 and "3 of 12 blocks are not saved yet (2-4)" in early.stderr
    assert not (tmp_path / out).exists()
    assert hardmine_mine(tmp_path, *args, "--out", out, "--blocks", "2:5").returncode == 0
    done = merge(tmp_path, out)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / out).read_bytes() == (tmp_path / ("reference" + out[3:])).read_bytes()
    assert not (tmp_path / (out + ".parts")).exists()
    again = hardmine_mine(tmp_path, *args, "--out", out, "--blocks", "0:1")
    assert again.returncode == 2 and "is merged already" in again.stderr


@pytest.mark.parametrize("extra, message", [
    (("--blocks", "12:13"), "--blocks 12:13 is outside the plan: 12 blocks of 200 query rows (0:12)"),
    (("--blocks", "0:1", "--block-rows", "300"), "--block-rows 300, but the run in"),
    (("--blocks", "0:1", "--seed", "12"), "--blocks refused: out.npz.parts/manifest.json does not match this run: "
                                          "parameters.seed: was 11, now 12"),
    (("--blocks", "0:1", "--ray", "local"), "--blocks and --ray exclude each other"),
    (("--blocks", "0:1", "--cpus-per-task", "2", "--max-retries", "1"), "--cpus-per-task, --max-retries applies to "
                                                                        "--ray runs"),
])
def test_bad_slices_are_refused(tmp_path, extra, message):
    args = make_dump(tmp_path)
    assert hardmine_mine(tmp_path, *args, "--out", "out.npz", "--blocks", "0:1").returncode == 0
    before = sorted(p.name for p in (tmp_path / "out.npz.parts").iterdir())
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", *extra)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert sorted(p.name for p in (tmp_path / "out.npz.parts").iterdir()) == before


def test_a_first_slice_needs_a_fixed_plan_and_merge_needs_parts(tmp_path):
    args = [a for a in make_dump(tmp_path) if a not in ("--block-rows", "200")]
    done = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--blocks", "0:1")
    assert done.returncode == 2 and "--blocks needs --block-rows" in done.stderr
    assert not (tmp_path / "out.npz.parts" / "manifest.json").exists()
    done = merge(tmp_path, "out.npz")
    assert done.returncode == 2 and "nothing to merge" in done.stderr
    assert hardmine_mine(tmp_path, *args, "--out", "out.npz", "--blocks", "4:2").returncode == 2


def _slices(tmp_path, args, out, second_env):
    """Blocks 0:6 here, 6: under ``second_env``, then the merge's answer."""
    assert hardmine_mine(tmp_path, *args, "--out", out, "--blocks", "0:6").returncode == 0
    done = hardmine_mine(tmp_path, *args, "--out", out, "--blocks", "6:", env={**os.environ, **second_env})
    assert done.returncode == 0, done.stderr
    return merge(tmp_path, out)


@pytest.mark.parametrize("env, field", [
    ({"OMP_NUM_THREADS": "1"}, "threads: block 0 {cores}, block 6 1"),  # a machine with another core count
    ({"OPENBLAS_CORETYPE": "Sandybridge"}, "blas: block 0"),  # another CPU: another sgemm kernel
])
def test_merge_refuses_parts_of_other_kernels_naming_the_difference(tmp_path, env, field):
    if hardmine.backends.status()["cpu"] is not None:
        pytest.skip("the compiled core is absent: its kernels are what this test varies")
    cores = hardmine.info(print_result=False)["cpu_build"]["max_threads"]
    if "OMP_NUM_THREADS" in env and cores < 2:
        pytest.skip("one core: both slices get one thread")
    args = [a for a in make_dump(tmp_path) if a not in ("--threads", "1")]
    done = _slices(tmp_path, args, "out.npz", env)
    assert done.returncode == 2 and "parts were scored by different kernels" in done.stderr
    assert field.format(cores=cores) in done.stderr, done.stderr
    assert not (tmp_path / "out.npz").exists() and (tmp_path / "out.npz.parts").is_dir()


@pytest.mark.parametrize("codes", ["int8", "bf16"])
def test_certified_products_kernels(tmp_path, codes):
    """int8 sums are exact integers on every ISA path: parts of the portable and the VNNI kernel
    merge into the single-process bytes. bf16 sums are rounded, maybe differently per kernel: refused."""
    if hardmine.backends.status()["cpu"] is not None:
        pytest.skip("the compiled core is absent: the certified kernels are part of it")
    if not hardmine.info(print_result=False)["certified"][codes]["native"]:
        pytest.skip(f"this CPU runs only the portable {codes} kernel: there is no second ISA path to compare")
    args = (*make_dump(tmp_path), "--precision", codes)
    reference = hardmine_mine(tmp_path, *args, "--out", "reference.npz")
    assert reference.returncode == 0, reference.stderr
    done = _slices(tmp_path, args, "out.npz", {"HARDMINE_INT8_PORTABLE": "1"})
    if codes == "int8":
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "out.npz").read_bytes() == (tmp_path / "reference.npz").read_bytes()
    else:
        assert done.returncode == 2 and "products: block 0 {'bf16': 'AVX512_BF16 bf16 kernel'}" in done.stderr


def test_inputs_and_output_named_by_uri_give_the_same_bytes(tmp_path):
    """file:// URIs run the object-store code path (pyarrow.fs: inputs staged into the cache once,
    each part written whole, the manifest and the merge through the same store)."""
    args = make_dump(tmp_path)
    env = {**os.environ, "HARDMINE_CACHE": str(tmp_path / "cache")}
    reference = hardmine_mine(tmp_path, *args, "--out", "reference.npz")
    assert reference.returncode == 0, reference.stderr
    uris = {"queries": (tmp_path / "queries").as_uri(), "candidates.npy": (tmp_path / "candidates.npy").as_uri(),
            "positives.npy": (tmp_path / "positives.npy").as_uri()}
    remote = [uris.get(a, a) for a in args]
    out = (tmp_path / "store" / "out.npz").as_uri()
    for blocks in ("0:7", "7:"):
        done = hardmine_mine(tmp_path, *remote, "--out", out, "--blocks", blocks, env=env)
        assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "store" / "out.npz.parts").iterdir())[:2] == [
        "manifest.json", "part-000000.npz"]
    done = merge(tmp_path, out, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "store" / "out.npz").read_bytes() == (tmp_path / "reference.npz").read_bytes()
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["out.npz"]  # no parts, no temp files
    copies = sorted(p.name for p in (tmp_path / "cache" / "inputs").rglob("*.npy"))
    assert copies == ["candidates.npy", "positives.npy", "q-0.npy", "q-1.npy", "q-2.npy"]  # one copy each
    missing = hardmine_mine(tmp_path, *[a.replace("candidates.npy", "nothing.npy") for a in remote], "--out",
                            "x.npz", env=env)
    assert missing.returncode == 2 and "nothing.npy: no such file or directory" in missing.stderr
    unknown = hardmine_mine(tmp_path, *remote, "--out", "nosuch://bucket/y.npz", env=env)
    assert unknown.returncode == 2 and "--out nosuch://bucket/y.npz: cannot be reached" in unknown.stderr
    assert not list(tmp_path.glob("x.npz*")) and not list(tmp_path.glob("y.npz*"))


def test_a_uri_input_rewritten_with_the_same_size_and_mtime_is_not_served_stale(tmp_path):
    """adversarial 04: the cache is keyed by content; staging killed midway leaves nothing behind."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "q.npy", rng.standard_normal((300, 16)).astype(np.float32))
    np.save(tmp_path / "c.npy", rng.standard_normal((500, 16)).astype(np.float32))
    cache = tmp_path / "cache"
    env = {**os.environ, "HARDMINE_CACHE": str(cache)}
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (cache / "inputs" / f".staging.{dead.stdout.strip()}.abc.tmp").mkdir(parents=True)  # a killed staging
    live = cache / "inputs" / f".staging.{os.getpid()}.def.tmp"  # this process: still staging
    live.mkdir()
    args = ("--candidates", tmp_path / "c.npy", "--num-negatives", "5", "--threads", "1", "--quiet")
    assert hardmine_mine(tmp_path, "--queries", (tmp_path / "q.npy").as_uri(), *args, "--out", "before.npz",
                         env=env).returncode == 0
    assert sorted(p.name for p in (cache / "inputs").glob(".staging.*")) == [live.name]
    stat = os.stat(tmp_path / "q.npy")
    np.save(tmp_path / "q.npy", np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32))
    os.utime(tmp_path / "q.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert os.stat(tmp_path / "q.npy").st_size == stat.st_size
    done = hardmine_mine(tmp_path, "--queries", (tmp_path / "q.npy").as_uri(), *args, "--out", "after.npz", env=env)
    assert done.returncode == 0, done.stderr
    assert hardmine_mine(tmp_path, "--queries", tmp_path / "q.npy", *args, "--out", "local.npz").returncode == 0
    assert (tmp_path / "after.npz").read_bytes() == (tmp_path / "local.npz").read_bytes()
    assert (tmp_path / "after.npz").read_bytes() != (tmp_path / "before.npz").read_bytes()
    unusable = {**os.environ, "HARDMINE_CACHE": str(tmp_path / "q.npy")}  # a file, not a folder
    done = hardmine_mine(tmp_path, "--queries", (tmp_path / "q.npy").as_uri(), *args, "--out", "x.npz", env=unusable)
    assert done.returncode == 2 and "$HARDMINE_CACHE" in done.stderr and "cannot hold staged inputs" in done.stderr
