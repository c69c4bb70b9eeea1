"""The result of EDS classification: a mineral map with confidence and modal mineralogy."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._shared import MATRIX_LABEL, UNLABELLED
from ..phases import PhaseLibrary

#: Colours of the two non-mineral classes in PNG maps: unclassified black, matrix dark grey.
UNCLASSIFIED_COLOR = (0, 0, 0)
MATRIX_COLOR = (64, 64, 64)


@dataclass(frozen=True)
class MineralMap:
    """A mineral (phase id) map of one SEM section.

    Attributes
    ----------
    phase_ids : (rows, columns) ndarray of uint8
        Phase id of the library per pixel; 0 (``UNLABELLED``) = unclassified (poor fit, too few
        counts, vacuum), 255 (``MATRIX_LABEL``) = embedding matrix (epoxy).
    confidence : (rows, columns) ndarray of float32
        Posterior probability (0..1) of the class given; 0 for unclassified pixels.
    area_fractions : dict of str to float
        Modal mineralogy: area share of each mineral among the pixels classified as a mineral
        (sums to 1 over the library; matrix and unclassified pixels excluded).
    class_names : dict of int to str
        Name of every class id that can occur, ``{0: "unclassified", 255: matrix, id: name}``.
    colors : dict of int to (int, int, int)
        RGB colour per class id, for :meth:`to_png`.
    method : str
        ``"reference"``, ``"unsupervised"`` or ``"import"``.
    elements : tuple of str
        Element maps used.
    info : dict
        Diagnostics (thresholds used, BSE calibration, cluster matching).
    """

    phase_ids: np.ndarray
    confidence: np.ndarray
    area_fractions: dict[str, float]
    class_names: dict[int, str]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    method: str = "reference"
    elements: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.phase_ids.shape)

    def pixel_counts(self) -> dict[int, int]:
        """Number of pixels per class id (every id of `class_names`)."""
        counts = np.bincount(self.phase_ids.ravel(), minlength=256)
        return {int(i): int(counts[i]) for i in self.class_names}

    def table(self):
        """Pixels and area fractions per class as a DataFrame.

        Columns ``phase_id``, ``phase``, ``pixels``, ``area_fraction`` (share among mineral
        pixels; empty for matrix and unclassified) and ``map_fraction`` (share of all pixels).
        """
        import pandas as pd

        counts = self.pixel_counts()
        total = max(self.phase_ids.size, 1)
        rows = []
        for i, name in sorted(self.class_names.items()):
            rows.append(
                {
                    "phase_id": i,
                    "phase": name,
                    "pixels": counts[i],
                    "area_fraction": self.area_fractions.get(name, np.nan)
                    if i not in (UNLABELLED, MATRIX_LABEL)
                    else np.nan,
                    "map_fraction": counts[i] / total,
                }
            )
        return pd.DataFrame(rows)

    def to_png(self, path: str | os.PathLike, colors: dict | None = None) -> Path:
        """Write the map as a colour PNG (atomically); `colors` overrides :attr:`colors`."""
        from ..io import write_label_png

        return write_label_png(path, self.phase_ids, {**self.colors, **dict(colors or {})})


def class_tables(
    library: PhaseLibrary, matrix: str | None
) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    """Class names and colours for a library plus the unclassified and matrix classes."""
    names = {UNLABELLED: "unclassified"}
    names.update({int(i): library.name_of(int(i)) for i in library.ids})
    colors = {UNLABELLED: UNCLASSIFIED_COLOR, **library.colors}
    if matrix is not None:
        names[MATRIX_LABEL] = matrix
        colors[MATRIX_LABEL] = MATRIX_COLOR
    return names, colors


def area_fractions(phase_ids: np.ndarray, library: PhaseLibrary) -> dict[str, float]:
    """Area share of each library mineral among the mineral pixels of a map (sums to 1, or all 0)."""
    counts = np.bincount(np.asarray(phase_ids).ravel(), minlength=256)
    ids = library.ids.astype(np.int64)
    total = counts[ids].sum()
    return {
        library.name_of(int(i)): float(counts[i] / total) if total else 0.0 for i in ids
    }


def import_mineral_map(
    path: str | os.PathLike,
    legend: Any = None,
    library: Any = None,
    *,
    tolerance: float = 30.0,
) -> MineralMap:
    """Read a finished mineral map (QEMSCAN, MLA, TIMA, Mineralogic export) as a `MineralMap`.

    Thin wrapper of :func:`corrtomo.io.read_mineral_map` (RGB + colour legend, or integer ids):
    every classified pixel gets confidence 1, unclassified pixels 0.

    Parameters
    ----------
    path : str or os.PathLike
        The map image.
    legend : dict, str or os.PathLike, optional
        Colour -> mineral legend (see `read_mineral_map`).
    library : PhaseLibrary, str or os.PathLike, optional
        Phase library naming the minerals.
    tolerance : float
        Largest RGB distance to a legend colour.

    Returns
    -------
    MineralMap
        ``method="import"``.

    Raises
    ------
    InputError
        As `read_mineral_map` (3D image, colours without legend, unknown minerals...).
    """
    from ..io import read_mineral_map
    from ..phases import load_phase_library

    ids = read_mineral_map(path, legend=legend, library=library, tolerance=tolerance)
    lib = None
    if library is not None:
        lib = library if isinstance(library, PhaseLibrary) else load_phase_library(library)
    if lib is not None:
        names, colors = class_tables(lib, None)
        if (ids == MATRIX_LABEL).any() and MATRIX_LABEL not in names:
            names[MATRIX_LABEL], colors[MATRIX_LABEL] = "matrix", MATRIX_COLOR
        fractions = area_fractions(ids, lib)
    else:
        present = [int(i) for i in np.unique(ids) if i != UNLABELLED]
        names = {UNLABELLED: "unclassified", **{i: f"phase {i}" for i in present}}
        colors = {UNLABELLED: UNCLASSIFIED_COLOR}
        counts = np.bincount(ids.ravel(), minlength=256)
        total = counts[present].sum()
        fractions = {names[i]: float(counts[i] / total) for i in present} if total else {}
    confidence = (ids != UNLABELLED).astype(np.float32)
    return MineralMap(
        phase_ids=ids,
        confidence=confidence,
        area_fractions=fractions,
        class_names=names,
        colors=colors,
        method="import",
        info={"source": os.fspath(path)},
    )
