"""Partial-volume rim correction block by block (see :func:`corrtomo.segment.correct_rim_phases`)."""

from __future__ import annotations

import numpy as np

from .._shared import BlockRunner, InputError, normalize_spacing
from ._blocks import block_grid, read_block, volume_shape


def correct_rim_phases_chunked(
    phases,
    foreground,
    *,
    spacing=None,
    depth_um: float | None = None,
    chunks=None,
    out=None,
    runner: BlockRunner | None = None,
):
    """:func:`corrtomo.segment.correct_rim_phases` of a numpy / Zarr / Dask volume, block by block.

    Every block is read with a halo of :func:`corrtomo.segment.rim_halo_voxels` voxels on all
    sides (clipped at the volume), corrected in memory and its core written to `out`.

    Guarantee: the erosion that defines the interior is exact in a block's core plus
    ``depth + 1`` voxels when the halo is ``2 depth + 2``, and every rim voxel's nearest
    interior voxel lies within ``depth + 1`` voxels; the result therefore equals the in-memory
    correction except where two interior voxels are exactly equidistant from a rim voxel and
    carry different phases (the Euclidean feature transform breaks such ties by scan order,
    which a block can see differently).

    Parameters
    ----------
    phases, foreground : (Z, Y, X) array_like
        Phase ids (uint8) and particle voxels; never modified.
    spacing : float or (3,) floats, optional
        Voxel size in micrometres.
    depth_um : float, optional
        Rim thickness (default one voxel).
    chunks : (3,) ints, optional
        Block shape (default: the phases' chunking).
    out : (Z, Y, X) uint8 array, optional
        Where to write (e.g. a Zarr array); default a new numpy array.
    runner : corrtomo.BlockRunner, optional
        Where the (independent) blocks run; a ``dask.distributed`` runner needs `out` to be a
        Zarr array. Default: serially in this process.
    """
    from ..segment import rim_halo_voxels

    shape = volume_shape(phases, "phases")
    if volume_shape(foreground, "foreground") != shape:
        raise InputError(f"foreground shape differs from the phases' {shape}", source="foreground")
    spacing = normalize_spacing(1.0 if spacing is None else spacing, 3)
    halo = rim_halo_voxels(depth_um, spacing)
    grid = block_grid(shape, chunks, like=(phases, out))
    result = np.zeros(shape, dtype=np.uint8) if out is None else out
    runner = BlockRunner() if runner is None else runner
    if runner.kind == "distributed" and not hasattr(result, "store"):
        raise InputError("a dask.distributed runner writes into a Zarr array: pass out=", source="out")
    for _ in runner.map(_correct_block, list(grid), phases=phases, foreground=foreground, result=result, grid=grid,
                        halo=halo, spacing=spacing, depth_um=depth_um):
        pass
    return result


def _correct_block(index, *, phases, foreground, result, grid, halo, spacing, depth_um) -> None:
    from ..segment import correct_rim_phases

    core, box, inner = grid.box(index, halo)
    block_phases = read_block(phases, box).astype(np.uint8, copy=False)
    block_mask = read_block(foreground, box) != 0
    corrected = correct_rim_phases(block_phases, block_mask, spacing=spacing, depth_um=depth_um)
    result[core] = corrected[inner]
