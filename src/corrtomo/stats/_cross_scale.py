"""Particle size distributions across length scales (seed paper Sec. 3.5, Fig. 12).

Three views of one sample are compared per ESD interval:

* ``nano``: the particles of the high-resolution (nano-CT) volume;
* ``micro region``: the particles of the low-resolution (micro-CT) volume whose centroid lies in the
  region the nano volume covers (``region_mask``, e.g. from a volume registration);
* ``micro pieces``: the mean over nano-CT-sized pieces of the whole micro volume
  (:func:`corrtomo.stats.piece_size_counts`) with a Student-t confidence interval.

Counts are turned into number densities, ``n / V`` per 1000 um^3 (``V`` the volume of the view),
so views of different size compare. ``ESD = (6 v / pi)^(1/3)`` with ``v`` the voxel count times the
voxel volume. Each view has its resolution cut-off ``2 * resolution_um`` (Fig. 12: 3.2 um for the
micro-CT); intervals that reach below it (lower edge < cut-off) are flagged ``below_cutoff``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._shared import InputError, atomic_path
from ._representativeness import interval_statistics, piece_size_counts


def _esd_and_centroid(labels: np.ndarray, voxel_volume_um3: float):
    flat = labels.ravel()
    ids, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    keep = ids > 0
    grid = np.indices(labels.shape, dtype=np.float64).reshape(3, -1)
    sums = np.stack([np.bincount(inverse, weights=g, minlength=ids.size) for g in grid], axis=1)
    centroids = sums[keep] / counts[keep, None]
    esd = (6.0 * counts[keep] * voxel_volume_um3 / np.pi) ** (1.0 / 3.0)
    return ids[keep], esd, centroids


def _check(labels, name):
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{name} must be a 3D integer label volume", source=name)
    return labels


def cross_scale_psd(
    nano_particles: np.ndarray,
    micro_particles: np.ndarray,
    *,
    nano_spacing_um: float,
    micro_spacing_um: float,
    region_mask: np.ndarray,
    nano_mask: np.ndarray | None = None,
    esd_bins_um: Sequence[float] | np.ndarray | None = None,
    nano_resolution_um: float | None = None,
    micro_resolution_um: float | None = None,
    piece_size_um: float | Sequence[float] | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Tidy table of particle number densities per ESD interval for the nano volume, the same region
    of the micro volume, and nano-sized pieces of the whole micro volume.

    Parameters
    ----------
    nano_particles, micro_particles : (P, M, N) int arrays
        Particle labels (0 = background) of the two scans. Not modified.
    nano_spacing_um, micro_spacing_um : float
        Isotropic voxel sizes (um).
    region_mask : (P, M, N) bool, micro grid
        Micro voxels inside the nano field of view (its volume is ``V`` of ``micro region``).
    nano_mask : bool array on the nano grid, optional
        Nano field of view (e.g. the pillar); default the whole nano volume.
    esd_bins_um : sequence of float, optional
        Interval edges; default a sqrt(2) series from 0.25 um over the largest particle.
    nano_resolution_um, micro_resolution_um : float, optional
        Resolutions; cut-offs ``2 * resolution`` (default: twice the voxel size, i.e. cut-off = 4 voxels).
    piece_size_um : float or (3,) floats, optional
        Piece size for ``micro pieces``; default the cube of the nano field-of-view volume.
    confidence : float
        Level of the t interval over pieces.

    Returns
    -------
    pandas.DataFrame
        One row per (``source``, interval): ``source``, ``esd_min_um``, ``esd_max_um``, ``n_particles``
        (mean over pieces for ``micro pieces``), ``volume_um3`` of the view, ``density_per_1000um3``,
        ``ci_low``/``ci_high`` (densities; pieces only, NaN otherwise), ``cutoff_um``, ``below_cutoff``.
        ``DataFrame.attrs["summary"]`` holds per source the particle count, the median ESD and the
        share of particles below the micro cut-off.
    """
    nano = _check(nano_particles, "nano_particles")
    micro = _check(micro_particles, "micro_particles")
    region = np.asarray(region_mask, dtype=bool)
    if region.shape != micro.shape:
        raise InputError(f"region_mask shape {region.shape} differs from micro shape {micro.shape}", source="region_mask")
    if not region.any():
        raise InputError("region_mask is empty: the nano volume does not overlap the micro volume", source="region_mask")
    for value, name in ((nano_spacing_um, "nano_spacing_um"), (micro_spacing_um, "micro_spacing_um")):
        if value is None or not np.isfinite(value) or value <= 0:
            raise InputError(f"{name} must be a positive voxel size in um, got {value!r}", source=name)
    fov = np.ones(nano.shape, dtype=bool) if nano_mask is None else np.asarray(nano_mask, dtype=bool)
    nano_res = 2.0 * nano_spacing_um if nano_resolution_um is None else float(nano_resolution_um)
    micro_res = 2.0 * micro_spacing_um if micro_resolution_um is None else float(micro_resolution_um)
    nano_cut, micro_cut = 2.0 * nano_res, 2.0 * micro_res

    _, nano_esd, _ = _esd_and_centroid(np.where(fov, nano, 0), nano_spacing_um**3)
    _, micro_esd_all, micro_c = _esd_and_centroid(micro, micro_spacing_um**3)
    index = np.clip(np.rint(micro_c).astype(np.int64), 0, np.asarray(micro.shape) - 1)
    in_region = region[index[:, 0], index[:, 1], index[:, 2]]
    micro_esd = micro_esd_all[in_region]
    nano_volume = float(fov.sum()) * nano_spacing_um**3
    region_volume = float(region.sum()) * micro_spacing_um**3
    if esd_bins_um is None:
        top = max(float(np.max(nano_esd, initial=1.0)), float(np.max(micro_esd_all, initial=1.0)))
        edges = 0.25 * np.sqrt(2.0) ** np.arange(0, int(np.ceil(2 * np.log2(top / 0.25))) + 2)
    else:
        edges = np.asarray(esd_bins_um, dtype=np.float64)
    lo, hi = edges[:-1], edges[1:]

    rows = []
    for source, esd, volume, cut in (
        ("nano", nano_esd, nano_volume, nano_cut),
        ("micro region", micro_esd, region_volume, micro_cut),
    ):
        counts = np.histogram(esd, bins=edges)[0]
        rows.append(pd.DataFrame({
            "source": source, "esd_min_um": lo, "esd_max_um": hi, "n_particles": counts.astype(np.float64),
            "volume_um3": volume, "density_per_1000um3": counts / volume * 1e3, "ci_low": np.nan, "ci_high": np.nan,
            "cutoff_um": cut, "below_cutoff": lo < cut,
        }))
    piece = np.cbrt(nano_volume) if piece_size_um is None else piece_size_um
    piece_counts, _ = piece_size_counts(micro, spacing=micro_spacing_um, piece_size_um=piece, esd_bins_um=edges)
    piece_volume = float(np.prod(np.broadcast_to(np.asarray(piece, dtype=np.float64), (3,))))
    stats = interval_statistics(piece_counts, confidence=confidence)
    scale = 1e3 / piece_volume
    rows.append(pd.DataFrame({
        "source": "micro pieces", "esd_min_um": lo, "esd_max_um": hi, "n_particles": stats["mean"].to_numpy(),
        "volume_um3": piece_volume, "density_per_1000um3": stats["mean"].to_numpy() * scale,
        "ci_low": stats["ci_low"].to_numpy() * scale, "ci_high": stats["ci_high"].to_numpy() * scale,
        "cutoff_um": micro_cut, "below_cutoff": lo < micro_cut,
    }))
    table = pd.concat(rows, ignore_index=True)
    summary = {}
    for source, esd in (("nano", nano_esd), ("micro region", micro_esd), ("micro pieces", micro_esd_all)):
        summary[source] = {
            "n_particles": int(esd.size),
            "median_esd_um": float(np.median(esd)) if esd.size else float("nan"),
            "share_below_micro_cutoff": float(np.mean(esd < micro_cut)) if esd.size else float("nan"),
        }
    summary["n_pieces"] = int(piece_counts.shape[0])
    summary["micro_cutoff_um"] = micro_cut
    summary["nano_cutoff_um"] = nano_cut
    table.attrs["summary"] = summary
    return table


def cross_scale_figure(table: pd.DataFrame, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Plot :func:`cross_scale_psd`: number density per ESD interval (log ESD axis) for every source,
    the 95 % interval over micro pieces (grey band) and each source's cut-off (dashed line)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the user's backend alone

    colours = {"nano": "tab:blue", "micro region": "tab:red", "micro pieces": "tab:purple"}
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for source, group in table.groupby("source", sort=False):
        centre = np.sqrt(group["esd_min_um"] * group["esd_max_um"])
        colour = colours.get(source, "black")
        ax.plot(centre, group["density_per_1000um3"], "o-", color=colour, label=source)
        if group["ci_low"].notna().any():
            ax.fill_between(centre, group["ci_low"].clip(lower=0), group["ci_high"], color="grey", alpha=0.3)
        ax.axvline(float(group["cutoff_um"].iloc[0]), color=colour, ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("equivalent spherical diameter (um)")
    ax.set_ylabel("particles per 1000 um^3")
    ax.set_title(title or "particle sizes across scales (dashed: resolution cut-offs)")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path
