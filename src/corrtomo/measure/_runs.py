"""The fused pass: per-label moments, phase counts and 2x2x2-cell surface in one sweep.

Moments. Every row ``image[z, y, :]`` is run-length encoded (runs of equal labels along x). A run
of length ``L`` at ``(z, y, x0..x1-1)`` adds, in closed form, ``L`` to the count, ``L z``, ``L y``
and ``sum x = L (x0 + x1 - 1) / 2`` to the first moments and ``L z^2``, ``L y^2``,
``sum x^2 = F(x1 - 1) - F(x0 - 1)`` with ``F(n) = n (n + 1) (2 n + 1) / 6``, ``L z y``,
``z sum x``, ``y sum x`` to the second moments; the bounding box is updated once per run and the
phase histogram once per run of equal phase inside it. Background runs cost nothing.

Surface. A 2x2x2 cell with lower corner ``(z, y, x)`` is uniform (contributes nothing) iff the 7
edges of a spanning tree of its corners join equal labels: the 4 x-edges of its rows and the
edges (z, y)-(z, y + 1), (z, y)-(z + 1, y), (z + 1, y)-(z + 1, y + 1) at x. These inequalities
are evaluated for a whole row of cells at once into a byte mask (a loop the compiler vectorises),
the mask is scanned 8 cells per 64-bit word, and only the non-uniform cells - those on a
surface, a few per cent - are classified: one branch-free equality mask per label of the cell, the
background going to a scratch row so that no test is needed. Cells on the faces of the block
(reading padding) take the plain path.

Planes are processed in z-chunks in parallel; each thread accumulates into its own rows (indexed
through ``lut[label]``) and the threads' accumulators are reduced at the end.
"""

from __future__ import annotations

import numba
import numpy as np

from ._surface import _fill_cell

__all__ = [
    "F_COUNT",
    "F_FIRST",
    "F_HIGH",
    "F_LOW",
    "F_PHASE",
    "F_SECOND",
    "fused_pass",
    "max_label",
]

# field offsets in a row of the integer accumulator
F_COUNT = 0
F_FIRST = 1  # z, y, x
F_SECOND = 4  # zz, yy, xx, zy, zx, yx
F_LOW = 10  # z, y, x
F_HIGH = 13  # z, y, x (one past the last voxel)
F_PHASE = 16  # one column per phase id
_BIG = np.iinfo(np.int64).max
# index of the lowest set bit of 1..255
_LOWEST_BIT = np.array([0] + [(i & -i).bit_length() - 1 for i in range(1, 256)], dtype=np.int64)


@numba.njit(parallel=True, cache=True)
def _max_kernel(image, bounds):
    n_blocks = bounds.shape[0] - 1
    best = np.zeros(n_blocks, dtype=np.uint64)
    for block in numba.prange(n_blocks):
        top = image[0, 0, 0] - image[0, 0, 0]
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(image.shape[1]):
                row = image[z, y]
                for x in range(image.shape[2]):
                    top = max(top, row[x])
        best[block] = np.uint64(top)
    return best.max()


def max_label(image: np.ndarray) -> int:
    """Largest value of a non-empty integer image (one parallel pass, no copy)."""
    if image.flags.c_contiguous:
        return int(image.max())  # numpy's SIMD reduction is memory-bound already
    depth = image.shape[0]
    parts = max(1, min(4 * numba.get_num_threads(), depth))
    bounds = np.linspace(0, depth, parts + 1).round().astype(np.int64)
    return int(_max_kernel(image, bounds))


@numba.njit(cache=True, nogil=True)
def _encode(row, ext_x, starts, values, k):
    """Append the run-length code of ``row[:ext_x]`` at ``k``: a background run starting at -1,
    the runs, a background run starting at ``ext_x`` and an end marker at ``ext_x + 1``."""
    starts[k] = -1
    values[k] = 0
    k += 1
    prev = row[0]
    starts[k] = 0
    values[k] = np.int64(prev)
    k += 1
    for x in range(1, ext_x):
        v = row[x]
        if v != prev:
            starts[k] = x
            values[k] = np.int64(v)
            k += 1
            prev = v
    starts[k] = ext_x
    values[k] = 0
    k += 1
    starts[k] = ext_x + 1
    values[k] = 0
    return k + 1


@numba.njit(cache=True, nogil=True)
def _row_moments(starts, values, k, z, y, cx, phase_row, use_phases, lut, acc, seen):
    """Moments of the runs of one encoded row, clipped to x < cx."""
    k += 1  # skip the leading background run at -1
    while starts[k] < cx:
        v = values[k]
        x0 = np.int64(starts[k])
        x1 = min(np.int64(starts[k + 1]), cx)
        k += 1
        if v == 0:
            continue
        r = lut[v]
        a = acc[r]
        seen[r] = True
        n = x1 - x0
        sx = (x0 + x1 - 1) * n // 2
        sxx = ((x1 - 1) * x1 * (2 * x1 - 1) - (x0 - 1) * x0 * (2 * x0 - 1)) // 6
        a[F_COUNT] += n
        a[F_FIRST] += n * z
        a[F_FIRST + 1] += n * y
        a[F_FIRST + 2] += sx
        a[F_SECOND] += n * z * z
        a[F_SECOND + 1] += n * y * y
        a[F_SECOND + 2] += sxx
        a[F_SECOND + 3] += n * z * y
        a[F_SECOND + 4] += z * sx
        a[F_SECOND + 5] += y * sx
        if z < a[F_LOW]:
            a[F_LOW] = z
        if y < a[F_LOW + 1]:
            a[F_LOW + 1] = y
        if x0 < a[F_LOW + 2]:
            a[F_LOW + 2] = x0
        if z >= a[F_HIGH]:
            a[F_HIGH] = z + 1
        if y >= a[F_HIGH + 1]:
            a[F_HIGH + 1] = y + 1
        if x1 > a[F_HIGH + 2]:
            a[F_HIGH + 2] = x1
        if use_phases:
            run = phase_row[x0:x1]  # indices from 0: no wraparound test per voxel
            p = run[0]
            s = 0
            for i in range(1, n):
                q = run[i]
                if q != p:
                    a[F_PHASE + p] += i - s
                    p = q
                    s = i
            a[F_PHASE + p] += n - s
        else:
            a[F_PHASE] += n


@numba.njit(cache=True, nogil=True)
def _add_cell(cell, lut, weights, surf, seen):
    """Add the area of every label of a non-uniform cell (8 corner labels); ``lut[0]`` points at
    a scratch row, so background needs no test."""
    remaining = 255
    for i in range(8):
        if not (remaining >> i) & 1:
            continue
        v = cell[i]
        mask = 0
        for j in range(i, 8):
            if cell[j] == v:
                mask |= 1 << j
        remaining &= ~mask
        row = lut[v]
        surf[row] += weights[mask]
        seen[row] = True
        if remaining == 0:
            break


@numba.njit(cache=True, nogil=True)
def _cells_plain(image, z, y, x_first, x_stop, lut, weights, surf, seen, cell):
    """Cells (z, y, x) for x in [x_first, x_stop), reading outside the image as background."""
    for x in range(x_first, x_stop):
        if not _fill_cell(image, z, y, x, cell):
            _add_cell(cell, lut, weights, surf, seen)


@numba.njit(cache=True, nogil=True)
def _cells_interior(r00, r01, r10, r11, x_first, x_stop, flags, lut, weights, surf, seen, cell):
    """Cells between the rows r00 = (z, y), r01 = (z, y + 1), r10 = (z + 1, y), r11 = (z + 1, y + 1)
    for x in [x_first, x_stop), all eight voxels inside the image."""
    n = x_stop - x_first
    # views starting at x_first: indices from range(n) are known non-negative, so the compiler
    # drops the negative-index wraparound and vectorises the first loop
    r00 = r00[x_first:]
    r01 = r01[x_first:]
    r10 = r10[x_first:]
    r11 = r11[x_first:]
    for i in range(n):
        a = r00[i]
        c = r10[i]
        flags[i] = (
            (a != r00[i + 1])
            | (r01[i] != r01[i + 1])
            | (c != r10[i + 1])
            | (r11[i] != r11[i + 1])
            | (a != r01[i])
            | (a != c)
            | (c != r11[i])
        )
    n_words = (n + 7) // 8
    for i in range(n, 8 * n_words):
        flags[i] = 0
    words = flags[: 8 * n_words].view(np.uint64)
    for w in range(n_words):
        if words[w] == 0:
            continue
        for k in range(8):
            i = 8 * w + k
            if flags[i]:
                cell[0] = r00[i]
                cell[1] = r00[i + 1]
                cell[2] = r01[i]
                cell[3] = r01[i + 1]
                cell[4] = r10[i]
                cell[5] = r10[i + 1]
                cell[6] = r11[i]
                cell[7] = r11[i + 1]
                _add_cell(cell, lut, weights, surf, seen)


@numba.njit(cache=True, nogil=True)
def _surface_plane(image, z, lo, cy, cx, lut, weights, surf, seen, cell, flags):
    """The cells (z, y, x) owned by the block in one plane of cells."""
    ez, ey, ex = image.shape
    # cells whose eight voxels lie inside the image along x
    x_first = max(lo[2], 0)
    x_stop = min(cx, ex - 1)
    inner_z = 0 <= z and z + 1 < ez and x_first < x_stop
    for y in range(lo[1], cy):
        if inner_z and 0 <= y and y + 1 < ey:
            _cells_interior(image[z, y], image[z, y + 1], image[z + 1, y], image[z + 1, y + 1],
                            x_first, x_stop, flags, lut, weights, surf, seen, cell)  # fmt: skip
            if lo[2] < x_first:
                _cells_plain(image, z, y, lo[2], x_first, lut, weights, surf, seen, cell)
            if x_stop < cx:
                _cells_plain(image, z, y, x_stop, cx, lut, weights, surf, seen, cell)
        else:
            _cells_plain(image, z, y, lo[2], cx, lut, weights, surf, seen, cell)


@numba.njit(cache=True, nogil=True)
def _moments_plane(image, phases, use_phases, z, cy, cx, lut, acc, seen, starts, values):
    """The runs of the block's rows in one plane."""
    ex = image.shape[2]
    for y in range(cy):
        _encode(image[z, y], ex, starts, values, 0)
        phase_row = phases[z, y] if use_phases else phases[0, 0]
        _row_moments(starts, values, 0, z, y, cx, phase_row, use_phases, lut, acc, seen)


@numba.njit(cache=True, nogil=True)
def _run_chunk(image, phases, use_phases, lut, weights, do_surface, core, lo, z_first, z_stop,
               t_acc, t_surf, t_seen, cell, starts, values, flags):  # fmt: skip
    """Planes ``[z_first, z_stop)`` of the fused pass into one accumulator set."""
    cz, cy, cx = core[0], core[1], core[2]
    for z in range(z_first, z_stop):
        if 0 <= z < cz:
            _moments_plane(image, phases, use_phases, z, cy, cx, lut, t_acc, t_seen, starts,
                           values)  # fmt: skip
        if do_surface:
            _surface_plane(image, z, lo, cy, cx, lut, weights, t_surf, t_seen, cell, flags)


@numba.njit(parallel=True, cache=True)
def _fused_kernel(image, phases, use_phases, lut, n_rows, n_phases, weights, do_surface, core, lo,
                  chunks, n_threads):  # fmt: skip
    # row n_rows is the scratch row of the background (lut[0] == n_rows)
    width = F_PHASE + n_phases
    acc = np.zeros((n_threads, n_rows + 1, width), dtype=np.int64)
    for t in range(n_threads):
        for r in range(n_rows + 1):
            for a in range(3):
                acc[t, r, F_LOW + a] = _BIG
                acc[t, r, F_HIGH + a] = -1
    surf = np.zeros((n_threads, n_rows + 1), dtype=np.float64)
    seen = np.zeros((n_threads, n_rows + 1), dtype=np.bool_)
    ex = image.shape[2]
    n_chunks = chunks.shape[0] - 1
    for t in numba.prange(n_threads):
        # accumulator set t takes the chunks t, t + n_threads, ... (interleaved for balance)
        cell = np.empty(8, dtype=np.int64)
        starts = np.empty(ex + 4, dtype=np.int64)
        values = np.empty(ex + 4, dtype=np.int64)
        flags = np.zeros(ex + 16, dtype=np.uint8)
        for chunk in range(t, n_chunks, n_threads):
            _run_chunk(image, phases, use_phases, lut, weights, do_surface, core, lo,
                       chunks[chunk], chunks[chunk + 1], acc[t], surf[t], seen[t], cell, starts,
                       values, flags)  # fmt: skip
    # reduce the threads' accumulators
    out = acc[0, :n_rows].copy()
    out_surf = surf[0, :n_rows].copy()
    out_seen = seen[0, :n_rows].copy()
    for t in range(1, n_threads):
        for r in range(n_rows):
            if not seen[t, r]:
                continue
            out_seen[r] = True
            out_surf[r] += surf[t, r]
            for f in range(width):
                if F_LOW <= f < F_LOW + 3:
                    out[r, f] = min(out[r, f], acc[t, r, f])
                elif F_HIGH <= f < F_HIGH + 3:
                    out[r, f] = max(out[r, f], acc[t, r, f])
                else:
                    out[r, f] += acc[t, r, f]
    return out, out_surf, out_seen


def fused_pass(image, phases, lut, n_rows, n_phases, weights, core, lo, surface=True):
    """Run the fused pass; see the module docstring.

    Parameters
    ----------
    image : (Z, Y, X) ndarray of int
        Labels (``lut[label]`` is the accumulator row, ``lut[0]`` is ignored); voxels past the
        image read as background.
    phases : (Z, Y, X) ndarray of uint8 or None
        Phase ids of the voxels.
    core : (3,) int
        Voxels ``[0, core)`` are counted; cells with lower corner in ``[lo, core)`` are owned.
    lo : (3,) int
        -1 on the volume's low faces (the padding cells), else 0.

    Returns
    -------
    acc : (n_rows, 16 + n_phases) int64
        Fields at ``F_COUNT, F_FIRST, F_SECOND, F_LOW, F_HIGH, F_PHASE``, block coordinates.
    surf : (n_rows,) float64
    seen : (n_rows,) bool
        Rows met in a voxel or a cell.
    """
    core = np.asarray(core, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.int64) if surface else np.zeros(3, np.int64)
    use_phases = phases is not None
    if not use_phases:
        phases = np.zeros((1, 1, 1), dtype=np.uint8)
    lut = lut.copy()
    lut[0] = n_rows
    z_start = int(lo[0])
    depth = int(core[0]) - z_start
    parts = max(1, min(8 * numba.get_num_threads(), depth))
    chunks = np.linspace(0, depth, parts + 1).round().astype(np.int64) + z_start
    return _fused_kernel(
        image, phases, use_phases, lut, n_rows, n_phases, weights, bool(surface), core, lo,
        chunks, numba.get_num_threads(),
    )  # fmt: skip
