"""The figures of a report: which ones, in what order, and how each is drawn and captioned."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _figures_charts as charts
from ._context import ReportContext
from ._data import ReportData
from ._figures_volume import section_figure, slices_figure
from ._images import figure_png, png_data_uri, png_size

_DPI = 100


@dataclass(frozen=True)
class FigureView:
    """A rendered figure as the template shows it."""

    id: str
    alt: str
    caption: str
    uri: str
    width: int
    height: int
    number: int


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

_Drawing = Callable[[ReportContext], tuple[Any, str, str]]  # -> (Figure or PNG bytes, alt, caption)


def _draw_slices(overlay: str) -> _Drawing:
    def draw(context: ReportContext) -> tuple[Any, str, str]:
        data = context.data
        figure = slices_figure(
            data.ct,
            data.phases,
            data.particles,
            spacing=context.spacing,
            library=data.library,
            overlay=overlay,
        )
        if overlay == "phases":
            alt = (
                "Central xy, xz and yz planes of the CT volume, plain and with the phases overlaid"
            )
            caption = (
                "Central planes of the CT volume (grey, 0.5–99.5 percentile window), plain (top) and "
                "with the segmented phases in library colours (bottom). Light blue-grey: outside "
                "the reconstructed volume."
            )
        else:
            alt = "Central xy, xz and yz planes of the CT volume with the particles overlaid"
            caption = (
                "The same planes with every segmented particle in its own colour (a hash of its "
                "label, so a particle keeps its colour across planes); outlines darker."
            )
        return figure, alt, caption

    return draw


def _draw_section(index: int) -> _Drawing:
    def draw(context: ReportContext) -> tuple[Any, str, str]:
        section = context.data.sections[index]
        figure = section_figure(section, library=context.data.library)
        parts = ["BSE image" if section.bse is not None else None, "EDS mineral map"]
        if section.ct_plane is not None:
            parts.append("CT sampled on the registered plane with the mineral-map boundaries")
            if section.bse is not None:
                parts.append("checkerboard of BSE and CT tiles")
        described = ", ".join(p for p in parts if p)
        caption = f"SEM section {section.name}: {described}."
        if section.score is not None:
            caption += f" Registration score {section.score:.3f}."
        if section.pose_error_voxels is not None:
            caption += f" Pose error against the truth {section.pose_error_voxels:.2f} voxels."
        if section.ct_plane is None:
            caption += " No registered CT plane was given."
        return figure, f"SEM section {section.name}: {described}", caption

    return draw


def _draw_phase_fractions(context: ReportContext) -> tuple[Any, str, str]:
    fractions = dict(context.data.summary.get("phase_volume_fractions", {}) or {})
    figure = charts.phase_fraction_figure(fractions, context.colors)
    return (
        figure,
        "Bar chart of the phase volume fractions",
        "Phase volume fractions: share of each phase in all particle voxels (summary).",
    )


def _draw_size_distribution(context: ReportContext) -> tuple[Any, str, str]:
    distribution = context.size_distribution
    alt = "Number-, volume- and mass-weighted ESD histograms by dominant phase"
    if isinstance(distribution, str):
        return (
            charts.message_figure(f"No size distribution: {distribution}"),
            alt,
            "Size distributions.",
        )
    caption = (
        "Normalised ESD histograms of all counted particles (dashed) and of the particles with more "
        "than 50 % of one phase, by number, volume and mass (mass from the library densities)."
    )
    if context.densities is None:
        caption += " Some phases have no density in the library, so the mass panel is empty."
    if context.exclude_border:
        caption += " Particles touching the volume border are left out."
    return charts.size_distribution_figure(distribution, context.colors), alt, caption


def _draw_liberation_by_size(context: ReportContext) -> tuple[Any, str, str]:
    liberation = context.data.liberation
    alt = "Liberation degree of each phase against particle size with confidence intervals"
    needed = {"phase", "esd_min_um", "esd_max_um", "liberation_degree"}
    if not needed <= set(liberation.columns):
        return (
            charts.message_figure("The liberation table lacks its size columns."),
            alt,
            "Liberation by size.",
        )
    has_ci = {"ld_ci_low", "ld_ci_high"} <= set(liberation.columns)
    caption = (
        "Liberation degree per ESD class (Eq. 2), plotted at the geometric centre of the class"
        + (
            ", with bootstrap confidence intervals (particles resampled)."
            if has_ci
            else "; no bootstrap intervals were computed."
        )
        + " Classes without the phase have no point."
    )
    names = list(dict.fromkeys(liberation["phase"].astype(str)))
    return charts.liberation_size_figure(liberation, names, context.colors), alt, caption


def _draw_grain_particle(context: ReportContext) -> tuple[Any, str, str]:
    figure = charts.grain_particle_figure(
        context.grain_points, context.grain_curves, context.colors
    )
    caption = (
        "Grain over particle volume: one point per grain (log-log); red, the mean grain volume per "
        "particle-volume class; grey band, its standard error; dotted, grain = particle."
    )
    return figure, "Grain volume against particle volume for each phase", caption


def _draw_representativeness(context: ReportContext) -> tuple[Any, str, str]:
    table = context.data.representativeness
    resolution = context.data.summary.get("resolution_um")
    figure = charts.representativeness_figure(
        table, resolution_um=None if resolution is None else float(resolution)
    )
    caption = (
        "Particle counts per ESD interval in pieces of the volume: blue, the mean over pieces; "
        "purple, its standard error; grey, the 95 % Student-t confidence interval."
    )
    return figure, "Mean particle count per size interval over pieces of the volume", caption


def _draw_spectrum(context: ReportContext) -> tuple[Any, str, str]:
    spectrum = context.spectrum
    alt = "Liberation spectra and grade-recovery curves of each phase"
    if isinstance(spectrum, str):
        return (
            charts.message_figure(f"No liberation spectrum: {spectrum}"),
            alt,
            "Liberation spectra.",
        )
    caption = (
        "Left: share of each phase's volume in particles of each grade class (percent of the phase "
        "in the particle; 100 is free). Right: recovery and grade of a perfect separation that "
        "keeps every particle above a grade."
    )
    return charts.spectrum_figure(spectrum, context.colors), alt, caption


def _draw_stereology(context: ReportContext) -> tuple[Any, str, str]:
    caption = (
        "Left: liberation degree over all sizes in 3D (solid) and on 2D sections (hatched). Right: "
        "per size class, 2D against 3D; points above the dotted diagonal overestimate liberation."
    )
    figure = charts.stereology_figure(context.data.stereology, context.colors)
    return figure, "Liberation degree from 2D sections against 3D", caption


def _draw_particle_model(context: ReportContext) -> tuple[Any, str, str]:
    source = context.data.particle_model_figure
    if isinstance(source, bytes | bytearray):
        png: Any = bytes(source)
    elif isinstance(source, str | os.PathLike):
        png = Path(source).read_bytes()
    else:
        png = source  # a matplotlib Figure owned by the caller: drawn, never closed here
    caption = (
        "Particle descriptors of the data (blue) and of a population simulated from the fitted "
        "marginals and vine copula (red): histograms, scatter plots and Kendall's tau."
    )
    return png, "Pair plot of measured and simulated particle descriptors", caption


def _draw_cross_scale_overlay(context: ReportContext) -> tuple[Any, str, str]:
    cross = context.data.cross_scale
    assert cross is not None
    source = cross.overlay_png
    png = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    registration = cross.registration
    caption = (
        "Where the nano-CT volume lies in the micro-CT overview. Top: overview slices through the "
        "nano volume's centre with its box at the found pose (cyan; the truth in yellow for a "
        "digital twin). Bottom: central planes of the nano volume, the overview resampled on them "
        "through the found transform, and a red/green composite in which matching structure is "
        f"yellow. Score {float(registration['score']):.3f}"
        + ("." if registration.get("confident") else ", not a confident match.")
    )
    return png, "The nano-CT volume registered inside the micro-CT overview", caption


def _draw_cross_scale_psd(context: ReportContext) -> tuple[Any, str, str]:
    cross = context.data.cross_scale
    assert cross is not None
    caption = (
        "Particle number density per ESD interval (per 1000 µm³ of each view, log ESD axis): the "
        "nano-CT volume, the particles of the micro-CT overview in the same region, and the mean "
        "over nano-sized pieces of the whole overview with its 95 % Student-t interval (grey "
        "band). Dashed: the resolution cut-off (twice the resolution) of each scan; intervals "
        "left of a scan's cut-off are not resolved by it."
    )
    return (
        charts.cross_scale_figure(cross.table),
        "Particle number density against ESD for the nano volume and the micro overview",
        caption,
    )


def _figure_plan(data: ReportData) -> list[tuple[str, _Drawing]]:
    """The figures of a report, in document order, as (id, drawing)."""
    plan: list[tuple[str, _Drawing]] = [
        ("fig-slices-phases", _draw_slices("phases")),
        ("fig-slices-particles", _draw_slices("particles")),
    ]
    plan += [(f"fig-section-{k + 1}", _draw_section(k)) for k in range(len(data.sections))]
    plan += [
        ("fig-phase-fractions", _draw_phase_fractions),
        ("fig-size-distribution", _draw_size_distribution),
        ("fig-liberation-by-size", _draw_liberation_by_size),
        ("fig-grain-particle-volume", _draw_grain_particle),
    ]
    if data.representativeness is not None:
        plan.append(("fig-representativeness", _draw_representativeness))
    plan.append(("fig-liberation-spectrum", _draw_spectrum))
    if data.stereology is not None:
        plan.append(("fig-stereology", _draw_stereology))
    if data.cross_scale is not None:
        if data.cross_scale.overlay_png is not None:
            plan.append(("fig-cross-scale-overlay", _draw_cross_scale_overlay))
        plan.append(("fig-cross-scale-psd", _draw_cross_scale_psd))
    if data.particle_model_figure is not None:
        plan.append(("fig-particle-model", _draw_particle_model))
    return plan


def figure_ids(data: ReportData) -> list[str]:
    """Ids of the figures a report of `data` holds, in document order (nothing is drawn).

    Always ``fig-slices-phases``, ``fig-slices-particles``, ``fig-section-<k>`` for k = 1..number
    of sections, ``fig-phase-fractions``, ``fig-size-distribution``, ``fig-liberation-by-size``,
    ``fig-grain-particle-volume`` and ``fig-liberation-spectrum``; ``fig-representativeness``,
    ``fig-stereology``, ``fig-cross-scale-overlay`` (a cross-scale part with an overlay image),
    ``fig-cross-scale-psd`` (any cross-scale part) and ``fig-particle-model`` when those parts
    are given. Each is the id of an ``<img>`` inside a ``<figure id="figure-<id>">``.
    """
    return [figure_id for figure_id, _ in _figure_plan(data)]


def render_figures(context: ReportContext) -> dict[str, FigureView]:
    views: dict[str, FigureView] = {}
    for number, (figure_id, draw) in enumerate(_figure_plan(context.data), start=1):
        image, alt, caption = draw(context)
        png = image if isinstance(image, bytes) else figure_png(image, dpi=_DPI)
        width, height = png_size(png)
        views[figure_id] = FigureView(
            figure_id, alt, caption, png_data_uri(png), width, height, number
        )
    return views
