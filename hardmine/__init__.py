"""hardmine: exact, fast hard-negative mining for retrieval training data."""

from .api import (
    MAX_SAMPLING_WINDOW,
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
    "MAX_SAMPLING_WINDOW",
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
