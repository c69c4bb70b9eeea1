"""The tables of a report, built from its data (the numbers shown are the numbers given)."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from . import _figures_charts as charts
from ._context import ReportContext
from ._data import CROSS_SCALE_COLUMNS
from ._tables import Cell, Row, Table, frame_table, key_value_table, mapping_table, value_cell

_SUBSCRIPT_DIGITS = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def pretty_formula(formula: str) -> str:
    """A chemical formula with subscript counts, as a mineralogist writes it: CaMg(CO₃)₂.

    Only whole-number counts after an element or a bracket become subscripts; a fractional
    count (Fe0.5) stays as written.
    """
    return re.sub(
        r"(?<=[A-Za-z)\]])\d+(?![\d.])",
        lambda match: match.group(0).translate(_SUBSCRIPT_DIGITS),
        formula,
    )


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def summary_table(context: ReportContext) -> Table:
    data, summary = context.data, context.data.summary
    shape = tuple(int(n) for n in data.ct.shape)
    spacing = context.spacing
    extent = np.asarray(shape) * spacing
    items: list[tuple[str, str, Any, str]] = [
        ("title", "Sample", data.title, "text"),
        ("voxel_size_z_um", "Voxel size z (µm)", float(spacing[0]), "sig4"),
        ("voxel_size_y_um", "Voxel size y (µm)", float(spacing[1]), "sig4"),
        ("voxel_size_x_um", "Voxel size x (µm)", float(spacing[2]), "sig4"),
        ("shape", "Volume (z × y × x voxels)", " × ".join(str(n) for n in shape), "text"),
        ("extent", "Volume (z × y × x µm)", " × ".join(f"{e:.4g}" for e in extent), "text"),
        ("n_particles", "Particles", summary.get("n_particles"), "int"),
    ]
    optional = (
        ("n_particles_counted", "Particles counted (not touching the border)", "int"),
        ("n_grains", "Grains", "int"),
        ("threshold", "Liberation threshold (volume fraction)", "fixed3"),
        ("exclude_border", "Border particles excluded", "bool"),
        ("min_esd_um", "Minimum ESD (µm)", "sig4"),
        ("bootstrap_replicates", "Bootstrap replicates", "int"),
    )
    items += [(key, label, summary[key], style) for key, label, style in optional if key in summary]
    items.append(("phases", "Phases", ", ".join(context.names), "text"))
    items.append(("n_sections", "SEM sections", len(data.sections), "int"))
    if "version" in summary:
        items.append(
            ("version", "corrtomo version of the analysis", str(summary["version"]), "text")
        )
    return key_value_table(items, table_id="table-summary", caption="Sample and run summary.")


def phases_table(context: ReportContext) -> Table:
    data, summary = context.data, context.data.summary
    library = data.library
    fractions = summary.get("phase_volume_fractions", {}) or {}
    ld = summary.get("liberation_degree", {}) or {}
    names = [*library.names, *(n for n in fractions if n not in library)]
    dominant = (
        data.particles_table["dominant_phase"].astype(str).value_counts()
        if "dominant_phase" in data.particles_table.columns
        else pd.Series(dtype=np.int64)
    )
    grains = (
        data.grains_table["phase"].astype(str).value_counts()
        if "phase" in data.grains_table.columns
        else pd.Series(dtype=np.int64)
    )
    rows = []
    for name in names:
        phase = library.by_name(name) if name in library else None
        rows.append(
            Row(
                name,
                [
                    Cell(name, column="phase", swatch=context.colors.get(name)),
                    value_cell(None if phase is None else phase.id, "int", column="id"),
                    Cell("" if phase is None else pretty_formula(phase.formula), column="formula"),
                    value_cell(
                        None if phase is None else phase.density, "fixed2", column="density"
                    ),
                    value_cell(fractions.get(name), "percent2", column="volume_fraction"),
                    value_cell(ld.get(name), "fixed3", column="liberation_degree"),
                    value_cell(int(dominant.get(name, 0)), "int", column="n_dominant"),
                    value_cell(int(grains.get(name, 0)), "int", column="n_grains"),
                ],
            )
        )
    headers = [
        "Phase",
        "Id",
        "Formula",
        "Density (g/cm³)",
        "Volume fraction",
        "LD (all sizes)",
        "Particles dominated",
        "Grains",
    ]
    return Table(
        "table-phases",
        "Phases: library entry, volume fraction of all particle voxels and liberation degree over "
        "all sizes (summary), particles whose dominant phase it is, grains.",
        headers,
        rows,
        note="A phase of the library that the sample lacks has no volume fraction or LD (–).",
    )


def liberation_tables(context: ReportContext) -> tuple[Table, Table]:
    liberation = context.data.liberation
    if "esd_min_um" in liberation.columns:
        overall = liberation[liberation["esd_min_um"].isna()]
    else:
        overall = liberation
    columns = [
        c
        for c in (
            "phase",
            "n_particles",
            "n_free",
            "volume_free_um3",
            "volume_total_um3",
            "liberation_degree",
            "ld_ci_low",
            "ld_ci_high",
        )
        if c in liberation.columns
    ]
    overall_table = frame_table(
        overall.reset_index(drop=True),
        table_id="table-liberation-overall",
        caption="Liberation degree over all sizes (liberation table).",
        columns=columns,
        colors=context.colors,
    )
    full_table = frame_table(
        liberation.reset_index(drop=True),
        table_id="table-liberation",
        caption="Liberation table: all sizes (empty bounds), then each ESD class, per phase.",
        collapsed=len(liberation) > 12,
        colors=context.colors,
    )
    return overall_table, full_table


def sections_table(context: ReportContext) -> Table | None:
    sections = context.data.sections
    if not sections:
        return None
    rows = []
    for section in sections:
        shape = np.shape(section.mineral_map)
        rows.append(
            Row(
                section.name,
                [
                    Cell(section.name, column="name"),
                    Cell(f"{shape[0]} × {shape[1]}", column="shape"),
                    value_cell(section.bse is not None, column="has_bse"),
                    value_cell(section.ct_plane is not None, column="registered"),
                    value_cell(section.score, "fixed3", column="score"),
                    value_cell(section.pose_error_voxels, "fixed2", column="pose_error_voxels"),
                ],
            )
        )
    headers = [
        "Section",
        "Pixels (rows × columns)",
        "BSE",
        "Registered",
        "Score",
        "Pose error (voxels)",
    ]
    return Table("table-sections", "SEM sections and their registration.", headers, rows)


_ACCURACY_LABELS = {
    "mean_phase_iou": ("Mean phase IoU", "fixed3"),
    "phase_iou": ("Phase IoU (intersection over union)", "fixed3"),
    "particle_f1": ("Particle F1 score", "fixed3"),
    "particle_precision": ("Particle precision", "fixed3"),
    "particle_recall": ("Particle recall", "fixed3"),
    "ld_error": ("Liberation degree error (estimate − truth)", "fixed3"),
    "volume_fraction_error": ("Phase volume fraction error (estimate − truth)", "fixed4"),
    "median_esd_error": ("Median ESD error (µm)", "sig4"),
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "item"


def _label(key: str) -> tuple[str, str]:
    if key in _ACCURACY_LABELS:
        return _ACCURACY_LABELS[key]
    text = str(key).replace("_", " ")
    return text[:1].upper() + text[1:], "sig4"


def accuracy_tables(context: ReportContext) -> list[Table]:
    accuracy = context.data.accuracy
    if not accuracy:
        return []
    scalars = [(str(k), v) for k, v in accuracy.items() if not isinstance(v, dict)]
    tables = []
    if scalars:
        items = [(key, _label(key)[0], value, _label(key)[1]) for key, value in scalars]
        tables.append(
            key_value_table(
                items,
                table_id="table-accuracy",
                caption="Accuracy against the truth.",
                headers=("Metric", "Value"),
            )
        )
    for key, value in accuracy.items():
        if isinstance(value, dict):
            label, style = _label(str(key))
            tables.append(
                mapping_table(
                    value,
                    table_id=f"table-accuracy-{_slug(key)}",
                    caption=f"{label}.",
                    key_header="Phase" if all(str(k) in context.colors for k in value) else "Item",
                    style=style,
                    colors=context.colors,
                )
            )
    return tables


def provenance_tables(context: ReportContext) -> dict[str, Any]:
    provenance = context.data.provenance
    out: dict[str, Any] = {
        "stages_table": None,
        "versions_table": None,
        "other_provenance_table": None,
    }
    stages = provenance.get("stages")
    if stages:
        frame = pd.DataFrame(list(stages))
        out["stages_table"] = frame_table(
            frame,
            table_id="table-stages",
            caption="Pipeline stages: run time, peak memory, cached.",
        )
    versions = provenance.get("versions")
    if versions:
        out["versions_table"] = mapping_table(
            {str(k): str(v) for k, v in dict(versions).items()},
            table_id="table-versions",
            caption="Software versions.",
            key_header="Package",
            value_header="Version",
            style="text",
        )
    others = [
        (str(k), v)
        for k, v in provenance.items()
        if k not in ("config", "versions", "stages", "created")
    ]
    if others:
        items = [
            (
                key,
                key,
                value,
                "sig4",
            )
            for key, value in others
        ]
        out["other_provenance_table"] = key_value_table(
            items,
            table_id="table-provenance",
            caption="Other provenance.",
            headers=("Item", "Value"),
        )
    return out


def size_distribution_table(context: ReportContext) -> Table | None:
    """The Fig. 9 distributions, one row per (group, ESD class); None if they cannot be made."""
    distribution = context.size_distribution
    if not isinstance(distribution, pd.DataFrame):
        return None
    return frame_table(
        distribution,
        table_id="table-size-distribution",
        caption="ESD distributions by group.",
        collapsed=True,
        colors=context.colors,
    )


def grain_volume_table(context: ReportContext) -> Table | None:
    """The Fig. 11 curves of every phase, one row per (phase, particle-volume class)."""
    curves = [
        curve.assign(phase=name)
        for name, curve in context.grain_curves.items()
        if isinstance(curve, pd.DataFrame)
    ]
    if not curves:
        return None
    return frame_table(
        pd.concat(curves, ignore_index=True),
        table_id="table-grain-particle-volume",
        caption="Mean grain volume per particle-volume class.",
        collapsed=True,
        columns=["phase", *curves[0].columns.drop("phase")],
        colors=context.colors,
    )


def representativeness_table(context: ReportContext) -> Table | None:
    """The Fig. 12 table, as given."""
    table = context.data.representativeness
    if table is None:
        return None
    return frame_table(
        table.reset_index(drop=True),
        table_id="table-representativeness",
        caption="Particle counts per ESD interval over pieces of the volume.",
    )


def spectrum_table(context: ReportContext) -> Table | None:
    """The liberation spectra, 12 grade classes per phase; None if they cannot be made."""
    spectrum = context.spectrum
    if not isinstance(spectrum, pd.DataFrame):
        return None
    return frame_table(
        spectrum,
        table_id="table-liberation-spectrum",
        caption="Liberation spectra.",
        collapsed=True,
        colors=context.colors,
    )


def stereology_table(context: ReportContext) -> Table | None:
    """The 2D-versus-3D comparison, as given."""
    table = context.data.stereology
    if table is None:
        return None
    return frame_table(
        table.reset_index(drop=True),
        table_id="table-stereology",
        caption="Liberation degree, 3D against 2D sections.",
        collapsed=len(table) > 12,
        colors=context.colors,
    )


# --------------------------------------------------------------------------------------------
# across length scales
# --------------------------------------------------------------------------------------------


def _first_number(value: Any) -> float | None:
    """The one number of an isotropic voxel size given as a number or a (3,) list; None if the
    size is missing or anisotropic."""
    if value is None:
        return None
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 0 or not np.all(values == values[0]):
        return None
    return float(values[0])


def _voxel_size_item(key: str, label: str, value: Any) -> tuple[str, str, Any, str]:
    number = _first_number(value) if value is not None else None
    if number is not None:
        return key, label, number, "sig4"
    if value is None:
        return key, label, None, "sig4"
    return key, label, " × ".join(f"{v:.4g}" for v in np.asarray(value, float).ravel()), "text"


def cross_scale_registration_table(context: ReportContext) -> Table | None:
    """Where the nano volume lies in the overview: the numbers of the volume registration."""
    cross = context.data.cross_scale
    if cross is None:
        return None
    registration = cross.registration
    fixed_size = registration.get("fixed_voxel_size_um")
    moving_size = registration.get("moving_voxel_size_um")
    fixed_one, moving_one = _first_number(fixed_size), _first_number(moving_size)
    ratio = fixed_one / moving_one if fixed_one and moving_one else None
    confident = bool(registration["confident"])
    items: list[tuple[str, str, Any, str]] = [
        ("confident", "Confident match", confident, "bool"),
        ("score", "Score (masked NCC at the found pose)", registration["score"], "fixed3"),
        (
            "runner_up",
            "Best score elsewhere (runner-up)",
            registration.get("runner_up"),
            "fixed3",
        ),
        ("scale", "Scale (nano voxel edge in micro voxels)", registration["scale"], "sig4"),
        ("voxel_size_ratio", "Voxel-size ratio (micro / nano)", ratio, "sig4"),
    ]
    if "tilt_deg" in registration:
        items.append(
            ("tilt_deg", "Tilt of the nano z axis (°)", registration["tilt_deg"], "fixed2")
        )
    items.append(_voxel_size_item("fixed_voxel_size_um", "Micro voxel size (µm)", fixed_size))
    items.append(_voxel_size_item("moving_voxel_size_um", "Nano voxel size (µm)", moving_size))
    for key, label in (
        ("fixed_shape", "Micro volume (z × y × x voxels)"),
        ("moving_shape", "Nano volume (z × y × x voxels)"),
    ):
        if registration.get(key) is not None:
            shape = " × ".join(str(int(n)) for n in registration[key])
            items.append((key, label, shape, "text"))
    if "field_of_view_radius_voxels" in registration:
        items.append(
            (
                "field_of_view_radius_voxels",
                "Pillar radius (nano voxels; none: whole box compared)",
                registration["field_of_view_radius_voxels"],
                "sig4",
            )
        )
    if registration.get("method"):
        items.append(("method", "Method", str(registration["method"]), "text"))
    if cross.pose_error_voxels is not None:
        items.append(
            (
                "pose_error_voxels",
                "Pose error against the truth (micro voxels, worst corner)",
                cross.pose_error_voxels,
                "fixed2",
            )
        )
    table = key_value_table(
        items,
        table_id="table-cross-scale-registration",
        caption="Registration of the nano-CT volume inside the micro-CT overview.",
        note=(
            "The scale times the voxel-size ratio is 1 when both voxel sizes are right. A match "
            "is confident when its score is high enough and clearly beats the best pose elsewhere."
        ),
    )
    if confident:
        return table
    rows = [
        Row(row.key, [row.cells[0], Cell("NO", "false", "value")])
        if row.key == "confident"
        else row
        for row in table.rows
    ]
    return dataclasses.replace(table, rows=rows)


def _cross_scale_rows(table: pd.DataFrame, source: str) -> pd.DataFrame:
    return table[table["source"].astype(str) == source]


def cross_scale_summary_table(context: ReportContext) -> Table | None:
    """Per source: particles, median ESD, share below the micro cut-off (the summary given)."""
    cross = context.data.cross_scale
    if cross is None:
        return None
    table = cross.table
    summary = table.attrs.get("summary") or {}
    sources = [str(s) for s in dict.fromkeys(table["source"])]
    colors = charts.cross_scale_colors(sources)
    rows = []
    for source in sources:
        given = summary.get(source) if isinstance(summary.get(source), dict) else None
        cut = _cross_scale_rows(table, source)["cutoff_um"]
        if given is None:
            given = {"n_particles": _cross_scale_rows(table, source)["n_particles"].sum()}
        rows.append(
            Row(
                source,
                [
                    Cell(source, column="source", swatch=colors[source]),
                    value_cell(given.get("n_particles"), "int", column="n_particles"),
                    value_cell(given.get("median_esd_um"), "sig4", column="median_esd_um"),
                    value_cell(
                        given.get("share_below_micro_cutoff"),
                        "percent1",
                        column="share_below_micro_cutoff",
                    ),
                    value_cell(cut.iloc[0] if len(cut) else None, "sig4", column="cutoff_um"),
                ],
            )
        )
    notes = [
        "micro pieces: all particles of the overview (counted once each); its densities in the "
        "figure are means over nano-sized pieces"
    ]
    if isinstance(summary.get("n_pieces"), int | np.integer):
        notes[0] += f" ({int(summary['n_pieces']):,} pieces)"
    if not summary:
        notes.append(
            "no per-source summary was given (table.attrs['summary']), so particles are the sums "
            "of the interval counts and the median ESD and the share below the cut-off are unknown"
        )
    micro_cut = summary.get("micro_cutoff_um")
    below = "Below the micro cut-off"
    if isinstance(micro_cut, int | float) and math.isfinite(micro_cut):
        below += f" ({float(micro_cut):.3g} µm)"
    headers = ["Source", "Particles", "Median ESD (µm)", below, "Cut-off of the scan (µm)"]
    return Table(
        "table-cross-scale-summary",
        "Particles of each view: count, median ESD and share of particles smaller than the "
        "micro-CT resolution cut-off.",
        headers,
        rows,
        note="; ".join(notes) + ".",
    )


def cross_scale_table(context: ReportContext) -> Table | None:
    """The cross-scale size distributions, as given (collapsed)."""
    cross = context.data.cross_scale
    if cross is None:
        return None
    table = cross.table.reset_index(drop=True)
    return frame_table(
        table,
        table_id="table-cross-scale",
        caption="Particle number density per ESD interval and source (cross_scale_psd).",
        columns=[*CROSS_SCALE_COLUMNS, *(c for c in table.columns if c not in CROSS_SCALE_COLUMNS)],
        collapsed=True,
    )


def cross_scale_text(context: ReportContext) -> dict[str, Any] | None:
    """What the template writes around the cross-scale tables: the warning for a match that is
    not confident and a sentence with the numbers of the comparison."""
    cross = context.data.cross_scale
    if cross is None:
        return None
    registration = cross.registration
    confident = bool(registration["confident"])
    warning = None
    if not confident:
        runner_up = registration.get("runner_up")
        versus = (
            f" against {float(runner_up):.3f} elsewhere"
            if isinstance(runner_up, int | float) and math.isfinite(runner_up)
            else ""
        )
        warning = (
            "The registration is not confident (score "
            f"{float(registration['score']):.3f}{versus}): the nano volume may be placed at the "
            "wrong position, so the micro-CT region compared with it below may show another part "
            "of the sample. Check the overlay before trusting the comparison."
        )
    summary = cross.table.attrs.get("summary") or {}
    nano, region = summary.get("nano"), summary.get("micro region")
    finding = None
    if isinstance(nano, dict) and isinstance(region, dict):
        micro_cut = summary.get("micro_cutoff_um")

        def described(part: dict, unit: str) -> str:
            text = f"{int(part['n_particles']):,}{unit}"
            median = part.get("median_esd_um")
            if isinstance(median, int | float) and math.isfinite(median):
                text += f" (median ESD {float(median):.3g} µm)"
            return text

        parts = [
            f"Here the nano volume holds {described(nano, ' particles')} and the same region of "
            f"the overview {described(region, '')}"
        ]
        share = nano.get("share_below_micro_cutoff")
        if isinstance(share, int | float) and math.isfinite(share) and micro_cut is not None:
            parts.append(
                f"{100.0 * share:.1f} % of the nano particles are smaller than the micro-CT "
                f"cut-off of {float(micro_cut):.3g} µm"
            )
        finding = "; ".join(parts) + "."
    return {"confident": confident, "warning": warning, "finding": finding}
