"""Helpers shared by the liberation functions: phase columns, size classes, particle filtering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._shared import InputError

VF_PREFIX = "vf_"
#: Name of phase id 0 inside particles in corrtomo.measure tables; not a mineral.
UNASSIGNED = "unassigned"


def phase_columns(particles_df: pd.DataFrame, phases: Sequence[str] | str | None) -> list[str]:
    """Return the phase names to analyse: `phases`, or every ``vf_<name>`` column but ``vf_unassigned``."""
    available = [
        str(c)[len(VF_PREFIX) :] for c in particles_df.columns if str(c).startswith(VF_PREFIX)
    ]
    if phases is None:
        available = [name for name in available if name != UNASSIGNED]
        if not available:
            raise InputError("the particle table has no 'vf_<phase>' columns", source="particles")
        return available
    names = [phases] if isinstance(phases, str) else [str(p) for p in phases]
    missing = [n for n in names if n not in available]
    if missing:
        raise InputError(
            f"no column for phase(s) {', '.join(missing)}; the table has {', '.join(available) or 'none'}",
            source="particles",
        )
    return names


def geometric_size_bins(sizes_um: np.ndarray, *, ratio_exponent: float = 0.5) -> np.ndarray:
    """Edges of a geometric size series ``2**(k * ratio_exponent)`` (sqrt(2) by default) covering `sizes_um`.

    The series is anchored at 1 micrometre, so two samples analysed separately share their size classes.
    Classes are half-open, ``[edge_k, edge_k+1)``; the last edge is larger than the largest size.

    Parameters
    ----------
    sizes_um : (n,) array_like
        Particle sizes (ESD or ECD) in micrometres; non-finite and non-positive values are ignored.
    ratio_exponent : float
        log2 of the ratio between successive edges (0.5 gives sqrt(2)).

    Returns
    -------
    (m,) ndarray of float64
        At least two edges.
    """
    sizes = np.asarray(sizes_um, dtype=np.float64)
    sizes = sizes[np.isfinite(sizes) & (sizes > 0)]
    if sizes.size == 0:
        return np.array([1.0, 2.0**ratio_exponent])
    low = int(np.floor(np.log2(sizes.min()) / ratio_exponent))
    high = int(np.floor(np.log2(sizes.max()) / ratio_exponent)) + 1
    edges = 2.0 ** (np.arange(low, high + 1) * ratio_exponent)
    # Guard the rounding of log2 at exact edges.
    if edges[0] > sizes.min():
        edges = np.concatenate([[edges[0] / 2.0**ratio_exponent], edges])
    if edges[-1] <= sizes.max():
        edges = np.concatenate([edges, [edges[-1] * 2.0**ratio_exponent]])
    return edges


def check_edges(edges: Sequence[float] | np.ndarray, *, name: str = "size_bins_um") -> np.ndarray:
    """Validate user size-class edges: at least two non-negative, strictly increasing values (+inf allowed last)."""
    values = np.asarray(edges, dtype=np.float64).ravel()
    if (
        values.size < 2
        or np.any(np.isnan(values))
        or np.any(values < 0)
        or np.any(np.diff(values) <= 0)
    ):
        raise InputError(
            f"size class edges must be at least two non-negative, increasing values; got {values.tolist()}",
            source=name,
        )
    return values


def class_index(sizes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Index of the half-open class ``[edges[k], edges[k+1])`` holding each size; -1 outside all classes."""
    index = np.searchsorted(edges, sizes, side="right") - 1
    index[(index < 0) | (index >= edges.size - 1) | ~np.isfinite(sizes)] = -1
    return index


def select_particles(
    particles_df: pd.DataFrame,
    *,
    exclude_border: bool,
    min_size_um: float,
    size_column: str = "esd_um",
    border_column: str = "touches_border",
) -> pd.DataFrame:
    """Keep the particles that are counted: not touching the border (unless asked) and not smaller than `min_size_um`.

    Raises
    ------
    InputError
        If a needed column is missing or no particle is left.
    """
    if size_column not in particles_df.columns:
        raise InputError(f"the particle table has no {size_column!r} column", source="particles")
    keep = np.ones(len(particles_df), dtype=bool)
    if exclude_border:
        if border_column not in particles_df.columns:
            raise InputError(
                f"the particle table has no {border_column!r} column", source="particles"
            )
        keep &= ~particles_df[border_column].to_numpy(dtype=bool)
    if min_size_um > 0:
        keep &= particles_df[size_column].to_numpy(dtype=np.float64) >= min_size_um
    if not keep.any():
        raise InputError(
            f"no particle left after filtering ({len(particles_df)} particles, "
            f"exclude_border={exclude_border}, minimum size {min_size_um:g} um)",
            source="particles",
        )
    return particles_df.loc[keep]


def volume_fractions(particles_df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """The ``vf_<name>`` columns as an (n, p) float64 array, checked to lie in [0, 1]."""
    vf = particles_df[[VF_PREFIX + n for n in names]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(vf)) or np.any(vf < 0) or np.any(vf > 1 + 1e-9):
        raise InputError(
            "phase volume fractions must be finite and within [0, 1]", source="particles"
        )
    return vf


def check_threshold(threshold: float) -> float:
    """A liberation threshold must lie in [0, 1) (free means ``vf > threshold``)."""
    value = float(threshold)
    if not (0.0 <= value < 1.0):
        raise InputError(f"threshold must lie in [0, 1), got {value:g}", source="threshold")
    return value
