"""hardmine.pairs: exact ratios, formats, leak-free splits, atomic files."""

from __future__ import annotations

import numpy as np
import pytest

import hardmine
from data import gaussian
from hardmine import pairs

pa = pytest.importorskip("pyarrow")


@pytest.fixture
def mined():
    rng = np.random.default_rng(0)
    queries, candidates = gaussian(rng, 12, 8), gaussian(rng, 80, 8)
    positives = [list(rng.choice(80, size=1 + q % 3, replace=False)) for q in range(12)]
    negatives = hardmine.mine(queries, candidates, positives=positives, num_negatives=8)
    return negatives, positives


@pytest.mark.parametrize("ratio", [1.0, 0.5, 2.0, 1.7])
def test_labeled_pairs_have_the_exact_ratio(mined, ratio):
    negatives, positives = mined
    table = pairs.build(negatives, positives, ratio=ratio).to_pydict()
    labels = np.array(table["label"])
    num_positives = sum(len(p) for p in positives)
    assert (labels == 1).sum() == num_positives
    assert (labels == 0).sum() == int(np.floor(ratio * num_positives + 0.5))
    for q, pos in enumerate(positives):
        rows = np.array(table["anchor"]) == q
        got_negatives = np.array(table["candidate"])[rows & (labels == 0)]
        assert abs(got_negatives.size - ratio * len(pos)) < 1.0 + 1e-9  # each query within one of its share
        np.testing.assert_array_equal(got_negatives, negatives.indices[q, : got_negatives.size])  # best first
        assert sorted(np.array(table["candidate"])[rows & (labels == 1)].tolist()) == sorted(pos)


def test_not_enough_negatives_is_an_error(mined):
    negatives, positives = mined
    with pytest.raises(ValueError, match=r"ratio=5.0 needs \d+ negatives for query \d+ but only 8 were mined"):
        pairs.build(negatives, positives, ratio=5.0)


def test_triplets_pair_each_negative_with_a_positive(mined):
    negatives, positives = mined
    table = pairs.build(negatives, positives, ratio=2.0, format="triplet", scores=True).to_pydict()
    assert len(table["anchor"]) == 2 * sum(len(p) for p in positives)
    for anchor, positive, negative in zip(table["anchor"], table["positive"], table["negative"]):
        assert positive in positives[anchor]
        assert negative in negatives.indices[anchor]
    assert set(table) == {"anchor", "positive", "negative", "positive_score", "negative_score", "group"}


def test_n_tuples_hold_every_mined_negative(mined):
    negatives, positives = mined
    indices = np.array(negatives.indices)
    indices[3, 5:] = -1  # query 3 now has too few negatives: left out
    short = negatives._replace(indices=indices)
    table = pairs.build(short, positives, format="n-tuple").to_pydict()
    assert 3 not in table["anchor"]
    assert len(table["anchor"]) == sum(len(p) for q, p in enumerate(positives) if q != 3)
    row = table["anchor"].index(0)
    assert [table[f"negative_{n}"][row] for n in range(1, 9)] == negatives.indices[0].tolist()
    with pytest.raises(ValueError, match=r"ratio does not apply"):
        pairs.build(negatives, positives, format="n-tuple", ratio=2.0)


def test_names_replace_ids(mined):
    negatives, positives = mined
    captions = [f"caption {i}" for i in range(80)]
    images = {q: f"img{q}.jpg" for q in range(12)}
    table = pairs.build(negatives, positives, anchor_names=images, candidate_names=captions).to_pydict()
    assert table["anchor"][0] == "img0.jpg" and table["candidate"][0].startswith("caption ")
    with pytest.raises(ValueError, match=r"anchor_names has no entry for id"):
        pairs.build(negatives, positives, anchor_names={0: "only one"})


def test_bad_format():
    with pytest.raises(ValueError, match=r"format must be one of"):
        pairs.build(None, [0], format="quad")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_keeps_groups_whole_and_sizes_close(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(300), rng.integers(1, 8, 300))
    table = pa.table({"group": groups, "value": np.arange(groups.size)})
    parts = pairs.split(table, seed=seed)
    assert list(parts) == ["train", "val", "test"]
    seen = [set(parts[name].column("group").to_pylist()) for name in parts]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(p.num_rows for p in parts.values()) == groups.size
    largest = np.bincount(groups).max()
    for name, fraction in {"train": 0.7, "val": 0.1, "test": 0.2}.items():
        assert abs(parts[name].num_rows - fraction * groups.size) <= largest
    again = pairs.split(table, seed=seed)
    assert all(parts[n].equals(again[n]) for n in parts)


def test_split_rejects_bad_fractions():
    table = pa.table({"group": [0, 1]})
    with pytest.raises(ValueError, match=r"fractions must be non-negative and sum to 1"):
        pairs.split(table, {"train": 0.5, "test": 0.4})
    with pytest.raises(ValueError, match=r"no column 'image'"):
        pairs.split(table, by="image")


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_write_read_round_trip(mined, tmp_path, suffix):
    negatives, positives = mined
    table = pairs.build(negatives, positives, scores=True)
    path = tmp_path / f"pairs{suffix}"
    pairs.write(table, path)
    back = pairs.read(path)
    assert back.to_pydict().keys() == table.to_pydict().keys()
    assert back.column("candidate").to_pylist() == table.column("candidate").to_pylist()
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_failed_write_leaves_the_previous_file(mined, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    negatives, positives = mined
    path = tmp_path / "pairs.parquet"
    pairs.write(pairs.build(negatives, positives), path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pairs.write(pairs.build(negatives, positives, ratio=2.0), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.parquet"]


def test_write_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"must end in .parquet or .jsonl"):
        pairs.write(pa.table({"a": [1]}), tmp_path / "x.csv")
