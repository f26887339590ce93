"""Training tables from mined negatives: pairs, triplets, n-tuples, leak-free splits.

Column names follow sentence-transformers' formats so the tables load straight
into its trainers. Needs pyarrow (``pip install hardmine[pairs]``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import _validation as v

FORMATS = ("labeled-pair", "triplet", "n-tuple")


def _pyarrow():
    try:
        import pyarrow
    except ImportError as error:  # an extra, never a hard dependency
        raise ImportError("hardmine.pairs needs pyarrow: pip install 'hardmine[pairs]'") from error
    return pyarrow


def _allocate(quota: np.ndarray) -> np.ndarray:
    """Integers with the exact rounded total whose prefix sums track quota's:
    each entry is within one of its quota."""
    bounds = np.floor(np.concatenate([[0.0], np.cumsum(quota)]) + 0.5).astype(np.int64)
    return np.diff(bounds)


def _names(values: np.ndarray, mapping: Any, name: str) -> Any:
    if mapping is None:
        return values
    if isinstance(mapping, Mapping):
        try:
            return [mapping[int(i)] for i in values]
        except KeyError as error:
            raise ValueError(f"{name} has no entry for id {error.args[0]}") from None
    table = np.asarray(mapping, dtype=object) if not isinstance(mapping, np.ndarray) else mapping
    if values.size and values.max() >= len(table):
        raise ValueError(f"{name} has {len(table)} entries but id {int(values.max())} is used")
    return list(table[values])


def build(
    negatives: Any,
    positives: Any,
    *,
    ratio: float = 1.0,
    format: str = "labeled-pair",
    scores: bool = False,
    anchor_names: Sequence | Mapping | None = None,
    candidate_names: Sequence | Mapping | None = None,
):
    """An Arrow table of training examples from :func:`hardmine.mine`'s result.

    Parameters
    ----------
    negatives : hardmine.Negatives
        Mined negatives, best first per query.
    positives : array_like
        Positive candidate ids per query in any form :func:`hardmine.topk` takes
        for ``exclude`` (``(Q,)``, ``(Q, m)``, CSR tuple, list of lists).
    ratio : float
        Negatives per positive (``1.0``: the 1:1 balance). The total is exactly
        ``round(ratio * positives)``, spread over queries within one of their
        share; the best-ranked negatives are used first. Not used by ``n-tuple``.
    format : {"labeled-pair", "triplet", "n-tuple"}
        ``labeled-pair``: (anchor, candidate, label 1/0); ``triplet``: (anchor,
        positive, negative), positives taken in turn; ``n-tuple``: (anchor,
        positive, negative_1..negative_n), one row per (anchor, positive) with all
        n mined negatives (queries with fewer valid negatives are left out).
    scores : bool
        Add score columns: the mined negative scores, and for positives the
        query's hardest positive score (the only one mining computes).
    anchor_names, candidate_names : sequence or mapping, optional
        id -> text/path; the columns then hold those values instead of ids.

    Notes
    -----
    Every table also has a ``group`` column (the anchor's query row) for :func:`split`.

    Examples
    --------
    >>> import numpy as np, hardmine
    >>> q = np.eye(2, dtype=np.float32)
    >>> c = np.array([[1, 0], [0, 1], [0.7, 0.7], [0.9, 0.1]], dtype=np.float32)
    >>> neg = hardmine.mine(q, c, positives=np.array([0, 1]), num_negatives=2)
    >>> build(neg, np.array([0, 1])).to_pydict()
    {'anchor': [0, 0, 1, 1], 'candidate': [0, 3, 1, 2], 'label': [1, 0, 1, 0], 'group': [0, 0, 1, 1]}
    """
    pa = _pyarrow()
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    ratio = v.real(ratio, "ratio")
    if ratio < 0:
        raise ValueError(f"ratio must be >= 0; got {ratio}")
    if format == "n-tuple" and ratio != 1.0:
        raise ValueError("ratio does not apply to format='n-tuple' (each row has all mined negatives)")
    neg_indices = np.asarray(negatives.indices)
    neg_scores = np.asarray(negatives.scores)
    positive_scores = np.asarray(negatives.positive_scores)
    num_queries = neg_indices.shape[0]
    indptr, pos_ids = v.exclusion(positives, num_queries, np.iinfo(np.int64).max, name="positives")
    pos_counts = np.diff(indptr)
    valid_counts = (neg_indices >= 0).sum(axis=1)
    columns: dict[str, Any] = {}

    if format == "n-tuple":
        width = neg_indices.shape[1]
        rows = np.repeat(np.arange(num_queries), pos_counts)
        keep = valid_counts[rows] == width
        rows, chosen_pos = rows[keep], pos_ids[keep]
        columns["anchor"] = _names(rows, anchor_names, "anchor_names")
        columns["positive"] = _names(chosen_pos, candidate_names, "candidate_names")
        for n in range(width):
            columns[f"negative_{n + 1}"] = _names(neg_indices[rows, n], candidate_names, "candidate_names")
        if scores:
            columns["positive_score"] = positive_scores[rows]
            for n in range(width):
                columns[f"negative_{n + 1}_score"] = neg_scores[rows, n]
        columns["group"] = rows
        return pa.table(columns)

    wanted = _allocate(ratio * pos_counts)
    short = wanted > valid_counts
    if short.any():
        query = int(np.argmax(short))
        raise ValueError(
            f"ratio={ratio} needs {int(wanted[query])} negatives for query {query} but only "
            f"{int(valid_counts[query])} were mined; mine more (num_negatives) or lower the ratio"
        )
    neg_rows = np.repeat(np.arange(num_queries), wanted)
    neg_rank = np.arange(neg_rows.size) - np.repeat(np.cumsum(wanted) - wanted, wanted)
    chosen = neg_indices[neg_rows, neg_rank]
    chosen_scores = neg_scores[neg_rows, neg_rank]
    if format == "triplet":
        # The i-th negative of a query goes with its positives in turn.
        offset = indptr[neg_rows] + neg_rank % np.maximum(pos_counts[neg_rows], 1)
        columns["anchor"] = _names(neg_rows, anchor_names, "anchor_names")
        columns["positive"] = _names(pos_ids[offset], candidate_names, "candidate_names")
        columns["negative"] = _names(chosen, candidate_names, "candidate_names")
        if scores:
            columns["positive_score"] = positive_scores[neg_rows]
            columns["negative_score"] = chosen_scores
        columns["group"] = neg_rows
        return pa.table(columns)

    # labeled-pair: each query's positives, then its negatives
    pos_rows = np.repeat(np.arange(num_queries), pos_counts)
    anchors = np.concatenate([pos_rows, neg_rows])
    candidates = np.concatenate([pos_ids, chosen])
    labels = np.concatenate([np.ones(pos_ids.size, np.int64), np.zeros(chosen.size, np.int64)])
    order = np.argsort(anchors, kind="stable")
    columns["anchor"] = _names(anchors[order], anchor_names, "anchor_names")
    columns["candidate"] = _names(candidates[order], candidate_names, "candidate_names")
    columns["label"] = labels[order]
    if scores:
        columns["score"] = np.concatenate([positive_scores[pos_rows], chosen_scores])[order]
    columns["group"] = anchors[order]
    return pa.table(columns)


def split(table, fractions: Mapping[str, float] | None = None, *, by: str = "group", seed: int = 0) -> dict:
    """Group-aware train/val/test split: no group (image) crosses splits.

    Groups are shuffled with ``seed`` and dealt out in order, so each split's row
    count is within one group's size of ``fraction * rows``.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"group": [0, 0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]})
    >>> parts = split(t, {"train": 0.5, "test": 0.5}, seed=1)
    >>> sorted(parts), sum(p.num_rows for p in parts.values())
    (['test', 'train'], 12)
    """
    fractions = dict(fractions or {"train": 0.7, "val": 0.1, "test": 0.2})
    if not fractions or any(f < 0 for f in fractions.values()) or not np.isclose(sum(fractions.values()), 1.0):
        raise ValueError(f"fractions must be non-negative and sum to 1; got {fractions}")
    if by not in table.column_names:
        raise ValueError(f"table has no column {by!r} to split by (columns: {table.column_names})")
    groups = np.asarray(table.column(by).to_numpy(zero_copy_only=False))
    distinct, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(distinct.size)
    ends = np.cumsum(sizes[order])
    middles = ends - sizes[order] / 2.0
    edges = np.cumsum(list(fractions.values())) * groups.size
    assignment = np.empty(distinct.size, dtype=np.int64)
    assignment[order] = np.minimum(np.searchsorted(edges, middles, side="right"), len(fractions) - 1)
    row_split = assignment[inverse]
    return {name: table.filter(row_split == s) for s, name in enumerate(fractions)}


def write(table, path: str | os.PathLike) -> None:
    """Writes ``.parquet`` or ``.jsonl`` atomically (a temp file renamed into place)."""
    _pyarrow()
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".parquet", ".jsonl"):
        raise ValueError(f"path must end in .parquet or .jsonl; got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(prefix=".hardmine-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(handle, "wb") as out:
            if suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, out)
            else:
                for row in table.to_pylist():
                    out.write(json.dumps(row, default=_json_value).encode() + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read(path: str | os.PathLike):
    """Reads a table written by :func:`write`."""
    pa = _pyarrow()
    path = os.fspath(path)
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if path.lower().endswith(".jsonl"):
        with open(path, encoding="utf-8") as source:
            return pa.Table.from_pylist([json.loads(line) for line in source if line.strip()])
    raise ValueError(f"path must end in .parquet or .jsonl; got {path!r}")
