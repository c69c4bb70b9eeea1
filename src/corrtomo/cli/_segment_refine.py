"""``corrtomo segment refine``: particle-aware phase refinement (contacts, inclusions, small grains)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._progress import stage_progress
from ._segment import segment


@segment.command("refine")
def refine_command(
    volume: Path = typer.Option(..., "--volume", help="CT volume the phases were classified from."),
    phases: Path = typer.Option(..., "--phases", help="Phase volume (uint8, 0 = matrix)."),
    particles: Path = typer.Option(..., "--particles", help="Particle labels (0 = matrix)."),
    out: Path = typer.Option(..., "--out", help="Refined phases: a .tif file or an .ome.zarr/.zarr folder."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in micrometres when the files do not record it."),
    contact_voxels: int = typer.Option(2, "--contact-voxels", help="Contact rim depth; 0 = off."),
    no_inclusions: bool = typer.Option(False, "--no-inclusions", help="Skip the inclusion search and small grains."),
    false_alarms: float = typer.Option(0.05, "--false-alarms", help="Expected false inclusions per volume."),
    blur_sigma: float | None = typer.Option(None, "--blur-sigma", help="CT point-spread sigma in voxels (default: estimated from the particle edges)."),
    small_grain_voxels: int = typer.Option(12, "--small-grain-voxels", help="Largest grain extent reclassified by its grey value; 0 = off."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary line."),
) -> None:
    """Refine a phase volume with its particles: contact rims take each particle's interior
    phase, inclusions blurred into their host are found and unmixed, small grains take the phase
    their grey value fits; writes the refined phases and a JSON summary next to them."""
    import numpy as np

    from .._shared import InputError, write_json_atomic
    from ..io import read_volume, write_ome_zarr, write_tiff
    from ..segment import InclusionSettings, refine_phases

    zarr_out = out.name.endswith(".zarr")
    if not zarr_out and out.suffix.lower() not in (".tif", ".tiff"):
        raise InputError("must end in .tif, .ome.zarr or .zarr", source=out)
    for path in (volume, phases, particles):
        if not path.exists():
            raise InputError("no such file or folder", source=path)
    if not (false_alarms > 0):
        raise InputError(f"must be > 0, got {false_alarms}", source="--false-alarms")
    with stage_progress(quiet=quiet) as progress:
        step = progress or (lambda stage, done, total: None)
        step("read", 0, 1)
        ct = read_volume(volume, spacing=voxel_size, lazy=False)
        phase_image = np.asarray(read_volume(phases, spacing=voxel_size or ct.spacing, lazy=False).data)
        labels = np.asarray(read_volume(particles, spacing=voxel_size or ct.spacing, lazy=False).data)
        step("read", 1, 1)
        for path, data in ((phases, phase_image), (particles, labels)):
            if data.shape != tuple(ct.data.shape):
                raise InputError(f"shape {data.shape} differs from the CT volume's {tuple(ct.data.shape)}",
                                 source=path)
        if phase_image.dtype != np.uint8:
            raise InputError(f"expected uint8 phase ids, got {phase_image.dtype}", source=phases)
        if not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"expected integer labels, got {labels.dtype}", source=particles)
        step("refine", 0, 1)
        settings = InclusionSettings(blur_sigma_voxels=blur_sigma, false_alarms=false_alarms,
                                     small_grain_voxels=small_grain_voxels)
        refined, report = refine_phases(np.asarray(ct.data), phase_image, labels, contact_voxels=contact_voxels,
                                        inclusions=not no_inclusions, settings=settings)
        step("refine", 1, 1)
        step("write", 0, 1)
        spacing = ct.spacing
        if zarr_out:
            write_ome_zarr(out, refined, spacing=spacing)
        else:
            write_tiff(out, refined, spacing=spacing)
        stem = out.name
        for suffix in (".ome.zarr", ".zarr", ".tiff", ".tif"):
            stem = stem.removesuffix(suffix)
        summary = {"volume": str(volume), "phases": str(phases), "particles": str(particles),
                   "changed_voxels": int((refined != phase_image).sum()), "contact_voxels": contact_voxels}
        if report is not None:
            summary.update({"blur_sigma_voxels": report.model.blur_sigma_voxels,
                            "threshold_z": report.model.threshold_z, "noise_sd": report.model.spread,
                            "n_inclusions": report.n_inclusions, "n_relabelled": report.n_relabelled,
                            "n_grains_reclassified": report.n_grains_reclassified})
        write_json_atomic(out.with_name(stem + ".refine.json"), summary)
        step("write", 1, 1)
    if not quiet:
        found = "" if report is None else f", {report.n_inclusions} inclusions, {report.n_grains_reclassified} small grains"
        typer.echo(f"{summary['changed_voxels']} voxels changed{found} -> {out}")
