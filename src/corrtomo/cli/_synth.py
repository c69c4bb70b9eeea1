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
    photons: float | None = typer.Option(None, "--photons", help="Incident photons per detector pixel and projection (noise)."),
    contrast: float | None = typer.Option(None, "--contrast", help="Scale of the attenuation differences between minerals (1 = physical; < 1 makes grey values overlap)."),
    ct_method: str | None = typer.Option(None, "--ct-method", help="projection (Beer-Lambert + reconstruction) or image (fast approximation for large volumes)."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write preview.png."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Make a synthetic sample: ct.tif, sample.json, truth/{phases,particles}.tif and SEM sections
    sem/<name>/{bse.tif, eds/<Element>.tif, mineral_map.tif, pose.json}."""
    from dataclasses import replace

    from .._shared import InputError
    from ..synth import get_preset, make_sample, write_sample

    recipe = get_preset(preset)
    overrides = {k: v for k, v in {"photons_per_pixel": photons, "contrast_scale": contrast, "method": ct_method}.items() if v is not None}
    if photons is not None and not photons > 0:
        raise InputError(f"must be positive, got {photons}", source="--photons")
    if contrast is not None and not 0 <= contrast <= 10:
        raise InputError(f"must be between 0 and 10, got {contrast}", source="--contrast")
    if ct_method is not None and ct_method not in ("projection", "image"):
        raise InputError(f"must be 'projection' or 'image', got {ct_method!r}", source="--ct-method")
    if overrides:
        recipe = replace(recipe, ct=replace(recipe.ct, **overrides))
    with stage_progress(quiet=quiet) as progress:
        sample = make_sample(recipe, shape=shape, seed=seed, progress=progress)
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
