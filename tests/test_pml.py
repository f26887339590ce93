"""pytorch-metric-learning drop-ins: the same set of tuples as PML's own miners."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
pml_distances = pytest.importorskip("pytorch_metric_learning.distances")

from hardmine.integrations import pml  # noqa: E402

DISTANCES = {
    "cosine": lambda: pml_distances.CosineSimilarity(),
    "lp-normalized": lambda: pml_distances.LpDistance(normalize_embeddings=True, p=2, power=1),
    "lp-raw-squared": lambda: pml_distances.LpDistance(normalize_embeddings=False, p=2, power=2),
    "dot": lambda: pml_distances.DotProductSimilarity(normalize_embeddings=False),
}


def batch(seed: int, size: int = 48, ref: int | None = None, dim: int = 16, labels: int = 6, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    emb = torch.randn(size, dim, generator=generator).to(dtype)
    lab = torch.randint(0, labels, (size,), generator=generator)
    if ref is None:
        return emb, lab, None, None
    return emb, lab, torch.randn(ref, dim, generator=generator).to(dtype), torch.randint(0, labels, (ref,),
                                                                                         generator=generator)


def tuples(result):
    """Triplets as a set; pair miners' (a1, p, a2, n) as the positive and the negative pair sets."""
    lists = [t.tolist() for t in result]
    if len(lists) == 4:
        return set(zip(lists[0], lists[1])), set(zip(lists[2], lists[3]))
    assert len({len(x) for x in lists}) == 1
    return set(zip(*lists))


def compare(ours, theirs, emb, lab, ref, ref_lab):
    got = ours(emb, lab, ref, ref_lab)
    # PML computes half-precision distances in fp16; hardmine in fp32, so compare with PML on the fp32 values
    expected = theirs(emb.float(), lab, None if ref is None else ref.float(), ref_lab)
    assert len(got) == len(expected)
    assert all(t.dtype == torch.int64 for t in got)
    assert tuples(got) == tuples(expected)
    return got


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@pytest.mark.parametrize("shape", ["self", "ref"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_triplet_margin_miner(distance, kind, shape, dtype):
    margin = 0.2 if distance != "dot" else 2.0
    data = batch(1, ref=40 if shape == "ref" else None, dtype=dtype)
    got = compare(pml.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=DISTANCES[distance]()),
                  pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=DISTANCES[distance]()),
                  *data)
    assert len(got[0]) > 0 or kind == "hard"


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("strategies", [("hard", "hard"), ("easy", "semihard"), ("semihard", "hard"),
                                        ("all", "hard"), ("hard", "all"), ("all", "all"), ("easy", "easy")])
@pytest.mark.parametrize("shape", ["self", "ref"])
def test_batch_easy_hard_miner(distance, strategies, shape):
    data = batch(2, ref=30 if shape == "ref" else None)
    ranges = {} if distance != "cosine" else {"allowed_pos_range": (-0.5, 0.9), "allowed_neg_range": (-0.8, 0.7)}
    kwargs = dict(pos_strategy=strategies[0], neg_strategy=strategies[1], **ranges)
    compare(pml.BatchEasyHardMiner(distance=DISTANCES[distance](), **kwargs),
            pml_miners.BatchEasyHardMiner(distance=DISTANCES[distance](), **kwargs), *data)


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("shape", ["self", "ref"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_hard_miner(distance, shape, dtype):
    data = batch(3, size=200, ref=150 if shape == "ref" else None, labels=20, dtype=dtype)
    got = compare(pml.BatchHardMiner(distance=DISTANCES[distance]()),
                  pml_miners.BatchHardMiner(distance=DISTANCES[distance]()), *data)
    assert len(got[0]) > 100


def test_batch_hard_miner_with_duplicate_rows_breaks_ties_like_pml():
    emb, lab, _, _ = batch(4, size=60, labels=5)
    emb[10:20] = emb[0]  # exact duplicates: equal scores, the smaller index wins in both
    compare(pml.BatchHardMiner(), pml_miners.BatchHardMiner(), emb, lab, None, None)


@pytest.mark.parametrize("distance", sorted(DISTANCES))
@pytest.mark.parametrize("shape", ["self", "ref"])
@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_multi_similarity_miner(distance, shape, epsilon):
    data = batch(5, ref=36 if shape == "ref" else None)
    compare(pml.MultiSimilarityMiner(epsilon=epsilon, distance=DISTANCES[distance]()),
            pml_miners.MultiSimilarityMiner(epsilon=epsilon, distance=DISTANCES[distance]()), *data)


def test_single_label_batches_and_unsupported_distances():
    emb = torch.randn(8, 4)
    same = torch.zeros(8, dtype=torch.long)
    for ours, theirs in ((pml.MultiSimilarityMiner(), pml_miners.MultiSimilarityMiner()),
                         (pml.BatchHardMiner(), pml_miners.BatchHardMiner()),
                         (pml.TripletMarginMiner(), pml_miners.TripletMarginMiner())):
        got = tuples(ours(emb, same))
        assert got == tuples(theirs(emb, same))
        assert got in (set(), (set(), set()))
    snr = pml_distances.SNRDistance()  # not derivable from dot products: PML's own path
    labels = torch.randint(0, 3, (8,))
    assert tuples(pml.TripletMarginMiner(distance=snr)(emb, labels)) == tuples(
        pml_miners.TripletMarginMiner(distance=pml_distances.SNRDistance())(emb, labels))


def test_drop_ins_are_pml_miners_and_feed_pml_losses():
    from pytorch_metric_learning import losses

    emb, lab, _, _ = batch(6, size=32)
    emb.requires_grad_(True)
    miner = pml.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
    assert isinstance(miner, pml_miners.BaseMiner)
    loss = losses.TripletMarginLoss(margin=0.2)(emb, lab, miner(emb, lab))
    loss.backward()
    assert emb.grad is not None and np.isfinite(float(loss.detach()))


def test_batch_hard_miner_with_the_same_labels_object_for_another_reference():
    """ref_labels may be the very labels tensor while ref_emb is another batch: the scores must
    come from ref_emb, with only PML's diagonal rule taken from the labels' identity."""
    emb, lab, _, _ = batch(7, size=40, labels=6)
    other = torch.randn(40, 16, generator=torch.Generator().manual_seed(70))
    compare(pml.BatchHardMiner(), pml_miners.BatchHardMiner(), emb, lab, other, lab)


def circle_batch(points: int, dtype) -> tuple:
    """2-D unit vectors at equally spaced angles: many pairs at exactly equal distances in exact
    arithmetic, which rounding then splits one way or the other (the hardest case for ties)."""
    angles = torch.arange(points, dtype=torch.float64) * (2 * np.pi / points)
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).to(dtype)
    labels = torch.arange(points) % 4
    return emb, labels


@pytest.mark.parametrize("distance", ["cosine", "lp-normalized", "lp-raw-squared"])
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@pytest.mark.parametrize("margin", [-0.05, 0.0, 0.05, 0.1, 0.2, 0.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triplet_margin_miner_is_identical_to_pml_on_exact_ties(distance, kind, margin, dtype):
    emb, labels = circle_batch(24, dtype)
    ours = pml.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=DISTANCES[distance]())
    theirs = pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=kind, distance=DISTANCES[distance]())
    assert tuples(ours(emb, labels)) == tuples(theirs(emb, labels))
    ref, ref_labels = circle_batch(36, dtype)
    assert tuples(ours(emb, labels, ref, ref_labels)) == tuples(theirs(emb, labels, ref, ref_labels))


MINERS = {
    "TripletMarginMiner": dict(margin=0.2, type_of_triplets="semihard"),
    "BatchHardMiner": {},
    "BatchEasyHardMiner": {},
    "MultiSimilarityMiner": {},
}


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("where", ["embeddings", "ref_emb"])
def test_a_batch_with_nan_or_inf_is_refused_naming_the_row(name, where):
    # PML would return triplets whose "negative" has the anchor's label (adversarial 08)
    emb, lab, ref, ref_lab = batch(5, size=16, ref=12)
    bad = emb if where == "embeddings" else ref
    bad[3, 2] = float("nan") if name != "BatchHardMiner" else float("inf")
    with pytest.raises(ValueError, match=rf"^{where} row 3 contains NaN or inf"):
        getattr(pml, name)(**MINERS[name])(emb, lab, ref, ref_lab)


@pytest.mark.parametrize("name", sorted(MINERS))
@pytest.mark.parametrize("distance", ["cosine", "lp-normalized"])
@pytest.mark.parametrize("shape", ["self", "ref"])
def test_an_all_zero_row_gives_the_same_tuples_as_pml(name, distance, shape):
    # F.normalize leaves a zero row at zero: its distances are PML's own (adversarial 09)
    emb, lab, ref, ref_lab = batch(6, size=16, ref=12 if shape == "ref" else None)
    emb[15] = 0.0
    if ref is not None:
        ref[4] = 0.0
    options = dict(MINERS[name], distance=DISTANCES[distance]())
    theirs_options = dict(MINERS[name], distance=DISTANCES[distance]())
    compare(getattr(pml, name)(**options), getattr(pml_miners, name)(**theirs_options), emb, lab, ref, ref_lab)
