"""Voxel features for the phase classifier: the ilastik filter bank, computed block by block.

Every feature is derived from one Gaussian-smoothed copy of the image per scale (plus one more for
the difference of Gaussians), so no Gaussian is computed twice. Blocks are read with the halo the
largest filter needs, so the result does not depend on the block shape and memory does not grow
with the volume.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .._shared import InputError, normalize_spacing

#: The filter kinds, in the order their channels appear in a feature stack.
FEATURE_KINDS: tuple[str, ...] = (
    "gaussian",
    "laplacian",
    "gradient",
    "dog",
    "structure_tensor",
    "hessian",
    "foreground_gaussian",
    "core_gaussian",
)
#: Kinds that need a foreground mask (normalised convolution inside the particles).
MASKED_KINDS: tuple[str, ...] = ("foreground_gaussian", "core_gaussian")
#: Channels per kind (eigenvalues are sorted descending: e1 >= e2 >= e3).
_CHANNELS: dict[str, tuple[str, ...]] = {
    "gaussian": ("",),
    "laplacian": ("",),
    "gradient": ("",),
    "dog": ("",),
    "structure_tensor": ("e1", "e2", "e3"),
    "hessian": ("e1", "e2", "e3"),
    "foreground_gaussian": ("",),
    "core_gaussian": ("",),
}
#: Default scales in voxels (converted to micrometres with the voxel size): the ilastik set.
DEFAULT_SCALES_VOXELS: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0, 10.0)
#: The default filter kinds: the full ilastik set. Measured on the talc-saxolite twin (one
#: section of labels): the smoothed intensity carries most of the accuracy (permutation
#: importance 0.49 against <= 0.05 for each other kind, ``bench/bench_phase_classifier.py
#: --importance``), but dropping the eigenvalue kinds costs 0.03 mean IoU at 128^3 and 0.08 at
#: 256^3, and only the full set matches skimage's multiscale_basic_features + random forest.
DEFAULT_FEATURES: tuple[str, ...] = FEATURE_KINDS[:6]
#: Default kinds inside a particle foreground. Measured on the talc-saxolite twin (128^3, one
#: section of labels, foreground from ``foreground_mask``): mean IoU of the four minerals 0.771
#: with ``gradient`` + ``foreground_gaussian``, 0.827 adding ``core_gaussian``, 0.860 with
#: ``gradient`` + ``core_gaussian`` (the grey value of the particle cores, free of the
#: partial-volume shell that ``foreground_gaussian`` still averages in).
DEFAULT_FOREGROUND_FEATURES: tuple[str, ...] = ("gradient", "core_gaussian")
#: Difference of Gaussians: G(DOG_RATIO * sigma) - G(sigma) (ilastik).
DOG_RATIO = 0.66
#: Structure tensor: outer (integration) scale = STRUCTURE_OUTER_RATIO * inner scale (ilastik).
STRUCTURE_OUTER_RATIO = 0.5
#: Gaussian kernels are cut at TRUNCATE standard deviations (as scipy.ndimage).
TRUNCATE = 4.0
#: Default block shape (z, y, x) in voxels.
DEFAULT_BLOCK_SHAPE: tuple[int, int, int] = (64, 256, 256)


@dataclass(frozen=True)
class FeatureSettings:
    """Which voxel features to compute: filter kinds times scales.

    Parameters
    ----------
    scales_um : tuple of float
        Gaussian scales sigma in micrometres, ascending. Per axis the filters use
        ``sigma / spacing`` voxels, so anisotropic voxels are handled.
    features : tuple of str
        Filter kinds, a subset of :data:`FEATURE_KINDS`; each is computed at every scale.

    Notes
    -----
    With :math:`G_\\sigma = g_\\sigma * I` the Gaussian-smoothed image and derivatives
    :math:`\\partial_i` taken in micrometres, the channels at scale :math:`\\sigma` are

    * ``gaussian``: :math:`G_\\sigma`;
    * ``laplacian`` (of Gaussian): :math:`\\sigma^2 \\sum_i \\partial_i^2 G_\\sigma`;
    * ``gradient`` (magnitude): :math:`\\sigma \\lVert \\nabla G_\\sigma \\rVert`;
    * ``dog``: :math:`G_{0.66\\sigma} - G_\\sigma`;
    * ``structure_tensor``: eigenvalues of
      :math:`S = g_{\\sigma/2} * (\\sigma^2 \\nabla G_\\sigma \\nabla G_\\sigma^T)`;
    * ``hessian``: eigenvalues of :math:`\\sigma^2 \\, \\partial_i \\partial_j G_\\sigma`;
    * ``foreground_gaussian`` (needs a foreground mask M): the normalised convolution
      :math:`(g_\\sigma * (I M)) / (g_\\sigma * M)` (Knutsson & Westin 1993), the mean grey value of
      the nearby particle voxels only, so partial volume with the matrix does not pull a
      particle's boundary voxels towards darker phases. Not part of the ilastik set.
    * ``core_gaussian`` (needs M): the same normalised convolution over the particle *cores*
      :math:`C = M \\ominus B_6` (M eroded by one voxel, 6-connected), i.e.
      :math:`(g_\\sigma * (I C)) / \\max(g_\\sigma * C, 10^{-3})`: the one-voxel shell where the
      point-spread mixes a particle with the matrix is left out, so a bright particle's surface
      voxels read the grey value of its interior. Not part of the ilastik set.

    The factors :math:`\\sigma^k` make the derivatives scale-normalised (Lindeberg 1998), so that
    channels at different scales have comparable ranges. Derivatives are central finite differences
    of :math:`G_\\sigma` (a Gaussian derivative filter of the sampled kernel), which lets every
    channel of one scale share one Gaussian. This is the ilastik pixel-classification feature set
    (Berg et al. 2019) with vigra's scale ratios.

    References
    ----------
    .. [1] S. Berg et al., "ilastik: interactive machine learning for (bio)image analysis",
       Nature Methods 16, 1226-1232 (2019).
    .. [2] T. Lindeberg, "Feature detection with automatic scale selection", IJCV 30 (1998).
    .. [3] H. Knutsson, C.-F. Westin, "Normalized and differential convolution", CVPR (1993).
    """

    scales_um: tuple[float, ...]
    features: tuple[str, ...] = DEFAULT_FEATURES

    def __post_init__(self) -> None:
        scales = tuple(sorted(float(s) for s in np.atleast_1d(np.asarray(self.scales_um, dtype=float))))
        if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
            raise InputError(f"scales must be finite and positive, got {list(self.scales_um)}", source="scales_um")
        if len(set(scales)) != len(scales):
            raise InputError(f"scales must be distinct, got {list(self.scales_um)}", source="scales_um")
        kinds = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        unknown = [k for k in kinds if k not in FEATURE_KINDS]
        if unknown or not kinds:
            raise InputError(
                f"unknown feature kind(s) {unknown or '(none given)'}; choose from {', '.join(FEATURE_KINDS)}",
                source="features",
            )
        ordered = tuple(k for k in FEATURE_KINDS if k in kinds)
        object.__setattr__(self, "scales_um", scales)
        object.__setattr__(self, "features", ordered)

    @classmethod
    def default(
        cls,
        spacing: float | Sequence[float] | None,
        *,
        scales_um: Sequence[float] | None = None,
        features: Sequence[str] | str | None = None,
    ) -> FeatureSettings:
        """Settings with the default scales (:data:`DEFAULT_SCALES_VOXELS` times the mean voxel
        size) and the default kinds (:data:`DEFAULT_FEATURES`), unless given."""
        if scales_um is None:
            voxel = float(np.mean(normalize_spacing(spacing)))
            scales_um = tuple(round(s * voxel, 6) for s in DEFAULT_SCALES_VOXELS)
        return cls(scales_um=tuple(scales_um), features=DEFAULT_FEATURES if features is None else features)

    @property
    def needs_mask(self) -> bool:
        """Whether a foreground mask is needed (``foreground_gaussian``, ``core_gaussian``)."""
        return any(k in MASKED_KINDS for k in self.features)

    @property
    def n_features(self) -> int:
        """Number of channels F."""
        return len(self.names())

    def names(self) -> list[str]:
        """Channel names, e.g. ``gaussian_s0.128um`` or ``hessian_e1_s0.64um``."""
        names = []
        for kind in self.features:
            for scale in self.scales_um:
                for channel in _CHANNELS[kind]:
                    middle = f"_{channel}" if channel else ""
                    names.append(f"{kind}{middle}_s{scale:.4g}um")
        return names

    def channel_index(self) -> dict[tuple[str, float], int]:
        """First channel of each (kind, scale) in the stack."""
        index, k = {}, 0
        for kind in self.features:
            for scale in self.scales_um:
                index[(kind, scale)] = k
                k += len(_CHANNELS[kind])
        return index

    def halo_voxels(self, spacing: float | Sequence[float] | None) -> tuple[int, int, int]:
        """Voxels of context each block needs on each side, per axis (z, y, x).

        The halo is the Gaussian radius ``int(4 sigma + 0.5)`` plus one voxel for finite
        differences, plus the integration radius for the structure tensor.
        """
        spacing = normalize_spacing(spacing)
        halo = np.zeros(3, dtype=int)
        for scale in self.scales_um:
            halo = np.maximum(halo, _scale_extent(self.features, scale, spacing))
        return tuple(int(h) for h in halo)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales_um": list(self.scales_um),
            "features": list(self.features),
            "dog_ratio": DOG_RATIO,
            "structure_outer_ratio": STRUCTURE_OUTER_RATIO,
            "truncate": TRUNCATE,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSettings:
        return cls(scales_um=tuple(data["scales_um"]), features=tuple(data["features"]))


def feature_names(
    *,
    spacing: float | Sequence[float] | None = None,
    scales_um: Sequence[float] | None = None,
    features: Sequence[str] | str | None = None,
) -> list[str]:
    """Names of the channels :func:`voxel_features` returns for these arguments, in order."""
    return FeatureSettings.default(spacing, scales_um=scales_um, features=features).names()


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------


def _radius(sigma: float) -> int:
    return max(1, int(TRUNCATE * float(sigma) + 0.5))


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Sampled, normalised Gaussian of `sigma` voxels on [-r, r], r = int(4 sigma + 0.5) (as
    scipy.ndimage.gaussian_filter1d)."""
    radius = _radius(sigma)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (x / float(sigma)) ** 2)
    return (weights / weights.sum()).astype(np.float32)


def _scale_extent(kinds: Sequence[str], scale_um: float, spacing: np.ndarray) -> np.ndarray:
    """Per-axis context (voxels) needed for the kinds at one scale."""
    sigma = scale_um / spacing
    extent = np.array([_radius(s) for s in sigma])
    if any(k in kinds for k in ("laplacian", "gradient", "hessian")):
        extent = np.array([_radius(s) + 1 for s in sigma])
    if "structure_tensor" in kinds:
        outer = np.array([_radius(s * STRUCTURE_OUTER_RATIO) for s in sigma])
        extent = np.maximum(extent, np.array([_radius(s) for s in sigma]) + 1 + outer)
    if "core_gaussian" in kinds:  # the one-voxel erosion needs one more voxel of context
        extent = np.maximum(extent, np.array([_radius(s) + 1 for s in sigma]))
    return extent


@numba.njit(parallel=True, cache=True)
def _convolve_valid(source, weights, axis):  # pragma: no cover - compiled
    """'valid' correlation of a 3D float32 array with a symmetric 1D kernel along `axis`."""
    width = weights.size
    radius = (width - 1) // 2
    nz, ny, nx = source.shape
    if axis == 0:
        nz -= 2 * radius
    elif axis == 1:
        ny -= 2 * radius
    else:
        nx -= 2 * radius
    out = np.empty((nz, ny, nx), dtype=np.float32)
    for z in numba.prange(nz):
        for y in range(ny):
            row = out[z, y]
            if axis == 0:
                c = weights[radius]
                for x in range(nx):
                    row[x] = c * source[z + radius, y, x]
                for k in range(radius):
                    w = weights[k]
                    a = source[z + k, y]
                    b = source[z + width - 1 - k, y]
                    for x in range(nx):
                        row[x] += w * (a[x] + b[x])
            elif axis == 1:
                c = weights[radius]
                for x in range(nx):
                    row[x] = c * source[z, y + radius, x]
                for k in range(radius):
                    w = weights[k]
                    a = source[z, y + k]
                    b = source[z, y + width - 1 - k]
                    for x in range(nx):
                        row[x] += w * (a[x] + b[x])
            else:
                line = source[z, y]
                c = weights[radius]
                for x in range(nx):
                    row[x] = c * line[x + radius]
                for k in range(radius):
                    w = weights[k]
                    left = line[k:]
                    right = line[width - 1 - k :]
                    for x in range(nx):
                        row[x] += w * (left[x] + right[x])
    return out


@numba.njit(inline="always")
def _eigenvalues_sym3(a11, a22, a33, a12, a13, a23):  # pragma: no cover - compiled
    """Eigenvalues of a symmetric 3x3 matrix, descending (closed form, Smith 1961)."""
    p1 = a12 * a12 + a13 * a13 + a23 * a23
    q = (a11 + a22 + a33) / 3.0
    if p1 <= 1e-30 * (a11 * a11 + a22 * a22 + a33 * a33) or p1 == 0.0:
        e1, e2, e3 = a11, a22, a33
        if e1 < e2:
            e1, e2 = e2, e1
        if e2 < e3:
            e2, e3 = e3, e2
        if e1 < e2:
            e1, e2 = e2, e1
        return e1, e2, e3
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p2 = b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1
    p = math.sqrt(p2 / 6.0)
    inv = 1.0 / p
    b11 *= inv
    b22 *= inv
    b33 *= inv
    c12, c13, c23 = a12 * inv, a13 * inv, a23 * inv
    det = b11 * (b22 * b33 - c23 * c23) - c12 * (c12 * b33 - c23 * c13) + c13 * (c12 * c23 - b22 * c13)
    r = 0.5 * det
    if r <= -1.0:
        phi = math.pi / 3.0
    elif r >= 1.0:
        phi = 0.0
    else:
        phi = math.acos(r) / 3.0
    e1 = q + 2.0 * p * math.cos(phi)
    e3 = q + 2.0 * p * math.cos(phi + 2.0 * math.pi / 3.0)
    e2 = 3.0 * q - e1 - e3
    return e1, e2, e3


@numba.njit(parallel=True, cache=True)
def _eigenvalues_field(tensor, out):  # pragma: no cover - compiled
    """Eigenvalues of a field of symmetric tensors (6, Z, Y, X) [zz, yy, xx, zy, zx, yx] into
    out (3, Z, Y, X), descending."""
    nz, ny, nx = tensor.shape[1:]
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                e1, e2, e3 = _eigenvalues_sym3(
                    np.float64(tensor[0, z, y, x]), np.float64(tensor[1, z, y, x]), np.float64(tensor[2, z, y, x]),
                    np.float64(tensor[3, z, y, x]), np.float64(tensor[4, z, y, x]), np.float64(tensor[5, z, y, x]),
                )
                out[0, z, y, x] = e1
                out[1, z, y, x] = e2
                out[2, z, y, x] = e3


def eigenvalues_sym3(tensor: np.ndarray) -> np.ndarray:
    """Eigenvalues of symmetric 3x3 matrices given by their six distinct entries.

    Parameters
    ----------
    tensor : (6, ...) array_like
        Entries ``[a_zz, a_yy, a_xx, a_zy, a_zx, a_yx]`` of each matrix.

    Returns
    -------
    (3, ...) ndarray of float32
        Eigenvalues :math:`\\lambda_1 \\ge \\lambda_2 \\ge \\lambda_3`.

    Notes
    -----
    Closed form (Smith 1961): with :math:`q = \\mathrm{tr}(A)/3`,
    :math:`p = \\sqrt{\\mathrm{tr}((A - qI)^2)/6}`, :math:`B = (A - qI)/p` and
    :math:`\\phi = \\arccos(\\det(B)/2)/3`, the eigenvalues are
    :math:`q + 2p\\cos(\\phi + 2\\pi k/3)`, k = 0, 1, 2. Evaluated in float64 per voxel.
    """
    tensor = np.asarray(tensor, dtype=np.float32)
    shape = tensor.shape[1:]
    field = np.ascontiguousarray(tensor.reshape(6, 1, 1, -1))
    out = np.empty((3, 1, 1, field.shape[-1]), dtype=np.float32)
    _eigenvalues_field(field, out)
    return out.reshape((3, *shape))


@numba.njit(parallel=True, cache=True)
def _derivative_channels(smooth, margin, inv_h, scale, laplacian, gradient, hessian):  # pragma: no cover
    """Laplacian, gradient magnitude and Hessian eigenvalues (scale-normalised) of `smooth`
    (interior plus `margin` voxels per axis) by central differences; empty outputs are skipped."""
    mz, my, mx = margin[0], margin[1], margin[2]
    nz = smooth.shape[0] - 2 * mz
    ny = smooth.shape[1] - 2 * my
    nx = smooth.shape[2] - 2 * mx
    hz, hy, hx = inv_h[0], inv_h[1], inv_h[2]
    s1 = scale
    s2 = scale * scale
    do_lap = laplacian.shape[0] > 0
    do_grad = gradient.shape[0] > 0
    do_hess = hessian.shape[0] > 0
    for z in numba.prange(nz):
        zc = z + mz
        for y in range(ny):
            yc = y + my
            for x in range(nx):
                xc = x + mx
                c = np.float64(smooth[zc, yc, xc])
                zp = np.float64(smooth[zc + 1, yc, xc])
                zm = np.float64(smooth[zc - 1, yc, xc])
                yp = np.float64(smooth[zc, yc + 1, xc])
                ym = np.float64(smooth[zc, yc - 1, xc])
                xp = np.float64(smooth[zc, yc, xc + 1])
                xm = np.float64(smooth[zc, yc, xc - 1])
                hzz = (zp - 2.0 * c + zm) * hz * hz
                hyy = (yp - 2.0 * c + ym) * hy * hy
                hxx = (xp - 2.0 * c + xm) * hx * hx
                if do_lap:
                    laplacian[z, y, x] = (hzz + hyy + hxx) * s2
                if do_grad:
                    gz = 0.5 * (zp - zm) * hz
                    gy = 0.5 * (yp - ym) * hy
                    gx = 0.5 * (xp - xm) * hx
                    gradient[z, y, x] = math.sqrt(gz * gz + gy * gy + gx * gx) * s1
                if do_hess:
                    hzy = 0.25 * hz * hy * (
                        np.float64(smooth[zc + 1, yc + 1, xc]) - np.float64(smooth[zc + 1, yc - 1, xc])
                        - np.float64(smooth[zc - 1, yc + 1, xc]) + np.float64(smooth[zc - 1, yc - 1, xc])
                    )
                    hzx = 0.25 * hz * hx * (
                        np.float64(smooth[zc + 1, yc, xc + 1]) - np.float64(smooth[zc + 1, yc, xc - 1])
                        - np.float64(smooth[zc - 1, yc, xc + 1]) + np.float64(smooth[zc - 1, yc, xc - 1])
                    )
                    hyx = 0.25 * hy * hx * (
                        np.float64(smooth[zc, yc + 1, xc + 1]) - np.float64(smooth[zc, yc + 1, xc - 1])
                        - np.float64(smooth[zc, yc - 1, xc + 1]) + np.float64(smooth[zc, yc - 1, xc - 1])
                    )
                    e1, e2, e3 = _eigenvalues_sym3(hzz * s2, hyy * s2, hxx * s2, hzy * s2, hzx * s2, hyx * s2)
                    hessian[0, z, y, x] = e1
                    hessian[1, z, y, x] = e2
                    hessian[2, z, y, x] = e3


@numba.njit(parallel=True, cache=True)
def _gradient_products(smooth, inv_h, scale):  # pragma: no cover - compiled
    """The six entries of sigma^2 grad G grad G^T on `smooth` minus one voxel per side."""
    nz, ny, nx = smooth.shape[0] - 2, smooth.shape[1] - 2, smooth.shape[2] - 2
    out = np.empty((6, nz, ny, nx), dtype=np.float32)
    hz, hy, hx = 0.5 * inv_h[0] * scale, 0.5 * inv_h[1] * scale, 0.5 * inv_h[2] * scale
    for z in numba.prange(nz):
        for y in range(ny):
            for x in range(nx):
                gz = (np.float64(smooth[z + 2, y + 1, x + 1]) - np.float64(smooth[z, y + 1, x + 1])) * hz
                gy = (np.float64(smooth[z + 1, y + 2, x + 1]) - np.float64(smooth[z + 1, y, x + 1])) * hy
                gx = (np.float64(smooth[z + 1, y + 1, x + 2]) - np.float64(smooth[z + 1, y + 1, x])) * hx
                out[0, z, y, x] = gz * gz
                out[1, z, y, x] = gy * gy
                out[2, z, y, x] = gx * gx
                out[3, z, y, x] = gz * gy
                out[4, z, y, x] = gz * gx
                out[5, z, y, x] = gy * gx
    return out


def _gaussian_valid(source: np.ndarray, kernels: Sequence[np.ndarray]) -> np.ndarray:
    """Separable Gaussian, 'valid' mode: the output shrinks by the kernel radius on each side."""
    out = source
    for axis, weights in enumerate(kernels):
        out = _convolve_valid(out, weights, axis)
    return out


def _crop(array: np.ndarray, have: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Crop an array covering interior +- `have` voxels to interior +- `want` (per axis)."""
    cut = np.asarray(have) - np.asarray(want)
    if np.any(cut < 0):
        raise RuntimeError("internal error: not enough context in block")
    index = tuple(slice(c, n - c) for c, n in zip(cut, array.shape[-3:], strict=True))
    return np.ascontiguousarray(array[(..., *index)])


#: Blocks smaller than this (voxels) run the compiled kernels on one thread: launching a parallel
#: region costs more than it saves there, and much more on a busy machine.
_SERIAL_BELOW = 1 << 17


class _threads:
    """Context manager: run numba kernels on `n` threads (restored on exit)."""

    def __init__(self, n: int | None):
        self.n = n

    def __enter__(self):
        self.previous = numba.get_num_threads()
        if self.n is not None:
            numba.set_num_threads(max(1, min(self.n, numba.config.NUMBA_NUM_THREADS)))
        return self

    def __exit__(self, *exc):
        numba.set_num_threads(self.previous)
        return False


def block_features(
    padded: np.ndarray,
    halo: Sequence[int],
    settings: FeatureSettings,
    spacing: np.ndarray,
    out: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Features of one block from the block plus its halo.

    Parameters
    ----------
    padded : (Z + 2 hz, Y + 2 hy, X + 2 hx) ndarray
        The block with `halo` voxels of context on each side (reflected at the volume border).
    halo : (3,) ints
        Context per axis, at least ``settings.halo_voxels(spacing)``.
    settings : FeatureSettings
    spacing : (3,) ndarray
        Voxel size (z, y, x) in micrometres.
    out : (F, Z, Y, X) float32 ndarray, optional
        Where to write.
    mask : ndarray like `padded`, optional
        Foreground (1) / matrix (0) with the same halo; needed for the masked kinds.

    Returns
    -------
    (F, Z, Y, X) ndarray of float32
    """
    halo = np.asarray(halo, dtype=int)
    padded = np.ascontiguousarray(padded, dtype=np.float32)
    interior = tuple(int(n - 2 * h) for n, h in zip(padded.shape, halo, strict=True))
    with _threads(1 if padded.size < _SERIAL_BELOW else None):
        return _block_features(padded, halo, interior, settings, spacing, out, mask)


def _block_features(padded, halo, interior, settings, spacing, out, mask):
    if out is None:
        out = np.empty((settings.n_features, *interior), dtype=np.float32)
    index = settings.channel_index()
    kinds = settings.features
    inv_h = (1.0 / spacing).astype(np.float64)
    empty3 = np.empty((0, 0, 0), dtype=np.float32)
    empty4 = np.empty((0, 0, 0, 0), dtype=np.float32)
    core = None
    if "core_gaussian" in kinds:
        if mask is None:
            raise InputError("the 'core_gaussian' feature needs a foreground mask", source="foreground")
        from scipy.ndimage import binary_erosion

        core = binary_erosion(np.asarray(mask) != 0, border_value=1).astype(np.float32)
    for scale in settings.scales_um:
        sigma = scale / spacing
        radius = np.array([_radius(s) for s in sigma])
        kernels = [_gaussian_kernel(s) for s in sigma]
        margin = np.zeros(3, dtype=int)
        if any(k in kinds for k in ("laplacian", "gradient", "hessian")):
            margin = np.ones(3, dtype=int)
        outer = None
        if "structure_tensor" in kinds:
            outer = [_gaussian_kernel(s * STRUCTURE_OUTER_RATIO) for s in sigma]
            outer_radius = np.array([(len(k) - 1) // 2 for k in outer])
            margin = np.maximum(margin, outer_radius + 1)
        smooth = _gaussian_valid(_crop(padded, halo, radius + margin), kernels)  # interior +- margin
        if "gaussian" in kinds:
            out[index[("gaussian", scale)]] = _crop(smooth, margin, np.zeros(3, dtype=int))
        if "dog" in kinds:
            small = [_gaussian_kernel(s * DOG_RATIO) for s in sigma]
            small_radius = np.array([(len(k) - 1) // 2 for k in small])
            fine = _gaussian_valid(_crop(padded, halo, small_radius), small)
            np.subtract(fine, _crop(smooth, margin, np.zeros(3, dtype=int)), out=out[index[("dog", scale)]])
        if any(k in kinds for k in ("laplacian", "gradient", "hessian")):
            inner = _crop(smooth, margin, np.ones(3, dtype=int))
            _derivative_channels(
                inner,
                np.ones(3, dtype=np.int64),
                inv_h,
                float(scale),
                out[index[("laplacian", scale)]] if "laplacian" in kinds else empty3,
                out[index[("gradient", scale)]] if "gradient" in kinds else empty3,
                out[index[("hessian", scale)] : index[("hessian", scale)] + 3] if "hessian" in kinds else empty4,
            )
        if outer is not None:
            products = _gradient_products(_crop(smooth, margin, outer_radius + 1), inv_h, float(scale))
            tensor = np.empty((6, *interior), dtype=np.float32)
            for k in range(6):
                tensor[k] = _gaussian_valid(products[k], outer)
            del products
            start = index[("structure_tensor", scale)]
            _eigenvalues_field(tensor, out[start : start + 3])
        if "foreground_gaussian" in kinds:
            if mask is None:
                raise InputError("the 'foreground_gaussian' feature needs a foreground mask", source="foreground")
            weight = _crop(np.ascontiguousarray(mask, dtype=np.float32), halo, radius)
            numerator = _gaussian_valid(_crop(padded, halo, radius) * weight, kernels)
            denominator = _gaussian_valid(weight, kernels)
            target = out[index[("foreground_gaussian", scale)]]
            np.divide(numerator, np.maximum(denominator, np.float32(1e-3)), out=target)
        if core is not None:
            weight = _crop(core, halo, radius)
            numerator = _gaussian_valid(_crop(padded, halo, radius) * weight, kernels)
            denominator = _gaussian_valid(weight, kernels)
            target = out[index[("core_gaussian", scale)]]
            np.divide(numerator, np.maximum(denominator, np.float32(1e-3)), out=target)
    return out


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------


def iter_blocks(shape: Sequence[int], block_shape: Sequence[int]) -> Iterator[tuple[slice, slice, slice]]:
    """Yield the (z, y, x) slices of the blocks that tile `shape`, in C order."""
    starts = [range(0, int(n), int(b)) for n, b in zip(shape, block_shape, strict=True)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                yield tuple(
                    slice(s, min(s + int(b), int(n)))
                    for s, b, n in zip((z, y, x), block_shape, shape, strict=True)
                )


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric reflection into [0, n) (scipy.ndimage mode 'reflect')."""
    period = 2 * n
    index = np.mod(index, period)
    return np.where(index >= n, period - 1 - index, index)


def read_block(image: Any, block: tuple[slice, ...], halo: Sequence[int]) -> np.ndarray:
    """Read `block` of `image` (numpy, Zarr or Dask) with `halo` voxels of context per side as
    float32, reflecting at the volume border; NaN or infinite voxels raise InputError."""
    shape = image.shape
    indices = [
        _reflect(np.arange(s.start - h, s.stop + h), int(n))
        for s, h, n in zip(block, halo, shape, strict=True)
    ]
    lows = [int(i.min()) for i in indices]
    highs = [int(i.max()) + 1 for i in indices]
    region = image[lows[0] : highs[0], lows[1] : highs[1], lows[2] : highs[2]]
    if hasattr(region, "compute"):
        region = region.compute()
    region = np.asarray(region)
    if region.dtype.kind not in "biuf":
        raise InputError(f"image must be numeric, got dtype {region.dtype}", source="image")
    region = region.astype(np.float32, copy=False)
    if region.dtype.kind == "f" and not np.isfinite(region).all():
        bad = np.argwhere(~np.isfinite(region))[0] + np.array(lows)
        raise InputError(
            f"image has NaN or infinite voxels (first at z={bad[0]}, y={bad[1]}, x={bad[2]})", source="image"
        )
    local = [i - lo for i, lo in zip(indices, lows, strict=True)]
    contiguous = all(np.array_equal(li, np.arange(li[0], li[0] + li.size)) for li in local)
    if contiguous:
        return np.ascontiguousarray(
            region[tuple(slice(int(li[0]), int(li[0]) + li.size) for li in local)]
        )
    return np.ascontiguousarray(region[np.ix_(*local)])


def check_image(image: Any, *, name: str = "image") -> Any:
    """Check that `image` is a 3D array-like; return the array (a Volume's data)."""
    data = getattr(image, "data", image) if not isinstance(image, np.ndarray) else image
    if not hasattr(data, "shape") or not hasattr(data, "__getitem__"):
        data = np.asarray(data)
    if len(data.shape) != 3:
        raise InputError(f"expected a 3D (z, y, x) volume, got shape {tuple(data.shape)}", source=name)
    if any(int(n) == 0 for n in data.shape):
        raise InputError(f"volume is empty (shape {tuple(data.shape)})", source=name)
    return data


def check_foreground(foreground: Any, shape: Sequence[int], *, required: bool = False) -> Any:
    """Check a foreground mask against the image shape; return the array (or None)."""
    if foreground is None:
        if required:
            raise InputError("these features need a foreground mask; pass foreground=", source="foreground")
        return None
    data = getattr(foreground, "data", foreground) if not isinstance(foreground, np.ndarray) else foreground
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    if tuple(int(n) for n in data.shape) != tuple(int(n) for n in shape):
        raise InputError(
            f"foreground shape {tuple(data.shape)} differs from the volume shape {tuple(shape)}", source="foreground"
        )
    return data


def read_mask(mask: Any, block: tuple[slice, ...], halo: Sequence[int]) -> np.ndarray:
    """Read a foreground block with halo as float32 0/1 (reflected at the border)."""
    shape = mask.shape
    indices = [_reflect(np.arange(s.start - h, s.stop + h), int(n)) for s, h, n in zip(block, halo, shape, strict=True)]
    lows = [int(i.min()) for i in indices]
    highs = [int(i.max()) + 1 for i in indices]
    region = mask[lows[0] : highs[0], lows[1] : highs[1], lows[2] : highs[2]]
    if hasattr(region, "compute"):
        region = region.compute()
    region = np.asarray(region) != 0
    local = [i - lo for i, lo in zip(indices, lows, strict=True)]
    return np.ascontiguousarray(region[np.ix_(*local)], dtype=np.float32)


def _block_shape(block_shape: Sequence[int] | int | None, shape: Sequence[int]) -> tuple[int, int, int]:
    if block_shape is None:
        block_shape = DEFAULT_BLOCK_SHAPE
    values = np.broadcast_to(np.asarray(block_shape, dtype=int), (3,))
    if np.any(values < 1):
        raise InputError(f"block shape must be positive, got {list(values)}", source="block_shape")
    return tuple(int(min(b, n)) for b, n in zip(values, shape, strict=True))


def voxel_features(
    image: Any,
    *,
    spacing: float | Sequence[float] | None,
    scales_um: Sequence[float] | None = None,
    features: Sequence[str] | str | None = None,
    block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
    dtype: Any = np.float32,
    out: Any = None,
    foreground: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """The ilastik voxel feature stack of a 3D image, computed block by block.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        The CT volume, axes (z, y, x) = (plane, row, column): numpy, memory map, Zarr or Dask
        array (or a :class:`corrtomo.io.Volume`). Never modified.
    spacing : float or (3,) sequence of float or None
        Voxel size in micrometres (``None``: 1 um, i.e. scales in voxels).
    scales_um : sequence of float, optional
        Gaussian scales in micrometres; default :data:`DEFAULT_SCALES_VOXELS` (0.7 to 10 voxels)
        times the mean voxel size.
    features : sequence of str, optional
        Filter kinds from :data:`FEATURE_KINDS`; default :data:`DEFAULT_FEATURES`.
    block_shape : int or (3,) ints
        Block size (z, y, x). Each block is read with the halo of
        :meth:`FeatureSettings.halo_voxels` (Gaussian radius ``int(4 sigma + 0.5)`` of the largest
        scale plus the derivative and integration context), so the result does not depend on it.
    dtype : dtype
        Output type (float32).
    out : (F, Z, Y, X) array, optional
        Preallocated output (numpy, Zarr, memory map) written block by block; memory then stays
        bounded by one block's features.
    foreground : (Z, Y, X) bool array_like, optional
        Particle foreground, needed by the ``foreground_gaussian`` and ``core_gaussian`` kinds.
    progress : callable, optional
        ``progress("features", done, total)`` after each block.

    Returns
    -------
    (F, Z, Y, X) ndarray or `out`
        Channels in the order of :func:`feature_names`.

    Raises
    ------
    InputError
        Not 3D, empty, non-numeric, NaN or infinite voxels, bad scales or kinds.

    Notes
    -----
    See :class:`FeatureSettings` for the formula of each channel. Borders are reflected
    (half-sample symmetric, scipy.ndimage ``mode="reflect"``); the Gaussian channel equals
    ``scipy.ndimage.gaussian_filter(image, sigma / spacing, mode="reflect", truncate=4)``.
    Cost is one separable Gaussian per scale (two with ``dog``; eight with ``structure_tensor``),
    the rest is finite differences and closed-form 3x3 eigenvalues (numba, all cores).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((16, 16, 16), np.float32); image[4:12, 4:12, 4:12] = 1
    >>> voxel_features(image, spacing=0.5, scales_um=(0.5, 1.0)).shape
    (20, 16, 16, 16)
    """
    data = check_image(image)
    if spacing is None and hasattr(image, "spacing") and image.spacing is not None:
        spacing = image.spacing
    spacing = normalize_spacing(spacing)
    settings = FeatureSettings.default(spacing, scales_um=scales_um, features=features)
    return compute_features(
        data, settings, spacing=spacing, block_shape=block_shape, dtype=dtype, out=out,
        foreground=foreground, progress=progress,
    )


def compute_features(
    data: Any,
    settings: FeatureSettings,
    *,
    spacing: np.ndarray,
    block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
    dtype: Any = np.float32,
    out: Any = None,
    foreground: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Any:
    """:func:`voxel_features` with explicit :class:`FeatureSettings`."""
    shape = tuple(int(n) for n in data.shape)
    blocks = _block_shape(block_shape, shape)
    halo = settings.halo_voxels(spacing)
    if out is None:
        out = np.empty((settings.n_features, *shape), dtype=dtype)
    elif tuple(out.shape) != (settings.n_features, *shape):
        raise InputError(
            f"output shape {tuple(out.shape)} differs from {(settings.n_features, *shape)}", source="out"
        )
    mask = check_foreground(foreground, shape, required=settings.needs_mask)
    all_blocks = list(iter_blocks(shape, blocks))
    for done, block in enumerate(all_blocks, start=1):
        padded = read_block(data, block, halo)
        mask_block = None if mask is None else read_mask(mask, block, halo)
        values = block_features(padded, halo, settings, spacing, mask=mask_block)
        out[(slice(None), *block)] = values.astype(dtype, copy=False)
        if progress is not None:
            progress("features", done, len(all_blocks))
    return out
