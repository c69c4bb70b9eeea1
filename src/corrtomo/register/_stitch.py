"""Stitching of CT sub-volumes stacked along one axis (e.g. the paper's three nano-CT scans of a
pillar): overlap found by registration, intensities matched, seams blended, out of core on Zarr.

Registration of neighbours A (above) and B (below). The tail of A and the head of B (``L``
slices each, a central lateral window) are compared at every displacement ``d`` of B relative to
A with the normalised cross-correlation over their overlap, computed for all displacements at
once with FFTs (masked NCC; Padfield 2012, the overlap-normalised form of the phase/cross-
correlation of Kuglin & Hines 1975 and Lewis 1995):

    NCC(d) = (S_fm - S_f S_m / n) / sqrt((S_ff - S_f^2 / n)(S_mm - S_m^2 / n)),

where ``n(d)``, ``S_f(d)``, ``S_ff(d)``, ``S_m(d)``, ``S_mm(d)``, ``S_fm(d)`` are sums over the
overlap at displacement ``d``, each a correlation of an image (or its square, or its support)
with a support (or the other image). The search is restricted to B lying below A's top with at
least `min_overlap` slices in common and lateral shifts up to `max_shift`; large slabs are
searched binned first and refined at full resolution. A parabola through the NCC at the best
integer displacement and its neighbours gives the sub-voxel part. Optionally a small rotation is
refined with SimpleITK (Euler 3D transform, correlation metric). Intensities are matched by a
linear map fitted in the overlap (``v_A = g v_B + o`` with ``g = sd_A / sd_B`` and
``o = mean_A - g mean_B``: the reduced-major-axis fit, unbiased when both sides are noisy) and
chained from the first piece. Overlaps are blended with linear ramps (feathering) along the
stacking axis.

References
----------
Kuglin, C. D., Hines, D. C. (1975). The phase correlation image alignment method. Proc. IEEE
Int. Conf. Cybernetics and Society, 163-165.
Lewis, J. P. (1995). Fast normalized cross-correlation. Vision Interface, 120-123.
Padfield, D. (2012). Masked object registration in the Fourier domain. IEEE Trans. Image
Process. 21, 2706-2718.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft, ndimage

from .._shared import InputError, RigidTransform, normalize_spacing

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class StitchResult:
    """A stitched volume and how the pieces were placed.

    Attributes
    ----------
    volume : (P, M, N) ndarray of float32 or None
        The stitched volume (``None`` when written to `path`).
    path : pathlib.Path or None
        The OME-Zarr store written (out-of-core mode).
    shape : tuple of int
        Shape of the stitched volume (z, y, x).
    offsets : (n_pieces, 3) ndarray of float64
        Position of every piece's voxel (0, 0, 0) in the stitched grid, (z, y, x) voxels.
    transforms : tuple of RigidTransform
        Piece voxel coordinates -> stitched voxel coordinates (``x_out = M @ [x_piece, 1]``).
    gains, intensity_offsets : (n_pieces,) ndarray of float64
        Intensity map applied to each piece: ``g v + o`` (first piece: 1, 0).
    scores : (n_pieces - 1,) ndarray of float64
        NCC of each pair of neighbours over their overlap after alignment.
    overlaps : (n_pieces - 1,) ndarray of float64
        Overlap of each pair along the stacking axis, voxels.
    voxel_size_um : (3,) ndarray or None
        Voxel size of the stitched volume (that of the pieces).
    info : dict
    """

    volume: np.ndarray | None
    path: Path | None
    shape: tuple[int, int, int]
    offsets: np.ndarray
    transforms: tuple[RigidTransform, ...]
    gains: np.ndarray
    intensity_offsets: np.ndarray
    scores: np.ndarray
    overlaps: np.ndarray
    voxel_size_um: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- reading
class _Piece:
    """A 3D array-like (numpy, memmap, Zarr, Dask) seen with the stacking axis first; read lazily."""

    def __init__(self, data: Any, axis: int, index: int):
        if hasattr(data, "data") and hasattr(data, "spacing") and not hasattr(data, "ndim"):
            data = data.data  # a corrtomo.io.Volume
        if not hasattr(data, "shape") or not hasattr(data, "__getitem__"):
            data = np.asarray(data)
        if len(data.shape) != 3:
            raise InputError(f"piece {index} has shape {tuple(data.shape)}; expected a 3D volume", source="volumes")
        if np.dtype(data.dtype).kind not in "biuf":
            raise InputError(f"piece {index} has type {data.dtype}; expected numbers", source="volumes")
        self.data, self.axis, self.index = data, axis, index
        shape = tuple(int(n) for n in data.shape)
        self.shape = (shape[axis], *[n for a, n in enumerate(shape) if a != axis])

    def read(self, z: tuple[int, int], y: tuple[int, int] | None = None, x: tuple[int, int] | None = None) -> np.ndarray:
        """float32 block [z0:z1, y0:y1, x0:x1] in stacking-axis-first order."""
        y = y or (0, self.shape[1])
        x = x or (0, self.shape[2])
        order = [a for a in range(3) if a != self.axis]
        slicer = [slice(None)] * 3
        slicer[self.axis] = slice(*z)
        slicer[order[0]] = slice(*y)
        slicer[order[1]] = slice(*x)
        block = np.asarray(self.data[tuple(slicer)], dtype=np.float32)
        block = np.moveaxis(block, self.axis, 0)
        if not np.all(np.isfinite(block)):
            raise InputError(f"piece {self.index} holds NaN or infinite values", source="volumes")
        return block


# ------------------------------------------------------------------------------ registration
def _correlate(a_hat: np.ndarray, b_hat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return fft.irfftn(a_hat * np.conj(b_hat), s=shape, workers=-1)


def masked_ncc(fixed: np.ndarray, moving: np.ndarray, max_shift: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation over the overlap for every displacement (FFT, Padfield 2012).

    Parameters
    ----------
    fixed, moving : (P, M, N) ndarray
        Images (fully valid; partial overlaps are normalised by the overlap's own statistics).
    max_shift : (3,) sequence of int
        Largest displacement magnitude computed per axis (``|d_a| <= max_shift_a``).

    Returns
    -------
    ncc : ndarray
        NCC indexed by ``d + max_shift`` (shape ``2 max_shift + 1``), where moving voxel ``x``
        lies on fixed voxel ``x + d``.
    n : ndarray
        Overlap voxel count per displacement.
    """
    fixed = np.asarray(fixed, dtype=np.float64)
    moving = np.asarray(moving, dtype=np.float64)
    max_shift = [int(s) for s in max_shift]
    size = [fft.next_fast_len(max(f, m) + s + 1, real=True) for f, m, s in zip(fixed.shape, moving.shape, max_shift, strict=True)]
    size = tuple(size)
    mean = 0.5 * (fixed.mean() + moving.mean())
    f, m = fixed - mean, moving - mean  # centring improves the numerical accuracy of the sums
    one_f, one_m = np.ones_like(f), np.ones_like(m)
    fh = {k: fft.rfftn(v, s=size, workers=-1) for k, v in {"f": f, "ff": f * f, "1": one_f}.items()}
    mh = {k: fft.rfftn(v, s=size, workers=-1) for k, v in {"m": m, "mm": m * m, "1": one_m}.items()}
    n = _correlate(fh["1"], mh["1"], size)
    s_f = _correlate(fh["f"], mh["1"], size)
    s_ff = _correlate(fh["ff"], mh["1"], size)
    s_m = _correlate(fh["1"], mh["m"], size)
    s_mm = _correlate(fh["1"], mh["mm"], size)
    s_fm = _correlate(fh["f"], mh["m"], size)
    index = np.ix_(*[np.arange(-s, s + 1) % n_ for s, n_ in zip(max_shift, size, strict=True)])
    n, s_f, s_ff, s_m, s_mm, s_fm = (a[index] for a in (n, s_f, s_ff, s_m, s_mm, s_fm))
    n = np.rint(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        var_f = s_ff - s_f**2 / n
        var_m = s_mm - s_m**2 / n
        ncc = (s_fm - s_f * s_m / n) / np.sqrt(var_f * var_m)
    eps = 1e-6 * max(float(np.abs(s_ff).max()), float(np.abs(s_mm).max()), 1e-30)
    ncc[(n < 1) | (var_f <= eps) | (var_m <= eps) | ~np.isfinite(ncc)] = -np.inf
    return ncc, n


def _ncc_direct(fixed: np.ndarray, moving: np.ndarray, d: np.ndarray) -> float:
    """NCC over the overlap at one integer displacement (moving voxel x on fixed voxel x + d)."""
    lo = np.maximum(0, d)
    hi = np.minimum(fixed.shape, np.asarray(moving.shape) + d)
    if np.any(hi - lo < 2):
        return -np.inf
    a = fixed[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float64).ravel()
    b = moving[lo[0] - d[0] : hi[0] - d[0], lo[1] - d[1] : hi[1] - d[1], lo[2] - d[2] : hi[2] - d[2]]
    b = b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else -np.inf


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    shape = [n // factor for n in image.shape]
    cut = image[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor]
    return cut.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def _register_pair(a: _Piece, b: _Piece, *, overlap_range, max_shift, max_search_slices, max_lateral,
                   max_voxels):
    """Displacement of B's origin in A's coordinates (stacking-axis first), NCC, overlap arrays."""
    lo_overlap, hi_overlap = overlap_range
    length = int(min(hi_overlap, a.shape[0], b.shape[0], max_search_slices))
    if length < lo_overlap:
        raise InputError(
            f"pieces {a.index} and {b.index} are too short for an overlap of {lo_overlap} slices",
            source="volumes",
        )
    # central lateral windows of equal size (plus the shift margin on A)
    window = [min(a.shape[k], b.shape[k], max_lateral) for k in (1, 2)]
    b_start = [(b.shape[k] - w) // 2 for k, w in zip((1, 2), window, strict=True)]
    a_start = [(a.shape[k] - w) // 2 for k, w in zip((1, 2), window, strict=True)]
    tail = a.read((a.shape[0] - length, a.shape[0]), *[(s, s + w) for s, w in zip(a_start, window, strict=True)])
    head = b.read((0, length), *[(s, s + w) for s, w in zip(b_start, window, strict=True)])
    shifts = np.array([length, *[min(int(max_shift), w - 2) for w in window]])
    # displacement d of head in tail: head row 0 on tail row d_z = length - overlap
    factor = 1
    while np.prod((np.asarray(tail.shape) + shifts) / factor) > max_voxels and min(tail.shape) // (factor * 2) >= 4:
        factor *= 2
    ncc, n = masked_ncc(_bin(tail, factor), _bin(head, factor), np.maximum(shifts // factor, 1))
    offset = np.maximum(shifts // factor, 1)
    dz = np.arange(ncc.shape[0]) - offset[0]
    allowed = (dz >= 0) & (dz * factor <= length - lo_overlap)
    ncc[~allowed] = -np.inf
    n_min = 0.25 * min(lo_overlap, length) / factor * np.prod(np.asarray(head.shape[1:]) / factor)
    ncc[n < n_min] = -np.inf
    if not np.isfinite(ncc).any():
        raise InputError(f"no overlap found between pieces {a.index} and {b.index}", source="volumes")
    coarse = (np.array(np.unravel_index(np.argmax(ncc), ncc.shape)) - offset) * factor
    # integer refinement at full resolution, then a parabola per axis
    radius = factor if factor > 1 else 0
    best, best_score = coarse, -np.inf
    if radius:
        grid = np.stack(np.meshgrid(*[np.arange(-radius, radius + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
        for step in grid:  # (2 factor + 1)^3 candidates, each one vectorised over the overlap
            d = coarse + step
            if d[0] < 0 or d[0] > length - lo_overlap:
                continue
            score = _ncc_direct(tail, head, d)
            if score > best_score:
                best, best_score = d, score
    else:
        best_score = _ncc_direct(tail, head, best)
    subvoxel = np.zeros(3)
    for axis in range(3):
        e = np.zeros(3, dtype=np.int64)
        e[axis] = 1
        minus, plus = _ncc_direct(tail, head, best - e), _ncc_direct(tail, head, best + e)
        if np.isfinite(minus) and np.isfinite(plus):
            curvature = minus - 2 * best_score + plus
            if curvature < 0:
                subvoxel[axis] = float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))
    # overlap arrays for intensity matching
    lo = np.maximum(0, best)
    hi = np.minimum(tail.shape, np.asarray(head.shape) + best)
    over_a = tail[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    over_b = head[lo[0] - best[0] : hi[0] - best[0], lo[1] - best[1] : hi[1] - best[1], lo[2] - best[2] : hi[2] - best[2]]
    tail_start = np.array([a.shape[0] - length, *a_start], dtype=np.float64)
    head_start = np.array([0, *b_start], dtype=np.float64)
    position = tail_start - head_start + best + subvoxel
    return position, float(best_score), over_a, over_b, (tail, head, best, tail_start, head_start)


def _refine_rotation(tail, head, best, max_rotation_deg):
    """Small rotation of head relative to tail (SimpleITK Euler3D, correlation metric).

    Returns a 4x4 matrix (z, y, x) mapping head voxel coordinates to tail voxel coordinates, or
    ``None`` when the refinement moves by more than `max_rotation_deg`.
    """
    import SimpleITK as sitk

    fixed = sitk.GetImageFromArray(tail.astype(np.float32))
    moving = sitk.GetImageFromArray(head.astype(np.float32))
    moving.SetOrigin([float(best[2]), float(best[1]), float(best[0])])  # (x, y, z) physical
    centre = np.array(tail.shape[::-1], dtype=np.float64) / 2.0
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre.tolist())
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=0.5, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.7
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    angles = np.rad2deg(np.abs(transform.GetParameters()[:3]))
    if np.any(angles > max_rotation_deg):
        return None
    # T maps fixed physical (x, y, z) -> moving physical; head voxel h sits at moving physical h + best
    rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
    translation = np.asarray(transform.GetTranslation())
    c = np.asarray(transform.GetCenter())
    forward = np.eye(4)  # fixed -> moving physical, xyz
    forward[:3, :3] = rotation
    forward[:3, 3] = translation + c - rotation @ c
    permute = np.eye(4)[[2, 1, 0, 3]]
    forward_zyx = permute @ forward @ permute
    origin = np.eye(4)
    origin[:3, 3] = -np.asarray(best, dtype=np.float64)  # moving physical -> head voxel
    return np.linalg.inv(origin @ forward_zyx)  # head voxel -> tail voxel


def _intensity_map(over_a: np.ndarray, over_b: np.ndarray) -> tuple[float, float]:
    """``v_A ~ g v_B + o`` by reduced major axis over the overlap."""
    sd_a, sd_b = float(over_a.std()), float(over_b.std())
    if sd_b <= 0 or sd_a <= 0:
        return 1.0, float(over_a.mean() - over_b.mean())
    gain = sd_a / sd_b
    return gain, float(over_a.mean() - gain * over_b.mean())


# -------------------------------------------------------------------------------- composition
def _compose_slab(pieces, matrices, gains, offsets_i, starts, z0, z1, out_lateral, blend, cval):
    """Output slab [z0, z1) (stacking-axis first): blended, intensity-matched pieces."""
    shape = (z1 - z0, *out_lateral)
    numerator = np.zeros(shape, dtype=np.float64)
    denominator = np.zeros(shape, dtype=np.float64)
    hard_weight = np.full(shape, -np.inf) if blend == "none" else None
    hard_value = np.zeros(shape, dtype=np.float64) if blend == "none" else None
    z = np.arange(z0, z1, dtype=np.float64)
    for piece, matrix, gain, offset, start in zip(pieces, matrices, gains, offsets_i, starts, strict=True):
        length = piece.shape[0]
        if start + length <= z0 - 1 or start >= z1 + 1:
            continue
        values, valid = _resample_piece(piece, matrix, z0, z1, out_lateral)
        if values is None:
            continue
        # linear ramp: distance (voxels) to the piece's ends along the stacking axis
        ramp = np.minimum(z - start + 0.5, start + length - 0.5 - z)[:, None, None]
        weight = np.where(valid, np.clip(ramp, 0.0, None), 0.0)
        values = gain * values + offset
        if blend == "none":
            better = (weight > 0) & (weight > hard_weight)
            hard_value[better] = values[better]
            hard_weight[better] = weight[better]
        else:
            numerator += weight * values
            denominator += weight
    if blend == "none":
        out = np.where(np.isfinite(hard_weight), hard_value, cval)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(denominator > 0, numerator / denominator, cval)
    return out.astype(np.float32)


def _resample_piece(piece: _Piece, matrix: np.ndarray, z0: int, z1: int, out_lateral):
    """Values of a piece on output slab [z0, z1) and where they are defined."""
    inverse = np.linalg.inv(matrix)
    rotation = inverse[:3, :3]
    shift = inverse[:3, 3]
    shape = (z1 - z0, *out_lateral)
    if np.allclose(rotation, np.eye(3), atol=1e-9):
        # translation only: piece voxel = out voxel + shift
        lo = np.array([z0, 0, 0], dtype=np.float64) + shift
        hi = lo + np.asarray(shape) - 1
        read_lo = np.maximum(np.floor(lo).astype(int) - 1, 0)
        read_hi = np.minimum(np.ceil(hi).astype(int) + 2, piece.shape)
        if np.any(read_hi <= read_lo):
            return None, None
        block = piece.read(*zip(read_lo.tolist(), read_hi.tolist(), strict=True))
        base = lo - read_lo  # block coordinate of output voxel (z0, 0, 0)
        integer = np.allclose(base, np.rint(base), atol=1e-6)
        grids = [np.arange(n) + b for n, b in zip(shape, base, strict=True)]
        valid = np.ones(shape, dtype=bool)
        for axis, (g, n_piece, r0) in enumerate(zip(grids, piece.shape, read_lo, strict=True)):
            inside = (g + r0 >= -0.5) & (g + r0 < n_piece - 0.5)
            view = [None, None, None]
            view[axis] = slice(None)
            valid &= inside[tuple(view)]
        if integer:
            index = [np.clip(np.rint(g).astype(int), 0, block.shape[k] - 1) for k, g in enumerate(grids)]
            values = block[np.ix_(*index)]
        else:
            coords = np.meshgrid(*grids, indexing="ij")
            values = ndimage.map_coordinates(block, coords, order=1, mode="nearest")
        return values, valid
    # rotation: full coordinate mapping, per slab
    out = np.stack(np.meshgrid(np.arange(z0, z1), np.arange(shape[1]), np.arange(shape[2]), indexing="ij"), -1)
    coords = out.astype(np.float64) @ rotation.T + shift
    lo = np.maximum(np.floor(coords.reshape(-1, 3).min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(coords.reshape(-1, 3).max(axis=0)).astype(int) + 2, piece.shape)
    if np.any(hi <= lo):
        return None, None
    block = piece.read(*zip(lo.tolist(), hi.tolist(), strict=True))
    valid = np.all((coords >= -0.5) & (coords < np.asarray(piece.shape) - 0.5), axis=-1)
    values = ndimage.map_coordinates(block, np.moveaxis(coords - lo, -1, 0), order=1, mode="nearest")
    return values, valid


# ------------------------------------------------------------------------------------ public
def stitch_volumes(
    volumes: Sequence[Any],
    *,
    axis: int = 0,
    overlap_hint: int | tuple[int, int] | None = None,
    min_overlap: int = 4,
    max_shift: int = 16,
    max_rotation_deg: float = 0.0,
    blend: str = "linear",
    match_intensity: bool = True,
    spacing: float | Sequence[float] | None = None,
    out: str | os.PathLike | None = None,
    slab: int = 32,
    cval: float = 0.0,
    max_search_slices: int = 256,
    max_lateral: int = 256,
    max_search_voxels: float = 2.0e7,
    progress: Progress | None = None,
) -> StitchResult:
    """Stitch overlapping sub-volumes stacked along `axis` into one volume.

    Parameters
    ----------
    volumes : sequence of (P, M, N) array-like
        The pieces in stacking order (numpy arrays, memory maps, Zarr or Dask arrays, or
        ``corrtomo.io.Volume``); each overlaps the next along `axis`. Read lazily, never modified.
    axis : int
        Stacking axis (0 = z).
    overlap_hint : int or (int, int), optional
        Expected overlap in slices (searched within +-50 %) or a (min, max) range. Default: any
        overlap from `min_overlap` up to the shorter piece (capped by `max_search_slices`).
    min_overlap : int
        Fewest slices two neighbours must share.
    max_shift : int
        Largest lateral shift (voxels) between neighbours.
    max_rotation_deg : float
        0: translation only. Otherwise a small rotation per pair is refined with SimpleITK and
        kept when within this bound.
    blend : {"linear", "none"}
        Linear ramps across each overlap, or a hard seam at the overlap's middle.
    match_intensity : bool
        Map each piece's grey values onto the first piece's by the linear fit in the overlaps.
    spacing : float or (3,) sequence of float, optional
        Voxel size (z, y, x) in micrometres, recorded in the result and the Zarr output.
    out : str or os.PathLike, optional
        Write the result as an OME-Zarr store here, slab by slab (out of core), instead of
        returning it in memory. Needs `spacing`.
    slab : int
        Slices per slab when composing.
    cval : float
        Value of output voxels that no piece covers (lateral shifts).
    max_search_slices, max_lateral, max_search_voxels : int, int, float
        Bounds of the registration search: slices of each tail/head compared, central lateral
        window, and voxel count above which the search runs binned first.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    StitchResult

    Raises
    ------
    InputError
        Fewer than two pieces, a piece that is not 3D, lateral sizes too small, no overlap,
        NaN values, a bad axis or blend, or `out` without a voxel size.

    Notes
    -----
    See the module notes for the registration, intensity matching and blending formulas. The
    output grid spans the union of the placed pieces; the first piece's voxel grid is kept
    (offsets of later pieces may be fractional and are resampled trilinearly).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> volume = rng.normal(size=(40, 24, 24)).astype(np.float32)
    >>> result = stitch_volumes([volume[:24], volume[16:]])
    >>> result.offsets[1].round(2).tolist(), result.shape
    ([16.0, 0.0, 0.0], (40, 24, 24))
    """
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2, got {axis!r}", source="axis")
    if blend not in ("linear", "none"):
        raise InputError(f"blend must be 'linear' or 'none', got {blend!r}", source="blend")
    volumes = list(volumes)
    if len(volumes) < 2:
        raise InputError(f"need at least two pieces to stitch, got {len(volumes)}", source="volumes")
    pieces = [_Piece(v, axis, i) for i, v in enumerate(volumes)]
    voxel_size = None if spacing is None else normalize_spacing(spacing, 3, name="spacing")
    if out is not None and voxel_size is None:
        raise InputError("the stitched volume needs a voxel size; pass spacing= (--voxel-size)", source="spacing")
    if overlap_hint is None:
        overlap_range = (int(min_overlap), int(1e9))
    elif np.ndim(overlap_hint) == 0:
        hint = float(overlap_hint)
        overlap_range = (max(int(min_overlap), int(np.floor(0.5 * hint))), int(np.ceil(1.5 * hint)))
    else:
        low, high = (int(v) for v in overlap_hint)
        overlap_range = (max(int(min_overlap), low), high)
    if overlap_range[0] < 1 or overlap_range[1] < overlap_range[0]:
        raise InputError(f"invalid overlap range {overlap_range}", source="overlap_hint")

    n = len(pieces)
    matrices = [np.eye(4)]
    gains, intensity_offsets = [1.0], [0.0]
    scores, overlaps = [], []
    for k in range(n - 1):
        a, b = pieces[k], pieces[k + 1]
        position, score, over_a, over_b, search = _register_pair(
            a, b, overlap_range=overlap_range, max_shift=max_shift,
            max_search_slices=max_search_slices, max_lateral=max_lateral, max_voxels=max_search_voxels,
        )
        pair = np.eye(4)
        pair[:3, 3] = position
        if max_rotation_deg > 0:
            tail, head, best, tail_start, head_start = search
            rotated = _refine_rotation(tail, head, best, float(max_rotation_deg))
            if rotated is not None:  # B -> head -> tail -> A
                to_head, from_tail = np.eye(4), np.eye(4)
                to_head[:3, 3] = -head_start
                from_tail[:3, 3] = tail_start
                pair = from_tail @ rotated @ to_head
        matrices.append(matrices[-1] @ pair)
        g, o = _intensity_map(over_a, over_b) if match_intensity else (1.0, 0.0)
        gains.append(gains[-1] * g)
        intensity_offsets.append(gains[-2] * o + intensity_offsets[-1])
        scores.append(score)
        overlaps.append(a.shape[0] - position[0])
        if progress is not None:
            progress("register", k + 1, n - 1)

    # output grid: union of the placed pieces' bounding boxes
    corners = []
    for piece, matrix in zip(pieces, matrices, strict=True):
        box = np.array(np.meshgrid(*[[0, s - 1] for s in piece.shape], indexing="ij")).reshape(3, -1).T
        corners.append(box @ matrix[:3, :3].T + matrix[:3, 3])
    corners = np.vstack(corners)
    # a piece covers [p - 1/2, p + n - 1/2) along each axis
    origin = np.ceil(corners.min(axis=0) - 0.5 - 1e-6)
    extent = np.floor(corners.max(axis=0) + 0.5 - 1e-6) - origin + 1
    to_out = np.eye(4)
    to_out[:3, 3] = -origin
    matrices = [to_out @ m for m in matrices]
    shape = tuple(int(s) for s in extent)
    starts = [float(m[0, 3]) for m in matrices]

    def slab_at(z0: int, z1: int) -> np.ndarray:
        return _compose_slab(pieces, matrices, gains, intensity_offsets, starts, z0, z1, shape[1:], blend, cval)

    bounds = [(z0, min(z0 + int(slab), shape[0])) for z0 in range(0, shape[0], int(slab))]
    volume = None
    path = None
    if out is None:
        volume = np.empty(shape, dtype=np.float32)
        for i, (z0, z1) in enumerate(bounds):
            volume[z0:z1] = slab_at(z0, z1)
            if progress is not None:
                progress("compose", i + 1, len(bounds))
        volume = np.moveaxis(volume, 0, axis)
    else:
        import dask
        import dask.array as da

        from ..io import write_ome_zarr

        blocks = [
            da.from_delayed(dask.delayed(slab_at)(z0, z1), shape=(z1 - z0, *shape[1:]), dtype=np.float32)
            for z0, z1 in bounds
        ]
        lazy = da.moveaxis(da.concatenate(blocks, axis=0), 0, axis)
        chunks = [min(int(slab), shape[0]), min(256, shape[1]), min(256, shape[2])]
        chunks = [chunks[0], *chunks[1:]]
        order = [0, 1, 2]
        order.remove(axis)
        chunk_out = [0, 0, 0]
        chunk_out[axis] = chunks[0]
        chunk_out[order[0]], chunk_out[order[1]] = chunks[1], chunks[2]
        with dask.config.set(scheduler="synchronous"):
            path = write_ome_zarr(out, lazy, spacing=voxel_size, chunks=chunk_out)
    # transforms in the caller's axis order
    permute = np.eye(4)
    order = [axis] + [a for a in range(3) if a != axis]
    permute[:3, :3] = np.eye(3)[:, order]  # stacked-first -> caller axes
    transforms = tuple(RigidTransform(permute @ m @ permute.T) for m in matrices)
    offsets = np.array([t.matrix[:3, 3] for t in transforms])
    out_shape = tuple(int(s) for s in (np.array(shape)[np.argsort(order)]))
    return StitchResult(
        volume=volume,
        path=None if path is None else Path(path),
        shape=out_shape,
        offsets=offsets,
        transforms=transforms,
        gains=np.asarray(gains),
        intensity_offsets=np.asarray(intensity_offsets),
        scores=np.asarray(scores),
        overlaps=np.asarray(overlaps),
        voxel_size_um=voxel_size,
        info={"axis": axis, "blend": blend, "slabs": len(bounds)},
    )
