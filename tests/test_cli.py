"""The console script (`hardmine` / `python -m hardmine`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hardmine import cli


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # cwd outside the source tree, so `-m hardmine` runs the installed package
    return subprocess.run([sys.executable, "-m", "hardmine", *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


def test_demo_mines_a_generated_dump(tmp_path):
    done = run(tmp_path, "demo", "--images", "400", "--dim", "16")
    assert done.returncode == 0, done.stderr
    assert "hardest non-positive captions" in done.stdout
    assert "image 0" in done.stdout and "G scores/s" in done.stdout


def test_info_command(tmp_path):
    done = run(tmp_path, "info")
    assert done.returncode == 0, done.stderr
    assert "backends:" in done.stdout and "numba" in done.stdout


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["demo", "--k", "0", "--images", "10"])
    assert stop.value.code == 2
    assert "k must be >= 1" in capsys.readouterr().err


def test_eval_command_matches_the_api(tmp_path):
    import numpy as np

    from hardmine import eval as evaluation

    rng = np.random.default_rng(0)
    images = rng.standard_normal((50, 8), dtype=np.float32)
    owner = np.repeat(np.arange(50), 2)
    texts = images[owner] + rng.standard_normal((100, 8), dtype=np.float32)
    for name, array in (("images", images), ("texts", texts), ("owner", owner)):
        np.save(tmp_path / f"{name}.npy", array)
    done = run(tmp_path, "eval", "--images", "images.npy", "--texts", "texts.npy", "--text-to-image", "owner.npy",
               "--ks", "1,5")
    assert done.returncode == 0, done.stderr
    expected = evaluation.recall_at_k(images, texts, owner, ks=(1, 5))
    assert f"rsum {expected.rsum:.2f}" in done.stdout
    assert f"{expected.i2t[5]:>9.2f}" in done.stdout.splitlines()[1]


def test_bench_command_prints_every_available_backend(tmp_path):
    done = run(tmp_path, "bench", "--queries", "64", "--candidates", "2000", "--dim", "16")
    assert done.returncode == 0, done.stderr
    assert "numpy matmul+argpartition" in done.stdout and "hardmine numba" in done.stdout
    assert "GFLOP/s" in done.stdout


def test_demo_keeps_a_dump_that_hardmine_mine_reads(tmp_path):
    done = run(tmp_path, "demo", "--images", "300", "--keep-dump", "dump")
    assert done.returncode == 0, done.stderr
    command = done.stdout.strip().splitlines()[-1].split()
    assert command[:2] == ["hardmine", "mine"]
    mined = subprocess.run([sys.executable, "-m", "hardmine", *command[1:], "--quiet"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert mined.returncode == 0, mined.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "negatives.parquet").to_pydict()
    caption_image = np.load(tmp_path / "dump" / "caption_image.npy")
    assert len(table["query_id"]) == 300
    assert all(caption_image[ids].tolist().count(q) == 0 for q, ids in zip(table["query_id"], table["negative_ids"]))
    again = run(tmp_path, "demo", "--images", "300", "--keep-dump", "dump")
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_select_writes_the_best_ids(tmp_path):
    from hardmine import active

    rng = np.random.default_rng(0)
    images = rng.standard_normal((50, 8)).astype(np.float32)
    texts = images + 0.3 * rng.standard_normal((50, 8)).astype(np.float32)
    unpaired = rng.standard_normal((30, 8)).astype(np.float32)
    for name, array in (("x", images), ("t", texts), ("u", unpaired)):
        np.save(tmp_path / f"{name}.npy", array)
    done = run(tmp_path, "select", "--unpaired", "u.npy", "--images", "x.npy", "--texts", "t.npy", "--budget", "7",
               "--weight", "hinge", "--out", "ids.txt")
    assert done.returncode == 0, done.stderr
    expected = active.select(active.score_unpaired(unpaired, images, texts, weight="hinge"), 7)
    assert (tmp_path / "ids.txt").read_text().split() == [str(i) for i in expected]
    bad = run(tmp_path, "select", "--unpaired", "u.npy", "--images", "x.npy", "--texts", "t.npy", "--budget", "0",
              "--out", "ids.npy")
    assert bad.returncode == 2 and "budget must be >= 1" in bad.stderr
    missing = run(tmp_path, "select", "--unpaired", "nope.npy", "--images", "x.npy", "--texts", "t.npy",
                  "--budget", "3", "--out", "ids.npy")
    assert missing.returncode == 2 and "--unpaired nope.npy: not a readable .npy file" in missing.stderr
