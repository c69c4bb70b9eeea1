"""Particle-aware phase refinement: contact rims and partial-volume inclusions.

A voxel classifier decides each voxel from its neighbourhood's grey values. Two errors survive it
and decide the liberation degree, where a particle is free only when ``vf > 0.99``:

* **contact rims** — where two particles touch, the voxels of the contact mix the two minerals
  under the point-spread blur, and their grey value reads as a third phase in between (a
  dolomite-magnesite contact reads as talc). That turns free particles into false composites.
  The foreground rim correction (:func:`correct_rim_phases`) cannot see contacts, because both
  particles lie inside one foreground component; :func:`correct_contact_phases` uses the
  particle labels.
* **small inclusions** — an inclusion a few voxels across is blurred into its host, so its grey
  value never reaches its own phase's and the classifier, which has seen few of them in the
  training planes, gives it the host's phase. The particle then reads as free. Its signature
  is still there: a significant local grey-value deficit (or excess) against the host's
  interior. :func:`recover_inclusions` finds it and unmixes it into a volume and a phase with a
  model of the blur (:func:`estimate_blur_sigma`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._shared import InputError, connected_components

_SQRT_2PI = math.sqrt(2.0 * math.pi)


def _check(volume, phases, particles, name_volume: str = "ct"):
    phases = np.asarray(phases)
    particles = np.asarray(particles)
    if phases.ndim != 3 or phases.shape != particles.shape:
        raise InputError(f"phases {phases.shape} and particles {particles.shape} must be the same 3D shape",
                         source="particles")
    if volume is not None:
        volume = np.asarray(volume)
        if volume.shape != phases.shape:
            raise InputError(f"{name_volume} {volume.shape} and phases {phases.shape} must be the same shape",
                             source=name_volume)
    return volume, phases, particles


def _contact_voxels(particles: np.ndarray) -> np.ndarray:
    """Particle voxels with a 6-neighbour in another particle (not the matrix)."""
    contact = np.zeros(particles.shape, dtype=bool)
    for axis in range(3):
        a = np.swapaxes(particles, 0, axis)
        c = np.swapaxes(contact, 0, axis)
        differs = (a[1:] != a[:-1]) & (a[1:] != 0) & (a[:-1] != 0)
        c[1:] |= differs
        c[:-1] |= differs
    return contact


def _grow_within(band: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """`band` grown by one 6-step into voxels of the same (non-zero) particle."""
    grown = band.copy()
    for axis in range(3):
        a = np.swapaxes(particles, 0, axis)
        b = np.swapaxes(band, 0, axis)
        g = np.swapaxes(grown, 0, axis)
        same = (a[1:] == a[:-1]) & (a[1:] != 0)
        g[1:] |= b[:-1] & same
        g[:-1] |= b[1:] & same
    return grown


def correct_contact_phases(phases, particles, *, depth_voxels: int = 1) -> np.ndarray:
    """Give the voxels where particles touch the phase of their own particle's interior.

    Parameters
    ----------
    phases : (Z, Y, X) uint8 ndarray
        Phase ids (0 = matrix).
    particles : (Z, Y, X) int ndarray
        Particle labels (0 = matrix), e.g. from :func:`separate_particles`.
    depth_voxels : int
        Thickness of the contact rim on each side (the blur mixes about one voxel).

    Returns
    -------
    corrected : (Z, Y, X) uint8 ndarray
        A new array; `phases` is not modified.

    Notes
    -----
    With :math:`C` the particle voxels within `depth_voxels` (6-steps) of a voxel of another
    particle, and :math:`I = P \\setminus C` for the particle voxels :math:`P`, each
    :math:`x \\in C` takes :math:`\\phi(\\arg\\min_{y \\in I} \\lVert x - y \\rVert)` when that
    voxel lies in the same particle and within ``depth_voxels + 1``; otherwise (a sliver with no
    interior of its own) it keeps its phase. Rims on the matrix are left to
    :func:`correct_rim_phases`. A real grain boundary that meets a contact moves by at most
    `depth_voxels` there.
    """
    from ._rim import phases_from_nearest_interior

    _, phases, particles = _check(None, phases, particles)
    corrected = phases.copy()
    depth = int(depth_voxels)
    if depth <= 0:
        return corrected
    contact = _contact_voxels(particles)
    for _ in range(depth - 1):  # grow the band within each particle only (not across the matrix)
        contact = _grow_within(contact, particles)
    if not contact.any():
        return corrected
    interior = (particles != 0) & ~contact
    if not interior.any():
        return corrected
    return phases_from_nearest_interior(phases, contact, interior, reach=depth + 1 + 1e-9, labels=particles)


def ball_peak_fraction(radius_over_sigma):
    """Centre value of a uniform ball blurred by a 3D Gaussian, as a fraction of its contrast.

    :math:`P(\\chi^2_3 \\le a^2) = \\operatorname{erf}(a/\\sqrt2) - \\sqrt{2/\\pi}\\,a\\,e^{-a^2/2}`
    for :math:`a = r / \\sigma`.
    """
    from scipy.special import erf

    a = np.asarray(radius_over_sigma, dtype=np.float64)
    return erf(a / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * a * np.exp(-0.5 * a * a)


def detection_threshold(n_tests: float, *, false_alarms: float = 0.05) -> float:
    """Z threshold with `false_alarms` expected false detections over `n_tests` independent tests.

    Bonferroni: :math:`z = \\Phi^{-1}(1 - \\alpha / (2 n))`, two-sided.
    """
    from scipy.stats import norm

    n = max(float(n_tests), 1.0)
    return float(norm.isf(false_alarms / (2.0 * n)))



_BINS = 4096
_BLUR_RANGE = 8.0  # voxels: the histogram range of the edge-width estimates
_LEVEL_DEPTH = 3.0  # voxels from a grain's boundary: partial volume below 1 % of the contrast for a blur
# sigma up to 1 voxel (1.7 % at 1.5 voxels)
_RESIDUAL_SPAN = 0.1  # half-range of the residual histogram, as a share of the grey range
_DERIVATIVE_SIGMA = 1.0
_MAX_EXTENT = 8  # voxels: the largest inclusion candidate a block is guaranteed to see whole


@dataclass(frozen=True)
class InclusionSettings:
    """Options of :func:`recover_inclusions` (see there)."""

    blur_sigma_voxels: float | None = None
    false_alarms: float = 0.05
    min_depth_voxels: float = 1.5
    boundary_uncertainty_voxels: float = 0.5
    candidate_phases: tuple[int, ...] | None = None
    small_grain_voxels: int = 12
    small_grain_deviation: float = 3.0


@dataclass(frozen=True)
class InclusionModel:
    """Volume-wide quantities of the inclusion search, from mergeable block histograms.

    Attributes
    ----------
    level : (256,) ndarray of float
        Median raw grey value of each phase id deep in its grains (NaN where none).
    blur_sigma_voxels : float
        Point-spread sigma (estimated from particle edges unless given).
    smoothing_voxels : float
        Sigma of the detection filter (the blur: a matched filter at the resolution limit).
    spread : float
        Robust standard deviation (1.4826 MAD) of the smoothed residual where the model is flat.
    threshold_z : float
        Bonferroni detection threshold over the tested voxels.
    minerals : (K,) ndarray of int
        Phases an inclusion may take.
    settings : InclusionSettings
    """

    level: np.ndarray
    blur_sigma_voxels: float
    smoothing_voxels: float
    spread: float
    threshold_z: float
    minerals: np.ndarray
    settings: InclusionSettings

    @property
    def sigma_eff(self) -> float:
        return math.sqrt(self.blur_sigma_voxels**2 + self.smoothing_voxels**2)

    @property
    def usable(self) -> bool:
        # two minerals with a level (a host and another phase) and at least one candidate
        return bool(np.isfinite(self.level[1:]).sum() >= 2 and self.minerals.size >= 1
                    and np.isfinite(self.level[0]) and self.spread > 0 and np.isfinite(self.threshold_z))

    def grain_halo(self) -> int:
        """Halo a block needs so that every small grain touching its core, and every grain whose
        blur reaches it, is seen whole."""
        return 2 * int(self.settings.small_grain_voxels) + 2 * int(4.0 * self.blur_sigma_voxels + 0.5) + 2

    def halo(self) -> int:
        """Halo a block needs so that every candidate touching its core is seen whole."""
        # a core voxel is reached by an aperture (outer) of a candidate up to _MAX_EXTENT across,
        # whose annulus reaches `outer` further; every filter value there must be exact
        filters = 2 * (int(4.0 * self.blur_sigma_voxels + 0.5) + int(4.0 * self.smoothing_voxels + 0.5))
        return filters + 2 * math.ceil(2.0 * self.sigma_eff + 2.0) + _MAX_EXTENT + 2


@dataclass(frozen=True)
class InclusionReport:
    """What :func:`recover_inclusions` found.

    Attributes
    ----------
    model : InclusionModel
    n_inclusions : int
        Inclusions given voxels (counted in the blocks' cores where their peak lies).
    n_relabelled : int
        Voxels given an inclusion phase.
    relabelled : (256, 256) ndarray of int64
        Voxels moved from phase ``[host]`` to phase ``[inclusion]``.
    n_grains_reclassified : int
        Small grains given another phase by :func:`reclassify_small_grains`.
    grain_voxels : (256, 256) ndarray of int64
        Their voxels, from phase ``[old]`` to phase ``[new]``.
    """

    model: InclusionModel
    n_inclusions: int
    n_relabelled: int
    relabelled: np.ndarray
    n_grains_reclassified: int
    grain_voxels: np.ndarray


def _grain_depth(phases: np.ndarray, particles: np.ndarray) -> np.ndarray:
    """Distance (voxels) of every voxel to the nearest voxel of another phase or particle."""
    import edt
    import fastremap

    # one key per (particle, phase); the matrix (particle 0) is one key per phase too
    key = particles.astype(np.uint64) * np.uint64(256) + phases.astype(np.uint64) + np.uint64(1)
    key, _ = fastremap.renumber(key, in_place=True)
    return edt.edt(key.astype(np.uint32, copy=False), black_border=False, parallel=0)


def _label_extremes(labels: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label minimum and maximum of `values` over the voxels with label > 0, labels 1..n.

    One pass over the labelled voxels with ``np.minimum.at``/``np.maximum.at`` (scipy's labelled
    minimum sorts the whole volume).
    """
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids = flat[where]
    picked = values.ravel()[where]
    dtype = np.dtype(np.float64 if picked.dtype.kind == "f" else np.int64)
    low = np.full(n + 1, np.inf if dtype.kind == "f" else np.iinfo(np.int64).max, dtype=dtype)
    high = np.full(n + 1, -np.inf if dtype.kind == "f" else np.iinfo(np.int64).min, dtype=dtype)
    np.minimum.at(low, ids, picked)
    np.maximum.at(high, ids, picked)
    return low[1:], high[1:]


def _label_argmax(labels: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Flat index of each label's largest value (first in raster order among ties), labels 1..n."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    ids = flat[where]
    order = np.lexsort((-values.ravel()[where], ids))  # stable: raster order breaks ties
    first = np.searchsorted(ids[order], np.arange(1, n + 1))
    return where[order[first]]


def _histogram(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    index = np.clip(((values - lo) / (hi - lo) * _BINS).astype(np.int64), 0, _BINS - 1)
    return np.bincount(index, minlength=_BINS)


def _histogram_quantile(counts: np.ndarray, lo: float, hi: float, q: float = 0.5) -> float:
    """Quantile of histogrammed values (linear within the bin); NaN for an empty histogram."""
    total = counts.sum()
    if total == 0:
        return math.nan
    cumulative = np.cumsum(counts)
    target = q * total
    k = int(np.searchsorted(cumulative, target))
    before = cumulative[k - 1] if k else 0
    fraction = (target - before) / max(counts[k], 1)
    return lo + (k + fraction) * (hi - lo) / _BINS


def grey_range_block(ct_block: np.ndarray) -> tuple[float, float]:
    """Block part of the grey-value range (merge: min of mins, max of maxes)."""
    return float(np.min(ct_block)), float(np.max(ct_block))


def level_histograms_block(ct_block, phases_block, particles_block, inner, grey_range) -> np.ndarray:
    """Block part (its core `inner`) of the per-phase histograms of deep grain voxels, (256, bins)."""
    depth = _grain_depth(phases_block, particles_block)[inner]
    deep = depth >= _LEVEL_DEPTH
    lo, hi = grey_range
    ids = phases_block[inner][deep].astype(np.int64)
    index = np.clip(((ct_block[inner][deep] - lo) / (hi - lo) * _BINS).astype(np.int64), 0, _BINS - 1)
    return np.bincount(ids * _BINS + index, minlength=256 * _BINS).reshape(256, _BINS)


def blur_histogram_block(ct_block, phases_block, particles_block, inner, level) -> np.ndarray:
    """Block part of the histogram of edge-width estimates :math:`\\sqrt{\\sigma^2 + s^2}`.

    A step of height :math:`\\Delta` blurred by a Gaussian of sigma :math:`\\sigma` and
    differentiated at scale :math:`s` has the peak slope
    :math:`\\Delta / (\\sqrt{2\\pi}\\,\\sqrt{\\sigma^2 + s^2})`; each particle voxel on the matrix
    gives one estimate from the local (3^3) maximum of the gradient magnitude, with
    :math:`\\Delta` the difference of its phase's and the matrix's levels.
    """
    from scipy import ndimage

    inside = particles_block != 0
    boundary = (inside & ~ndimage.binary_erosion(inside, border_value=1))[inner]
    if np.isnan(level[0]) or not boundary.any():
        return np.zeros(_BINS, dtype=np.int64)
    gradient = ndimage.gaussian_gradient_magnitude(ct_block.astype(np.float32), _DERIVATIVE_SIGMA)
    peak = ndimage.maximum_filter(gradient, size=3)[inner][boundary]
    step = np.abs(level[phases_block[inner][boundary]] - level[0])
    usable = np.isfinite(step) & (peak > 0) & (step > 0)
    width = step[usable] / (_SQRT_2PI * peak[usable])
    return _histogram(width, 0.0, _BLUR_RANGE)


def _expected(phases_block, level, blur):
    from scipy import ndimage

    model = np.where(np.isfinite(level), level, level[0]).astype(np.float32)[phases_block]
    return ndimage.gaussian_filter(model, blur) if blur > 0 else model


def _residual(ct_block, phases_block, particles_block, level, blur, smoothing, settings):
    """Smoothed residual against the forward model, its slope, and the tested voxels."""
    import edt
    from scipy import ndimage

    expected = _expected(phases_block, level, blur)
    residual = ndimage.gaussian_filter(ct_block.astype(np.float32) - expected, smoothing)
    slope = ndimage.gaussian_gradient_magnitude(expected, smoothing)
    depth = edt.edt(particles_block, black_border=False, parallel=0)
    tested = (depth >= settings.min_depth_voxels) & (phases_block != 0) & np.isfinite(level[phases_block])
    return expected, residual, slope, tested


def residual_histogram_block(ct_block, phases_block, particles_block, inner, level, blur, smoothing,
                             settings, grey_span) -> tuple[np.ndarray, int]:
    """Block part of the histogram of the smoothed residual where the model is flat, and the
    number of tested voxels."""
    _, residual, slope, tested = _residual(ct_block, phases_block, particles_block, level, blur, smoothing,
                                           settings)
    tested = tested[inner]
    # flat: a boundary misplaced by the uncertainty changes the model by less than 0.05 % of the
    # grey range
    flat = tested & (slope[inner] * settings.boundary_uncertainty_voxels < 5e-4 * grey_span)
    half = _RESIDUAL_SPAN * grey_span
    return _histogram(residual[inner][flat], -half, half), int(tested.sum())


def grey_range_of(lo: float, hi: float) -> tuple[float, float]:
    """The histogram range of merged block ranges (widened to 1 for a constant volume)."""
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def levels_from_histograms(level_counts: np.ndarray, grey_range) -> np.ndarray:
    """Median grey value of each phase id from its (merged) histogram; NaN where empty."""
    return np.array([_histogram_quantile(level_counts[k], *grey_range) for k in range(256)])


def detection_smoothing(blur: float) -> float:
    """Sigma of the detection filter: the blur (a matched filter), at least half a voxel."""
    return max(float(blur), 0.5)


def inclusion_model(level_counts, grey_range, residual_counts, n_tested, settings, blur) -> InclusionModel:
    """Finish the volume-wide quantities from the merged block histograms."""
    lo, hi = grey_range
    level = levels_from_histograms(level_counts, grey_range)
    half_range = _RESIDUAL_SPAN * (hi - lo)
    smoothing = detection_smoothing(blur)
    centre = _histogram_quantile(residual_counts, -half_range, half_range)
    # MAD from the histogram of the residual: the median of |r - centre|
    edges = np.linspace(-half_range, half_range, _BINS + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    order = np.argsort(np.abs(mids - centre), kind="stable")
    cumulative = np.cumsum(residual_counts[order])
    total = cumulative[-1] if cumulative.size else 0
    spread = 1.4826 * float(np.abs(mids[order][np.searchsorted(cumulative, 0.5 * total)] - centre)) \
        if total else 0.0
    # Bonferroni over the tested voxels: conservative for a smoothed field (neighbours are
    # correlated) where one test per resolution element is not (a smooth field crosses a level
    # somewhere inside an element more often than one Gaussian value does)
    threshold = detection_threshold(n_tested, false_alarms=settings.false_alarms)
    ids = np.flatnonzero(np.isfinite(level))
    minerals = ids[ids > 0] if settings.candidate_phases is None else \
        np.asarray([p for p in sorted(set(settings.candidate_phases)) if np.isfinite(level[p])], dtype=np.int64)
    return InclusionModel(level, float(blur), float(smoothing), spread, threshold, minerals, settings)


def blur_from_histogram(counts) -> float:
    total = _histogram_quantile(counts, 0.0, _BLUR_RANGE)
    if not np.isfinite(total):
        return 0.0
    return math.sqrt(max(total**2 - _DERIVATIVE_SIGMA**2, 0.0))


def estimate_inclusion_model(ct, phases, particles, settings: InclusionSettings | None = None) -> InclusionModel:
    """The volume-wide quantities of :func:`recover_inclusions` for in-memory volumes."""
    ct, phases, particles = _check(ct, phases, particles)
    settings = InclusionSettings() if settings is None else settings
    whole = (slice(None),) * 3
    grey_range = grey_range_of(*grey_range_block(ct))
    levels = level_histograms_block(ct, phases, particles, whole, grey_range)
    level = levels_from_histograms(levels, grey_range)
    blur = settings.blur_sigma_voxels
    if blur is None:
        blur = blur_from_histogram(blur_histogram_block(ct, phases, particles, whole, level))
    smoothing = detection_smoothing(blur)
    residuals, n_tested = residual_histogram_block(ct, phases, particles, whole, level, float(blur), smoothing,
                                                   settings, grey_range[1] - grey_range[0])
    return inclusion_model(levels, grey_range, residuals, n_tested, settings, float(blur))


def recover_inclusions_block(ct_block, phases_block, particles_block, inner, model: InclusionModel):
    """Inclusion recovery of one block (with halo); returns the refined core, the number of
    inclusions whose peak voxel lies in the core, and the (256, 256) relabelled-voxel counts."""
    from scipy import ndimage

    refined = phases_block.copy()
    moved = np.zeros((256, 256), dtype=np.int64)
    if not model.usable:
        return refined[inner], 0, moved
    settings, level = model.settings, model.level
    sigma_eff = model.sigma_eff
    ct32 = ct_block.astype(np.float32, copy=False)
    expected, residual, slope, tested = _residual(ct32, phases_block, particles_block, level,
                                                  model.blur_sigma_voxels, model.smoothing_voxels, settings)
    z = residual / np.sqrt(np.float32(model.spread) ** 2
                           + (np.float32(settings.boundary_uncertainty_voxels) * slope) ** 2)
    del slope
    anomaly = tested & (np.abs(z) > model.threshold_z)
    if not anomaly.any():
        return refined[inner], 0, moved
    # one candidate per connected anomaly within one phase and one sign
    key = np.where(anomaly, phases_block.astype(np.uint32) * 2 + (z > 0), 0).astype(np.uint32)
    candidates = connected_components(key, connectivity=26).astype(np.int64)
    del key
    n = int(candidates.max())
    index = np.arange(1, n + 1)
    abs_z = np.abs(z)
    sign = np.sign(np.asarray(ndimage.sum(z, candidates, index), dtype=np.float64))
    host = _label_extremes(candidates, phases_block.astype(np.int64), n)[1]
    particle = _label_extremes(candidates, particles_block.astype(np.int64), n)[1]
    peak_at = np.stack(np.unravel_index(_label_argmax(candidates, abs_z, n), candidates.shape), axis=1)

    # aperture photometry: the aperture holds the tested voxels of the candidate's particle
    # within 2 sigma_eff of it, the annulus the host's local background level around it
    distance, nearest = ndimage.distance_transform_edt(candidates == 0, return_indices=True)
    outer = 2.0 * sigma_eff + 2.0
    near = (distance <= outer) & (particles_block != 0)
    owner = np.zeros(ct32.shape, dtype=np.int64)
    owner[near] = candidates[tuple(axis[near] for axis in nearest)]
    del nearest
    owner[near] *= particles_block[near] == particle[owner[near] - 1]
    inner_ring = distance <= 2.0 * sigma_eff
    del distance
    aperture = np.where(inner_ring & tested, owner, 0)
    same_phase = phases_block == host[np.maximum(owner, 1) - 1]
    annulus = np.where(~inner_ring & tested & same_phase, owner, 0)
    del owner, inner_ring
    ones = np.ones_like(ct32)
    # the raw residual against the forward model carries the partial volume of the surface; the
    # annulus mean removes what the model leaves locally
    raw = ct32 - expected
    del expected
    n_annulus = np.asarray(ndimage.sum(ones, annulus, index), dtype=np.float64)
    offset = np.asarray(ndimage.sum(raw, annulus, index), dtype=np.float64) / np.maximum(n_annulus, 1)
    offset = np.where(n_annulus >= 8, offset, 0.0)
    baseline = level[host] + offset
    n_aperture = np.asarray(ndimage.sum(ones, aperture, index), dtype=np.float64)
    deficit = n_aperture * offset - np.asarray(ndimage.sum(raw, aperture, index), dtype=np.float64)
    del raw
    # an aperture cut by the particle surface holds only part of the blurred deficit: divide by
    # the share of a Gaussian of sigma_eff about the peak voxel that the aperture covers
    where = np.nonzero(aperture)
    owners = aperture[where] - 1
    d2 = sum((axis - peak_at[owners, k]) ** 2 for k, axis in enumerate(where))
    weight = np.exp(-0.5 * d2 / sigma_eff**2) / (2.0 * np.pi * sigma_eff**2) ** 1.5
    captured = np.bincount(owners, weights=weight, minlength=n)
    deficit = deficit / np.clip(captured, 0.25, 1.0)
    smooth_ct = ndimage.gaussian_filter(ct32, model.smoothing_voxels)
    low, high = _label_extremes(candidates, smooth_ct, n)
    del smooth_ct
    peak = np.where(sign < 0, baseline - low, high - baseline)
    host_voxels = np.where(same_phase, aperture, 0)
    size = np.asarray(ndimage.sum(ones, host_voxels, index), dtype=np.float64)

    # unmix: candidate x phase; the phase whose blurred ball predicts the measured peak
    minerals = model.minerals
    contrast = level[host][:, None] - level[minerals][None, :]  # (n, K), positive = darker phase
    with np.errstate(divide="ignore", invalid="ignore"):
        volume = deficit[:, None] / contrast
        radius = np.cbrt(3.0 * np.clip(volume, 0, None) / (4.0 * np.pi))
        predicted = np.abs(contrast) * ball_peak_fraction(radius / sigma_eff)
        misfit = np.abs(np.log(predicted / peak[:, None]))
    valid = (minerals[None, :] != host[:, None]) & (volume > 0) & (np.sign(contrast) == -sign[:, None])
    misfit = np.where(valid & np.isfinite(misfit), misfit, np.inf)
    best = np.argmin(misfit, axis=1)
    rows = np.arange(n)
    found = np.isfinite(misfit[rows, best])
    phase_of = minerals[best]
    count = np.where(found, np.minimum(np.round(np.nan_to_num(volume[rows, best])), size), 0).astype(np.int64)

    # the `count` most deviating host voxels of each aperture take the inclusion phase
    flat_owner = host_voxels.ravel()
    members = np.flatnonzero(flat_owner)
    owner_of = flat_owner[members]
    order = np.lexsort((-abs_z.ravel()[members], owner_of))
    owner_sorted = owner_of[order]
    starts = np.searchsorted(owner_sorted, index)
    rank = np.arange(owner_sorted.size) - starts[owner_sorted - 1]
    take = rank < count[owner_sorted - 1]
    chosen = members[order][take]
    new_phase = phase_of[owner_sorted[take] - 1]
    flat = refined.ravel()
    flat[chosen] = new_phase.astype(refined.dtype)
    # counts over the core only, each inclusion once (where its peak voxel lies)
    core_mask = np.zeros(refined.shape, dtype=bool)
    core_mask[inner] = True
    in_core = core_mask.ravel()[chosen]
    np.add.at(moved, (phases_block.ravel()[chosen][in_core].astype(np.int64), new_phase[in_core]), 1)
    peak_in_core = core_mask[tuple(peak_at.T)] & found & (count > 0)
    return refined[inner], int(peak_in_core.sum()), moved


def reclassify_small_grains_block(ct_block, phases_block, particles_block, inner, model: InclusionModel,
                                  cut_faces=None):
    r"""Give each small grain the phase whose level its blur-corrected mean grey value is nearest.

    Parameters
    ----------
    ct_block, phases_block, particles_block : (Z, Y, X) ndarrays
        A block with its halo (or the whole volume).
    inner : tuple of slices
        The block's core within the box.
    model : InclusionModel
        Levels, blur and residual spread (:func:`estimate_inclusion_model`); its settings give
        the largest extent of a small grain (``small_grain_voxels``, 0 = off) and the least mean
        deviation (``small_grain_deviation``, in residual spreads).
    cut_faces : (6,) bools, optional
        Which faces of the box (z-, z+, y-, y+, x-, x+) cut the volume (not its border): a grain
        touching one is not seen whole and keeps its phase.

    Returns
    -------
    core : uint8 ndarray
        The refined core.
    n_grains : int
        Reclassified grains whose first voxel (raster order) lies in the core.
    moved : (256, 256) ndarray of int64
        Core voxels moved from phase ``[old]`` to ``[new]``.

    Notes
    -----
    A grain is a 26-connected component of one phase within one particle. With the forward
    model :math:`E = G_\sigma * \mu_\phi` and :math:`K = G_\sigma * 1_S` the blurred indicator
    of the small grains :math:`S` (a small grain's own contrast reaches only this share of its
    voxels), a grain :math:`g` of phase :math:`p` has the implied level
    :math:`\hat\mu_g = \mu_p + \sum_g (\mu - E) / \sum_g K`. It takes the mineral whose level
    is nearest :math:`\hat\mu_g` when that is not :math:`p`, its extent is at most
    ``small_grain_voxels`` and its mean residual exceeds ``small_grain_deviation`` spreads. This
    catches the bands a voxel classifier leaves where a particle meets a brighter or darker
    one (a magnesite rim next to calcite read as talc) and grains it gave a neighbouring phase.
    """
    from scipy import ndimage

    from ..measure import label_grains

    refined = phases_block.copy()
    moved = np.zeros((256, 256), dtype=np.int64)
    extent_limit = int(model.settings.small_grain_voxels)
    if not model.usable or extent_limit <= 0 or not (particles_block != 0).any():
        return refined[inner], 0, moved
    level = model.level
    labelled = label_grains(particles_block, phases_block)
    grains = labelled.image
    n = int(labelled.count.size - 1)
    extent = np.zeros(n + 1, dtype=np.int64)
    for axis in range(3):  # three label reductions, not a loop over grains
        coordinate = np.broadcast_to(
            np.arange(grains.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)]), grains.shape)
        low, high = _label_extremes(grains, coordinate.astype(np.int64), n)
        extent[1:] = np.maximum(extent[1:], high - low + 1)
    small = extent <= extent_limit
    small[0] = False
    if cut_faces is not None:
        faces = [(0, 0), (0, -1), (1, 0), (1, -1), (2, 0), (2, -1)]
        for cut, (axis, end) in zip(cut_faces, faces, strict=True):
            if cut:
                small[np.unique(np.take(grains, [end], axis=axis))] = False
    small[0] = False
    if not small.any():
        return refined[inner], 0, moved
    flat = grains.ravel()
    phase_of = labelled.phase_id.astype(np.int64)
    blur = model.blur_sigma_voxels
    residual = ct_block.astype(np.float32) - _expected(phases_block, level, blur)
    share = small[grains].astype(np.float32)
    share = ndimage.gaussian_filter(share, blur) if blur > 0 else share
    count = labelled.count.astype(np.float64)
    total = np.bincount(flat, weights=residual.ravel(), minlength=n + 1)
    reach = np.bincount(flat, weights=share.ravel(), minlength=n + 1)
    del residual, share
    implied = level[phase_of] + total / np.maximum(reach, 1e-6)
    minerals = model.minerals
    nearest = minerals[np.argmin(np.abs(implied[:, None] - level[minerals][None, :]), axis=1)]
    deviation = np.abs(total) / np.maximum(count, 1.0)
    # a grain of a phase without a level (none deep enough anywhere) has no implied level
    change = small & (phase_of > 0) & np.isfinite(implied) & (nearest != phase_of) & (
        deviation >= model.settings.small_grain_deviation * model.spread)
    change[0] = False
    if not change.any():
        return refined[inner], 0, moved
    lut = np.where(change, nearest, phase_of).astype(np.uint8)
    inside = particles_block != 0
    refined[inside] = lut[grains[inside]]
    core_grains = grains[inner]
    hit = change[core_grains]
    np.add.at(moved, (phases_block[inner][hit].astype(np.int64), lut[core_grains[hit]].astype(np.int64)), 1)
    core = np.zeros(grains.shape, dtype=bool)
    core[inner] = True
    first = np.unique(flat, return_index=True)[1]  # raster-first voxel of grains 0..n
    n_core = int((change & core.ravel()[first]).sum())
    return refined[inner], n_core, moved


def reclassify_small_grains(ct, phases, particles, *, model: InclusionModel | None = None,
                            settings: InclusionSettings | None = None) -> tuple[np.ndarray, int]:
    """In-memory :func:`reclassify_small_grains_block`: ``(refined phases, grains reclassified)``.

    The model (levels, blur, spread) is estimated from the volume when not given.
    """
    ct, phases, particles = _check(ct, phases, particles)
    if model is None:
        model = estimate_inclusion_model(ct, phases, particles, settings)
    refined, n_grains, _ = reclassify_small_grains_block(ct, phases, particles, (slice(None),) * 3, model)
    return refined, n_grains


def recover_inclusions(ct, phases, particles, *, settings: InclusionSettings | None = None,
                       model: InclusionModel | None = None) -> tuple[np.ndarray, InclusionReport]:
    """Find inclusions blurred into their host grain and give them their own phase.

    Parameters
    ----------
    ct : (Z, Y, X) ndarray
        Grey values (the reconstructed volume the phases were classified from).
    phases : (Z, Y, X) uint8 ndarray
        Phase ids (0 = matrix), best after :func:`correct_contact_phases`.
    particles : (Z, Y, X) int ndarray
        Particle labels (0 = matrix).
    settings : InclusionSettings, optional
        ``blur_sigma_voxels`` (estimated from the particle edges when None), ``false_alarms``
        (expected false detections in the whole volume under Gaussian noise),
        ``min_depth_voxels`` (least distance of a tested voxel to its particle's surface),
        ``boundary_uncertainty_voxels`` (how far a model boundary may be misplaced) and
        ``candidate_phases`` (default: every mineral with a grey level).
    model : InclusionModel, optional
        Precomputed volume-wide quantities (:func:`estimate_inclusion_model`).

    Returns
    -------
    refined : (Z, Y, X) uint8 ndarray
        A new phase volume; `phases` is not modified.
    report : InclusionReport

    Notes
    -----
    1. *Levels and blur.* Each phase's grey level :math:`\\mu_h` is the median raw grey value
       of voxels at least 3 voxels deep in its grains; the point-spread sigma :math:`\\sigma`
       comes from the particle edges (:func:`blur_histogram_block`).
    2. *Forward model and detection.* The expected volume :math:`E = G_\\sigma * \\mu_\\phi`
       (the phase map's levels, blurred) makes grain boundaries and partial volume expected.
       The residual :math:`r = G_s * (\\mu - E)` (``s = max(sigma, 0.5)``, a matched filter at
       the resolution limit) is tested as :math:`z = r / \\sqrt{d^2 + (\\delta |\\nabla G_s *
       E|)^2}`, with :math:`d` its robust spread where the model is flat and :math:`\\delta` the
       boundary uncertainty, so a boundary misplaced by a fraction of a voxel is not an
       anomaly. Voxels with :math:`|z|` above the Bonferroni threshold of
       :func:`detection_threshold` over the :math:`n` tested voxels (conservative, since the
       smoothed voxels are correlated) are joined 26-connected, per phase and sign, into
       candidates.
    3. *Unmixing by aperture photometry.* A candidate's aperture (tested voxels of its particle
       within :math:`2\\sigma_\\text{eff}`) holds the deficit :math:`D = \\sum (b - \\mu)`
       against the local background :math:`b` (mean of an annulus 2 voxels wide of the host
       phase around it); :math:`D = V (\\mu_h - \\mu_i)` for an inclusion of volume :math:`V` and
       phase :math:`i`. For each phase whose contrast has the candidate's sign,
       :math:`V_i = D / (\\mu_h - \\mu_i)` is a ball of radius :math:`r_i`, whose blurred centre
       deviates by :math:`(\\mu_h - \\mu_i) P(\\chi^2_3 \\le r_i^2 / \\sigma_\\text{eff}^2)`
       (:func:`ball_peak_fraction`). The phase whose prediction is nearest (log ratio) to the
       measured peak is the inclusion's; the :math:`\\operatorname{round}(V_i)` host voxels of
       the aperture with the largest :math:`|z|` take it.

    4. *Small grains.* Finally every grain up to ``settings.small_grain_voxels`` across takes
       the phase its blur-corrected mean grey value is nearest (:func:`reclassify_small_grains`;
       0 = off).

    This is partial-volume unmixing of sub-resolution features (seeds/003: partial volume blurs
    the fine phases) under the seeds' liberation rule (seeds/000, Eq. 1: a particle is free only
    above 0.99 of one phase, so an inclusion of a few percent decides it).
    """
    ct, phases, particles = _check(ct, phases, particles)
    settings = InclusionSettings() if settings is None else settings
    if model is None:
        model = estimate_inclusion_model(ct, phases, particles, settings)
    whole = (slice(None),) * 3
    refined, n_inclusions, moved = recover_inclusions_block(ct, phases, particles, whole, model)
    refined, n_grains, grain_moved = reclassify_small_grains_block(ct, refined, particles, whole, model)
    return refined, InclusionReport(model, n_inclusions, int(moved.sum()), moved, n_grains, grain_moved)


def refine_phases(ct, phases, particles, *, contact_voxels: int = 2, inclusions: bool = True,
                  settings: InclusionSettings | None = None) -> tuple[np.ndarray, InclusionReport | None]:
    """Particle-aware phase refinement: contact rims, then partial-volume inclusions.

    Parameters
    ----------
    ct : (Z, Y, X) ndarray
        Grey values.
    phases : (Z, Y, X) uint8 ndarray
        Phase ids from a voxel classifier (after :func:`correct_rim_phases`).
    particles : (Z, Y, X) int ndarray
        Particle labels.
    contact_voxels : int
        Depth of :func:`correct_contact_phases` (0 = off).
    inclusions : bool
        Run :func:`recover_inclusions`.
    settings : InclusionSettings, optional

    Returns
    -------
    refined : (Z, Y, X) uint8 ndarray
        A new array.
    report : InclusionReport or None
        None when `inclusions` is off.
    """
    refined = correct_contact_phases(phases, particles, depth_voxels=contact_voxels)
    if not inclusions:
        return refined, None
    return recover_inclusions(ct, refined, particles, settings=settings)
