"""The real-data study's data sets (benches/quality/data/textpairs.py) and its determinism."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

QUALITY = Path(__file__).resolve().parents[1] / "benches" / "quality"
sys.path[:0] = [str(QUALITY), str(QUALITY / "data")]
textpairs = importlib.import_module("textpairs")

DEBIAN = """Package: foo
Description-md5: 1
Description-en: the foo tool
 Foo does many things with bars,
 and more.
 .
 Second paragraph here.

Package: foo-doc
Description-md5: 2
Description-en: documentation for foo
 Foo does many things with bars,
 and more.

Package: tiny
Description-md5: 3
Description-en: too short
 two words
"""
AVAILABLE = "Package: foo\nVersion: 1\n\nPackage: foo-doc\nSource: foo (1.0-1)\n\nPackage: tiny\n"
WORDNET = [
    "  1 This software and database is being provided",
    "00001740 03 n 02 entity 0 thing 0 000 | that which is perceived to have its own distinct existence",
    "00002137 03 n 01 thing 1 000 | a separate and self-contained entity; \"a thing of beauty\"",
    "00002452 00 a 01 galore(ip) 0 000 | in great numbers or amounts",
    "00003000 00 r 01 short 0 000 | too short",
]
KJV = """Genesis 1:1: In the <w savlm="x">beginning</w> God created the heaven and the earth.
Genesis 1:2: And the earth was without form,
   and void.
Genesis 2:1: Thus the heavens were finished.
(engKJV2006eb)
"""
WEB = """Genesis 1:1: In the beginning, God created the heavens and the earth.
Genesis 1:2: The earth was formless and empty.
Genesis 2:1: The heavens were finished.
(engWEB2015eb)
"""


def test_debian_pairs_keep_sources_and_identical_texts_related():
    pairs = textpairs.parse_debian([DEBIAN], AVAILABLE)
    assert pairs.queries == ["foo-doc: documentation for foo", "foo: the foo tool"]
    assert pairs.documents[1] == "Foo does many things with bars, and more. Second paragraph here."
    assert pairs.groups == ["foo", "foo"]  # foo-doc's Source is foo
    indptr, ids = textpairs.related(pairs.keys)
    assert ids[indptr[0]:indptr[1]].tolist() == [0, 1]


def test_wordnet_pairs_are_definitions_to_lemmas_related_by_shared_lemmas():
    pairs = textpairs.parse_wordnet(WORDNET)
    by_query = dict(zip(pairs.queries, pairs.documents))
    assert by_query == {"that which is perceived to have its own distinct existence": "entity, thing (noun)",
                        "a separate and self-contained entity": "thing (noun)",  # the example is cut
                        "in great numbers or amounts": "galore (adjective)"}  # marker dropped, short gloss out
    indptr, ids = textpairs.related(pairs.keys)
    thing, entity = pairs.documents.index("thing (noun)"), pairs.documents.index("entity, thing (noun)")
    assert ids[indptr[thing]:indptr[thing + 1]].tolist() == sorted([thing, entity])  # "thing" in both
    galore = pairs.documents.index("galore (adjective)")
    assert ids[indptr[galore]:indptr[galore + 1]].tolist() == [galore]


def test_bible_verses_align_and_join_continuation_lines():
    pairs = textpairs.parse_bible(KJV, WEB)
    assert len(pairs) == 3
    row = pairs.queries.index("And the earth was without form, and void.")
    assert pairs.documents[row] == "The earth was formless and empty." and pairs.groups[row] == "Genesis 1"
    assert "In the beginning God created the heaven and the earth." in pairs.queries  # markup dropped


def _check_split(pairs, train, test, seed):
    train_rows, test_rows = textpairs.split(pairs, train, test, seed=seed)
    assert len(train_rows) <= train and len(test_rows) <= test
    assert not set(train_rows) & set(test_rows)
    groups = np.array(pairs.groups, dtype=object)
    assert not set(groups[train_rows]) & set(groups[test_rows]), "a group crosses the split"
    documents = np.array(pairs.documents, dtype=object)
    assert not set(documents[train_rows]) & set(documents[test_rows]), "a document text crosses the split"
    return train_rows, test_rows


def test_splits_are_whole_groups_and_deterministic():
    rng = np.random.default_rng(0)
    groups = [f"g{g}" for g in rng.integers(0, 300, 2000)]
    pairs = textpairs.PairSet("t", [f"q{i}" for i in range(2000)], [f"d{g}-{i % 3}" for i, g in enumerate(groups)],
                          groups, [("x",)] * 2000)
    a = _check_split(pairs, 1500, 300, 0)
    b = _check_split(pairs, 1500, 300, 0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert len(a[0]) > 1400 and len(a[1]) > 280


EXPECT = os.environ.get("HARDMINE_EXPECT_STUDY_DATA") == "1"


@pytest.mark.parametrize("name", textpairs.NAMES)
def test_the_real_data_sets_build_with_leak_free_splits(name):
    try:
        pairs = textpairs.load(name)
    except textpairs.SourceMissing as error:
        if EXPECT:
            raise
        pytest.skip(str(error))  # the sources are Debian packages: .ci/run installs them and sets EXPECT
    assert len(pairs) > 30_000 and len(pairs.sha256()) == 64
    assert pairs.sha256() == textpairs.load(name).sha256()  # reproducible
    _check_split(pairs, 10_000, 2_000, 0)


def test_the_study_is_deterministic_and_reports_every_strategy(monkeypatch):
    real_study = importlib.import_module("real_study")
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(400)]
    docs = [" ".join(rng.choice(words, 8)) for _ in range(400)]
    pairs = textpairs.PairSet("tiny", [d.split()[0] + " " + d.split()[3] for d in docs], docs,
                          [f"g{i // 4}" for i in range(400)], [(f"text:{i}", f"src:{i // 4}") for i in range(400)])
    monkeypatch.setattr(textpairs, "load", lambda name: pairs)
    config = real_study.Config(datasets=("tiny",), train=300, test=60, seeds=(0, 1), negatives=(1,), batch=32)
    first, _ = real_study.study(config, log=lambda line: None)
    second, _ = real_study.study(config, log=lambda line: None)
    assert json.dumps(first) == json.dumps(second)
    runs = first["datasets"]["tiny"]["runs"]
    assert set(runs) == {"inbatch", "random/n=1", "top/n=1", "recommended/n=1", "st/n=1", "tagami/n=1", "jo",
                         "jo-random"}
    assert all(len(r["R@1"]["per_seed"]) == 2 for r in runs.values())
    assert runs["recommended/n=1"]["false_negative_rate"]["mean"] == 0.0  # the relations are excluded
    assert "top/n=1 vs inbatch" in first["datasets"]["tiny"]["paired"]


def test_every_static_model_starts_from_the_distilled_vectors():
    models = importlib.import_module("text_models")
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
    before = vectors.copy()
    model = models.Static(vectors)
    tokens = [np.array([i, i + 1]) for i in range(0, 40, 2)]
    models.train(model, tokens, tokens[::-1], np.zeros((20, 0), np.int64), seed=0, batch=8, lr=0.1)
    assert np.array_equal(vectors, before)  # training moved the model's copy, not the shared vectors
    assert not np.array_equal(model.bag.weight.detach().numpy(), before)
