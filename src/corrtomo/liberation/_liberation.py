"""Liberation degree per phase and size class (Eq. 1-2 of the seed paper), with bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._shared import as_rng
from ._common import (
    check_edges,
    check_threshold,
    class_index,
    geometric_size_bins,
    phase_columns,
    select_particles,
    volume_fractions,
)

LIBERATION_COLUMNS = (
    "phase",
    "esd_min_um",
    "esd_max_um",
    "n_particles",
    "volume_free_um3",
    "volume_total_um3",
    "liberation_degree",
)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _bootstrap_intervals(
    order: np.ndarray,
    bounds: np.ndarray,
    phase_volume: np.ndarray,
    free_volume: np.ndarray,
    *,
    n_bootstrap: int,
    confidence: float,
    rng: np.random.Generator,
    max_weights: int = 8_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of LD for every (size class + all sizes) x phase.

    Particles are resampled with replacement. One replicate is a vector of multiplicities ``w`` (a
    multinomial draw, ``sum(w) = n``); the replicate's free and total phase volumes are ``w @ V``.
    `order` sorts particles by class and `bounds[k]:bounds[k+1]` is class k in that order, so every
    class is a contiguous block of columns of the weight matrix (no copy).

    Returns
    -------
    low, high : (n_classes + 1, p) ndarray
        Row 0 is all sizes; row k + 1 is class k. NaN where no replicate has any of the phase.
    """
    n = order.size
    n_classes = bounds.size - 1
    n_phases = phase_volume.shape[1]
    volume_sorted = phase_volume[order]
    free_sorted = free_volume[order]
    replicates = np.empty((n_bootstrap, n_classes + 1, n_phases))
    chunk = max(1, min(n_bootstrap, max_weights // max(n, 1)))
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        draws = rng.integers(0, n, size=(size, n))
        draws += (np.arange(size) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        block = replicates[start : start + size]
        block[:, 0] = _ratio(weights @ free_sorted, weights @ volume_sorted)
        for k in range(n_classes):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                w = weights[:, lo:hi]
                block[:, k + 1] = _ratio(w @ free_sorted[lo:hi], w @ volume_sorted[lo:hi])
            else:
                block[:, k + 1] = np.nan
    flat = replicates.reshape(n_bootstrap, -1)
    low = np.full(flat.shape[1], np.nan)
    high = np.full(flat.shape[1], np.nan)
    has_value = np.isfinite(flat).any(axis=0)
    if has_value.any():
        alpha = (1.0 - confidence) / 2.0
        q = np.nanquantile(flat[:, has_value], [alpha, 1.0 - alpha], axis=0)
        low[has_value], high[has_value] = q[0], q[1]
    shape = (n_classes + 1, n_phases)
    return low.reshape(shape), high.reshape(shape)


def liberation_table(
    particles_df: pd.DataFrame,
    *,
    phases: Sequence[str] | str | None = None,
    threshold: float = 0.99,
    size_bins_um: Sequence[float] | np.ndarray | None = None,
    exclude_border: bool = True,
    min_esd_um: float = 0.0,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    rng: np.random.Generator | int | None = None,
    size_column: str = "esd_um",
    weight_column: str = "volume_um3",
) -> pd.DataFrame:
    """Liberation degree of each phase, over all sizes and per size class (``liberation.csv``).

    Parameters
    ----------
    particles_df : DataFrame
        One row per particle with the ``particles.csv`` columns used here: `size_column` (``esd_um``),
        `weight_column` (``volume_um3``), ``touches_border`` and ``vf_<phase>`` for every phase.
    phases : str or sequence of str, optional
        Phase names to report; default every ``vf_<name>`` column, in table order.
    threshold : float
        A particle is free (fully liberated) for phase i when ``vf_i > threshold`` (strict; default 0.99
        as in the seed paper). Must lie in [0, 1).
    size_bins_um : sequence of float, optional
        Edges of the size classes in micrometres, half-open ``[lo, hi)``. Default: a sqrt(2) geometric
        series anchored at 1 um covering the sizes of the counted particles
        (:func:`geometric_size_bins`). Particles outside all classes still count in the all-sizes row.
    exclude_border : bool
        Drop particles that touch the volume border (their composition is truncated). Default True.
    min_esd_um : float
        Drop particles with a size below this (for example 2 x the resolution).
    n_bootstrap : int
        Number of bootstrap replicates; when positive, the columns ``ld_ci_low`` and ``ld_ci_high``
        hold the percentile interval of every LD (particles resampled with replacement).
    confidence : float
        Coverage of the bootstrap interval (0.95).
    rng : Generator or int or None
        Random generator or seed for the bootstrap.
    size_column, weight_column : str
        Columns holding the particle size and the particle measure (volume; the area for 2D sections).

    Returns
    -------
    DataFrame
        For every phase, first one row over all sizes (``esd_min_um`` and ``esd_max_um`` NaN), then
        one row per size class, with columns ``phase, esd_min_um, esd_max_um, n_particles, n_free,
        volume_free_um3, volume_total_um3, liberation_degree`` (+ ``ld_ci_low, ld_ci_high``).
        ``n_particles`` counts the counted particles of the class that contain the phase
        (``vf_i > 0``), ``n_free`` those that are free. ``liberation_degree`` is NaN where the
        phase is absent.

    Raises
    ------
    InputError
        Missing columns, fractions outside [0, 1], a threshold outside [0, 1), bad edges, or no
        particle left after filtering.

    Notes
    -----
    Eq. (1) of the seed paper (Englisch et al.), with ``V`` particle volumes and ``x`` the
    volume fraction of phase i in a particle,

    .. math:: LD_i = \\frac{V_{i,free}}{V_{i,free} + V_{i,intergrown}},
              \\quad V_{i,free} = \\sum_{p: x_{p,i} > t} x_{p,i} V_p,
              \\quad V_{i,free} + V_{i,intergrown} = \\sum_p x_{p,i} V_p,

    and Eq. (2) is the same ratio restricted to particles whose size lies in a class I. The paper
    classes particles by volume; a class of ESD is the same thing, ESD being monotone in volume.
    This is the "liberation by particle grade" of Reyes et al. (2018); Fig. 10 of the seed paper
    plots it against particle size.

    References
    ----------
    .. [1] Englisch S., Ditscherlein R., Kirstein T., et al. 3D analysis of equally X-ray
           attenuating mineralogical phases utilizing a correlative tomographic workflow across
           multiple length scales (``shared/seeds/000_22e43a0dd9515ebb.txt``), Eq. 1-2, Fig. 10.
    .. [2] Reyes F., Lin Q., Cilliers J.J., Neethling S.J. (2018). Quantifying mineral liberation by
           particle grade and surface exposure using X-ray microCT. Minerals Engineering 125, 75-82.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"esd_um": [2.0, 2.0], "volume_um3": [4.0, 4.0],
    ...                    "touches_border": [False, False],
    ...                    "vf_A": [1.0, 0.5], "vf_B": [0.0, 0.5]})
    >>> table = liberation_table(df)
    >>> float(table.loc[table.phase.eq("A") & table.esd_min_um.isna(), "liberation_degree"].iloc[0])
    0.6666666666666666
    """
    threshold = check_threshold(threshold)
    names = phase_columns(particles_df, phases)
    counted = select_particles(
        particles_df,
        exclude_border=exclude_border,
        min_size_um=float(min_esd_um),
        size_column=size_column,
    )
    vf = volume_fractions(counted, names)
    weight = counted[weight_column].to_numpy(dtype=np.float64)
    sizes = counted[size_column].to_numpy(dtype=np.float64)
    edges = geometric_size_bins(sizes) if size_bins_um is None else check_edges(size_bins_um)
    n_classes = edges.size - 1

    phase_volume = vf * weight[:, None]
    free = vf > threshold
    free_volume = np.where(free, phase_volume, 0.0)
    present = vf > 0

    # Row 0: all sizes; row k + 1: class k. Out-of-class particles go to a dropped slot.
    klass = class_index(sizes, edges)
    slot = np.where(klass >= 0, klass, n_classes)

    def per_class(values: np.ndarray) -> np.ndarray:
        out = np.empty((n_classes + 1, values.shape[1]))
        out[0] = values.sum(axis=0)
        for j in range(values.shape[1]):  # loop over phases, not particles
            out[1:, j] = np.bincount(slot, weights=values[:, j], minlength=n_classes + 1)[
                :n_classes
            ]
        return out

    total = per_class(phase_volume)
    free_total = per_class(free_volume)
    n_present = per_class(present.astype(np.float64))
    n_free = per_class(free.astype(np.float64))
    ld = _ratio(free_total, total)

    low_bounds = np.concatenate([[np.nan], edges[:-1]])
    high_bounds = np.concatenate([[np.nan], edges[1:]])
    n_rows = n_classes + 1
    table = pd.DataFrame(
        {
            "phase": np.repeat(np.asarray(names, dtype=object), n_rows),
            "esd_min_um": np.tile(low_bounds, len(names)),
            "esd_max_um": np.tile(high_bounds, len(names)),
            "n_particles": n_present.T.ravel().astype(np.int64),
            "n_free": n_free.T.ravel().astype(np.int64),
            "volume_free_um3": free_total.T.ravel(),
            "volume_total_um3": total.T.ravel(),
            "liberation_degree": ld.T.ravel(),
        }
    )
    if n_bootstrap > 0:
        order = np.argsort(slot, kind="stable")
        bounds = np.searchsorted(slot[order], np.arange(n_classes + 1))
        low, high = _bootstrap_intervals(
            order,
            bounds,
            phase_volume,
            free_volume,
            n_bootstrap=int(n_bootstrap),
            confidence=float(confidence),
            rng=as_rng(rng),
        )
        table["ld_ci_low"] = low.T.ravel()
        table["ld_ci_high"] = high.T.ravel()
    return table


def liberation_degree(
    particles_df: pd.DataFrame,
    *,
    phases: Sequence[str] | str | None = None,
    threshold: float = 0.99,
    exclude_border: bool = True,
    min_esd_um: float = 0.0,
) -> dict[str, float]:
    """Liberation degree of each phase over all sizes, ``{phase: LD}`` (Eq. 1 of the seed paper).

    A convenience over :func:`liberation_table`; see there for the parameters and the formula.
    The LD of a phase absent from every counted particle is NaN.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"esd_um": [2.0, 2.0], "volume_um3": [4.0, 4.0],
    ...                    "touches_border": [False, False], "vf_A": [1.0, 0.5]})
    >>> liberation_degree(df)
    {'A': 0.6666666666666666}
    """
    table = liberation_table(
        particles_df,
        phases=phases,
        threshold=threshold,
        exclude_border=exclude_border,
        min_esd_um=min_esd_um,
        size_bins_um=[0.0, np.inf],
    )
    overall = table[table["esd_min_um"].isna()]
    return {
        str(p): float(v)
        for p, v in zip(overall["phase"], overall["liberation_degree"], strict=True)
    }


def measurement_summary(
    particles_df: pd.DataFrame,
    liberation: pd.DataFrame,
    *,
    phases: Sequence[str],
    spacing,
    threshold: float = 0.99,
    include_border: bool = False,
    min_esd_um: float = 0.0,
    n_grains: int | None = None,
) -> dict:
    """The ``summary.json`` contract of a measured sample.

    Parameters
    ----------
    particles_df : DataFrame
        The particle table (``particles.csv`` columns).
    liberation : DataFrame
        :func:`liberation_table` of the same particles (the all-sizes rows are used, and their
        ``ld_ci_low``/``ld_ci_high`` when bootstrapped).
    phases : sequence of str
        Phase names, in the order to report.
    spacing : float or (3,) floats
        Voxel size in micrometres.
    threshold, include_border, min_esd_um : float, bool, float
        The liberation settings (recorded).
    n_grains : int, optional
        Grain count to record.

    Returns
    -------
    dict
        ``n_particles``, ``n_particles_counted``, ``phase_volume_fractions`` (voxel share of each
        phase among all particle voxels, :math:`\\sum_p vf_{p,i} V_p / \\sum_p V_p`),
        ``liberation_degree`` (Eq. 1 over all sizes), its 95 % interval when bootstrapped,
        ``voxel_size_um``, the settings and the corrtomo ``version``.
    """
    from .. import __version__

    spacing = np.broadcast_to(np.asarray(spacing, dtype=float), (3,))
    counted = liberation[liberation["esd_min_um"].isna()]
    voxels = particles_df["volume_voxels"].to_numpy(dtype=np.float64)
    total = max(float(voxels.sum()), 1.0)
    fractions = {name: float((particles_df[f"vf_{name}"].to_numpy() * voxels).sum() / total) for name in phases}
    in_count = (~particles_df["touches_border"].to_numpy(dtype=bool) | include_border) & (
        particles_df["esd_um"].to_numpy() >= min_esd_um)
    summary = {
        "n_particles": len(particles_df),
        "n_particles_counted": int(in_count.sum()),
        "phase_volume_fractions": fractions,
        "liberation_degree": dict(zip(counted["phase"], counted["liberation_degree"].astype(float), strict=True)),
        "voxel_size_um": float(spacing[0]) if np.allclose(spacing, spacing[0]) else spacing.tolist(),
        "voxel_size_zyx_um": spacing.tolist(),
        "threshold": threshold,
        "exclude_border": not include_border,
        "min_esd_um": min_esd_um,
        "version": __version__,
    }
    if n_grains is not None:
        summary["n_grains"] = int(n_grains)
    if "ld_ci_low" in counted.columns and counted["ld_ci_low"].notna().any():
        summary["liberation_degree_ci95"] = {
            name: [float(lo), float(hi)]
            for name, lo, hi in zip(counted["phase"], counted["ld_ci_low"], counted["ld_ci_high"], strict=True)
        }
    return summary
