"""The docstring examples run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

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
