"""Accuracy of segmentations against a truth: phase IoU, confusion matrix, instance matching.

The ``*_chunked`` functions take numpy, Zarr or Dask volumes and work block by block (for
volumes larger than memory), with the same results as their in-memory counterparts.
"""

from ._instances import InstanceMatch, esd_wasserstein, match_instances, match_instances_chunked
from ._phases import (
    confusion_matrix,
    confusion_matrix_chunked,
    phase_iou,
    phase_iou_chunked,
    phase_iou_from_confusion,
)

__all__ = [
    "InstanceMatch",
    "confusion_matrix",
    "confusion_matrix_chunked",
    "esd_wasserstein",
    "match_instances",
    "match_instances_chunked",
    "phase_iou",
    "phase_iou_chunked",
    "phase_iou_from_confusion",
]
