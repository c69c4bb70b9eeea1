"""Colour legends of automated-mineralogy maps: files or dicts, colour -> mineral name or id."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

from ._colors import parse_color

BACKGROUND_NAMES = frozenset(
    {
        "unclassified",
        "background",
        "unknown",
        "none",
        "epoxy",
        "resin",
        "mount",
        "no data",
        "nodata",
        "void",
        "pore",
        "porosity",
        "not classified",
        "other",
    }
)
_COLOUR_FIELDS = ("color", "colour", "hex", "rgb", "colour_hex", "color_hex")
_NAME_FIELDS = ("name", "mineral", "phase", "class", "label", "mineral_name", "phase_name")
_ID_FIELDS = ("id", "phase_id", "value", "index")


def load_legend(legend: Any) -> list[tuple[Any, Any]]:
    """Read a mineral-map legend into ``(key, target)`` pairs.

    Parameters
    ----------
    legend : dict, list of dict, str or os.PathLike
        * a dict colour -> mineral (``{"#ff0000": "calcite", "0,128,0": 2, (0, 0, 255): "talc"}``)
          or mineral -> colour (``{"calcite": "#ff0000"}``), or integer value -> mineral for
          single-channel maps (``{1: "calcite"}``);
        * a list of records with a colour field (``color``, ``colour``, ``hex``, ``rgb`` or
          ``r``, ``g``, ``b``) and a ``name``/``mineral``/``phase`` or ``id`` field;
        * a ``.json``/``.yaml``/``.yml`` file holding either (optionally under a ``legend`` or
          ``phases`` key), or a ``.csv``/``.tsv`` file with a header naming those fields.

    Returns
    -------
    list of (key, target)
        key: (3,) tuple of int colour, or int value; target: mineral name (str) or id (int).

    Raises
    ------
    InputError
        If the legend cannot be read, is empty, or an entry has neither colour nor mineral.
    """
    source = os.fspath(legend) if isinstance(legend, str | os.PathLike) else "legend"
    if isinstance(legend, str | os.PathLike):
        legend = _read_legend_file(Path(legend))
    if isinstance(legend, dict) and len(legend) == 1:
        ((key, value),) = legend.items()
        if str(key).lower() in ("legend", "phases", "minerals", "classes") and isinstance(
            value, list | dict
        ):
            legend = value
    if isinstance(legend, dict):
        entries = [_pair(key, value, source) for key, value in legend.items()]
    elif isinstance(legend, list):
        entries = [_record(record, source) for record in legend]
    else:
        raise InputError(f"cannot read a legend from a {type(legend).__name__}", source=source)
    if not entries:
        raise InputError("legend is empty", source=source)
    seen: dict[Any, Any] = {}
    for key, target in entries:
        if key in seen and seen[key] != target:
            raise InputError(f"gives {key} both {seen[key]!r} and {target!r}", source=source)
        seen[key] = target
    return entries


def _read_legend_file(path: Path) -> Any:
    if not path.is_file():
        raise InputError("no such legend file", source=path)
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".json":
            return json.loads(text)
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix in (".csv", ".tsv", ".txt"):
            dialect = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
            rows = list(csv.DictReader(text.splitlines(), dialect=dialect))
            return [
                {str(k).strip().lower(): (v or "").strip() for k, v in row.items() if k}
                for row in rows
            ]
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot read the legend ({error})", source=path) from None
    raise InputError("legend must be a .csv, .tsv, .json, .yaml or .yml file", source=path)


def _strict_colour(value: Any) -> tuple[int, int, int] | None:
    """A colour given as hex or numbers (never a name, so minerals like 'olive' stay names)."""
    if isinstance(value, str):
        text = value.strip()
        if not (text.startswith("#") or "," in text or len(text.split()) in (3, 4)):
            if not (len(text) == 6 and all(c in "0123456789abcdefABCDEF" for c in text)):
                return None
    elif not isinstance(value, list | tuple):
        return None
    try:
        return tuple(int(v) for v in parse_color(value))
    except InputError:
        return None


def _target(value: Any, source: str) -> Any:
    if isinstance(value, bool):
        raise InputError(
            f"legend target {value!r} is neither a mineral name nor an id", source=source
        )
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.isdigit() else text
    raise InputError(f"legend target {value!r} is neither a mineral name nor an id", source=source)


def _pair(key: Any, value: Any, source: str) -> tuple[Any, Any]:
    colour = _strict_colour(key)
    if colour is not None:
        return colour, _target(value, source)
    colour = _strict_colour(value)
    if colour is not None:
        return colour, _target(key, source)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return int(key), _target(value, source)
    if isinstance(key, str) and key.strip().isdigit():
        return int(key), _target(value, source)
    raise InputError(f"legend entry {key!r}: {value!r} has no colour", source=source)


def _record(record: Any, source: str) -> tuple[Any, Any]:
    if not isinstance(record, dict):
        raise InputError(f"legend entry {record!r} is not a record", source=source)
    fields = {str(k).strip().lower(): v for k, v in record.items()}
    colour = None
    for name in _COLOUR_FIELDS:
        if fields.get(name) not in (None, ""):
            colour = tuple(int(v) for v in parse_color(fields[name], source=source))
            break
    if colour is None:
        channels = [
            fields.get(c, fields.get(long))
            for c, long in (("r", "red"), ("g", "green"), ("b", "blue"))
        ]
        if all(v not in (None, "") for v in channels):
            colour = tuple(
                int(v) for v in parse_color([int(float(v)) for v in channels], source=source)
            )
    if colour is None:
        raise InputError(f"legend entry {record!r} has no colour", source=source)
    for name in _NAME_FIELDS + _ID_FIELDS:
        if fields.get(name) not in (None, ""):
            return colour, _target(fields[name], source)
    raise InputError(f"legend entry {record!r} names no mineral or id", source=source)


def as_library(library: Any) -> Any:
    """A PhaseLibrary from a library object, a file path or a preset name."""
    if isinstance(library, str | os.PathLike):
        from corrtomo.phases import load_phase_library

        return load_phase_library(library)
    return library


def resolve_targets(targets: list[Any], library: Any, legend: Any) -> list[int]:
    """Turn legend targets (mineral names or ids) into phase ids 0..255."""
    source = os.fspath(legend) if isinstance(legend, str | os.PathLike) else "legend"
    phases = None if library is None else as_library(library)
    lookup: dict[str, int] = {}
    if phases is not None:
        lookup = {str(name).lower(): int(phases.id_of(name)) for name in phases.names}
    ids = []
    for target in targets:
        if isinstance(target, int):
            if not 0 <= target <= 255:
                raise InputError(f"phase id {target} is outside 0..255", source=source)
            if phases is not None and target and target not in set(phases.ids):
                raise InputError(f"phase id {target} is not in the phase library", source=source)
            ids.append(target)
            continue
        name = target.strip().lower()
        if name in lookup:
            ids.append(lookup[name])
        elif name in BACKGROUND_NAMES:
            ids.append(0)
        elif phases is None:
            raise InputError(
                f"names minerals ({target!r}); pass the phase library (library=) to map them to ids",
                source=source,
            )
        else:
            known = ", ".join(str(n) for n in phases.names)
            raise InputError(
                f"mineral {target!r} is not in the phase library ({known})", source=source
            )
    return ids
