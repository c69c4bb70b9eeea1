"""A folder of 2D slices read as one lazy 3D volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

from ._volume import TIFF_SUFFIXES

SLICE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")


def list_slices(folder: Path) -> list[Path]:
    """Image files in `folder` (hidden files skipped), in natural sort order."""
    from natsort import natsorted, ns

    files = [
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.suffix.lower() in SLICE_SUFFIXES
    ]
    return natsorted(files, key=lambda entry: entry.name, alg=ns.IGNORECASE)


def slice_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a 2D image file, from its header only."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                return tuple(series.shape), np.dtype(series.dtype)
        with open_pil(path) as image:
            return _pil_shape_dtype(image)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot be read as an image ({error})", source=path) from None


def _pil_shape_dtype(image: Any) -> tuple[tuple[int, ...], np.dtype]:
    width, height = image.size
    bands = len(image.getbands())
    mode_dtype = {
        "1": np.bool_,
        "L": np.uint8,
        "P": np.uint8,
        "I;16": np.uint16,
        "I;16B": np.uint16,
        "I;16L": np.uint16,
        "I": np.int32,
        "F": np.float32,
    }
    dtype = np.dtype(mode_dtype.get(image.mode, np.uint8))
    shape = (height, width) if bands == 1 else (height, width, bands)
    return shape, dtype


def read_slice(path: Path) -> np.ndarray:
    """Read one 2D image file into memory (TIFF via tifffile, others via Pillow)."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            array = tifffile.imread(path, series=0)
        else:
            with open_pil(path) as image:
                array = np.asarray(image)
    except Exception as error:
        raise InputError(f"cannot be read as an image ({error})", source=path) from None
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def open_pil(path: Path) -> Any:
    """Open an image with Pillow, allowing the very large images that SEM mosaics are."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        # A 20000 x 20000 SEM mosaic is not a decompression bomb.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def read_slice_folder(folder: Path) -> tuple[Any, np.ndarray | None, dict]:
    """Stack the folder's slices (natural order) into a lazy (Z, Y, X) Dask array.

    Raises
    ------
    InputError
        If the folder holds no image, one image only, RGB images, or images of different
        shapes or types (the message names the first odd file).
    """
    import dask
    import dask.array as da

    files = list_slices(folder)
    if not files:
        suffixes = ", ".join(sorted({s.lstrip(".") for s in SLICE_SUFFIXES}))
        raise InputError(f"is a folder with no image slices ({suffixes})", source=folder)
    shape, dtype = slice_header(files[0])
    if len(shape) != 2:
        what = "an RGB image" if len(shape) == 3 and shape[-1] in (3, 4) else f"shape {shape}"
        raise InputError(f"is {what}, expected a 2D grey-value slice", source=files[0])
    for path in files[1:]:
        other_shape, other_dtype = slice_header(path)
        if other_shape != shape or other_dtype != dtype:
            raise InputError(
                f"has shape {other_shape} and type {other_dtype}, but {files[0].name} has "
                f"shape {shape} and type {dtype}; all slices must match",
                source=path,
            )
    if len(files) == 1:
        raise InputError(
            f"holds a single slice ({files[0].name}), expected a 3D volume", source=folder
        )
    planes = [
        da.from_delayed(dask.delayed(read_slice)(path), shape=shape, dtype=dtype)[np.newaxis]
        for path in files
    ]
    data = da.concatenate(planes, axis=0)
    spacing = _first_slice_spacing(files[0])
    metadata = {"format": "slices", "files": [path.name for path in files]}
    return data, spacing, metadata


def _first_slice_spacing(path: Path) -> np.ndarray | None:
    """Voxel size from the first TIFF slice's metadata (z = x, with a warning), if it has one."""
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return None
    import tifffile

    from ._tiff import _complete_z, tiff_spacing_xyz

    with tifffile.TiffFile(path) as tif:
        xyz, _ = tiff_spacing_xyz(tif)
    xyz = _complete_z(xyz, path.parent)
    if not all(axis in xyz for axis in "ZYX"):
        return None
    return np.array([xyz["Z"], xyz["Y"], xyz["X"]])
