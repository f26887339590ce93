"""Mining inside torch training loops: :func:`mine_in_batch` and :class:`MemoryBank`.

Tensors go in and index tensors come out on the same device. CPU tensors are
read in place through DLPack (no copy) by hardmine's native engine; tensors on
another device (CUDA) are mined there with torch operations on the (B, R) batch
score matrix, so nothing travels to the host (``backend="torch"`` picks that
path for CPU tensors too). Both run under ``torch.no_grad()`` and are opaque to
``torch.compile`` (a graph break around the call, never a trace into NumPy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from . import _positives, _precision, api

STRATEGIES = ("hardest", "semihard", "top", "random")

__all__ = ["STRATEGIES", "MemoryBank", "mine_in_batch"]


def _checked_labels(value: Any, rows: int, name: str) -> torch.Tensor | np.ndarray:
    """Validated labels, left where they are (a device tensor is not copied to the host)."""
    if isinstance(value, torch.Tensor):
        shape, integral = tuple(value.shape), not (value.dtype.is_floating_point or value.dtype.is_complex
                                                    or value.dtype == torch.bool)
        kind = str(value.dtype)
    else:
        value = np.asarray(value)
        shape, integral, kind = value.shape, value.dtype.kind in "iu", str(value.dtype)
    if shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},), one label per row; got {shape}")
    if not integral:
        raise TypeError(f"{name} must hold integer labels; got dtype {kind}")
    return value


def _labels(value: Any, rows: int, name: str) -> np.ndarray:
    value = _checked_labels(value, rows, name)
    return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).astype(np.int64)


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d); got shape {tuple(x.shape)}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    """NaN and inf refused where they enter (the torch path and the bank would otherwise mine them
    silently, or fail later naming another call); on a device this is one reduction and one sync."""
    finite = torch.isfinite(x.detach()).all(dim=1)
    if not bool(finite.all()):
        row = int(torch.nonzero(~finite)[0, 0])
        raise ValueError(f"{name} row {row} contains NaN or inf; clean the batch")


@torch.compiler.disable
@torch.no_grad()
def mine_in_batch(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor | None = None,
    labels: Any = None,
    ref_labels: Any = None,
    *,
    strategy: str = "hardest",
    num_negatives: int = 1,
    margin: float = 0.2,
    metric: str = "cosine",
    seed: int = 0,
    backend: str = "auto",
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets ``(anchor_idx, positive_idx, negative_idx)`` from one batch.

    Anchors are the rows of ``emb_a``; positives and negatives are rows of
    ``emb_b`` (cross-modal: images vs captions), or of ``emb_a`` itself when
    ``emb_b`` is None (then an anchor is never its own positive or negative).
    Rows with equal labels are positives (``ref_labels`` labels ``emb_b``;
    default ``labels``). Every anchor with at least one positive gets:

    - ``hardest``: its hardest positive (lowest score) with its
      ``num_negatives`` highest-scoring negatives (batch-hard, Hermans et al.);
    - ``semihard``: its hardest positive p with the ``num_negatives``
      highest-scoring negatives inside the band ``s_p - margin < s < s_p``
      (FaceNet's semi-hard negatives, relative to the hardest positive);
    - ``top``: every positive, each with the ``num_negatives`` highest-scoring negatives;
    - ``random``: every positive, each with ``num_negatives`` negatives drawn
      uniformly among all the anchor's negatives (seeded, without replacement).

    Anchors with fewer admissible negatives get fewer triplets. Results are
    ordered by anchor, then positive, then negative score (highest first); ties
    go to the smaller index. ``backend``: ``"auto"`` (hardmine's engine for CPU
    tensors, torch operations on the tensors' device otherwise), ``"engine"`` or
    ``"torch"``. The two give the same triplets except for ``random``, whose
    draws come from a seeded ``torch.Generator`` on the torch path. ``precision``
    (``"fp32"``, ``"bf16"``, ``"int8"``, ``"auto"``; see :func:`hardmine.topk`) applies on the
    engine path, where it pays against a large reference set (a :class:`MemoryBank`);
    the torch path scores in the tensors' dtype.

    Examples
    --------
    >>> import torch
    >>> from hardmine.torch import mine_in_batch
    >>> x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.3]])
    >>> a, p, n = mine_in_batch(x, labels=torch.tensor([0, 0, 1, 1]))
    >>> a.tolist(), p.tolist(), n.tolist()
    ([0, 1, 2, 3], [1, 0, 3, 2], [3, 3, 1, 1])
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}; got {strategy!r}")
    _check_tensor(emb_a, "emb_a")
    same = emb_b is None
    if not same:
        _check_tensor(emb_b, "emb_b")
    reference = emb_a if same else emb_b
    if labels is None:
        raise ValueError("labels is required: rows with equal labels are positives")
    anchor_labels = _checked_labels(labels, emb_a.shape[0], "labels")
    if ref_labels is None:
        if not same and emb_b.shape[0] != emb_a.shape[0]:
            raise ValueError("ref_labels is required when emb_b has a different number of rows than emb_a")
        ref_labels = labels
    reference_labels = anchor_labels if same else _checked_labels(ref_labels, reference.shape[0], "ref_labels")
    count = int(num_negatives)
    if count < 1:
        raise ValueError(f"num_negatives must be >= 1; got {num_negatives}")
    if backend not in ("auto", "engine", "torch"):
        raise ValueError(f"backend must be 'auto', 'engine' or 'torch'; got {backend!r}")
    precision = _precision.check(precision)
    if metric not in ("cosine", "dot"):
        raise ValueError(f"metric must be 'cosine' or 'dot'; got {metric!r}")
    if reference.device != emb_a.device:
        raise ValueError(f"emb_a is on {emb_a.device} but emb_b on {reference.device}; put them on one device")
    on_device = emb_a.device.type != "cpu"
    if backend == "engine" and on_device:
        raise ValueError(f"backend='engine' reads host memory; these tensors are on {emb_a.device}")
    if backend == "torch" or (backend == "auto" and on_device):
        _check_finite(emb_a, "emb_a")
        if not same:
            _check_finite(emb_b, "emb_b")
        return _mine_torch(emb_a, reference, anchor_labels, reference_labels, same, strategy, count, float(margin),
                           metric, seed)
    anchor_labels = _labels(anchor_labels, emb_a.shape[0], "labels")
    reference_labels = anchor_labels if same else _labels(reference_labels, reference.shape[0], "ref_labels")

    anchors, members, pair_scores = _positives.label_pairs(emb_a, reference, anchor_labels, reference_labels, same,
                                                    metric)
    empty = torch.zeros(0, dtype=torch.long, device=emb_a.device)
    if anchors.size == 0:
        return empty, empty.clone(), empty.clone()
    # Per anchor: positives sorted by score ascending, ties by index, so the first is the hardest.
    pick = np.lexsort((members, pair_scores, anchors))
    anchors, members, pair_scores = anchors[pick], members[pick], pair_scores[pick]
    first = np.ones(anchors.size, dtype=bool)
    first[1:] = anchors[1:] != anchors[:-1]
    if strategy in ("hardest", "semihard"):
        anchors, members, pair_scores = anchors[first], members[first], pair_scores[first]
    with_positive = np.unique(anchors)

    groups = {"query_groups": anchor_labels[with_positive], "candidate_groups": reference_labels, "metric": metric,
              "precision": precision}
    if strategy in ("hardest", "top"):  # the plain fused top-k: same-label rows are excluded by the groups
        result = api.topk(emb_a[with_positive], reference, count, **groups)
    elif strategy == "semihard":
        # s_p is the anchor's hardest positive: the group minimum, which the self pair never lowers
        result = api.mine(emb_a[with_positive], reference, num_negatives=count, strategy="semihard",
                          margin=float(margin), **groups)
    else:
        result = api.mine(emb_a[with_positive], reference, num_negatives=count, strategy="random",
                          rank_range=(0, None), seed=seed, **groups)
    indices = np.asarray(result.indices)
    row_of = np.full(anchor_labels.size, -1, dtype=np.int64)
    row_of[with_positive] = np.arange(with_positive.size)
    negatives = indices[row_of[anchors]]  # (pairs, count)
    valid = negatives >= 0
    per_pair = valid.sum(axis=1)
    out_anchor = np.repeat(anchors, per_pair)
    out_positive = np.repeat(members, per_pair)
    out_negative = negatives[valid]
    device = emb_a.device
    return (torch.from_numpy(out_anchor).to(device), torch.from_numpy(out_positive).to(device),
            torch.from_numpy(np.ascontiguousarray(out_negative)).to(device))


def _mine_torch(emb_a, reference, anchor_labels, reference_labels, same, strategy, count, margin, metric, seed):
    """mine_in_batch with torch operations on the tensors' own device: the (B, R) batch scores,
    label masks, and stable sorts (ties by the smaller index, as on the engine path)."""
    device = emb_a.device
    a, r = emb_a.detach().float(), reference.detach().float()
    if metric == "cosine":
        a = torch.nn.functional.normalize(a, dim=1)
        r = a if same else torch.nn.functional.normalize(r, dim=1)
    scores = a @ r.T
    labels_a = torch.as_tensor(anchor_labels, device=device).long()
    labels_r = torch.as_tensor(reference_labels, device=device).long()
    match = labels_a[:, None] == labels_r[None, :]
    positive = match.clone()
    if same:
        positive.fill_diagonal_(False)
    columns = torch.arange(r.shape[0], device=device)
    inf = torch.tensor(float("inf"), device=device)
    # hardest positive: the lowest score, ties by the smaller index
    positive_scores = torch.where(positive, scores, inf)
    lowest = positive_scores.min(dim=1).values
    hardest = torch.where(positive_scores == lowest[:, None], columns, r.shape[0]).min(dim=1).values
    has_positive = positive.any(dim=1)
    negative_scores = torch.where(match, -inf, scores)
    if strategy == "semihard":
        band = (negative_scores > (lowest - margin)[:, None]) & (negative_scores < lowest[:, None])
        negative_scores = torch.where(band, negative_scores, -inf)
    if strategy == "random":
        generator = torch.Generator(device=device).manual_seed(seed)
        keys = torch.rand(scores.shape, generator=generator, device=device)
        keys = torch.where(negative_scores > -inf, keys, inf)
        order = torch.sort(keys, dim=1, stable=True).indices[:, :count]
        # the drawn negatives, best first (stable: ties by the smaller index)
        drawn = torch.sort(order, dim=1).values
        drawn_scores = negative_scores.gather(1, drawn)
        resort = torch.sort(-drawn_scores, dim=1, stable=True).indices
        negatives = drawn.gather(1, resort)
    else:
        negatives = torch.sort(-negative_scores, dim=1, stable=True).indices[:, :count]
    valid = negative_scores.gather(1, negatives) > -inf
    if strategy in ("hardest", "semihard"):
        pair_anchor = torch.nonzero(has_positive).flatten()
        pair_positive = hardest[pair_anchor]
    else:  # every positive, by anchor, then score ascending, then index
        pair_anchor, pair_positive = torch.nonzero(positive, as_tuple=True)
        by_score = torch.sort(scores[pair_anchor, pair_positive], stable=True).indices
        pair_anchor, pair_positive = pair_anchor[by_score], pair_positive[by_score]
        by_anchor = torch.sort(pair_anchor, stable=True).indices
        pair_anchor, pair_positive = pair_anchor[by_anchor], pair_positive[by_anchor]
    per_pair = valid[pair_anchor]
    counts = per_pair.sum(dim=1)
    return (torch.repeat_interleave(pair_anchor, counts), torch.repeat_interleave(pair_positive, counts),
            negatives[pair_anchor][per_pair])


class MemoryBank:
    """A ring buffer of past embeddings and labels, mined with the same engine.

    ``add(embeddings, labels)`` stores detached copies (on ``device``), overwriting
    the oldest rows once ``capacity`` is reached; ``mine(embeddings, labels, ...)`` runs
    :func:`mine_in_batch` with the current batch as anchors and the bank as the
    reference (positives and negatives can then come from many past batches).

    Examples
    --------
    >>> import torch
    >>> from hardmine.torch import MemoryBank
    >>> bank = MemoryBank(capacity=4, dim=2)
    >>> bank.add(torch.eye(2), torch.tensor([0, 1]))
    >>> bank.add(torch.ones(3, 2), torch.tensor([0, 1, 1]))
    >>> len(bank), bank.labels.tolist()
    (4, [1, 0, 1, 1])
    """

    def __init__(self, capacity: int, dim: int, dtype: torch.dtype = torch.float32, device: Any = "cpu"):
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity and dim must be >= 1; got {capacity} and {dim}")
        self.capacity = int(capacity)
        self._embeddings = torch.zeros(self.capacity, dim, dtype=dtype, device=device)
        self._labels = torch.zeros(self.capacity, dtype=torch.long, device=device)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    @torch.no_grad()
    def add(self, embeddings: torch.Tensor, labels: Any) -> None:
        _check_tensor(embeddings, "embeddings")
        if embeddings.ndim != 2 or embeddings.shape[1] != self._embeddings.shape[1]:
            raise ValueError(f"embeddings must have shape (n, {self._embeddings.shape[1]}); "
                             f"got {tuple(embeddings.shape)}")
        _check_finite(embeddings, "embeddings")
        labels = torch.from_numpy(_labels(labels, embeddings.shape[0], "labels")).to(self._labels.device)
        rows = embeddings.shape[0]
        if rows >= self.capacity:  # only the newest rows fit
            embeddings, labels, rows = embeddings[-self.capacity :], labels[-self.capacity :], self.capacity
        positions = (self._next + torch.arange(rows, device=self._labels.device)) % self.capacity
        self._embeddings[positions] = embeddings.detach().to(self._embeddings.device, self._embeddings.dtype)
        self._labels[positions] = labels
        self._next = int((self._next + rows) % self.capacity)
        self._size = min(self.capacity, self._size + rows)

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored rows, oldest first."""
        return self._ordered(self._embeddings)

    @property
    def labels(self) -> torch.Tensor:
        return self._ordered(self._labels)

    def _ordered(self, x: torch.Tensor) -> torch.Tensor:
        if self._size < self.capacity:
            return x[: self._size]
        return torch.cat([x[self._next :], x[: self._next]])

    def mine(self, embeddings: torch.Tensor, labels: Any, **options: Any):
        """:func:`mine_in_batch` of ``embeddings`` against the bank (indices into :attr:`embeddings`)."""
        if self._size == 0:
            raise ValueError("the memory bank is empty: add() batches before mining against it")
        return mine_in_batch(embeddings, self.embeddings, labels, self.labels, **options)
