"""Mining with filters and sampling vs plain top-k vs sentence-transformers' mining step.

    HARDMINE_BENCH_SIZE=full python -m pytest benches/bench_mine.py \
        --benchmark-json benches/results/mine_full.json

Task (issue "Mining"): strategy ``random`` in rank window (10, 100), ``relative_margin=0.05``,
5 negatives per query. sentence-transformers' ``mine_hard_negatives`` gets the same
precomputed embeddings through a minimal model stand-in (its embedding step is a lookup),
so what is timed is its mining step plus building its output dataset.
"""

from __future__ import annotations

import numpy as np
import pytest

import hardmine

st_util = pytest.importorskip("sentence_transformers.util")
torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from hardmine.integrations.sentence_transformers import FixedEmbeddingModel  # noqa: E402

from conftest import flops, run, skip_unless_native  # noqa: E402  (benches/ is on sys.path)

WINDOW = (10, 100)


@pytest.fixture(scope="module")
def world(size):
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((size["candidates"], size["dim"]), dtype=np.float32)
    positives = rng.choice(size["candidates"], size=size["queries"], replace=False)
    queries = corpus[positives] + 0.8 * rng.standard_normal((size["queries"], size["dim"]), dtype=np.float32)
    for x in (corpus, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    dataset = datasets.Dataset.from_dict(
        {"anchor": [f"q{i}" for i in range(len(queries))], "positive": [f"d{j}" for j in positives]}
    )
    corpus_texts = [f"d{j}" for j in range(len(corpus))]
    return queries, corpus, positives, dataset, corpus_texts


def test_hardmine_topk_alone(benchmark, world, record):
    queries, corpus, positives, _, _ = world
    run(benchmark, lambda: hardmine.topk(queries, corpus, WINDOW[1], exclude=positives))
    record("mining", "hardmine topk k=100 (alone)", benchmark, flops(queries, corpus))


@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_hardmine_mine(benchmark, world, record, backend):
    queries, corpus, positives, _, _ = world
    result = run(benchmark, lambda: hardmine.mine(
        queries, corpus, positives=positives, strategy="random", rank_range=WINDOW, relative_margin=0.05,
        num_negatives=5, seed=0, backend=backend,
    ))
    record("mining", f"hardmine mine ({backend})", benchmark, flops(queries, corpus))
    assert np.all(result.num_valid == 5)


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_hardmine_mine_certified(benchmark, world, record, precision):
    """The same mining with precision="int8" / "bf16": certified screening, exact re-scoring."""
    skip_unless_native(precision)
    queries, corpus, positives, _, _ = world
    options = dict(positives=positives, strategy="random", rank_range=WINDOW, relative_margin=0.05, num_negatives=5,
                   seed=0)
    result = run(benchmark, lambda: hardmine.mine(queries, corpus, precision=precision, **options))
    record("mining", f"hardmine mine (cpu, {precision})", benchmark, flops(queries, corpus))
    fp32 = hardmine.mine(queries, corpus, **options)
    # the same negatives but where two window scores tie within float32 rounding
    benchmark.extra_info["rows_identical_to_fp32"] = float((result.indices == fp32.indices).all(axis=1).mean())
    assert (result.indices == fp32.indices).all(axis=1).mean() > 0.95


@pytest.mark.parametrize("backend", ["cpu", "numba"])
def test_hardmine_random_over_every_rank(benchmark, world, record, backend):
    """``random`` over ranks 10 to the end (the open window): one pass, O(a + n) per query."""
    queries, corpus, positives, _, _ = world
    result = run(benchmark, lambda: hardmine.mine(
        queries, corpus, positives=positives, strategy="random", rank_range=(10, None), num_negatives=5, seed=0,
        backend=backend,
    ))
    record("mining", f"hardmine random ranks 10.. ({backend})", benchmark, flops(queries, corpus))
    assert np.all(result.num_valid == 5)


def test_sentence_transformers_random_over_every_rank(benchmark, world, record):
    """The original's way to the same draw: range_max = the corpus size (a full per-query sort)."""
    queries, corpus, *_ = world
    mined = run(benchmark, lambda: st_mine(world, "random", rank_range=(10, corpus.shape[0] - 1),
                                           relative_margin=None))
    record("mining", "sentence-transformers random ranks 10..", benchmark, flops(queries, corpus))
    assert len(mined) == queries.shape[0]


def st_mine(world, strategy, rank_range=WINDOW, relative_margin=0.05):
    queries, corpus, _, dataset, corpus_texts = world
    model = FixedEmbeddingModel({**{f"q{i}": row for i, row in enumerate(queries)},
                                 **{f"d{j}": row for j, row in enumerate(corpus)}})
    return st_util.mine_hard_negatives(
        dataset, model, corpus=corpus_texts, range_min=rank_range[0],
        range_max=rank_range[1], relative_margin=relative_margin, num_negatives=5, sampling_strategy=strategy,
        output_format="n-tuple", use_faiss=False, faiss_batch_size=2048, verbose=False,
    )


def test_sentence_transformers_mine_hard_negatives(benchmark, world, record):
    queries, corpus, *_ = world
    mined = run(benchmark, lambda: st_mine(world, "random"))
    record("mining", "sentence-transformers", benchmark, flops(queries, corpus))
    assert len(mined) == queries.shape[0]


def test_top_negatives_match_sentence_transformers(world):
    """Same negatives for sampling_strategy="top" on the same embeddings (reported, not timed)."""
    queries, corpus, positives, _, _ = world
    theirs = st_mine(world, "top", rank_range=(0, 50), relative_margin=None)
    ours = hardmine.mine(queries, corpus, positives=positives, num_negatives=5)
    theirs_ids = np.array([[int(row[f"negative_{n}"][1:]) for n in range(1, 6)] for row in theirs])
    np.testing.assert_array_equal(ours.indices, theirs_ids)
