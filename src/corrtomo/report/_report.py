"""Render a :class:`ReportData` into one self-contained HTML file."""

from __future__ import annotations

import datetime
import functools
import math
import os
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from .._shared import write_text_atomic
from . import _report_tables as tables
from ._context import ReportContext
from ._data import ReportData
from ._figure_plan import render_figures
from ._tables import Table, TableNumbering

__all__ = ["render_report", "write_report"]


@functools.cache
def _template():
    import jinja2

    text = (
        resources.files("corrtomo.report").joinpath("templates", "report.html").read_text("utf-8")
    )
    environment = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False
    )
    return environment.from_string(text)


def _generated(provenance: dict) -> str:
    created = provenance.get("created")
    if created:
        return str(created)
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _contents(figures: dict, has_accuracy: bool) -> list[tuple[str, str]]:
    """(anchor, title) of the report's sections, in order, for the table of contents."""
    contents = [
        ("summary", "Sample and run"),
        ("slices", "Orthogonal slices"),
        ("sections", "SEM sections"),
        ("phases", "Phase volume fractions"),
        ("size-distribution", "Size distributions"),
        ("liberation", "Liberation by size"),
        ("grains", "Grain versus particle volume"),
    ]
    if "fig-representativeness" in figures:
        contents.append(("representativeness", "Representativeness"))
    contents.append(("spectra", "Liberation spectra"))
    if "fig-stereology" in figures:
        contents.append(("stereology", "2D versus 3D liberation"))
    if "fig-cross-scale-psd" in figures:
        contents.append(("cross-scale", "Across length scales"))
    if "fig-particle-model" in figures:
        contents.append(("particle-model", "Particle model"))
    if has_accuracy:
        contents.append(("accuracy", "Accuracy against the truth"))
    contents.append(("provenance", "Provenance"))
    return contents


def _summary_sentence(context: ReportContext) -> str:
    data = context.data
    n_particles = data.summary.get("n_particles")
    shape = " × ".join(str(int(n)) for n in data.ct.shape)
    n_sections = len(data.sections)
    return (
        f"{shape} voxels of {' × '.join(f'{s:.4g}' for s in context.spacing)} µm"
        + (f", {int(n_particles):,} particles" if isinstance(n_particles, int | np.integer) else "")
        + f", {len(context.names)} phases ({', '.join(context.names)})"
        + f", {n_sections} SEM section{'s' if n_sections != 1 else ''}."
    )


def _threshold_text(threshold) -> str:
    if isinstance(threshold, int | float) and math.isfinite(threshold):
        return f"{float(threshold):g}"
    return "the threshold (0.99 by default)"


def render_report(data: ReportData) -> str:
    """The report of `data` as one HTML document (see :func:`write_report`).

    Raises
    ------
    InputError
        If a part of `data` has the wrong type or shape (one line naming the part).
    """
    context = ReportContext(data)
    figures = render_figures(context)
    # Built in document order, so the tables are numbered as they appear.
    overall, by_size = tables.liberation_tables(context)
    shown: dict[str, Table | list[Table] | None] = {
        "summary_table": tables.summary_table(context),
        "sections_table": tables.sections_table(context),
        "phases_table": tables.phases_table(context),
        "size_table": tables.size_distribution_table(context),
        "liberation_overall_table": overall,
        "liberation_table": by_size,
        "grain_table": tables.grain_volume_table(context),
        "representativeness_table": tables.representativeness_table(context),
        "spectrum_table": tables.spectrum_table(context),
        "stereology_table": tables.stereology_table(context),
        "cross_scale_registration_table": tables.cross_scale_registration_table(context),
        "cross_scale_summary_table": tables.cross_scale_summary_table(context),
        "cross_scale_table": tables.cross_scale_table(context),
        "accuracy_tables": tables.accuracy_tables(context),
        **tables.provenance_tables(context),
    }
    numbering = TableNumbering()
    for key, value in shown.items():
        if isinstance(value, list):
            shown[key] = [numbering.add(table) for table in value]
        elif value is not None:
            shown[key] = numbering.add(value)
    return _template().render(
        title=data.title,
        version=__version__,
        generated=_generated(data.provenance),
        toc=_contents(figures, bool(shown["accuracy_tables"])),
        summary_text=_summary_sentence(context),
        threshold_text=_threshold_text(context.threshold),
        figures=figures,
        section_figures=[figures[f"fig-section-{k + 1}"] for k in range(len(data.sections))],
        config_text=str(data.provenance.get("config") or ""),
        cross_scale=tables.cross_scale_text(context),
        **shown,
    )


def write_report(path: str | os.PathLike, data: ReportData) -> Path:
    """Write the HTML report of a run: one self-contained file that can be mailed.

    Figures are PNG images inside the file (``data:`` URIs), the style sheet is inline, and the
    file refers to nothing outside itself (no script, no font, no network).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (``report.html``); written atomically (temporary sibling, then rename), so a
        reader never sees half a report and an interrupted run leaves the old one in place.
    data : ReportData
        What the report shows.

    Returns
    -------
    Path
        `path`.

    Raises
    ------
    InputError
        If a part of `data` has the wrong type or shape.

    Notes
    -----
    Sections, in order: sample and run summary; orthogonal CT slices with phase and particle
    overlays; each SEM section (BSE, mineral map, registration overlay); phase volume fractions;
    ESD distributions by dominant phase (Fig. 9 of the seed paper); liberation degree by size with
    confidence intervals (Fig. 10); grain over particle volume (Fig. 11); representativeness
    (Fig. 12, if given); liberation spectra; 2D versus 3D liberation (if given); across length
    scales: a nano-CT volume registered in this overview and the size distributions of both
    (Sec. 3.5 and Fig. 12, if given); the particle model (if given); accuracy against the truth (digital twin, if given); provenance. Only the three
    central planes of the volumes are read. :func:`figure_ids` lists the figures.

    References
    ----------
    .. [1] Englisch S. et al., seed paper (``shared/seeds/000_22e43a0dd9515ebb.txt``), Figs. 9-12.
    """
    html = render_report(data)
    return write_text_atomic(path, html)
