"""The grain table (grains.csv contract) block by block: joined grain ids, additive surfaces."""

from __future__ import annotations

from collections.abc import Mapping

import numba
import numpy as np
import pandas as pd

from corrtomo._shared import BlockRunner, InputError, normalize_spacing
from corrtomo.measure import configuration_weights
from corrtomo.measure._grains import _add_grains, grain_rows, phase_name_table
from corrtomo.measure._surface import _load, _uniform_cell

from ._blocks import block_grid, read_block, volume_shape
from ._label import (
    BlockUnion,
    LabelShell,
    _check_connectivity,
    _check_input,
    _first_voxel,
    block_components,
)

__all__ = ["grain_table_chunked"]

# grain key = particle label * 256 + phase id (phase ids are 0..255), as in _table.py
_PHASE_SLOTS = 256


@numba.njit(cache=True, nogil=True)
def _block_grain_surfaces(padded, start, stop, particle_of, phase_id, weights, area, exposed):
    """Add the 2x2x2 cells with lower corner in ``[start, stop)`` (padded coordinates).

    `padded` holds global grain ids; `area` and `exposed` are indexed by global grain id.
    The phase-pair and matrix interfaces of :func:`corrtomo.measure._grains._add_grains` are
    accumulated into scratch arrays and discarded.
    """
    values = np.empty(8, dtype=np.int64)
    rows = np.empty(8, dtype=np.int64)
    pairs = np.zeros((_PHASE_SLOTS, _PHASE_SLOTS), dtype=np.float64)
    matrix = np.zeros(_PHASE_SLOTS, dtype=np.float64)
    for z in range(start[0], stop[0]):
        for y in range(start[1], stop[1]):
            r00 = padded[z, y]
            r01 = padded[z, y + 1]
            r10 = padded[z + 1, y]
            r11 = padded[z + 1, y + 1]
            for x in range(start[2], stop[2]):
                if _uniform_cell(r00, r01, r10, r11, x):
                    continue
                _load(r00, r01, r10, r11, x, values)
                _add_grains(
                    values, rows, particle_of, phase_id, weights, area, exposed, pairs, matrix
                )


def _key_block(particles, phases, slices) -> np.ndarray:
    """uint64 key ``label * 256 + phase`` of a block (0 outside particles), checked."""
    labels = read_block(particles, slices)
    phase = read_block(phases, slices)
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise InputError("labels must be non-negative", source="particles")
    if phase.dtype == np.bool_:
        phase = phase.view(np.uint8)
    if phase.size and (phase.max() > _PHASE_SLOTS - 1 or phase.min() < 0):
        raise InputError(
            f"phase ids must be 0..255, got {int(phase.min())}..{int(phase.max())}",
            source="phases",
        )
    labels = labels.astype(np.uint64)
    key = labels * np.uint64(_PHASE_SLOTS) + phase.astype(np.uint64)
    key[labels == 0] = 0
    return key


def grain_table_chunked(
    particles,
    phases,
    *,
    spacing=1.0,
    phase_names: Mapping[int, str] | None = None,
    chunks=None,
    connectivity: int = 26,
    runner: BlockRunner | None = None,
) -> pd.DataFrame:
    """The grain table of :func:`corrtomo.measure.grain_table`, block by block.

    Parameters
    ----------
    particles : (Z, Y, X) ndarray, zarr.Array or dask.array.Array of int
        Particle label image, 0 = background; axes (plane, row, column). Never modified.
    phases : (Z, Y, X) ndarray, zarr.Array or dask.array.Array of uint8
        Phase id per voxel (0 = unassigned, forms no reported grain). Never modified.
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres.
    phase_names : mapping of int to str, optional
        Phase id -> name (the phase library); default ``phase<k>``.
    chunks : (3,) sequence of int or Dask-style tuple of tuples, optional
        Block shape; default the chunks of `particles` (else `phases`) when Zarr/Dask, else one
        block.
    connectivity : {6, 18, 26}
        Grain connectivity.
    runner : corrtomo.BlockRunner, optional
        Where both passes run their blocks (serially by default; threads or a
        ``dask.distributed`` cluster that can open `particles` and `phases`). Only the faces of
        each block's pieces and its per-grain sums come back; with kept records a stopped run
        resumes.

    Returns
    -------
    pandas.DataFrame
        Columns ``grain_id``, ``particle_label``, ``phase``, ``phase_id``, ``volume_voxels``,
        ``volume_um3``, ``esd_um``, ``surface_area_um2``, ``exposed_surface_fraction`` (see
        :func:`corrtomo.measure.grain_table`).

    Raises
    ------
    InputError
        Non-3D, non-integer or mismatched inputs, negative labels, phase ids > 255 or missing
        from `phase_names`, bad spacing, connectivity or chunks.

    Notes
    -----
    Grains are the components of the key image ``label * 256 + phase`` (0 outside particles),
    which ``cc3d`` (as :func:`corrtomo.measure.label_grains` does on its equivalent key) splits
    into the same components. Two passes over the blocks, in raster order:

    1. Each block is read with a one-voxel halo past its high faces. Its core is labelled with
       ``cc3d`` and registered in a :class:`~corrtomo.chunked.BlockUnion` (``values=True``),
       which joins the pieces across block faces, edges and corners and numbers the global
       grains in raster order of their first voxel - the numbering of ``cc3d`` in memory, so
       ``grain_id`` matches :func:`~corrtomo.measure.label_grains`. The extended block (core +
       halo) is labelled too; each of its components lies inside one grain, identified by one
       representative voxel: in the core its piece, in the halo the piece of the later block
       that owns the voxel (read from that block's low face when it is registered).
    2. Each extended block is labelled again (``cc3d`` is deterministic), mapped to global
       grain ids, and the voxels of the core counted per grain (volumes are additive). The 2x2x2
       surface cells whose lower corner lies in the core (plus the padding cells at index -1 on
       the volume's low faces; cells past the high faces see 0) get the configuration weights of
       :func:`corrtomo.measure._grains.grain_surfaces`; each cell is counted by exactly one
       block, so the per-grain area and exposed area (interface with everything outside the
       grain's particle) are exact sums over the cells of the whole volume. A block returns
       its sums only for the grains it holds (renumbered 0..k inside the block, which keeps
       their order and equalities).

    Guarantee: equal to ``grain_table(particles, phases, spacing=..., phase_names=...,
    connectivity=...)`` in memory - same columns and rows in the same order, integer and text
    columns identical, floats within 1e-9 relative (summation order only) - for every block
    shape. Memory: one block with its halo (a few copies), per-grain arrays O(grains), and the
    piece tables O(block-local pieces).

    Examples
    --------
    >>> import numpy as np
    >>> particles = np.zeros((8, 8, 8), dtype=np.uint32)
    >>> particles[1:7, 1:7, 1:7] = 5
    >>> phases = np.where(particles > 0, 1, 0).astype(np.uint8)
    >>> phases[1:7, 1:7, 1:3] = 2
    >>> table = grain_table_chunked(particles, phases, spacing=2.0, chunks=(3, 3, 3))
    >>> table[["grain_id", "particle_label", "phase", "volume_um3"]].values.tolist()
    [[1, 5, 'phase2', 576.0], [2, 5, 'phase1', 1152.0]]
    """
    shape = volume_shape(particles, "particles")
    if phases is None:
        raise InputError("a phase image is required for the grain table", source="phases")
    if volume_shape(phases, "phases") != shape:
        raise InputError(
            f"shape {tuple(phases.shape)} differs from the particle image shape {shape}",
            source="phases",
        )
    _check_input(particles, "particles")
    _check_input(phases, "phases")
    values = normalize_spacing(spacing, 3)
    connectivity = _check_connectivity(connectivity)
    grid = block_grid(shape, chunks, like=(particles, phases))

    # ---------------------------------------------------------------- pass 1: join the pieces
    runner = BlockRunner() if runner is None else runner
    blocks = list(grid)
    on_blocks = {"particles": particles, "phases": phases, "grid": grid, "connectivity": connectivity}
    union = BlockUnion(grid, connectivity, values=True)
    offsets: dict[tuple, tuple[int, int]] = {}
    representative: dict[tuple, np.ndarray] = {}  # block -> provisional id per extended piece
    pending: dict[tuple, list] = {}  # owner block -> [(block, piece, position in the owner)]
    for index, (shell, provisional, pieces, owners, where) in zip(
            blocks, runner.map(_grain_pieces, blocks, **on_blocks), strict=True):
        offset = union.total
        union.add(index, shell, shell.n)
        offsets[index] = (offset, shell.n)
        for block, piece, position in pending.pop(index, ()):
            representative[block][piece] = offset + _label_on_low_face(shell, position)
        representative[index] = np.where(provisional > 0, offset + provisional, 0)
        for piece, owner, position in zip(pieces, owners, where, strict=True):
            pending.setdefault(tuple(int(i) for i in owner), []).append((index, int(piece), position))
    if pending:  # cannot happen: every halo voxel lies in a later block of the grid
        raise RuntimeError("unresolved grain pieces")
    n_grains = union.finish()
    final = np.zeros(union.total + 1, dtype=np.int64)
    for index, (offset, n) in offsets.items():
        final[offset + 1 : offset + n + 1] = union.block_map(index, np.int64)[1:]
    grain_key = union.component_values.astype(np.uint64)
    particle_label = (grain_key // np.uint64(_PHASE_SLOTS)).astype(np.int64)
    phase_id = (grain_key % np.uint64(_PHASE_SLOTS)).astype(np.int64)
    particle_of = particle_label.copy()
    particle_of[0] = -1  # background: a particle of its own

    # ------------------------------------------------------- pass 2: volumes and surfaces
    weights = configuration_weights(values)
    count = np.zeros(n_grains + 1, dtype=np.int64)
    area = np.zeros(n_grains + 1, dtype=np.float64)
    exposed = np.zeros(n_grains + 1, dtype=np.float64)
    items = []
    for index in blocks:
        lookup = final[representative.pop(index)]
        lookup[0] = 0
        items.append((index, lookup))
    sums = runner.map(_grain_sums, items, particle_of=particle_of, phase_id=phase_id, weights=weights, **on_blocks)
    for present, block_count, block_area, block_exposed in sums:  # ids are unique within a block
        count[present] += block_count
        area[present] += block_area
        exposed[present] += block_exposed
    return _table(count, area, exposed, particle_label, phase_id, values, phase_names)


def _grain_pieces(index, *, particles, phases, grid, connectivity):
    """Pass 1 for one block: its core's grain pieces and the extended block's pieces.

    Returns the core's :class:`LabelShell` (with the keys), the core piece (local label) of
    each extended piece that reaches the core (0 where it lies in the halo only), and for those
    halo-only pieces: their number, the block that owns their first voxel and that voxel's
    position in the owner (on one of its low faces).
    """
    slices = grid.slices(index, halo=1)
    key = _key_block(particles, phases, slices)
    core = grid.block_shape(index)
    inner = tuple(slice(0, int(c)) for c in core)
    key_core = np.ascontiguousarray(key[inner])
    local, n = block_components(key_core, connectivity)
    extended, m = block_components(key, connectivity)
    # a core voxel of each extended piece where it has one, else (halo only) any voxel
    first_core = _first_voxel(np.ascontiguousarray(extended[inner]).ravel(), m)[1:]
    in_core = first_core >= 0
    provisional = np.zeros(m + 1, dtype=np.int64)
    provisional[1:][in_core] = local.ravel()[first_core[in_core]]
    first = _first_voxel(np.ascontiguousarray(extended).ravel(), m)[1:][~in_core]
    halo = np.stack(np.unravel_index(first, extended.shape), axis=1) + grid.origin(index)
    owners = np.stack([np.searchsorted(b, halo[:, k], side="right") - 1 for k, b in enumerate(grid.bounds)],
                      axis=1).reshape(-1, 3)
    where = halo - np.array([[b[o] for b, o in zip(grid.bounds, owner, strict=True)] for owner in owners],
                            np.int64).reshape(-1, 3)
    return LabelShell(local, n, key_core), provisional, np.flatnonzero(~in_core) + 1, owners, where


def _label_on_low_face(shell: LabelShell, position) -> int:
    """The local label of a block (its shell) at `position`, a voxel on one of its low faces."""
    axis = int(np.flatnonzero(np.asarray(position) == 0)[0])
    rest = tuple(int(p) for k, p in enumerate(position) if k != axis)
    return int(shell.low[axis][rest])


def _grain_sums(item, *, particles, phases, grid, connectivity, particle_of, phase_id, weights):
    """Pass 2 for one block: voxels, surface and exposed surface per grain present (sparse)."""
    index, lookup = item
    slices = grid.slices(index, halo=1)
    key = _key_block(particles, phases, slices)
    core = grid.block_shape(index)
    origin = grid.origin(index)
    extended, _ = block_components(key, connectivity)
    ids = np.take(lookup, extended)
    present = np.union1d(np.zeros(1, np.int64), ids)  # global grain ids here, 0 first
    compact = np.searchsorted(present, ids).astype(np.int64)  # the same order and equalities
    inner = tuple(slice(0, int(c)) for c in core)
    count = np.bincount(compact[inner].ravel(), minlength=present.size)
    # padded[p] is global voxel origin - 1 + p; zeros where nothing is read
    padded = np.zeros(tuple(int(c) + 2 for c in core), dtype=np.int64)
    padded[tuple(slice(1, 1 + s) for s in compact.shape)] = compact
    start = np.where(origin == 0, 0, 1).astype(np.int64)
    stop = core.astype(np.int64) + 1
    area = np.zeros(present.size, dtype=np.float64)
    exposed = np.zeros(present.size, dtype=np.float64)
    _block_grain_surfaces(padded, start, stop, particle_of[present], phase_id[present], weights, area, exposed)
    return present, count, area, exposed


def _table(count, area, exposed, particle_label, phase_id, spacing, phase_names) -> pd.DataFrame:
    """The rows of :func:`corrtomo.measure.grain_table` from per-grain sums (index = grain id)."""
    n = count.size
    ids = np.flatnonzero((np.arange(n) > 0) & (phase_id > 0))
    present_ids = np.unique(phase_id[1:]) if n > 1 else np.zeros(0, int)
    names = phase_name_table(phase_names, present_ids)
    return grain_rows(ids, particle_label[ids], phase_id[ids], count[ids], area[ids], exposed[ids], spacing, names)
