"""Mining hard negatives (SPEC 5.2): :func:`mine` and what it returns. The pipeline's steps
live in :mod:`~hardmine.mining.pipeline`, its options, filters, strategies and statistics in
the modules beside it."""

from .options import MiningOptions, mining_options
from .pipeline import Negatives, mine
from .stats import MiningStats, Shortlists

__all__ = ["MiningOptions", "MiningStats", "Negatives", "Shortlists", "mine", "mining_options"]
