"""Phase association: interface areas between phases inside particles and with the matrix."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from corrtomo._shared import normalize_spacing

from ._grains import GrainLabels, grain_surfaces, label_grains, phase_name_table

__all__ = ["phase_association"]


def phase_association(
    particles,
    phases,
    *,
    spacing=1.0,
    phase_names: Mapping[int, str] | None = None,
    connectivity: int = 26,
    grains: GrainLabels | None = None,
) -> pd.DataFrame:
    """Shared interface area between every pair of phases and between each phase and the matrix.

    Parameters
    ----------
    particles : (Z, Y, X) ndarray of int
        Particle label image, 0 = background (matrix); axes (plane, row, column).
    phases : (Z, Y, X) ndarray of uint8
        Phase id per voxel (0 inside a particle = 'unassigned', reported if present).
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres.
    phase_names : mapping of int to str, optional
        Phase id -> name; default ``phase<k>``.
    connectivity : {6, 18, 26}
        Grain connectivity (only matters through `grains`).
    grains : GrainLabels, optional
        Precomputed :func:`label_grains` result to reuse (its surfaces are cached).

    Returns
    -------
    pandas.DataFrame
        Long format, columns ``phase_a, phase_b, interface_area_um2``: one row per unordered pair
        of distinct phases (ids ascending, every pair listed, zero included) for interfaces inside
        the same particle, then one row ``(phase, "matrix")`` per phase for its interface with the
        background. Contacts between different particles are not counted.

    Notes
    -----
    Per 2x2x2 cell with configurations ``a`` and ``b`` of two grains of the same particle, the
    shared area is ``(w[a] + w[b] - w[a | b]) / 2`` (inclusion-exclusion on the Lindblad weights
    ``w``); with the background configuration ``m``: ``(w[a] + w[m] - w[a | m]) / 2``. Sums over
    grains give the phase totals.
    """
    values = normalize_spacing(spacing, 3)
    if grains is None:
        grains = label_grains(particles, phases, connectivity=connectivity)
    _, _, pairs, matrix = grain_surfaces(grains, values)
    present_ids = np.unique(grains.phase_id[1:]) if grains.n_grains else np.zeros(0, int)
    names = phase_name_table(phase_names, present_ids)
    ids = np.array(sorted(names), dtype=np.int64)
    size = max(grains.n_phase_ids, int(ids.max()) + 1 if ids.size else 0)
    full = np.zeros((size, size))
    full[: pairs.shape[0], : pairs.shape[1]] = pairs
    full = full + full.T - np.diag(np.diag(full))
    with_matrix = np.zeros(size)
    with_matrix[: matrix.size] = matrix
    first, second = np.triu_indices(ids.size, k=1)
    label = np.array([names[i] for i in ids], dtype=object)
    inside = pd.DataFrame(
        {
            "phase_a": label[first],
            "phase_b": label[second],
            "interface_area_um2": full[ids[first], ids[second]],
        }
    )
    outside = pd.DataFrame(
        {"phase_a": label, "phase_b": "matrix", "interface_area_um2": with_matrix[ids]}
    )
    return pd.concat([inside, outside], ignore_index=True)
