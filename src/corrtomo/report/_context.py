"""What one report is drawn from: the checked data and the analyses derived from it, once each."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pandas as pd

from .._shared import InputError
from ..liberation import grain_particle_volume, liberation_spectrum, size_distribution
from ._data import ReportData, check_report_data

#: Colours of phases that the library does not name (matplotlib's tab10 without its grey).
_FALLBACK_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
#: Name of phase id 0 inside particles in corrtomo.measure tables; not a mineral.
_UNASSIGNED = "unassigned"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class ReportContext:
    """The data of one report and what is derived from it, each part computed once."""

    def __init__(self, data: ReportData):
        self.data = data
        self.spacing = check_report_data(data)
        summary = data.summary
        self.exclude_border = bool(summary.get("exclude_border", True))
        self.min_esd_um = float(summary.get("min_esd_um", 0.0) or 0.0)
        self.threshold = summary.get("threshold")

    @functools.cached_property
    def names(self) -> list[str]:
        """Phase names of the analysis: the particle table's ``vf_`` columns, else the library."""
        columns = [str(c) for c in self.data.particles_table.columns]
        names = [c[3:] for c in columns if c.startswith("vf_") and c != f"vf_{_UNASSIGNED}"]
        return names or list(self.data.library.names)

    @functools.cached_property
    def colors(self) -> dict[str, str]:
        """Hex colour of every phase name: the library's, or a fallback for unknown names."""
        library = self.data.library
        colors = {phase.name: _hex(library.colors[phase.id]) for phase in library}
        extra = [
            n
            for n in [*self.names, *(self.data.summary.get("phase_volume_fractions") or {})]
            if n not in colors
        ]
        for k, name in enumerate(dict.fromkeys(extra)):
            colors[name] = _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)]
        return colors

    @functools.cached_property
    def densities(self) -> dict[str, float] | None:
        """Densities of the analysed phases from the library; None if one is not in it."""
        library = self.data.library
        if not all(name in library for name in self.names):
            return None
        return {name: float(library.by_name(name).density) for name in self.names}

    @functools.cached_property
    def size_edges(self) -> np.ndarray | None:
        """ESD class edges of the liberation table, so Figs. 9 and 10 share their classes."""
        liberation = self.data.liberation
        if "esd_min_um" not in liberation.columns or "phase" not in liberation.columns:
            return None
        classes = liberation[liberation["esd_min_um"].notna()]
        if classes.empty:
            return None
        first = classes[classes["phase"] == classes["phase"].iloc[0]]
        edges = np.append(
            first["esd_min_um"].to_numpy(dtype=np.float64),
            first["esd_max_um"].to_numpy(dtype=np.float64)[-1],
        )
        if np.all(np.isfinite(edges)) and edges[0] > 0 and np.all(np.diff(edges) > 0):
            return edges
        return None

    def _filter(self) -> dict[str, Any]:
        return {"exclude_border": self.exclude_border, "min_esd_um": self.min_esd_um}

    @functools.cached_property
    def size_distribution(self) -> pd.DataFrame | str:
        """Fig. 9 table, or why it cannot be made."""
        try:
            return size_distribution(
                self.data.particles_table,
                densities=self.densities,
                phases=self.names,
                size_bins_um=self.size_edges,
                **self._filter(),
            )
        except InputError as error:
            return error.reason

    @functools.cached_property
    def spectrum(self) -> pd.DataFrame | str:
        """Liberation spectrum table, or why it cannot be made."""
        try:
            return liberation_spectrum(
                self.data.particles_table, phases=self.names, **self._filter()
            )
        except InputError as error:
            return error.reason

    @functools.cached_property
    def grain_curves(self) -> dict[str, pd.DataFrame | str]:
        """Fig. 11 curve per phase, or why it cannot be made."""
        curves: dict[str, pd.DataFrame | str] = {}
        for name in self.names:
            try:
                curves[name] = grain_particle_volume(
                    self.data.grains_table,
                    self.data.particles_table,
                    name,
                    exclude_border=self.exclude_border,
                )
            except InputError as error:
                curves[name] = error.reason
        return curves

    @functools.cached_property
    def grain_points(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(particle volume, grain volume) of every grain, per phase, counted particles only."""
        grains, particles = self.data.grains_table, self.data.particles_table
        needed = {"particle_label", "phase", "volume_um3"} <= set(grains.columns)
        if not needed or not {"label", "volume_um3"} <= set(particles.columns):
            return {}
        if self.exclude_border and "touches_border" in particles.columns:
            particles = particles.loc[~particles["touches_border"].to_numpy(dtype=bool)]
        volume_of = pd.Series(
            particles["volume_um3"].to_numpy(dtype=np.float64), index=particles["label"].to_numpy()
        )
        particle_volume = grains["particle_label"].map(volume_of).to_numpy(dtype=np.float64)
        grain_volume = grains["volume_um3"].to_numpy(dtype=np.float64)
        phase = grains["phase"].astype(str).to_numpy()
        counted = np.isfinite(particle_volume)
        return {
            name: (
                particle_volume[counted & (phase == name)],
                grain_volume[counted & (phase == name)],
            )
            for name in self.names
        }
