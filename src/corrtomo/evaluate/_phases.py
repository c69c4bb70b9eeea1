"""Voxel-wise accuracy of a phase (semantic) segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._shared import InputError
from ._blocks import as_array, block_slices, check_label_dtype, read_block, read_labels

__all__ = [
    "confusion_matrix", "confusion_matrix_chunked", "phase_iou", "phase_iou_chunked", "phase_iou_from_confusion",
]


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
    return _iou(joint, ids, phase_ids)


def _iou(joint: np.ndarray, ids: np.ndarray, phase_ids: Sequence[int] | None) -> dict[int, float]:
    """Per-phase IoU from a joint histogram whose rows and columns are the sorted labels `ids`."""
    overlap = np.diag(joint).astype(np.float64)
    union = joint.sum(axis=1) + joint.sum(axis=0) - overlap
    if phase_ids is None:
        phase_ids = [int(i) for i in ids[(union > 0) & (ids > 0)]]
    phase_ids = np.asarray([int(i) for i in phase_ids], dtype=np.int64)
    ratio = np.full(phase_ids.size, np.nan)
    if ids.size:
        where = np.minimum(np.searchsorted(ids, phase_ids), ids.size - 1)
        scored = (ids[where] == phase_ids) & (union[where] > 0)
        ratio[scored] = overlap[where[scored]] / union[where[scored]]
    return {int(i): float(v) for i, v in zip(phase_ids, ratio, strict=True)}


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
    return _frame(joint, ids, labels)


def _frame(joint: np.ndarray, ids: np.ndarray, labels: Sequence[int] | None) -> pd.DataFrame:
    """The confusion DataFrame of a dense joint histogram over ``ids = 0..top-1``."""
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


def _joint_chunked(truth, predicted, mask, chunks) -> np.ndarray:
    """Dense joint histogram ``counts[t, p]`` (t, p = 0..top-1) summed over blocks."""
    truth, predicted = as_array(truth), as_array(predicted)
    shape = tuple(int(n) for n in truth.shape)
    if tuple(int(n) for n in predicted.shape) != shape:
        raise InputError(f"shape {tuple(predicted.shape)} differs from the truth's {shape}", source="predicted")
    check_label_dtype(truth, "truth")
    check_label_dtype(predicted, "predicted")
    if mask is not None:
        mask = as_array(mask)
        if tuple(int(n) for n in mask.shape) != shape:
            raise InputError(f"shape {tuple(mask.shape)} differs from the truth's {shape}", source="mask")
    total = np.zeros((1, 1), dtype=np.int64)
    for slices in block_slices(shape, chunks, like=(truth, predicted)):  # a loop over blocks
        t = read_labels(truth, slices, "truth")
        p = read_labels(predicted, slices, "predicted")
        if mask is not None:
            keep = read_block(mask, slices).astype(bool)
            t, p = t[keep], p[keep]
        joint, _ = _counts(t.ravel().astype(np.int64), p.ravel().astype(np.int64))
        if joint.shape[0] > total.shape[0]:
            grown = np.zeros(joint.shape, dtype=np.int64)
            grown[: total.shape[0], : total.shape[1]] = total
            total = grown
        total[: joint.shape[0], : joint.shape[1]] += joint
    return total


def phase_iou_chunked(
    truth, predicted, *, phase_ids: Sequence[int] | None = None, mask=None, chunks=None,
) -> dict[int, float]:
    """:func:`phase_iou` of numpy, Zarr or Dask volumes, block by block.

    Parameters
    ----------
    truth, predicted : (P, M, N) array_like of int (numpy, zarr.Array, dask.array.Array)
        Phase ids per voxel (0 = matrix). Never modified.
    phase_ids : sequence of int, optional
        Phases to score (default: every non-zero id present in either volume).
    mask : (P, M, N) array_like of bool, optional
        Score only these voxels.
    chunks : int or sequence of int, optional
        Block shape; default the chunks of `truth` (else `predicted`) when Zarr or Dask, else
        the whole volume as one block.

    Returns
    -------
    dict[int, float]
        The IoU of each phase, equal to ``phase_iou(truth, predicted, ...)`` bit for bit.

    Raises
    ------
    InputError
        Shapes differ, non-integer or negative labels, or bad `chunks`.

    Notes
    -----
    Each block contributes the joint histogram of its (truth, predicted) pairs (a bincount of
    :math:`t \\cdot (id_{max} + 1) + p`); the integer histograms add exactly across blocks, so
    the result does not depend on the block shape. Memory: one block of each input and the
    :math:`(id_{max} + 1)^2` histogram.

    Examples
    --------
    >>> t = np.array([[[1, 1, 2, 2]]]); p = np.array([[[1, 2, 2, 2]]])
    >>> {k: round(v, 3) for k, v in phase_iou_chunked(t, p, chunks=(1, 1, 3)).items()}
    {1: 0.5, 2: 0.667}
    """
    joint = _joint_chunked(truth, predicted, mask, chunks)
    return _iou(joint, np.arange(joint.shape[0]), phase_ids)


def confusion_matrix_chunked(
    truth, predicted, labels: Sequence[int] | None = None, *, mask=None, chunks=None,
) -> pd.DataFrame:
    """:func:`confusion_matrix` of numpy, Zarr or Dask volumes, block by block.

    Parameters
    ----------
    truth, predicted : (P, M, N) array_like of int (numpy, zarr.Array, dask.array.Array)
        Phase ids per voxel. Never modified.
    labels : sequence of int, optional
        Rows and columns, in order (default: every id present in either volume).
    mask : (P, M, N) array_like of bool, optional
        Count only these voxels.
    chunks : int or sequence of int, optional
        Block shape (default as in :func:`phase_iou_chunked`).

    Returns
    -------
    pandas.DataFrame
        Equal to ``confusion_matrix(truth, predicted, labels, mask=mask)``; the per-phase voxel
        counts are its row (truth) and column (predicted) sums, and
        :func:`phase_iou_from_confusion` gives :func:`phase_iou` from it (one pass for both).

    Raises
    ------
    InputError
        Shapes differ, non-integer or negative labels, or bad `chunks`.
    """
    joint = _joint_chunked(truth, predicted, mask, chunks)
    return _frame(joint, np.arange(joint.shape[0]), labels)


def phase_iou_from_confusion(confusion: pd.DataFrame, *, phase_ids: Sequence[int] | None = None) -> dict[int, float]:
    """Per-phase IoU from a confusion matrix (:func:`confusion_matrix` or its chunked version).

    Parameters
    ----------
    confusion : pandas.DataFrame
        Voxel counts, rows = truth ids and columns = predicted ids, the same ids in both; it
        must hold every id present in either volume (the default `labels`), else the unions
        miss voxels.
    phase_ids : sequence of int, optional
        Phases to score (default: every non-zero id with a voxel).

    Returns
    -------
    dict[int, float]
        As :func:`phase_iou` of the volumes that gave `confusion` (bit for bit).

    Raises
    ------
    InputError
        Rows and columns list different ids, or the ids are not integers.

    Examples
    --------
    >>> t = np.array([1, 1, 2, 2]); p = np.array([1, 2, 2, 2])
    >>> {k: round(v, 3) for k, v in phase_iou_from_confusion(confusion_matrix(t, p)).items()}
    {1: 0.5, 2: 0.667}
    """
    if list(confusion.index) != list(confusion.columns):
        raise InputError("rows and columns must list the same ids in the same order", source="confusion")
    rows = np.asarray(confusion.index)
    if rows.size and not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"ids must be integers, got {rows.dtype}", source="confusion")
    rows = rows.astype(np.int64)
    order = np.argsort(rows, kind="stable")
    joint = confusion.to_numpy(dtype=np.int64)[np.ix_(order, order)]
    return _iou(joint, rows[order], phase_ids)
