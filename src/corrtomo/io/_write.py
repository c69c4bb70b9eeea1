"""Atomic writers: TIFF volumes (ImageJ or OME), 2D TIFF images and coloured label PNGs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError, atomic_path, normalize_spacing

_IMAGEJ_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_BIGTIFF_BYTES = 2**32 - 2**25  # leave room for tags and offsets below 4 GiB


def write_tiff(
    path: str | os.PathLike,
    data: Any,
    *,
    spacing: float | Sequence[float],
    compression: str | None = "zlib",
    metadata_format: str = "auto",
) -> Path:
    """Write a 3D image as a TIFF stack that records its voxel size, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file. Written to a temporary sibling and renamed into place, so an interrupted
        write leaves nothing at `path` (and an existing file stays as it was).
    data : (Z, Y, X) array-like (numpy, memmap, Zarr or Dask)
        Voxels, axis order (z, y, x). Zarr and Dask input are written one plane at a time.
        The data type is kept (label images stay integer; booleans become uint8).
    spacing : float or sequence of 3 float
        Voxel size (z, y, x) in micrometres.
    compression : str or None
        Any tifffile compression (``"zlib"``, ``"zstd"``, ``"lzw"``, ...) or ``None``. An
        uncompressed file can be memory-mapped by `read_volume`.
    metadata_format : {"auto", "imagej", "ome"}
        ``"imagej"`` writes an ImageJ hyperstack (``spacing``/``unit`` and resolution, opens
        calibrated in Fiji; uint8, uint16 and float32 only, below 4 GiB). ``"ome"`` writes
        OME-TIFF (``PhysicalSizeX/Y/Z`` in µm, any type, BigTIFF when large). ``"auto"`` takes
        ImageJ where it can and OME otherwise. Both also set the TIFF resolution tags.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    InputError
        If `data` is not 3D, `spacing` is invalid, or ImageJ is asked for a type or size it
        cannot hold.
    """
    import tifffile

    target = Path(path)
    voxel_size = normalize_spacing(spacing, 3, name="spacing")
    shape, dtype = _shape_dtype(data)
    if len(shape) != 3:
        raise InputError(f"expected a 3D (Z, Y, X) array, got shape {shape}", source="data")
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    dtype = dtype.newbyteorder("=")
    nbytes = int(np.prod(shape)) * dtype.itemsize
    imagej_ok = dtype in _IMAGEJ_TYPES and nbytes < _BIGTIFF_BYTES
    if metadata_format not in ("auto", "imagej", "ome"):
        raise InputError(
            f"must be 'auto', 'imagej' or 'ome', got {metadata_format!r}", source="metadata_format"
        )
    if metadata_format == "imagej" and not imagej_ok:
        raise InputError(
            f"ImageJ TIFF holds uint8, uint16 or float32 below 4 GiB; got {dtype} and {nbytes} "
            "bytes (use metadata_format='ome')",
            source=target,
        )
    imagej = metadata_format == "imagej" or (metadata_format == "auto" and imagej_ok)
    z_um, y_um, x_um = (float(v) for v in voxel_size)
    options: dict[str, Any] = {"photometric": "minisblack", "compression": compression}
    if imagej:
        options.update(
            imagej=True,
            resolution=(1.0 / x_um, 1.0 / y_um),
            metadata={"axes": "ZYX", "spacing": z_um, "unit": "um"},
        )
    else:
        options.update(
            ome=True,
            bigtiff=nbytes >= _BIGTIFF_BYTES,
            resolution=(1e4 / x_um, 1e4 / y_um),
            resolutionunit="CENTIMETER",
            metadata={
                "axes": "ZYX",
                # deterministic, so that the same data written twice gives identical bytes
                "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"corrtomo:{target.name}:{shape}:{dtype}:{voxel_size}")),
                **{f"PhysicalSize{a}": v for a, v in zip("ZYX", (z_um, y_um, x_um), strict=True)},
                **{f"PhysicalSize{a}Unit": "µm" for a in "ZYX"},
            },
        )
    with atomic_path(target) as temporary:
        if isinstance(data, np.ndarray):
            tifffile.imwrite(temporary, np.asarray(data, dtype=dtype), **options)
        else:
            tifffile.imwrite(temporary, _planes(data, dtype), shape=shape, dtype=dtype, **options)
    return target


def _shape_dtype(data: Any) -> tuple[tuple[int, ...], np.dtype]:
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    return tuple(int(n) for n in data.shape), np.dtype(data.dtype)


def _planes(data: Any, dtype: np.dtype) -> Iterator[np.ndarray]:
    """Yield the z planes of a Zarr or Dask array, computing one block of planes at a time."""
    chunks = getattr(data, "chunks", None)
    if chunks and isinstance(chunks[0], tuple):  # dask: chunk sizes per axis
        step = max(1, int(chunks[0][0]))
    elif chunks:
        step = max(1, int(chunks[0]))
    else:
        step = 1
    for start in range(0, int(data.shape[0]), step):
        block = data[start : start + step]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block, dtype=dtype)
        yield from block


def write_image2d(
    path: str | os.PathLike,
    array: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    compression: str | None = "zlib",
) -> Path:
    """Write a 2D image (BSE image, EDS map, mineral map) as a TIFF, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file.
    array : (Y, X) or (Y, X, 3|4) ndarray
        Grey-value, label or RGB(A) image, axis order (row, column); the type is kept.
    spacing : float or sequence of 2 float, optional
        Pixel size (y, x) in micrometres, recorded in the resolution tags.
    compression : str or None
        tifffile compression.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    InputError
        If `array` is not 2D (or 2D RGB/RGBA).
    """
    import tifffile

    image = np.asarray(array)
    rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    if image.ndim != 2 and not rgb:
        raise InputError(f"expected a 2D image, got shape {image.shape}", source="array")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8)
    options: dict[str, Any] = {
        "photometric": "rgb" if rgb else "minisblack",
        "compression": compression,
    }
    if spacing is not None:
        y_um, x_um = normalize_spacing(spacing, 2, name="spacing")
        options.update(resolution=(1e4 / x_um, 1e4 / y_um), resolutionunit="CENTIMETER")
    with atomic_path(path) as temporary:
        tifffile.imwrite(temporary, image, **options)
    return Path(path)


def write_label_png(
    path: str | os.PathLike,
    labels: Any,
    colors: Mapping[int, Any] | None = None,
) -> Path:
    """Write a 2D label map as an RGB PNG, one colour per label, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (PNG whatever its suffix).
    labels : (Y, X) ndarray of int
        Label image (phase ids or particle labels); 0 is background.
    colors : dict of int to colour, optional
        Colour per label: ``(r, g, b)`` in 0..255, ``(r, g, b)`` floats in 0..1, or
        ``"#rrggbb"``. Labels without a colour get a fixed palette colour (label 0 black).

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    InputError
        If `labels` is not a 2D integer array or a colour cannot be read.
    """
    from PIL import Image

    from ._colors import palette_color, parse_color

    image = np.asarray(labels)
    if image.ndim != 2 or image.dtype.kind not in "biu":
        raise InputError(
            f"expected a 2D integer label image, got shape {image.shape} and type {image.dtype}",
            source="labels",
        )
    values, inverse = np.unique(image, return_inverse=True)
    table = dict(colors or {})
    lut = np.zeros((values.size, 3), dtype=np.uint8)
    for i, value in enumerate(values.tolist()):
        color = table.get(value)
        lut[i] = (
            parse_color(color, source=f"colors[{value}]")
            if color is not None
            else palette_color(value)
        )
    rgb = lut[inverse.reshape(image.shape)]
    with atomic_path(path) as temporary:
        Image.fromarray(rgb).save(temporary, format="PNG")
    return Path(path)
