"""The sentence-transformers drop-in against the real library on the same embeddings."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")
st_util = pytest.importorskip("sentence_transformers.util")

from hardmine.integrations.sentence_transformers import FixedEmbeddingModel, mine_hard_negatives  # noqa: E402
from hardmine import backends  # noqa: E402


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((12, 24))
    def unit(x):
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    n_queries, n_docs = 150, 600
    doc_cluster = rng.integers(0, 12, n_docs)
    docs = unit(centers[doc_cluster] + 0.8 * rng.standard_normal((n_docs, 24)))
    docs[1:400:2] = unit(docs[0:400:2] + 0.1 * rng.standard_normal((200, 24)))  # near-duplicate doc pairs
    anchors, positives, first_positive = [], [], []
    for q in range(n_queries):
        doc = 2 * int(rng.integers(0, 200))  # docs 400+ are corpus-only
        first_positive.append(doc)
        for extra in range(1 + (q % 4 == 0)):  # every fourth query: both docs of a pair (a duplicated anchor)
            anchors.append(f"query {q}")
            positives.append(f"doc {doc + extra}")
    query_rows = {f"query {q}": v for q, v in enumerate(
        unit(docs[first_positive] + 0.25 * rng.standard_normal((n_queries, 24))))}
    doc_rows = {f"doc {i}": v for i, v in enumerate(docs)}
    dataset = datasets.Dataset.from_dict({"query": anchors, "answer": positives})
    corpus = [f"doc {i}" for i in range(n_docs)] + ["doc 3", "doc 5"]  # duplicates are dropped by both
    return dataset, corpus, FixedEmbeddingModel({**query_rows, **doc_rows})


def assert_same(ours, theirs):
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    for column in ours.column_names:
        a, b = ours[column], theirs[column]
        if column in ("scores", "score"):
            np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), atol=1e-5)
        else:
            assert a == b, column


def negatives_per_key(ds, output_format: str, positives: dict) -> dict:
    """{(anchor, positive) or anchor: [negative texts in order]} whatever the format."""
    out: dict = {}
    rows = ds.to_dict()
    anchors, second = rows["query"], rows["answer"]
    for i, anchor in enumerate(anchors):
        if output_format == "triplet":
            out.setdefault((anchor, second[i]), []).append(rows["negative"][i])
        elif output_format == "n-tuple":
            out[(anchor, second[i])] = [rows[c][i] for c in rows if c.startswith("negative_")]
        elif output_format == "labeled-pair":
            out.setdefault(anchor, [])
            if second[i] not in positives[anchor]:
                out[anchor].append(second[i])
        else:
            out[(anchor, second[i][0])] = second[i][1:]
    return out


@pytest.mark.parametrize("output_format", ["triplet", "n-tuple", "labeled-pair", "labeled-list"])
@pytest.mark.parametrize("output_scores", [False, True])
@pytest.mark.parametrize("filters", [{}, {"relative_margin": 0.05}, {"absolute_margin": 0.1, "range_min": 3},
                                     {"max_score": 0.7, "min_score": 0.1}, {"range_min": 2, "range_max": 12}])
@pytest.mark.parametrize("with_corpus", [False, True])
def test_same_negatives_as_sentence_transformers(world, output_format, output_scores, filters, with_corpus):
    """Identical datasets where sentence-transformers' truncated candidate list holds enough admissible
    negatives; where it runs out, its negatives are a prefix of hardmine's (exact search finds the rest)."""
    dataset, corpus, model = world
    options = dict(num_negatives=4, output_format=output_format, output_scores=output_scores, verbose=False,
                   corpus=corpus if with_corpus else None, **filters)
    theirs = st_util.mine_hard_negatives(dataset, model, **options)
    ours = mine_hard_negatives(dataset, model, **options)
    # the same from precomputed embeddings, without a model
    query_embeddings = model.encode_query(dataset["query"])
    corpus_embeddings = model.encode_document(corpus if with_corpus else dataset["answer"])
    assert_same(mine_hard_negatives(dataset, query_embeddings=query_embeddings, corpus_embeddings=corpus_embeddings,
                                    **options), ours)
    if not filters:
        assert_same(ours, theirs)
        return
    positives: dict = {}
    for anchor, doc in zip(dataset["query"], dataset["answer"]):
        positives.setdefault(anchor, set()).add(doc)
    mine = negatives_per_key(ours, output_format, positives)
    reference = negatives_per_key(theirs, output_format, positives)
    assert set(reference) <= set(mine)
    same = 0
    for key, negatives in reference.items():
        assert mine[key][: len(negatives)] == negatives, key
        same += mine[key] == negatives
    assert same >= 0.6 * len(reference), "too few rows where sentence-transformers found every negative"
    if len(ours) == len(theirs):
        assert_same(ours, theirs)


def test_include_positives_ranks_them_like_sentence_transformers(world):
    dataset, corpus, model = world
    options = dict(num_negatives=5, include_positives=True, verbose=False)
    assert_same(mine_hard_negatives(dataset, model, **options), st_util.mine_hard_negatives(dataset, model, **options))


def test_exact_search_finds_negatives_where_the_truncated_list_runs_out(world):
    dataset, _, model = world
    options = dict(num_negatives=3, range_max=6, max_score=0.2, output_format="n-tuple", verbose=False)
    ours = mine_hard_negatives(dataset, model, **options)
    theirs = st_util.mine_hard_negatives(dataset, model, **options)
    assert len(ours) > len(theirs)  # sentence-transformers filtered only its 6 + 2 best candidates
    ours_rows = {(a, p): [ours[f"negative_{j}"][i] for j in (1, 2, 3)]
                 for i, (a, p) in enumerate(zip(ours["query"], ours["answer"]))}
    for i, (a, p) in enumerate(zip(theirs["query"], theirs["answer"])):
        assert ours_rows[(a, p)] == [theirs[f"negative_{j}"][i] for j in (1, 2, 3)]


def test_random_sampling_stays_in_the_window_and_is_seeded(world):
    dataset, _, model = world
    options = dict(num_negatives=3, sampling_strategy="random", range_min=2, range_max=20, output_format="n-tuple",
                   verbose=False)
    first = mine_hard_negatives(dataset, model, seed=1, **options)
    assert first.to_dict() == mine_hard_negatives(dataset, model, seed=1, **options).to_dict()
    assert first.to_dict() != mine_hard_negatives(dataset, model, seed=2, **options).to_dict()
    window = mine_hard_negatives(dataset, model, num_negatives=18, range_min=2, range_max=20,
                                 output_format="n-tuple", verbose=False)
    allowed = {(a, p): {window[f"negative_{j}"][i] for j in range(1, 19)}
               for i, (a, p) in enumerate(zip(window["query"], window["answer"]))}
    for i, (a, p) in enumerate(zip(first["query"], first["answer"])):
        if (a, p) in allowed:
            assert {first[f"negative_{j}"][i] for j in (1, 2, 3)} <= allowed[(a, p)]


@pytest.mark.parametrize("kwargs, message", [
    ({"output_format": "pairs"}, "Invalid output_format"),
    ({"range_min": 5, "range_max": 5}, "range_min must be smaller than range_max"),
    ({"num_negatives": 0}, "num_negatives must be at least 1"),
    ({"num_negatives": 9, "range_min": 0, "range_max": 5}, "Cannot mine 9 negatives"),
    ({"faiss_batch_size": 0}, "faiss_batch_size must be a positive integer"),
    ({"output_format": "triplet", "sampling_strategy": "hardest"}, "sampling_strategy must be"),
])
def test_bad_arguments(world, kwargs, message):
    dataset, _, model = world
    with pytest.raises(ValueError, match=message):
        mine_hard_negatives(dataset, model, verbose=False, **kwargs)


def test_embeddings_must_align(world):
    dataset, corpus, model = world
    q = model.encode_query(dataset["query"])
    with pytest.raises(ValueError, match=r"corpus_embeddings must have shape \(602, d\)"):
        mine_hard_negatives(dataset, query_embeddings=q, corpus_embeddings=q, corpus=corpus, verbose=False)
    with pytest.raises(ValueError, match="either model, or both"):
        mine_hard_negatives(dataset, query_embeddings=q, verbose=False)


@pytest.mark.skipif(backends.status()["cpu"] is not None, reason="int8 scoring lives in the compiled core")
@pytest.mark.parametrize("filters", [{}, {"relative_margin": 0.05}, {"range_min": 2, "range_max": 12,
                                                                      "sampling_strategy": "random"}])
def test_int8_precision_gives_the_same_dataset(world, filters):
    """precision="int8" reaches the engine: the same rows as fp32 (certified screening, exact re-scoring)."""
    dataset, _, model = world
    options = dict(num_negatives=4, output_format="n-tuple", output_scores=True, verbose=False, **filters)
    fp32 = mine_hard_negatives(dataset, model, **options)
    int8 = mine_hard_negatives(dataset, model, precision="int8", **options)
    assert fp32.column_names == int8.column_names and len(fp32) == len(int8)
    for column in fp32.column_names:
        if column == "scores":  # float64 re-scored sums rounded to float32 against the fp32 engine's sums
            np.testing.assert_allclose(np.array(int8[column]), np.array(fp32[column]), atol=2e-6)
        else:
            assert int8[column] == fp32[column], column
    with pytest.raises(ValueError, match="precision must be one of"):
        mine_hard_negatives(dataset, model, precision="int4", verbose=False)
