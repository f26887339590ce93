"""The console script (`hardmine` / `python -m hardmine`)."""

from __future__ import annotations

import subprocess
import sys

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
