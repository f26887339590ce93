"""The docstring examples run and print what they claim."""

from __future__ import annotations

import doctest
import importlib
import pathlib
import re

import pytest

from hardmine import _draws, engine, pairs, recipes, synthetic
from hardmine.mining import pipeline
from hardmine import eval as hm_eval


@pytest.mark.parametrize("module", [engine, pipeline, synthetic, hm_eval, _draws, pairs, recipes,
                                    "hardmine.torch"])
def test_docstring_examples(module):
    if isinstance(module, str):  # modules of the optional peers
        pytest.importorskip("torch")
        module = importlib.import_module(module)
    failures, attempted = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert attempted > 0 and failures == 0


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_is_a_first_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    # every relative link resolves to a file of the checkout (the rest lives in docs/)
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if "://" not in target:
            assert (ROOT / target).exists(), target


def test_readme_quick_start_runs_and_prints_what_it_says(capsys):
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Quick start")
    block = re.search(r"```python\n(.*?)```", readme[start:], re.S).group(1)
    exec(compile(block, "README.md quick start", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    promised = [line.split("# ")[-1] for line in block.splitlines() if line.startswith("print(")]
    assert printed == promised
