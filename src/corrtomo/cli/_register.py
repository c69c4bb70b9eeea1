"""``corrtomo register``: find an SEM section inside a CT volume and write its pose.json."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .._shared import InputError
from ._app import app
from ._progress import stage_progress

#: Exit code when the search ends without a confident match (no pose is trusted).
NO_MATCH_EXIT_CODE = 3


def _pixel_size_from_sample(section_path: Path) -> float | None:
    """Pixel size of a ``corrtomo synth`` section (``<sample>/sem/<name>/bse.tif``) from sample.json."""
    folder = section_path.resolve().parent
    sample_json = folder.parent.parent / "sample.json"
    if not sample_json.is_file():
        return None
    try:
        metadata = json.loads(sample_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for entry in metadata.get("sections", []):
        if entry.get("name") == folder.name and entry.get("pixel_size_um"):
            return float(entry["pixel_size_um"])
    return None


@app.command("register")
def register_command(
    volume: Path = typer.Option(..., "--volume", help="CT volume (TIFF, Zarr, HDF5, raw ...)."),
    section: Path = typer.Option(..., "--section", help="2D section: BSE image or mineral map (phase ids)."),
    out: Path = typer.Option(..., "--out", help="pose.json to write."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="CT voxel size in um (default: from the file)."),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Section pixel size in um (default: from the sample metadata)."),
    mask: Path | None = typer.Option(None, "--mask", help="2D mask of section pixels to use (non-zero = use)."),
    tilt_hint: float | None = typer.Option(None, "--tilt-hint", help="Approximate inclination of the section from the volume z axis, degrees."),
    overlay: Path | None = typer.Option(None, "--overlay", help="Also write an overlay PNG."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Find where a 2D SEM section lies in a 3D CT volume (no starting pose needed); write pose.json.

    Exits with code 3 and writes nothing when no confident match is found.
    """
    import numpy as np

    from ..io import read_image2d, read_volume
    from ..register import RegistrationHint, register_section

    if not volume.exists():
        raise InputError("no such file or folder", source=volume)
    image = read_image2d(section)
    if image.ndim != 2:
        raise InputError(f"is {image.ndim}D, expected a 2D section", source=section)
    if pixel_size is not None and not pixel_size > 0:
        raise InputError(f"must be a positive number of micrometres, got {pixel_size}", source="--pixel-size")
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"must be a positive number of micrometres, got {voxel_size}", source="--voxel-size")
    if pixel_size is None:
        pixel_size = _pixel_size_from_sample(section)
    if pixel_size is None:
        raise InputError("section pixel size unknown; give --pixel-size UM", source=section)
    try:
        data = read_volume(volume, spacing=voxel_size, lazy=False)
    except InputError as error:
        if voxel_size is None and "voxel size" in error.reason:
            raise InputError("voxel size unknown; give --voxel-size UM", source=volume) from None
        raise
    array = np.asarray(data.data)
    if array.ndim != 3:
        raise InputError(f"is {array.ndim}D, expected a 3D volume", source=volume)
    spacing = np.atleast_1d(np.asarray(data.spacing, dtype=float))
    if voxel_size is None:
        if not np.allclose(spacing, spacing[0], rtol=1e-3):
            raise InputError(f"anisotropic voxels {spacing.tolist()} are not supported; resample first", source=volume)
        voxel_size = float(spacing[0])
    section_mask = None
    if mask is not None:
        section_mask = read_image2d(mask) != 0
        if section_mask.shape != image.shape:
            raise InputError(f"mask shape {section_mask.shape} differs from section shape {image.shape}", source=mask)
    hint = RegistrationHint(tilt_deg=tilt_hint) if tilt_hint is not None else None
    with stage_progress(quiet=quiet) as progress:
        result = register_section(
            array, image, voxel_size_um=voxel_size, pixel_size_um=pixel_size, section_mask=section_mask,
            hint=hint, rng=seed, progress=progress,
        )
    if overlay is not None:
        result.overlay_png(overlay, array, image)
    diagnostics = result.diagnostics
    if not result.confident:
        typer.echo(
            f"corrtomo: no confident match for {section} (score {result.score:.3f}, runner-up "
            f"{result.runner_up_score:.3f}, z {diagnostics['z_score']:.1f}); no pose written",
            err=True,
        )
        raise typer.Exit(NO_MATCH_EXIT_CODE)
    result.pose.save(out)
    if not quiet:
        typer.echo(
            f"wrote {out}: score {result.score:.3f} (runner-up {result.runner_up_score:.3f}, "
            f"z {diagnostics['z_score']:.1f}), scale {result.pose.pixel_size_ratio:.4f}, "
            f"{diagnostics['time_total_s']:.1f} s"
        )
