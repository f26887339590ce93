"""What :func:`hardmine.mine` saw: per-filter removal counts (tallied inside the scans),
positives, key exclusions and mean scores."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Shortlists:
    """How much exact re-scoring ``precision="int8"`` needed: candidates re-scored per query
    (over the queries that stayed on the int8 path) and the queries that fell back to fp32
    (shortlist past its cap, a zero row, a NaN bound; docs/precision.md)."""

    mean: float
    p99: float
    max: int
    fell_back: int

    @classmethod
    def of(cls, rescored: np.ndarray) -> Shortlists:
        kept = rescored[rescored >= 0]
        if not kept.size:
            return cls(float("nan"), float("nan"), 0, int(rescored.size))
        return cls(float(kept.mean()), float(np.percentile(kept, 99)), int(kept.max()), int(rescored.size - kept.size))


@dataclasses.dataclass(frozen=True)
class MiningStats:
    """What :func:`mine` saw. Pair counts are over (query, candidate) pairs.

    ``removed[name]`` counts the non-positive candidates scoring beyond that
    filter's bound (a candidate may fail several filters; key-excluded ones are
    included); ``key_excluded`` counts non-positive candidates sharing a key with
    one of the query's positives; ``shortlists`` says how much the int8 path re-scored
    (None when the scan ran in fp32).
    """

    num_queries: int
    num_candidates: int
    positive_pairs: int
    key_excluded: int
    removed: dict[str, int]
    mean_positive_score: float
    mean_negative_score: float
    negatives_returned: int
    shortlists: Shortlists | None = None

    def table(self) -> str:
        pairs = self.num_queries * self.num_candidates
        rows = [("queries x candidates", pairs), ("positives", self.positive_pairs)]
        if self.key_excluded:
            rows.append(("sharing a key with a positive", self.key_excluded))
        rows += [(f"beyond {name}", count) for name, count in self.removed.items()]
        rows.append(("negatives returned", self.negatives_returned))
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {count:>14,}  {100.0 * count / max(pairs, 1):6.2f}%" for name, count in rows]
        lines.append(f"mean positive score {self.mean_positive_score:.4f}, "
                     f"mean negative score {self.mean_negative_score:.4f}")
        if self.shortlists is not None:
            s = self.shortlists
            lines.append(f"int8: re-scored per query mean {s.mean:.1f}, p99 {s.p99:.0f}, max {s.max:,}; "
                         f"{s.fell_back:,} queries on fp32")
        return "\n".join(lines)


def mining_stats(problem, members, pair_scores, keys, key_csr, filters, tallies, positive_scores, scores,
                 num_valid, rescored=None):
    removed = {}
    if members is not None:
        rows = np.repeat(np.arange(problem.queries.rows), np.diff(members[0]))
        pair = pair_scores.astype(np.float32)
    for f, (name, bound, below) in enumerate(filters):
        total = int(tallies[:, f].sum())
        if members is not None:  # the tallies saw every candidate; positives are not negatives
            total -= int(((pair < bound[rows]) if below else (pair > bound[rows])).sum())
        removed[name] = total
    positive_pairs = 0 if members is None else int(members[1].size)
    key_excluded = 0
    if keys is not None and members is not None:
        distinct, per_key = np.unique(keys, return_counts=True)
        with_key = per_key[np.searchsorted(distinct, key_csr[1])].sum()
        key_excluded = int(with_key) - positive_pairs
    valid = scores[np.asarray(scores) > -np.inf]
    return MiningStats(
        num_queries=problem.queries.rows,
        num_candidates=problem.candidates.rows,
        positive_pairs=positive_pairs,
        key_excluded=key_excluded,
        removed=removed,
        mean_positive_score=float(np.nanmean(positive_scores)) if np.isfinite(positive_scores).any() else float("nan"),
        mean_negative_score=float(valid.mean()) if valid.size else float("nan"),
        negatives_returned=int(num_valid.sum()),
        shortlists=None if rescored is None else Shortlists.of(rescored),
    )


def cluster_stats(num_queries: int, num_candidates: int, positive_pairs: int, positive_scores: np.ndarray,
                  scores: np.ndarray, num_valid: np.ndarray) -> MiningStats:
    """Statistics of the ``cluster`` strategy: no score filters, so nothing is tallied."""
    valid_scores = scores[scores > -np.inf]
    return MiningStats(
        num_queries=num_queries, num_candidates=num_candidates, positive_pairs=positive_pairs,
        key_excluded=0, removed={},
        mean_positive_score=float(np.nanmean(positive_scores)) if np.isfinite(positive_scores).any() else float("nan"),
        mean_negative_score=float(valid_scores.mean()) if valid_scores.size else float("nan"),
        negatives_returned=int(num_valid.sum()),
    )
