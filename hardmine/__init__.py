"""hardmine: exact, fast hard-negative mining for retrieval training data."""

from .api import (
    SIMILARITY_MAX_ELEMENTS,
    MiningStats,
    Negatives,
    TopK,
    Violations,
    info,
    mine,
    similarity,
    topk,
    violations,
)

__all__ = [
    "SIMILARITY_MAX_ELEMENTS",
    "MiningStats",
    "Negatives",
    "TopK",
    "Violations",
    "info",
    "mine",
    "similarity",
    "topk",
    "violations",
]
