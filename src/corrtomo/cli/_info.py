"""``corrtomo info`` and ``corrtomo phases``: look at a volume's metadata or a phase library."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app


@app.command("info")
def info_command(
    path: Path = typer.Argument(..., help="A volume: TIFF, folder of slices, Zarr/OME-Zarr, HDF5 (file.h5:/dataset) or raw."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in um, if the file has none."),
    shape: tuple[int, int, int] | None = typer.Option(None, "--shape", help="Z Y X, for raw files."),
    dtype: str | None = typer.Option(None, "--dtype", help="Data type, for raw files (e.g. uint16)."),
) -> None:
    """Print a volume's shape, data type, voxel size and format without loading it."""
    from ..io import read_volume

    volume = read_volume(str(path), spacing=voxel_size, shape=shape, dtype=dtype)
    spacing = "unknown" if volume.spacing is None else " x ".join(f"{v:g}" for v in volume.spacing) + " um"
    typer.echo(f"{volume.source}: shape {'x'.join(map(str, volume.shape))} (z, y, x), {volume.dtype}, voxel size {spacing}")
    for key, value in sorted(volume.metadata.items()):
        typer.echo(f"  {key}: {value}")


@app.command("phases")
def phases_command(
    library: str = typer.Argument("talc-saxolite", help="A preset name (talc-saxolite, li-slag) or a YAML/JSON file."),
    energy_kev: float = typer.Option(5.4, "--energy", help="X-ray energy in keV for the attenuation column."),
) -> None:
    """Print a phase library: composition, mean Z, density and attenuation at an energy."""
    from ..phases import load_phase_library

    phases = load_phase_library(library)
    typer.echo(f"{'id':>3}  {'name':<14} {'formula':<18} {'density':>8} {'mean Z':>7} {'mu (1/um)':>10} {'att. length (um)':>17}")
    for phase in phases:
        mu = float(phase.linear_attenuation(energy_kev))
        typer.echo(
            f"{phase.id:>3}  {phase.name:<14} {phase.formula:<18} {phase.density:>8.3f} "
            f"{phase.mean_atomic_number:>7.2f} {mu:>10.4g} {1 / mu:>17.4g}"
        )
