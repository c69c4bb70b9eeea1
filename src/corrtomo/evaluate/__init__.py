"""Accuracy of segmentations against a truth: phase IoU, confusion matrix, instance matching."""

from ._instances import InstanceMatch, esd_wasserstein, match_instances
from ._phases import confusion_matrix, phase_iou

__all__ = ["InstanceMatch", "confusion_matrix", "esd_wasserstein", "match_instances", "phase_iou"]
