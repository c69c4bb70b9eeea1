"""Grains: connected components of each phase inside each particle, with their surfaces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from corrtomo._shared import InputError, connected_components, normalize_spacing

from ._checks import check_label_image, check_phase_image, label_index, z_blocks
from ._surface import _fill_cell, _load, _split, _uniform_cell, configuration_weights

__all__ = ["GrainLabels", "grain_table", "label_grains"]


@dataclass(frozen=True, eq=False)
class GrainLabels:
    """Grain label image and the map from grains to particles and phases.

    Attributes
    ----------
    image : (Z, Y, X) ndarray of uint32
        Grain id per voxel, 0 outside particles. Voxels of phase 0 (unassigned) inside a particle
        form their own internal grains, reported by no table but kept so that every particle
        voxel has a grain.
    labels : (N,) ndarray of uint64
        Sorted particle labels present.
    particle_row : (G + 1,) ndarray of int64
        Row of each grain's particle in `labels` (-1 for grain 0).
    phase_id : (G + 1,) ndarray of int64
        Phase id of each grain.
    count : (G + 1,) ndarray of int64
        Voxels per grain.
    n_phase_ids : int
        ``max(phase id) + 1``.
    connectivity : int
        6, 18 or 26.
    """

    image: np.ndarray = field(repr=False)
    labels: np.ndarray
    particle_row: np.ndarray
    phase_id: np.ndarray
    count: np.ndarray
    n_phase_ids: int
    connectivity: int
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_grains(self) -> int:
        return int(self.count.size - 1)

    def counts_per_particle(self) -> np.ndarray:
        """(N, P) number of grains of each phase id in each particle."""
        n, p = self.labels.size, self.n_phase_ids
        real = np.arange(self.count.size) > 0
        keys = self.particle_row[real] * p + self.phase_id[real]
        return np.bincount(keys, minlength=n * p).reshape(n, p)


@numba.njit(parallel=True, cache=True)
def _key_kernel(particles, phases, lut, n_phases, out, bounds):
    for block in numba.prange(bounds.shape[0] - 1):
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(particles.shape[1]):
                for x in range(particles.shape[2]):
                    v = particles[z, y, x]
                    if v == 0:
                        out[z, y, x] = 0
                    else:
                        out[z, y, x] = (lut[v] + 1) * n_phases + phases[z, y, x]


@numba.njit(parallel=True, cache=True)
def _grain_map_kernel(grains, key, n_grains, bounds):
    n_blocks = bounds.shape[0] - 1
    counts = np.zeros((n_blocks, n_grains + 1), dtype=np.int64)
    keys = np.zeros(n_grains + 1, dtype=np.int64)
    for block in numba.prange(n_blocks):
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(grains.shape[1]):
                for x in range(grains.shape[2]):
                    g = grains[z, y, x]
                    if g != 0:
                        counts[block, g] += 1
                        keys[g] = key[z, y, x]  # every voxel of a grain has the same key
    return counts.sum(axis=0), keys


def label_grains(particles, phases, *, connectivity: int = 26) -> GrainLabels:
    """Label the grains: connected components of each phase within each particle.

    Parameters
    ----------
    particles : (Z, Y, X) ndarray of int
        Particle label image, 0 = background; axes (plane, row, column).
    phases : (Z, Y, X) ndarray of uint8
        Phase id per voxel (0 = unassigned).
    connectivity : {6, 18, 26}
        Voxel connectivity of a grain (26 = the paper's grains).

    Returns
    -------
    GrainLabels

    Notes
    -----
    Each voxel gets the key ``(row(particle) + 1) * P + phase`` (0 outside particles) and the keys
    are labelled with ``cc3d.connected_components``, which only joins equal neighbouring keys, so
    a grain never crosses a particle or phase boundary.
    """
    image = check_label_image(particles, "particles")
    phase_image = check_phase_image(phases, image)
    if connectivity not in (6, 18, 26):
        raise InputError(
            f"connectivity must be 6, 18 or 26, got {connectivity}", source="connectivity"
        )
    present, lut, image = label_index(image)
    n_phases = int(phase_image.max()) + 1 if phase_image.size else 1
    top = (present.size + 1) * n_phases
    key = np.empty(image.shape, dtype=np.uint32 if top < 2**32 else np.uint64)
    bounds = z_blocks(image.shape[0])
    _key_kernel(image, phase_image, lut, n_phases, key, bounds)
    grains, n_grains = connected_components(
        key, connectivity=connectivity, return_N=True, out_dtype=np.uint32
    )
    counts, keys = _grain_map_kernel(grains, key, int(n_grains), bounds)
    del key
    particle_row = keys // n_phases - 1
    phase_id = np.where(particle_row >= 0, keys % n_phases, 0)
    return GrainLabels(
        image=grains,
        labels=present,
        particle_row=particle_row,
        phase_id=phase_id,
        count=counts,
        n_phase_ids=n_phases,
        connectivity=connectivity,
    )


@numba.njit(cache=True, nogil=True)
def _add_grains(values, rows, particle_row, phase_id, weights, area, exposed, pairs, matrix):
    background = 0
    for i in range(8):
        rows[i] = particle_row[values[i]]
        if values[i] == 0:
            background |= 1 << i
    remaining = 255 & ~background
    for i in range(8):
        if not (remaining >> i) & 1:
            continue
        g = values[i]
        own = 0
        particle = 0
        for j in range(8):
            if values[j] == g:
                own |= 1 << j
            if rows[j] == rows[i]:
                particle |= 1 << j
        remaining &= ~own
        w_own = weights[own]
        area[g] += w_own
        exposed[g] += 0.5 * (w_own + weights[particle] - weights[particle & ~own])
        phase = phase_id[g]
        if background:
            matrix[phase] += 0.5 * (w_own + weights[background] - weights[own | background])
        todo = remaining
        for k in range(i + 1, 8):
            if not (todo >> k) & 1:
                continue
            h = values[k]
            other = 0
            for j in range(k, 8):
                if values[j] == h:
                    other |= 1 << j
            todo &= ~other
            if rows[k] != rows[i]:
                continue
            pairs[phase, phase_id[h]] += 0.5 * (w_own + weights[other] - weights[own | other])


@numba.njit(parallel=True, cache=True)
def _grain_surface_kernel(grains, particle_row, phase_id, n_phases, weights, bounds):
    nz, ny, nx = grains.shape
    n_blocks = bounds.shape[0] - 1
    n = particle_row.shape[0]
    area = np.zeros((n_blocks, n), dtype=np.float64)
    exposed = np.zeros((n_blocks, n), dtype=np.float64)
    pairs = np.zeros((n_blocks, n_phases, n_phases), dtype=np.float64)
    matrix = np.zeros((n_blocks, n_phases), dtype=np.float64)
    for block in numba.prange(n_blocks):
        values = np.empty(8, dtype=np.int64)
        rows = np.empty(8, dtype=np.int64)
        b_area = area[block]
        b_exposed = exposed[block]
        b_pairs = pairs[block]
        b_matrix = matrix[block]
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(-1, ny):
                if z >= 0 and z + 1 < nz and y >= 0 and y + 1 < ny:
                    r00 = grains[z, y]
                    r01 = grains[z, y + 1]
                    r10 = grains[z + 1, y]
                    r11 = grains[z + 1, y + 1]
                    for x in range(nx - 1):
                        if _uniform_cell(r00, r01, r10, r11, x):
                            continue
                        _load(r00, r01, r10, r11, x, values)
                        _add_grains(
                            values, rows, particle_row, phase_id, weights,
                            b_area, b_exposed, b_pairs, b_matrix,
                        )  # fmt: skip
                    edges = (-1, nx - 1)
                else:
                    edges = (-1, nx - 1)
                    for x in range(0, nx - 1):
                        if not _fill_cell(grains, z, y, x, values):
                            _add_grains(
                                values, rows, particle_row, phase_id, weights,
                                b_area, b_exposed, b_pairs, b_matrix,
                            )  # fmt: skip
                for x in edges:
                    if not _fill_cell(grains, z, y, x, values):
                        _add_grains(
                            values, rows, particle_row, phase_id, weights,
                            b_area, b_exposed, b_pairs, b_matrix,
                        )  # fmt: skip
    return area.sum(axis=0), exposed.sum(axis=0), pairs.sum(axis=0), matrix.sum(axis=0)


def grain_surfaces(grains: GrainLabels, spacing) -> tuple[np.ndarray, ...]:
    """Per-grain area and exposed area, phase-pair and phase-matrix interface areas (cached).

    Returns ``(area, exposed, pairs, matrix)``: (G + 1,) um^2, (G + 1,) um^2, (P, P) um^2 with
    ``pairs[a, b] + pairs[b, a]`` the interface between phases a and b inside particles, and (P,)
    um^2 interface of each phase with the background.

    Notes
    -----
    All areas are sums over 2x2x2 cells of the configuration weights ``w`` (Lindblad 2005). The
    interface between disjoint sets ``a`` and ``b`` in a cell is the inclusion-exclusion
    ``(w[a] + w[b] - w[a | b]) / 2``; the exposed area of grain ``g`` of particle ``p`` is its
    interface with everything outside ``p``: ``(w[g] + w[p] - w[p \\ g]) / 2``. A grain that is a
    whole particle is thus exactly 100 % exposed, a grain enclosed by its particle exactly 0 %.
    """
    values = normalize_spacing(spacing, 3)
    key = tuple(float(v) for v in values)
    if key not in grains._cache:
        weights = configuration_weights(values)
        bounds = _split(-1, int(grains.image.shape[0]), 4 * numba.get_num_threads())
        grains._cache[key] = _grain_surface_kernel(
            grains.image, grains.particle_row, grains.phase_id, grains.n_phase_ids, weights, bounds
        )
    return grains._cache[key]


def phase_name_table(
    phase_names: Mapping[int, str] | None, present_ids, source: str = "phase_names"
) -> dict[int, str]:
    """Names for the phase ids present (plus all named ones); id 0 is 'unassigned'."""
    present_ids = [int(i) for i in present_ids]
    if phase_names is None:
        names = {i: f"phase{i}" for i in present_ids if i != 0}
    else:
        names = {int(k): str(v) for k, v in phase_names.items()}
        if 0 in names:
            raise InputError("phase id 0 is reserved for unassigned voxels", source=source)
        missing = sorted(i for i in present_ids if i != 0 and i not in names)
        if missing:
            raise InputError(
                f"phase ids {missing} are in the phase image but not in the phase library",
                source=source,
            )
    if 0 in present_ids:
        names[0] = "unassigned"
    return dict(sorted(names.items()))


def equivalent_spherical_diameter(volume_um3) -> np.ndarray:
    """Equivalent spherical diameter ``d = (6 V / pi)^(1/3)`` of a volume ``V`` (um^3 -> um).

    Examples
    --------
    >>> float(equivalent_spherical_diameter(np.pi / 6))
    1.0
    """
    return np.cbrt(6.0 * np.asarray(volume_um3, dtype=np.float64) / np.pi)


def grain_table(
    particles,
    phases,
    *,
    spacing=1.0,
    phase_names: Mapping[int, str] | None = None,
    particle_table: pd.DataFrame | None = None,
    connectivity: int = 26,
    grains: GrainLabels | None = None,
) -> pd.DataFrame:
    """One row per grain (connected component of one phase inside one particle).

    Parameters
    ----------
    particles : (Z, Y, X) ndarray of int
        Particle label image, 0 = background; axes (plane, row, column).
    phases : (Z, Y, X) ndarray of uint8
        Phase id per voxel; id 0 inside a particle is unassigned and forms no grain.
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres.
    phase_names : mapping of int to str, optional
        Phase id -> name; default ``phase<k>``.
    particle_table : pandas.DataFrame, optional
        A table from :func:`particle_table`; when given, only grains of its labels are kept (so a
        filtered particle table filters the grains too).
    connectivity : {6, 18, 26}
        Grain connectivity.
    grains : GrainLabels, optional
        Precomputed :func:`label_grains` result (reused, with its cached surfaces).

    Returns
    -------
    pandas.DataFrame
        Columns ``grain_id`` (the value in ``label_grains(...).image``), ``particle_label``,
        ``phase``, ``phase_id``, ``volume_voxels``, ``volume_um3``, ``esd_um``,
        ``surface_area_um2``, ``exposed_surface_fraction``.

    Notes
    -----
    ``esd = (6 V / pi)^(1/3)``; ``exposed_surface_fraction = A_exposed / A`` with the areas of
    :func:`grain_surfaces` (surface-exposure liberation, Reyes et al. 2018). "Outside the particle"
    includes touching neighbour particles.
    """
    values = normalize_spacing(spacing, 3)
    if grains is None:
        grains = label_grains(particles, phases, connectivity=connectivity)
    area, exposed, _, _ = grain_surfaces(grains, values)
    ids = np.flatnonzero((np.arange(grains.count.size) > 0) & (grains.phase_id > 0))
    present_ids = np.unique(grains.phase_id[1:]) if grains.n_grains else np.zeros(0, int)
    names = phase_name_table(phase_names, present_ids)
    if particle_table is not None:
        keep = np.isin(
            grains.labels[grains.particle_row[ids]],
            np.asarray(particle_table["label"], dtype=np.uint64),
        )
        ids = ids[keep]
    return grain_rows(ids, grains.labels[grains.particle_row[ids]], grains.phase_id[ids], grains.count[ids],
                      area[ids], exposed[ids], values, names)


def grain_rows(ids, particle_labels, phase_ids, volume_voxels, area, exposed, spacing, names) -> pd.DataFrame:
    """The :func:`grain_table` frame from per-grain values (one entry per row, in row order).

    ``volume = voxels * prod(spacing)``, ``esd = (6 V / pi)^(1/3)``, ``exposed_surface_fraction =
    exposed / area`` clipped to [0, 1] (0 where the area is 0); `names` maps phase ids to names
    (``phase<k>`` for the others). Shared by the in-memory and the chunked grain tables.
    """
    volume_voxels = np.asarray(volume_voxels)
    area = np.asarray(area, dtype=np.float64)
    phase_ids = np.asarray(phase_ids)
    volume = volume_voxels * float(np.prod(spacing))
    fraction = np.clip(np.divide(exposed, area, out=np.zeros(area.size), where=area > 0), 0.0, 1.0)
    n_phase_ids = int(phase_ids.max()) + 1 if phase_ids.size else 1
    lookup = np.array([names.get(i, f"phase{i}") for i in range(n_phase_ids)], dtype=object)
    return pd.DataFrame(
        {
            "grain_id": np.asarray(ids).astype(np.int64),
            "particle_label": np.asarray(particle_labels).astype(np.int64),
            "phase": lookup[phase_ids] if phase_ids.size else np.array([], dtype=object),
            "phase_id": phase_ids.astype(np.int64),
            "volume_voxels": volume_voxels.astype(np.int64),
            "volume_um3": volume,
            "esd_um": equivalent_spherical_diameter(volume),
            "surface_area_um2": area,
            "exposed_surface_fraction": fraction,
        }
    )
