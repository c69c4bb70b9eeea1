"""Label transfer: a registered 2D mineral map becomes sparse 3D training labels of the CT volume.

Each section pixel (r, c) lies at ``x = origin + c u + r v`` (voxel coordinates, pose.json
contract) and votes for its nearest voxel ``round(x)``, but only where that voxel's centre lies
within half a voxel of the plane, ``|n . (round(x) - origin)| <= 1/2`` (n the unit normal), so the
labelled voxels form a one-voxel-thick sheet. Unclassified pixels (0) and pixels within
`boundary_margin_px` of a pixel of another class (2D Euclidean distance transform; partial-volume
voxels at grain boundaries would teach the classifier mixed grey values) abstain. A voxel is
labelled with the majority class of its votes when that class holds more than `min_fraction` of
all pixels that fall in the voxel (abstentions included) and at least `min_votes` votes; ties are
dropped. Matrix pixels (``MATRIX_LABEL``) are kept as matrix labels. The votes are counted with one
``np.unique`` over (voxel key, class) pairs - no loop over pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .._shared import MATRIX_LABEL, UNLABELLED, InputError, PlanePose


@dataclass(frozen=True)
class SparseLabels:
    """Sparse 3D labels (coordinate list) on a volume grid.

    Attributes
    ----------
    indices : (n, 3) ndarray of int64
        Voxel indices (z, y, x) of the labelled voxels, sorted by flat index, unique.
    values : (n,) ndarray of uint8
        Label per voxel: a phase id 1..254 or ``MATRIX_LABEL`` (255).
    shape : (3,) tuple of int
        The volume shape (z, y, x).
    votes : (n,) ndarray of int64
        Pixels that voted for the label.
    agreement : (n,) ndarray of float32
        Votes for the label over all pixels that fell in the voxel.
    info : dict
        How many pixels voted, abstained or fell outside.
    """

    indices: np.ndarray
    values: np.ndarray
    shape: tuple[int, int, int]
    votes: np.ndarray
    agreement: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.size)

    @property
    def flat_indices(self) -> np.ndarray:
        """Flat (C-order) voxel indices, (n,) int64."""
        return np.ravel_multi_index(tuple(self.indices.T), self.shape).astype(np.int64)

    @property
    def counts(self) -> dict[int, int]:
        """Labelled voxels per label value."""
        values, counts = np.unique(self.values, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def to_dense(self, shape: Sequence[int] | None = None, *, out: Any = None) -> Any:
        """The labels as a volume (0 = unlabelled).

        Parameters
        ----------
        shape : (3,) sequence of int, optional
            Volume shape; default `shape`.
        out : array-like, optional
            A (z, y, x) uint8 array to write into (numpy, or a Zarr array for volumes too large
            for memory: written by coordinate selection); returned.

        Returns
        -------
        (P, M, N) ndarray of uint8, or `out`
        """
        shape = tuple(self.shape if shape is None else (int(s) for s in shape))
        if len(self) and np.any(self.indices.max(axis=0) >= np.asarray(shape)):
            raise InputError(f"labels reach beyond the volume shape {shape}", source="shape")
        if out is None:
            out = np.zeros(shape, dtype=np.uint8)
            out[tuple(self.indices.T)] = self.values
            return out
        if tuple(out.shape) != shape:
            raise InputError(f"out has shape {tuple(out.shape)}, expected {shape}", source="out")
        if hasattr(out, "set_coordinate_selection"):
            out.set_coordinate_selection(tuple(self.indices.T), self.values)
        else:
            out[tuple(self.indices.T)] = self.values
        return out

    def report(self, library: Any = None):
        """Labelled voxels per class as a DataFrame.

        Columns ``label``, ``phase`` (library name, ``matrix`` for 255), ``voxels``,
        ``fraction`` (of all labelled voxels) and ``mean_agreement``.
        """
        import pandas as pd

        values = self.values.astype(np.int64)
        counts = np.bincount(values, minlength=256)
        agreement = np.bincount(values, weights=self.agreement, minlength=256)
        present = np.flatnonzero(counts)
        total = max(int(counts.sum()), 1)

        def name(label: int) -> str:
            if label == MATRIX_LABEL:
                return "matrix"
            if library is not None and label in library:
                return library.name_of(label)
            return f"phase {label}"

        return pd.DataFrame(
            {
                "label": present,
                "phase": [name(int(i)) for i in present],
                "voxels": counts[present],
                "fraction": counts[present] / total,
                "mean_agreement": agreement[present] / counts[present],
            }
        )


def _check_map(mineral_map: Any) -> np.ndarray:
    image = np.asarray(mineral_map)
    if image.ndim != 2:
        raise InputError(
            f"mineral map has shape {image.shape}; expected a 2D section", source="mineral_map"
        )
    if image.dtype.kind not in "biu":
        raise InputError(
            f"mineral map has type {image.dtype}; expected integer phase ids", source="mineral_map"
        )
    if image.size and (image.min() < 0 or image.max() > 255):
        raise InputError("mineral map holds values outside 0..255", source="mineral_map")
    return image.astype(np.uint8, copy=False)


def boundary_mask(labels: np.ndarray, margin_px: float) -> np.ndarray:
    """Pixels whose centre lies within `margin_px` of a pixel edge shared with another class.

    Per class ``c``, the Euclidean distance transform of ``labels == c`` gives each pixel's
    distance ``d`` to the nearest pixel of another class; the interface lies half a pixel before
    it, so a pixel is near a boundary when ``d - 1/2 < margin_px``. The unclassified class (0)
    counts as another class (its pixels are usually the mixed ones at a boundary).

    Parameters
    ----------
    labels : (rows, columns) ndarray of int
    margin_px : float
        Margin in pixels; 0 keeps every pixel.

    Returns
    -------
    (rows, columns) ndarray of bool
    """
    near = np.zeros(labels.shape, dtype=bool)
    if margin_px <= 0:
        return near
    for value in np.unique(labels):  # a handful of classes, each one vectorised
        inside = labels == value
        if inside.all():
            continue
        distance = ndimage.distance_transform_edt(inside)
        near |= inside & (distance - 0.5 < margin_px)
    return near


def transfer_labels(
    mineral_map: Any,
    pose: PlanePose,
    volume_shape: Sequence[int],
    *,
    boundary_margin_px: float | None = None,
    max_plane_distance: float = 0.5,
    min_votes: int = 1,
    min_fraction: float = 0.5,
    rows_per_block: int = 512,
) -> SparseLabels:
    """Turn a registered mineral map into sparse 3D labels of the CT voxels on its plane.

    Parameters
    ----------
    mineral_map : (rows, columns) ndarray of int
        Phase ids per section pixel: 0 unclassified, 1..254 minerals, 255 matrix.
    pose : PlanePose
        Where the section lies in the volume (voxel coordinates, z, y, x).
    volume_shape : (3,) sequence of int
        Shape (z, y, x) of the CT volume.
    boundary_margin_px : float, optional
        Pixels within this distance (section pixels) of another class abstain. Default one CT
        voxel, ``1 / |u|`` pixels.
    max_plane_distance : float
        Largest distance (voxels) between a voxel centre and the plane for the voxel to be
        labelled (1/2: a one-voxel-thick sheet).
    min_votes : int
        Fewest pixels that must vote for a voxel's label.
    min_fraction : float
        The label's votes must exceed this share of all pixels falling in the voxel.
    rows_per_block : int
        Section rows handled at a time (bounds memory for very large sections).

    Returns
    -------
    SparseLabels

    Raises
    ------
    InputError
        If the map is not 2D or not integer, the volume shape is not 3 positive integers, or the
        section does not reach into the volume at all.

    Notes
    -----
    See the module notes. The plane distance is ``|n . (k - o)|`` for voxel ``k``, plane origin
    ``o`` and unit normal ``n = u x v / |u x v|``.

    Examples
    --------
    >>> import numpy as np
    >>> from corrtomo._shared import PlanePose
    >>> section = np.ones((8, 8), dtype=np.uint8)
    >>> pose = PlanePose(origin=[2, 0, 0], u=[0, 0, 0.5], v=[0, 0.5, 0])
    >>> labels = transfer_labels(section, pose, (4, 4, 4))
    >>> labels.counts
    {1: 16}
    """
    image = _check_map(mineral_map)
    shape = tuple(int(s) for s in np.ravel(volume_shape))
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"volume shape must be 3 positive integers, got {volume_shape!r}", source="volume_shape")
    if boundary_margin_px is None:
        boundary_margin_px = 1.0 / max(float(np.linalg.norm(pose.u)), 1e-12)
    if boundary_margin_px < 0 or min_votes < 1 or not 0 <= min_fraction < 1:
        raise InputError(
            "boundary_margin_px must be >= 0, min_votes >= 1 and min_fraction in [0, 1)",
            source="transfer_labels",
        )
    valid = (image != UNLABELLED) & ~boundary_mask(image, float(boundary_margin_px))
    normal = pose.normal
    keys_all, keys_vote, labels_vote = [], [], []
    n_in = 0
    for start in range(0, image.shape[0], int(rows_per_block)):
        stop = min(start + int(rows_per_block), image.shape[0])
        r = np.arange(start, stop, dtype=np.float64)[:, None, None]
        c = np.arange(image.shape[1], dtype=np.float64)[None, :, None]
        points = pose.origin + c * pose.u + r * pose.v  # (rows, columns, 3)
        voxel = np.rint(points).astype(np.int64).reshape(-1, 3)
        inside = np.all((voxel >= 0) & (voxel < np.asarray(shape)), axis=1)
        near_plane = np.abs((voxel - pose.origin) @ normal) <= max_plane_distance + 1e-9
        use = inside & near_plane
        n_in += int(inside.sum())
        key = np.ravel_multi_index(tuple(voxel[use].T), shape)
        keys_all.append(key)
        vote = valid[start:stop].reshape(-1)[use]
        keys_vote.append(key[vote])
        labels_vote.append(image[start:stop].reshape(-1)[use][vote])
    if n_in == 0:
        raise InputError("the section does not reach into the volume at this pose", source="pose")
    keys_all = np.concatenate(keys_all)
    keys_vote = np.concatenate(keys_vote)
    labels_vote = np.concatenate(labels_vote).astype(np.int64)

    # votes per (voxel, class), then the winner per voxel
    pair, votes = np.unique(keys_vote * 256 + labels_vote, return_counts=True)
    voxel_key, label = pair // 256, pair % 256
    order = np.lexsort((-votes, voxel_key))  # by voxel, most votes first
    voxel_key, label, votes = voxel_key[order], label[order], votes[order]
    first = np.r_[True, voxel_key[1:] != voxel_key[:-1]]
    second_votes = np.zeros(first.size, dtype=np.int64)
    runner_up = np.flatnonzero(~first & np.r_[False, first[:-1]])  # second entry of a voxel
    second_votes[runner_up - 1] = votes[runner_up]
    win_key, win_label, win_votes = voxel_key[first], label[first], votes[first]
    win_second = second_votes[first]
    all_keys, all_counts = np.unique(keys_all, return_counts=True)
    total = all_counts[np.searchsorted(all_keys, win_key)]
    agreement = win_votes / total
    keep = (win_votes >= min_votes) & (win_votes > win_second) & (agreement > min_fraction)
    indices = np.column_stack(np.unravel_index(win_key[keep], shape)).astype(np.int64)
    info = {
        "pixels_in_volume": n_in,
        "pixels_near_plane": int(keys_all.size),
        "pixels_voting": int(keys_vote.size),
        "voxels_touched": int(all_keys.size),
        "voxels_labelled": int(keep.sum()),
        "voxels_tied": int((win_votes == win_second).sum()),
        "boundary_margin_px": float(boundary_margin_px),
    }
    return SparseLabels(
        indices=indices.reshape(-1, 3),
        values=win_label[keep].astype(np.uint8),
        shape=shape,
        votes=win_votes[keep].astype(np.int64),
        agreement=agreement[keep].astype(np.float32),
        info=info,
    )


def merge_sparse_labels(labels: Sequence[SparseLabels]) -> SparseLabels:
    """Merge the sparse labels of several sections of one volume.

    A voxel labelled by several sections keeps its label when they agree (votes summed,
    agreement the vote-weighted mean) and is dropped when they conflict.

    Parameters
    ----------
    labels : sequence of SparseLabels
        All on the same volume shape.

    Returns
    -------
    SparseLabels
        ``info["conflicts"]`` counts the dropped voxels.

    Raises
    ------
    InputError
        If the sequence is empty or the shapes differ.
    """
    labels = list(labels)
    if not labels:
        raise InputError("nothing to merge", source="labels")
    shape = labels[0].shape
    for item in labels[1:]:
        if tuple(item.shape) != tuple(shape):
            raise InputError(f"cannot merge labels of volumes {shape} and {item.shape}", source="labels")
    keys = np.concatenate([item.flat_indices for item in labels])
    values = np.concatenate([item.values for item in labels]).astype(np.int64)
    votes = np.concatenate([item.votes for item in labels])
    weighted = np.concatenate([item.agreement * item.votes for item in labels])
    unique, inverse = np.unique(keys, return_inverse=True)
    low = np.full(unique.size, 256, dtype=np.int64)
    high = np.full(unique.size, -1, dtype=np.int64)
    np.minimum.at(low, inverse, values)
    np.maximum.at(high, inverse, values)
    agree = low == high
    vote_sum = np.bincount(inverse, weights=votes, minlength=unique.size)
    weight_sum = np.bincount(inverse, weights=weighted, minlength=unique.size)
    keep = agree
    indices = np.column_stack(np.unravel_index(unique[keep], shape)).astype(np.int64)
    return SparseLabels(
        indices=indices.reshape(-1, 3),
        values=low[keep].astype(np.uint8),
        shape=tuple(shape),
        votes=vote_sum[keep].astype(np.int64),
        agreement=(weight_sum[keep] / np.maximum(vote_sum[keep], 1)).astype(np.float32),
        info={"sections": len(labels), "conflicts": int((~agree).sum()), "voxels_labelled": int(keep.sum())},
    )
