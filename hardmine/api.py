"""The public functions in one place: the engine (:func:`topk`, :func:`similarity`,
:func:`violations`), mining (:func:`mine`) and :func:`info`. Each lives in its own module
(``engine``, ``mining``, ``info``); this facade is what ``import hardmine`` re-exports."""

from .engine import SIMILARITY_MAX_ELEMENTS, TopK, Violations, similarity, topk, violations
from .info import format_info, info
from .mining import MiningStats, Negatives, mine

__all__ = [
    "SIMILARITY_MAX_ELEMENTS",
    "MiningStats",
    "Negatives",
    "TopK",
    "Violations",
    "format_info",
    "info",
    "mine",
    "similarity",
    "topk",
    "violations",
]
