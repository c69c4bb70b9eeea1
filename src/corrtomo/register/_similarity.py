"""Multimodal similarity for slice-to-volume registration.

BSE grey values and CT attenuation are not monotonically related (talc is dark in BSE but mid-grey
in CT), so the search does not compare grey values directly. Each modality is first turned into a
*particle probability* map (particle vs embedding matrix, Otsu threshold on the smoothed image,
soft logistic edge), and the maps are compared with normalised cross-correlation (NCC). Normalised
mutual information of the raw grey values is reported as a second, modality-agnostic score.

Formulas
--------
* NCC of two images ``a``, ``b`` over the pixels ``i`` where both are valid::

      NCC = sum_i (a_i - mean a)(b_i - mean b) / sqrt(sum_i (a_i - mean a)^2 sum_i (b_i - mean b)^2)

* Normalised mutual information (Studholme et al. 1999)::

      NMI(A, B) = (H(A) + H(B)) / H(A, B),  H = -sum p log p

  over a joint histogram; 1 for independent images, 2 for a one-to-one relation.
* Dice overlap of two binary masks ``2 |A & B| / (|A| + |B|)``.

References
----------
Otsu, N. (1979). A threshold selection method from gray-level histograms. IEEE TSMC 9, 62-66.
Studholme, C., Hill, D. L. G., Hawkes, D. J. (1999). An overlap invariant entropy measure of 3D
medical image alignment. Pattern Recognition 32, 71-86.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D sample (maximal between-class variance).

    Parameters
    ----------
    values : (N,) ndarray
        Finite values.
    bins : int
        Histogram bins.

    Returns
    -------
    float
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    low, high = np.percentile(values, [0.1, 99.9])
    if not high > low:
        return float(low)
    hist, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    centres = 0.5 * (edges[1:] + edges[:-1])
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def particle_probability(
    image: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    sigma: float = 1.0,
    labels: bool = False,
) -> np.ndarray:
    """Soft particle-vs-matrix map of a CT volume or an SEM section, in [0, 1].

    The image is smoothed with a Gaussian of `sigma` pixels, thresholded at Otsu's value ``t``
    (computed over the `valid` pixels) and mapped through a logistic edge
    ``p = 1 / (1 + exp(-(x - t) / w))`` with ``w`` a quarter of the distance between the two class
    means, so that noise near the threshold gives intermediate values.

    Parameters
    ----------
    image : ndarray
        2D section (rows, columns) or 3D volume (z, y, x).
    valid : bool ndarray, optional
        Pixels that carry data (for example not vacuum); others get 0.
    sigma : float
        Gaussian smoothing before thresholding, in pixels.
    labels : bool
        `image` is a mineral map (phase ids, 0 = matrix): the map is simply ``image > 0``.

    Returns
    -------
    ndarray of float32, same shape as `image`.
    """
    if labels:
        out = (np.asarray(image) > 0).astype(np.float32)
    else:
        smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma) if sigma > 0 else np.asarray(image, np.float32)
        sample = smooth[valid] if valid is not None else smooth
        if sample.size > 2_000_000:
            sample = sample.ravel()[:: sample.size // 2_000_000 + 1]
        threshold = otsu_threshold(sample)
        low = sample[sample <= threshold]
        high = sample[sample > threshold]
        spread = (high.mean() - low.mean()) if low.size and high.size else 1.0
        width = max(0.25 * float(spread), 1e-12)
        out = (1.0 / (1.0 + np.exp(-np.clip((smooth - threshold) / width, -30, 30)))).astype(np.float32)
    if valid is not None:
        out = np.where(valid, out, np.float32(0))
    return out


def section_valid_mask(section: np.ndarray, *, labels: bool = False) -> np.ndarray:
    """Pixels of a BSE section that carry sample signal (not vacuum outside a pillar).

    Vacuum gives (nearly) zero backscatter counts; a pixel is valid when its 2-pixel Gaussian
    mean exceeds a third of the median of the non-zero counts. Mineral maps are valid everywhere.
    """
    section = np.asarray(section)
    if labels:
        return np.ones(section.shape, dtype=bool)
    values = section.astype(np.float32)
    positive = values[values > 0]
    if positive.size == 0:
        return np.zeros(section.shape, dtype=bool)
    smooth = ndimage.gaussian_filter(values, 2.0)
    valid = smooth > np.float32(np.median(positive) / 3.0)
    if valid.mean() < 0.05:  # not a vacuum-bordered BSE image: keep everything
        return np.ones(section.shape, dtype=bool)
    return valid


def ncc(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of two equally shaped arrays over finite (weighted) pixels.

    ``NCC = sum w (a - ma)(b - mb) / sqrt(sum w (a - ma)^2 sum w (b - mb)^2)`` with weighted means.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    w = np.isfinite(a) & np.isfinite(b)
    weight = w.astype(np.float64) if weights is None else np.where(w, np.asarray(weights, np.float64).ravel(), 0.0)
    total = weight.sum()
    if total <= 0:
        return 0.0
    a = np.where(w, a, 0.0)
    b = np.where(w, b, 0.0)
    da = a - (weight * a).sum() / total
    db = b - (weight * b).sum() / total
    denominator = np.sqrt((weight * da * da).sum() * (weight * db * db).sum())
    return float((weight * da * db).sum() / denominator) if denominator > 0 else 0.0


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 32) -> float:
    """Normalised mutual information ``(H(A) + H(B)) / H(A, B)`` (Studholme et al. 1999).

    Computed from a `bins` x `bins` joint histogram over the pixels where both are finite; each
    image is binned between its 1st and 99th percentile. Returns 1.0 for fewer than 16 pixels.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 16:
        return 1.0
    a, b = a[keep], b[keep]

    def _bin(x):
        low, high = np.percentile(x, [1, 99])
        if not high > low:
            return np.zeros(x.size, dtype=np.int64)
        return np.clip(((x - low) / (high - low) * bins).astype(np.int64), 0, bins - 1)

    joint = np.bincount(_bin(a) * bins + _bin(b), minlength=bins * bins).astype(np.float64)
    joint /= joint.sum()
    pa = joint.reshape(bins, bins).sum(axis=1)
    pb = joint.reshape(bins, bins).sum(axis=0)

    def _entropy(p):
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    h_joint = _entropy(joint)
    return (_entropy(pa) + _entropy(pb)) / h_joint if h_joint > 0 else 1.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |A & B| / (|A| + |B|)`` of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


@numba.njit(cache=True, nogil=True, inline="always")
def _inside(volume, z, y, x):  # pragma: no cover - compiled
    nz, ny, nx = volume.shape
    return z >= -0.5 and y >= -0.5 and x >= -0.5 and z <= nz - 0.5 and y <= ny - 0.5 and x <= nx - 0.5


@numba.njit(cache=True, nogil=True, inline="always")
def _trilinear_at(volume, z, y, x):  # pragma: no cover - compiled
    """Trilinear value of `volume` at (z, y, x), clamped to the outer voxel centres."""
    nz, ny, nx = volume.shape
    z = min(max(z, 0.0), nz - 1.0)
    y = min(max(y, 0.0), ny - 1.0)
    x = min(max(x, 0.0), nx - 1.0)
    z0 = min(int(z), max(nz - 2, 0))
    y0 = min(int(y), max(ny - 2, 0))
    x0 = min(int(x), max(nx - 2, 0))
    fz = z - z0
    fy = y - y0
    fx = x - x0
    z1 = min(z0 + 1, nz - 1)
    y1 = min(y0 + 1, ny - 1)
    x1 = min(x0 + 1, nx - 1)
    c00 = volume[z0, y0, x0] * (1 - fx) + volume[z0, y0, x1] * fx
    c01 = volume[z0, y1, x0] * (1 - fx) + volume[z0, y1, x1] * fx
    c10 = volume[z1, y0, x0] * (1 - fx) + volume[z1, y0, x1] * fx
    c11 = volume[z1, y1, x0] * (1 - fx) + volume[z1, y1, x1] * fx
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    return c0 * (1 - fz) + c1 * fz


@numba.njit(cache=True, nogil=True)
def _trilinear(volume, points, out, cval):  # pragma: no cover - compiled
    for i in range(points.shape[0]):
        z = points[i, 0]
        y = points[i, 1]
        x = points[i, 2]
        out[i] = _trilinear_at(volume, z, y, x) if _inside(volume, z, y, x) else cval


@numba.njit(cache=True, nogil=True)
def _trilinear_grid(volume, origin, step0, step1, step2, out, cval):  # pragma: no cover - compiled
    n0, n1, n2 = out.shape
    for i in range(n0):
        for j in range(n1):
            bz = origin[0] + i * step0[0] + j * step1[0]
            by = origin[1] + i * step0[1] + j * step1[1]
            bx = origin[2] + i * step0[2] + j * step1[2]
            for k in range(n2):
                z = bz + k * step2[0]
                y = by + k * step2[1]
                x = bx + k * step2[2]
                out[i, j, k] = _trilinear_at(volume, z, y, x) if _inside(volume, z, y, x) else cval


def sample_grid(volume, origin, steps, shape, *, cval: float = np.nan) -> np.ndarray:
    """Trilinear samples of `volume` on the regular grid ``origin + i s0 + j s1 + k s2`` (compiled).

    Parameters
    ----------
    volume : (P, M, N) ndarray
    origin : (3,) array_like
        Voxel position of grid point (0, 0, 0), (z, y, x).
    steps : three (3,) array_like
        Grid steps along the three output axes.
    shape : tuple of int
        Output shape (n0, n1, n2).

    Returns
    -------
    ndarray of float32, `shape`.
    """
    out = np.empty(tuple(int(s) for s in shape), dtype=np.float32)
    s0, s1, s2 = (np.asarray(s, dtype=np.float64) for s in steps)
    _trilinear_grid(
        np.ascontiguousarray(volume, dtype=np.float32), np.asarray(origin, dtype=np.float64), s0, s1, s2, out,
        np.float32(cval),
    )
    return out


def sample_points(volume: np.ndarray, points: np.ndarray, *, cval: float = np.nan) -> np.ndarray:
    """Trilinear interpolation of a (z, y, x) volume at (..., 3) voxel positions (compiled).

    Positions more than half a voxel outside the volume get `cval`.
    """
    points = np.asarray(points, dtype=np.float64)
    flat = np.ascontiguousarray(points.reshape(-1, 3))
    out = np.empty(flat.shape[0], dtype=np.float32)
    _trilinear(np.ascontiguousarray(volume, dtype=np.float32), flat, out, np.float32(cval))
    return out.reshape(points.shape[:-1])
