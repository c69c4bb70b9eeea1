"""Preview figure of a synthetic sample: orthogonal CT slices, truth phases, a section."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._shared import atomic_path


def _phase_rgb(phases: np.ndarray, colors: dict[int, tuple[int, int, int]]) -> np.ndarray:
    lookup = np.zeros((256, 3), dtype=np.uint8)
    lookup[0] = (40, 40, 40)
    for phase_id, rgb in colors.items():
        lookup[int(phase_id)] = rgb
    return lookup[phases]


def write_preview(sample, path: str | os.PathLike) -> Path:
    """Write a PNG with the CT's three central orthogonal slices, the truth phases on them,
    and the first SEM section (BSE and truth mineral map)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ct, phases = sample.ct, sample.phases
    nz, ny, nx = ct.shape
    views = [("z", ct[nz // 2], phases[nz // 2]), ("y", ct[:, ny // 2], phases[:, ny // 2]), ("x", ct[:, :, nx // 2], phases[:, :, nx // 2])]
    low, high = np.percentile(ct, [0.5, 99.5])
    colors = sample.library.colors
    n_columns = 4 if sample.sections else 3
    figure = Figure(figsize=(3.2 * n_columns, 6.4), dpi=100)
    for k, (axis, grey, truth) in enumerate(views):
        top = figure.add_subplot(2, n_columns, k + 1)
        top.imshow(grey, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        top.set_title(f"CT, central {axis} slice", fontsize=9)
        bottom = figure.add_subplot(2, n_columns, n_columns + k + 1)
        bottom.imshow(_phase_rgb(truth, colors), interpolation="nearest")
        bottom.set_title(f"truth phases, {axis} slice", fontsize=9)
    if sample.sections:
        section = sample.sections[0]
        bse = figure.add_subplot(2, n_columns, n_columns)
        bse.imshow(section.bse, cmap="gray", interpolation="nearest")
        bse.set_title(f"{section.name}: BSE", fontsize=9)
        mineral = figure.add_subplot(2, n_columns, 2 * n_columns)
        mineral.imshow(_phase_rgb(section.mineral_map, colors), interpolation="nearest")
        mineral.set_title(f"{section.name}: mineral map", fontsize=9)
        handles = [
            matplotlib.patches.Patch(color=np.asarray(colors[int(i)]) / 255, label=sample.library.name_of(int(i)))
            for i in sample.library.ids
        ]
        mineral.legend(handles=handles, fontsize=7, loc="lower right", framealpha=0.8)
    for ax in figure.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(
        f"corrtomo synth: {sample.preset.name}, {nz}x{ny}x{nx} voxels of {sample.voxel_size_um:g} um, seed {sample.seed}",
        fontsize=10,
    )
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", metadata={"Software": None})
    return Path(path)
