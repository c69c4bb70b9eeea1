"""``corrtomo analyze``: measure labelled volumes and write particle, grain and liberation tables."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer

from .._shared import InputError, normalize_spacing
from ._app import app

#: Files ``corrtomo analyze`` always writes (DESIGN.md contract).
CORE_OUTPUTS = (
    "particles.csv",
    "particles.parquet",
    "grains.csv",
    "liberation.csv",
    "summary.json",
)


# --------------------------------------------------------------------------------------------
# argument parsing and input checks
# --------------------------------------------------------------------------------------------


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(
            f"expected numbers separated by commas, got {text!r}", source=option
        ) from None
    if not values:
        raise InputError("expected at least one number", source=option)
    return values


def _read_labels(
    path: Path, spacing: np.ndarray | None, what: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a label volume as a numpy array; return it and its voxel size (None if unknown)."""
    if not path.exists():
        raise InputError("no such file or folder", source=path)
    try:
        from ..io import read_volume
    except ImportError:  # pragma: no cover - before corrtomo.io exports read_volume
        read_volume = None
    if read_volume is not None:
        try:
            volume = read_volume(path, spacing=spacing, lazy=False)
        except InputError as error:
            if spacing is None and "voxel size" in error.reason:
                volume = read_volume(path, spacing=1.0, lazy=False)
                data, file_spacing = np.asarray(volume.data), None
            else:
                raise
        else:
            data = np.asarray(volume.data)
            file_spacing = None if volume.metadata.get("spacing_from") == "user" else volume.spacing
    else:  # pragma: no cover
        if path.suffix.lower() == ".npy":
            data = np.load(path)
        else:
            import tifffile

            data = tifffile.imread(path)
        file_spacing = None
    if data.ndim != 3:
        raise InputError(
            f"expected a 3D {what} volume, got {data.ndim}D shape {data.shape}", source=path
        )
    if data.dtype == np.bool_:
        data = data.view(np.uint8)
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"{what} labels must be integers, got {data.dtype}", source=path)
    if data.size and np.issubdtype(data.dtype, np.signedinteger) and data.min() < 0:
        raise InputError(
            f"{what} labels must be non-negative (found {int(data.min())})", source=path
        )
    return data, file_spacing


def _phase_names(
    phases: np.ndarray, phases_path: Path, library_source: str | None
) -> tuple[dict[int, str], dict[str, float] | None]:
    """Names (and densities) of the phase ids present in the phase volume."""
    top = int(phases.max(initial=0))
    if top > 255:
        raise InputError(f"phase ids must be 0..255, found {top}", source=phases_path)
    counts = np.bincount(phases.ravel().astype(np.uint8, copy=False), minlength=256)
    ids = [int(i) for i in np.flatnonzero(counts) if i > 0]
    if library_source is None:
        return {i: f"phase{i}" for i in ids}, None
    from ..phases import load_phase_library

    library = load_phase_library(library_source)
    known = {int(i) for i in library.ids}
    missing = [i for i in ids if i not in known]
    if missing:
        raise InputError(
            f"phase ids {missing} are not in the phase library {library_source} "
            f"(ids {sorted(known)})",
            source=phases_path,
        )
    names = {i: library.name_of(i) for i in ids}
    densities = {name: float(library.by_name(name).density) for name in names.values()}
    return names, densities


# --------------------------------------------------------------------------------------------
# progress and atomic output
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _steps(total: int, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A rich progress bar over the analysis steps (stderr; nothing when quiet)."""
    if quiet:
        yield lambda description: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]analyze[/bold] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with progress:
        task = progress.add_task("start", total=total)
        first = [True]

        def advance(description: str) -> None:
            if not first[0]:
                progress.advance(task)
            first[0] = False
            progress.update(task, description=description)

        yield advance
        progress.update(task, completed=total)


def _publish(files: dict[str, Callable[[Path], Any]], out: Path) -> None:
    """Write every output into a temporary sibling folder, then move them into `out` at once.

    Nothing appears in `out` unless every file was written: an error while writing removes the
    temporary folder. When `out` does not exist the folder is renamed into place in one step;
    otherwise each finished file replaces its namesake in `out` by a rename, and other files in
    `out` are left alone.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        for name, write in files.items():
            write(temporary / name)
        if out.exists():
            for name in files:
                os.replace(temporary / name, out / name)
        else:
            os.replace(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------


@app.command("analyze")
def analyze_command(
    particles: Path = typer.Option(
        ..., "--particles", help="Particle label volume (0 = background)."
    ),
    phases: Path = typer.Option(
        ..., "--phases", help="Phase label volume (phase-library ids, 0 = matrix)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Output folder (created; existing files of the same name are replaced)."
    ),
    voxel_size: str | None = typer.Option(
        None,
        "--voxel-size",
        help="Voxel size in um: one value or 'Z,Y,X' (default: from the particle file).",
    ),
    phase_library: str | None = typer.Option(
        None,
        "--phase-library",
        help="Phase library file (YAML/JSON) or preset name; without it phase k is 'phase<k>'.",
    ),
    threshold: float = typer.Option(
        0.99, "--threshold", help="A particle is free for phase i when vf_i > threshold."
    ),
    size_bins: str | None = typer.Option(
        None, "--size-bins", help="ESD class edges in um, e.g. '1,2,4,8' (default: sqrt(2) series)."
    ),
    include_border: bool = typer.Option(
        False,
        "--include-border",
        help="Count particles touching the volume border in liberation statistics.",
    ),
    min_esd_um: float = typer.Option(
        0.0, "--min-esd-um", help="Ignore particles with a smaller ESD (um)."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap replicates for LD confidence intervals (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (bootstrap, virtual sections)."),
    spectra: bool = typer.Option(
        False,
        "--spectra",
        help="Write liberation_spectrum.csv, size_distribution.csv, grain_particle_volume.csv.",
    ),
    stereology: bool = typer.Option(
        False, "--stereology", help="Write stereology.csv (2D sections vs 3D LD)."
    ),
    stereology_planes: int = typer.Option(
        16, "--stereology-planes", help="Virtual sections (per axis for 'axis')."
    ),
    stereology_orientation: str = typer.Option(
        "axis", "--stereology-orientation", help="axis | random"
    ),
    representativeness: bool = typer.Option(
        False, "--representativeness", help="Write representativeness.csv (needs --piece-size-um)."
    ),
    piece_size_um: str | None = typer.Option(
        None, "--piece-size-um", help="Piece size in um: one value or 'Z,Y,X'."
    ),
    resolution_um: float | None = typer.Option(
        None,
        "--resolution-um",
        help="Scan resolution; ESD < 2 x resolution is dropped in representativeness.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, no closing line."),
) -> None:
    """Measure a particle and a phase label volume: particles.csv (+ .parquet), grains.csv,
    liberation.csv, summary.json, and on request the spectra, stereology and representativeness CSVs."""
    import pandas as pd

    from ..liberation import (
        grain_particle_volume,
        liberation_spectrum,
        liberation_table,
        measurement_summary,
        size_distribution,
        stereology_comparison,
    )
    from ..measure import grain_table, label_grains, particle_table

    # ---- arguments (checked before anything is read or written)
    spacing_given = _floats(voxel_size, "--voxel-size")
    spacing = (
        None if spacing_given is None else normalize_spacing(spacing_given, 3, name="--voxel-size")
    )
    if not (0.0 <= threshold < 1.0):
        raise InputError(f"must lie in [0, 1), got {threshold:g}", source="--threshold")
    edges = _floats(size_bins, "--size-bins")
    if edges is not None and (len(edges) < 2 or np.any(np.diff(edges) <= 0) or min(edges) < 0):
        raise InputError(
            f"need at least two increasing non-negative edges, got {edges}", source="--size-bins"
        )
    if min_esd_um < 0:
        raise InputError(f"must be non-negative, got {min_esd_um:g}", source="--min-esd-um")
    if bootstrap < 0:
        raise InputError(f"must be non-negative, got {bootstrap}", source="--bootstrap")
    if stereology_orientation not in ("axis", "random"):
        raise InputError(
            f"must be 'axis' or 'random', got {stereology_orientation!r}",
            source="--stereology-orientation",
        )
    if stereology and stereology_planes < 1:
        raise InputError(f"must be positive, got {stereology_planes}", source="--stereology-planes")
    piece = None
    if representativeness:
        if piece_size_um is None:
            raise InputError("--representativeness needs --piece-size-um", source="--piece-size-um")
        piece = normalize_spacing(
            _floats(piece_size_um, "--piece-size-um"), 3, name="--piece-size-um"
        )
    if resolution_um is not None and not resolution_um > 0:
        raise InputError(f"must be positive, got {resolution_um:g}", source="--resolution-um")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", source=out)

    n_steps = 5 + int(spectra) + int(stereology) + int(representativeness)
    with _steps(n_steps, quiet) as step:
        # ---- inputs
        step("reading volumes")
        particle_volume, particle_spacing = _read_labels(particles, spacing, "particle")
        phase_volume, phase_spacing = _read_labels(phases, spacing, "phase")
        if phase_volume.shape != particle_volume.shape:
            raise InputError(
                f"shape {phase_volume.shape} differs from the particle volume {particles} {particle_volume.shape}",
                source=phases,
            )
        if spacing is None:
            if particle_spacing is None:
                raise InputError("no voxel size in the file; give --voxel-size", source=particles)
            if phase_spacing is not None and not np.allclose(
                phase_spacing, particle_spacing, rtol=1e-6
            ):
                raise InputError(
                    f"voxel size {phase_spacing.tolist()} um differs from the particle volume's "
                    f"{particle_spacing.tolist()} um; give --voxel-size",
                    source=phases,
                )
            spacing = normalize_spacing(particle_spacing, 3, name=str(particles))
        if not particle_volume.any():
            raise InputError("the particle volume is empty (no label > 0)", source=particles)
        phase_names, densities = _phase_names(phase_volume, phases, phase_library)
        if not phase_names:
            raise InputError("no phase inside the volume (all ids are 0)", source=phases)

        # ---- measurements
        step("measuring particles")
        grains = label_grains(particle_volume, phase_volume)  # labelled once, used twice
        particles_df = particle_table(
            particle_volume, phase_volume, spacing=spacing, phase_names=phase_names, grains=grains
        )
        step("measuring grains")
        grains_df = grain_table(
            particle_volume, phase_volume, spacing=spacing, phase_names=phase_names, grains=grains
        )

        step("liberation")
        names = list(phase_names.values())
        options = {"exclude_border": not include_border, "min_esd_um": min_esd_um}
        try:
            liberation = liberation_table(
                particles_df,
                phases=names,
                threshold=threshold,
                size_bins_um=edges,
                n_bootstrap=bootstrap,
                rng=seed,
                **options,
            )
        except InputError as error:
            raise InputError(error.reason, source=particles) from None
        summary = measurement_summary(
            particles_df, liberation, phases=names, spacing=spacing, threshold=threshold,
            include_border=include_border, min_esd_um=min_esd_um, n_grains=len(grains_df),
        )
        n_counted = summary["n_particles_counted"]
        summary["phase_ids"] = {name: k for k, name in phase_names.items()}
        summary["inputs"] = {
            "particles": str(particles), "phases": str(phases), "phase_library": phase_library,
        }
        if bootstrap:
            summary["bootstrap_replicates"] = bootstrap

        extras: dict[str, pd.DataFrame] = {}
        if spectra:
            step("spectra and size distributions")
            extras["liberation_spectrum.csv"] = liberation_spectrum(
                particles_df, phases=names, **options
            )
            extras["size_distribution.csv"] = size_distribution(
                particles_df, densities=densities, phases=names, size_bins_um=edges, **options
            )
            extras["grain_particle_volume.csv"] = pd.concat(
                [
                    grain_particle_volume(
                        grains_df, particles_df, name, exclude_border=not include_border
                    ).assign(phase=name)
                    for name in names
                ],
                ignore_index=True,
            )
        if stereology:
            step("virtual sections (stereology)")
            extras["stereology.csv"] = stereology_comparison(
                particle_volume,
                phase_volume,
                spacing=spacing,
                phase_names=phase_names,
                threshold=threshold,
                size_bins_um=edges,
                n_planes=stereology_planes,
                orientation=stereology_orientation,  # type: ignore[arg-type]
                exclude_border=not include_border,
                min_esd_um=min_esd_um,
                rng=seed,
            )
        if representativeness:
            step("representativeness")
            from ..stats import representativeness as representativeness_table

            try:
                extras["representativeness.csv"] = representativeness_table(
                    particle_volume,
                    spacing=spacing,
                    piece_size_um=piece,
                    esd_bins_um=edges,
                    resolution_um=resolution_um,
                )
            except InputError as error:
                raise InputError(error.reason, source="--piece-size-um") from None

        # ---- outputs, all or nothing
        step("writing outputs")
        from .._shared import write_json_atomic

        files: dict[str, Callable[[Path], Any]] = {
            "particles.csv": lambda p: particles_df.to_csv(p, index=False),
            "particles.parquet": lambda p: particles_df.to_parquet(p, index=False),
            "grains.csv": lambda p: grains_df.to_csv(p, index=False),
            "liberation.csv": lambda p: liberation.to_csv(p, index=False),
            "summary.json": lambda p: write_json_atomic(p, summary),
        }
        for name, table in extras.items():
            files[name] = lambda p, table=table: table.to_csv(p, index=False)
        _publish(files, out)

    if not quiet:
        ld = ", ".join(
            f"{k} {v:.3f}" if v is not None and math.isfinite(v) else f"{k} n/a"
            for k, v in summary["liberation_degree"].items()
        )
        typer.echo(
            f"wrote {out}: {len(particles_df)} particles ({n_counted} counted), liberation degree {ld}"
        )
