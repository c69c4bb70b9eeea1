"""Image figures of the report: orthogonal CT slices with overlays, SEM sections and registration."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..phases import PhaseLibrary
from ._images import (
    as_grey,
    checkerboard,
    grey_rgb,
    grey_window,
    label_boundaries,
    particle_overlay,
    phase_lookup,
    phase_overlay,
    phase_rgb,
    reduce_grey,
    reduce_labels,
    reduction_factor,
)

#: The three central planes: title, index builder and the (row, column) axis names.
_PLANES = (
    ("z", "xy plane", ("y", "x")),
    ("y", "xz plane", ("z", "x")),
    ("x", "yz plane", ("z", "y")),
)


def central_planes(volume: Any) -> list[np.ndarray]:
    """The central z, y and x planes of a (P, M, N) array-like, read one plane at a time.

    Only these three planes are read, so a Zarr or Dask volume of any size costs three slices.
    """
    nz, ny, nx = (int(n) for n in volume.shape)
    return [
        np.asarray(volume[nz // 2]),
        np.asarray(volume[:, ny // 2, :]),
        np.asarray(volume[:, :, nx // 2]),
    ]


def _plane_extents(shape: tuple[int, int, int], spacing: np.ndarray) -> list[list[float]]:
    """imshow extents in micrometres of the z, y and x planes (origin at the top left)."""
    size = np.asarray(shape) * spacing  # (z, y, x) extent in um
    return [
        [0.0, size[2], size[1], 0.0],
        [0.0, size[2], size[0], 0.0],
        [0.0, size[1], size[0], 0.0],
    ]


def _phase_legend(figure: Figure, library: PhaseLibrary, ids: set[int], *, loc: str) -> None:
    lookup = phase_lookup(library)
    handles = [
        Patch(
            facecolor=lookup[int(i)], edgecolor="0.3", linewidth=0.5, label=library.name_of(int(i))
        )
        for i in library.ids
        if int(i) in ids
    ]
    handles += [
        Patch(
            facecolor=lookup[int(i)], edgecolor="0.3", linewidth=0.5, label=f"id {int(i)} (unknown)"
        )
        for i in sorted(ids)
        if i > 0 and int(i) not in library
    ]
    if handles:
        figure.legend(
            handles=handles, loc=loc, ncols=min(len(handles), 6), fontsize=8, frameon=False
        )


def slices_figure(
    ct: Any,
    phases: Any,
    particles: Any,
    *,
    spacing: np.ndarray,
    library: PhaseLibrary,
    overlay: str,
) -> Figure:
    """Central z, y and x planes of the CT with the phases or the particles laid over it.

    Parameters
    ----------
    ct, phases, particles : (P, M, N) array_like
        CT, phase ids and particle labels; only the central planes are read.
    spacing : (3,) ndarray
        Voxel size (z, y, x) in micrometres (axes are drawn in micrometres, so anisotropic
        voxels keep their aspect).
    library : PhaseLibrary
        Phase colours and names.
    overlay : {"phases", "particles"}
        ``"phases"``: a row of plain CT planes above a row with the phases; ``"particles"``:
        one row with every particle in a hashed colour.
    """
    shape = tuple(int(n) for n in ct.shape)
    extents = _plane_extents(shape, spacing)
    ct_planes = central_planes(ct)
    label_planes = central_planes(phases if overlay == "phases" else particles)
    rows = 2 if overlay == "phases" else 1
    figure = Figure(
        figsize=(10.0, 3.3 * rows + (0.4 if overlay == "phases" else 0.0)), layout="constrained"
    )
    axes = figure.subplots(rows, 3, squeeze=False)
    present: set[int] = set()
    for column, ((axis, plane_name, (row_axis, column_axis)), grey, labels, extent) in enumerate(
        zip(_PLANES, ct_planes, label_planes, extents, strict=True)
    ):
        factor = reduction_factor(grey.shape)
        window = grey_window(reduce_grey(np.asarray(grey, dtype=np.float64), factor))
        labels = reduce_labels(labels, factor)
        index = shape["zyx".index(axis)] // 2
        title = f"{plane_name}, {axis} = {index} ({index * spacing['zyx'.index(axis)]:.4g} µm)"
        if overlay == "phases":
            present.update(int(i) for i in np.unique(labels))
            images = [grey_rgb(window), phase_overlay(window, labels, library)]
        else:
            images = [particle_overlay(window, labels)]
        for row, image in enumerate(images):
            ax = axes[row, column]
            ax.imshow(image, extent=extent, interpolation="nearest")
            ax.set_title(title if row == 0 else f"{plane_name} with phases", fontsize=9)
            ax.set_xlabel(f"{column_axis} (µm)", fontsize=8)
            ax.set_ylabel(f"{row_axis} (µm)", fontsize=8)
            ax.tick_params(labelsize=7)
    if overlay == "phases":
        _phase_legend(figure, library, present, loc="outside lower center")
    return figure


def section_figure(section: Any, *, library: PhaseLibrary) -> Figure:
    """BSE, mineral map, CT plane with mineral-map boundaries, and a BSE/CT checkerboard.

    Panels without data (no BSE, no registered CT plane) are left out.
    """
    mineral_map = np.asarray(section.mineral_map)
    factor = reduction_factor(mineral_map.shape)
    labels = reduce_labels(mineral_map, factor)
    bse = None
    if section.bse is not None:
        bse = grey_window(reduce_grey(as_grey(section.bse), factor))
    ct = None
    if section.ct_plane is not None:
        ct = grey_window(reduce_grey(np.asarray(section.ct_plane, dtype=np.float64), factor))

    panels: list[tuple[str, np.ndarray]] = []
    if bse is not None:
        panels.append(("BSE", grey_rgb(bse)))
    panels.append(("mineral map", phase_rgb(labels, library)))
    if ct is not None:
        overlay = grey_rgb(ct)
        edges = label_boundaries(labels)
        overlay[edges] = phase_rgb(labels, library)[edges]
        score = "" if section.score is None else f", score {section.score:.3f}"
        panels.append((f"CT on registered plane{score}", overlay))
        if bse is not None:
            panels.append(("checkerboard BSE / CT", checkerboard(grey_rgb(bse), grey_rgb(ct))))
    figure = Figure(figsize=(2.6 * len(panels) + 0.6, 3.3), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, image) in zip(axes, panels, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    _phase_legend(figure, library, {int(i) for i in np.unique(labels)}, loc="outside lower center")
    return figure
