"""Volume-in-volume registration across length scales: where a nano-CT pillar lies in a micro-CT overview.

The moving (high-resolution) volume is a small piece of the fixed (low-resolution) one, seen with
other contrast (other energy, other blur) and, for a FIB/laser-cut pillar, air outside a cylinder.
:func:`register_volume` finds the similarity ``p_f = s R p_m + t`` (moving voxel -> fixed voxel,
the 4x4 convention of :class:`~corrtomo._shared.RigidTransform` and stitching) without a start:

1. **Field of view.** A cylindrical field of view (air around a pillar) is detected from the radial
   profile of the moving volume; only voxels inside it (eroded by the blur) are compared.
2. **Template.** The moving volume is blurred to the fixed resolution (Gaussian of
   ``sigma = 0.5 * d_f / d_m`` moving voxels, about a box average over one fixed voxel) and, for each
   trial rotation, resampled onto the fixed voxel grid at the nominal scale ``s0 = d_m / d_f`` (the
   voxel sizes' ratio).
3. **Coarse search.** For rotations about the moving volume's z axis (every ``spin_step_deg``) and
   small tilts, the masked normalised cross-correlation (Padfield 2012)

   .. math::  \\mathrm{NCC}(d) = \\frac{\\sum_u M T F_d - \\frac{1}{n} \\sum_u M T \\sum_u M F_d}
              {\\sqrt{(\\sum M T^2 - (\\sum M T)^2 / n)(\\sum M F_d^2 - (\\sum M F_d)^2 / n)}}

   (``F_d`` the fixed volume shifted by ``d``, ``M`` the field-of-view mask, ``n = sum M``) is
   evaluated at every translation with FFTs; the best (rotation, translation) peaks are kept.
4. **Refinement.** Each candidate is refined with SimpleITK (similarity transform: versor,
   translation and isotropic scale; correlation metric on the masked, blurred moving volume at
   half the fixed voxel size; L-BFGS-B, two resolution levels).
5. **Confidence.** The refined candidates are scored by the masked NCC at the found pose; the
   match is ``confident`` when that score is at least ``min_score`` and beats the best refined
   candidate elsewhere (centre more than ``distinct_voxels`` away) by ``min_margin``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from .._shared import InputError, RigidTransform, write_json_atomic

_ZYX_XYZ = np.eye(3)[::-1]  # permutes (z, y, x) <-> (x, y, z); its own inverse


@dataclass(frozen=True)
class VolumeRegistration:
    """Result of :func:`register_volume`.

    Attributes
    ----------
    transform : RigidTransform
        Moving voxel (z, y, x) -> fixed voxel: ``p_f = s R p_m + t``.
    scale : float
        ``s``: moving voxel edge in fixed voxels (the voxel sizes' ratio if the sizes are right).
    score : float
        Masked NCC of the blurred moving volume and the fixed volume at the found pose (-1..1).
    runner_up : float
        Best score of a refined candidate at another place (NaN if none).
    confident : bool
        ``score >= min_score`` and ``score - runner_up >= min_margin``.
    corners : (8, 3) ndarray
        Fixed voxel positions of the moving volume's corner voxel centres.
    moving_shape, fixed_shape : tuple of int
    fixed_spacing_um, moving_spacing_um : (3,) tuple of float
    field_of_view_radius : float or None
        Detected pillar radius in moving voxels (None: the whole box is compared).
    diagnostics : dict
        Candidates, timings, optimiser iterations.
    method : str
    """

    transform: RigidTransform
    scale: float
    score: float
    runner_up: float
    confident: bool
    corners: np.ndarray
    moving_shape: tuple[int, int, int]
    fixed_shape: tuple[int, int, int]
    fixed_spacing_um: tuple[float, float, float]
    moving_spacing_um: tuple[float, float, float]
    field_of_view_radius: float | None
    diagnostics: dict = field(default_factory=dict)
    method: str = "fft-ncc+sitk-similarity"

    def to_dict(self) -> dict[str, Any]:
        rotation = self.transform.matrix[:3, :3] / self.scale
        return {
            **self.transform.to_dict(),
            "from": "moving voxel (z, y, x)",
            "to": "fixed voxel (z, y, x)",
            "scale": float(self.scale),
            "rotation": rotation.tolist(),
            "tilt_deg": float(np.degrees(np.arccos(np.clip(rotation[0, 0], -1.0, 1.0)))),
            "score": float(self.score),
            "runner_up": None if not np.isfinite(self.runner_up) else float(self.runner_up),
            "confident": bool(self.confident),
            "corners_fixed_voxels": self.corners.tolist(),
            "moving_shape": list(self.moving_shape),
            "fixed_shape": list(self.fixed_shape),
            "fixed_voxel_size_um": list(self.fixed_spacing_um),
            "moving_voxel_size_um": list(self.moving_spacing_um),
            "field_of_view_radius_voxels": self.field_of_view_radius,
            "method": self.method,
            "diagnostics": self.diagnostics,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON (atomically)."""
        return write_json_atomic(path, self.to_dict())


def corner_error(estimate: RigidTransform, truth: RigidTransform, moving_shape: tuple[int, int, int]) -> float:
    """Largest distance (fixed voxels) between the moving volume's corners under two transforms."""
    return float(np.linalg.norm(estimate.corners(moving_shape) - truth.corners(moving_shape), axis=1).max())


# ----------------------------------------------------------------------------------------- checks
def _spacing(value, name: str, source) -> np.ndarray:
    if value is None:
        raise InputError(f"no voxel size: give {name} (um)", source=source)
    spacing = np.broadcast_to(np.asarray(value, dtype=np.float64).reshape(-1), (3,)).copy() if np.ndim(value) <= 1 else None
    if spacing is None or spacing.size != 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"voxel size must be one or three positive numbers (um), got {value!r}", source=source)
    return spacing


def _volume(value, name: str, source) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 3:
        raise InputError(f"{name} must be a 3D volume, got {array.ndim} dimension(s)", source=source)
    if min(array.shape) < 4:
        raise InputError(f"{name} is too small ({array.shape}); need at least 4 voxels per axis", source=source)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name} must hold real numbers, got {array.dtype}", source=source)
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} holds NaN or infinite values", source=source)
    if float(array.std()) == 0.0:
        raise InputError(f"{name} is constant (nothing to register)", source=source)
    return array


# ---------------------------------------------------------------------------------- field of view
def detect_cylinder(volume: np.ndarray) -> float | None:
    """Radius (voxels) of a cylindrical field of view along z (air outside), or None.

    The median of each 2 %-wide ring of radius ``r`` (about the (y, x) centre) forms a radial profile;
    the field of view is cylindrical when the corners beyond the inscribed circle (``r > 1.02 R``,
    ``R`` half the smaller lateral size) are darker than the 10th percentile inside ``0.8 R``. The
    radius is where the profile first falls below the midpoint of the two levels.
    """
    _, ny, nx = volume.shape
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    half = 0.5 * min(ny, nx)
    r = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) / half
    if not np.any(r > 1.02):
        return None
    mean_z = volume.mean(axis=0)
    inner = mean_z[r < 0.8]
    outer_level = float(np.median(mean_z[r > 1.02]))
    inner_level = float(np.median(inner))
    if not outer_level < float(np.percentile(inner, 10)):
        return None
    bins = np.minimum((r / 0.02).astype(np.int64), 99)
    sums = np.bincount(bins.ravel(), weights=mean_z.ravel(), minlength=100)
    counts = np.bincount(bins.ravel(), minlength=100)
    profile = sums / np.maximum(counts, 1)
    below = np.flatnonzero((profile < 0.5 * (inner_level + outer_level)) & (np.arange(100) >= 25) & (counts > 0))
    return float(half * 0.02 * below[0]) if below.size else None


def _fov_mask(shape: tuple[int, int, int], radius: float | None, erode: float) -> np.ndarray:
    nz, ny, nx = shape
    z = np.arange(nz, dtype=np.float64)
    inside_z = (z >= erode - 0.5) & (z <= nz - 0.5 - erode)
    if radius is None:
        y = np.arange(ny, dtype=np.float64)
        x = np.arange(nx, dtype=np.float64)
        inside_y = (y >= erode - 0.5) & (y <= ny - 0.5 - erode)
        inside_x = (x >= erode - 0.5) & (x <= nx - 0.5 - erode)
        return inside_z[:, None, None] & inside_y[None, :, None] & inside_x[None, None, :]
    yy, xx = np.indices((ny, nx), dtype=np.float64)
    disc = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) <= radius - erode
    return inside_z[:, None, None] & disc[None]


# -------------------------------------------------------------------------------------- geometry
def _rotation(spin_deg: float, tilt_deg: float, azimuth_deg: float) -> np.ndarray:
    """``T(tilt, azimuth) @ Z(spin)`` on (z, y, x) (same parametrisation as the twin pair)."""
    theta = math.radians(spin_deg)
    c, s = math.cos(theta), math.sin(theta)
    spin = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    a = math.radians(azimuth_deg)
    axis = np.cross([1.0, 0.0, 0.0], [0.0, math.sin(a), math.cos(a)])
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    phi = math.radians(tilt_deg)
    return (np.eye(3) + math.sin(phi) * k + (1.0 - math.cos(phi)) * (k @ k)) @ spin


def _voxel_matrix(rotation_phys: np.ndarray, translation_um: np.ndarray, scale: float, fixed_spacing, moving_spacing):
    """4x4 moving voxel -> fixed voxel from a physical similarity ``x_f = scale R x_m + t`` (um, zyx)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag(1.0 / fixed_spacing) @ (scale * rotation_phys) @ np.diag(moving_spacing)
    matrix[:3, 3] = translation_um / fixed_spacing
    return matrix


class _Template:
    """The moving volume blurred to the fixed resolution, resampled for trial rotations."""

    def __init__(self, moving: np.ndarray, mask: np.ndarray, fixed_spacing, moving_spacing):
        self.fixed_spacing, self.moving_spacing = fixed_spacing, moving_spacing
        sigma = 0.5 * fixed_spacing / moving_spacing
        self.blurred = ndimage.gaussian_filter(moving, sigma, mode="nearest").astype(np.float32)
        self.mask = mask.astype(np.float32)
        self.shape = np.asarray(moving.shape, dtype=np.float64)
        self.center = (self.shape - 1.0) / 2.0

    def sample(self, rotation: np.ndarray, step: float = 1.0):
        """Template (values, mask, centre offset) on the fixed grid (voxel step `step`) for `rotation`.

        Template voxel ``u`` (fixed voxels from its centre) samples moving voxel
        ``c_m + D_m^-1 R^T D_f u`` (physical rotation ``R``, ``D`` the spacings).
        """
        linear = np.diag(1.0 / self.moving_spacing) @ rotation.T @ np.diag(self.fixed_spacing * step)
        forward = np.linalg.inv(linear)  # moving offsets -> template offsets
        bits = (np.arange(8)[:, None] >> np.arange(3)[::-1][None, :]) & 1
        corners = (bits * (self.shape - 1.0)) - self.center
        reach = np.abs(corners @ forward.T).max(axis=0)
        half = np.ceil(reach).astype(np.int64)
        grid = [np.arange(-h, h + 1, dtype=np.float64) for h in half]
        points = np.stack(np.meshgrid(*grid, indexing="ij"), axis=0).reshape(3, -1)
        coords = linear @ points + self.center[:, None]
        shape = tuple(2 * half + 1)
        values = ndimage.map_coordinates(self.blurred, coords, order=1, mode="constant", cval=0.0).reshape(shape)
        inside = ndimage.map_coordinates(self.mask, coords, order=1, mode="constant", cval=0.0).reshape(shape) > 0.999
        # crop to the mask's bounding box
        nonzero = np.argwhere(inside)
        if nonzero.size == 0:
            return None
        lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
        crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        return values[crop], inside[crop], half - lo  # position of the template centre inside the crop


class _FixedFFT:
    """FFTs of the fixed volume and its square for masked NCC at every fully-inside offset."""

    def __init__(self, fixed: np.ndarray):
        self.fixed = fixed
        self.shape = fixed.shape
        self.fft_shape = tuple(sfft.next_fast_len(int(n), real=True) for n in fixed.shape)
        self.f1 = sfft.rfftn(fixed, self.fft_shape, workers=-1)
        self.f2 = sfft.rfftn(fixed.astype(np.float64) ** 2, self.fft_shape, workers=-1)

    def ncc(self, template: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Masked NCC for every offset ``d`` with the template box inside the fixed volume."""
        t_shape = template.shape
        valid = tuple(n - t + 1 for n, t in zip(self.shape, t_shape, strict=True))
        if min(valid) < 1:
            return np.full((1, 1, 1), -np.inf)
        m = mask.astype(np.float64)
        mt = m * template
        n = m.sum()
        s_t = mt.sum()
        var_t = (mt * template).sum() - s_t**2 / n
        k_m = np.conj(sfft.rfftn(m, self.fft_shape, workers=-1))
        k_t = np.conj(sfft.rfftn(mt, self.fft_shape, workers=-1))
        cut = tuple(slice(0, v) for v in valid)
        cross = sfft.irfftn(self.f1 * k_t, self.fft_shape, workers=-1)[cut]
        s_f = sfft.irfftn(self.f1 * k_m, self.fft_shape, workers=-1)[cut]
        s_f2 = sfft.irfftn(self.f2 * k_m, self.fft_shape, workers=-1)[cut]
        var_f = np.maximum(s_f2 - s_f**2 / n, 1e-12 * max(float(np.abs(s_f2).max()), 1e-30))
        return (cross - s_t * s_f / n) / np.sqrt(max(var_t, 1e-30) * var_f)


def _masked_ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else -1.0


def _score(fixed: np.ndarray, template: _Template, matrix: np.ndarray, mask_points: np.ndarray, values: np.ndarray) -> float:
    """Masked NCC of the blurred moving values at `mask_points` (moving voxels) and the fixed volume there."""
    coords = (mask_points @ matrix[:3, :3].T + matrix[:3, 3]).T
    shape = np.asarray(fixed.shape, dtype=np.float64)[:, None]
    inside = np.all((coords >= -0.5) & (coords <= shape - 0.5), axis=0)
    if inside.mean() < 0.5:
        return -1.0
    sampled = ndimage.map_coordinates(fixed, coords[:, inside], order=1, mode="nearest")
    return _masked_ncc(values[inside], sampled)


# ---------------------------------------------------------------------------------- refinement
def _sitk_image(array: np.ndarray, spacing_zyx: np.ndarray, origin_zyx: np.ndarray):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    image.SetOrigin(tuple(float(v) for v in origin_zyx[::-1]))
    return image


def _refine(fixed_image, template: _Template, matrix: np.ndarray, *, iterations: int, levels=(2, 1)):
    """Refine a 4x4 (moving voxel -> fixed voxel) with SimpleITK; returns the refined 4x4 and iterations.

    SimpleITK samples its *fixed* image, so the roles swap: its fixed image is the blurred moving
    volume at about half the fixed voxel size (masked by the field of view), its moving image the
    fixed volume; the physical frame is micrometres with each volume's voxel (0, 0, 0) at 0.
    """
    import SimpleITK as sitk

    fs, ms = template.fixed_spacing, template.moving_spacing
    factor = max(1, int(np.floor(0.5 * float(np.min(fs / ms)))))
    small = template.blurred[::factor, ::factor, ::factor]
    small_mask = template.mask[::factor, ::factor, ::factor] > 0.5
    moving_image = _sitk_image(small, ms * factor, np.zeros(3))
    mask_image = sitk.Cast(_sitk_image(small_mask.astype(np.float32), ms * factor, np.zeros(3)), sitk.sitkUInt8)

    physical = np.diag(fs) @ matrix[:3, :3] @ np.diag(1.0 / ms)  # um -> um, zyx
    scale = float(np.cbrt(np.linalg.det(physical)))
    rotation_xyz = _ZYX_XYZ @ (physical / scale) @ _ZYX_XYZ
    translation_xyz = _ZYX_XYZ @ (matrix[:3, 3] * fs)
    center_xyz = _ZYX_XYZ @ (template.center * ms)
    transform = sitk.Similarity3DTransform()
    transform.SetMatrix(tuple(rotation_xyz.ravel()))
    transform.SetScale(scale)
    transform.SetCenter(tuple(center_xyz))
    # x' = s R (x - c) + c + t'  ==  s R x + t  ->  t' = t - c + s R c
    transform.SetTranslation(tuple(translation_xyz - center_xyz + scale * rotation_xyz @ center_xyz))

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricFixedMask(mask_image)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    # L-BFGS-B on (versor, translation um, scale): near the coarse pose the parameters have
    # comparable magnitudes (radians ~ um / 10 ~ relative scale), so no parameter scales are needed.
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-6, numberOfIterations=iterations)
    method.SetShrinkFactorsPerLevel(list(levels))
    method.SetSmoothingSigmasPerLevel([0.5 * (f - 1) for f in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(moving_image, fixed_image)
    a = np.asarray(transform.GetMatrix()).reshape(3, 3)  # includes the scale
    c = np.asarray(transform.GetCenter())
    t = np.asarray(transform.GetTranslation())
    offset_xyz = t + c - a @ c
    physical = _ZYX_XYZ @ a @ _ZYX_XYZ
    out = np.eye(4)
    out[:3, :3] = np.diag(1.0 / fs) @ physical @ np.diag(ms)
    out[:3, 3] = (_ZYX_XYZ @ offset_xyz) / fs
    return out, int(method.GetOptimizerIteration())


# ------------------------------------------------------------------------------------------ main
def register_volume(
    fixed,
    moving,
    *,
    fixed_spacing,
    moving_spacing,
    spin_step_deg: float | None = None,
    tilts_deg: tuple[float, ...] = (0.0,),
    n_candidates: int = 4,
    refine_iterations: int = 150,
    min_score: float = 0.5,
    min_margin: float = 0.1,
    distinct_voxels: float = 3.0,
    field_of_view: str = "auto",
    fixed_source: str | os.PathLike | None = "fixed",
    moving_source: str | os.PathLike | None = "moving",
) -> VolumeRegistration:
    """Find where a high-resolution volume lies inside a low-resolution one (rotation, translation, scale).

    Parameters
    ----------
    fixed : (P, M, N) array_like
        The large low-resolution volume (e.g. micro-CT), (z, y, x). Not modified.
    moving : (P', M', N') array_like
        The small high-resolution volume (e.g. nano-CT pillar). Not modified.
    fixed_spacing, moving_spacing : float or (3,) floats
        Voxel sizes in micrometres (required: they give the starting scale ``s0 = d_m / d_f``).
    spin_step_deg : float, optional
        Step of the coarse rotation search about the moving z axis; default
        ``clip(degrees(1.2 / r), 3, 12)`` with ``r`` the template radius in fixed voxels.
    tilts_deg : tuple of float
        Tilts of the moving z axis tried in the coarse search (each at 4 azimuths for non-zero tilt).
    n_candidates : int
        Coarse peaks (distinct places) refined.
    refine_iterations : int
        Optimiser iterations per resolution level.
    min_score, min_margin, distinct_voxels : float
        Confidence rule (module notes).
    field_of_view : {"auto", "box", "cylinder"}
        Which moving voxels count: detect a pillar, the whole box, or force a cylinder.

    Returns
    -------
    VolumeRegistration

    Raises
    ------
    InputError
        Not 3D, non-finite or constant volumes, missing or invalid voxel sizes, or a moving volume
        physically larger than the fixed one.
    """
    start = time.perf_counter()
    fs = _spacing(fixed_spacing, "--fixed-voxel-size", fixed_source)
    ms = _spacing(moving_spacing, "--moving-voxel-size", moving_source)
    fixed_arr = _volume(fixed, "fixed volume", fixed_source)
    moving_arr = _volume(moving, "moving volume", moving_source)
    fixed_extent = np.asarray(fixed_arr.shape) * fs
    moving_extent = np.asarray(moving_arr.shape) * ms
    if np.any(moving_extent > fixed_extent * (1 + 1e-6)):
        raise InputError(
            f"moving volume ({' x '.join(f'{v:.4g}' for v in moving_extent)} um) is larger than the fixed volume "
            f"({' x '.join(f'{v:.4g}' for v in fixed_extent)} um); give the small high-resolution volume as --moving",
            source=moving_source,
        )
    if field_of_view not in ("auto", "box", "cylinder"):
        raise InputError(f"field_of_view must be auto, box or cylinder, got {field_of_view!r}")
    radius = None
    if field_of_view in ("auto", "cylinder"):
        radius = detect_cylinder(moving_arr)
        if radius is None and field_of_view == "cylinder":
            radius = 0.5 * min(moving_arr.shape[1:]) - 0.5
    erode = float(np.max(fs / ms))  # one fixed voxel of blur at the field-of-view edge
    mask = _fov_mask(moving_arr.shape, radius, erode)
    if mask.sum() < 8:
        raise InputError("moving volume's field of view is too small to register", source=moving_source)

    template = _Template(moving_arr, mask, fs, ms)
    fixed_fft = _FixedFFT(fixed_arr)
    s0 = float(np.mean(ms / fs))
    template_radius = 0.5 * float(np.max(np.asarray(moving_arr.shape[1:]) * ms[1:] / fs[1:]))
    if spin_step_deg is None:
        spin_step_deg = float(np.clip(np.degrees(1.2 / max(template_radius, 1e-6)), 3.0, 12.0))
    spins = np.arange(0.0, 360.0, spin_step_deg)
    rotations: list[tuple[float, float, float]] = []
    for tilt in tilts_deg:
        azimuths = (0.0,) if tilt == 0 else (0.0, 90.0, 180.0, 270.0)
        rotations += [(float(spin), float(tilt), az) for az in azimuths for spin in spins]

    # coarse search: best offset for every trial rotation
    peaks = []
    for spin, tilt, azimuth in rotations:
        rotation = _rotation(spin, tilt, azimuth)
        sampled = template.sample(rotation)
        if sampled is None:
            continue
        values, inside, center_in_crop = sampled
        ncc = fixed_fft.ncc(values, inside)
        flat = int(np.argmax(ncc))
        offset = np.array(np.unravel_index(flat, ncc.shape), dtype=np.float64)
        center_fixed = offset + center_in_crop  # fixed voxel of the moving centre
        peaks.append((float(ncc.flat[flat]), spin, tilt, azimuth, center_fixed))
    coarse_seconds = time.perf_counter() - start
    if not peaks:
        raise InputError("moving volume does not fit inside the fixed volume at its voxel size", source=moving_source)
    peaks.sort(key=lambda p: -p[0])
    chosen: list[tuple] = []
    for peak in peaks:
        if all(np.linalg.norm(peak[4] - c[4]) > distinct_voxels for c in chosen):
            chosen.append(peak)
        if len(chosen) >= n_candidates:
            break

    fixed_image = _sitk_image(fixed_arr, fs, np.zeros(3))
    points = np.argwhere(mask).astype(np.float64)
    if points.shape[0] > 200_000:
        points = points[np.random.default_rng(0).choice(points.shape[0], 200_000, replace=False)]
    values = ndimage.map_coordinates(template.blurred, points.T, order=1)
    results = []
    for coarse_score, spin, tilt, azimuth, center_fixed in chosen:
        rotation = _rotation(spin, tilt, azimuth)
        matrix = _voxel_matrix(rotation, np.zeros(3), 1.0, fs, ms)
        matrix[:3, 3] = center_fixed - matrix[:3, :3] @ template.center
        try:
            refined, iterations = _refine(fixed_image, template, matrix, iterations=refine_iterations)
        except RuntimeError:  # SimpleITK stops when too few samples overlap
            refined, iterations = matrix, -1
        score = _score(fixed_arr, template, refined, points, values)
        if score < _score(fixed_arr, template, matrix, points, values):
            refined, score = matrix, _score(fixed_arr, template, matrix, points, values)
        results.append(
            {
                "coarse_score": coarse_score, "spin_deg": spin, "tilt_deg": tilt, "azimuth_deg": azimuth,
                "center_fixed_voxels": center_fixed.tolist(), "score": score, "iterations": iterations,
                "matrix": refined,
            }
        )
    results.sort(key=lambda r: -r["score"])
    best = results[0]
    best_center = best["matrix"][:3, :3] @ template.center + best["matrix"][:3, 3]
    others = [
        r["score"] for r in results[1:]
        if np.linalg.norm(r["matrix"][:3, :3] @ template.center + r["matrix"][:3, 3] - best_center) > distinct_voxels
    ]
    runner_up = max(others) if others else float("nan")
    margin = best["score"] - (runner_up if np.isfinite(runner_up) else 0.0)
    transform = RigidTransform(best["matrix"])
    corners = transform.corners(moving_arr.shape)
    inside = np.all((corners >= -0.5) & (corners <= np.asarray(fixed_arr.shape) - 0.5), axis=1)
    confident = bool(best["score"] >= min_score and margin >= min_margin and inside.all())
    diagnostics = {
        "n_rotations": len(rotations),
        "spin_step_deg": float(spin_step_deg),
        "nominal_scale": s0,
        "coarse_seconds": round(coarse_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "margin": float(margin),
        "corners_inside_fixed": bool(inside.all()),
        "candidates": [{k: v for k, v in r.items() if k != "matrix"} for r in results],
    }
    return VolumeRegistration(
        transform=transform,
        scale=transform.scale,
        score=float(best["score"]),
        runner_up=float(runner_up),
        confident=confident,
        corners=corners,
        moving_shape=tuple(int(v) for v in moving_arr.shape),
        fixed_shape=tuple(int(v) for v in fixed_arr.shape),
        fixed_spacing_um=tuple(float(v) for v in fs),
        moving_spacing_um=tuple(float(v) for v in ms),
        field_of_view_radius=radius,
        diagnostics=diagnostics,
    )


def write_volume_overlay(
    path: str | os.PathLike,
    fixed,
    moving,
    result: VolumeRegistration,
    *,
    truth: RigidTransform | None = None,
) -> Path:
    """Overlay PNG of a volume registration.

    Row 1: the fixed volume's slices (z, y, x planes) through the moving volume's centre with the
    moving box outline at the found pose (cyan; truth in yellow when given). Row 2: the moving
    volume's central z and y planes, the fixed volume resampled on the same planes through the
    found transform (fixed value at ``T p_m``, linear interpolation), and a red/green composite
    (both normalised to their 1-99 % range): matching structure is yellow.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    from .._shared import atomic_path

    fixed = np.asarray(fixed, dtype=np.float32)
    moving = np.asarray(moving, dtype=np.float32)
    matrix = result.transform.matrix
    center_m = (np.asarray(moving.shape, dtype=np.float64) - 1) / 2
    center_f = result.transform.apply(center_m)
    index = np.clip(np.rint(center_f).astype(np.int64), 0, np.asarray(fixed.shape) - 1)

    def norm(image):
        finite = image[np.isfinite(image)]
        if finite.size == 0:
            return np.zeros_like(image)
        lo, hi = np.percentile(finite, [1, 99])
        return np.clip((np.nan_to_num(image, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)

    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    fig = Figure(figsize=(14, 7))
    axes = fig.subplots(2, 4)
    planes = (("z", 0, (1, 2)), ("y", 1, (0, 2)), ("x", 2, (0, 1)))
    for ax, (name, axis, (r, c)) in zip(axes[0, :3], planes, strict=True):
        ax.imshow(np.take(fixed, index[axis], axis=axis), cmap="gray")
        for transform, colour in ((result.transform, "cyan"), (truth, "yellow")):
            if transform is None:
                continue
            corners = transform.corners(moving.shape)
            for a, b in edges:
                ax.plot([corners[a, c], corners[b, c]], [corners[a, r], corners[b, r]], color=colour, lw=0.8)
        ax.set_title(f"fixed {name} = {index[axis]}")
        ax.set_xlim(-0.5, fixed.shape[c] - 0.5)
        ax.set_ylim(fixed.shape[r] - 0.5, -0.5)
        ax.axis("off")
    axes[0, 3].axis("off")
    axes[0, 3].text(
        0.0, 0.5,
        f"score {result.score:.3f}\nrunner-up {result.runner_up:.3f}\nscale {result.scale:.4f}\n"
        f"confident: {result.confident}\ncyan: found, yellow: truth",
        fontsize=11, va="center",
    )
    row = axes[1]
    for k, axis in enumerate((0, 1)):
        grid = np.indices([n for i, n in enumerate(moving.shape) if i != axis], dtype=np.float64)
        points = np.insert(grid.reshape(2, -1), axis, center_m[axis], axis=0)
        mapped = (matrix[:3, :3] @ points + matrix[:3, 3:4])
        sampled = ndimage.map_coordinates(fixed, mapped, order=1, mode="constant", cval=np.nan).reshape(grid.shape[1:])
        plane = np.take(moving, round(center_m[axis]), axis=axis)
        sigma = 0.5 * np.mean(np.asarray(result.fixed_spacing_um) / np.asarray(result.moving_spacing_um))
        composite = np.stack([norm(ndimage.gaussian_filter(plane, sigma)), norm(sampled), np.zeros_like(plane)], axis=-1)
        if k == 0:
            row[0].imshow(norm(plane), cmap="gray")
            row[0].set_title("moving, central z plane")
            row[1].imshow(norm(sampled), cmap="gray")
            row[1].set_title("fixed resampled on it")
            row[2].imshow(composite)
            row[2].set_title("red: moving, green: fixed")
        else:
            row[3].imshow(composite)
            row[3].set_title("central y plane, composite")
    for ax in row:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return path


def moving_region_mask(
    fixed_shape: tuple[int, int, int],
    transform: RigidTransform,
    moving_shape: tuple[int, int, int],
    *,
    radius_voxels: float | None = None,
    slab: int = 16,
) -> np.ndarray:
    """Fixed-grid mask of the voxels whose centre lies inside the moving volume's field of view.

    Each fixed voxel centre is mapped into moving voxel coordinates with the inverse transform;
    it is inside when it lies within the moving box (half a voxel beyond the outer centres) and,
    with `radius_voxels`, within that cylinder about the moving z axis (a pillar). Computed slab
    by slab over fixed z planes, so memory stays at one slab of coordinates.
    """
    fixed_shape = tuple(int(n) for n in fixed_shape)
    inverse = transform.inverse()
    size = np.asarray(moving_shape, dtype=np.float64)
    cy, cx = (size[1] - 1) / 2, (size[2] - 1) / 2
    mask = np.zeros(fixed_shape, dtype=bool)
    yx = np.indices(fixed_shape[1:], dtype=np.float64).reshape(2, -1).T
    for z0 in range(0, fixed_shape[0], slab):
        z1 = min(fixed_shape[0], z0 + slab)
        z = np.repeat(np.arange(z0, z1, dtype=np.float64), yx.shape[0])
        points = inverse.apply(np.column_stack([z, np.tile(yx, (z1 - z0, 1))]))
        inside = np.all((points >= -0.5) & (points <= size - 0.5), axis=1)
        if radius_voxels is not None:
            inside &= (points[:, 1] - cy) ** 2 + (points[:, 2] - cx) ** 2 <= float(radius_voxels) ** 2
        mask[z0:z1] = inside.reshape((z1 - z0, *fixed_shape[1:]))
    return mask
