"""The console script (`hardmine` / `python -m hardmine`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hardmine import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hardmine", *args], capture_output=True, text=True, timeout=300)


def test_demo_mines_a_generated_dump():
    done = run("demo", "--images", "400", "--dim", "16")
    assert done.returncode == 0, done.stderr
    assert "hardest non-positive captions" in done.stdout
    assert "image 0" in done.stdout and "G scores/s" in done.stdout


def test_info_command():
    done = run("info")
    assert done.returncode == 0, done.stderr
    assert "backends:" in done.stdout and "numba" in done.stdout


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["demo", "--k", "0", "--images", "10"])
    assert stop.value.code == 2
    assert "k must be >= 1" in capsys.readouterr().err
