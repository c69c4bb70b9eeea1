"""``corrtomo stitch``: stitch overlapping CT sub-volumes stacked along one axis."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app
from ._progress import stage_progress


@app.command("stitch")
def stitch_command(
    volumes: list[Path] = typer.Argument(..., help="The pieces in stacking order (TIFF, Zarr/OME-Zarr, HDF5, ...)."),
    out: Path = typer.Option(..., "--out", help="Output: an .ome.zarr folder (written slab by slab) or a .tif file."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in micrometres when the files do not record it."),
    axis: int = typer.Option(0, "--axis", help="Stacking axis: 0 = z, 1 = y, 2 = x."),
    overlap: int | None = typer.Option(None, "--overlap", help="Approximate overlap in slices (searched within +-50 %)."),
    max_shift: int = typer.Option(16, "--max-shift", help="Largest lateral shift between neighbours, voxels."),
    max_rotation: float = typer.Option(0.0, "--max-rotation", help="Refine a small rotation up to this many degrees (0: translation only)."),
    blend: str = typer.Option("linear", "--blend", help="linear | none"),
    no_intensity: bool = typer.Option(False, "--no-intensity-match", help="Keep each piece's grey values."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Stitch overlapping sub-volumes: overlap found by normalised cross-correlation, grey values
    matched in the overlaps, seams blended; writes one volume with its voxel size and a JSON of the
    offsets next to it."""
    import numpy as np

    from .._shared import InputError, write_json_atomic
    from ..io import read_volume, write_tiff
    from ..register._stitch import stitch_volumes

    if len(volumes) < 2:
        raise InputError(f"need at least two volumes, got {len(volumes)}", source="VOLUMES")
    pieces, spacing = [], None
    for path in volumes:
        volume = read_volume(path, spacing=voxel_size)
        if volume.spacing is None or not np.all(np.isfinite(volume.spacing)):
            raise InputError("has no voxel size; pass --voxel-size", source=path)
        if spacing is None:
            spacing, first = np.asarray(volume.spacing, dtype=np.float64), path
        elif not np.allclose(volume.spacing, spacing, rtol=1e-3):
            raise InputError(
                f"has voxel size {np.round(volume.spacing, 6).tolist()} um but {first} has "
                f"{np.round(spacing, 6).tolist()} um; resample to one voxel size first",
                source=path,
            )
        pieces.append(volume.data)
    zarr_out = out.name.endswith(".zarr")
    if not zarr_out and out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError("must end in .ome.zarr (or .zarr) or .tif", source=out)
    with stage_progress(quiet=quiet) as progress:
        result = stitch_volumes(
            pieces, axis=axis, overlap_hint=overlap, max_shift=max_shift, max_rotation_deg=max_rotation,
            blend=blend, match_intensity=not no_intensity, spacing=spacing,
            out=out if zarr_out else None, progress=progress,
        )
    if not zarr_out:
        write_tiff(out, result.volume, spacing=spacing)
    stem = out.name
    for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
        stem = stem.removesuffix(suffix)
    write_json_atomic(
        out.with_name(stem + ".stitch.json"),
        {
            "pieces": [str(p) for p in volumes],
            "shape": list(result.shape),
            "voxel_size_um": spacing.tolist(),
            "offsets_voxels": result.offsets.tolist(),
            "transforms": [t.to_dict() for t in result.transforms],
            "gains": result.gains.tolist(),
            "intensity_offsets": result.intensity_offsets.tolist(),
            "overlaps_voxels": result.overlaps.tolist(),
            "ncc": result.scores.tolist(),
        },
    )
    if not quiet:
        typer.echo(
            f"wrote {out}: {'x'.join(map(str, result.shape))} voxels, overlaps "
            f"{', '.join(f'{o:.1f}' for o in result.overlaps)} slices, NCC "
            f"{', '.join(f'{s:.3f}' for s in result.scores)}"
        )
