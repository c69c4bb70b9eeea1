"""Chunked particle separation: the distance-transform watershed block by block with a halo.

:func:`separate_particles_chunked` runs the chain of
:func:`corrtomo.segment.separate_particles` (exact EDT, lightly smoothed relief, h-maxima or
eroded-core markers, marker watershed of the exact distance, optional merging of over-split
particles, removal of small particles, border flags) on one block plus a halo at a time, and
labels the whole volume up to renumbering as the in-memory function does. Memory is a few
(block + halo) volumes at a time plus a table of O(number of particles) entries. Axes are
(z, y, x) = (plane, row, column).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from corrtomo._shared import BlockRunner, InputError, connected_components, normalize_spacing
from corrtomo.segment import (
    Pillar,
    distance_map,
    eroded_core_markers,
    h_maxima_markers,
    pillar_mask,
    smooth_distance,
    watershed_from_markers,
)

from ._blocks import block_grid, read_block, volume_faces, volume_shape

__all__ = ["ChunkedParticleSegmentation", "HaloWarning", "separate_particles_chunked"]

_METHODS = ("h_maxima", "eroded_cores")


class HaloWarning(RuntimeWarning):
    """A particle met by a block's core still reaches the edge of the block's largest halo."""


@dataclass(frozen=True)
class ChunkedParticleSegmentation:
    """Result of :func:`separate_particles_chunked`.

    Attributes
    ----------
    labels : (P, M, N) uint ndarray or zarr.Array
        Particles labelled 1..n (0 = background): `out` when given, else a new uint32 array.
    n_particles : int
    touches_border : (n + 1,) bool ndarray
        Per label (entry 0 is False): the particle touches the volume border or the pillar wall.
    exact : bool
        The sufficient condition of the guarantee held in every block (see Notes of
        :func:`separate_particles_chunked`): the labels are then provably those of
        :func:`~corrtomo.segment.separate_particles` up to renumbering.
    n_cut_particles : int
        Particles that met a block's core and still reached the edge of its largest halo
        (a :class:`HaloWarning` was issued); 0 when every particle fitted.
    info : dict
        Parameters used, halo sizes, block counts and the time of each pass (seconds).
    """

    labels: object
    n_particles: int
    touches_border: np.ndarray
    exact: bool
    n_cut_particles: int
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------




def _cut_faces(array: np.ndarray, box, shape, width: int) -> np.ndarray:
    """Values of `array` (a box) within `width` voxels of the faces where the box cuts the volume."""
    parts = [np.zeros(0, array.dtype)]
    for axis, (s, n) in enumerate(zip(box, shape, strict=True)):
        w = min(int(width), array.shape[axis])
        index = [slice(None)] * 3
        if s.start > 0:
            index[axis] = slice(0, w)
            parts.append(array[tuple(index)].ravel())
        if s.stop < n:
            index[axis] = slice(array.shape[axis] - w, array.shape[axis])
            parts.append(array[tuple(index)].ravel())
    return np.concatenate(parts)




def _reach_um(box, inner, shape, spacing) -> float:
    """Smallest distance (um) from the core to a voxel beyond a face where the box cuts the volume."""
    reach = math.inf
    for s, i, n, step in zip(box, inner, shape, spacing, strict=True):
        if s.start > 0:
            reach = min(reach, (i.start + 1) * float(step))
        if s.stop < n:
            reach = min(reach, (s.stop - s.start - i.stop + 1) * float(step))
    return reach


def _read_foreground(foreground, box, inside_pillar) -> np.ndarray:
    block = read_block(foreground, box)
    block = block if block.dtype == np.bool_ else block != 0
    if inside_pillar is not None:
        block = block & inside_pillar[box[1], box[2]][None]
    return np.ascontiguousarray(block)


# --------------------------------------------------------------------------------------------
# the chain on one box
# --------------------------------------------------------------------------------------------


def _global_top(foreground, grid, spacing, inside_pillar, halo, runner) -> tuple[float, int]:
    """Largest exact EDT value of the volume, block by block; returns (top, blocks redone).

    Each block's EDT on block + halo is >= the true EDT (fewer background voxels); where it is
    <= the distance to the first voxel beyond a cut face it is exact. A block that fails this
    certificate is redone with a halo of its (upper-bound) maximum, which then passes.
    """
    top, redone = 0.0, 0
    for peak, again in runner.map(_block_top, list(grid), foreground=foreground, grid=grid, spacing=spacing,
                                  inside_pillar=inside_pillar, halo=halo):
        top, redone = max(top, peak), redone + again
    return top, redone


def _block_top(index, *, foreground, grid, spacing, inside_pillar, halo) -> tuple[float, int]:
    """The exact EDT maximum over one block's core, and how many times its halo had to grow."""
    current = np.asarray(halo).copy()
    redone = 0
    while True:
        _, box, inner = grid.box(index, current)
        block = _read_foreground(foreground, box, inside_pillar)
        peak = float(distance_map(block, spacing=spacing)[inner].max(initial=0.0))
        reach = _reach_um(box, inner, grid.shape, spacing)
        if peak <= reach:
            return peak, redone
        redone += 1
        if math.isfinite(peak):  # one retry suffices: the new maximum is <= peak
            wanted = np.ceil(peak / spacing).astype(np.int64) + 1
        else:  # no background in the box yet
            wanted = 2 * current + 1
        current = np.minimum(np.maximum(wanted, current), np.asarray(grid.shape))


def _markers(relief, *, spacing, method, h_um, min_distance_um, core_fraction, connectivity):
    if method == "h_maxima":
        return h_maxima_markers(relief, h_um=h_um, connectivity=connectivity)
    return eroded_core_markers(relief, spacing=spacing, fraction=core_fraction,
                               min_distance_um=min_distance_um, connectivity=connectivity)


def _marker_keys(markers: np.ndarray, origin, shape) -> np.ndarray:
    """Global key of each local marker id: raster index of its first voxel in the volume.

    Returns an (m + 1,) int64 lookup table (-1 for ids that are not markers). Local raster
    order is the volume's raster order restricted to the box, so the first local voxel of a
    marker is its first voxel in the volume whenever the marker lies inside the box.
    """
    flat = np.flatnonzero(markers)
    ids = markers.ravel()[flat]
    table = np.full(int(ids.max(initial=0)) + 1, -1, np.int64)
    if flat.size:
        present, first = np.unique(ids, return_index=True)
        local = np.unravel_index(flat[first], markers.shape)
        table[present] = np.ravel_multi_index(
            tuple(c + int(o) for c, o in zip(local, origin, strict=True)), shape
        )
    return table


def _forward_offsets(connectivity: int) -> np.ndarray:
    """(K/2, 3) int64 neighbour offsets after the centre in raster order: one of each +-pair, as
    the forward half scanned by :func:`~corrtomo.segment.merge_oversplit_particles`."""
    order = {6: 1, 18: 2, 26: 3}[int(connectivity)]
    grid = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), axis=-1).reshape(-1, 3)
    norm = np.abs(grid).sum(axis=1)
    offsets = grid[(norm > 0) & (norm <= order)]
    return np.ascontiguousarray(offsets[offsets.shape[0] // 2:], dtype=np.int64)


def _group_max(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct `keys` (sorted) and the largest of their `values` (vectorised, no ufunc.at)."""
    if keys.size == 0:
        return keys.astype(np.int64), values
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    values = values[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts].astype(np.int64), np.maximum.reduceat(values, starts)


# --------------------------------------------------------------------------------------------
# public
# --------------------------------------------------------------------------------------------


def _segment_block(index, *, foreground, target, grid, shape, spacing, halo, max_halo, inside_pillar, rim, margin,
                   top, smooth_um, marker_options, levels_per_voxel):
    """Segment one block with its halo (doubled while a particle crosses the box, up to
    `max_halo`), write the core's block-local labels into `target` and return the record the
    global numbering needs: ``((ids, keys, counts, border keys), cut keys, grown, proven, halo)``.
    """
    import fastremap

    connectivity = marker_options["connectivity"]
    current = np.asarray(halo).copy()
    grown = 0
    while True:
        core, box, inner = grid.box(index, current)
        block = _read_foreground(foreground, box, inside_pillar)
        distance = distance_map(block, spacing=spacing)
        relief = smooth_distance(distance, spacing=spacing, sigma_um=smooth_um)
        markers = _markers(relief, spacing=spacing, **marker_options)
        del relief
        labels = watershed_from_markers(distance, markers, spacing=spacing, connectivity=connectivity,
                                        levels_per_voxel=levels_per_voxel, top_um=top)
        del distance
        local = labels[inner]
        ids, counts = fastremap.unique(local, return_counts=True)
        counts = counts[ids > 0].astype(np.int64)
        ids = ids[ids > 0]
        cut = np.intersect1d(ids, _cut_faces(labels, box, shape, 1))
        if cut.size == 0 or np.all(current >= max_halo):
            break
        grown += 1
        current = np.minimum(2 * current, max_halo)
    keys = _marker_keys(markers, [s.start for s in box], shape)
    del markers
    clusters = connected_components(block, connectivity=int(connectivity))
    proven = int(np.intersect1d(fastremap.unique(clusters[inner]),
                                _cut_faces(clusters, box, shape, margin)).max(initial=0) == 0)
    del clusters, block
    border = volume_faces(local, core, shape)
    if rim is not None:
        border = np.concatenate([border, local[:, rim[core[1], core[2]]].ravel()])
    border = np.unique(border)
    if ids.size and int(ids[-1]) > np.iinfo(np.dtype(target.dtype)).max:
        raise InputError(f"dtype {target.dtype} cannot hold {int(ids[-1])} block labels", source="out")
    target[core] = local
    return (ids, keys[ids], counts, keys[border[border > 0]]), keys[cut], grown, proven, current


def _label_array(array, shape, name: str):
    """`array` if it can hold labels of a volume of `shape`, else a one-line InputError."""
    if tuple(int(n) for n in array.shape) != shape:
        raise InputError(f"shape {tuple(array.shape)} differs from the input shape {shape}", source=name)
    if not np.issubdtype(np.dtype(array.dtype), np.unsignedinteger):
        raise InputError(f"must have an unsigned integer dtype, got {array.dtype}", source=name)
    return array


def _relabel_block(item, *, source, target, grid) -> None:
    """Block-local labels of `source` -> global labels in `target`, through the block's lookup table."""
    index, lut = item
    core = grid.slices(index)
    target[core] = np.take(lut, read_block(source, core))


def _shifted(box, by) -> tuple[slice, ...]:
    """Slices of `box` (a tuple of slices) moved by `by` voxels per axis."""
    return tuple(slice(b.start + int(o), b.stop + int(o)) for b, o in zip(box, by, strict=True))


def _merge_block(item, *, foreground, target, grid, spacing, halo, inside_pillar, offsets, n_markers):
    """Depth of every marker met by the core and saddles between touching markers, for one block.

    `item` is ``(index, neighbours)`` with ``neighbours`` a list of ``(block index, lut)`` for
    the block and its (up to 26) neighbours, ``lut`` mapping that block's local labels (as
    written by pass 2) to global marker numbers 1..`n_markers`. The exact EDT is recomputed on
    the block + `halo` (enough for every core voxel and its one-voxel ring, see the caller).
    Returns ``(marker numbers, peaks, pair keys, saddles)``: the largest EDT per marker over the
    core, and per unordered pair ``(a, b)``, ``a < b``, keyed ``a * (n_markers + 1) + b``, the
    largest ``min(d(x), d(y))`` over neighbour pairs ``x`` in the core, ``y = x + offset`` for a
    forward offset (so every voxel pair of the volume is seen in exactly one block).
    """
    index, neighbours = item
    core, box, _ = grid.box(index, halo)
    _, ring, _ = grid.box(index, 1)  # core + one voxel, clipped to the volume
    padded = tuple(c.stop - c.start + 2 for c in core)  # core + one voxel on every side
    origin = [c.start - 1 for c in core]  # volume coordinates of the padded array's first voxel
    relief = np.zeros(padded, np.float32)  # 0 and no marker beyond the volume: no pair there
    distance = distance_map(_read_foreground(foreground, box, inside_pillar), spacing=spacing)
    relief[_shifted(ring, -np.asarray(origin))] = distance[_shifted(ring, [-b.start for b in box])]
    del distance
    local = read_block(target, ring)
    markers = np.zeros(padded, np.int64)
    for neighbour, lut in neighbours:
        part = tuple(slice(max(a.start, r.start), min(a.stop, r.stop))
                     for a, r in zip(grid.slices(neighbour), ring, strict=True))
        labels = local[_shifted(part, [-r.start for r in ring])]
        markers[_shifted(part, -np.asarray(origin))] = np.take(lut, labels)
    del local
    inner = tuple(slice(1, n - 1) for n in padded)
    centre = markers[inner]
    depth = relief[inner]
    inside = centre > 0
    ids, peaks = _group_max(centre[inside], depth[inside])
    keys, saddles = [np.zeros(0, np.int64)], [np.zeros(0, np.float32)]
    for offset in offsets:
        shifted = _shifted(inner, offset)
        other = markers[shifted]
        contact = inside & (other > 0) & (other != centre)
        a, b = centre[contact], other[contact]
        keys.append(np.minimum(a, b) * (int(n_markers) + 1) + np.maximum(a, b))
        saddles.append(np.minimum(depth[contact], relief[shifted][contact]))
    keys, saddles = _group_max(np.concatenate(keys), np.concatenate(saddles))
    return ids, peaks, keys, saddles


def _merge_groups(records, n_markers: int, ratio: float) -> np.ndarray:
    """Group (0..G-1, numbered in order of the smallest marker) of each marker 1..m, from the
    per-block peaks and saddles, merging as :func:`~corrtomo.segment.merge_oversplit_particles`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, values = _group_max(np.concatenate([r[0] for r in records] + [np.zeros(0, np.int64)]),
                             np.concatenate([r[1] for r in records] + [np.zeros(0, np.float32)]))
    peaks = np.zeros(n_markers + 1, np.float64)
    peaks[ids] = values
    keys, saddles = _group_max(np.concatenate([r[2] for r in records] + [np.zeros(0, np.int64)]),
                               np.concatenate([r[3] for r in records] + [np.zeros(0, np.float32)]))
    lo, hi = np.divmod(keys, n_markers + 1)
    keep = saddles.astype(np.float64) >= ratio * np.minimum(peaks[lo], peaks[hi])
    graph = coo_matrix((np.ones(int(keep.sum()), np.int8), (lo[keep], hi[keep])),
                       shape=(n_markers + 1, n_markers + 1))
    _, component = connected_components(graph, directed=False)
    _, first, inverse = np.unique(component[1:], return_index=True, return_inverse=True)
    rank = np.empty(first.size, np.int64)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[inverse.ravel()]


def separate_particles_chunked(
    foreground,
    *,
    spacing=None,
    chunks=None,
    halo_um: float | None = None,
    max_halo_um: float | None = None,
    out=None,
    method: str = "h_maxima",
    h_um: float | None = None,
    smooth_um: float | None = None,
    min_distance_um: float | None = None,
    core_fraction: float = 0.7,
    resolution_um: float | None = None,
    connectivity: int = 26,
    merge_oversplit: bool = False,
    merge_ratio: float = 0.9,
    pillar: Pillar | None = None,
    levels_per_voxel: int = 4,
    runner: BlockRunner | None = None,
    scratch=None,
) -> ChunkedParticleSegmentation:
    """Split a particle foreground into particles block by block, as the in-memory chain does.

    Parameters
    ----------
    foreground : (P, M, N) ndarray, zarr.Array or dask.array.Array of bool or numbers
        Particles (non-zero) versus matrix/air, axes (z, y, x); never modified.
    spacing : float or sequence of 3 floats, optional
        Voxel size per axis in micrometres.
    chunks : (3,) sequence of int or Dask-style tuple of tuples, optional
        Block (core) shape. Default: the chunks of `foreground` (Zarr/Dask), else those of
        `out`, else the whole volume as one block.
    halo_um : float, optional
        Overlap added on every side of a block, in micrometres. Default: twice the largest
        distance-map value of the volume (the diameter of the largest inscribed ball) plus two
        voxels; see Notes.
    max_halo_um : float, optional
        Largest halo a block may grow to when a particle met by its core reaches the edge of
        its halo (default twice `halo_um`).
    out : zarr.Array or ndarray of unsigned int, optional
        Where the labels are written, block by block (same shape as `foreground`, best with the
        same chunks). Default: a new uint32 numpy array.
    method, h_um, smooth_um, min_distance_um, core_fraction, resolution_um, connectivity, pillar
        As in :func:`corrtomo.segment.separate_particles` (same defaults).
    merge_oversplit, merge_ratio
        As in :func:`corrtomo.segment.separate_particles`: merge touching particles whose
        saddle is at least `merge_ratio` times the shallower one's depth
        (:func:`~corrtomo.segment.merge_oversplit_particles`), before small particles are
        removed. Off by default; costs one more pass (see Notes).
    levels_per_voxel : int
        Grey levels per smallest voxel of the watershed queue
        (:func:`~corrtomo.segment.watershed_from_markers`).
    runner : corrtomo.BlockRunner, optional
        Where passes 2, 3 and the merge pass run their blocks (threads or a ``dask.distributed``
        cluster, which needs `out` to be a Zarr array every worker can open). Blocks are
        independent in these passes and their records are merged in block order, so the labels
        are identical to a serial run's. Default: serially in this process.
    scratch : (Z, Y, X) unsigned integer array, optional
        Where pass 2 writes the block-local labels, which pass 3 then reads to write `out`.
        Default: `out` itself, relabelled in place. With a Zarr scratch no pass rewrites its
        own input, so a runner keeping block records (:meth:`~corrtomo.BlockRunner.keep_records`)
        can resume an interrupted run; in place, the passes recompute every block.

    Returns
    -------
    ChunkedParticleSegmentation

    Warns
    -----
    HaloWarning
        Some particle met by a block's core still reaches the edge of the largest halo
        (`max_halo_um`): its labels may differ from the in-memory ones (see Notes).

    Raises
    ------
    InputError
        Non-3D or non-numeric input, bad chunks, halo, method, connectivity or (non-finite)
        `merge_ratio`, or `out` of the wrong shape or dtype.

    Notes
    -----
    Three passes over the blocks, four with ``merge_oversplit`` (a Python loop over blocks,
    never over voxels or labels):

    1. *Grey levels.* The EDT of each block plus a halo gives the largest distance
       :math:`d_{max}` of the volume. A block's EDT is an upper bound of the true EDT (it sees
       fewer background voxels) and is exact where it does not exceed the distance to the first
       voxel beyond the box; a block failing this certificate is redone with a halo of its
       maximum. :math:`d_{max}` sets the default halo and the grey levels of every block's
       watershed (``top_um``), so that all blocks flood on the levels of the whole volume.
    2. *Segmentation.* Each block plus its halo runs the in-memory chain unchanged
       (:func:`~corrtomo.segment.distance_map`, :func:`~corrtomo.segment.smooth_distance`,
       the markers, :func:`~corrtomo.segment.watershed_from_markers`). Every marker gets a
       global key, the raster index of its first voxel in the volume, which every block that
       sees the whole marker computes alike, so a particle crossing block cores keeps one
       identity without any exchange between blocks. Each core voxel keeps the label its own
       block computes; the block-local labels of the core, their keys, voxel counts and
       border flags are recorded. If a particle present in the core reaches a face where the
       box cuts the volume, the block is redone with a doubled halo (up to `max_halo_um`).
    3. *Global numbering.* The keys of all blocks are merged (``np.unique``), voxel counts are
       summed per key (per merged group with ``merge_oversplit``), particles with ESD below
       ``2 * resolution_um`` are dropped as in :func:`~corrtomo.segment.remove_small_particles`,
       the rest are numbered 1..n in key order (of a group's first key), and each block of `out`
       is relabelled with one lookup table (a vectorised take).

    With ``merge_oversplit``, a merge pass runs between passes 2 and 3, before small particles
    are removed as in memory. Markers are numbered 1..m in key order and each block's local
    labels are mapped to these numbers. Each block recomputes the exact EDT :math:`d` (the map
    the in-memory chain merges on: EDT of the foreground inside the pillar, not smoothed) on
    the block plus a halo of :math:`\\lceil d_{max} / s \\rceil + 2` voxels, and reads the
    labels of pass 2 on the core plus a one-voxel ring (the ring's labels mapped through the
    neighbouring blocks' tables). It records the largest :math:`d` per marker over the core
    (the depth :math:`p`) and, per unordered pair of touching markers, the largest
    :math:`\\min(d(x), d(y))` over voxel pairs with :math:`x` in the core and :math:`y = x + o`
    for the forward half of the `connectivity` offsets, so that every voxel pair of the volume
    is seen in exactly one block. The records are combined exactly (maxima), markers with
    saddle :math:`s_{ab} \\ge` ``merge_ratio`` :math:`\\min(p_a, p_b)` are joined (connected
    components of that graph, ``scipy.sparse.csgraph``), and pass 3 numbers the groups.

    **Guarantee.** The labels equal those of :func:`~corrtomo.segment.separate_particles` on
    the whole volume up to renumbering (a bijection between labels with the same voxels) when,
    in every block, each connected foreground component (cluster of touching particles) that
    meets the core lies at least one voxel (``1 +`` the eroded-core window for
    ``method="eroded_cores"``) inside the block's box. Proof sketch: the nearest background
    voxel of a foreground voxel lies within one voxel of its component, so the EDT, the
    three-tap relief and the markers of such a component are computed from the same values;
    marker floods and the watershed never cross the background, the watershed uses the same
    grey levels (global ``top``), and the FIFO flooding of disjoint components interleaves
    without interaction, with the components' voxels in the same relative raster order; so
    the component's labels are the same, and its markers the same sets with the same keys.
    Whether the condition held is returned as ``exact`` (it is checked per block with a
    ``cc3d`` labelling of the box). For ``method="eroded_cores"`` the proof also needs exact
    distances within the maximum-filter window around the component, which the check assumes.

    With ``merge_oversplit`` the guarantee carries over unchanged: whenever the watershed labels
    of pass 2 equal the in-memory ones up to renumbering (provably under the condition above),
    the labels equal those of ``separate_particles(..., merge_oversplit=True,
    merge_ratio=...)`` up to renumbering. The merge pass adds no condition of its own: the
    nearest background voxel of a voxel lies within :math:`d_{max}` of it, so the EDT of every
    core and ring voxel is the same minimum over the same background voxels as in memory; the
    voxel pairs are the in-memory ones, each seen once, and the depths, saddles (float32) and
    the comparison (float64) are the same numbers. A merged particle touches the border when
    any of its parts does, and ``n_cut_particles`` counts merged particles.

    In dense samples clusters are larger than any affordable halo. Then the markers and the
    flooding of a particle still depend only on the distance map within the particle and its
    surroundings, except where the flooding order inside one grey level (a quarter voxel of
    distance) spreads along a plateau that leaves the box; with every particle met by a core
    inside the box (checked; blocks grow their halo until it holds) the result matched the
    in-memory labels voxel for voxel on every twin tested (tests/test_chunked_particles.py).
    A particle larger than `max_halo_um` allows is flagged: a :class:`HaloWarning`, and
    ``n_cut_particles > 0``. Its core voxels then take the labels their own block computes
    from a truncated view: a block that does not see the particle's marker floods it from the
    other markers of its box (a neighbour's, or a spurious maximum of the overestimated
    distance near the cut), so that particle, and the neighbours it touches, may be split or
    partly merged. Every foreground voxel is still labelled (each connected piece of a box has
    a marker) and labels stay consistent across blocks wherever the same marker is seen.

    ``compactness`` of the in-memory function is not supported.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[:20, :20, :36]
    >>> two = ((z - 10)**2 + (y - 10)**2 + (x - 10)**2 < 64) | ((z - 10)**2 + (y - 10)**2 + (x - 25)**2 < 64)
    >>> result = separate_particles_chunked(two, spacing=1.0, chunks=(8, 8, 8))
    >>> result.n_particles, result.n_cut_particles, result.info["n_blocks"]
    (2, 0, 45)
    """

    timings = {"top_s": 0.0, "segment_s": 0.0, "merge_s": 0.0, "relabel_s": 0.0}
    shape = volume_shape(foreground, "foreground")
    if min(shape) == 0:
        raise InputError("the volume is empty", source="foreground")
    dtype = np.dtype(foreground.dtype)
    if dtype != np.bool_ and not np.issubdtype(dtype, np.number):
        raise InputError(f"expected a boolean mask, got dtype {dtype}", source="foreground")
    spacing = normalize_spacing(spacing, 3)
    if method not in _METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(_METHODS)}", source="method")
    if connectivity not in (6, 18, 26):
        raise InputError(f"connectivity must be 6, 18 or 26, got {connectivity}", source="connectivity")
    for name, value in (("halo_um", halo_um), ("max_halo_um", max_halo_um)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0):
            raise InputError(f"must be a finite value >= 0, got {value}", source=name)
    merge_ratio = float(merge_ratio)
    if merge_oversplit and not math.isfinite(merge_ratio):
        raise InputError(f"must be finite, got {merge_ratio}", source="merge_ratio")
    grid = block_grid(shape, chunks, like=(foreground,) if out is None else (foreground, out))
    target = np.zeros(shape, dtype=np.uint32) if out is None else _label_array(out, shape, "out")
    local_labels = target if scratch is None else _label_array(scratch, shape, "scratch")
    smallest = float(spacing.min())
    h_um = 0.15 * smallest if h_um is None else float(h_um)
    smooth_um = 0.7 * smallest if smooth_um is None else float(smooth_um)
    min_distance_um = 4.0 * smallest if min_distance_um is None else float(min_distance_um)
    min_esd = 0.0 if resolution_um is None else 2.0 * float(resolution_um)
    inside_pillar = None if pillar is None else pillar_mask(shape[1:], pillar)
    rim = None if pillar is None else ~pillar_mask(shape[1:], pillar, margin=1.0)
    margin = 1  # the proven condition: clusters lie this many voxels inside the box
    if method == "eroded_cores":  # plus the maximum-filter window of eroded_core_markers
        margin = 1 + int(np.max(np.maximum(1, np.round(min_distance_um / spacing))))

    runner = BlockRunner() if runner is None else runner
    if runner.kind == "distributed" and not hasattr(target, "store"):
        raise InputError("a dask.distributed runner writes into a Zarr array: pass out=", source="out")
    if runner.kind == "distributed" and not hasattr(local_labels, "store"):
        raise InputError("a dask.distributed runner writes into a Zarr array", source="scratch")

    # pass 1: the volume's largest distance (grey levels, default halo)
    start = time.perf_counter()
    first_halo = (np.full(3, 8, np.int64) if halo_um is None
                  else np.ceil(float(halo_um) / spacing).astype(np.int64))
    top, redone_top = _global_top(foreground, grid, spacing, inside_pillar, first_halo, runner)
    timings["top_s"] = time.perf_counter() - start
    if halo_um is None:
        halo_um = 2.0 * top + 2.0 * float(spacing.max())
    halo = np.ceil(float(halo_um) / spacing - 1e-9).astype(np.int64)
    max_halo_um = 2.0 * float(halo_um) if max_halo_um is None else max(float(max_halo_um), float(halo_um))
    max_halo = np.maximum(np.ceil(max_halo_um / spacing - 1e-9).astype(np.int64), halo)

    # pass 2: block + halo segmentation, local labels into `local_labels`
    if local_labels is target:  # relabelling in place rewrites pass 2's output: no block records
        runner = runner.without_records()
    start = time.perf_counter()
    records = []
    cut_keys = [np.zeros(0, np.int64)]
    n_grown = 0
    n_proven = 0
    largest_halo = halo.copy()
    tasks = runner.map(_segment_block, list(grid), foreground=foreground, target=local_labels, grid=grid, shape=shape,
                       spacing=spacing, halo=halo, max_halo=max_halo, inside_pillar=inside_pillar, rim=rim,
                       margin=margin, top=top, smooth_um=smooth_um,
                       marker_options={"method": method, "h_um": h_um, "min_distance_um": min_distance_um,
                                       "core_fraction": core_fraction, "connectivity": connectivity},
                       levels_per_voxel=levels_per_voxel)
    for record, cut, grown, proven, current in tasks:
        records.append(record)
        cut_keys.append(cut)
        n_grown += grown
        n_proven += proven
        largest_halo = np.maximum(largest_halo, current)
    timings["segment_s"] = time.perf_counter() - start

    all_keys = np.concatenate([r[1] for r in records] + [np.zeros(0, np.int64)])
    all_counts = np.concatenate([r[2] for r in records] + [np.zeros(0, np.int64)])
    unique_keys, inverse = np.unique(all_keys, return_inverse=True)
    voxels = np.bincount(inverse.ravel(), weights=all_counts, minlength=unique_keys.size)

    # optional pass: merge over-split markers (exact EDT again, peaks and saddles per block)
    group = None
    if merge_oversplit:
        start = time.perf_counter()
        merge_halo = (np.asarray(shape, np.int64) if not math.isfinite(top)
                      else np.ceil(top / spacing - 1e-9).astype(np.int64) + 2)
        merge_halo = np.minimum(merge_halo, np.asarray(shape, np.int64))
        markers = []  # per block: local label -> marker number 1..m (index in unique_keys + 1)
        for ids, keys, _, _ in records:
            lut = np.zeros(int(ids.max(initial=0)) + 1, np.int64)
            lut[ids] = np.searchsorted(unique_keys, keys) + 1
            markers.append(lut)
        grid_shape = grid.grid_shape
        items = []
        for index in grid:
            near = []
            for step in product((-1, 0, 1), repeat=3):
                other = tuple(i + d for i, d in zip(index, step, strict=True))
                if all(0 <= i < n for i, n in zip(other, grid_shape, strict=True)):
                    near.append((other, markers[int(np.ravel_multi_index(other, grid_shape))]))
            items.append((index, near))
        merge_records = list(runner.map(
            _merge_block, items, foreground=foreground, target=local_labels, grid=grid, spacing=spacing,
            halo=merge_halo, inside_pillar=inside_pillar, offsets=_forward_offsets(connectivity),
            n_markers=int(unique_keys.size)))
        del items, markers
        group = _merge_groups(merge_records, int(unique_keys.size), merge_ratio)
        voxels = np.bincount(group, weights=voxels, minlength=int(group.max(initial=-1)) + 1)
        timings["merge_s"] = time.perf_counter() - start

    # pass 3: global numbering (vectorised over labels), then relabel each block
    start = time.perf_counter()
    esd = np.cbrt(6.0 * voxels * float(np.prod(spacing)) / np.pi)
    keep = esd >= min_esd
    final = np.zeros(voxels.size, np.int64)
    final[keep] = np.arange(1, int(keep.sum()) + 1)
    if group is not None:
        final = final[group]  # per marker: its merged particle's number
    n = int(keep.sum())
    if n > np.iinfo(np.dtype(target.dtype)).max:
        raise InputError(f"dtype {target.dtype} cannot hold {n} labels", source="out")
    touches = np.zeros(n + 1, dtype=bool)
    border_keys = np.concatenate([r[3] for r in records] + [np.zeros(0, np.int64)])
    touches[final[np.searchsorted(unique_keys, border_keys)]] = True
    touches[0] = False
    luts = []
    for ids, keys, _, _ in records:
        lut = np.zeros(int(ids.max(initial=0)) + 1, dtype=np.dtype(target.dtype))
        lut[ids] = final[np.searchsorted(unique_keys, keys)]
        luts.append(lut)
    for _ in runner.map(_relabel_block, list(zip(grid, luts, strict=True)), source=local_labels, target=target,
                        grid=grid):
        pass
    timings["relabel_s"] = time.perf_counter() - start

    cut_keys = np.unique(np.concatenate(cut_keys))
    cut_particles = np.unique(final[np.searchsorted(unique_keys, cut_keys)])  # merged: count once
    n_cut = int(np.count_nonzero(cut_particles))
    if n_cut:
        warnings.warn(
            f"{n_cut} particle(s) reach beyond the largest halo ({max_halo_um:.3g} um); their labels "
            "may differ from the in-memory ones: raise max_halo_um or use larger chunks",
            HaloWarning, stacklevel=2,
        )
    info = {
        "method": method,
        "h_um": h_um,
        "smooth_um": smooth_um,
        "min_distance_um": min_distance_um,
        "core_fraction": core_fraction,
        "min_esd_um": min_esd,
        "connectivity": int(connectivity),
        "merge_oversplit": bool(merge_oversplit),
        "merge_ratio": merge_ratio,
        "spacing_um": spacing.tolist(),
        "top_um": top,
        "halo_um": float(halo_um),
        "max_halo_um": float(max_halo_um),
        "halo_voxels": halo.tolist(),
        "largest_halo_voxels": largest_halo.tolist(),
        "block_shape": [int(np.diff(b).max()) for b in grid.bounds],
        "n_blocks": grid.n_blocks,
        "n_blocks_exact": n_proven,
        "n_blocks_grown": n_grown,
        "n_blocks_top_redone": redone_top,
        "n_markers": int(unique_keys.size),
        "n_merged_markers": 0 if group is None else int(unique_keys.size - voxels.size),
        **timings,
    }
    return ChunkedParticleSegmentation(
        labels=target, n_particles=n, touches_border=touches, exact=n_proven == grid.n_blocks,
        n_cut_particles=n_cut, info=info,
    )
