"""Particle-aware phase refinement block by block (see :func:`corrtomo.segment.refine_phases`)."""

from __future__ import annotations

import math

import numpy as np

from .._shared import BlockRunner, InputError
from ._blocks import block_grid, read_block, volume_shape


def refine_phases_chunked(
    ct,
    phases,
    particles,
    *,
    contact_voxels: int = 2,
    inclusions: bool = True,
    settings=None,
    chunks=None,
    out=None,
    scratch=None,
    runner: BlockRunner | None = None,
):
    """:func:`corrtomo.segment.refine_phases` of numpy / Zarr volumes, block by block.

    The contact correction runs per block with a halo of ``2 depth + 3`` voxels into `scratch`.
    The volume-wide quantities of the inclusion search (phase levels, point spread, residual
    spread, number of tested voxels) are merged from per-block histograms over the blocks'
    cores, exactly as the in-memory path computes them from one block; the search itself runs
    per block with the halo of :meth:`InclusionModel.halo`, in which every candidate that
    touches a block's core is seen whole (candidates up to 8 voxels across), and the small-grain
    reclassification per block with :meth:`InclusionModel.grain_halo`, in which every small
    grain touching the core and every grain whose blur reaches it are seen whole (grains cut by
    a block face count as large, as they are).

    Guarantee: the result equals the in-memory refinement, except where the Euclidean feature
    transform breaks an exact distance tie differently in a block, or an anomaly larger than
    the halo's allowance crosses a block face.

    Parameters
    ----------
    ct, phases, particles : (Z, Y, X) array_like
        Grey values, phase ids (uint8) and particle labels; never modified.
    contact_voxels, inclusions, settings
        As :func:`corrtomo.segment.refine_phases`.
    chunks : (3,) ints, optional
        Block shape (default: the phases' chunking).
    out, scratch : (Z, Y, X) uint8 arrays, optional
        Where to write the result and the contact-corrected phases (e.g. Zarr arrays); default
        new numpy arrays. A ``dask.distributed`` runner needs both to be Zarr arrays.
    runner : corrtomo.BlockRunner, optional
        Where the independent blocks run (default serially).

    Returns
    -------
    result : (Z, Y, X) uint8 array
        `out`.
    report : corrtomo.segment.InclusionReport or None
        None when `inclusions` is off.
    """
    from ..segment import InclusionReport, InclusionSettings

    shape = volume_shape(phases, "phases")
    for name, array in (("ct", ct), ("particles", particles)):
        if volume_shape(array, name) != shape:
            raise InputError(f"{name} shape differs from the phases' {shape}", source=name)
    settings = InclusionSettings() if settings is None else settings
    grid = block_grid(shape, chunks, like=(phases, out))
    result = np.zeros(shape, dtype=np.uint8) if out is None else out
    runner = BlockRunner() if runner is None else runner
    if runner.kind == "distributed" and not (hasattr(result, "store") and (not inclusions or hasattr(scratch, "store"))):
        raise InputError("a dask.distributed runner writes into Zarr arrays: pass out= and scratch=", source="out")
    blocks = list(grid)
    depth = int(contact_voxels)
    contacted = result if not inclusions else (np.zeros(shape, dtype=np.uint8) if scratch is None else scratch)
    for _ in runner.map(_contact_block, blocks, phases=phases, particles=particles, result=contacted, grid=grid,
                        depth=depth):
        pass
    if not inclusions:
        return result, None

    model = _inclusion_model(ct, contacted, particles, grid, blocks, settings, runner)
    # inclusions from the contact-corrected phases into `result`, small grains from `result` back
    # into the first scratch array, then copied into `result`
    n_inclusions, moved = _merge_counts(runner.map(_inclusion_block, blocks, ct=ct, phases=contacted,
                                                   particles=particles, result=result, grid=grid, model=model))
    n_grains, grain_moved = _merge_counts(runner.map(_grain_block, blocks, ct=ct, phases=result, particles=particles,
                                                     result=contacted, grid=grid, model=model))
    for _ in runner.map(_copy_block, blocks, source=contacted, result=result, grid=grid):
        pass
    return result, InclusionReport(model, n_inclusions, int(moved.sum()), moved, n_grains, grain_moved)


def _merge_counts(records) -> tuple[int, np.ndarray]:
    """Sum of the blocks' (count, [(old phase, new phase, voxels)]) records."""
    total, moved = 0, np.zeros((256, 256), dtype=np.int64)
    for count, entries in records:
        total += count
        for old, new, n in entries:
            moved[old, new] += n
    return total, moved


def _inclusion_model(ct, phases, particles, grid, blocks, settings, runner):
    from ..segment._refine import (
        blur_from_histogram,
        detection_smoothing,
        grey_range_of,
        inclusion_model,
        levels_from_histograms,
    )

    lo, hi = math.inf, -math.inf
    for low, high in runner.map(_range_block, blocks, ct=ct, grid=grid):
        lo, hi = min(lo, low), max(hi, high)
    grey_range = grey_range_of(lo, hi)
    levels = np.zeros((256, 4096), dtype=np.int64)
    for rows in runner.map(_levels_block, blocks, ct=ct, phases=phases, particles=particles, grid=grid,
                           grey_range=grey_range):
        for phase, counts in rows:
            levels[phase] += counts
    level = levels_from_histograms(levels, grey_range)
    blur = settings.blur_sigma_voxels
    if blur is None:
        widths = np.zeros(4096, dtype=np.int64)
        for counts in runner.map(_blur_block, blocks, ct=ct, phases=phases, particles=particles, grid=grid,
                                 level=level):
            widths += counts
        blur = blur_from_histogram(widths)
    blur = float(blur)
    smoothing = detection_smoothing(blur)
    residuals = np.zeros(4096, dtype=np.int64)
    n_tested = 0
    for counts, tested in runner.map(_residual_block, blocks, ct=ct, phases=phases, particles=particles, grid=grid,
                                     level=level, blur=blur, smoothing=smoothing, settings=settings,
                                     grey_span=grey_range[1] - grey_range[0]):
        residuals += counts
        n_tested += tested
    return inclusion_model(levels, grey_range, residuals, n_tested, settings, blur)


def _filter_halo(sigma: float) -> int:
    return int(4.0 * sigma + 0.5)


def _contact_block(index, *, phases, particles, result, grid, depth) -> None:
    from ..segment import correct_contact_phases

    core, box, inner = grid.box(index, 2 * depth + 3)
    corrected = correct_contact_phases(read_block(phases, box).astype(np.uint8, copy=False),
                                       read_block(particles, box), depth_voxels=depth)
    result[core] = corrected[inner]


def _range_block(index, *, ct, grid) -> tuple[float, float]:
    from ..segment._refine import grey_range_block

    return grey_range_block(read_block(ct, grid.slices(index)))


def _levels_block(index, *, ct, phases, particles, grid, grey_range):
    from ..segment._refine import _LEVEL_DEPTH, level_histograms_block

    _, box, inner = grid.box(index, math.ceil(_LEVEL_DEPTH) + 1)
    counts = level_histograms_block(read_block(ct, box), read_block(phases, box).astype(np.uint8, copy=False),
                                    read_block(particles, box), inner, grey_range)
    return [(int(p), counts[p]) for p in np.flatnonzero(counts.sum(axis=1))]


def _blur_block(index, *, ct, phases, particles, grid, level):
    from ..segment._refine import _DERIVATIVE_SIGMA, blur_histogram_block

    _, box, inner = grid.box(index, _filter_halo(_DERIVATIVE_SIGMA) + 3)
    return blur_histogram_block(read_block(ct, box), read_block(phases, box).astype(np.uint8, copy=False),
                                read_block(particles, box), inner, level)


def _residual_block(index, *, ct, phases, particles, grid, level, blur, smoothing, settings, grey_span):
    from ..segment._refine import residual_histogram_block

    halo = _filter_halo(blur) + 2 * _filter_halo(smoothing) + math.ceil(settings.min_depth_voxels) + 2
    _, box, inner = grid.box(index, halo)
    return residual_histogram_block(read_block(ct, box), read_block(phases, box).astype(np.uint8, copy=False),
                                    read_block(particles, box), inner, level, blur, smoothing, settings,
                                    grey_span)


def _inclusion_block(index, *, ct, phases, particles, result, grid, model):
    from ..segment._refine import recover_inclusions_block

    core, box, inner = grid.box(index, model.halo())
    refined, count, moved = recover_inclusions_block(
        read_block(ct, box), read_block(phases, box).astype(np.uint8, copy=False), read_block(particles, box),
        inner, model)
    result[core] = refined
    hosts, phases_to = np.nonzero(moved)
    return count, [(int(h), int(p), int(moved[h, p])) for h, p in zip(hosts, phases_to, strict=True)]


def _grain_block(index, *, ct, phases, particles, result, grid, model):
    from ..segment._refine import reclassify_small_grains_block

    core, box, inner = grid.box(index, model.grain_halo())
    cut = [box[axis].start > 0 if end == 0 else box[axis].stop < grid.shape[axis]
           for axis in range(3) for end in (0, 1)]
    refined, count, moved = reclassify_small_grains_block(
        read_block(ct, box), read_block(phases, box).astype(np.uint8, copy=False), read_block(particles, box),
        inner, model, cut_faces=cut)
    result[core] = refined
    old, new = np.nonzero(moved)
    return count, [(int(o), int(n), int(moved[o, n])) for o, n in zip(old, new, strict=True)]


def _copy_block(index, *, source, result, grid) -> None:
    core = grid.slices(index)
    result[core] = read_block(source, core)
