"""Tables of the report: cells that show a formatted number and keep the exact value.

Every number cell carries the raw value in ``data-value`` (``repr`` of the float, so
``float(data_value) == value`` exactly) and the source column in ``data-column``; every row has a
``data-key`` (the phase name, the metric, or the row position in the source table). A test, or a
reader's script, can compare the report with the tables it came from without parsing text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Shown for a missing or NaN value.
MISSING_TEXT = "–"


@dataclass(frozen=True)
class Cell:
    """One table cell: the text shown, the exact value (``data-value``) and the source column."""

    text: str
    value: str | None = None
    column: str | None = None
    numeric: bool = False
    swatch: str | None = None


@dataclass(frozen=True)
class Row:
    """One table row and its key (``data-key``)."""

    key: str
    cells: list[Cell]


@dataclass(frozen=True)
class Table:
    """A table with an id, a caption, column headers and rows; `collapsed` tables are folded."""

    id: str
    caption: str
    headers: list[str]
    rows: list[Row]
    collapsed: bool = False
    note: str | None = None
    number: int = 0
    kind: str = "grid"


@dataclass(frozen=True)
class Column:
    """How to show one source column: header and format.

    `style` is ``"text"``, ``"int"``, ``"bool"``, ``"fixed<d>"`` (d decimals), ``"percent<d>"``
    (a fraction shown in percent with d decimals) or ``"sig<d>"`` (d significant digits).
    """

    name: str
    header: str
    style: str = "sig4"


# Headers and formats of the columns of the tables corrtomo writes; unknown columns get their
# name as header and a format from their type.
_KNOWN_COLUMNS = {
    column.name: column
    for column in (
        Column("phase", "Phase", "text"),
        Column("group", "Group", "text"),
        Column("esd_min_um", "ESD from (µm)", "sig4"),
        Column("esd_max_um", "ESD to (µm)", "sig4"),
        Column("esd_center_um", "ESD centre (µm)", "sig4"),
        Column("n_particles", "Particles", "int"),
        Column("n_free", "Free particles", "int"),
        Column("volume_free_um3", "Free volume (µm³)", "sig4"),
        Column("volume_total_um3", "Total volume (µm³)", "sig4"),
        Column("liberation_degree", "LD", "fixed3"),
        Column("ld_ci_low", "LD CI low", "fixed3"),
        Column("ld_ci_high", "LD CI high", "fixed3"),
        Column("number_fraction", "Number fraction", "fixed4"),
        Column("volume_fraction", "Volume fraction", "fixed4"),
        Column("mass_fraction", "Mass fraction", "fixed4"),
        Column("cumulative_number", "Cum. number", "fixed4"),
        Column("cumulative_volume", "Cum. volume", "fixed4"),
        Column("cumulative_mass", "Cum. mass", "fixed4"),
        Column("grade_class", "Grade class (%)", "text"),
        Column("grade_min_pct", "Grade from (%)", "fixed0"),
        Column("grade_max_pct", "Grade to (%)", "fixed0"),
        Column("particle_volume_um3", "Particle volume (µm³)", "sig4"),
        Column("phase_volume_um3", "Phase volume (µm³)", "sig4"),
        Column("phase_volume_fraction", "Share of phase", "fixed4"),
        Column("cumulative_recovery", "Cum. recovery", "fixed4"),
        Column("cumulative_grade", "Cum. grade", "fixed4"),
        Column("particle_volume_min_um3", "Particle volume from (µm³)", "sig4"),
        Column("particle_volume_max_um3", "Particle volume to (µm³)", "sig4"),
        Column("n_grains", "Grains", "int"),
        Column("particle_volume_mean_um3", "Mean particle volume (µm³)", "sig4"),
        Column("grain_volume_mean_um3", "Mean grain volume (µm³)", "sig4"),
        Column("grain_volume_std_um3", "Grain volume s.d. (µm³)", "sig4"),
        Column("grain_volume_sem_um3", "Grain volume s.e. (µm³)", "sig4"),
        Column("n_pieces", "Pieces", "int"),
        Column("mean", "Mean per piece", "sig4"),
        Column("std", "S.d.", "sig4"),
        Column("sem", "S.e.", "sig4"),
        Column("ci_low", "CI low", "sig4"),
        Column("ci_high", "CI high", "sig4"),
        Column("total", "Total", "int"),
        Column("n_particles_3d", "Particles 3D", "int"),
        Column("ld_3d", "LD 3D", "fixed3"),
        Column("n_particles_2d", "Section particles 2D", "int"),
        Column("ld_2d", "LD 2D", "fixed3"),
        Column("ld_difference", "2D − 3D", "fixed3"),
        Column("stage", "Stage", "text"),
        Column("seconds", "Time (s)", "fixed2"),
        Column("peak_memory_mb", "Peak memory (MB)", "fixed1"),
        Column("skipped", "Cached", "bool"),
    )
}


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def format_number(value: float, style: str) -> str:
    """Text of a finite number in one of the :class:`Column` styles."""
    if style.startswith("fixed"):
        return f"{value:,.{int(style[5:])}f}"
    if style.startswith("percent"):
        return f"{100.0 * value:.{int(style[7:])}f} %"
    digits = int(style[3:]) if style.startswith("sig") else 4
    magnitude = abs(value)
    if magnitude == 0:
        return "0"
    if 1e-3 <= magnitude < 1e7:
        # d significant digits without an exponent: 0.7071, 1.414, 123.5, 12,346
        decimals = max(0, digits - 1 - math.floor(math.log10(magnitude)))
        return f"{value:,.{decimals}f}"
    return f"{value:.{digits - 1}e}"


def value_cell(value: Any, style: str = "sig4", *, column: str | None = None) -> Cell:
    """A cell for one value: text in `style`, exact value in ``data-value``.

    Floats keep ``repr(float(value))`` (``"nan"``, ``"inf"`` included); integers ``str(int)``;
    booleans ``"true"``/``"false"``; text has no ``data-value``.
    """
    if isinstance(value, bool | np.bool_):
        return Cell("yes" if value else "no", "true" if value else "false", column)
    if _is_missing(value):
        return Cell(MISSING_TEXT, None if value is None else "nan", column, numeric=True)
    if isinstance(value, numbers.Integral):
        return Cell(f"{int(value):,}", str(int(value)), column, numeric=True)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return Cell("∞" if number > 0 else "−∞", repr(number), column, numeric=True)
        if style == "int":
            style = "sig6"
        text = format_number(number, "sig4" if style in ("text", "bool") else style)
        return Cell(text, repr(number), column, numeric=True)
    if isinstance(value, str):
        return Cell(value, None, column)
    return Cell(json.dumps(value, default=str), None, column)


def _column_for(frame: pd.DataFrame, name: str) -> Column:
    if name in _KNOWN_COLUMNS:
        return _KNOWN_COLUMNS[name]
    dtype = frame[name].dtype
    if pd.api.types.is_bool_dtype(dtype):
        style = "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        style = "int"
    elif pd.api.types.is_float_dtype(dtype):
        style = "sig4"
    else:
        style = "text"
    return Column(name, name, style)


def frame_table(
    frame: pd.DataFrame,
    *,
    table_id: str,
    caption: str,
    columns: Sequence[str] | None = None,
    collapsed: bool = False,
    note: str | None = None,
    colors: Mapping[str, str] | None = None,
) -> Table:
    """A table of a DataFrame, one row per frame row (``data-key`` = row position).

    Parameters
    ----------
    frame : DataFrame
        The source table; its values are shown unchanged (formatted) with the exact value kept.
    table_id, caption : str
        HTML id and caption.
    columns : sequence of str, optional
        Columns to show, in order (default all).
    collapsed : bool
        Fold the table (a ``<details>`` element) when it is long.
    note : str, optional
        A sentence shown under the table.
    colors : mapping of phase name to colour, optional
        A colour swatch in front of phase names.
    """
    names = (
        [str(c) for c in frame.columns]
        if columns is None
        else [c for c in columns if c in frame.columns]
    )
    specs = [_column_for(frame, name) for name in names]
    rows = []
    values = [frame[name].tolist() for name in names]
    for position in range(len(frame)):
        cells = []
        for spec, column_values in zip(specs, values, strict=True):
            cell = value_cell(column_values[position], spec.style, column=spec.name)
            if colors is not None and spec.name in ("phase", "group") and cell.text in colors:
                cell = Cell(cell.text, cell.value, cell.column, cell.numeric, colors[cell.text])
            cells.append(cell)
        rows.append(Row(str(position), cells))
    return Table(table_id, caption, [spec.header for spec in specs], rows, collapsed, note)


def key_value_table(
    items: Iterable[tuple[str, str, Any, str]],
    *,
    table_id: str,
    caption: str,
    headers: tuple[str, str] = ("Quantity", "Value"),
    note: str | None = None,
) -> Table:
    """A two-column table from ``(key, label, value, style)`` items (``data-key`` = key)."""
    rows = [
        Row(key, [Cell(label), value_cell(value, style, column="value")])
        for key, label, value, style in items
    ]
    return Table(table_id, caption, list(headers), rows, False, note, kind="key-value")


def mapping_table(
    mapping: Mapping[str, Any],
    *,
    table_id: str,
    caption: str,
    key_header: str,
    value_header: str = "Value",
    style: str = "sig4",
    colors: Mapping[str, str] | None = None,
) -> Table:
    """A table of a mapping: one row per key; nested mappings give one column per inner key."""
    colors = colors or {}
    nested = [v for v in mapping.values() if isinstance(v, Mapping)]
    if nested:
        inner = list(dict.fromkeys(k for v in nested for k in v))
        headers = [key_header, *[str(k) for k in inner]]
        rows = []
        for key, value in mapping.items():
            cells = [Cell(str(key), swatch=colors.get(str(key)))]
            for k in inner:
                item = value.get(k) if isinstance(value, Mapping) else None
                cells.append(value_cell(item, style, column=str(k)))
            rows.append(Row(str(key), cells))
        return Table(table_id, caption, headers, rows)
    rows = [
        Row(
            str(key),
            [Cell(str(key), swatch=colors.get(str(key))), value_cell(value, style, column="value")],
        )
        for key, value in mapping.items()
    ]
    return Table(table_id, caption, [key_header, value_header], rows)


@dataclass
class TableNumbering:
    """Numbers the tables in document order."""

    count: int = 0
    tables: list[Table] = field(default_factory=list)

    def add(self, table: Table) -> Table:
        self.count += 1
        numbered = dataclasses.replace(table, number=self.count)
        self.tables.append(numbered)
        return numbered
