"""Saving and loading a :class:`UNetModel`: safetensors weights plus a JSON description.

A saved model is a folder (conventionally ``NAME.unet``) holding

- ``weights.safetensors``: the network's ``state_dict`` (safetensors: tensors only, no pickle,
  so loading a file from elsewhere cannot run code);
- ``model.json``: ``format`` (``"corrtomo.unet"``), ``format_version``, the corrtomo version,
  the architecture, class ids and names, voxel size, normalisation, training patch shape, the
  training summary and the SHA-256 of the weights file.

The folder is written atomically (a temporary sibling renamed into place).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..._shared import InputError, atomic_directory, file_sha256, to_jsonable
from .._classifier import _class_names, check_voxel_size
from ._model import UNet3D, UNetArchitecture, UNetModel

__all__ = ["load_unet", "save_unet"]

FORMAT = "corrtomo.unet"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


def save_unet(model: UNetModel, path: str | os.PathLike) -> Path:
    """Save a U-Net model as a folder with ``weights.safetensors`` and ``model.json``.

    Parameters
    ----------
    model : UNetModel
    path : str or os.PathLike
        The folder (conventionally ``*.unet``); an existing one is replaced only once the new one
        is complete.

    Returns
    -------
    Path of the folder.
    """
    from safetensors.torch import save_file

    from ... import __version__

    path = Path(path)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.network.state_dict().items()}
    with atomic_directory(path) as temporary:
        save_file(state, str(temporary / WEIGHTS), metadata={"format": "pt"})
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "corrtomo_version": __version__,
            "architecture": model.architecture.to_dict(),
            "class_ids": [int(c) for c in model.class_ids],
            "class_names": [str(n) for n in model.class_names],
            "voxel_size_um": [float(v) for v in model.voxel_size_um],
            "normalisation": {k: float(v) for k, v in dict(model.normalisation).items()},
            "patch_shape": [int(v) for v in model.patch_shape],
            "training": to_jsonable(dict(model.training)),
            "weights_file": WEIGHTS,
            "sha256": file_sha256(temporary / WEIGHTS),
        }
        (temporary / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def _read_meta(source: Path) -> dict:
    if not source.is_file():
        raise InputError("model description not found (is this a folder saved by save_unet?)", source=source)
    try:
        meta = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"not valid JSON ({error})", source=source) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not a corrtomo U-Net model description (format is not {FORMAT!r})", source=source)
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise InputError(f"format_version must be an integer, got {version!r}", source=source)
    if version > FORMAT_VERSION:
        raise InputError(f"model format {version} is newer than this corrtomo reads ({FORMAT_VERSION}); "
                         "update corrtomo", source=source)
    return meta


def _parse(meta: dict, source: Path) -> dict[str, Any]:
    """The typed fields of model.json; InputError naming the field otherwise."""
    key = "architecture"
    try:
        arch = meta[key]
        known = {f.name for f in fields(UNetArchitecture)}
        if not isinstance(arch, dict) or set(arch) - known:
            raise ValueError(f"unknown keys {sorted(set(arch) - known)}" if isinstance(arch, dict) else "not a dict")
        architecture = UNetArchitecture(**{k: int(v) for k, v in arch.items()})
        key = "class_ids"
        class_ids = tuple(int(c) for c in meta[key])
        key = "class_names"
        class_names = tuple(str(n) for n in meta[key])
        key = "voxel_size_um"
        voxel_size = tuple(float(v) for v in meta[key])
        key = "normalisation"
        normalisation = {str(k): float(v) for k, v in dict(meta[key]).items()}
        key = "patch_shape"
        patch_shape = tuple(int(v) for v in meta[key])
        key = "training"
        training = dict(meta.get(key) or {})
    except KeyError:
        raise InputError(f"{key!r} is missing", source=source) from None
    except (TypeError, ValueError) as error:
        raise InputError(f"{key!r} is invalid ({error})", source=source) from None
    if len(class_ids) != architecture.n_phase_classes or len(class_names) != len(class_ids):
        raise InputError(f"{len(class_ids)} class ids and {len(class_names)} names for "
                         f"{architecture.n_phase_classes} phase outputs", source=source)
    if len(set(class_ids)) != len(class_ids) or any(not 0 <= c <= 255 for c in class_ids):
        raise InputError(f"class ids must be distinct within 0..255, got {list(class_ids)}", source=source)
    if len(voxel_size) != 3 or not all(math.isfinite(v) and v > 0 for v in voxel_size):
        raise InputError(f"voxel_size_um must be 3 positive numbers, got {list(voxel_size)}", source=source)
    if len(patch_shape) != 3 or any(p < 1 for p in patch_shape):
        raise InputError(f"patch_shape must be 3 positive integers, got {list(patch_shape)}", source=source)
    if set(normalisation) != {"center", "scale"} or not normalisation["scale"] > 0:
        raise InputError(f"normalisation must be {{center, scale > 0}}, got {normalisation}", source=source)
    return {"architecture": architecture, "class_ids": class_ids, "class_names": class_names,
            "voxel_size_um": voxel_size, "normalisation": normalisation, "patch_shape": patch_shape,
            "training": training}


def _check_classes(parsed: dict, phase_names: Any, source: Path) -> None:
    """Every model class but the matrix (id 0) must be in the library, with the same name."""
    library = _class_names(phase_names)
    for class_id, name in zip(parsed["class_ids"], parsed["class_names"], strict=True):
        if class_id == 0:
            continue
        if class_id not in library:
            known = ", ".join(f"{k} {v}" for k, v in sorted(library.items()))
            raise InputError(f"class {name!r} (id {class_id}) is not in the phase library (known: {known})",
                             source=source)
        if library[class_id] != name:
            raise InputError(f"class {name!r} (id {class_id}) is {library[class_id]!r} in the phase library",
                             source=source)


def load_unet(
    path: str | os.PathLike,
    *,
    spacing: float | Sequence[float] | None = None,
    phase_names: Mapping[int, str] | Any = None,
) -> UNetModel:
    """Load a model saved by :func:`save_unet`, checking that it fits the data it is used for.

    Parameters
    ----------
    path : str or os.PathLike
        The model folder (or its ``model.json``).
    spacing : float or (3,) floats, optional
        Voxel size of the volume to segment (micrometres); must match the model's within 2 %.
    phase_names : dict of int to str, or PhaseLibrary, optional
        The phase library: every class of the model other than the matrix (id 0) must be in it
        under the same id and name (the library may hold more phases).

    Returns
    -------
    UNetModel
        With the network on the CPU in evaluation mode.

    Raises
    ------
    InputError
        One line naming the file: a missing folder, description or weights file, invalid JSON,
        another format or a newer format version, weights that differ from the recorded checksum
        or do not fit the architecture, another voxel size, classes missing from the library.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.is_file() and folder.name == MODEL_JSON:
        folder = folder.parent
    if not folder.is_dir():
        raise InputError("U-Net model folder not found", source=folder)
    source = folder / MODEL_JSON
    meta = _read_meta(source)
    parsed = _parse(meta, source)
    weights = folder / str(meta.get("weights_file", WEIGHTS))
    if not weights.is_file():
        raise InputError(f"weights file not found (named in {MODEL_JSON})", source=weights)
    if "sha256" in meta and meta["sha256"] != file_sha256(weights):
        raise InputError(f"weights file does not match the checksum in {MODEL_JSON} (changed after saving)",
                         source=weights)
    if spacing is not None:
        check_voxel_size(parsed["voxel_size_um"], spacing, source=str(source))
    if phase_names is not None:
        _check_classes(parsed, phase_names, source)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"not a readable safetensors file ({error})", source=weights) from None
    try:
        network = UNet3D(parsed["architecture"])
    except ValueError as error:
        raise InputError(f"'architecture' is invalid ({error})", source=source) from None
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = " ".join(str(error).split())
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise InputError(f"weights do not fit the architecture in {MODEL_JSON} ({reason})", source=weights) from None
    network.eval()
    return UNetModel(
        network=network, class_ids=parsed["class_ids"], class_names=parsed["class_names"],
        voxel_size_um=parsed["voxel_size_um"], normalisation=parsed["normalisation"],
        patch_shape=parsed["patch_shape"], training=parsed["training"],
    )
