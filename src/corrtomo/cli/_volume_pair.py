"""``corrtomo synth-pair`` and ``corrtomo register-volume``: across length scales (micro-CT + nano-CT)."""

from __future__ import annotations

from pathlib import Path

import typer

from .._shared import InputError
from ._app import app
from ._progress import stage_progress

#: Exit code when the registration ends without a confident match (the result is written, flagged).
NO_MATCH_EXIT_CODE = 3


@app.command("synth-pair")
def synth_pair_command(
    outdir: Path = typer.Argument(..., help="Folder to write the pair into (created; replaced if it holds a previous pair)."),
    preset: str = typer.Option("talc-micro-nano", "--preset", help="talc-micro-nano"),
    seed: int = typer.Option(0, "--seed", help="Random seed (phantom, placement, noise)."),
    scale_ratio: float | None = typer.Option(None, "--scale-ratio", help="Micro voxel size over nano voxel size (default: random 4-10)."),
    rotation: float | None = typer.Option(None, "--rotation", help="Rotation of the nano pillar about its axis, degrees (default: random)."),
    tilt: float | None = typer.Option(None, "--tilt", help="Tilt of the pillar axis, degrees (default: random 0-10)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Render one phantom as a micro-CT overview and a nano-CT pillar inside it: micro/ct.tif, nano/ct.tif,
    {micro,nano}/truth/{phases,particles}.tif, truth_transform.json (4x4 nano voxel -> micro voxel), pair.json."""
    from ..synth import make_scale_pair, write_scale_pair

    with stage_progress(quiet=quiet) as progress:
        pair = make_scale_pair(
            preset, seed=seed, scale_ratio=scale_ratio, rotation_deg=rotation, tilt_deg=tilt, progress=progress
        )
        written = write_scale_pair(pair, outdir)
    if not quiet:
        typer.echo(
            f"wrote {written}: micro {'x'.join(map(str, pair.micro_ct.shape))} at {pair.micro_voxel_size_um:g} um, "
            f"nano {'x'.join(map(str, pair.nano_ct.shape))} at {pair.nano_voxel_size_um:.4g} um (ratio {pair.scale_ratio:.2f})"
        )


def _read(path: Path, voxel_size: float | None, option: str):
    import numpy as np

    from ..io import read_volume

    if not path.exists():
        raise InputError("no such file or folder", source=path)
    if voxel_size is not None and not voxel_size > 0:
        raise InputError(f"must be a positive number of micrometres, got {voxel_size}", source=option)
    try:
        data = read_volume(path, spacing=voxel_size, lazy=False)
    except InputError as error:
        if voxel_size is None and "voxel size" in error.reason:
            raise InputError(f"voxel size unknown; give {option} UM", source=path) from None
        raise
    array = np.asarray(data.data)
    if array.ndim != 3:
        raise InputError(f"is {array.ndim}D, expected a 3D volume", source=path)
    spacing = None if data.spacing is None else np.broadcast_to(np.asarray(data.spacing, dtype=float), (3,))
    if spacing is None or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"voxel size unknown; give {option} UM", source=path)
    return array, spacing


@app.command("register-volume")
def register_volume_command(
    fixed: Path = typer.Option(..., "--fixed", help="Large low-resolution volume (e.g. micro-CT)."),
    moving: Path = typer.Option(..., "--moving", help="Small high-resolution volume inside it (e.g. nano-CT pillar)."),
    out: Path = typer.Option(..., "--out", help="transform.json to write (4x4 moving voxel -> fixed voxel, z y x)."),
    fixed_voxel_size: float | None = typer.Option(None, "--fixed-voxel-size", help="Fixed voxel size in um (default: from the file)."),
    moving_voxel_size: float | None = typer.Option(None, "--moving-voxel-size", help="Moving voxel size in um (default: from the file)."),
    overlay: Path | None = typer.Option(None, "--overlay", help="Also write an overlay PNG."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Find the rotation, translation and scale of a high-resolution volume inside a low-resolution one
    (no starting pose needed); write transform.json.

    Exits with code 3 when the match is not confident (transform.json is still written, with
    "confident": false).
    """
    from ..register import register_volume, write_volume_overlay

    fixed_array, fixed_spacing = _read(fixed, fixed_voxel_size, "--fixed-voxel-size")
    moving_array, moving_spacing = _read(moving, moving_voxel_size, "--moving-voxel-size")
    with stage_progress(quiet=True):
        result = register_volume(
            fixed_array, moving_array, fixed_spacing=fixed_spacing, moving_spacing=moving_spacing,
            fixed_source=fixed, moving_source=moving,
        )
    result.save(out)
    if overlay is not None:
        write_volume_overlay(overlay, fixed_array, moving_array, result)
    if not result.confident:
        typer.echo(
            f"corrtomo: no confident match for {moving} in {fixed} (score {result.score:.3f}, runner-up "
            f"{result.runner_up:.3f}); {out} is flagged confident=false",
            err=True,
        )
        raise typer.Exit(NO_MATCH_EXIT_CODE)
    if not quiet:
        typer.echo(
            f"wrote {out}: score {result.score:.3f} (runner-up {result.runner_up:.3f}), scale {result.scale:.4f}, "
            f"{result.diagnostics['seconds']:.1f} s"
        )
