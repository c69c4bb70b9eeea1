"""The particle table (particles.csv contract) from per-block additive moments."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from corrtomo._shared import BlockRunner, InputError, normalize_spacing
from corrtomo.measure import LabelMoments, label_moments, merge_moments, particle_table_from_moments

from ._blocks import block_grid, read_block, volume_shape
from ._label import BlockUnion, LabelShell, _check_connectivity, _check_input, block_components

__all__ = ["particle_table_chunked"]

# the per-block moments are folded together every this many blocks (bounds the list of parts)
_MERGE_EVERY = 32
# grain key = particle label * 256 + phase id (phase ids are 0..255)
_PHASE_SLOTS = 256


def _grain_counts(union: BlockUnion, labels: np.ndarray, n_phases: int) -> np.ndarray:
    """(N, n_phases) int64 grains per (particle row, phase id) from the joined grain components."""
    keys = union.component_values[1:]
    particle = keys // _PHASE_SLOTS
    phase = (keys % _PHASE_SLOTS).astype(np.int64)
    rows = np.searchsorted(labels, particle)
    if keys.size and (
        labels.size == 0 or not np.all(labels[np.minimum(rows, labels.size - 1)] == particle)
    ):
        raise InputError("a grain lies outside every particle", source="phases")
    if phase.size and phase.max() >= n_phases:
        raise InputError("a grain has a phase id beyond the measured phases", source="phases")
    return np.bincount(rows * n_phases + phase, minlength=labels.size * n_phases).reshape(
        labels.size, n_phases
    )


def _table_block(index, *, particles, phases, grid, spacing, surface, connectivity):
    """One block's additive moments and the faces of its grain pieces (:class:`LabelShell`)."""
    slices = grid.slices(index, halo=1)
    label_block = read_block(particles, slices)
    phase_block = None if phases is None else read_block(phases, slices)
    core = grid.block_shape(index)
    moments = label_moments(label_block, phase_block, offset=grid.origin(index), spacing=spacing,
                            core_shape=core, volume_shape=np.asarray(grid.shape, dtype=np.int64), surface=surface)
    if phases is None:
        return moments, None
    inner = tuple(slice(0, int(c)) for c in core)
    labels_core = label_block[inner].astype(np.uint64)
    key = labels_core * np.uint64(_PHASE_SLOTS) + phase_block[inner].astype(np.uint64)
    key[labels_core == 0] = 0
    local, n = block_components(key, connectivity)
    return moments, LabelShell(local, n, key)


def particle_table_chunked(
    particles,
    phases=None,
    *,
    spacing=1.0,
    phase_names: Mapping[int, str] | None = None,
    chunks=None,
    connectivity: int = 26,
    surface: bool = True,
    return_moments: bool = False,
    runner: BlockRunner | None = None,
) -> pd.DataFrame | tuple[pd.DataFrame, LabelMoments]:
    """The particle table of :func:`corrtomo.measure.particle_table`, block by block.

    Parameters
    ----------
    particles : (Z, Y, X) ndarray, zarr.Array or dask.array.Array of int
        Particle label image, 0 = background; axes (plane, row, column). Never modified.
    phases : (Z, Y, X) ndarray, zarr.Array or dask.array.Array of uint8, optional
        Phase id per voxel (0 = unassigned). Without it the phase columns are left out.
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres.
    phase_names : mapping of int to str, optional
        Phase id -> name (the phase library); default ``phase<k>``.
    chunks : (3,) sequence of int or Dask-style tuple of tuples, optional
        Block shape; default the chunks of `particles` (else `phases`) when Zarr/Dask, else one
        block.
    connectivity : {6, 18, 26}
        Grain connectivity for the ``grains_<name>`` columns.
    surface : bool
        Estimate the surface area (see :func:`corrtomo.measure.particle_table`).
    return_moments : bool
        Also return the merged :class:`~corrtomo.measure.LabelMoments` (e.g. to add more tables).
    runner : corrtomo.BlockRunner, optional
        Where the blocks are measured (serially by default; threads or a ``dask.distributed``
        cluster, which must be able to open `particles` and `phases`). Only each block's
        moments and grain faces come back; with kept records a stopped run resumes.

    Returns
    -------
    pandas.DataFrame
        The columns and rows of :func:`corrtomo.measure.particle_table` (without its ``extra``
        convex descriptors) [, the merged moments].

    Raises
    ------
    InputError
        Non-3D, boolean, non-integer or mismatched inputs, phase ids > 255 or missing from
        `phase_names`, bad spacing, connectivity or chunks.

    Notes
    -----
    Each block (a task of `runner`) is read once, with a one-voxel halo past its high faces (where it does not end at
    the volume's high face), and measured by :func:`corrtomo.measure.label_moments` with
    ``offset`` = the block origin and ``core_shape`` = the block shape: voxel moments over the
    core, and the 2x2x2 surface cells whose lower corner lies in the core (the halo completes
    the cells that straddle the high faces; the padding cells at index -1 belong to the blocks
    on the volume's low faces). The blocks' voxels and cells thus partition the volume's, and
    :func:`corrtomo.measure.merge_moments` (sums and min/max) gives exactly the moments of the
    whole volume: integer moments bit for bit, the surface up to the order of summation.

    Grains (connected components of one phase inside one particle) are joined across blocks by
    a :class:`~corrtomo.chunked.BlockUnion` over the key image ``label * 256 + phase``
    (``values=True``: voxels join only with equal keys), which yields the components of the
    in-memory ``cc3d`` labelling of :func:`corrtomo.measure.label_grains`; their count per
    (particle, phase) fills the ``grains_<name>`` columns.

    Guarantee: equal to ``particle_table(particles, phases, spacing=..., phase_names=...,
    connectivity=..., surface=...)`` in memory - same columns and rows, integer and text columns
    identical, floats within 1e-9 relative (summation order only) - for every block shape.
    Memory: one block with its halo, the per-block moments until they are merged (O(labels per
    block) each), and the grain equivalence table (O(grain pieces)).

    Examples
    --------
    >>> import numpy as np
    >>> particles = np.zeros((8, 8, 8), dtype=np.uint32)
    >>> particles[1:7, 1:7, 1:7] = 5
    >>> phases = np.where(particles > 0, 1, 0).astype(np.uint8)
    >>> phases[1:7, 1:7, 1:3] = 2
    >>> table = particle_table_chunked(
    ...     particles, phases, spacing=2.0, phase_names={1: "calcite", 2: "talc"}, chunks=(3, 3, 3)
    ... )
    >>> table[["label", "volume_um3", "vf_talc", "grains_calcite", "dominant_phase"]].values.tolist()
    [[5, 1728.0, 0.3333333333333333, 1, 'calcite']]
    """
    shape = volume_shape(particles, "particles")
    if _check_input(particles, "particles") == np.bool_:
        raise InputError("expected integer particle labels, got dtype bool", source="particles")
    if phases is not None:
        if volume_shape(phases, "phases") != shape:
            raise InputError(
                f"shape {tuple(phases.shape)} differs from the particle image shape {shape}",
                source="phases",
            )
        _check_input(phases, "phases")
    values = normalize_spacing(spacing, 3)
    connectivity = _check_connectivity(connectivity)
    grid = block_grid(shape, chunks, like=(particles,) if phases is None else (particles, phases))
    union = None if phases is None else BlockUnion(grid, connectivity, values=True)
    parts: list[LabelMoments] = []
    runner = BlockRunner() if runner is None else runner
    blocks = list(grid)
    found = runner.map(_table_block, blocks, particles=particles, phases=phases, grid=grid, spacing=values,
                       surface=surface, connectivity=connectivity)
    for index, (moments, shell) in zip(blocks, found, strict=True):
        parts.append(moments)
        if len(parts) >= _MERGE_EVERY:
            parts = [merge_moments(parts)]
        if union is not None:
            union.add(index, shell, shell.n)
    if not parts:
        raise InputError("the volume is empty", source="particles")
    moments = merge_moments(parts)
    grain_counts = None
    if union is not None:
        union.finish()
        grain_counts = _grain_counts(union, moments.labels, moments.phase_counts.shape[1])
    table = particle_table_from_moments(moments, values, phase_names, grain_counts=grain_counts)
    return (table, moments) if return_moments else table
