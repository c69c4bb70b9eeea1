"""Chart figures of the report: phase fractions, size distributions (Fig. 9), liberation by size
(Fig. 10), grain versus particle volume (Fig. 11), representativeness (Fig. 12), liberation spectra
and 2D versus 3D liberation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..liberation import GRADE_CLASSES

#: Colour of the "all particles" curves.
ALL_COLOR = "#222222"
_MEAN_COLOR = "#c0392b"
_MAX_SCATTER_POINTS = 20_000


def message_axes(ax: Axes, text: str) -> None:
    """Write `text` in the middle of an empty panel (a part that cannot be drawn, and why)."""
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        text,
        ha="center",
        va="center",
        fontsize=9,
        color="0.35",
        wrap=True,
        transform=ax.transAxes,
    )


def message_figure(text: str, *, size: tuple[float, float] = (8.0, 1.6)) -> Figure:
    """A small figure that only says why the real one is missing."""
    figure = Figure(figsize=size)
    message_axes(figure.add_subplot(), text)
    return figure


def class_centres(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Geometric centre of size classes; a class starting at 0 or ending at infinity gets the
    other bound times (or over) sqrt(2)."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    centre = np.sqrt(low * high)
    centre = np.where(low <= 0, high / np.sqrt(2.0), centre)
    return np.where(~np.isfinite(high), low * np.sqrt(2.0), centre)


def _log_axis_usable(values: np.ndarray) -> bool:
    values = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.isfinite(values) & (values > 0))) and values.size > 0


def plain_log_ticks(ax: Axes, which: str = "x") -> None:
    """Label a log axis with plain numbers (0.5, 1, 2, not 5x10^-1), ticks at 1-2-5 within
    two decades and at powers of ten beyond, and no minor labels (they overlap on short axes)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    decades = np.log10(max(high, low) / max(min(high, low), 1e-300))
    subs = (1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------
# phase volume fractions
# --------------------------------------------------------------------------------------------


def phase_fraction_figure(fractions: Mapping[str, float], colors: Mapping[str, str]) -> Figure:
    """Horizontal bars of the phase volume fractions (share of all particle voxels)."""
    names = list(fractions)
    figure = Figure(figsize=(7.0, 0.5 + 0.42 * max(len(names), 1)), layout="constrained")
    ax = figure.add_subplot()
    if not names:
        message_axes(ax, "no phase volume fractions in the summary")
        return figure
    values = np.array([float(fractions[n]) if fractions[n] is not None else np.nan for n in names])
    position = np.arange(len(names))[::-1]
    ax.barh(
        position,
        np.nan_to_num(values),
        color=[colors[n] for n in names],
        edgecolor="0.25",
        linewidth=0.6,
    )
    for y, value in zip(position, values, strict=True):
        text = "n/a" if not np.isfinite(value) else f"{100 * value:.1f} %"
        ax.text(np.nan_to_num(value) + 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(position, names, fontsize=9)
    top = np.nanmax(values) if np.isfinite(values).any() else 1.0
    ax.set_xlim(0, min(1.0, top * 1.2 + 0.05))
    ax.set_xlabel("volume fraction of all particle voxels", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return figure


# --------------------------------------------------------------------------------------------
# Fig. 9: size distributions by dominant phase
# --------------------------------------------------------------------------------------------


def size_distribution_figure(distribution: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Number-, volume- and mass-weighted normalised ESD histograms, all particles and per
    dominant phase (the seed paper's Fig. 9 shows the mass-weighted one)."""
    figure = Figure(figsize=(10.0, 3.4), layout="constrained")
    axes = figure.subplots(1, 3, sharex=True)
    groups = list(dict.fromkeys(distribution["group"]))
    weights = (
        ("number_fraction", "number-weighted"),
        ("volume_fraction", "volume-weighted"),
        ("mass_fraction", "mass-weighted"),
    )
    handles: list[Line2D] = []
    for ax, (column, title) in zip(axes, weights, strict=True):
        drawn = False
        for group in groups:
            rows = distribution[distribution["group"] == group]
            values = rows[column].to_numpy(dtype=np.float64)
            if not np.isfinite(values).any():
                continue
            edges = np.append(rows["esd_min_um"].to_numpy(), rows["esd_max_um"].to_numpy()[-1])
            is_all = group == "all"
            ax.stairs(
                np.nan_to_num(values),
                edges,
                color=ALL_COLOR if is_all else colors[group],
                linewidth=2.0 if is_all else 1.4,
                linestyle="--" if is_all else "-",
            )
            drawn = True
        if not drawn:
            message_axes(ax, f"no {title} distribution\n(no densities or no particle)")
            continue
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("equivalent spherical diameter (µm)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
        if _log_axis_usable(distribution["esd_min_um"]):
            ax.set_xscale("log")
            plain_log_ticks(ax)
    axes[0].set_ylabel("fraction per size class", fontsize=8)
    for group in groups:
        rows = distribution[distribution["group"] == group]
        count = int(rows["n_particles"].sum())
        is_all = group == "all"
        label = "all particles" if is_all else f"{group} > 50 %"
        handles.append(
            Line2D(
                [],
                [],
                color=ALL_COLOR if is_all else colors[group],
                linestyle="--" if is_all else "-",
                label=f"{label} (n = {count})",
            )
        )
    figure.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 5),
        fontsize=8,
        frameon=False,
    )
    return figure


# --------------------------------------------------------------------------------------------
# Fig. 10: liberation degree by size class with bootstrap intervals
# --------------------------------------------------------------------------------------------


def liberation_size_figure(
    liberation: pd.DataFrame, names: Sequence[str], colors: Mapping[str, str]
) -> Figure:
    """Liberation degree of each phase per ESD class (Eq. 2 of the seed paper) with its
    confidence interval, one point per class at the class's geometric centre."""
    figure = Figure(figsize=(8.0, 4.0), layout="constrained")
    ax = figure.add_subplot()
    classes = liberation[liberation["esd_min_um"].notna()]
    if classes.empty:
        message_axes(ax, "the liberation table has no size classes")
        return figure
    has_ci = {"ld_ci_low", "ld_ci_high"} <= set(liberation.columns)
    n_phases = max(len(names), 1)
    handles = []
    any_point = False
    for k, name in enumerate(names):
        rows = classes[classes["phase"] == name]
        overall = liberation[(liberation["phase"] == name) & liberation["esd_min_um"].isna()]
        ld = rows["liberation_degree"].to_numpy(dtype=np.float64)
        finite = np.isfinite(ld)
        overall_ld = overall["liberation_degree"].to_numpy(dtype=np.float64)
        label = name
        if overall_ld.size and np.isfinite(overall_ld[0]):
            label += f" (all sizes {overall_ld[0]:.2f})"
        if not finite.any():
            label += " (no particle)"
            handles.append(
                Line2D([], [], color=colors[name], marker="o", linestyle="none", label=label)
            )
            continue
        centre = class_centres(rows["esd_min_um"].to_numpy(), rows["esd_max_um"].to_numpy())
        # Dodge the phases sideways inside a class, so their intervals do not hide each other.
        centre = centre * 2.0 ** (0.06 * (k - (n_phases - 1) / 2))
        x, y = centre[finite], ld[finite]
        yerr = None
        if has_ci:
            low = rows["ld_ci_low"].to_numpy(dtype=np.float64)[finite]
            high = rows["ld_ci_high"].to_numpy(dtype=np.float64)[finite]
            yerr = np.vstack([np.clip(y - low, 0, None), np.clip(high - y, 0, None)])
            yerr = np.nan_to_num(yerr)
        if yerr is not None:
            ax.errorbar(
                x,
                y,
                yerr=yerr,
                fmt="none",
                ecolor=colors[name],
                elinewidth=1.0,
                capsize=3,
                alpha=0.6,
            )
        ax.plot(x, y, color=colors[name], linewidth=1.0, alpha=0.7)
        ax.plot(
            x,
            y,
            linestyle="none",
            marker="o",
            markersize=5.5,
            color=colors[name],
            markeredgecolor="0.2",
            markeredgewidth=0.6,
        )
        handles.append(Line2D([], [], color=colors[name], marker="o", label=label))
        any_point = True
    edges = np.concatenate(
        [
            classes["esd_min_um"].to_numpy(dtype=np.float64),
            classes["esd_max_um"].to_numpy(dtype=np.float64),
        ]
    )
    if any_point and _log_axis_usable(edges):
        # The axis spans every class, so empty classes show as gaps, not as a shorter axis.
        ax.set_xscale("log")
        ax.set_xlim(edges.min(), edges.max())
        plain_log_ticks(ax)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("equivalent spherical diameter (µm), class centre", fontsize=9)
    ax.set_ylabel("liberation degree", fontsize=9)
    ax.grid(True, which="major", color="0.9", linewidth=0.6)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    if handles:
        ax.legend(
            handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
        )
    if not any_point:
        ax.text(
            0.5,
            0.5,
            "no phase has a liberation degree in any size class",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.35",
            fontsize=9,
        )
    return figure


# --------------------------------------------------------------------------------------------
# Fig. 11: grain over particle volume
# --------------------------------------------------------------------------------------------


def grain_particle_figure(
    points: Mapping[str, tuple[np.ndarray, np.ndarray]],
    curves: Mapping[str, pd.DataFrame | str],
    colors: Mapping[str, str],
) -> Figure:
    """Every grain of a phase at (particle volume, grain volume), log-log, with the class mean
    grain volume (red) and its standard error (grey band); the diagonal is a liberated grain.

    Parameters
    ----------
    points : mapping of phase name to (particle volumes, grain volumes)
        One point per grain.
    curves : mapping of phase name to DataFrame or str
        :func:`corrtomo.liberation.grain_particle_volume` per phase, or why it is missing.
    colors : mapping of phase name to colour
    """
    names = list(curves)
    n_columns = min(max(len(names), 1), 4)
    n_rows = -(-max(len(names), 1) // n_columns)
    figure = Figure(figsize=(2.6 * n_columns + 0.6, 2.7 * n_rows + 0.3), layout="constrained")
    axes = figure.subplots(n_rows, n_columns, squeeze=False).ravel()
    rng = np.random.default_rng(0)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    if not names:
        message_axes(axes[0], "no phase")
        return figure
    for ax, name in zip(axes, names, strict=False):
        particle_volume, grain_volume = points.get(name, (np.empty(0), np.empty(0)))
        curve = curves[name]
        positive = (particle_volume > 0) & (grain_volume > 0)
        if not positive.any():
            message_axes(
                ax, f"{name}: no grain" if isinstance(curve, pd.DataFrame) else f"{name}: {curve}"
            )
            continue
        x, y = particle_volume[positive], grain_volume[positive]
        if x.size > _MAX_SCATTER_POINTS:  # a seeded subsample keeps the PNG small
            keep = rng.choice(x.size, size=_MAX_SCATTER_POINTS, replace=False)
            x, y = x[keep], y[keep]
        ax.scatter(x, y, s=12, color=colors[name], alpha=0.7, linewidths=0, rasterized=True)
        low, high = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([low, high], [low, high], color="0.4", linestyle=":", linewidth=1.0)
        if isinstance(curve, pd.DataFrame):
            filled = curve[curve["n_grains"] > 0]
            mean = filled["grain_volume_mean_um3"].to_numpy(dtype=np.float64)
            sem = np.nan_to_num(filled["grain_volume_sem_um3"].to_numpy(dtype=np.float64))
            centre = filled["particle_volume_mean_um3"].to_numpy(dtype=np.float64)
            if centre.size:
                band_low = np.clip(mean - sem, y.min() * 0.5, None)
                ax.fill_between(centre, band_low, mean + sem, color="0.6", alpha=0.45, linewidth=0)
                ax.plot(centre, mean, color=_MEAN_COLOR, linewidth=1.6, marker=".", markersize=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_log_ticks(ax, "x")
        plain_log_ticks(ax, "y")
        ax.set_title(f"{name} ({int(positive.sum())} grains)", fontsize=9)
        ax.set_xlabel("particle volume (µm³)", fontsize=8)
        ax.set_ylabel("grain volume (µm³)", fontsize=8)
        ax.tick_params(labelsize=7)
    return figure


# --------------------------------------------------------------------------------------------
# Fig. 12: representativeness
# --------------------------------------------------------------------------------------------


def representativeness_figure(table: pd.DataFrame, *, resolution_um: float | None = None) -> Figure:
    """Mean particle count per ESD interval over pieces (blue), standard error (purple) and
    confidence interval (grey), as in Fig. 12 of the seed paper."""
    figure = Figure(figsize=(8.0, 3.6), layout="constrained")
    ax = figure.add_subplot()
    if table.empty:
        message_axes(ax, "no size interval")
        return figure
    low = table["esd_min_um"].to_numpy(dtype=np.float64)
    high = table["esd_max_um"].to_numpy(dtype=np.float64)
    centre = (
        table["esd_center_um"].to_numpy(dtype=np.float64)
        if "esd_center_um" in table.columns
        else class_centres(low, high)
    )
    mean = table["mean"].to_numpy(dtype=np.float64)
    sem = table["sem"].to_numpy(dtype=np.float64)
    ci_low = table["ci_low"].to_numpy(dtype=np.float64)
    ci_high = table["ci_high"].to_numpy(dtype=np.float64)
    for k in range(len(table)):
        ax.fill_between(
            [low[k], high[k]],
            ci_low[k],
            ci_high[k],
            color="0.78",
            linewidth=0,
            label="95 % confidence interval" if k == 0 else None,
        )
        ax.hlines(
            mean[k],
            low[k],
            high[k],
            color="#1f4e9c",
            linewidth=2.0,
            label="mean over pieces" if k == 0 else None,
        )
        ax.vlines(
            centre[k],
            mean[k] - sem[k],
            mean[k] + sem[k],
            color="#7b2d8e",
            linewidth=2.0,
            label="standard error" if k == 0 else None,
        )
    if resolution_um is not None and np.isfinite(resolution_um):
        ax.axvline(2.0 * resolution_um, color="#e6b800", linewidth=1.5, label="resolution cut-off")
    if _log_axis_usable(low):
        ax.set_xscale("log")
        plain_log_ticks(ax)
    n_pieces = int(table["n_pieces"].iloc[0]) if "n_pieces" in table.columns else None
    ax.set_title(
        f"particle count per piece ({n_pieces} pieces)" if n_pieces else "particle count per piece",
        fontsize=9,
    )
    ax.set_xlabel("equivalent spherical diameter (µm)", fontsize=9)
    ax.set_ylabel("particles per piece", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


# --------------------------------------------------------------------------------------------
# liberation spectra and grade-recovery
# --------------------------------------------------------------------------------------------


def spectrum_figure(spectrum: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Liberation spectrum (share of each phase by particle grade class) and the ideal
    grade-recovery curve of each phase."""
    figure = Figure(figsize=(10.0, 3.6), layout="constrained")
    bars_ax, curve_ax = figure.subplots(1, 2, width_ratios=[1.6, 1.0])
    names = list(dict.fromkeys(spectrum["phase"]))
    n = max(len(names), 1)
    width = 0.8 / n
    position = np.arange(len(GRADE_CLASSES))
    for k, name in enumerate(names):
        rows = spectrum[spectrum["phase"] == name]
        fraction = rows["phase_volume_fraction"].to_numpy(dtype=np.float64)
        bars_ax.bar(
            position - 0.4 + (k + 0.5) * width,
            np.nan_to_num(fraction),
            width=width,
            color=colors[name],
            edgecolor="0.25",
            linewidth=0.4,
            label=name,
        )
        recovery = rows["cumulative_recovery"].to_numpy(dtype=np.float64)
        grade = rows["cumulative_grade"].to_numpy(dtype=np.float64)
        finite = np.isfinite(recovery) & np.isfinite(grade)
        if finite.any():
            curve_ax.plot(
                100 * recovery[finite],
                100 * grade[finite],
                color=colors[name],
                marker="o",
                markersize=3,
                linewidth=1.3,
                label=name,
            )
    bars_ax.set_xticks(
        position, [f"{c}" for c in GRADE_CLASSES], rotation=45, ha="right", fontsize=7
    )
    bars_ax.set_xlabel("phase in particle (% by volume)", fontsize=8)
    bars_ax.set_ylabel("share of the phase's volume", fontsize=8)
    bars_ax.set_title("liberation spectrum", fontsize=9)
    bars_ax.tick_params(axis="y", labelsize=7)
    bars_ax.spines[["top", "right"]].set_visible(False)
    if names:
        bars_ax.legend(fontsize=7, frameon=False, loc="upper left")
    curve_ax.set_xlim(-2, 102)
    curve_ax.set_ylim(-2, 102)
    curve_ax.set_xlabel("recovery of the phase (%)", fontsize=8)
    curve_ax.set_ylabel("concentrate grade (%)", fontsize=8)
    curve_ax.set_title("ideal grade-recovery", fontsize=9)
    curve_ax.tick_params(labelsize=7)
    curve_ax.grid(True, color="0.9", linewidth=0.6)
    curve_ax.spines[["top", "right"]].set_visible(False)
    return figure


# --------------------------------------------------------------------------------------------
# 2D versus 3D liberation
# --------------------------------------------------------------------------------------------


def stereology_figure(table: pd.DataFrame, colors: Mapping[str, str]) -> Figure:
    """Liberation degree from 2D sections next to 3D: all sizes per phase (bars) and per size
    class (2D against 3D; above the diagonal, sections overestimate liberation)."""
    figure = Figure(figsize=(10.0, 3.6), layout="constrained")
    bars_ax, scatter_ax = figure.subplots(1, 2)
    overall = table[table["esd_min_um"].isna()]
    names = list(dict.fromkeys(table["phase"]))
    position = np.arange(len(names))
    ld3 = np.array([_first(overall, name, "ld_3d") for name in names])
    ld2 = np.array([_first(overall, name, "ld_2d") for name in names])
    bar_colors = [colors[name] for name in names]
    bars_ax.bar(
        position - 0.2,
        np.nan_to_num(ld3),
        width=0.4,
        color=bar_colors,
        edgecolor="0.2",
        linewidth=0.6,
        label="3D (volume)",
    )
    bars_ax.bar(
        position + 0.2,
        np.nan_to_num(ld2),
        width=0.4,
        color=bar_colors,
        edgecolor="0.2",
        linewidth=0.6,
        hatch="///",
        alpha=0.6,
        label="2D (sections)",
    )
    bars_ax.set_xticks(position, names, fontsize=8)
    bars_ax.set_ylim(0, 1.05)
    bars_ax.set_ylabel("liberation degree, all sizes", fontsize=8)
    bars_ax.tick_params(axis="y", labelsize=7)
    bars_ax.spines[["top", "right"]].set_visible(False)
    if names:
        bars_ax.legend(fontsize=7, frameon=False, loc="upper right")
    classes = table[table["esd_min_um"].notna()]
    scatter_ax.plot([0, 1], [0, 1], color="0.5", linestyle=":", linewidth=1.0)
    for name in names:
        rows = classes[classes["phase"] == name]
        x = rows["ld_3d"].to_numpy(dtype=np.float64)
        y = rows["ld_2d"].to_numpy(dtype=np.float64)
        both = np.isfinite(x) & np.isfinite(y)
        if both.any():
            scatter_ax.scatter(
                x[both],
                y[both],
                s=22,
                color=colors[name],
                edgecolors="0.2",
                linewidths=0.5,
                label=name,
            )
    scatter_ax.set_xlim(-0.03, 1.03)
    scatter_ax.set_ylim(-0.03, 1.03)
    scatter_ax.set_aspect("equal")
    scatter_ax.set_xlabel("3D liberation degree per size class", fontsize=8)
    scatter_ax.set_ylabel("2D liberation degree", fontsize=8)
    scatter_ax.tick_params(labelsize=7)
    if scatter_ax.get_legend_handles_labels()[0]:
        scatter_ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return figure


def _first(frame: pd.DataFrame, phase: str, column: str) -> float:
    values = frame.loc[frame["phase"] == phase, column].to_numpy(dtype=np.float64)
    return float(values[0]) if values.size else np.nan


# --------------------------------------------------------------------------------------------
# across length scales (Sec. 3.5, Fig. 12)
# --------------------------------------------------------------------------------------------

#: Colours of the sources of :func:`corrtomo.stats.cross_scale_psd`.
CROSS_SCALE_COLORS = {"nano": "#1f77b4", "micro region": "#d62728", "micro pieces": "#7b2d8e"}
_CROSS_SCALE_FALLBACK = ("#2ca02c", "#ff7f0e", "#8c564b", "#17becf")


def cross_scale_colors(sources: Sequence[str]) -> dict[str, str]:
    """Colour of every source: the fixed ones for nano / micro region / micro pieces."""
    extra = [s for s in sources if s not in CROSS_SCALE_COLORS]
    colors = dict(CROSS_SCALE_COLORS)
    for k, source in enumerate(extra):
        colors[source] = _CROSS_SCALE_FALLBACK[k % len(_CROSS_SCALE_FALLBACK)]
    return colors


def cross_scale_figure(table: pd.DataFrame) -> Figure:
    """Number density per ESD interval (log ESD axis) of every source, the 95 % interval over the
    micro pieces (grey band) and each source's resolution cut-off (dashed), cf. Fig. 12."""
    figure = Figure(figsize=(8.0, 3.8), layout="constrained")
    ax = figure.add_subplot()
    if table.empty:
        message_axes(ax, "no size interval")
        return figure
    sources = [str(s) for s in dict.fromkeys(table["source"])]
    colors = cross_scale_colors(sources)
    all_centres = class_centres(table["esd_min_um"], table["esd_max_um"])
    cutoffs: dict[float, list[str]] = {}
    for source in sources:
        rows = table[table["source"].astype(str) == source]
        centre = class_centres(rows["esd_min_um"], rows["esd_max_um"])
        density = rows["density_per_1000um3"].to_numpy(dtype=np.float64)
        low = rows["ci_low"].to_numpy(dtype=np.float64)
        high = rows["ci_high"].to_numpy(dtype=np.float64)
        band = np.isfinite(low) & np.isfinite(high)
        if band.any():
            ax.fill_between(
                centre[band],
                np.clip(low[band], 0.0, None),
                high[band],
                color="0.6",
                alpha=0.35,
                linewidth=0,
                label=f"{source}: 95 % interval",
            )
        ax.plot(
            centre,
            density,
            marker="o",
            markersize=3.5,
            linewidth=1.5,
            color=colors[source],
            label=source,
        )
        cut = rows["cutoff_um"].to_numpy(dtype=np.float64)
        if cut.size and np.isfinite(cut[0]) and cut[0] > 0:
            cutoffs.setdefault(float(cut[0]), []).append(source)
    for cut, named in cutoffs.items():
        ax.axvline(
            cut,
            color=colors[named[0]],
            linestyle="--",
            linewidth=1.2,
            label=f"cut-off {', '.join(named)} ({cut:.3g} µm)",
        )
    if _log_axis_usable(all_centres):
        ax.set_xscale("log")
        plain_log_ticks(ax)
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel("equivalent spherical diameter (µm)", fontsize=9)
    ax.set_ylabel("particles per 1000 µm³", fontsize=9)
    ax.set_title("particle number density per ESD interval", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure
