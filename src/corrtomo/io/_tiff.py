"""TIFF volumes: multipage, ImageJ hyperstacks and OME-TIFF, with their voxel size."""

from __future__ import annotations

import warnings
import weakref
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

from ._units import micrometres_per_unit

_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre


def read_tiff_volume(path: Path) -> tuple[Any, np.ndarray | None, dict]:
    """Open the first series of a TIFF lazily; return (data, spacing per axis, metadata).

    The spacing has one entry per axis of `data` (NaN where unknown).
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = tuple(series.shape), series.axes
            if "S" in axes and shape[axes.index("S")] > 1:
                raise InputError(
                    f"is an RGB image (shape {shape}, axes {axes}), expected a grey-value volume",
                    source=path,
                )
            if sum(n > 1 for n in shape) <= 2:
                raise InputError(f"is 2D, expected a 3D volume (shape {shape})", source=path)
            xyz, kind = tiff_spacing_xyz(tif)
    except InputError:
        raise
    except Exception as error:  # tifffile raises many types on corrupt files
        raise InputError(f"cannot be read as TIFF ({error})", source=path) from None

    xyz = _complete_z(xyz, path)
    per_axis = _spacing_per_axis(axes, xyz)
    metadata = {"format": kind, "axes": axes}
    try:
        data = tifffile.memmap(path, series=0, mode="r")
        metadata["storage"] = "memmap"
    except (ValueError, NotImplementedError):
        data = _open_as_zarr(path)
        metadata["storage"] = "zarr"
    return data, per_axis, metadata


def _open_as_zarr(path: Path) -> Any:
    """A read-only Zarr view of a compressed TIFF; the file closes when the array is freed."""
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    try:
        array = zarr.open(store, mode="r")
        if isinstance(array, zarr.Group):
            array = array["0"]
    except Exception:
        store.close()
        raise
    weakref.finalize(array, store.close)
    return array


def tiff_spacing_xyz(tif: Any) -> tuple[dict[str, float], str]:
    """Voxel size in micrometres by axis letter (keys among ``"X"``, ``"Y"``, ``"Z"``).

    Looks at OME-XML ``PhysicalSize*`` first, then ImageJ ``unit``/``spacing`` with the
    resolution tags, then plain TIFF ``XResolution``/``YResolution`` with ``ResolutionUnit``
    (inch or centimetre). Returns the sizes found and the flavour of TIFF.
    """
    if tif.is_ome and tif.ome_metadata:
        found = _ome_spacing(tif.ome_metadata)
        if found:
            return found, "ome-tiff"
    page = tif.pages.first
    x_resolution = _tag_ratio(page, "XResolution")
    y_resolution = _tag_ratio(page, "YResolution")
    if tif.is_imagej:
        imagej = tif.imagej_metadata or {}
        um = micrometres_per_unit(imagej.get("unit"))
        found = {}
        if um is not None:
            if x_resolution:
                found["X"] = um / x_resolution
            if y_resolution:
                found["Y"] = um / y_resolution
            if imagej.get("spacing"):
                found["Z"] = float(imagej["spacing"]) * um
        if found:
            return found, "imagej-tiff"
    unit_tag = page.tags.get("ResolutionUnit")
    um = _RESOLUTION_UNIT_UM.get(int(unit_tag.value) if unit_tag is not None else 2)
    found = {}
    if um is not None:
        if x_resolution:
            found["X"] = um / x_resolution
        if y_resolution:
            found["Y"] = um / y_resolution
    kind = "imagej-tiff" if tif.is_imagej else "ome-tiff" if tif.is_ome else "tiff"
    return found, kind


def _tag_ratio(page: Any, name: str) -> float | None:
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    try:
        ratio = value[0] / value[1] if isinstance(value, tuple) else float(value)
    except (ZeroDivisionError, TypeError, IndexError):
        return None
    return ratio if np.isfinite(ratio) and ratio > 0 else None


def _ome_spacing(xml: str) -> dict[str, float]:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}
    pixels = next((element for element in root.iter() if element.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    found = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is None:
            continue
        um = micrometres_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        try:
            size = float(value) * um if um is not None else None
        except ValueError:
            size = None
        if size is not None and np.isfinite(size) and size > 0:
            found[axis] = size
    return found


def _complete_z(xyz: dict[str, float], path: Path) -> dict[str, float]:
    """Take z equal to x (with a warning) when the file gives an isotropic x, y but no z."""
    if "Z" not in xyz and "X" in xyz and np.isclose(xyz["X"], xyz.get("Y", np.nan)):
        warnings.warn(
            f"{path}: the file gives the pixel size ({xyz['X']:g} um) but no slice spacing; "
            "taking z equal to x. Pass spacing= to set it.",
            UserWarning,
            stacklevel=4,
        )
        xyz = {**xyz, "Z": xyz["X"]}
    return xyz


def _spacing_per_axis(axes: str, xyz: dict[str, float]) -> np.ndarray:
    """One spacing per axis letter; a stack axis (I, Q, T, ...) stands for Z when Z is absent."""
    spacing = np.full(len(axes), np.nan)
    stack_axis_done = "Z" in axes
    for i, letter in enumerate(axes):
        if letter in ("X", "Y", "Z"):
            spacing[i] = xyz.get(letter, np.nan)
        elif not stack_axis_done and letter not in ("C", "S"):
            spacing[i] = xyz.get("Z", np.nan)
            stack_axis_done = True
    return spacing
