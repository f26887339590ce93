"""hardmine.torch: in-batch mining against a dense float64 reference, the memory bank, torch.compile."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hardmine.torch import MemoryBank, mine_in_batch  # noqa: E402


def reference(emb_a, emb_b, labels, ref_labels, strategy, k, margin, metric="cosine"):
    """Dense float64 triplets as mine_in_batch documents them."""
    a = emb_a.double().numpy()
    b = a if emb_b is None else emb_b.double().numpy()
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = a @ b.T
    la = labels.numpy()
    lb = la if ref_labels is None else ref_labels.numpy()
    same = la[:, None] == lb[None, :]
    positive = same.copy()
    if emb_b is None:
        np.fill_diagonal(positive, False)
    out = []
    for i in range(len(a)):
        pos = np.flatnonzero(positive[i])
        if pos.size == 0:
            continue
        pos = pos[np.lexsort((pos, s[i, pos]))]
        negs = np.flatnonzero(~same[i])
        negs = negs[np.lexsort((negs, -s[i, negs]))]
        if strategy in ("hardest", "semihard"):
            pos = pos[:1]
        for p in pos:
            chosen = negs
            if strategy == "semihard":
                sp = s[i, pos[0]]
                chosen = negs[(s[i, negs] > sp - margin) & (s[i, negs] < sp)]
            out += [(i, int(p), int(n)) for n in chosen[:k]]
    return out


def triplets(result):
    return list(zip(*(t.tolist() for t in result)))


@pytest.mark.parametrize("strategy", ["hardest", "semihard", "top"])
@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("path", ["engine", "torch"])
def test_mine_in_batch_matches_the_reference(strategy, cross, k, path):
    generator = torch.Generator().manual_seed(7)
    emb_a = torch.randn(64, 12, generator=generator)
    labels = torch.randint(0, 10, (64,), generator=generator)
    emb_b = emb_a + 0.3 * torch.randn(64, 12, generator=generator) if cross else None
    got = mine_in_batch(emb_a, emb_b, labels, strategy=strategy, num_negatives=k, margin=0.3, backend=path)
    assert all(t.dtype == torch.int64 and t.device == emb_a.device for t in got)
    assert triplets(got) == reference(emb_a, emb_b, labels, None, strategy, k, 0.3)


@pytest.mark.parametrize("path", ["engine", "torch"])
def test_cross_modal_with_ref_labels_and_dot_metric(path):
    generator = torch.Generator().manual_seed(8)
    images, captions = torch.randn(20, 8, generator=generator), torch.randn(100, 8, generator=generator)
    image_labels = torch.arange(20)
    caption_labels = torch.arange(100) // 5
    got = mine_in_batch(images, captions, image_labels, caption_labels, strategy="top", num_negatives=2,
                        metric="dot", backend=path)
    assert triplets(got) == reference(images, captions, image_labels, caption_labels, "top", 2, 0, metric="dot")
    assert len(got[0]) == 20 * 5 * 2


@pytest.mark.parametrize("path", ["engine", "torch"])
def test_random_strategy_draws_negatives_only(path):
    generator = torch.Generator().manual_seed(9)
    emb = torch.randn(50, 6, generator=generator)
    labels = torch.randint(0, 5, (50,), generator=generator)
    a, p, n = mine_in_batch(emb, labels=labels, strategy="random", num_negatives=4, seed=1, backend=path)
    assert torch.all(labels[a] == labels[p]) and torch.all(labels[a] != labels[n]) and torch.all(a != p)
    expected_pairs = reference(emb, None, labels, None, "top", 4, 0)
    assert [(x, y) for x, y, _ in triplets((a, p, n))] == [(x, y) for x, y, _ in expected_pairs]
    again = mine_in_batch(emb, labels=labels, strategy="random", num_negatives=4, seed=1, backend=path)
    other = mine_in_batch(emb, labels=labels, strategy="random", num_negatives=4, seed=2, backend=path)
    assert torch.equal(n, again[2]) and not torch.equal(n, other[2])
    draws = torch.stack([mine_in_batch(emb, labels=labels, strategy="random", num_negatives=1, seed=s,
                                       backend=path)[2][:1] for s in range(200)]).flatten()
    assert len(set(draws.tolist())) > 15  # spread over the ~40 negatives of anchor 0, not the hardest few


def test_fp16_bf16_no_grad_and_compile():
    generator = torch.Generator().manual_seed(10)
    emb = torch.randn(40, 8, generator=generator, requires_grad=True)
    labels = torch.randint(0, 4, (40,), generator=generator)
    expected = triplets(mine_in_batch(emb, labels=labels))
    for dtype in (torch.float16, torch.bfloat16):
        low = emb.detach().to(dtype)
        assert triplets(mine_in_batch(low, labels=labels)) == reference(low.float(), None, labels, None, "hardest",
                                                                         1, 0)

    def step(x, y):
        a, p, n = mine_in_batch(x, labels=y)
        return torch.nn.functional.triplet_margin_loss(x[a], x[p], x[n], margin=0.2)

    loss = torch.compile(step, backend="eager")(emb, labels)
    loss.backward()
    assert emb.grad is not None
    with torch.no_grad():
        assert triplets(mine_in_batch(emb, labels=labels)) == expected


def test_memory_bank_rings_and_mines_against_the_past():
    bank = MemoryBank(capacity=50, dim=6)
    generator = torch.Generator().manual_seed(11)
    seen, seen_labels = [], []
    for _ in range(4):
        batch, labels = torch.randn(20, 6, generator=generator), torch.randint(0, 5, (20,), generator=generator)
        bank.add(batch, labels)
        seen.append(batch)
        seen_labels.append(labels)
    assert len(bank) == 50
    torch.testing.assert_close(bank.embeddings, torch.cat(seen)[-50:])
    assert torch.equal(bank.labels, torch.cat(seen_labels)[-50:])
    query, query_labels = torch.randn(10, 6, generator=generator), torch.randint(0, 5, (10,), generator=generator)
    got = bank.mine(query, query_labels, strategy="top", num_negatives=2)
    assert triplets(got) == reference(query, bank.embeddings, query_labels, bank.labels, "top", 2, 0)
    bank.add(torch.randn(70, 6), torch.zeros(70, dtype=torch.long))  # more than the capacity: newest 50 kept
    assert len(bank) == 50 and torch.all(bank.labels == 0)


@pytest.mark.parametrize("call, error, message", [
    (lambda e, lab: mine_in_batch(e.numpy(), labels=lab), TypeError, "emb_a must be a torch.Tensor"),
    (lambda e, lab: mine_in_batch(e), ValueError, "labels is required"),
    (lambda e, lab: mine_in_batch(e, labels=lab[:3]), ValueError, r"labels must have shape \(8,\)"),
    (lambda e, lab: mine_in_batch(e, labels=lab.float()), TypeError, "labels must hold integer labels"),
    (lambda e, lab: mine_in_batch(e, torch.ones(5, 4), lab), ValueError, "ref_labels is required"),
    (lambda e, lab: mine_in_batch(e, labels=lab, strategy="easy"), ValueError, "strategy must be one of"),
    (lambda e, lab: mine_in_batch(e, labels=lab, num_negatives=0), ValueError, "num_negatives must be >= 1"),
    (lambda e, lab: MemoryBank(4, 4).mine(e, lab), ValueError, "memory bank is empty"),
    (lambda e, lab: MemoryBank(4, 3).add(e, lab), ValueError, r"embeddings must have shape \(n, 3\)"),
    (lambda e, lab: mine_in_batch(e, labels=lab, backend="gpu"), ValueError, "backend must be"),
    (lambda e, lab: mine_in_batch(e[0], labels=lab), ValueError, r"emb_a must be 2-D"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(torch.ones(8, 4), torch.arange(8) % 2)


def test_no_positive_anywhere_gives_empty_tensors():
    got = mine_in_batch(torch.randn(5, 3), labels=torch.arange(5))
    assert [t.numel() for t in got] == [0, 0, 0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")
def test_cuda_tensors_are_mined_on_the_device():
    generator = torch.Generator().manual_seed(12)
    emb, labels = torch.randn(300, 16, generator=generator), torch.randint(0, 20, (300,), generator=generator)
    for strategy in ("hardest", "semihard", "top"):
        on_device = mine_in_batch(emb.cuda(), labels=labels.cuda(), strategy=strategy, num_negatives=3)
        assert all(t.is_cuda for t in on_device)
        assert triplets(tuple(t.cpu() for t in on_device)) == triplets(
            mine_in_batch(emb, labels=labels, strategy=strategy, num_negatives=3))


@pytest.mark.parametrize("strategy", ["hardest", "semihard", "top"])
def test_memory_bank_mines_with_int8_precision(strategy):
    """precision='int8' reaches the engine from mine_in_batch and MemoryBank.mine: the same triplets."""
    from hardmine import backends

    if backends.status()["cpu"] is not None:
        pytest.skip("int8 scoring lives in the compiled core")
    generator = torch.Generator().manual_seed(3)
    bank = MemoryBank(2000, 24)
    bank.add(torch.randn(2000, 24, generator=generator), torch.randint(0, 200, (2000,), generator=generator))
    batch, labels = torch.randn(64, 24, generator=generator), torch.randint(0, 200, (64,), generator=generator)
    common = dict(strategy=strategy, num_negatives=3, margin=0.3)
    fp32 = bank.mine(batch, labels, **common)
    for precision in ("int8", "bf16"):
        for ours, theirs in zip(bank.mine(batch, labels, precision=precision, **common), fp32):
            assert torch.equal(ours, theirs)
    with pytest.raises(ValueError, match="precision must be one of"):
        mine_in_batch(batch, labels=labels, precision="int4")


@pytest.mark.parametrize("backend", ["auto", "engine", "torch"])
def test_nan_is_refused_where_it_enters(backend):
    # backend="torch" is the path of every CUDA batch: it mined NaN batches silently (adversarial 11)
    emb = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 4
    emb[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"emb_a row 2 contains NaN or inf|queries row 2 contains NaN or inf"):
        mine_in_batch(emb, labels=labels, strategy="hardest", num_negatives=1, backend=backend)
    other = torch.randn(10, 8)
    other[7] = float("inf")
    if backend == "torch":
        with pytest.raises(ValueError, match=r"^emb_b row 7 contains NaN or inf"):
            mine_in_batch(emb[3:13], other, labels=labels[3:13], ref_labels=torch.arange(10) % 4, backend=backend)
    bank = MemoryBank(capacity=8, dim=8)
    with pytest.raises(ValueError, match=r"^embeddings row 2 contains NaN or inf"):
        bank.add(emb[:4], labels[:4])
    assert len(bank) == 0  # nothing stored
