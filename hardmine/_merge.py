"""Merging the results of disjoint candidate ranges (shards, or one matrix cut among
workers) into the result of the whole: the same order rules as one pass."""

from __future__ import annotations

import numpy as np


def candidate_cuts(num_blocks: int, threads: int, num_candidates: int, tile_rows: int) -> list[tuple[int, int]]:
    """Contiguous candidate ranges of whole tiles for a scan of ``num_blocks`` query blocks on
    ``threads`` workers: the whole range when the blocks alone can keep every worker busy,
    else enough ranges (at most one per tile) that blocks x ranges covers the workers."""
    tiles = max(1, -(-num_candidates // max(tile_rows, 1)))
    ranges = min(-(-threads // max(num_blocks, 1)), tiles) if num_blocks < threads else 1
    per_range = -(-tiles // max(ranges, 1)) * tile_rows
    return [(c0, min(c0 + per_range, num_candidates)) for c0 in range(0, max(num_candidates, 1), per_range)]


def windows(indices: np.ndarray, scores: np.ndarray, k: int, keys: np.ndarray | None):
    """Per row, the k best of several shards' windows: by score, ties by the smaller id,
    one candidate per key when ``keys`` is given (each shard already kept its key's best)."""
    rows = np.arange(indices.shape[0])[:, None]
    order = np.lexsort((np.where(indices >= 0, indices, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
    indices, scores = indices[rows, order], scores[rows, order]
    if keys is not None:
        valid = indices >= 0
        key = np.where(valid, keys[np.maximum(indices, 0)], 0)
        flat_row = np.broadcast_to(rows, indices.shape).ravel()
        rank = np.broadcast_to(np.arange(indices.shape[1]), indices.shape).ravel()
        by_key = np.lexsort((rank, key.ravel(), flat_row))
        sorted_rows, sorted_keys = flat_row[by_key], key.ravel()[by_key]
        first = np.ones(by_key.size, dtype=bool)
        first[1:] = (sorted_rows[1:] != sorted_rows[:-1]) | (sorted_keys[1:] != sorted_keys[:-1])
        keep = np.zeros(by_key.size, dtype=bool)
        keep[by_key] = first
        keep = keep.reshape(indices.shape) & valid
        order = np.argsort(~keep, axis=1, kind="stable")
        indices = np.where(np.take_along_axis(keep, order, 1), indices[rows, order], -1)
        scores = np.where(indices >= 0, scores[rows, order], -np.inf).astype(np.float32)
    return np.ascontiguousarray(indices[:, :k]), np.ascontiguousarray(scores[:, :k])


def topk(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int, keys: np.ndarray | None):
    """(indices, scores, tallies) of several candidate ranges (global ids, -1/-inf padded)
    merged into one top-k; tallies add up."""
    if len(parts) == 1:
        return parts[0]
    indices = np.concatenate([part[0] for part in parts], axis=1)
    scores = np.concatenate([part[1] for part in parts], axis=1)
    merged_indices, merged_scores = windows(indices, scores, k, keys)
    return merged_indices, merged_scores, sum(part[2] for part in parts)


def violations(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]):
    """(count, hinge_sum, best_score, best_id) of candidate ranges given in candidate order,
    merged: counts and sums add; a strictly better score wins, an equal one keeps the
    earlier (smaller) index, as in one pass."""
    count, hinge_sum, best_scores, best_ids = (np.array(value, copy=True) for value in parts[0])
    for part_count, part_hinge, part_best, part_ids in parts[1:]:
        count += part_count
        hinge_sum += part_hinge
        better = part_best > best_scores
        best_scores = np.where(better, part_best, best_scores)
        best_ids = np.where(better, part_ids, best_ids)
    return count, hinge_sum, best_scores, best_ids
