"""Particle foreground (particles versus matrix and air) and the cylindrical pillar field of view.

Axes are (z, y, x) = (plane, row, column); every size is in micrometres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._shared import InputError, connected_components, normalize_spacing, remove_dust

__all__ = ["Pillar", "detect_pillar", "fill_cavities", "foreground_mask", "pillar_mask"]

_FOREGROUND_METHODS = ("otsu", "multiotsu", "gmm")


@dataclass(frozen=True)
class Pillar:
    """A cylindrical field of view along z (a laser-cut or FIB-milled pillar).

    Attributes
    ----------
    center_yx : tuple of float
        Axis position (row, column) in voxel coordinates (voxel centres at integers).
    radius_voxels : float
        Radius in voxels of the (y, x) grid.
    """

    center_yx: tuple[float, float]
    radius_voxels: float

    def radius_um(self, spacing) -> float:
        """Radius in micrometres for isotropic (y, x) voxels."""
        spacing = normalize_spacing(spacing, 3)
        return float(self.radius_voxels * spacing[1])


def pillar_mask(shape, pillar: Pillar | None, *, margin: float = 0.0) -> np.ndarray:
    """Boolean mask of the voxels inside a pillar.

    Parameters
    ----------
    shape : tuple of int
        (M, N) for one (y, x) plane or (P, M, N) for a volume.
    pillar : Pillar or None
        ``None`` gives an all-True mask.
    margin : float
        Shrink the radius by this many voxels (``margin=1`` leaves out the wall voxels).

    Returns
    -------
    mask : bool ndarray of `shape`
        :math:`(y - c_y)^2 + (x - c_x)^2 \\le (R - \\mathrm{margin})^2`.
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) not in (2, 3):
        raise InputError(f"expected a 2D or 3D shape, got {shape}", source="shape")
    if pillar is None:
        return np.ones(shape, dtype=bool)
    ny, nx = shape[-2:]
    y = np.arange(ny, dtype=np.float64)[:, None] - pillar.center_yx[0]
    x = np.arange(nx, dtype=np.float64)[None, :] - pillar.center_yx[1]
    radius = max(float(pillar.radius_voxels) - float(margin), 0.0)
    plane = y * y + x * x <= radius * radius
    if len(shape) == 2:
        return plane
    return np.repeat(plane[None], shape[0], axis=0)


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise InputError(f"expected a 3D (z, y, x) volume, got {image.ndim}D shape {image.shape}", source=name)
    if image.size == 0:
        raise InputError("the volume is empty", source=name)
    if image.dtype != np.bool_ and not np.issubdtype(image.dtype, np.number):
        raise InputError(f"expected numbers, got dtype {image.dtype}", source=name)
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise InputError("contains NaN or infinite voxels", source=name)
    return image


def _smooth(image: np.ndarray, sigma_um: float, spacing: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float32)
    if sigma_um <= 0:
        return image
    return ndimage.gaussian_filter(image, sigma=tuple(sigma_um / spacing), mode="nearest")


def _plane_profile(image: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Median over z, lightly smoothed: the matrix level inside the pillar, the air outside."""
    from scipy import ndimage

    if image.dtype == np.bool_:  # a mask: the share of sample voxels per column
        plane = image.mean(axis=0, dtype=np.float64)
    else:
        plane = np.median(np.asarray(image, dtype=np.float32), axis=0).astype(np.float64)
    return ndimage.gaussian_filter(plane, sigma=1.0, mode="nearest")


def _largest_filled(plane: np.ndarray, threshold: float) -> np.ndarray | None:
    """The largest 4-connected component of ``plane > threshold`` with its holes filled."""
    from scipy import ndimage

    labels, n = ndimage.label(plane > threshold)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def _candidate_thresholds(plane: np.ndarray, depth: int = 4) -> list[float]:
    """First thresholds of the plane, lowest first: an Otsu cascade.

    Otsu's threshold of the plane, then Otsu's threshold of the values below it, and so on
    (`depth` levels): the plane holds up to three levels (air, matrix, particle-rich columns)
    in unknown proportions, and one of the cascade's thresholds falls between air and matrix.
    """
    from skimage.filters import threshold_otsu

    thresholds: list[float] = []
    values = plane.ravel()
    for _ in range(depth):
        if values.size < 64 or not np.ptp(values) > 0:
            break
        threshold = float(threshold_otsu(values))
        thresholds.append(threshold)
        values = values[values <= threshold]
    return sorted(set(thresholds))


def _fit_disk(plane: np.ndarray, disk: np.ndarray, max_iterations: int = 5):
    """Refine a first sample region to the air/matrix half-way edge.

    Returns the region, its centroid and radius, or ``None``.
    """
    yy, xx = np.indices(plane.shape)
    for _ in range(max_iterations):
        area = float(disk.sum())
        if area < 16 or area > 0.95 * plane.size:
            return None
        cy, cx = (float(v) for v in np.argwhere(disk).mean(axis=0))
        radius = math.sqrt(area / math.pi)
        distance = np.hypot(yy - cy, xx - cx)
        outside = plane[distance > radius + 3.0]
        inside = plane[distance < 0.8 * radius]
        if outside.size < 8 or inside.size < 8:
            return None
        # air: the median beyond the edge; sample: the lower quartile inside, i.e. the matrix
        # level even where particles fill most of some columns
        air = float(np.median(outside))
        matrix = float(np.percentile(inside, 25))
        if not matrix > air:
            return None
        refined = _largest_filled(plane, 0.5 * (air + matrix))
        if refined is None:
            return None
        if np.array_equal(refined, disk):
            break
        disk = refined
    area = float(disk.sum())
    if area < 16 or area > 0.95 * plane.size:
        return None
    cy, cx = (float(v) for v in np.argwhere(disk).mean(axis=0))
    return disk, (cy, cx), math.sqrt(area / math.pi)


def detect_pillar(image: np.ndarray, *, spacing=None, min_contrast: float = 4.0) -> Pillar | None:
    """Find a cylindrical field of view along z from the air/sample contrast.

    Parameters
    ----------
    image : (P, M, N) ndarray
        CT image, or a boolean sample/particle mask.
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres; the (y, x) voxels must be square.
    min_contrast : float
        Smallest step between inside and outside, in units of the outside's noise, for a pillar
        to be reported.

    Returns
    -------
    Pillar or None
        ``None`` when the image shows no disk-shaped sample surrounded by air (for example a
        field of view filled with sample).

    Notes
    -----
    The image is reduced to its median along z, :math:`\\tilde I(y, x) = \\mathrm{med}_z I(z, y, x)`,
    which is the matrix level inside the pillar where particles fill less than half of a column,
    brighter where they fill more (large particles, short volumes), and the air level outside,
    with the noise cut by about :math:`\\sqrt{P}`. The plane thus holds up to three levels (air,
    matrix, particle-rich columns); the pillar is the region above the lowest. First regions are
    taken at the thresholds of an Otsu cascade (Otsu's threshold, then Otsu's threshold of the
    values below it, and so on), lowest first, and each is refined: from its centroid and radius
    :math:`R = \\sqrt{A/\\pi}` (area :math:`A`), the air level is the median beyond :math:`R + 3`
    and the matrix level the lower quartile within :math:`0.8 R` (robust to particle-rich
    columns); the plane is thresholded half-way between them (partial-volume edge pixels then
    count for their share on average), the largest component taken and its holes filled, until
    the region no longer changes. Lowest first, because a bright particle column can itself look
    like a small pillar. The first refined region that is a pillar is reported: round (at least 97 % of the disk of radius R around the
    centroid is covered and at most 3 % of the region lies outside it), with air at the border
    of the plane, and brighter than the air by `min_contrast` noise units.
    """
    image = _check_image(image)
    spacing = normalize_spacing(spacing, 3)
    if not math.isclose(spacing[1], spacing[2], rel_tol=1e-6):
        raise InputError("pillar detection needs square (y, x) voxels", source="spacing")
    plane = _plane_profile(image, spacing)
    if not np.ptp(plane) > 0:
        return None
    for threshold in _candidate_thresholds(plane):
        first = _largest_filled(plane, threshold)
        if first is None:
            continue
        fitted = _fit_disk(plane, first)
        if fitted is None:
            continue
        disk, (cy, cx), radius = fitted
        area = float(disk.sum())
        model = pillar_mask(plane.shape, Pillar((cy, cx), radius))
        covered = float((disk & model).sum()) / max(float(model.sum()), 1.0)
        outside = float((disk & ~model).sum()) / area
        border = np.concatenate([disk[0], disk[-1], disk[:, 0], disk[:, -1]])
        if covered < 0.97 or outside > 0.03 or border.mean() > 0.5:
            continue
        air = plane[~pillar_mask(plane.shape, Pillar((cy, cx), radius + 2.0))]
        ring = plane[pillar_mask(plane.shape, Pillar((cy, cx), radius - 2.0))]
        if air.size < 8 or ring.size < 8:
            continue
        step = float(np.median(ring)) - float(np.median(air))
        noise = float(np.std(air)) + 1e-12 * max(abs(float(np.median(ring))), 1.0)
        if step < min_contrast * noise:
            continue
        return Pillar(center_yx=(cy, cx), radius_voxels=radius)
    return None


def fill_cavities(mask: np.ndarray) -> np.ndarray:
    """Fill the cavities of a 3D mask: background components that do not reach the border.

    Background components are 6-connected (the complement of 26-connected objects), labelled
    with ``cc3d`` in one pass.
    """
    mask = np.asarray(mask, dtype=bool)
    background = connected_components(~mask, connectivity=6)
    n = int(background.max(initial=0))
    outer = np.zeros(n + 1, dtype=bool)
    for face in (background[0], background[-1], background[:, 0], background[:, -1],
                 background[:, :, 0], background[:, :, -1]):
        outer[np.unique(face)] = True
    outer[0] = True  # label 0 = the mask itself
    cavity = ~outer
    return mask | cavity[background]


def _half_maximum(smooth: np.ndarray, matrix: float, margin: float, spacing: np.ndarray,
                  window_um: float | None, fraction: float = 0.5) -> np.ndarray:
    """Local edge: smooth > max(matrix + margin, matrix + fraction (local max - matrix))."""
    from scipy import ndimage

    window_um = 2.0 * float(spacing.min()) if window_um is None else float(window_um)
    size = tuple(int(2 * max(1, round(window_um / v)) + 1) for v in spacing)
    local = ndimage.maximum_filter(smooth, size=size, mode="nearest")
    local -= np.float32(matrix)
    local *= np.float32(fraction)
    local += np.float32(matrix)
    np.maximum(local, np.float32(matrix + margin), out=local)
    return smooth > local


def _gmm_threshold(values: np.ndarray, n_components: int, rng: np.random.Generator) -> float:
    """Threshold between the lowest Gaussian-mixture class and the next, on 1D values."""
    from sklearn.mixture import GaussianMixture

    sample = values if values.size <= 200_000 else rng.choice(values, 200_000, replace=False)
    model = GaussianMixture(n_components=n_components, random_state=int(rng.integers(2**31)))
    model.fit(sample.reshape(-1, 1).astype(np.float64))
    order = np.argsort(model.means_.ravel())
    grid = np.linspace(sample.min(), sample.max(), 4096)
    posterior = model.predict_proba(grid.reshape(-1, 1))[:, order[0]]
    above = np.flatnonzero((posterior < 0.5) & (grid > model.means_.ravel()[order[0]]))
    return float(grid[above[0]]) if above.size else float(np.median(sample))


def _matrix_threshold(value) -> float:
    value = float(value)
    if not 0.0 < value < 1.0:
        raise InputError(f"must lie in (0, 1), got {value}", source="matrix_threshold")
    return value


def foreground_mask(
    image: np.ndarray,
    *,
    spacing=None,
    method: str = "otsu",
    probabilities: np.ndarray | None = None,
    matrix_threshold: float = 0.5,
    fill_holes: bool = True,
    min_size_um: float | None = None,
    smooth_um: float | None = None,
    pillar: Pillar | bool | None = True,
    refine_edges: bool = True,
    noise_sigmas: float = 4.0,
    edge_window_um: float | None = None,
    edge_fraction: float = 0.4,
    rng=0,
) -> np.ndarray:
    """Particles versus matrix (and air) from a CT image or a classifier's matrix probability.

    Parameters
    ----------
    image : (P, M, N) ndarray
        CT image (attenuation grows with density: particles are brighter than the matrix).
    spacing : float or sequence of 3 floats, optional
        Voxel size in micrometres.
    method : {"otsu", "multiotsu", "gmm"}
        Threshold of the smoothed image over the sample (inside the pillar): Otsu's two classes;
        multi-Otsu with three classes (air, matrix, particles; the upper threshold); or a
        two-component Gaussian mixture (the boundary where the matrix posterior falls below 0.5).
        Ignored when `probabilities` is given.
    probabilities : (P, M, N) float ndarray, optional
        A classifier's matrix probability; foreground is where it is below 0.5 after the same
        Gaussian smoothing (`smooth_um`) the image gets otherwise: a voxel-wise decision has
        ragged surfaces whose notches split particles in the distance-map watershed.
    matrix_threshold : float
        With `probabilities`: foreground where the smoothed matrix probability is below this
        (in (0, 1); a U-Net's calibrated :attr:`~corrtomo.segment.unet.UNetModel.matrix_threshold`).
    fill_holes : bool
        Fill cavities enclosed by particles (:func:`fill_cavities`).
    min_size_um : float, optional
        Remove connected components with an ESD below this (default 2 voxels).
    smooth_um : float, optional
        Gaussian sigma before thresholding (the image, or the probabilities) in micrometres
        (default one voxel; 0 for none).
    pillar : Pillar, bool or None
        ``True`` detects a pillar (:func:`detect_pillar`) and clears everything outside it;
        a :class:`Pillar` uses that one; ``False``/``None`` uses the whole volume.
    refine_edges : bool
        Place each edge at the local half maximum between the matrix and the particle next to it
        (see Notes) instead of at the global threshold.
    noise_sigmas : float
        With `refine_edges`, a voxel must also exceed the matrix level by this many matrix noise
        standard deviations.
    edge_window_um : float, optional
        Half-width of the local-maximum window, default 2 voxels.
    edge_fraction : float
        Where between the matrix level (0) and the local maximum (1) the edge is put; 0.4
        measured best on the talc-saxolite twin (128 nm voxels: foreground IoU 0.915, volume within
        1 %; at the present 100 nm preset: IoU 0.944-0.951 over seeds 0-2; 0.35 and 0.45 do worse
        on average over seeds 0-1).
    rng : int or numpy.random.Generator
        Seed for the Gaussian-mixture subsample.

    Returns
    -------
    mask : (P, M, N) bool ndarray

    Notes
    -----
    Otsu (1979) maximises the between-class variance
    :math:`\\sigma_B^2(t) = \\omega_0(t)\\,\\omega_1(t)\\,(\\mu_0(t) - \\mu_1(t))^2`; multi-Otsu
    (Liao et al. 2001) generalises it to three classes. Smoothing with
    :math:`\\sigma` = one voxel lowers the noise of an FBP reconstruction by a factor of about
    :math:`(2\\sqrt{\\pi}\\sigma)^{3/2} \\approx 6` before the threshold.

    The global threshold only splits matrix from particles; the matrix level :math:`m` (median
    of the voxels below it) and its noise :math:`s` (1.4826 MAD) are taken from it. With
    `refine_edges` the foreground is
    :math:`I_\\sigma(x) > \\max\\big(m + k s,\\ (m + \\max_{W(x)} I_\\sigma)/2\\big)`:
    every edge lies half-way between the matrix and the brightest phase within the window
    :math:`W(x)`, the half-maximum (FWHM) edge criterion, so bright and faint minerals keep their
    size under the point-spread blur, where one global threshold grows the bright ones and
    erodes the faint ones.
    """
    from skimage.filters import threshold_multiotsu, threshold_otsu

    from .._shared import as_rng

    image = _check_image(image)
    spacing = normalize_spacing(spacing, 3)
    if method not in _FOREGROUND_METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(_FOREGROUND_METHODS)}", source="method")
    if pillar is True:
        pillar = detect_pillar(image, spacing=spacing)
    elif pillar is False:
        pillar = None
    inside = pillar_mask(image.shape[1:], pillar)
    sigma = float(spacing.min()) if smooth_um is None else float(smooth_um)
    if probabilities is not None:
        probabilities = _check_image(probabilities, "probabilities")
        if probabilities.shape != image.shape:
            raise InputError(f"shape {probabilities.shape} differs from the image's {image.shape}", source="probabilities")
        mask = _smooth(probabilities, sigma, spacing) < np.float32(_matrix_threshold(matrix_threshold))
    else:
        smooth = _smooth(image, sigma, spacing)
        values = smooth[:, inside]
        if values.size == 0 or not np.ptp(values) > 0:
            raise InputError("the image is constant inside the field of view; no foreground", source="image")
        if method == "otsu":
            threshold = threshold_otsu(values)
        elif method == "multiotsu":
            threshold = threshold_multiotsu(values, classes=3)[0]
        else:
            threshold = _gmm_threshold(values.ravel(), 2, as_rng(rng))
        matrix_values = values[values <= threshold]
        matrix = float(np.median(matrix_values))
        noise = 1.4826 * float(np.median(np.abs(matrix_values - matrix)))
        del values, matrix_values
        if refine_edges:
            mask = _half_maximum(smooth, matrix, noise_sigmas * noise, spacing, edge_window_um, edge_fraction)
        else:
            mask = smooth > threshold
        del smooth
    if pillar is not None:
        mask &= inside[None]
    if fill_holes:
        mask = fill_cavities(mask)
    smallest = 2.0 * float(spacing.min()) if min_size_um is None else float(min_size_um)
    if smallest > 0:
        voxels = math.ceil(math.pi / 6 * smallest**3 / float(np.prod(spacing)))
        if voxels > 1:
            mask = remove_dust(mask, voxels, connectivity=26)
    return mask
