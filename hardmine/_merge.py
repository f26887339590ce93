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


def drawn_columns(priorities: np.ndarray, count: int) -> np.ndarray:
    """Per row, the columns of the ``count`` highest priorities (equal ones: the earlier
    column), in column order: a draw from a window given in window order keeps that order."""
    return np.sort(np.argsort(-priorities, axis=1, kind="stable")[:, :count], axis=1)


def samples(parts: list[tuple[np.ndarray, ...]], count: int, keys: np.ndarray | None):
    """(indices, scores, priorities, tallies, top indices, top scores) of disjoint candidate
    ranges (global ids, -1 / -inf padded) merged into the draw over their union: per key the
    best candidate (by score, then the smaller id) with the key's largest priority, then the
    ``count`` highest priorities (equal ones in window order), by score descending, ties by
    the smaller id; the top ranks merged as :func:`topk` merges them."""
    if len(parts) == 1:
        return parts[0]
    top_width = parts[0][4].shape[1]
    top = windows(np.concatenate([part[4] for part in parts], axis=1),
                  np.concatenate([part[5] for part in parts], axis=1), top_width, keys)
    indices = np.concatenate([part[0] for part in parts], axis=1)
    scores = np.concatenate([part[1] for part in parts], axis=1)
    priorities = np.concatenate([part[2] for part in parts], axis=1)
    tallies = sum(part[3] for part in parts)
    if keys is not None:
        indices, scores, priorities = _best_per_key(indices, scores, priorities, keys)
    valid = indices >= 0
    rows = np.arange(indices.shape[0])[:, None]
    by_window = np.lexsort((np.where(valid, indices, np.iinfo(np.int64).max), -scores.astype(np.float64)), axis=1)
    indices, scores, priorities = indices[rows, by_window], scores[rows, by_window], priorities[rows, by_window]
    kept = drawn_columns(priorities, count)
    return (np.ascontiguousarray(indices[rows, kept]), np.ascontiguousarray(scores[rows, kept]),
            np.ascontiguousarray(priorities[rows, kept]), tallies, *top)


def _in_rows(values: np.ndarray, reference: np.ndarray, reference_valid: np.ndarray) -> np.ndarray:
    """(Q, w) True where ``values[q, j]`` is among the valid entries of ``reference[q]``
    (any int64 values: they are sorted with their row, never combined into one number)."""
    num_rows = values.shape[0]
    ref_rows = np.broadcast_to(np.arange(num_rows)[:, None], reference.shape)[reference_valid]
    val_rows = np.broadcast_to(np.arange(num_rows)[:, None], values.shape).ravel()
    rows = np.concatenate([ref_rows, val_rows])
    items = np.concatenate([reference[reference_valid], values.ravel()])
    is_reference = np.concatenate([np.ones(ref_rows.size, bool), np.zeros(val_rows.size, bool)])
    if not items.size:
        return np.zeros(values.shape, dtype=bool)
    order = np.lexsort((~is_reference, items, rows))  # per (row, value): reference entries first
    sorted_rows, sorted_items = rows[order], items[order]
    starts = np.r_[True, (sorted_rows[1:] != sorted_rows[:-1]) | (sorted_items[1:] != sorted_items[:-1])]
    group_has_reference = is_reference[order][np.flatnonzero(starts)]
    found = np.empty(order.size, dtype=bool)
    found[order] = group_has_reference[np.cumsum(starts) - 1]
    return found[ref_rows.size :].reshape(values.shape)


def without_top(indices: np.ndarray, scores: np.ndarray, priorities: np.ndarray, top: np.ndarray, count: int,
                keys: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The draw of ``count`` from ranks ``a`` on, out of a draw of ``count + a`` over every
    rank and the top ``a`` (``top``, -1 padded): the entries of the top ``a`` (with ``keys``:
    of their keys) are dropped and the ``count`` highest priorities of the rest kept, in
    window order, -1 / -inf padded at the end."""
    if top.shape[1] == 0:
        return indices[:, :count], scores[:, :count]
    ids = indices if keys is None else keys[np.maximum(indices, 0)]
    top_ids = top if keys is None else keys[np.maximum(top, 0)]
    valid = (indices >= 0) & ~_in_rows(ids, top_ids, top >= 0)
    kept = drawn_columns(np.where(valid, priorities, -np.inf), count)
    picked = np.take_along_axis(valid, kept, axis=1)
    order = np.argsort(~picked, axis=1, kind="stable")  # kept draws first, still in window order
    kept = np.take_along_axis(kept, order, axis=1)
    picked = np.take_along_axis(picked, order, axis=1)
    out_indices = np.where(picked, np.take_along_axis(indices, kept, axis=1), -1)
    out_scores = np.where(picked, np.take_along_axis(scores, kept, axis=1), np.float32(-np.inf)).astype(np.float32)
    return out_indices, out_scores


def _best_per_key(indices: np.ndarray, scores: np.ndarray, priorities: np.ndarray, keys: np.ndarray):
    """Per row, one entry per key: its best candidate (by score, then the smaller id) with the
    key's largest priority; -1 / -inf padded."""
    valid = indices >= 0
    row = np.broadcast_to(np.arange(indices.shape[0])[:, None], indices.shape)[valid]
    ids, entry_scores, entry_priorities = indices[valid], scores[valid], priorities[valid]
    key = keys[ids]
    order = np.lexsort((ids, -entry_scores.astype(np.float64), key, row))
    row, key, ids = row[order], key[order], ids[order]
    entry_scores, entry_priorities = entry_scores[order], entry_priorities[order]
    first = np.flatnonzero(np.r_[True, (row[1:] != row[:-1]) | (key[1:] != key[:-1])]) if row.size else row
    best = np.maximum.reduceat(entry_priorities, first) if row.size else entry_priorities
    row, ids, entry_scores = row[first], ids[first], entry_scores[first]
    column = np.arange(row.size) - np.searchsorted(row, row, side="left")
    out_indices = np.full(indices.shape, -1, dtype=np.int64)
    out_scores = np.full(indices.shape, -np.inf, dtype=np.float32)
    out_priorities = np.full(indices.shape, -np.inf)
    out_indices[row, column], out_scores[row, column], out_priorities[row, column] = ids, entry_scores, best
    return out_indices, out_scores, out_priorities


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


def runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """The (start, stop) of each run of consecutive values in the sorted ``rows``."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(part[0]), int(part[-1]) + 1) for part in np.split(rows, breaks)]
