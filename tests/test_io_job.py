"""The offline job (hardmine/io): one writer per output, a resume or merge that trusts nothing it
did not check (manifest, parts: identity, content digest, values), clean failures that leave
nothing half-written."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import hardmine
from conftest import hardmine_mine, paired_dump
from hardmine import cli
from hardmine.io import outputs, state


@pytest.fixture
def dump(tmp_path):
    paired_dump(tmp_path, 4000, 2000, 16)
    return tmp_path


INPUTS = ("--queries", "queries.npy", "--candidates", "candidates.npy", "--positives", "positives.npy")


def interrupted_run(folder, monkeypatch, *args, blocks: int) -> None:
    """Runs `hardmine mine` in this process and stops it (as Ctrl-C does) after `blocks` blocks."""
    real_mine, calls = hardmine.api.mine, [0]

    def mine(*a, **kw):
        calls[0] += 1
        if calls[0] > blocks + 1:  # the first call is the option probe
            raise KeyboardInterrupt
        return real_mine(*a, **kw)

    monkeypatch.chdir(folder)
    monkeypatch.setattr(hardmine.api, "mine", mine)
    assert cli.main(["mine", *map(str, args), "--quiet"]) == 130
    monkeypatch.setattr(hardmine.api, "mine", real_mine)


def test_a_second_run_on_the_same_output_refuses_and_the_first_one_finishes_intact(dump):
    args = (*INPUTS, "--block-rows", "100", "--num-negatives", "5", "--quiet")
    first = subprocess.Popen([sys.executable, "-m", "hardmine", "mine", *args, "--out", "x.npz"], cwd=dump,
                             stderr=subprocess.PIPE, text=True)
    lock = state.lock_path(dump / "x.npz")
    while first.poll() is None and not (lock.exists() and lock.read_text().startswith("pid")):
        time.sleep(0.001)
    first.send_signal(signal.SIGSTOP)  # holds the lock, mid-run, for as long as the test needs
    try:
        second = hardmine_mine(dump, *INPUTS, "--num-negatives", "3", "--out", "x.npz", "--overwrite")
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2
    assert f"x.npz is being written by another hardmine mine (pid {first.pid}" in second.stderr
    _, errors = first.communicate(timeout=600)
    assert first.returncode == 0, errors
    alone = hardmine_mine(dump, *args, "--out", "alone.npz")
    assert alone.returncode == 0, alone.stderr
    assert (dump / "x.npz").read_bytes() == (dump / "alone.npz").read_bytes()
    assert not lock.exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(dump):
    state.lock_path(dump / "x.npz").write_text("pid 999999 on elsewhere, started long ago\n")
    done = hardmine_mine(dump, *INPUTS, "--out", "x.npz", "--quiet")
    assert done.returncode == 0, done.stderr
    assert not state.lock_path(dump / "x.npz").exists()


def test_resume_refuses_inputs_changed_anywhere(dump, monkeypatch):
    args = (*INPUTS, "--block-rows", "500", "--out", "x.npz")
    interrupted_run(dump, monkeypatch, *args, blocks=2)
    candidates = np.load(dump / "candidates.npy")
    candidates[1234:1434] *= -1  # same size, far from any sampled region
    np.save(dump / "candidates.npy", candidates)
    done = hardmine_mine(dump, *args, "--resume")
    assert done.returncode == 2
    assert "--resume refused" in done.stderr and "sha256" in done.stderr


@pytest.mark.parametrize("edit, message", [
    (lambda manifest: manifest.update(block_rows=700, blocks=state.plan(2000, 700)),
     r"part-000000.npz holds negative_ids of shape \(500, 5\)"),
    (lambda manifest: manifest.update(block_rows=10**9, blocks=state.plan(2000, 10**9)),
     r"part-000001.npz is not a block of this run's plan"),
    (lambda manifest: manifest.update(block_rows=700), r"blocks: was \[\[0, 500\], \[500, 1000\], .*, now \[\[0, 700\]"),
    (lambda manifest: manifest.update(blocks=state.plan(2000, 400)[:4]), r"blocks: was \[\[0, 400\], \[400, 800\], "
                                                                      r".*, now \[\[0, 500\], \[500, 1000\], "),
    (lambda manifest: manifest.update(block_rows=-1), "has block_rows -1; it must be an integer >= 1"),
    (lambda manifest: manifest.update(block_rows=0), "has block_rows 0; it must be an integer >= 1"),
    (lambda manifest: manifest.update(block_rows="250"), "has block_rows '250'"),
    (lambda manifest: manifest.update(num_queries=1999), "num_queries: was 1999, now 2000"),
])
def test_resume_refuses_an_edited_manifest(dump, monkeypatch, edit, message):
    args = (*INPUTS, "--block-rows", "500", "--out", "x.parquet")
    interrupted_run(dump, monkeypatch, *args, blocks=2)
    path = dump / "x.parquet.parts" / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    done = hardmine_mine(dump, *args, "--resume")
    assert done.returncode == 2, done.stderr
    assert __import__("re").search(message, done.stderr), done.stderr
    assert not (dump / "x.parquet").exists()


@pytest.mark.parametrize("damage, message", [
    ("foreign", r"part-000002.npz holds negative_ids of shape \(7, 5\)"),
    ("truncated", r"part-000001.npz is unreadable"),
    ("stray", r"part-000009.npz is not a block of this run's plan \(4 blocks\)"),
])
def test_resume_refuses_damaged_or_foreign_parts(dump, monkeypatch, damage, message):
    args = (*INPUTS, "--block-rows", "500", "--out", "x.npz")
    interrupted_run(dump, monkeypatch, *args, blocks=2)
    parts = dump / "x.npz.parts"
    if damage == "foreign":
        with np.load(parts / "part-000000.npz") as part:
            outputs.write_npz(parts / "part-000002.npz", {name: part[name][:7] for name in part.files})
    elif damage == "truncated":
        data = (parts / "part-000001.npz").read_bytes()
        (parts / "part-000001.npz").write_bytes(data[: len(data) // 2])
    else:
        (parts / "part-000009.npz").write_bytes((parts / "part-000000.npz").read_bytes())
    done = hardmine_mine(dump, *args, "--resume")
    assert done.returncode == 2, done.stderr
    assert __import__("re").search(message, done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_the_input_scan_reads_chunks_sized_by_the_memory_limit(dump, monkeypatch):
    from hardmine import _rows
    from hardmine.io.dumps import Dump

    big = np.zeros((20000, 2048), dtype=np.float32)  # 160 MiB
    np.save(dump / "wide.npy", big)
    seen = []
    real = _rows.row_peaks
    monkeypatch.setattr(_rows, "row_peaks", lambda chunk, code: seen.append(chunk.nbytes) or real(chunk, code))
    Dump(dump / "wide.npy").check_finite(memory_limit=100 << 20)
    assert max(seen) <= (100 << 20) // 64, f"a {max(seen) / 2**20:.0f} MiB chunk under a 100 MiB limit"


def test_header_corruptions_are_clear_errors_never_tracebacks(dump):
    original = (dump / "candidates.npy").read_bytes()
    header = original.index(b"\n") + 1
    rng = np.random.default_rng(8)
    for trial in range(12):
        damaged = bytearray(original)
        for position in rng.integers(0, header, size=rng.integers(1, 4)):
            damaged[position] = int(rng.integers(0, 256))
        (dump / "candidates.npy").write_bytes(bytes(damaged))
        done = hardmine_mine(dump, *INPUTS, "--out", "x.npz", "--quiet", "--overwrite")
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode in (0, 2), done.stderr
        assert not (dump / "x.npz.parts").exists()
    (dump / "candidates.npy").write_bytes(original[: len(original) // 3])  # truncated data
    done = hardmine_mine(dump, *INPUTS, "--out", "y.npz")
    assert done.returncode == 2 and "not a readable .npy file" in done.stderr, done.stderr


def test_a_truncated_positives_npz_is_a_clear_error(dump):
    outputs.write_npz(dump / "p.npz", {"indptr": np.arange(2001), "indices": np.arange(2000)})
    data = (dump / "p.npz").read_bytes()
    (dump / "p.npz").write_bytes(data[: len(data) - 100])
    done = hardmine_mine(dump, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives", "p.npz",
                         "--out", "x.npz")
    assert done.returncode == 2, done.stderr
    assert "p.npz" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (("--num-negatives", "100000000"), r"--num-negatives 100000000 exceeds the 4000 candidates"),
    (("--threads", "0"), "--threads must be >= 1; got 0"),
    (("--strategy", "cluster", "--clusters", "0,0", "--cluster-thresholds", "0.5,0.5"),
     "--clusters takes two cluster counts >= 1"),
    (("--strategy", "cluster", "--cluster-thresholds", "0.5,0.5", "--exclude-keys", "keys.npy"),
     "strategy='cluster' draws among the reliable negatives; exclude_keys does not apply to it"),
])
def test_bad_options_fail_at_once_and_leave_nothing(dump, args, message):
    done = hardmine_mine(dump, *INPUTS, "--out", "x.npz", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr or __import__("re").search(message, done.stderr), done.stderr
    assert not (dump / "x.npz.parts").exists() and not (dump / "x.npz").exists()
    assert hardmine_mine(dump, *INPUTS, "--out", "x.npz", "--quiet").returncode == 0  # no --resume needed


def test_a_window_past_the_candidates_is_mined_quickly_as_padding(dump):
    done = hardmine_mine(dump, *INPUTS, "--out", "x.npz", "--rank-range", "100000000:", "--quiet")
    assert done.returncode == 0, done.stderr
    with np.load(dump / "x.npz") as result:
        assert (result["num_valid"] == 0).all()


def test_an_output_that_is_a_directory_is_refused_before_any_work(dump):
    (dump / "x.npz").mkdir()
    done = hardmine_mine(dump, *INPUTS, "--out", "x.npz", "--overwrite")
    assert done.returncode == 2 and "--out x.npz is a directory" in done.stderr, done.stderr
    assert not (dump / "x.npz.parts").exists()


def test_temp_files_of_a_killed_merge_are_cleaned_and_outputs_follow_the_umask(dump):
    stale = dump / ".x.parquet.k1lled.tmp"
    stale.write_bytes(b"\0" * 1000)
    done = subprocess.run(["sh", "-c", f"umask 027 && exec {sys.executable} -m hardmine mine "
                           + " ".join(INPUTS) + " --out x.parquet --quiet"], cwd=dump, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not stale.exists()
    assert (os.stat(dump / "x.parquet").st_mode & 0o777) == 0o640


def _merge(cwd, *args):
    return subprocess.run([sys.executable, "-m", "hardmine", "merge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _rewrite(path, change, digest: bool) -> None:
    """Rewrites a part with ``change(arrays)`` applied; ``digest``: its identity's content digest
    recomputed, as a careful forger would, so that the value checks, not the digest, must refuse."""
    with np.load(path) as part:
        arrays = {name: part[name] for name in part.files}
    change(arrays)
    if digest:
        identity = json.loads(arrays["identity"].tobytes())
        identity["content"] = state.content_hash({k: v for k, v in arrays.items() if k not in ("identity", "kernel")})
        arrays["identity"] = np.frombuffer(json.dumps(identity).encode(), dtype=np.uint8)
    outputs.write_npz(path, arrays)


def _set(name, index, value):
    def change(arrays):
        arrays[name][index] = value
    return change


def _json(name, value):
    def change(arrays):
        arrays[name] = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)
    return change


@pytest.mark.parametrize("command", ["merge", "resume"])
@pytest.mark.parametrize("damage, digest, message", [
    (_set("num_valid", 0, 3), False, r"does not hold what it recorded \(its content digest differs"),
    (_set("num_valid", 0, -3), True, r"holds num_valid -3 at row 500, outside \[0, 5\]"),
    (_set("num_valid", 2, 6), True, r"holds num_valid 6 at row 502, outside \[0, 5\]"),
    (_set("negative_ids", (1, 0), 4000), True, r"holds negative id 4000 at row 501, outside \[-1, 4000\)"),
    (_set("negative_ids", (3, 2), -7), True, r"holds negative id -7 at row 503"),
    (_json("kernel", ["not", "an", "object"]), False, r"holds a malformed 'kernel' member"),
    (_json("identity", {"run": "x"}), False, r"holds a malformed 'identity' member"),
    (lambda arrays: arrays.pop("identity"), False, r"has no 'identity' member"),
    ("other run", False, r"belongs to another run"),
    ("other block", False, r"says it is block 2 \(rows \[1000, 1500\]\), not block 1"),
])
def test_parts_are_verified_before_use(dump, command, damage, digest, message):
    """A part is what it claims (adversarial 02, 10): another run's part, an altered one and values
    out of range are refused by --resume and merge alike, naming the part and the field."""
    args = (*INPUTS, "--block-rows", "500", "--num-negatives", "5", "--quiet")
    assert hardmine_mine(dump, *args, "--out", "x.parquet", "--blocks", "0:4").returncode == 0
    part = dump / "x.parquet.parts" / "part-000001.npz"
    if damage == "other run":  # the same plan and arrays, another run (a filter that removes nothing)
        assert hardmine_mine(dump, *args, "--out", "y.parquet", "--blocks", "1:2", "--max-score", "1e9").returncode == 0
        part.write_bytes((dump / "y.parquet.parts" / "part-000001.npz").read_bytes())
    elif damage == "other block":
        part.write_bytes((dump / "x.parquet.parts" / "part-000002.npz").read_bytes())
    else:
        _rewrite(part, damage, digest)
    done = (_merge(dump, "x.parquet") if command == "merge"
            else hardmine_mine(dump, *args, "--out", "x.parquet", "--resume"))
    assert done.returncode == 2, done.stderr
    refusal = "merge refused" if command == "merge" else "--resume refused"
    assert re.search(rf"{refusal}: \S*part-000001.npz {message}", done.stderr), done.stderr
    assert "Traceback" not in done.stderr and not (dump / "x.parquet").exists()


def test_merge_checks_the_input_fingerprints_and_names_itself(dump):
    """adversarial 07: an input changed after the --blocks tasks ran is refused by the merge."""
    args = (*INPUTS, "--block-rows", "1000", "--num-negatives", "3", "--quiet", "--out", "x.parquet")
    assert hardmine_mine(dump, *args, "--blocks", "0:2").returncode == 0
    positives = np.load(dump / "positives.npy")
    np.save(dump / "positives.npy", positives[::-1].copy())
    done = _merge(dump, "x.parquet")
    assert done.returncode == 2
    assert re.search(r"merge refused: \S*manifest.json does not match this run: inputs.positives.sha256: was",
                     done.stderr), done.stderr
    np.save(dump / "positives.npy", positives)
    done = _merge(dump, "x.parquet")
    assert done.returncode == 0 and "hardmine merge: wrote x.parquet (2,000 queries)" in done.stderr, done.stderr
    assert not (dump / "x.parquet.parts").exists()


def test_merge_leaves_a_live_writers_temp_file_and_removes_a_dead_ones(dump):
    import socket

    args = (*INPUTS, "--block-rows", "1000", "--num-negatives", "3", "--quiet", "--out", "x.npz")
    assert hardmine_mine(dump, *args, "--blocks", "0:2").returncode == 0
    parts = dump / "x.npz.parts"
    host = socket.gethostname().replace(".", "_")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (parts / f".part-000001.npz.{host}-{dead.stdout.strip()}.abc.tmp").write_bytes(b"killed mid-write")
    live = parts / f".part-000000.npz.{host}-{os.getpid()}.def.tmp"  # this process: alive
    live.write_bytes(b"a late task, still writing")
    done = _merge(dump, "x.npz")
    assert done.returncode == 0, done.stderr
    assert "1 temp file(s) of running --blocks tasks left" in done.stderr
    assert sorted(path.name for path in parts.iterdir()) == [live.name]
    with np.load(dump / "x.npz") as out:
        assert out["negative_ids"].shape == (2000, 3)


def test_an_empty_query_dump_writes_empty_outputs_and_a_refused_slice_leaves_nothing(tmp_path):
    """adversarial 06."""
    np.save(tmp_path / "q0.npy", np.zeros((0, 8), np.float32))
    np.save(tmp_path / "q.npy", np.ones((50, 8), np.float32))
    np.save(tmp_path / "c.npy", np.ones((80, 8), np.float32))
    for suffix in ("npz", "parquet", "jsonl"):
        done = hardmine_mine(tmp_path, "--queries", "q0.npy", "--candidates", "c.npy", "--num-negatives", "3",
                             "--quiet", "--out", f"o.{suffix}")
        assert done.returncode == 0, done.stderr
    with np.load(tmp_path / "o.npz") as out:
        assert out["negative_ids"].shape == (0, 3) and out["negative_scores"].dtype == np.float32
        assert out["query_id"].shape == (0,) and out["num_valid"].dtype == np.int64
    done = hardmine_mine(tmp_path, "--queries", "q.npy", "--candidates", "c.npy", "--num-negatives", "3", "--quiet",
                         "--block-rows", "10", "--blocks", "0:99", "--out", "p.npz")
    assert done.returncode == 2 and "--blocks 0:99 is outside the plan: 5 blocks of 10 query rows" in done.stderr
    assert not (tmp_path / "p.npz.parts").exists()


def test_merge_names_a_garbage_manifest(dump):
    args = (*INPUTS, "--block-rows", "1000", "--num-negatives", "3", "--quiet", "--out", "x.npz")
    assert hardmine_mine(dump, *args, "--blocks", "0:2").returncode == 0
    (dump / "x.npz.parts" / "manifest.json").write_text("[1, 2")
    done = _merge(dump, "x.npz")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert re.search(r"merge refused: \S*x.npz.parts/manifest.json is not a hardmine manifest \(JSONDecodeError",
                     done.stderr), done.stderr
