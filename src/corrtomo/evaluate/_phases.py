"""Voxel-wise accuracy of a phase (semantic) segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._shared import InputError

__all__ = ["confusion_matrix", "phase_iou"]


def _pair(truth: np.ndarray, predicted: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise InputError(f"shape {predicted.shape} differs from the truth's {truth.shape}", source="predicted")
    for name, array in (("truth", truth), ("predicted", predicted)):
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise InputError(f"labels must be integers, got {array.dtype}", source=name)
        if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
            raise InputError("labels must be >= 0", source=name)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != truth.shape:
            raise InputError(f"shape {mask.shape} differs from the truth's {truth.shape}", source="mask")
        return truth[mask].astype(np.int64), predicted[mask].astype(np.int64)
    return truth.ravel().astype(np.int64), predicted.ravel().astype(np.int64)


def _counts(truth: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense joint histogram ``counts[t, p]`` of two small-integer label arrays, and its labels."""
    top = int(max(truth.max(initial=0), predicted.max(initial=0))) + 1
    joint = np.bincount(truth * top + predicted, minlength=top * top).reshape(top, top)
    return joint, np.arange(top)


def phase_iou(
    truth: np.ndarray, predicted: np.ndarray, *, phase_ids: Sequence[int] | None = None,
    mask: np.ndarray | None = None,
) -> dict[int, float]:
    """Intersection over union of each phase, the paper's segmentation score.

    Parameters
    ----------
    truth, predicted : (P, M, N) int ndarray
        Phase ids per voxel (0 = matrix).
    phase_ids : sequence of int, optional
        Phases to score (default: every non-zero id present in either volume).
    mask : (P, M, N) bool ndarray, optional
        Score only these voxels (e.g. the particle foreground).

    Returns
    -------
    dict[int, float]
        :math:`\\mathrm{IoU}_i = |T_i \\cap P_i| / |T_i \\cup P_i|` for each phase :math:`i`;
        NaN when the phase is absent from both.

    Examples
    --------
    >>> t = np.array([1, 1, 2, 2]); p = np.array([1, 2, 2, 2])
    >>> {k: round(v, 3) for k, v in phase_iou(t, p).items()}
    {1: 0.5, 2: 0.667}
    """
    truth, predicted = _pair(truth, predicted, mask)
    joint, ids = _counts(truth, predicted)
    overlap = np.diag(joint).astype(np.float64)
    union = joint.sum(axis=1) + joint.sum(axis=0) - overlap
    if phase_ids is None:
        phase_ids = [int(i) for i in ids[(union > 0) & (ids > 0)]]
    result = {}
    for i in phase_ids:
        i = int(i)
        if 0 <= i < ids.size and union[i] > 0:
            result[i] = float(overlap[i] / union[i])
        else:
            result[i] = float("nan")
    return result


def confusion_matrix(
    truth: np.ndarray, predicted: np.ndarray, labels: Sequence[int] | None = None, *,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Voxel counts of each (truth, predicted) pair of phase ids.

    Parameters
    ----------
    truth, predicted : (P, M, N) int ndarray
        Phase ids per voxel.
    labels : sequence of int, optional
        Rows and columns, in order (default: every id present in either volume).
    mask : (P, M, N) bool ndarray, optional
        Count only these voxels.

    Returns
    -------
    pandas.DataFrame
        ``frame.loc[t, p]`` = number of voxels of truth ``t`` predicted as ``p``; index named
        ``truth``, columns named ``predicted``.
    """
    truth, predicted = _pair(truth, predicted, mask)
    joint, ids = _counts(truth, predicted)
    if labels is None:
        present = (joint.sum(axis=1) + joint.sum(axis=0)) > 0
        labels = [int(i) for i in ids[present]]
    labels = [int(i) for i in labels]
    padded = np.zeros((max([*labels, 0]) + 1,) * 2, dtype=np.int64)
    size = min(padded.shape[0], joint.shape[0])
    padded[:size, :size] = joint[:size, :size]
    frame = pd.DataFrame(padded[np.ix_(labels, labels)], index=labels, columns=labels)
    frame.index.name = "truth"
    frame.columns.name = "predicted"
    return frame
