"""Partial-volume rim correction of a phase volume.

The outermost voxel layers of a particle mix the mineral with the embedding matrix (partial
volume under the point-spread blur), so their grey value is darker than the mineral's and a voxel
classifier tends to give them a darker phase: a talc rim reads as magnesite, a calcite rim as
dolomite. That turns liberated particles into false composites, which the liberation degree
(a particle is free only when ``vf > 0.99``) punishes hard. The rim's phase is better inferred
from the particle's interior, whose grey values are clean.
"""

from __future__ import annotations

import math

import numpy as np

from .._shared import InputError, normalize_spacing


def correct_rim_phases(
    phases: np.ndarray,
    foreground: np.ndarray,
    *,
    spacing=None,
    depth_um: float | None = None,
) -> np.ndarray:
    """Give every rim voxel of the foreground the phase of the nearest interior voxel.

    Parameters
    ----------
    phases : (P, M, N) uint8 ndarray
        Phase ids (0 = matrix) from a voxel classifier.
    foreground : (P, M, N) bool ndarray
        Particle voxels.
    spacing : float or (3,) floats, optional
        Voxel size in micrometres (default 1).
    depth_um : float, optional
        Rim thickness; default one voxel (the layer that touches the matrix). Rounded to whole
        voxels of the smallest spacing.

    Returns
    -------
    corrected : (P, M, N) uint8 ndarray
        A new array; `phases` is not modified.

    Notes
    -----
    With :math:`I = \\mathcal{E}^k(F)` the foreground eroded :math:`k` times (6-connected), each
    rim voxel :math:`x \\in F \\setminus I` takes :math:`\\phi(\\arg\\min_{y \\in I} \\lVert x -
    y \\rVert)`, the phase of the nearest interior voxel in physical distance (exact Euclidean
    feature transform), when that voxel lies within :math:`k + 1` voxels; thin parts with no
    interior nearby (platelets thinner than :math:`2k + 1` voxels) keep the classifier's phase.
    A grain boundary that meets the particle surface moves by at most :math:`k` voxels there.
    """
    from scipy import ndimage

    phases = np.asarray(phases)
    foreground = np.asarray(foreground, dtype=bool)
    if phases.shape != foreground.shape or phases.ndim != 3:
        raise InputError(f"phases {phases.shape} and foreground {foreground.shape} must be the same 3D shape",
                         source="foreground")
    spacing = normalize_spacing(1.0 if spacing is None else spacing, 3)
    depth = 1 if depth_um is None else max(0, round(float(depth_um) / float(spacing.min())))
    corrected = phases.copy()
    if depth == 0 or not foreground.any():
        return corrected
    interior = ndimage.binary_erosion(foreground, iterations=depth, border_value=1)
    if not interior.any():
        return corrected
    reach = (depth + 1) * float(spacing.max()) + 1e-9
    return phases_from_nearest_interior(phases, foreground & ~interior, interior, reach=reach, sampling=spacing)


def phases_from_nearest_interior(phases, band, interior, *, reach: float, sampling=None, labels=None):
    """A copy of `phases` whose `band` voxels take the phase of their nearest `interior` voxel.

    Only band voxels whose nearest interior voxel (exact Euclidean feature transform, physical
    distance with `sampling`) lies within `reach` change, and with `labels` only where that voxel
    carries the same label; the others keep their phase.
    """
    from scipy import ndimage

    corrected = np.array(phases, copy=True)
    distance, nearest = ndimage.distance_transform_edt(~interior, sampling=sampling, return_indices=True)
    rim = band & (distance <= reach)
    del distance
    source = tuple(axis[rim] for axis in nearest)
    del nearest
    if labels is None:
        corrected[rim] = phases[source]
        return corrected
    own = labels[source] == labels[rim]
    target = tuple(axis[own] for axis in np.nonzero(rim))
    corrected[target] = phases[tuple(axis[own] for axis in source)]
    return corrected


def rim_halo_voxels(depth_um: float | None, spacing) -> int:
    """Halo a block needs for :func:`correct_rim_phases` (depth + the interior search)."""
    spacing = normalize_spacing(1.0 if spacing is None else spacing, 3)
    depth = 1 if depth_um is None else round(float(depth_um) / float(spacing.min()))
    return math.ceil(2 * depth + 2)
