"""``corrtomo segment``: phase segmentation (this module) and particle separation (``particles``,
registered on the same sub-app by ``_segment_particles``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .._shared import InputError
from ._app import app
from ._progress import stage_progress

segment = typer.Typer(
    help="Segment a CT volume: mineral phases (voxel classifier) and particles (watershed).",
    no_args_is_help=True,
)
app.add_typer(segment, name="segment")


def _read(path: Path, voxel_size: float | None, what: str):
    from ..io import read_volume

    if not path.exists():
        raise InputError("no such file or folder", source=path)
    try:
        return read_volume(path, spacing=voxel_size)
    except InputError as error:
        if voxel_size is None and "voxel size" in error.reason:
            raise InputError(f"{what} has no voxel size; pass --voxel-size", source=path) from None
        raise


def _read_like(path: Path, image, what: str):
    """A volume that must have `image`'s shape (its voxel size defaults to the image's)."""
    volume = _read(path, float(image.spacing[0]), what)
    if volume.shape != image.shape:
        raise InputError(f"{what} shape {volume.shape} differs from the volume shape {image.shape}", source=path)
    return volume


def _segment_inputs(volume: Path, voxel_size: float | None, phase_library: str | None, foreground: Path | None):
    """The CT volume, the phase library (None when not given) and the foreground mask (None when
    not given) of a segmentation command."""
    image = _read(volume, voxel_size, "volume")
    library = None
    if phase_library is not None:
        from ..phases import load_phase_library

        library = load_phase_library(phase_library)
    mask = None if foreground is None else _read_like(foreground, image, "foreground").data
    return image, library, mask


def _write(path: Path, data: np.ndarray, spacing) -> Path:
    from ..io import write_ome_zarr, write_tiff

    name = path.name.lower()
    if name.endswith((".tif", ".tiff")):
        return write_tiff(path, data, spacing=spacing)
    if name.endswith(".zarr"):
        return write_ome_zarr(path, data, spacing=spacing, labels=True)
    raise InputError("output must end in .tif, .tiff or .zarr", source=path)


@segment.command("phases")
def phases_command(
    volume: Path = typer.Option(..., "--volume", help="CT volume (TIFF, Zarr, HDF5, raw, slice folder)."),
    out: Path = typer.Option(..., "--out", help="Phase volume to write: PHASES.tif or PHASES.zarr (uint8 ids)."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in um (if the file has none)."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Sparse label volume to train from: 0 unlabelled, phase ids, 255 matrix."
    ),
    model: Path | None = typer.Option(None, "--model", help="Saved classifier (.skops) to apply."),
    save_model: Path | None = typer.Option(None, "--save-model", help="Where to save the trained classifier (.skops)."),
    phase_library: str | None = typer.Option(
        None, "--phase-library", help="Phase library (YAML/JSON file or preset name) naming the label ids."
    ),
    foreground: Path | None = typer.Option(
        None, "--foreground", help="Particle foreground mask (non-zero = particle); classify only there."
    ),
    uncertainty: Path | None = typer.Option(
        None, "--uncertainty", help="Also write the uncertainty map (1 - max probability), float32."
    ),
    n_estimators: int = typer.Option(64, "--trees", help="Trees of the random forest."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a phase classifier from sparse labels and/or apply a saved one; write the phases."""
    from ..segment import load_classifier, save_classifier, train_phase_classifier

    if labels is None and model is None:
        raise InputError("give --labels to train, --model to apply a saved classifier, or both", source="segment phases")
    if labels is not None and model is not None:
        raise InputError("give either --labels (train) or --model (apply), not both", source="segment phases")
    image, library, mask = _segment_inputs(volume, voxel_size, phase_library, foreground)
    spacing = image.spacing

    with stage_progress(quiet=quiet) as progress:
        if model is not None:
            classifier = load_classifier(model, expected_classes=library, voxel_size_um=spacing, require_all=False)
        else:
            label_volume = _read(labels, voxel_size if voxel_size is not None else float(spacing[0]), "labels")
            if label_volume.shape != image.shape:
                raise InputError(f"labels shape {label_volume.shape} differs from the volume shape {image.shape}",
                                 source=labels)
            label_data = label_volume.data
            if library is not None:
                names = library
            else:
                present = np.unique(np.asarray(label_volume.to_numpy()))
                names = {int(i): f"phase{int(i)}" for i in present if 0 < i < 255}
            try:
                classifier = train_phase_classifier(
                    image.data, label_data, spacing=spacing, class_names=names, foreground=mask,
                    n_estimators=n_estimators, rng=seed, progress=progress,
                )
            except InputError as error:
                if error.source == "labels":
                    raise InputError(error.reason, source=labels) from None
                raise
            if save_model is not None:
                save_classifier(classifier, save_model)
        if uncertainty is not None:
            result = classifier.predict_proba(image.data, spacing=spacing, foreground=mask, progress=progress)
            phases, uncertainty_map = result.phases, result.uncertainty
        else:
            phases = classifier.predict(image.data, spacing=spacing, foreground=mask, progress=progress)
            uncertainty_map = None
        _write(out, phases, spacing)
        if uncertainty_map is not None:
            _write(uncertainty, uncertainty_map, spacing)
    if not quiet:
        counts = np.bincount(phases.ravel(), minlength=256)
        solids = counts[1:].sum()
        shares = ", ".join(
            f"{classifier.class_names.get(int(i), i)} {counts[i] / solids:.3f}" for i in np.flatnonzero(counts[1:]) + 1
        ) if solids else "no particle voxels"
        typer.echo(f"wrote {out}: {'x'.join(map(str, phases.shape))} voxels; {shares}")
