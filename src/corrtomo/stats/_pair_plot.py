"""Report figure: pair plots of measured versus simulated particle descriptors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._shared import InputError, as_rng, atomic_path

_DATA_COLOR = "#1f77b4"
_SIMULATED_COLOR = "#d62728"


def pair_plot(
    data_df: pd.DataFrame,
    simulated_df: pd.DataFrame,
    descriptors: Sequence[str],
    path: str | os.PathLike,
    *,
    max_points: int = 2000,
    rng: np.random.Generator | int | None = 0,
    dpi: int = 120,
) -> Path:
    """Draw a d x d pair plot of data versus a simulated population and write it atomically.

    Parameters
    ----------
    data_df, simulated_df : DataFrame
        Measured and simulated particle tables holding the `descriptors` columns.
    descriptors : sequence of str
        Columns to plot (d >= 1).
    path : str or PathLike
        Output image; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
    max_points : int
        At most this many points per table in the scatter panels (random subsample).
    rng : Generator, int or None
        Seed of the subsample.
    dpi : int
        Resolution of raster output.

    Returns
    -------
    Path
        `path`.

    Notes
    -----
    Lower triangle: scatter plots (data blue, simulation red); diagonal: density histograms on common
    bins; upper triangle: Kendall's tau of data and simulation. The figure is drawn with the Agg
    backend (no display needed).
    """
    names = [str(n) for n in descriptors]
    if not names:
        raise InputError("no descriptors to plot", source="descriptors")
    for frame, label in ((data_df, "data"), (simulated_df, "simulated")):
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise InputError(
                f"the {label} table has no column(s) {', '.join(missing)}", source=label
            )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ._vine import kendall_tau_matrix

    generator = as_rng(rng)

    def subsample(frame: pd.DataFrame) -> np.ndarray:
        values = frame[names].to_numpy(dtype=np.float64)
        values = values[np.all(np.isfinite(values), axis=1)]
        if len(values) > max_points:
            values = values[generator.choice(len(values), size=max_points, replace=False)]
        return values

    data = subsample(data_df)
    simulated = subsample(simulated_df)
    d = len(names)
    tau_data = kendall_tau_matrix(data) if d > 1 else np.eye(1)
    tau_sim = kendall_tau_matrix(simulated) if d > 1 else np.eye(1)
    size = max(2.2 * d, 3.0)
    figure = Figure(figsize=(size, size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if i == j:
                both = np.concatenate([data[:, i], simulated[:, i]])
                bins = np.linspace(both.min(), both.max(), 31) if both.size else 10
                ax.hist(
                    simulated[:, i],
                    bins=bins,
                    density=True,
                    color=_SIMULATED_COLOR,
                    alpha=0.45,
                    label="simulated",
                )
                ax.hist(
                    data[:, i],
                    bins=bins,
                    density=True,
                    histtype="step",
                    color=_DATA_COLOR,
                    linewidth=1.5,
                    label="data",
                )
            elif i > j:
                ax.scatter(
                    simulated[:, j],
                    simulated[:, i],
                    s=2,
                    color=_SIMULATED_COLOR,
                    alpha=0.25,
                    linewidths=0,
                )
                ax.scatter(data[:, j], data[:, i], s=3, color=_DATA_COLOR, alpha=0.6, linewidths=0)
            else:
                ax.set_axis_off()
                ax.text(
                    0.5,
                    0.5,
                    f"tau data {tau_data[i, j]:+.2f}\ntau sim  {tau_sim[i, j]:+.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    transform=ax.transAxes,
                )
            if i == d - 1:
                ax.set_xlabel(names[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="best")
    figure.suptitle("Particle descriptors: data (blue) vs vine-copula simulation (red)", fontsize=9)
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".") or "png"
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format=suffix, dpi=dpi)
    return target
