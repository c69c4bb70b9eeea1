"""Slice-to-volume registration: find a 2D SEM section inside a 3D CT volume, hint-free.

Pipeline (see :func:`register_section`):

1. Both modalities become particle-probability maps (:func:`._similarity.particle_probability`).
2. Global search on coarse maps (:class:`._search.CoarseSearch`): Fibonacci normals over the
   hemisphere x {section, mirrored section} (= all of SO(3)), Fourier-Mellin in-plane angle and
   plane per normal, pattern-search refinement of the best normals, FFT cross-correlation for the
   in-plane translation.
3. Local refinement of the best candidates at full resolution: Powell's method on the normalised
   cross-correlation of the probability maps over 7 parameters (3 rotations, 3 translations,
   isotropic scale within ``scale_tolerance`` of the metadata ratio), first on smoothed maps.
4. Confidence: the refined score is compared with the best refined *distinct* candidate (runner-up)
   and with a null distribution of scores at random poses.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, optimize

from .._shared import InputError, PlanePose, as_rng, sample_plane
from ._search import CoarseSearch, fibonacci_normals, plane_basis, pose_vectors
from ._similarity import (
    ncc,
    normalized_mutual_information,
    particle_probability,
    sample_points,
    section_valid_mask,
)

Progress = Callable[[str, int, int], None]

#: A match is confident when its refined NCC exceeds the null mean by this many null standard
#: deviations and beats the runner-up distinct pose by `MIN_MARGIN` (absolute NCC).
MIN_Z_SCORE = 8.0
MIN_MARGIN = 0.1
MIN_SCORE = 0.3


@dataclass(frozen=True)
class RegistrationHint:
    """Optional prior knowledge that narrows (speeds up) the search; never required.

    Attributes
    ----------
    tilt_deg : float, optional
        Approximate inclination of the section normal from `normal_axis` (FIB: 28 degrees).
    tilt_tolerance_deg : float
        Search +- this much around `tilt_deg`.
    normal_axis : (3,) array_like
        Reference axis (z, y, x) for `tilt_deg` and `cone_deg`; default the volume z axis.
    cone_deg : float, optional
        Only normals within this angle of `normal_axis` (both faces of the plane still tested).
    depth_range : (float, float), optional
        Range of the section centre along `normal_axis`, voxels.
    landmarks : ((N, 2), (N, 3)) arrays, optional
        Section points (row, column) and their volume positions (z, y, x); with N >= 3 a direct
        least-squares similarity pose (Umeyama 1991) replaces the global search.
    """

    tilt_deg: float | None = None
    tilt_tolerance_deg: float = 8.0
    normal_axis: tuple[float, float, float] = (1.0, 0.0, 0.0)
    cone_deg: float | None = None
    depth_range: tuple[float, float] | None = None
    landmarks: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of :func:`register_section`.

    Attributes
    ----------
    pose : PlanePose
        Best pose found (``score`` and ``method`` set; ``extra`` holds shape, confidence).
    score : float
        Refined normalised cross-correlation of the particle-probability maps, in [-1, 1].
    confident : bool
        False when the match is not distinct (runner-up or null distribution too close): the pose
        must then not be used.
    runner_up_score : float
        Refined score of the best candidate pose distinct from `pose` (more than 3 voxels apart).
    diagnostics : dict
        Null distribution, NMI, timing, candidate list, search settings.
    """

    pose: PlanePose
    score: float
    confident: bool
    runner_up_score: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def overlay_png(self, path: str | os.PathLike, volume: np.ndarray, section: np.ndarray) -> Path:
        """Write the section beside and over the volume resampled on the found plane (PNG)."""
        return write_overlay(path, volume, section, self.pose, title=(
            f"score {self.score:.3f} (runner-up {self.runner_up_score:.3f}) - "
            + ("confident" if self.confident else "NO CONFIDENT MATCH")
        ))


def write_overlay(path, volume, section, pose: PlanePose, *, title: str = "") -> Path:
    """Section | CT plane | colour overlay (section magenta, CT green), atomically written PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from .._shared import atomic_path

    section = np.asarray(section, dtype=np.float64)
    plane = sample_plane(volume, pose, section.shape, order=1)

    def _normalise(image):
        finite = np.isfinite(image)
        if not finite.any():
            return np.zeros(image.shape)
        low, high = np.percentile(image[finite], [1, 99])
        return np.where(finite, np.clip((image - low) / max(high - low, 1e-12), 0, 1), 0)

    a, b = _normalise(section), _normalise(plane)
    rgb = np.stack([a, b, a], axis=-1)
    figure = Figure(figsize=(12, 4.2), dpi=100)
    for k, (image, name) in enumerate(((a, "section"), (b, "CT on found plane"), (rgb, "overlay"))):
        axes = figure.add_subplot(1, 3, k + 1)
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        axes.set_title(name)
        axes.set_axis_off()
    if title:
        figure.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


# -- helpers -----------------------------------------------------------------------------------------


def _rotation(vector: np.ndarray) -> np.ndarray:
    """Rotation matrix of a rotation vector (Rodrigues)."""
    angle = float(np.linalg.norm(vector))
    if angle < 1e-12:
        return np.eye(3)
    k = vector / angle
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def pose_error(pose: PlanePose, truth: PlanePose, shape: tuple[int, int]) -> float:
    """Mean distance (voxels) between the volume positions of the 4 corners and centre."""
    return float(np.linalg.norm(pose.corners(shape) - truth.corners(shape), axis=1).mean())


def landmark_pose(section_points, volume_points, shape) -> PlanePose:
    """Least-squares similarity pose from >= 3 point pairs (Umeyama 1991).

    Section points (row, column) are embedded as (0, row, column); the pose maps them as
    ``origin + c u + r v``.
    """
    section_points = np.asarray(section_points, dtype=np.float64)
    volume_points = np.asarray(volume_points, dtype=np.float64)
    if section_points.ndim != 2 or section_points.shape[1] != 2 or volume_points.shape != (section_points.shape[0], 3):
        raise InputError("landmarks must be (N, 2) section points and (N, 3) volume points", source="landmarks")
    if section_points.shape[0] < 3:
        raise InputError("at least 3 landmark pairs are needed", source="landmarks")
    source = np.column_stack([section_points[:, 1], section_points[:, 0], np.zeros(len(section_points))])  # c, r, 0
    mu_s, mu_d = source.mean(0), volume_points.mean(0)
    xs, xd = source - mu_s, volume_points - mu_d
    covariance = xd.T @ xs / len(source)
    left, singular, right = np.linalg.svd(covariance)
    sign = np.eye(3)
    if np.linalg.det(left) * np.linalg.det(right) < 0:
        sign[2, 2] = -1
    rotation = left @ sign @ right
    variance = (xs**2).sum() / len(source)
    scale = float(np.trace(np.diag(singular) @ sign) / variance) if variance > 0 else 1.0
    u = scale * rotation[:, 0]
    v = scale * rotation[:, 1]
    origin = mu_d - scale * rotation @ mu_s
    return PlanePose(origin=origin, u=u, v=v, method="landmarks")


class _Refiner:
    """Powell refinement of 7 pose parameters on NCC of probability maps."""

    def __init__(self, volume_map, section_map, section_valid, ratio, scale_tolerance, sigma_voxels, n_points, rng):
        self.ratio = ratio
        self.scale_limit = np.log1p(scale_tolerance)
        if sigma_voxels > 0:
            self.volume = ndimage.gaussian_filter(volume_map, sigma_voxels)
            weight = ndimage.gaussian_filter(section_valid.astype(np.float32), sigma_voxels / ratio)
            smooth = ndimage.gaussian_filter(np.where(section_valid, section_map, 0).astype(np.float32), sigma_voxels / ratio)
            section = np.where(weight > 0.5, smooth / np.maximum(weight, 1e-6), np.nan)
        else:
            self.volume = volume_map
            section = np.where(section_valid, section_map, np.nan)
        rows, columns = section.shape
        r, c = np.nonzero(np.isfinite(section))
        if r.size > n_points:
            pick = rng.choice(r.size, n_points, replace=False)
            r, c = r[pick], c[pick]
        self.values = section[r, c].astype(np.float64)
        self.rc = np.column_stack([r - (rows - 1) / 2, c - (columns - 1) / 2]).astype(np.float64)
        self.shape = (rows, columns)

    def points(self, center, u, v):
        return center + self.rc[:, 1:2] * u + self.rc[:, 0:1] * v

    def score(self, center, u, v) -> float:
        sampled = sample_points(self.volume, self.points(center, u, v)).astype(np.float64)
        keep = np.isfinite(sampled)
        inside = keep.mean()
        if inside < 0.1:
            return -1.0
        # overlap-weighted: a pose that keeps only a corner of the section inside the volume must
        # not win on a few lucky pixels
        return ncc(self.values[keep], sampled[keep]) * float(np.sqrt(inside))

    def refine(self, center, u, v, *, steps=(0.03, 1.0, 0.02)):
        base_u, base_v = np.asarray(u, float), np.asarray(v, float)
        scale0 = 0.5 * (np.linalg.norm(base_u) + np.linalg.norm(base_v)) / self.ratio
        base_scale = np.log(scale0)
        unit = np.array([steps[0]] * 3 + [steps[1]] * 3 + [steps[2]])

        def unpack(x):
            x = x * unit
            rotation = _rotation(x[:3])
            log_scale = np.clip(base_scale + x[6], -self.scale_limit, self.scale_limit)
            factor = np.exp(log_scale) / scale0
            return center + x[3:6], factor * rotation @ base_u, factor * rotation @ base_v

        def cost(x):
            log_scale = base_scale + x[6] * unit[6]
            penalty = 10.0 * max(abs(log_scale) - self.scale_limit, 0.0)
            return -self.score(*unpack(x)) + penalty

        result = optimize.minimize(cost, np.zeros(7), method="Powell", options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 1500})
        return (*unpack(result.x), float(-result.fun))


def _candidate_distance(a, b, shape) -> float:
    """Mean corner/centre distance of two (center, u, v) poses of a section of `shape`."""
    rows, columns = shape
    rc = np.array([[0, 0], [0, columns - 1], [rows - 1, 0], [rows - 1, columns - 1], [0, 0]], dtype=np.float64)
    rc -= [(rows - 1) / 2, (columns - 1) / 2]
    pa = a[0] + rc[:, 1:2] * a[1] + rc[:, 0:1] * a[2]
    pb = b[0] + rc[:, 1:2] * b[1] + rc[:, 0:1] * b[2]
    return float(np.linalg.norm(pa - pb, axis=1).mean())


def _looks_like_labels(section: np.ndarray) -> bool:
    return np.issubdtype(section.dtype, np.integer) and int(section.max(initial=0)) < 64 and np.unique(section).size <= 32


# -- main entry point --------------------------------------------------------------------------------


def register_section(
    volume: np.ndarray,
    section: np.ndarray,
    *,
    voxel_size_um: float,
    pixel_size_um: float,
    section_mask: np.ndarray | None = None,
    hint: RegistrationHint | None = None,
    scale_tolerance: float = 0.1,
    labels: bool | None = None,
    normal_spacing_deg: float = 8.0,
    n_candidates: int = 12,
    min_z_score: float = MIN_Z_SCORE,
    rng=None,
    progress: Progress | None = None,
) -> RegistrationResult:
    """Find the plane of a 2D section (BSE image or mineral map) inside a 3D volume.

    Parameters
    ----------
    volume : (P, M, N) ndarray
        CT volume (z, y, x), any real dtype.
    section : (rows, columns) ndarray
        BSE image (grey values) or mineral map (phase ids, 0 = matrix).
    voxel_size_um, pixel_size_um : float
        Volume voxel size and section pixel size; their ratio is the starting scale.
    section_mask : (rows, columns) bool ndarray, optional
        Section pixels to use (default: all but vacuum, detected as near-zero BSE counts).
    hint : RegistrationHint, optional
        Narrows the search; never needed.
    scale_tolerance : float
        The scale is refined within ``ratio * (1 +- scale_tolerance)``.
    labels : bool, optional
        Treat the section as a mineral map; default: guessed (small non-negative integers).
    normal_spacing_deg : float
        Spacing of the coarse normal lattice.
    n_candidates : int
        Normals kept for local refinement.
    min_z_score : float
        Confidence needs the best score this many standard deviations above the null distribution
        of random poses (and `MIN_MARGIN` above the runner-up); small volumes, whose null is wide,
        may need less.
    rng : Generator, int or None
        Seeds the refinement point sampling and the null distribution.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    RegistrationResult

    Raises
    ------
    InputError
        Wrong dimensionality, non-positive sizes, empty or constant inputs.

    Notes
    -----
    The similarity is the normalised cross-correlation of particle-probability maps
    ``NCC = sum (a - ma)(b - mb) / sqrt(sum (a - ma)^2 sum (b - mb)^2)`` over the section pixels
    that fall inside the volume, times the square root of that inside fraction; the in-plane search uses
    FFT cross-correlation (Kuglin & Hines 1975) after a Fourier-Mellin angle estimate (Reddy &
    Chatterji 1996). The normalised mutual information ``(H(A) + H(B)) / H(A, B)`` (Studholme et al.
    1999) of the grey values on the found plane is reported in the diagnostics.

    Examples
    --------
    >>> from corrtomo.synth import make_sample
    >>> sample = make_sample("quick", seed=1)  # doctest: +SKIP
    >>> s = sample.sections[0]  # doctest: +SKIP
    >>> result = register_section(sample.ct, s.bse, voxel_size_um=sample.voxel_size_um,
    ...                           pixel_size_um=s.pixel_size_um)  # doctest: +SKIP
    """
    started = time.perf_counter()
    volume = np.asarray(volume)
    section = np.asarray(section)
    if volume.ndim != 3:
        raise InputError(f"volume must be 3D (z, y, x), got {volume.ndim}D", source="volume")
    if section.ndim != 2:
        raise InputError(f"section must be a 2D image, got {section.ndim}D", source="section")
    if min(volume.shape) < 8 or min(section.shape) < 8:
        raise InputError("volume and section must be at least 8 pixels along every axis")
    for name, value in (("voxel_size_um", voxel_size_um), ("pixel_size_um", pixel_size_um)):
        if value is None or not np.isfinite(value) or value <= 0:
            raise InputError(f"{name} must be a positive number, got {value}", source=name)
    if not np.all(np.isfinite(volume)):
        raise InputError("volume holds NaN or infinite values", source="volume")
    ratio = float(pixel_size_um) / float(voxel_size_um)
    if labels is None:
        labels = _looks_like_labels(section)
    rng = as_rng(rng)
    hint = hint or RegistrationHint()

    valid = section_valid_mask(section, labels=labels)
    if section_mask is not None:
        section_mask = np.asarray(section_mask, dtype=bool)
        if section_mask.shape != section.shape:
            raise InputError(f"mask shape {section_mask.shape} differs from section shape {section.shape}", source="mask")
        valid &= section_mask
    if valid.sum() < 64:
        raise InputError("section has fewer than 64 usable pixels", source="section")
    if np.ptp(section[valid]) == 0 or np.ptp(volume) == 0:
        raise InputError("section or volume is constant; nothing to register")

    volume_map = particle_probability(volume.astype(np.float32, copy=False), sigma=1.0)
    section_map = particle_probability(section, valid=valid, sigma=0.0 if labels else max(1.0, 0.7 / ratio), labels=labels)
    diagnostics: dict[str, Any] = {"pixel_size_ratio_metadata": ratio, "labels": bool(labels)}

    candidates: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]] = []
    if hint.landmarks is not None:
        start = landmark_pose(hint.landmarks[0], hint.landmarks[1], section.shape)
        rows, columns = section.shape
        center = start.origin + (columns - 1) / 2 * start.u + (rows - 1) / 2 * start.v
        candidates.append((center, start.u, start.v, 0.0))
        method = "landmarks+ncc-refine"
    else:
        candidates = _global_search(volume_map, section_map, valid, ratio, hint, normal_spacing_deg, n_candidates, progress, diagnostics)
        method = "fourier-mellin-search+ncc-refine"
    diagnostics["time_search_s"] = time.perf_counter() - started

    # local refinement of the best candidates, coarse-smoothed then fine
    coarse_refiner = _Refiner(volume_map, section_map, valid, ratio, scale_tolerance, 2.0, 2500, rng)
    fine_refiner = _Refiner(volume_map, section_map, valid, ratio, scale_tolerance, 0.0, 8000, rng)
    smoothed = []
    for center, u, v, _ in candidates[:4]:
        smoothed.append(coarse_refiner.refine(center, u, v, steps=(0.03, 1.5, 0.02)))
    smoothed.sort(key=lambda r: -r[3])
    refined = []
    for k, (center, u, v, _) in enumerate(smoothed[:2]):
        refined.append(fine_refiner.refine(center, u, v, steps=(0.01, 0.4, 0.01)))
        if progress is not None:
            progress("refine", k + 1, 2)
    # the other candidates keep their smoothed-level pose, scored at the fine level
    refined += [(c, u, v, fine_refiner.score(c, u, v)) for c, u, v, _ in smoothed[2:]]
    order = np.argsort([-r[3] for r in refined])
    refined = [refined[i] for i in order]
    best = refined[0]
    # distinct: a quarter of the section's width apart (a pose merely shifted by a particle is not distinct)
    distinct = 0.25 * ratio * min(section.shape)
    diagnostics["candidate_distances"] = [_candidate_distance(r, best, section.shape) for r in refined]
    runner_up = max(
        (r[3] for r in refined[1:] if _candidate_distance(r, best, section.shape) > distinct), default=float("nan")
    )

    # null distribution: the fine score at random poses through the volume
    null = _null_scores(fine_refiner, volume.shape, ratio, rng, 48)
    null_mean, null_std = float(np.mean(null)), float(np.std(null) + 1e-6)
    z_score = (best[3] - null_mean) / null_std
    reference = runner_up if np.isfinite(runner_up) else null_mean
    confident = bool(z_score >= min_z_score and best[3] - reference >= MIN_MARGIN and best[3] >= MIN_SCORE)

    rows, columns = section.shape
    center, u, v, score = best
    origin = center - (columns - 1) / 2 * u - (rows - 1) / 2 * v
    pose0 = PlanePose(origin=origin, u=u, v=v)
    plane = sample_plane(volume, pose0, section.shape, order=1)
    inside = np.isfinite(plane)
    diagnostics.update(
        {
            "null_mean": null_mean,
            "null_std": null_std,
            "z_score": float(z_score),
            "nmi": normalized_mutual_information(np.where(valid & inside, section, np.nan), plane),
            "inside_fraction": float(inside.mean()),
            "pixel_size_ratio": pose0.pixel_size_ratio,
            "n_candidates_refined": len(refined),
            "candidate_scores": [float(r[3]) for r in refined],
            "time_total_s": time.perf_counter() - started,
        }
    )
    if inside.mean() < 0.05:
        confident = False
    pose = PlanePose(
        origin=origin, u=u, v=v, score=float(score), method=method,
        extra={"shape": [rows, columns], "pixel_size_um": float(pixel_size_um), "voxel_size_um": float(voxel_size_um),
               "confident": confident, "runner_up_score": None if not np.isfinite(runner_up) else float(runner_up)},
    )
    return RegistrationResult(pose=pose, score=float(score), confident=confident, runner_up_score=float(runner_up), diagnostics=diagnostics)


def _null_scores(refiner: _Refiner, shape, ratio, rng, count) -> np.ndarray:
    shape = np.asarray(shape, dtype=np.float64)
    scores = []
    for _ in range(count):
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        u, v = pose_vectors(normal, rng.uniform(0, 2 * np.pi), bool(rng.integers(2)), ratio)
        center = rng.uniform(0.3, 0.7, size=3) * (shape - 1)
        scores.append(refiner.score(center, u, v))
    return np.asarray(scores)


def _global_search(volume_map, section_map, valid, ratio, hint, spacing_deg, n_candidates, progress, diagnostics):
    rows, columns = section_map.shape
    width = ratio * max(rows, columns)
    factor = max(1, round(width / 48))
    factor = min(factor, max(1, min(volume_map.shape) // 12))
    search = CoarseSearch(volume_map, section_map, valid, ratio=ratio, factor=factor)
    axis = np.asarray(hint.normal_axis, dtype=np.float64)
    axis /= np.linalg.norm(axis)
    spacing = np.deg2rad(spacing_deg)
    cone = np.pi / 2 if hint.cone_deg is None else np.deg2rad(min(hint.cone_deg, 90.0))
    normals = fibonacci_normals(spacing, axis=axis, cone_rad=cone)
    if hint.tilt_deg is not None:
        tilt = np.rad2deg(np.arccos(np.clip(normals @ axis, -1, 1)))
        keep = np.abs(tilt - hint.tilt_deg) <= hint.tilt_tolerance_deg + spacing_deg / 2
        normals = normals[keep] if keep.any() else normals
    min_pixels = int(0.3 * search.template(0, False)[3])
    diagnostics.update({"coarse_factor": factor, "n_normals": len(normals), "normal_spacing_deg": spacing_deg})

    def evaluate(normal):
        stack = search.stack(normal)
        scores, planes = search.fourier_mellin(stack, min_pixels)
        if planes.size == 0:
            return -1.0, (0, 0, 0), stack
        m, p, a = np.unravel_index(int(np.argmax(scores)), scores.shape)
        return float(scores[m, p, a]), (int(m), int(planes[p]), int(a)), stack

    records = []
    for k, normal in enumerate(normals):
        score, where, _ = evaluate(normal)
        records.append((score, k, where))
        if progress is not None and (k % 16 == 0 or k == len(normals) - 1):
            progress("search", k + 1, len(normals))
    records.sort(key=lambda r: -r[0])
    diagnostics["coarse_scores"] = [float(r[0]) for r in records[:n_candidates]]

    candidates = []
    for score, k, _ in records[:n_candidates]:
        normal = normals[k]
        # pattern search on the normal: 6 neighbours at decreasing steps
        best_score, best_normal = score, normal
        for step_deg in (spacing_deg / 2, spacing_deg / 4, spacing_deg / 8):
            step = np.deg2rad(step_deg)
            improved = True
            while improved:
                improved = False
                e1, e2 = plane_basis(best_normal)
                for phi in np.arange(6) * np.pi / 3:
                    trial = np.cos(step) * best_normal + np.sin(step) * (np.cos(phi) * e1 + np.sin(phi) * e2)
                    trial_score = evaluate(trial)[0]
                    if trial_score > best_score + 1e-4:
                        best_score, best_normal, improved = trial_score, trial, True
        score, (mirror, plane, angle_index), stack = evaluate(best_normal)
        candidates.extend(_translations(search, stack, best_normal, bool(mirror), plane, angle_index, score, hint))
    # keep the best-correlating distinct candidates
    candidates.sort(key=lambda c: -c[3])
    kept: list = []
    for candidate in candidates:
        if all(_candidate_distance(candidate, other, section_map.shape) > 3.0 for other in kept):
            kept.append(candidate)
        if len(kept) >= max(4, n_candidates // 2):
            break
    diagnostics["search_correlations"] = [float(c[3]) for c in kept]
    return kept


def _translations(search: CoarseSearch, stack, normal, mirror, plane, angle_index, fm_score, hint):
    """Translation by FFT cross-correlation for the two angles (FM is 180-degree periodic)."""
    q = search.fft_size
    planes = [p for p in (plane - 1, plane, plane + 1) if 0 <= p < stack.shape[0]]
    spectra = sfft.rfft2(stack[planes], s=(q, q), axes=(1, 2))
    energy = float(np.sqrt((stack[planes[len(planes) // 2]] ** 2).mean())) + 1e-12
    out = []
    n_angles = search.angles.size
    for turn in (0, n_angles // 2):
        best = None
        for delta in (-1, 0, 1):
            index = (angle_index + turn + delta) % n_angles
            _values, spectrum, norm, count = search.template(index, mirror)
            correlation = sfft.irfft2(spectra * spectrum[None], s=(q, q), axes=(1, 2))
            p, r, c = np.unravel_index(int(np.argmax(correlation)), correlation.shape)
            score = float(correlation[p, r, c]) / (norm * np.sqrt(count) * energy)
            if best is None or score > best[0]:
                best = (score, planes[p], r, c, index)
        score, p, r, c, index = best
        half = search.template_half
        row = (r + half) % q
        column = (c + half) % q
        center = search.stack_position(normal, p, row, column)
        u, v = pose_vectors(normal, search.angles[index], mirror, search.ratio)
        if hint.depth_range is not None:
            axis = np.asarray(hint.normal_axis, float) / np.linalg.norm(hint.normal_axis)
            if not hint.depth_range[0] <= center @ axis <= hint.depth_range[1]:
                continue
        out.append((center, u, v, score))
    return out
