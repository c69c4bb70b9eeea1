"""Particle separation: distance transform, markers, marker-based watershed, clean-up.

The classical split of a binary particle foreground into individual particles (porespy's SNOW,
Gostick 2017), in public steps that each accept the previous step's output:

1. :func:`distance_map` — exact Euclidean distance transform in micrometres (``edt``).
2. :func:`h_maxima_markers` or :func:`eroded_core_markers` — one marker per particle.
3. :func:`watershed_from_markers` — marker-based flooding of ``-distance`` restricted to the
   foreground (Vincent & Soille 1991; Beucher & Meyer 1993).
4. :func:`merge_oversplit_particles` — optional merging of neighbours joined by a thick neck.
5. :func:`remove_small_particles` — drop particles below twice the resolution (seeds/000).

:func:`separate_particles` runs them all. The voxel kernels are numba loops over the foreground
voxels; there is no Python loop over voxels or particles. Axes are (z, y, x) = (plane, row,
column) throughout.

Measured choices (talc-saxolite twin, 40 % requested touching share, truth foreground,
192^3-256^3, seeds 0-2 and 7):

* h-maxima markers on the EDT smoothed by a three-tap Gaussian (sigma 0.7 voxel), h = 0.15
  voxel: F1 0.994-0.997, 0.9-2.2 % of particles merged, median ESD within 0.5 %. Without the
  smoothing, any h trades splits for merges (h = 0.25 voxel: 82 splits, 1.25 % merged;
  h = 0.5 voxel: 4 splits, 2.1 % merged; F1 0.976-0.994).
* eroded cores (fraction 0.7, window 0.5 um) on the same smoothed EDT: F1 0.993 but 2.1-2.6 %
  merged; wider windows merge far more (9 % at 0.8 um). h-maxima is the default.
* Remaining merges are mostly small particles (ESD 5-7 voxels) attached to larger ones with no
  distance maximum of their own: no EDT marker can separate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np

from .._shared import InputError, connected_components, normalize_spacing
from ._foreground import Pillar, pillar_mask

__all__ = [
    "ParticleSegmentation",
    "border_touching",
    "distance_map",
    "eroded_core_markers",
    "h_maxima_markers",
    "merge_oversplit_particles",
    "remove_small_particles",
    "separate_particles",
    "smooth_distance",
    "watershed_from_markers",
]

_METHODS = ("h_maxima", "eroded_cores")
_IN_QUEUE = np.uint32(0xFFFFFFFF)


# --------------------------------------------------------------------------------------------
# neighbourhoods and checks
# --------------------------------------------------------------------------------------------


def _offsets(connectivity: int) -> np.ndarray:
    """(K, 3) int64 neighbour offsets of a 6-, 18- or 26-neighbourhood (centre excluded)."""
    order = {6: 1, 18: 2, 26: 3}.get(int(connectivity))
    if order is None:
        raise InputError(f"connectivity must be 6, 18 or 26, got {connectivity}", source="connectivity")
    grid = np.stack(np.meshgrid(*([np.arange(-1, 2)] * 3), indexing="ij"), axis=-1).reshape(-1, 3)
    norm = np.abs(grid).sum(axis=1)
    return np.ascontiguousarray(grid[(norm > 0) & (norm <= order)], dtype=np.int64)


def _flat_offsets(offsets: np.ndarray, shape) -> np.ndarray:
    """Offsets in a C-ordered raveled array of `shape`."""
    return np.ascontiguousarray((offsets[:, 0] * shape[1] + offsets[:, 1]) * shape[2] + offsets[:, 2])


def _check_volume(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise InputError(f"expected a 3D (z, y, x) volume, got {array.ndim}D shape {array.shape}", source=name)
    if array.size == 0:
        raise InputError("the volume is empty", source=name)
    return array


def _check_same_shape(a: np.ndarray, b: np.ndarray, name: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"shape {b.shape} differs from the foreground's {a.shape}", source=name)


def _as_foreground(foreground: np.ndarray) -> np.ndarray:
    foreground = _check_volume(foreground, "foreground")
    if foreground.dtype != np.bool_:
        if not np.issubdtype(foreground.dtype, np.number):
            raise InputError(f"expected a boolean mask, got dtype {foreground.dtype}", source="foreground")
        foreground = foreground != 0
    return foreground


# --------------------------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _inside(z, y, x, nz, ny, nx):
    return 0 <= z < nz and 0 <= y < ny and 0 <= x < nx


@numba.njit(cache=True, inline="always")
def _interior(z, y, x, nz, ny, nx):
    return 0 < z < nz - 1 and 0 < y < ny - 1 and 0 < x < nx - 1


@numba.njit(cache=True, inline="always")
def _neighbour(p, z, y, x, j, interior, offsets, flat, nz, ny, nx):
    """Flat index of neighbour `j` of voxel `p` = (z, y, x), or -1 outside the volume."""
    if interior:
        return p + flat[j]
    if _inside(z + offsets[j, 0], y + offsets[j, 1], x + offsets[j, 2], nz, ny, nx):
        return p + flat[j]
    return -1


@numba.njit(cache=True, nogil=True)
def _grow(buffer, size):
    new = np.empty(max(2 * buffer.size, size), dtype=buffer.dtype)
    new[: buffer.size] = buffer
    return new


@numba.njit(cache=True, nogil=True)
def _push(queue, head, tail, value):
    """Append to a FIFO held in queue[head:tail]; compacts or grows it when full."""
    if tail >= queue.size:
        if head > 0:
            queue[: tail - head] = queue[head:tail]
            tail -= head
            head = 0
        if tail >= queue.size:
            queue = _grow(queue, tail + 1)
    queue[tail] = value
    return queue, head, tail + 1


@numba.njit(cache=True, nogil=True)
def _reconstruct_by_dilation(rec, mask, shape, offsets, flat):  # pragma: no cover - numba
    """In-place grey reconstruction by dilation of `rec` (<= mask) under `mask`, on mask > 0.

    Flat (raveled) arrays. Hybrid algorithm of Vincent (1993): a forward and a backward raster
    scan, then a FIFO propagation from the voxels whose backward neighbours can still grow.
    Offsets are sorted in raster order, so the first half precede the centre.
    """
    nz, ny, nx = shape
    k = offsets.shape[0]
    half = k // 2
    queue = np.empty(1 << 16, dtype=np.int64)
    head = 0
    tail = 0
    p = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                m = mask[p]
                if m > 0:
                    inner = _interior(z, y, x, nz, ny, nx)
                    v = rec[p]
                    for j in range(half):
                        q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                        if q >= 0 and mask[q] > 0 and rec[q] > v:
                            v = rec[q]
                    rec[p] = min(v, m)
                p += 1
    p = nz * ny * nx - 1
    for z in range(nz - 1, -1, -1):
        for y in range(ny - 1, -1, -1):
            for x in range(nx - 1, -1, -1):
                m = mask[p]
                if m > 0:
                    inner = _interior(z, y, x, nz, ny, nx)
                    v = rec[p]
                    for j in range(half, k):
                        q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                        if q >= 0 and mask[q] > 0 and rec[q] > v:
                            v = rec[q]
                    v = min(v, m)
                    rec[p] = v
                    for j in range(half, k):
                        q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                        if q >= 0 and mask[q] > 0 and rec[q] < v and rec[q] < mask[q]:
                            queue, head, tail = _push(queue, head, tail, p)
                            break
                p -= 1
    plane = ny * nx
    while head < tail:
        p = queue[head]
        head += 1
        z = p // plane
        y = (p // nx) % ny
        x = p % nx
        inner = _interior(z, y, x, nz, ny, nx)
        v = rec[p]
        for j in range(k):
            q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
            if q >= 0:
                m = mask[q]
                if m > 0:
                    r = rec[q]
                    if r < v and r != m:
                        rec[q] = min(v, m)
                        queue, head, tail = _push(queue, head, tail, q)


@numba.njit(cache=True, nogil=True)
def _label_regional_maxima(values, mask, shape, offsets, flat, labels):  # pragma: no cover - numba
    """Label the regional maxima of `values` on mask > 0 (flat arrays); return their number.

    A regional maximum is a connected plateau of equal values with no higher neighbour inside
    the mask. Pass 1 flags every voxel with a higher neighbour; pass 2 floods the plateaus of
    the remaining voxels and keeps those that contain no flagged voxel.
    """
    nz, ny, nx = shape
    k = offsets.shape[0]
    flagged = _IN_QUEUE
    p = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask[p] > 0:
                    inner = _interior(z, y, x, nz, ny, nx)
                    v = values[p]
                    for j in range(k):
                        q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                        if q >= 0 and mask[q] > 0 and values[q] > v:
                            labels[p] = flagged
                            break
                p += 1
    plane = ny * nx
    visiting = np.uint32(0xFFFFFFFE)
    stack = np.empty(1 << 12, dtype=np.int64)
    n = 0
    for start in range(nz * ny * nx):
        if mask[start] <= 0 or labels[start] != 0:
            continue
        level = values[start]
        stack[0] = start
        labels[start] = visiting
        top = 1
        read = 0
        is_max = True
        while read < top:
            p = stack[read]
            read += 1
            z = p // plane
            y = (p // nx) % ny
            x = p % nx
            inner = _interior(z, y, x, nz, ny, nx)
            for j in range(k):
                q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                if q >= 0 and mask[q] > 0 and values[q] == level:
                    lab = labels[q]
                    if lab == 0:
                        if top >= stack.size:
                            stack = _grow(stack, top + 1)
                        stack[top] = q
                        labels[q] = visiting
                        top += 1
                    elif lab == flagged:
                        is_max = False  # the plateau holds a voxel with a higher neighbour
        if is_max:
            n += 1
            mark = np.uint32(n)
        else:
            mark = flagged
        for i in range(top):
            labels[stack[i]] = mark
    for p in range(nz * ny * nx):
        if labels[p] == flagged:
            labels[p] = 0
    return n


@numba.njit(cache=True, nogil=True)
def _h_maxima_flood(values, mask, shape, offsets, flat, h, labels):  # pragma: no cover - numba
    """Label the regional maxima of the h-maxima transform of `values` on mask > 0 (flat arrays).

    Pass 1 flags every voxel with a higher neighbour. Pass 2 floods, from each unflagged voxel
    of value p, the connected set of voxels with value >= p - h; the flood stops as soon as it
    meets a value above p (dynamic < h: every explored voxel is flagged, for each of them would
    reach that higher value too), otherwise the whole set is one marker. Returns the number of
    markers; flagged voxels are left at 0xFFFFFFFF for the caller to clear.
    """
    nz, ny, nx = shape
    plane = ny * nx
    k = offsets.shape[0]
    flagged = _IN_QUEUE
    visiting = np.uint32(0xFFFFFFFE)
    p = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask[p] > 0:
                    inner = _interior(z, y, x, nz, ny, nx)
                    v = values[p]
                    for j in range(k):
                        q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                        if q >= 0 and mask[q] > 0 and values[q] > v:
                            labels[p] = flagged
                            break
                p += 1
    stack = np.empty(1 << 12, dtype=np.int64)
    n = 0
    for start in range(nz * ny * nx):
        if mask[start] <= 0 or labels[start] != 0:
            continue
        peak = values[start]
        floor = peak - h
        stack[0] = start
        labels[start] = visiting
        top = 1
        read = 0
        significant = True
        while read < top and significant:
            p = stack[read]
            read += 1
            z = p // plane
            y = (p // nx) % ny
            x = p % nx
            inner = _interior(z, y, x, nz, ny, nx)
            for j in range(k):
                q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                if q < 0 or mask[q] <= 0:
                    continue
                w = values[q]
                if w > peak:
                    significant = False
                    break
                if w >= floor and labels[q] != visiting:
                    if top >= stack.size:
                        stack = _grow(stack, top + 1)
                    stack[top] = q
                    labels[q] = visiting
                    top += 1
        if significant:
            n += 1
            mark = np.uint32(n)
        else:
            mark = flagged
        for i in range(top):
            labels[stack[i]] = mark
    return n


@numba.njit(cache=True, nogil=True)
def _smooth3(values, shape, weights, out):  # pragma: no cover - numba
    """Separable three-tap filter (weights[axis] = (side, centre)), edge mode 'nearest'.

    `out` receives the result and may not alias `values`; voxels with values <= 0 stay 0.
    """
    nz, ny, nx = shape
    plane = ny * nx
    side, centre = weights[2, 0], weights[2, 1]
    for r in range(nz * ny):
        base = r * nx
        for x in range(nx):
            left = values[base + max(x - 1, 0)]
            right = values[base + min(x + 1, nx - 1)]
            out[base + x] = centre * values[base + x] + side * (left + right)
    side, centre = weights[1, 0], weights[1, 1]
    previous = np.empty(nx, dtype=out.dtype)
    for z in range(nz):
        base = z * plane
        for x in range(nx):
            previous[x] = out[base + x]
        for y in range(ny):
            row = base + y * nx
            below = base + min(y + 1, ny - 1) * nx
            for x in range(nx):
                current = out[row + x]
                out[row + x] = centre * current + side * (previous[x] + out[below + x])
                previous[x] = current
    side, centre = weights[0, 0], weights[0, 1]
    previous_plane = np.empty(plane, dtype=out.dtype)
    previous_plane[:] = out[:plane]
    for z in range(nz):
        base = z * plane
        after = min(z + 1, nz - 1) * plane
        for i in range(plane):
            current = out[base + i]
            out[base + i] = centre * current + side * (previous_plane[i] + out[after + i])
            previous_plane[i] = current
    for i in range(values.size):
        if values[i] <= 0:
            out[i] = 0


@numba.njit(cache=True, nogil=True)
def _sorted_by_level(distance, step, n_levels, top):  # pragma: no cover - numba
    """Counting sort of the voxels with distance > 0 (flat array) by decreasing distance.

    Returns (order, starts, top): flat indices level by level (level 0 = the highest distance,
    each level `step` wide, counted down from `top`; top < 0: the array's maximum) and the start
    of each level in `order` (length n_levels + 1). Values above `top` join level 0.
    """
    if top < 0:
        top = 0.0
        for p in range(distance.size):
            if distance[p] > top:
                top = distance[p]
    counts = np.zeros(n_levels + 1, dtype=np.int64)
    for p in range(distance.size):
        d = distance[p]
        if d > 0:
            counts[min(max(int((top - d) / step), 0), n_levels - 1) + 1] += 1
    for i in range(n_levels):
        counts[i + 1] += counts[i]
    starts = counts.copy()
    order = np.empty(counts[n_levels], dtype=np.int64)
    for p in range(distance.size):
        d = distance[p]
        if d > 0:
            level = min(max(int((top - d) / step), 0), n_levels - 1)
            order[counts[level]] = p
            counts[level] += 1
    return order, starts, top


@numba.njit(cache=True, nogil=True)
def _flood(distance, labels, shape, order, starts, top, offsets, flat, level_step):  # pragma: no cover - numba
    """Marker-based watershed of ``-distance`` on distance > 0 (flat arrays), in place.

    Flooding by immersion (Vincent & Soille 1991): `labels` holds the markers. Levels are
    processed from the highest distance down; at each level the voxels next to a labelled voxel
    start a FIFO breadth-first flood through unlabelled voxels of this or a higher distance
    level, so plateaus are split by geodesic distance. A voxel takes the label of its labelled
    neighbour with the largest distance. A labelled voxel marks its deeper-level neighbours as
    pending, so each voxel's neighbourhood is read once.
    """
    nz, ny, nx = shape
    plane = ny * nx
    k = offsets.shape[0]
    n_levels = starts.size - 1
    pending = np.uint32(0xFFFFFFFD)
    queue = np.empty(order.size + 1, dtype=np.int64)
    head = 0
    tail = 0
    for i in range(order.size):  # neighbours of the markers are pending
        p = order[i]
        if labels[p] == 0 or labels[p] == pending:
            continue
        z = p // plane
        y = (p // nx) % ny
        x = p % nx
        inner = _interior(z, y, x, nz, ny, nx)
        for j in range(k):
            q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
            if q >= 0 and labels[q] == 0 and distance[q] > 0:
                labels[q] = pending
    for level in range(n_levels):
        floor = top - (level + 1) * level_step  # voxels deeper than this belong to levels <= level
        for i in range(starts[level], starts[level + 1]):
            p = order[i]
            if labels[p] == pending:
                labels[p] = _IN_QUEUE
                queue[tail] = p
                tail += 1
        while head < tail:
            p = queue[head]
            head += 1
            z = p // plane
            y = (p // nx) % ny
            x = p % nx
            inner = _interior(z, y, x, nz, ny, nx)
            best = np.uint32(0)
            best_d = -1.0
            for j in range(k):
                q = _neighbour(p, z, y, x, j, inner, offsets, flat, nz, ny, nx)
                if q < 0:
                    continue
                lab = labels[q]
                d = distance[q]
                if lab == 0 or lab == pending:
                    if d > floor:
                        labels[q] = _IN_QUEUE
                        queue[tail] = q
                        tail += 1
                    elif d > 0:
                        labels[q] = pending
                elif lab != _IN_QUEUE and d > best_d:
                    best_d = d
                    best = lab
            labels[p] = best


@numba.njit(cache=True, nogil=True)
def _label_peaks(distance, labels, n):  # pragma: no cover - numba
    peaks = np.zeros(n + 1, dtype=np.float64)
    nz, ny, nx = labels.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                lab = labels[z, y, x]
                if lab and distance[z, y, x] > peaks[lab]:
                    peaks[lab] = distance[z, y, x]
    return peaks


@numba.njit(cache=True, nogil=True)
def _contact_saddles(distance, labels, offsets):  # pragma: no cover - numba
    """For every pair of touching labels (a < b): the highest min(distance) across their contact.

    Returns (pairs (m, 2) int64, saddles (m,) float64); only the forward half of `offsets` is
    scanned, so each voxel pair is seen once.
    """
    nz, ny, nx = labels.shape
    k = offsets.shape[0]
    half = k // 2
    best = dict()
    best[np.int64(0)] = 0.0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a = labels[z, y, x]
                if a == 0:
                    continue
                da = distance[z, y, x]
                for j in range(half, k):
                    zz = z + offsets[j, 0]
                    yy = y + offsets[j, 1]
                    xx = x + offsets[j, 2]
                    if not _inside(zz, yy, xx, nz, ny, nx):
                        continue
                    b = labels[zz, yy, xx]
                    if b == 0 or b == a:
                        continue
                    s = min(da, distance[zz, yy, xx])
                    lo = min(a, b)
                    hi = max(a, b)
                    key = (np.int64(lo) << 32) | np.int64(hi)
                    if key in best:
                        if s > best[key]:
                            best[key] = s
                    else:
                        best[key] = s
    m = len(best) - 1
    pairs = np.empty((m, 2), dtype=np.int64)
    saddles = np.empty(m, dtype=np.float64)
    i = 0
    for key, s in best.items():
        if key == 0:
            continue
        pairs[i, 0] = key >> 32
        pairs[i, 1] = key & 0xFFFFFFFF
        saddles[i] = s
        i += 1
    return pairs, saddles


# --------------------------------------------------------------------------------------------
# public steps
# --------------------------------------------------------------------------------------------


def distance_map(foreground: np.ndarray, *, spacing=None, parallel: int = 1) -> np.ndarray:
    """Exact Euclidean distance of each foreground voxel to the nearest background voxel.

    Parameters
    ----------
    foreground : (P, M, N) bool ndarray
        Particle foreground, axes (z, y, x).
    spacing : float or sequence of 3 floats, optional
        Voxel size per axis in micrometres (default 1).
    parallel : int
        Threads for ``edt`` (default 1).

    Returns
    -------
    distance : (P, M, N) float32 ndarray
        :math:`d(x) = \\min_{y \\notin F} \\lVert (x - y) \\odot s \\rVert_2` in micrometres for
        voxels of the foreground :math:`F`, 0 elsewhere. The volume border is *not* background
        (``black_border=False``), so particles cut by the border keep their depth.

    Notes
    -----
    Felzenszwalb & Huttenlocher's separable squared-distance algorithm as implemented by
    ``edt`` (Silversmith), exact for anisotropic voxels.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((5, 5, 5), bool); mask[1:4, 1:4, 1:4] = True
    >>> float(distance_map(mask, spacing=0.5)[2, 2, 2])
    1.0
    """
    import edt

    foreground = _as_foreground(foreground)
    spacing = normalize_spacing(spacing, 3)
    distance = edt.edt(
        np.ascontiguousarray(foreground), anisotropy=tuple(spacing), black_border=False,
        parallel=int(parallel),
    )
    return np.asarray(distance, dtype=np.float32)


def smooth_distance(distance: np.ndarray, *, spacing=None, sigma_um: float | None = None) -> np.ndarray:
    """Lightly smooth a distance map inside the foreground, to remove discretisation maxima.

    Parameters
    ----------
    distance : (P, M, N) float ndarray
        Distance map in micrometres (0 = background).
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres.
    sigma_um : float, optional
        Gaussian sigma in micrometres; default 0.7 times the smallest voxel size. 0 returns
        the map unchanged.

    Returns
    -------
    (P, M, N) float32 ndarray
        :math:`(G_\\sigma * d)\\,[d > 0]` with a Gaussian truncated at one voxel (three taps
        per axis).

    Notes
    -----
    The exact EDT of a voxelised shape is a staircase: a convex particle gets spurious
    regional maxima whose dynamic is a fraction of a voxel. A three-tap Gaussian removes most of
    them, so a small `h` (a fraction of a voxel) suffices for the h-maxima and touching
    particles with a shallow neck stay separate.
    """
    distance = _check_volume(distance, "distance")
    spacing = normalize_spacing(spacing, 3)
    sigma_um = 0.7 * float(spacing.min()) if sigma_um is None else float(sigma_um)
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    if sigma_um <= 0:
        return distance
    sigma = sigma_um / spacing
    side = np.exp(-0.5 / sigma**2)
    weights = np.stack([side, np.ones(3)], axis=1) / (1 + 2 * side)[:, None]
    smooth = np.empty_like(distance)
    _smooth3(distance.ravel(), distance.shape, weights.astype(np.float32), smooth.ravel())
    return smooth


def h_maxima_markers(distance: np.ndarray, *, h_um: float, connectivity: int = 26) -> np.ndarray:
    """Markers from the h-maxima of a distance map: one per peak of dynamic >= `h_um`.

    Parameters
    ----------
    distance : (P, M, N) float ndarray
        Distance map in micrometres (:func:`distance_map`); voxels with distance 0 are background.
    h_um : float
        Minimum dynamic (peak height above the saddle to a higher peak) in micrometres.
    connectivity : {6, 18, 26}

    Returns
    -------
    markers : (P, M, N) uint32 ndarray
        Regional maxima of the h-maxima transform labelled 1..n (0 elsewhere).

    Notes
    -----
    The h-maxima transform is the grey reconstruction by dilation of :math:`d - h` under
    :math:`d`, :math:`\\mathrm{HMAX}_h(d) = R^{\\delta}_{d}(d - h)` (Soille 2003, sec. 6.3.3); its
    regional maxima (Soille's extended maxima :math:`\\mathrm{EMAX}_h`) are the peaks of
    :math:`d` whose dynamic is at least :math:`h`. The regional maximum of
    :math:`R^{\\delta}_d(d - h)` above a peak of height :math:`p` is the connected component of
    :math:`\\{d \\ge p - h\\}` around it, provided that component holds no value above
    :math:`p`; so instead of reconstructing the whole volume (Vincent 1993), each candidate peak
    (a voxel with no higher neighbour) floods that component and stops at the first higher value.
    Every explored voxel of a failed flood would fail too, so it is never a start again: the cost
    is one pass plus the small floods above the saddles, restricted to :math:`d > 0`, and every
    connected foreground component gets at least one marker. The result equals the regional
    maxima of the reconstruction (``_reconstruct_by_dilation`` + ``_label_regional_maxima``,
    kept as the reference implementation).

    References
    ----------
    L. Vincent, "Morphological grayscale reconstruction in image analysis: applications and
    efficient algorithms", IEEE Trans. Image Process. 2(2), 1993.
    """
    distance = _check_volume(distance, "distance")
    h = float(h_um)
    if not math.isfinite(h) or h < 0:
        raise InputError(f"must be a finite value >= 0, got {h_um}", source="h_um")
    offsets = _offsets(connectivity)
    values = np.ascontiguousarray(distance, dtype=np.float32)
    flat = _flat_offsets(offsets, values.shape)
    markers = np.zeros(values.shape, dtype=np.uint32)
    _h_maxima_flood(values.ravel(), values.ravel(), values.shape, offsets, flat, np.float32(h),
                    markers.ravel())
    markers[markers == _IN_QUEUE] = 0
    return markers


def eroded_core_markers(
    distance: np.ndarray, *, spacing=None, fraction: float = 0.7, min_distance_um: float = 0.5,
    connectivity: int = 26,
) -> np.ndarray:
    """Markers from eroded cores: voxels deeper than `fraction` of the local maximum depth.

    Parameters
    ----------
    distance : (P, M, N) float ndarray
        Distance map in micrometres (:func:`distance_map`).
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres.
    fraction : float
        Core threshold relative to the local maximum, in (0, 1].
    min_distance_um : float
        Half-width of the window over which the local maximum is taken, in micrometres.
    connectivity : {6, 18, 26}

    Returns
    -------
    markers : (P, M, N) uint32 ndarray
        Connected components of the cores, labelled 1..n.

    Notes
    -----
    :math:`C = \\{x : d(x) \\ge f \\max_{\\lVert y - x \\rVert_\\infty \\le r} d(y)\\}`, a
    scale-adaptive erosion: each particle keeps its deepest ``1 - f`` share of radius, so two
    touching particles whose neck radius is below :math:`f` times their radius get two cores.
    The maximum filter is separable (``scipy.ndimage.maximum_filter``).
    """
    from scipy import ndimage

    distance = _check_volume(distance, "distance")
    spacing = normalize_spacing(spacing, 3)
    if not 0 < fraction <= 1:
        raise InputError(f"must lie in (0, 1], got {fraction}", source="fraction")
    _offsets(connectivity)
    size = tuple(int(2 * max(1, round(min_distance_um / s)) + 1) for s in spacing)
    local = ndimage.maximum_filter(np.asarray(distance, dtype=np.float32), size=size, mode="nearest")
    cores = (distance > 0) & (distance >= np.float32(fraction) * local)
    del local
    return connected_components(cores, connectivity=int(connectivity))


def watershed_from_markers(
    distance: np.ndarray, markers: np.ndarray, *, spacing=None, connectivity: int = 26,
    compactness: float = 0.0, levels_per_voxel: int = 4, top_um: float | None = None,
) -> np.ndarray:
    """Marker-based watershed of ``-distance`` restricted to the foreground (distance > 0).

    Parameters
    ----------
    distance : (P, M, N) float ndarray
        Distance map in micrometres; 0 = background, never labelled.
    markers : (P, M, N) int ndarray
        Seeds, 0 = none. Their labels are kept.
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres (sets the grey-level quantisation).
    connectivity : {6, 18, 26}
    compactness : float
        > 0 uses scikit-image's compact watershed (Neubert & Protzel 2014) instead of the
        numba flooding.
    levels_per_voxel : int
        Grey levels per smallest voxel size: the distance is quantised to
        ``min(spacing) / levels_per_voxel`` for the hierarchical queue (4: the same F1 and
        matched IoU as 32 on the twin, 15 % faster).
    top_um : float, optional
        Distance at which the grey levels start (default ``distance.max()``). A block of a
        larger volume passes the whole volume's maximum so that it is flooded on the same grey
        levels as the whole volume (:func:`corrtomo.chunked.separate_particles_chunked`).

    Returns
    -------
    labels : (P, M, N) uint32 ndarray
        Every foreground voxel connected to a marker carries that marker's label.

    Notes
    -----
    Flooding by immersion (Vincent & Soille 1991) with markers (Beucher & Meyer 1993): levels of
    :math:`-d` are processed in increasing order through a hierarchical FIFO queue; a voxel joins
    the basin of its labelled neighbour with the largest :math:`d`. Plateaus are split by
    geodesic distance (FIFO order). Linear in the number of foreground voxels.

    References
    ----------
    L. Vincent and P. Soille, "Watersheds in digital spaces: an efficient algorithm based on
    immersion simulations", IEEE TPAMI 13(6), 1991.
    S. Beucher and F. Meyer, "The morphological approach to segmentation: the watershed
    transformation", in Mathematical Morphology in Image Processing, 1993.
    """
    distance = _check_volume(distance, "distance")
    markers = _check_volume(markers, "markers")
    _check_same_shape(distance, markers, "markers")
    spacing = normalize_spacing(spacing, 3)
    offsets = _offsets(connectivity)
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    if markers.size and (np.issubdtype(markers.dtype, np.signedinteger) and markers.min() < 0):
        raise InputError("marker labels must be >= 0", source="markers")
    if markers.max(initial=0) >= int(_IN_QUEUE):
        raise InputError("marker labels must be below 2**32 - 1", source="markers")
    labels = np.array(markers, dtype=np.uint32, order="C", copy=True)
    labels[distance <= 0] = 0
    if compactness > 0:
        from skimage.segmentation import watershed

        footprint = np.zeros((3, 3, 3), bool)
        footprint[tuple((offsets + 1).T)] = True
        footprint[1, 1, 1] = True
        return watershed(-distance, labels, mask=distance > 0, connectivity=footprint,
                         compactness=float(compactness)).astype(np.uint32, copy=False)
    step = float(spacing.min()) / max(int(levels_per_voxel), 1)
    top = float(distance.max(initial=0.0)) if top_um is None else max(float(top_um), 0.0)
    n_levels = max(1, min(int(top / step) + 1, 1 << 24))
    step = max(step, top / n_levels) if top > 0 else 1.0
    order, starts, top = _sorted_by_level(distance.ravel(), step, n_levels, top)
    _flood(distance.ravel(), labels.ravel(), distance.shape, order, starts, top, offsets,
           _flat_offsets(offsets, distance.shape), step)
    labels[labels >= np.uint32(0xFFFFFFFD)] = 0  # guard: no queue states may leak out
    return labels


def merge_oversplit_particles(
    labels: np.ndarray, distance: np.ndarray, *, ratio: float = 0.9, connectivity: int = 26,
) -> np.ndarray:
    """Merge touching labels joined by a neck almost as thick as the thinner of the two.

    Parameters
    ----------
    labels : (P, M, N) uint32 ndarray
        Watershed labels.
    distance : (P, M, N) float ndarray
        The distance map the watershed was run on.
    ratio : float
        Merge labels ``a`` and ``b`` when their saddle :math:`s_{ab} \\ge`
        ``ratio`` :math:`\\min(p_a, p_b)`.
    connectivity : {6, 18, 26}

    Returns
    -------
    labels : (P, M, N) uint32 ndarray
        Sequential labels 1..n after merging (connected components of the merge graph).

    Notes
    -----
    :math:`p_a = \\max_{x \\in a} d(x)` is the depth of label ``a`` and
    :math:`s_{ab} = \\max_{x \\in a, y \\in b, y \\in N(x)} \\min(d(x), d(y))` the depth of the
    pass between two labels. Two touching convex particles meet at a neck much thinner than
    either (:math:`s \\ll p`); a particle cut in two by a shallow dent keeps :math:`s \\approx p`.
    """
    import fastremap
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labels = _check_volume(labels, "labels")
    distance = _check_volume(distance, "distance")
    _check_same_shape(labels, distance, "distance")
    labels = np.ascontiguousarray(labels, dtype=np.uint32)
    distance = np.ascontiguousarray(distance, dtype=np.float32)
    n = int(labels.max(initial=0))
    if n == 0:
        return labels.copy()
    pairs, saddles = _contact_saddles(distance, labels, _offsets(connectivity))
    peaks = _label_peaks(distance, labels, n)
    keep = saddles >= ratio * np.minimum(peaks[pairs[:, 0]], peaks[pairs[:, 1]])
    pairs = pairs[keep]
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n + 1, n + 1)
    )
    _, component = connected_components(graph, directed=False)
    component = component.astype(np.uint32) + 1
    component[0] = 0  # label 0 is alone in its component
    merged = component[labels]
    return fastremap.renumber(merged, in_place=True, preserve_zero=True)[0].astype(np.uint32, copy=False)


def remove_small_particles(
    labels: np.ndarray, *, spacing=None, min_esd_um: float = 0.0,
) -> np.ndarray:
    """Set to 0 every label whose equivalent spherical diameter is below `min_esd_um`.

    Parameters
    ----------
    labels : (P, M, N) int ndarray
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres.
    min_esd_um : float
        Smallest kept ESD, :math:`(6 V / \\pi)^{1/3}` with :math:`V = n_{vox} \\prod s`.

    Returns
    -------
    labels : (P, M, N) uint32 ndarray
        Sequential labels 1..n of the kept particles.
    """
    import fastremap

    labels = _check_volume(labels, "labels")
    spacing = normalize_spacing(spacing, 3)
    labels = np.array(labels, dtype=np.uint32, order="C", copy=True)
    ids, counts = fastremap.unique(labels, return_counts=True)
    esd = np.cbrt(6.0 * counts * float(np.prod(spacing)) / np.pi)
    small = ids[(esd < min_esd_um) & (ids > 0)]
    if small.size:
        labels = fastremap.mask(labels, small.tolist(), in_place=True)
    present = ids[ids > 0]
    if small.size or (present.size and int(present[-1]) != present.size):  # not 1..n
        labels = fastremap.renumber(labels, in_place=True, preserve_zero=True)[0]
    return np.asarray(labels, dtype=np.uint32)


def border_touching(labels: np.ndarray, *, pillar: Pillar | None = None, n_labels: int | None = None) -> np.ndarray:
    """Which labels touch the volume border or the pillar border.

    Parameters
    ----------
    labels : (P, M, N) int ndarray
        Particle labels.
    pillar : Pillar, optional
        Cylindrical field of view; a label touches its border when it has a voxel within one
        voxel of the cylinder wall, :math:`r \\ge R - 1`.
    n_labels : int, optional
        Length of the result minus one (default ``labels.max()``).

    Returns
    -------
    touches : (n_labels + 1,) bool ndarray
        ``touches[i]`` for label ``i``; ``touches[0]`` is False.
    """
    labels = _check_volume(labels, "labels")
    n = int(labels.max(initial=0)) if n_labels is None else int(n_labels)
    touches = np.zeros(n + 1, dtype=bool)
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    for face in faces:
        touches[np.unique(face)] = True
    if pillar is not None:
        rim = ~pillar_mask(labels.shape[1:], pillar, margin=1.0)
        touches[np.unique(labels[:, rim])] = True
    touches[0] = False
    return touches


# --------------------------------------------------------------------------------------------
# the whole chain
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParticleSegmentation:
    """Result of :func:`separate_particles`.

    Attributes
    ----------
    labels : (P, M, N) uint32 ndarray
        Particles labelled 1..n, 0 = background.
    n_particles : int
    touches_border : (n + 1,) bool ndarray
        Per label (index = label; entry 0 is False): the particle touches the volume border or
        the pillar wall, so it may be cut.
    markers : (P, M, N) uint32 ndarray
        The watershed seeds.
    info : dict
        Parameters used and the time of each step (seconds).
    """

    labels: np.ndarray
    n_particles: int
    touches_border: np.ndarray
    markers: np.ndarray
    info: dict = field(default_factory=dict)


def separate_particles(
    foreground: np.ndarray,
    *,
    spacing=None,
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
    compactness: float = 0.0,
    distance: np.ndarray | None = None,
    markers: np.ndarray | None = None,
) -> ParticleSegmentation:
    """Split a particle foreground into individual particles (distance-transform watershed).

    Parameters
    ----------
    foreground : (P, M, N) bool ndarray
        Particles versus matrix/air, axes (z, y, x).
    spacing : float or sequence of 3 floats, optional
        Voxel size per axis in micrometres.
    method : {"h_maxima", "eroded_cores"}
        How markers are made (ignored when `markers` is given).
    h_um : float, optional
        Dynamic of the h-maxima in micrometres; default 0.15 times the smallest voxel size
        (measured on the twin, see the module notes).
    smooth_um : float, optional
        Sigma of the light Gaussian applied to the distance map before markers are made
        (:func:`smooth_distance`); default 0.7 times the smallest voxel size, 0 for none. The
        watershed itself runs on the exact distance map.
    min_distance_um : float, optional
        Window half-width for eroded cores in micrometres; default 4 times the smallest voxel.
    core_fraction : float
        Relative depth of eroded cores (see :func:`eroded_core_markers`).
    resolution_um : float, optional
        Spatial resolution of the image; particles with ESD below ``2 * resolution_um`` are
        removed (seeds/000). ``None`` keeps all.
    connectivity : {6, 18, 26}
        Neighbourhood of markers and watershed.
    merge_oversplit : bool
        Merge neighbours joined by a thick neck (:func:`merge_oversplit_particles` with
        `merge_ratio`). Off by default here; the pipeline turns it on
        (``stages.particles.merge_oversplit``): over the demo twin's seeds 0-5 (with the phase
        refinement) ratio 0.9 gave particle F1 0.9885 against 0.9872 without, and 21 of 24
        liberation degrees within 0.05 of truth against 20, because a composite split at its
        grain boundary reads as two free particles. On an earlier 96^3 twin it joined some true
        touching pairs (F1 0.9955, 1.6 % merged, versus 0.9960 and 1.25 % without).
    merge_ratio : float
    pillar : Pillar, optional
        Cylindrical field of view; voxels outside are cleared first, and particles at its wall
        are flagged in ``touches_border``.
    compactness : float
        > 0 switches to a compact watershed (scikit-image).
    distance, markers : (P, M, N) ndarray, optional
        Precomputed distance map (micrometres, 0 outside `foreground`) and/or markers, to
        skip those steps.

    Returns
    -------
    ParticleSegmentation

    Raises
    ------
    InputError
        Wrong dimensionality, mismatched shapes, unknown method or a bad parameter.

    Notes
    -----
    SNOW-style chain (Gostick 2017): :math:`d = \\mathrm{EDT}(F)`, markers = regional maxima of
    :math:`R^{\\delta}_d(d - h)` (or eroded cores), watershed of :math:`-d` from the markers
    inside :math:`F`, optional neck-based merging, then removal of particles with
    :math:`\\mathrm{ESD} = (6V/\\pi)^{1/3} < 2 \\cdot` resolution.

    References
    ----------
    J. T. Gostick, "Versatile and efficient pore network extraction method using
    marker-based watershed segmentation", Phys. Rev. E 96, 023307, 2017.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[:20, :20, :36]
    >>> two = ((z - 10)**2 + (y - 10)**2 + (x - 10)**2 < 64) | ((z - 10)**2 + (y - 10)**2 + (x - 25)**2 < 64)
    >>> separate_particles(two, spacing=1.0).n_particles
    2
    """
    import time

    timings: dict[str, float] = {}
    foreground = _as_foreground(foreground)
    spacing = normalize_spacing(spacing, 3)
    if method not in _METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(_METHODS)}", source="method")
    _offsets(connectivity)
    smallest = float(spacing.min())
    h_um = 0.15 * smallest if h_um is None else float(h_um)
    smooth_um = 0.7 * smallest if smooth_um is None else float(smooth_um)
    min_distance_um = 4.0 * smallest if min_distance_um is None else float(min_distance_um)
    if pillar is not None:
        foreground = foreground & pillar_mask(foreground.shape[1:], pillar)[None]

    start = time.perf_counter()
    if distance is None:
        distance = distance_map(foreground, spacing=spacing)
    else:
        distance = _check_volume(distance, "distance")
        _check_same_shape(foreground, distance, "distance")
        distance = np.ascontiguousarray(distance, dtype=np.float32)
        if pillar is not None:
            distance = np.where(foreground, distance, np.float32(0))
    timings["distance_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if markers is None:
        relief = smooth_distance(distance, spacing=spacing, sigma_um=smooth_um)
        if method == "h_maxima":
            markers = h_maxima_markers(relief, h_um=h_um, connectivity=connectivity)
        else:
            markers = eroded_core_markers(
                relief, spacing=spacing, fraction=core_fraction, min_distance_um=min_distance_um,
                connectivity=connectivity,
            )
        del relief
    else:
        markers = _check_volume(markers, "markers")
        _check_same_shape(foreground, markers, "markers")
    timings["markers_s"] = time.perf_counter() - start

    start = time.perf_counter()
    labels = watershed_from_markers(
        distance, markers, spacing=spacing, connectivity=connectivity, compactness=compactness
    )
    timings["watershed_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if merge_oversplit:
        labels = merge_oversplit_particles(labels, distance, ratio=merge_ratio, connectivity=connectivity)
    timings["merge_s"] = time.perf_counter() - start

    start = time.perf_counter()
    min_esd = 0.0 if resolution_um is None else 2.0 * float(resolution_um)
    labels = remove_small_particles(labels, spacing=spacing, min_esd_um=min_esd)
    n = int(labels.max(initial=0))
    touches = border_touching(labels, pillar=pillar, n_labels=n)
    timings["clean_s"] = time.perf_counter() - start

    info = {
        "method": method,
        "h_um": h_um,
        "smooth_um": smooth_um,
        "min_distance_um": min_distance_um,
        "core_fraction": core_fraction,
        "min_esd_um": min_esd,
        "connectivity": int(connectivity),
        "merge_oversplit": bool(merge_oversplit),
        "merge_ratio": float(merge_ratio),
        "compactness": float(compactness),
        "spacing_um": spacing.tolist(),
        "n_markers": int(markers.max(initial=0)),
        **timings,
    }
    return ParticleSegmentation(
        labels=labels, n_particles=n, touches_border=touches, markers=np.asarray(markers, np.uint32),
        info=info,
    )

