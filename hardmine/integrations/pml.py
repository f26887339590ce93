"""pytorch-metric-learning miners on hardmine kernels: drop-in subclasses.

``TripletMarginMiner``, ``BatchEasyHardMiner``, ``BatchHardMiner`` and
``MultiSimilarityMiner`` take the constructor arguments of their PML originals,
are called the same way (``miner(embeddings, labels, ref_emb, ref_labels)``) and
return the same set of index tuples. What changes is how they get there:

- the (B, R) score matrix comes from hardmine's engine (fp16/bf16 read natively,
  accumulated in fp32) and the distance is derived from it, except in
  ``TripletMarginMiner``, which decides every triplet on PML's own distance matrix
  (the same distance object and dtype) with PML's own float expressions, so that its
  tuple set is identical to PML's even on exact ties;
- ``TripletMarginMiner`` never builds PML's (B, R, R) triplet mask: per anchor
  the negatives are sorted once and each positive's admissible negatives are a
  contiguous run found by binary search on PML's own comparison, so memory is
  O(B*R + T) for T returned triplets (PML: O(B*R*R));
- ``BatchHardMiner`` runs hardmine's fused top-1 over the candidates (no (B, R)
  matrix at all) for the hardest negative and scores only the positive pairs;
- masks are boolean label comparisons, not index lists.

Supported distances: ``CosineSimilarity``, ``DotProductSimilarity`` and
``LpDistance`` with ``p=2`` (``normalize_embeddings`` either way, ``power`` 1 or
2). Any other distance, and any batch on a GPU, runs PML's own code path
unchanged (so a CUDA batch is never copied to the host). Tuples come as PML's
do, (anchor, positive, negative) index tensors on the embeddings' device; within
``TripletMarginMiner``'s output the order is by anchor, positive, then negative
by distance (PML orders negatives by index): the same set, in another order.
Half-precision embeddings are scored in fp32 (PML computes their distances in
fp16), so the equality holds against PML run on ``embeddings.float()``.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import miners as pml_miners

from .. import _positives, api

__all__ = ["BatchEasyHardMiner", "BatchHardMiner", "MultiSimilarityMiner", "TripletMarginMiner"]


def _supported(distance, embeddings, ref_emb) -> bool:
    """Whether hardmine computes this call: a distance it can derive from dot products, on host
    tensors (device tensors stay on their device, in PML's own code). A NaN or inf value is refused
    (as every hardmine entry point refuses it); a batch with an all-zero row under a normalising
    distance runs PML's own code (F.normalize leaves the row at zero, so its distances are not the
    unit-sphere ones that hardmine's dot products stand for, and PML's ties among them are its own)."""
    if embeddings.device.type != "cpu":
        return False
    for name, x in (("embeddings", embeddings), ("ref_emb", ref_emb)):
        finite = torch.isfinite(x.detach()).all(dim=1)
        if not bool(finite.all()):
            row = int(torch.nonzero(~finite)[0, 0])
            raise ValueError(f"{name} row {row} contains NaN or inf; clean the batch (hardmine's miners refuse "
                             f"non-finite embeddings)")
    kind = type(distance)
    if distance.normalize_embeddings and any(bool((x.detach() == 0).all(dim=1).any()) for x in (embeddings, ref_emb)):
        return False
    if kind in (pml_distances.CosineSimilarity, pml_distances.DotProductSimilarity):
        return distance.power == 1
    return kind is pml_distances.LpDistance and distance.p == 2 and distance.power in (1, 2)


def _normalized(distance, x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    if distance.normalize_embeddings:
        x = torch.nn.functional.normalize(x.float(), p=2, dim=1)
    return x


def _matrix(distance, embeddings: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
    """PML's (B, R) distance matrix (float32, CPU), from hardmine's score kernel."""
    q, r = _normalized(distance, embeddings), _normalized(distance, ref_emb)
    dots = torch.from_numpy(np.asarray(api.similarity(q.cpu(), r.cpu(), metric="dot")))
    if distance.is_inverted:
        return dots
    # as torch.cdist's matrix-product path computes it, then PML's power
    squared = (q.float() ** 2).sum(1)[:, None] + (r.float() ** 2).sum(1)[None, :] - 2 * dots
    distances = squared.clamp_(min=1e-30).sqrt_()
    return distances if distance.power == 1 else distances**distance.power


def _label_masks(labels, ref_labels, same_rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean (B, R) masks as PML's get_matches_and_diffs defines them."""
    labels, ref_labels = labels.cpu(), ref_labels.cpu()
    matches = labels[:, None] == ref_labels[None, :]
    negatives = ~matches
    if same_rows:
        matches.fill_diagonal_(False)
    return matches, negatives


def _long(x, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.int64)).to(device)


@numba.njit(cache=True, nogil=True)
def _expand_runs(anchors, positives, order, start, stop, out_anchor, out_positive, out_negative):
    """Writes each (anchor, positive) pair's run of sorted negatives straight into the outputs:
    one pass over the T triplets, no (T,) temporaries."""
    k = 0
    for i in range(anchors.size):
        a, p = anchors[i], positives[i]
        for j in range(start[i], stop[i]):
            out_anchor[k] = a
            out_positive[k] = p
            out_negative[k] = order[a, j]
            k += 1


class TripletMarginMiner(pml_miners.TripletMarginMiner):
    """PML's ``TripletMarginMiner`` (types ``all``/``hard``/``semihard``/``easy``) on hardmine kernels."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        if not _supported(self.distance, embeddings, ref_emb):
            return super().mine(embeddings, labels, ref_emb, ref_labels)
        # PML's own distance matrix (same function, same dtype; halves scored in fp32 as documented)
        # and PML's own float expressions below: every tuple is decided on exactly PML's values, so
        # the sets are identical even on exact ties. Only the (B, R, R) triplet mask is avoided.
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings, ref_emb = embeddings.float(), ref_emb.float()
        mat = self.distance(embeddings.detach(), ref_emb.detach())
        positives, negatives = (m.numpy() for m in _label_masks(labels, ref_labels, ref_labels is labels))
        inverted = self.distance.is_inverted
        # Along each anchor's negatives sorted this way, PML's triplet_margin never decreases.
        values = mat.numpy()
        key = np.where(negatives, -values if inverted else values, np.inf)
        order = np.argsort(key, axis=1)  # ties have equal triplet margins: their order does not matter
        sorted_values = torch.from_numpy(np.take_along_axis(values, order, axis=1))  # the same numbers
        count = torch.from_numpy(negatives.sum(axis=1))
        anchors, positive_ids = np.nonzero(positives)
        anchor_rows = torch.from_numpy(anchors)
        ap = mat[anchor_rows, torch.from_numpy(positive_ids)]
        margin = self.margin
        last_column = mat.shape[1] - 1

        def first_above(threshold: float) -> np.ndarray:
            """Per (anchor, positive): how many sorted negatives have triplet_margin <= threshold,
            with PML's expression and comparison (torch, the matrix's dtype, a Python scalar
            threshold), by a vectorised binary search."""
            low = torch.zeros(anchors.size, dtype=torch.int64)
            high = count[anchor_rows].to(torch.int64)
            while True:
                active = low < high
                if not bool(active.any()):
                    return low.numpy()
                mid = (low + high) // 2
                an = sorted_values[anchor_rows, mid.clamp(max=last_column)]
                triplet_margin = (ap - an) if inverted else (an - ap)
                ok = triplet_margin <= threshold
                low = torch.where(active & ok, mid + 1, low)
                high = torch.where(active & ~ok, mid, high)

        within_margin = first_above(margin)
        if self.type_of_triplets == "easy":
            start, stop = within_margin, count.numpy()[anchors]
        elif self.type_of_triplets == "hard":
            start, stop = np.zeros_like(within_margin), np.minimum(within_margin, first_above(0.0))
        elif self.type_of_triplets == "semihard":
            start, stop = first_above(0.0), within_margin
        else:
            start, stop = np.zeros_like(within_margin), within_margin
        stop = np.maximum(stop, start)
        total = int((stop - start).sum())
        out = [torch.empty(total, dtype=torch.long) for _ in range(3)]
        _expand_runs(anchors, positive_ids, order, start, stop, *(t.numpy() for t in out))
        device = embeddings.device
        return tuple(t.to(device) for t in out)


class BatchEasyHardMiner(pml_miners.BatchEasyHardMiner):
    """PML's ``BatchEasyHardMiner`` (every strategy pair and range) with hardmine's score matrix."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        if not _supported(self.distance, embeddings, ref_emb):
            return super().mine(embeddings, labels, ref_emb, ref_labels)
        mat = _matrix(self.distance, embeddings, ref_emb)
        positives, negatives = _label_masks(labels, ref_labels, ref_labels is labels)
        self._masks = positives, negatives
        a1, p, a2, n = self.mine_on(mat, labels)
        device = embeddings.device
        return a1.to(device), p.to(device), a2.to(device), n.to(device)

    def mine_on(self, mat, labels):
        """PML's ``mine`` with the positive/negative pair lists replaced by boolean masks."""
        positives, negatives = self._masks
        a = torch.arange(mat.size(0))
        positive_dists = negative_dists = None
        if self.pos_strategy == self.SEMIHARD and self.neg_strategy != self.ALL:
            (negative_dists, negative_indices), a2n_keep = self._extreme(mat, negatives, False)
            (positive_dists, positive_indices), a1p_keep = self._extreme(mat, positives, True, negative_dists)
        elif self.neg_strategy == self.SEMIHARD and self.pos_strategy != self.ALL:
            (positive_dists, positive_indices), a1p_keep = self._extreme(mat, positives, True)
            (negative_dists, negative_indices), a2n_keep = self._extreme(mat, negatives, False, positive_dists)
        else:
            if self.pos_strategy != self.ALL:
                (positive_dists, positive_indices), a1p_keep = self._extreme(mat, positives, True)
            if self.neg_strategy != self.ALL:
                (negative_dists, negative_indices), a2n_keep = self._extreme(mat, negatives, False)
        if self.ALL not in (self.pos_strategy, self.neg_strategy):
            keep = torch.where(a1p_keep & a2n_keep)
            self.set_stats(positive_dists[keep], negative_dists[keep])
            return a[keep], positive_indices[keep], a[keep], negative_indices[keep]
        a1_all, p_all = torch.where(positives)
        a2_all, n_all = torch.where(negatives)
        if self.pos_strategy == self.ALL and self.neg_strategy != self.ALL:
            self.set_stats(mat[a1_all, p_all], negative_dists[a2n_keep])
            return a1_all, p_all, a[a2n_keep], negative_indices[a2n_keep]
        if self.pos_strategy != self.ALL:
            self.set_stats(positive_dists[a1p_keep], mat[a2_all, n_all])
            return a[a1p_keep], positive_indices[a1p_keep], a2_all, n_all
        self.set_stats(mat[a1_all, p_all], mat[a2_all, n_all])
        return a1_all, p_all, a2_all, n_all

    def _extreme(self, mat, mask, positive: bool, thresholds=None):
        """PML's get_positives/get_negatives: the per-row min or max over ``mask``."""
        if positive:
            strategy, value_range = self.pos_strategy, self.allowed_pos_range
        else:
            strategy = self.EASY if self.neg_strategy in (self.HARD, self.SEMIHARD) else self.HARD
            value_range = self.allowed_neg_range
        hard = strategy in (self.HARD, self.SEMIHARD)
        take_min = hard == self.distance.is_inverted
        allowed = mask.clone()
        if thresholds is not None:
            allowed &= (mat > thresholds[:, None]) if take_min else (mat < thresholds[:, None])
        if value_range is not None:
            allowed &= (mat <= value_range[1]) & (mat >= value_range[0])
        fill = torch.finfo(mat.dtype).max if take_min else torch.finfo(mat.dtype).min
        masked = torch.where(allowed, mat, torch.full_like(mat, fill))
        result = masked.min(dim=1) if take_min else masked.max(dim=1)
        return result, allowed.any(dim=1)


class BatchHardMiner(BatchEasyHardMiner):
    """PML's ``BatchHardMiner``: each anchor's hardest positive and hardest negative.

    With a similarity, or a normalised L2 distance, the hardest negative comes
    from hardmine's fused top-1 scan over the candidates, so no (B, R) matrix is
    built; other distances use the score matrix.
    """

    def __init__(self, **kwargs):
        super().__init__(pos_strategy=self.HARD, neg_strategy=self.HARD, **kwargs)

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        distance = self.distance
        fused = _supported(distance, embeddings, ref_emb) and (distance.is_inverted or distance.normalize_embeddings)
        if not fused:
            a1, p, _, n = super().mine(embeddings, labels, ref_emb, ref_labels)
            return a1, p, n
        q, r = _normalized(distance, embeddings).cpu(), _normalized(distance, ref_emb).cpu()
        labels_np, ref_np = labels.cpu().numpy(), ref_labels.cpu().numpy()
        if labels_np.dtype.kind not in "iu":
            _, inverse = np.unique(np.concatenate([labels_np, ref_np]), return_inverse=True)
            labels_np, ref_np = inverse[: labels_np.size], inverse[labels_np.size :]
        nearest = api.topk(q, r, 1, query_groups=labels_np, candidate_groups=ref_np)
        negative = np.asarray(nearest.indices)[:, 0]
        # Positive pairs only: one small product per label, the diagonal left out for a batch against itself.
        anchors, members, scores = _positives.label_pairs(q, r, labels_np, ref_np, ref_labels is labels, "dot",
                                                   np.float32)
        # Hardest positive: the lowest similarity (largest distance), ties by the smaller index.
        pick = np.lexsort((members, scores, anchors))
        first = np.ones(pick.size, dtype=bool)
        first[1:] = anchors[pick][1:] != anchors[pick][:-1]
        hardest = np.full(labels_np.size, -1, dtype=np.int64)
        hardest[anchors[pick][first]] = members[pick][first]
        keep = (hardest >= 0) & (negative >= 0)
        device = embeddings.device
        a = np.flatnonzero(keep)
        return _long(a, device), _long(hardest[a], device), _long(negative[a], device)


class MultiSimilarityMiner(pml_miners.MultiSimilarityMiner):
    """PML's ``MultiSimilarityMiner`` (Wang et al. 2019) without sorting every row."""

    def mine(self, embeddings, labels, ref_emb, ref_labels):
        if not _supported(self.distance, embeddings, ref_emb):
            return super().mine(embeddings, labels, ref_emb, ref_labels)
        mat = _matrix(self.distance, embeddings, ref_emb)
        # PML ignores, per side, the pairs of the other kind; what neither list names (the
        # diagonal of a batch against its own labels) stays a candidate on both sides unless
        # the embeddings are the reference itself.
        matches, diffs = _label_masks(labels, ref_labels, ref_labels is labels)
        positives, negatives = ~diffs, ~matches
        if embeddings is ref_emb:
            positives.fill_diagonal_(False)
            negatives.fill_diagonal_(False)
        device = embeddings.device
        if not matches.any() or not diffs.any():
            empty = torch.tensor([], dtype=torch.long, device=device)
            return empty.clone(), empty.clone(), empty.clone(), empty.clone()
        big, small = torch.finfo(mat.dtype).max, torch.finfo(mat.dtype).min
        eps = self.epsilon
        if self.distance.is_inverted:
            hardest_negative = torch.where(negatives, mat, torch.full_like(mat, small)).max(dim=1).values
            hardest_positive = torch.where(positives, mat, torch.full_like(mat, big)).min(dim=1).values
            hard_positive = positives & (mat - eps < hardest_negative[:, None])
            hard_negative = negatives & (mat + eps > hardest_positive[:, None])
        else:
            hardest_negative = torch.where(negatives, mat, torch.full_like(mat, big)).min(dim=1).values
            hardest_positive = torch.where(positives, mat, torch.full_like(mat, small)).max(dim=1).values
            hard_positive = positives & (mat + eps > hardest_negative[:, None])
            hard_negative = negatives & (mat - eps < hardest_positive[:, None])
        a1, p = torch.where(hard_positive)
        a2, n = torch.where(hard_negative)
        return a1.to(device), p.to(device), a2.to(device), n.to(device)
