"""`hardmine mine`: end to end through a subprocess, crashes and resumes, bad inputs, memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import hardmine
from hardmine import cli
from hardmine.io import job as offline
from hardmine.io import merge as merging
from conftest import hardmine_mine, paired_dump

pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def dump(tmp_path):
    candidates, queries, positives = paired_dump(tmp_path, 6000, 1500, 24)
    (tmp_path / "shards").mkdir()
    for i, (start, stop) in enumerate([(0, 700), (700, 701), (701, 1500)]):
        np.save(tmp_path / "shards" / f"part-{i:02d}.npy", queries[start:stop])
    return tmp_path, queries, candidates, positives


ARGS = ("--strategy", "random", "--rank-range", "3:40", "--relative-margin", "0.05", "--num-negatives", "6",
        "--seed", "3")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("sharded", [False, True])
def test_matches_the_in_memory_api(dump, dtype, sharded):
    folder, queries, candidates, positives = dump
    if dtype == "float16":
        np.save(folder / "candidates.npy", candidates.astype(np.float16))
        queries = queries.astype(np.float16)
        for shard in (folder / "shards").iterdir():
            np.save(shard, np.load(shard).astype(np.float16))
        np.save(folder / "queries.npy", queries)
    source = "shards" if sharded else "queries.npy"
    done = hardmine_mine(folder, "--queries", source, "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--out", "out.parquet", "--memory-limit", "240MB", *ARGS)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(folder / "out.parquet").to_pydict()
    expected = hardmine.mine(queries, np.load(folder / "candidates.npy"), positives=positives, strategy="random",
                             rank_range=(3, 40), relative_margin=0.05, num_negatives=6, seed=3)
    assert table["query_id"] == list(range(1500))
    for q in (0, 699, 700, 701, 1499):
        assert table["negative_ids"][q] == expected.indices[q, : expected.num_valid[q]].tolist()
    np.testing.assert_allclose(table["positive_score"], expected.positive_scores, rtol=1e-6)
    assert not (folder / "out.parquet.parts").exists()


def write_columnar(path, embeddings, ids=None, fixed=True, fmt="parquet", column="emb"):
    import pyarrow as pa

    kind = {np.float32: pa.float32(), np.float16: pa.float16(), np.float64: pa.float64()}[embeddings.dtype.type]
    flat = pa.array(embeddings.ravel(), type=kind)
    if fixed:
        values = pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1])
    else:
        values = pa.ListArray.from_arrays(pa.array(np.arange(embeddings.shape[0] + 1) * embeddings.shape[1],
                                                   pa.int32()), flat)
    table = pa.table({column: values, **({"id": ids} if ids is not None else {})})
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=500)
    else:
        import pyarrow.feather as feather

        feather.write_feather(table, path, compression="uncompressed")


@pytest.mark.parametrize("form", ["candidate-npy-shards", "parquet", "parquet-list-fp16", "arrow", "parquet-dirs"])
def test_sharded_and_columnar_inputs_match_the_in_memory_api(dump, form):
    folder, queries, candidates, positives = dump
    cuts = [0, 1000, 1001, 3500, 6000]
    extra = []
    if form == "candidate-npy-shards":
        (folder / "cshards").mkdir()
        for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
            np.save(folder / "cshards" / f"c{i:03d}.npy", candidates[a:b])
        inputs = ("--queries", "shards", "--candidates", "cshards")
    elif form == "parquet-dirs":
        for name, array, pieces in (("q", queries, [0, 600, 1500]), ("c", candidates, cuts)):
            (folder / name).mkdir()
            for i, (a, b) in enumerate(zip(pieces[:-1], pieces[1:])):
                write_columnar(folder / name / f"{i:03d}.parquet", array[a:b])
        inputs = ("--queries", "q", "--candidates", "c", "--column", "emb")
    else:
        if form == "parquet-list-fp16":
            queries, candidates = queries.astype(np.float16), candidates.astype(np.float16)
        fmt, suffix = ("arrow", ".arrow") if form == "arrow" else ("parquet", ".parquet")
        write_columnar(folder / f"q{suffix}", queries, fixed=form != "parquet-list-fp16", fmt=fmt)
        write_columnar(folder / f"c{suffix}", candidates, fixed=form != "parquet-list-fp16", fmt=fmt)
        inputs = ("--queries", f"q{suffix}", "--candidates", f"c{suffix}", "--column", "emb")
    done = hardmine_mine(folder, *inputs, *extra, "--positives", "positives.npy", "--out", "out.parquet",
                         "--block-rows", "400", *ARGS)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(folder / "out.parquet").to_pydict()
    expected = hardmine.mine(queries, candidates, positives=positives, strategy="random", rank_range=(3, 40),
                             relative_margin=0.05, num_negatives=6, seed=3)
    assert table["query_id"] == list(range(1500))
    got = [ids + [-1] * (6 - len(ids)) for ids in table["negative_ids"]]
    np.testing.assert_array_equal(np.array(got), expected.indices)
    assert not (folder / "out.parquet.parts").exists()


@pytest.mark.parametrize("kind", ["strings", "integers"])
def test_ids_from_a_column_or_a_file(dump, kind):
    folder, queries, candidates, positives = dump
    make = (lambda prefix, n: np.array([f"{prefix}-{i}" for i in range(n)])) if kind == "strings" else (
        lambda prefix, n: (np.arange(n) * 10 + (1 if prefix == "q" else 7)).astype(np.int64))
    query_ids, candidate_ids = make("q", 1500), make("c", 6000)
    expected = hardmine.mine(queries, candidates, positives=positives, num_negatives=4)
    if kind == "strings":
        write_columnar(folder / "q.parquet", queries, ids=query_ids)
        write_columnar(folder / "c.parquet", candidates, ids=candidate_ids)
        inputs = ("--queries", "q.parquet", "--candidates", "c.parquet", "--column", "emb", "--id-column", "id")
    else:
        np.save(folder / "qids.npy", query_ids)
        np.save(folder / "cids.npy", candidate_ids)
        inputs = ("--queries", "queries.npy", "--candidates", "candidates.npy", "--query-ids", "qids.npy",
                  "--candidate-ids", "cids.npy")
    for suffix in (".parquet", ".jsonl", ".npz"):
        done = hardmine_mine(folder, *inputs, "--positives", "positives.npy", "--num-negatives", "4",
                             "--out", f"out{suffix}", "--quiet")
        assert done.returncode == 0, done.stderr
    table = pq.read_table(folder / "out.parquet").to_pydict()
    assert table["query_id"] == query_ids.tolist()
    assert table["negative_ids"][5] == candidate_ids[expected.indices[5]].tolist()
    lines = (folder / "out.jsonl").read_text().splitlines()
    assert json.loads(lines[7])["negative_ids"] == candidate_ids[expected.indices[7]].tolist()
    with np.load(folder / "out.npz") as result:
        assert result["negative_ids"].tolist() == candidate_ids[expected.indices].tolist()


@pytest.mark.parametrize(
    "damage, options, message",
    [
        ("none", (), r"q.parquet: Parquet/Arrow input needs --column NAME"),
        ("none", ("--column", "vec"), r"--column 'vec' is not a column; columns are \['emb', 'id'\]"),
        ("none", ("--column", "id"), r"column 'id' must be a \(fixed-size\) list of floats"),
        ("none", ("--column", "emb", "--id-column", "nope"), r"--id-column 'nope' is not a column"),
        ("none", ("--column", "emb", "--query-ids", "x.npy"), r"take its ids from a column with --id-column"),
        ("ragged", ("--column", "emb"), r"c.parquet: column 'emb' row 3 has 7 values; row 0 has 8"),
        ("null", ("--column", "emb"), r"c.parquet: column 'emb' is null at row 2"),
        ("nan", ("--column", "emb"), r"c.parquet: row 5 contains NaN or inf"),
        ("garbage", ("--column", "emb"), r"c.parquet: not a readable Parquet file"),
    ],
)
def test_bad_columnar_inputs_fail_cleanly(tmp_path, damage, options, message):
    import pyarrow as pa

    rng = np.random.default_rng(4)
    queries, candidates = rng.standard_normal((20, 8), dtype=np.float32), rng.standard_normal((30, 8),
                                                                                               dtype=np.float32)
    write_columnar(tmp_path / "q.parquet", queries, ids=np.arange(20))
    write_columnar(tmp_path / "c.parquet", candidates, ids=np.arange(30))
    rows = [list(map(float, row)) for row in candidates]
    if damage == "ragged":
        rows[3] = rows[3][:7]
    if damage == "null":
        rows[2] = None
    if damage == "nan":
        rows[5][1] = float("nan")
    if damage in ("ragged", "null", "nan"):
        pq.write_table(pa.table({"emb": pa.array(rows, pa.list_(pa.float32())), "id": np.arange(30)}),
                       tmp_path / "c.parquet")
    if damage == "garbage":
        (tmp_path / "c.parquet").write_bytes(b"PAR1 not really")
    done = hardmine_mine(tmp_path, "--queries", "q.parquet", "--candidates", "c.parquet", "--out", "o.parquet",
                         *options)
    assert done.returncode == 2, done.stderr
    assert __import__("re").search(message, done.stderr), done.stderr
    assert not (tmp_path / "o.parquet").exists() and not (tmp_path / "o.parquet.parts").exists()


@pytest.mark.parametrize("suffix", [".npz", ".jsonl"])
def test_other_output_formats_are_deterministic(dump, suffix):
    folder, *_ = dump
    outputs = []
    for name in ("a", "b"):
        done = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives",
                             "positives.npy", "--out", f"{name}{suffix}", "--quiet", *ARGS)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        outputs.append((folder / f"{name}{suffix}").read_bytes())
    assert outputs[0] == outputs[1]
    if suffix == ".jsonl":
        first = json.loads(outputs[0].decode().splitlines()[0])
        assert set(first) == {"query_id", "negative_ids", "negative_scores", "positive_score", "num_valid"}
    else:
        with np.load(folder / "a.npz") as result:
            assert result["negative_ids"].shape == (1500, 6) and result["query_id"].tolist() == list(range(1500))
            assert np.all(result["num_valid"] == (result["negative_ids"] >= 0).sum(axis=1))


@pytest.mark.parametrize("form", ["npy", "parquet-queries-candidate-shards"])
def test_killed_runs_resume_to_identical_bytes(tmp_path, form):
    rng = np.random.default_rng(1)
    candidates = rng.standard_normal((60_000, 64), dtype=np.float32)
    queries = rng.standard_normal((6000, 64), dtype=np.float32)
    if form == "npy":
        np.save(tmp_path / "candidates.npy", candidates)
        np.save(tmp_path / "queries.npy", queries)
        inputs = ("--queries", "queries.npy", "--candidates", "candidates.npy")
    else:
        write_columnar(tmp_path / "queries.parquet", queries)
        (tmp_path / "candidates").mkdir()
        for i, start in enumerate(range(0, 60_000, 25_000)):
            np.save(tmp_path / "candidates" / f"{i}.npy", candidates[start : start + 25_000])
        inputs = ("--queries", "queries.parquet", "--column", "emb", "--candidates", "candidates")
    args = (*inputs, "--block-rows", "300",
            "--strategy", "random", "--rank-range", "0:30", "--seed", "5", "--threads", "1")
    reference = hardmine_mine(tmp_path, *args, "--out", "reference.npz", "--quiet")
    assert reference.returncode == 0, reference.stderr
    parts = tmp_path / "out.npz.parts"
    # SIGKILL once the run has saved 2, 7 and 12 of its 20 blocks (plus whatever it is writing then).
    for target in (2, 7, 12):
        process = subprocess.Popen([sys.executable, "-m", "hardmine", "mine", *args, "--out", "out.npz", "--resume",
                                    "--quiet"], cwd=tmp_path, stderr=subprocess.DEVNULL)
        while process.poll() is None and len(list(parts.glob("part-*.npz"))) < target:
            time.sleep(0.002)
        assert process.poll() is None, "the job finished before it could be killed; make it bigger"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "out.npz").exists()  # never a partial output
    final = hardmine_mine(tmp_path, *args, "--out", "out.npz", "--resume", "--quiet")
    assert final.returncode == 0, final.stderr
    assert (tmp_path / "out.npz").read_bytes() == (tmp_path / "reference.npz").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_sigint_drops_the_block_and_says_how_to_resume(tmp_path):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "candidates.npy", rng.standard_normal((120_000, 64), dtype=np.float32))
    np.save(tmp_path / "queries.npy", rng.standard_normal((6000, 64), dtype=np.float32))
    process = subprocess.Popen([sys.executable, "-m", "hardmine", "mine", "--queries", "queries.npy", "--candidates",
                                "candidates.npy", "--out", "out.parquet", "--block-rows", "300", "--threads", "1"],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                               # started as `nohup` or some CI runners start it: SIGINT ignored
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    parts = tmp_path / "out.parquet.parts"
    while process.poll() is None and not list(parts.glob("part-*.npz")):
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "--resume" in err and not (tmp_path / "out.parquet").exists()
    manifest = json.loads((tmp_path / "out.parquet.parts" / "manifest.json").read_text())
    assert manifest["parameters"]["strategy"] == "top" and manifest["inputs"]["queries"][0]["size"] > 0


def test_mismatched_resume_is_refused(dump):
    folder, *_ = dump
    first = ["--queries", "queries.npy", "--candidates", "candidates.npy", "--positives", "positives.npy",
             "--out", "out.parquet", *ARGS]
    (folder / "out.parquet.parts").mkdir()
    (folder / "out.parquet.parts" / "manifest.json").write_text(json.dumps({"parameters": {"seed": 99}, "block_rows": 9}))
    done = hardmine_mine(folder, *first, "--resume")
    assert done.returncode == 2
    assert "--resume refused" in done.stderr and "parameters.seed: was 99, now 3" in done.stderr
    assert not (folder / "out.parquet").exists()
    (folder / "out.parquet.parts" / "manifest.json").write_text("{not json")
    done = hardmine_mine(folder, *first, "--resume")
    assert done.returncode == 2 and "is not a hardmine manifest" in done.stderr


def test_unfinished_run_needs_resume_or_overwrite(dump):
    folder, *_ = dump
    (folder / "out.parquet.parts").mkdir()
    done = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "out.parquet")
    assert done.returncode == 2 and "pass --resume to continue or --overwrite" in done.stderr


def test_existing_output_needs_overwrite(dump):
    folder, *_ = dump
    (folder / "out.parquet").write_bytes(b"keep me")
    base = ("--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "out.parquet", "--quiet")
    done = hardmine_mine(folder, *base)
    assert done.returncode == 2 and "pass --overwrite" in done.stderr
    assert (folder / "out.parquet").read_bytes() == b"keep me"
    assert hardmine_mine(folder, *base, "--overwrite").returncode == 0
    assert pq.read_table(folder / "out.parquet").num_rows == 1500


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", r"candidates.npy: not a readable .npy file"),
        ("garbage", r"candidates.npy: not a readable .npy file"),
        ("nan", r"candidates.npy: row 17 contains NaN or inf"),
        ("ints", r"candidates.npy: embeddings must be float32 or float16"),
        ("dim", r"dimension mismatch"),
    ],
)
def test_bad_inputs_fail_cleanly_before_any_work(dump, damage, message):
    folder, _, candidates, _ = dump
    path = folder / "candidates.npy"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY garbage")
    elif damage == "nan":
        candidates[17, 3] = np.nan
        np.save(path, candidates)
    elif damage == "ints":
        np.save(path, candidates.astype(np.int32))
    else:
        np.save(path, candidates[:, :5])
    done = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "out.parquet")
    assert done.returncode == 2
    assert __import__("re").search(message, done.stderr), done.stderr
    assert not (folder / "out.parquet").exists() and not (folder / "out.parquet.parts").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--rank-range", "9"), r"expected A:B"),
        (("--memory-limit", "lots"), r"cannot read 'lots'"),
        (("--memory-limit", "10MB"), r"too small"),
        (("--margin", "0.1"), r"need positives"),
        (("--precision", "int4"), r"invalid choice: 'int4'"),
    ],
)
def test_bad_options(dump, args, message):
    folder, *_ = dump
    done = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "o.parquet",
                         *args)
    assert done.returncode == 2
    assert __import__("re").search(message, done.stderr), done.stderr
    assert not (folder / "o.parquet.parts").exists()


def test_disk_full_keeps_the_previous_output_and_the_parts(dump, monkeypatch, capsys):
    folder, *_ = dump
    monkeypatch.chdir(folder)
    base = ["mine", "--queries", "queries.npy", "--candidates", "candidates.npy", "--out", "out.parquet", "--quiet"]
    assert cli.main(base) == 0
    before = (folder / "out.parquet").read_bytes()

    def disk_full(out):
        out.write(b"PAR1")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(merging, "negatives_writer", lambda name, blocks, width: disk_full)
    assert cli.main([*base, "--overwrite", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "writing out.parquet failed (OSError: [Errno 28] No space left on device)" in err, err
    assert (folder / "out.parquet").read_bytes() == before
    assert (folder / "out.parquet.parts" / "manifest.json").exists()  # finished blocks kept for --resume


def test_memory_stays_under_the_limit(tmp_path):
    """A candidate dump several times the limit: peak anonymous memory of the child stays under it
    (the memory map's page cache is not the process's working memory)."""
    rng = np.random.default_rng(3)
    rows, dim, shards = 1_500_000, 128, 4
    (tmp_path / "candidates").mkdir()
    for shard in range(shards):  # sharded: the per-shard windows and their merge are counted too
        part = np.lib.format.open_memmap(tmp_path / "candidates" / f"{shard}.npy", mode="w+", dtype=np.float32,
                                         shape=(rows // shards, dim))
        for start in range(0, rows // shards, 75_000):
            part[start : start + 75_000] = rng.standard_normal((75_000, dim), dtype=np.float32)
        part.flush()
        del part
    np.save(tmp_path / "queries.npy", rng.standard_normal((3000, dim), dtype=np.float32))
    limit = 256 << 20
    assert sum(os.path.getsize(p) for p in (tmp_path / "candidates").iterdir()) > 2.5 * limit
    process = subprocess.Popen([sys.executable, "-m", "hardmine", "mine", "--queries", "queries.npy", "--candidates",
                                "candidates", "--out", "out.npz", "--memory-limit", str(limit), "--num-negatives",
                                "50", "--quiet"],
                               cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        status = f"/proc/{process.pid}/status"
        while process.poll() is None:
            try:
                with open(status) as source:
                    anon = next(int(line.split()[1]) * 1024 for line in source if line.startswith("RssAnon"))
                peak[0] = max(peak[0], anon)
            except (OSError, StopIteration):
                pass
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = process.communicate(timeout=600)
    sampler.join()
    assert process.returncode == 0, err
    assert 0 < peak[0] < limit, f"peak anonymous memory {peak[0] / 2**20:.0f} MiB, limit {limit / 2**20:.0f} MiB"


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(dump):
    import fcntl
    import pty
    import struct
    import termios

    folder, *_ = dump
    args = [sys.executable, "-m", "hardmine", "mine", "--queries", "queries.npy", "--candidates", "candidates.npy",
            "--out", "out.npz", "--block-rows", "300", "--overwrite"]
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    process = subprocess.Popen(args, cwd=folder, stderr=follower, stdout=subprocess.DEVNULL)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=120) == 0
    os.close(leader)
    text = output.decode(errors="replace")
    assert "hardmine mine: 100%" in text and "1.50k/1.50k" in text and "rows/s" in text, text
    assert "backend=auto" in text, text
    logged = hardmine_mine(folder, *args[4:])
    assert logged.returncode == 0, logged.stderr
    assert "hardmine mine: 1,500/1,500 queries (100.0%)" in logged.stderr and "backend auto" in logged.stderr


def test_cluster_strategy_matches_the_api_across_blocks(dump):
    from hardmine import cluster

    folder, queries, candidates, positives = dump
    done = hardmine_mine(folder, "--queries", "shards", "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--strategy", "cluster", "--clusters", "8,12", "--cluster-thresholds",
                         "0.2,0.3", "--num-negatives", "4", "--seed", "7", "--block-rows", "500", "--out", "c.parquet",
                         "--quiet")
    assert done.returncode == 0, done.stderr
    rel = cluster.reliability(queries, candidates, positives, n_query_clusters=8, n_candidate_clusters=12,
                              query_threshold=0.2, candidate_threshold=0.3, seed=7)
    expected = hardmine.mine(queries, candidates, positives=positives, strategy="cluster", clusters=rel,
                             num_negatives=4, seed=7)
    table = pq.read_table(folder / "c.parquet").to_pydict()
    got = [ids + [-1] * (4 - len(ids)) for ids in table["negative_ids"]]
    np.testing.assert_array_equal(np.array(got), expected.indices)
    missing = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives",
                            "positives.npy", "--strategy", "cluster", "--out", "d.parquet")
    assert missing.returncode == 2 and "needs --cluster-thresholds" in missing.stderr


@pytest.mark.parametrize("strategy", ["random", "softmax"])
def test_sampling_over_an_open_window_matches_the_api_across_blocks(dump, strategy):
    folder, queries, candidates, positives = dump
    extra = ("--temperature", "0.2") if strategy == "softmax" else ()
    done = hardmine_mine(folder, "--queries", "shards", "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--strategy", strategy, *extra, "--rank-range", "10:", "--num-negatives",
                         "5", "--seed", "4", "--block-rows", "400", "--out", "open.parquet", "--quiet")
    assert done.returncode == 0, done.stderr
    expected = hardmine.mine(queries, candidates, positives=positives, strategy=strategy, rank_range=(10, None),
                             num_negatives=5, seed=4, temperature=0.2 if strategy == "softmax" else None)
    table = pq.read_table(folder / "open.parquet").to_pydict()
    np.testing.assert_array_equal(np.array(table["negative_ids"]), expected.indices)


@pytest.mark.skipif(hardmine.backends.status()["cpu"] is not None, reason="int8 scoring lives in the compiled core")
@pytest.mark.parametrize("variant", ["plain", "keyed", "open", "bf16"])
def test_int8_precision_writes_the_exact_negatives(dump, variant):
    """--precision int8 (certified screening, exact re-scoring) across blocks, with --exclude-keys
    and with an open window: the negatives of the in-memory int8 call, the same as fp32's
    wherever no two scores tie within float32 rounding."""
    folder, queries, candidates, positives = dump
    keys = np.random.default_rng(1).integers(0, 700, candidates.shape[0])
    np.save(folder / "keys.npy", keys)
    extra = {"plain": (), "keyed": ("--exclude-keys", "keys.npy"), "open": ("--rank-range", "3:"), "bf16": ()}[variant]
    precision = "bf16" if variant == "bf16" else "int8"
    done = hardmine_mine(folder, "--queries", "queries.npy", "--candidates", "candidates.npy", "--positives",
                         "positives.npy", "--out", "out.npz", "--block-rows", "400", "--precision", precision, *ARGS,
                         *extra)
    assert done.returncode == 0, done.stderr
    written = np.load(folder / "out.npz")
    options = dict(positives=positives, strategy="random", rank_range=(3, None if variant == "open" else 40),
                   relative_margin=0.05, num_negatives=6, seed=3, exclude_keys=keys if variant == "keyed" else None)
    expected = hardmine.mine(queries, candidates, precision=precision, **options)
    np.testing.assert_array_equal(written["negative_ids"], expected.indices)
    fp32 = hardmine.mine(queries, candidates, **options)
    assert (written["negative_ids"] == fp32.indices).all(axis=1).mean() > 0.99


def test_int8_scoring_is_counted_in_the_memory_plan():
    """--precision int8 (or auto) holds the candidates' int8 codes and the shortlists: fewer rows fit."""
    common = dict(limit=2 << 30, dim=384, window=1000, num_candidates=1_000_000, num_queries=10**6, threads=2,
                  width=5)
    fp32 = offline.block_rows_for(**common)
    int8 = offline.block_rows_for(**common, precision="int8")
    expected_extra = (384 + 56) * 1_000_000 + 2 * 240 * 12 * (1_000_000 // 32)
    per_row = 4 * 384 + 48 * 1000 + 24 * 5 + 256
    assert int8 < fp32
    assert fp32 - int8 >= expected_extra // (per_row + 384 + 40) - 1
    assert offline.block_rows_for(**common, precision="bf16") < int8  # two bytes per code
