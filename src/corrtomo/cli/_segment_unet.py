"""``corrtomo segment unet``: train a 3D U-Net from sparse labels and/or apply a saved one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from .._shared import InputError
from ._progress import stage_progress
from ._segment import _read_like, _segment_inputs, _write, segment


@segment.command("unet")
def unet_command(
    volume: Path = typer.Option(..., "--volume", help="CT volume (TIFF, Zarr, HDF5, raw, slice folder)."),
    out: Path = typer.Option(..., "--out", help="Phase volume to write: PHASES.tif or PHASES.zarr (uint8 ids)."),
    voxel_size: float | None = typer.Option(None, "--voxel-size", help="Voxel size in um (if the file has none)."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Sparse label volume to train from: 0 unlabelled, phase ids, 255 matrix."),
    model: Path | None = typer.Option(None, "--model", help="Saved U-Net folder (NAME.unet) to apply."),
    save_model: Path | None = typer.Option(None, "--save-model", help="Where to save the trained U-Net (NAME.unet)."),
    phase_library: str | None = typer.Option(
        None, "--phase-library", help="Phase library (file or preset name) naming the label ids; checked on load."),
    foreground: Path | None = typer.Option(
        None, "--foreground", help="Particle foreground (non-zero = particle): minerals only there, 0 outside."),
    particles_out: Path | None = typer.Option(
        None, "--particles-out", help="Also write the particle head (0 matrix, 1 core, 2 boundary), uint8."),
    foreground_out: Path | None = typer.Option(
        None, "--foreground-out",
        help="Also write the particle foreground of the particle head (uint8 0/1): its matrix probability smoothed "
             "and thresholded at the model's calibrated threshold, as the pipeline's particles.foreground: unet."),
    patch: str = typer.Option(
        "64", "--patch", help="Training patch and inference window: one edge or Z,Y,X edges (voxels), e.g. 24,80,80."),
    base_channels: int = typer.Option(16, "--base-channels", help="Channels of the first U-Net level."),
    levels: int = typer.Option(4, "--levels", help="U-Net resolutions."),
    steps: int = typer.Option(2000, "--steps", help="Training steps at most (early stopping may end sooner)."),
    overlap: float = typer.Option(0.5, "--overlap", help="Sliding-window overlap at inference."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present) | cpu | cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a 3D U-Net from sparse labels (--labels) or apply a saved one (--model); write the phases."""
    from ..segment.unet import UNetTrainingSettings, load_unet, predict_unet, save_unet, train_unet

    if (labels is None) == (model is None):
        raise InputError("give either --labels (train) or --model (apply)", source="segment unet")
    image, library, mask = _segment_inputs(volume, voxel_size, phase_library, foreground)
    spacing = image.spacing
    if library is not None:
        library = {int(i): library.name_of(int(i)) for i in library.ids}
    with stage_progress(quiet=quiet) as progress:
        if model is not None:
            network = load_unet(model, spacing=spacing, phase_names=library)
        else:
            label_volume = _read_like(labels, image, "labels")
            settings = UNetTrainingSettings(patch_shape=_patch_edges(patch), base_channels=base_channels, levels=levels,
                                            max_steps=steps, seed=seed, device=device)
            network = train_unet(image.data, label_volume.data, spacing=spacing, phase_names=library,
                                 settings=settings, progress=progress)
            if save_model is not None:
                save_unet(network, save_model)
        prediction = predict_unet(network, image.data, spacing=spacing, foreground=mask, overlap=overlap,
                                  device=device, particle=particles_out is not None,
                                  matrix=foreground_out is not None, progress=progress)
        phases = np.asarray(prediction.phases)
        _write(out, phases, spacing)
        if particles_out is not None:
            _write(particles_out, np.asarray(prediction.particle), spacing)
        if foreground_out is not None:
            _write(foreground_out, head_foreground(image.data, prediction.matrix, network, spacing), spacing)
    if not quiet:
        typer.echo(f"wrote {out}: {'x'.join(map(str, phases.shape))} voxels on {prediction.device}")


def head_foreground(image, matrix, model, spacing) -> np.ndarray:
    """The particle voxels (uint8 0/1) of the particle head's matrix probability (uint8
    ``round(255 p)``): smoothed by :func:`~corrtomo.segment.foreground_mask` and thresholded at
    the model's calibrated :attr:`~corrtomo.segment.unet.UNetModel.matrix_threshold`; the pillar
    is found in the CT `image`."""
    from ..segment import foreground_mask

    probability = np.asarray(matrix).astype(np.float32) / np.float32(255.0)  # as the pipeline stores it
    mask = foreground_mask(np.asarray(image), spacing=spacing, probabilities=probability,
                           matrix_threshold=model.matrix_threshold)
    return mask.astype(np.uint8)


def _patch_edges(text: str) -> tuple[int, ...]:
    """``--patch`` as one edge or three comma-separated edges."""
    try:
        edges = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"must be an integer or Z,Y,X integers, got {text!r}", source="--patch") from None
    if len(edges) not in (1, 3):
        raise InputError(f"must be 1 or 3 edges, got {text!r}", source="--patch")
    return edges
