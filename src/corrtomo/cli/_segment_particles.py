"""``corrtomo segment particles``: split a particle foreground into labelled particles."""

from __future__ import annotations

from pathlib import Path

import typer

from ._progress import stage_progress
from ._segment import segment


@segment.command("particles")
def particles_command(
    out: Path = typer.Option(..., "--out", help="Output labels: a .tif file or an .ome.zarr/.zarr folder (uint32, 0 = background)."),
    volume: Path | None = typer.Option(None, "--volume", help="CT volume; the foreground is thresholded from it."),
    foreground: Path | None = typer.Option(None, "--foreground", help="A foreground mask (non-zero = particle)."),
    phases: Path | None = typer.Option(None, "--phases", help="A phase volume (non-zero = particle), used as the foreground."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in micrometres when the file does not record it."),
    method: str = typer.Option("h_maxima", "--method", help="Markers: h_maxima | eroded_cores."),
    h_um: float | None = typer.Option(None, "--h-um", help="h-maxima dynamic in micrometres (default 0.15 voxel)."),
    resolution_um: float | None = typer.Option(None, "--resolution-um", help="Image resolution; particles with ESD below twice it are removed."),
    threshold: str = typer.Option("multiotsu", "--threshold", help="With --volume: otsu | multiotsu | gmm."),
    no_pillar: bool = typer.Option(False, "--no-pillar", help="Do not look for a cylindrical field of view."),
    merge: bool = typer.Option(False, "--merge-oversplit", help="Merge neighbours joined by a thick neck."),
    connectivity: int = typer.Option(26, "--connectivity", help="6, 18 or 26."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Separate touching particles: exact distance transform, h-maxima (or eroded-core) markers,
    marker watershed inside the foreground; writes the label volume and a JSON summary next to it."""
    from .._shared import InputError
    from ..io import read_volume

    given = [p for p in (volume, foreground, phases) if p is not None]
    if len(given) != 1:
        raise InputError("give exactly one of --volume, --foreground or --phases", source="segment particles")
    source = given[0]
    zarr_out = out.name.endswith(".zarr")
    if not zarr_out and out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError("must end in .tif, .ome.zarr or .zarr", source=out)
    if not source.exists():
        raise InputError("no such file or folder", source=source)
    with stage_progress(quiet=quiet) as progress:
        step = progress or (lambda stage, done, total: None)
        step("read", 0, 1)
        image = read_volume(source, spacing=voxel_size, lazy=False)
        step("read", 1, 1)
        _run(image, source, volume is not None, out, zarr_out, no_pillar, threshold, method, h_um,
             resolution_um, connectivity, merge, quiet, step)


def _run(image, source, from_ct, out, zarr_out, no_pillar, threshold, method, h_um, resolution_um,
         connectivity, merge, quiet, step) -> None:
    import numpy as np

    from .._shared import InputError, write_json_atomic
    from ..io import write_ome_zarr, write_tiff
    from ..segment._foreground import detect_pillar, foreground_mask
    from ..segment._particles import separate_particles

    if image.spacing is None or not np.all(np.isfinite(image.spacing)):
        raise InputError("has no voxel size; pass --voxel-size", source=source)
    spacing = np.asarray(image.spacing, dtype=np.float64)
    data = np.asarray(image.data)
    if data.ndim != 3:
        raise InputError(f"expected a 3D volume, got {data.ndim}D shape {data.shape}", source=source)
    step("foreground", 0, 1)
    if from_ct:
        pillar = None if no_pillar else detect_pillar(data, spacing=spacing)
        mask = foreground_mask(data, spacing=spacing, method=threshold, pillar=pillar or False)
    else:
        if not (np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_):
            raise InputError(f"expected an integer or boolean mask, got {data.dtype}", source=source)
        mask = data != 0
        pillar = None if no_pillar else detect_pillar(mask, spacing=spacing)
    if not mask.any():
        raise InputError("no foreground voxels", source=source)
    step("foreground", 1, 1)
    step("particles", 0, 1)
    result = separate_particles(
        mask, spacing=spacing, method=method, h_um=h_um, resolution_um=resolution_um,
        connectivity=connectivity, merge_oversplit=merge, pillar=pillar,
    )
    step("particles", 1, 1)
    step("write", 0, 1)
    if zarr_out:
        write_ome_zarr(out, result.labels, spacing=spacing, labels=True)
    else:
        write_tiff(out, result.labels, spacing=spacing)
    stem = out.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
        stem = stem.removesuffix(suffix)
    summary = {
        "source": str(source),
        "n_particles": result.n_particles,
        "n_touching_border": int(result.touches_border.sum()),
        "touches_border_labels": np.flatnonzero(result.touches_border).tolist(),
        "pillar": None if pillar is None else {
            "center_yx": list(pillar.center_yx), "radius_voxels": pillar.radius_voxels,
        },
        "voxel_size_um": spacing.tolist(),
        **result.info,
    }
    write_json_atomic(out.with_name(stem + ".particles.json"), summary)
    step("write", 1, 1)
    if not quiet:
        typer.echo(f"{result.n_particles} particles ({int(result.touches_border.sum())} touch the border) -> {out}")
