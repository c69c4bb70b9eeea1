"""Statistics over particle populations: representativeness of sub-volumes (Fig. 12 of the seed paper)."""

from ._representativeness import (
    interval_statistics,
    piece_grid,
    piece_size_counts,
    representativeness,
)

__all__ = ["interval_statistics", "piece_grid", "piece_size_counts", "representativeness"]
