"""Training-loop drop-ins against their originals, in one process.

Shapes (HARDMINE_BENCH_SIZE=full / ci): batches B in {1024, 4096} / {256, 1024},
d=512, 256 labels, self-mining (ref_emb = embeddings), CosineSimilarity; the
sentence-transformers comparison mines 100,000 queries x 100,000 corpus texts
(d=384) / 5,000 x 5,000 from precomputed embeddings, top 3 negatives, triplets.

Recorded per call: median time (pytest-benchmark) and peak extra memory (resident
memory sampled every millisecond during one call, minus the memory before it).
The table at the end gives each drop-in's speed-up and memory ratio over PML /
sentence-transformers. Results are reported, never asserted.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

torch = pytest.importorskip("torch")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
datasets = pytest.importorskip("datasets")
st_util = pytest.importorskip("sentence_transformers.util")

from conftest import SIZE_NAME, record_peer  # noqa: E402
from hardmine.integrations import pml  # noqa: E402
from hardmine.integrations.sentence_transformers import FixedEmbeddingModel, mine_hard_negatives  # noqa: E402
from hardmine.torch import mine_in_batch  # noqa: E402

BATCHES = {"full": (1024, 4096), "ci": (256, 1024)}[SIZE_NAME]
CORPUS = {"full": 100_000, "ci": 5_000}[SIZE_NAME]
DIM, LABELS = 512, 256


def peak_extra_bytes(fn) -> int:
    """Peak resident memory one call adds over what was resident before it, sampled every
    millisecond by a thread (torch and OpenMP thread pools rule out measuring in a forked child)."""
    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(0, max(peak[0], process.memory_info().rss) - before)


def batch(size: int):
    generator = torch.Generator().manual_seed(size)
    return torch.randn(size, DIM, generator=generator), torch.randint(0, LABELS, (size,), generator=generator)


MINERS = {
    "TripletMarginMiner semihard": (lambda: pml.TripletMarginMiner(margin=0.2, type_of_triplets="semihard"),
                                    lambda: pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")),
    "BatchHardMiner": (pml.BatchHardMiner, pml_miners.BatchHardMiner),
    "BatchEasyHardMiner": (pml.BatchEasyHardMiner, pml_miners.BatchEasyHardMiner),
    "MultiSimilarityMiner": (pml.MultiSimilarityMiner, pml_miners.MultiSimilarityMiner),
}


def timed(benchmark, fn, rounds: int):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("size", BATCHES)
@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("side", ["hardmine", "pml"])
def test_pml_miners(benchmark, size, name, side):
    emb, labels = batch(size)
    miner = MINERS[name][0 if side == "hardmine" else 1]()
    result = timed(benchmark, lambda: miner(emb, labels), rounds=3 if size > 2048 else 5)
    memory = peak_extra_bytes(lambda: miner(emb, labels))
    record_peer(f"{name} B={size}", "hardmine" if side == "hardmine" else "pytorch-metric-learning",
                benchmark.stats.stats.median, memory, len(result[0]))


@pytest.mark.parametrize("size", BATCHES)
def test_mine_in_batch_vs_batch_hard(benchmark, size):
    emb, labels = batch(size)
    result = timed(benchmark, lambda: mine_in_batch(emb, labels=labels, strategy="hardest"), rounds=5)
    memory = peak_extra_bytes(lambda: mine_in_batch(emb, labels=labels, strategy="hardest"))
    record_peer(f"BatchHardMiner B={size}", "hardmine.torch.mine_in_batch", benchmark.stats.stats.median, memory,
                len(result[0]))


@pytest.fixture(scope="module")
def st_world():
    rng = np.random.default_rng(0)
    corpus = rng.standard_normal((CORPUS, 384), dtype=np.float32)
    queries = corpus + 0.8 * rng.standard_normal((CORPUS, 384), dtype=np.float32)
    for x in (corpus, queries):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    dataset = datasets.Dataset.from_dict({"anchor": [f"q{i}" for i in range(CORPUS)],
                                          "positive": [f"d{i}" for i in range(CORPUS)]})
    return dataset, queries, corpus


@pytest.mark.parametrize("side", ["hardmine", "sentence-transformers"])
def test_sentence_transformers_end_to_end(benchmark, st_world, side):
    dataset, queries, corpus = st_world
    if side == "hardmine":
        def call():
            return mine_hard_negatives(dataset, query_embeddings=queries, corpus_embeddings=corpus, verbose=False)
    else:
        model = FixedEmbeddingModel({**{f"q{i}": row for i, row in enumerate(queries)},
                                     **{f"d{j}": row for j, row in enumerate(corpus)}})

        def call():
            return st_util.mine_hard_negatives(dataset, model, verbose=False)
    result = timed(benchmark, call, rounds=1 if SIZE_NAME == "full" else 3)
    record_peer(f"mine_hard_negatives {CORPUS:,}x{CORPUS:,}", side, benchmark.stats.stats.median, None, len(result))
