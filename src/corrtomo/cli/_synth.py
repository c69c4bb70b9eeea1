"""``corrtomo synth``: write a synthetic sample with known truth."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app
from ._progress import stage_progress


@app.command("synth")
def synth_command(
    outdir: Path = typer.Argument(..., help="Folder to write the sample into (created; replaced if it holds a previous sample)."),
    preset: str = typer.Option("talc-saxolite", "--preset", help="quick | talc-saxolite | li-slag"),
    shape: tuple[int, int, int] | None = typer.Option(None, "--shape", help="CT grid size Z Y X in voxels (default: the preset's)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives bit-identical files."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write preview.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Make a synthetic sample: ct.tif, sample.json, truth/{phases,particles}.tif and SEM sections
    sem/<name>/{bse.tif, eds/<Element>.tif, mineral_map.tif, pose.json}."""
    from ..synth import make_sample, write_sample

    with stage_progress(quiet=quiet) as progress:
        sample = make_sample(preset, shape=shape, seed=seed, progress=progress)
        if progress is not None:
            progress("write", 0, 1)
        written = write_sample(sample, outdir, preview=preview)
        if progress is not None:
            progress("write", 1, 1)
    truth = sample.metadata["truth"]
    if not quiet:
        typer.echo(
            f"wrote {written}: {sample.preset.name}, {'x'.join(map(str, sample.ct.shape))} voxels of "
            f"{sample.voxel_size_um:g} um, {truth['n_particles']} particles, {len(sample.sections)} SEM section(s)"
        )
