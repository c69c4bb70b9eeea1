"""Zarr (v2/v3) and OME-Zarr (NGFF 0.4/0.5 multiscales): read any, write OME-Zarr 0.5."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError, atomic_directory, normalize_spacing

from ._hdf5 import spacing_from_attributes
from ._units import micrometres_per_unit

NGFF_VERSION = "0.5"
_SPATIAL = ("z", "y", "x")


# --------------------------------------------------------------------------------------- read
def read_zarr(
    path: Path, *, dataset: str | None, level: int
) -> tuple[Any, np.ndarray | None, dict]:
    """Open a Zarr array, a plain group's array, or one level of an OME-Zarr image, read-only.

    Returns the Zarr array (nothing read), the voxel size per axis in micrometres (NaN where
    unknown, ``None`` when the store has none) and metadata.

    Raises
    ------
    InputError
        If the store cannot be opened, `level` does not exist, or a plain group holds several
        arrays and `dataset` does not name one.
    """
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as error:
        raise InputError(f"cannot be opened as Zarr ({error})", source=path) from None
    if isinstance(node, zarr.Array):
        return node, spacing_from_attributes(dict(node.attrs), node.ndim), {"format": "zarr"}
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if multiscales:
        return _read_multiscale(node, path, multiscales[0], level, ome.get("version"))
    names = sorted(node.array_keys())
    if dataset is None:
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise InputError(
                f"is a Zarr group without OME multiscales; name one of its arrays with "
                f"dataset= (arrays: {listed})",
                source=path,
            )
        dataset = names[0]
    try:
        array = node[dataset]
    except KeyError:
        raise InputError(f"has no array {dataset!r}", source=path) from None
    if not isinstance(array, zarr.Array):
        raise InputError(f"{dataset!r} is a group, not an array", source=path)
    spacing = spacing_from_attributes({**attrs, **dict(array.attrs)}, array.ndim)
    return array, spacing, {"format": "zarr", "dataset": dataset}


def _read_multiscale(
    group: Any, path: Path, multiscale: dict, level: int, version: str | None
) -> tuple[Any, np.ndarray | None, dict]:
    datasets = multiscale.get("datasets") or []
    if not 0 <= int(level) < len(datasets):
        raise InputError(
            f"has resolution levels 0..{len(datasets) - 1}, level {level} requested", source=path
        )
    entry = datasets[int(level)]
    try:
        array = group[entry["path"]]
    except KeyError:
        raise InputError(
            f"lists level {entry['path']!r} but has no such array", source=path
        ) from None
    ndim = array.ndim
    axes = [a if isinstance(a, dict) else {"name": a} for a in multiscale.get("axes") or []]
    if len(axes) != ndim:
        axes = [{"name": name, "type": "space"} for name in ("t", "c", *_SPATIAL)[-ndim:]]
    scale = np.ones(ndim)
    translation = np.zeros(ndim)
    for transforms in (
        entry.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for transform in transforms or []:
            if transform.get("type") == "scale" and "scale" in transform:
                scale = scale * np.asarray(transform["scale"], dtype=np.float64)
            elif transform.get("type") == "translation" and "translation" in transform:
                translation = translation + np.asarray(transform["translation"], dtype=np.float64)
    spacing = np.full(ndim, np.nan)
    missing_unit = []
    for i, axis in enumerate(axes):
        is_space = axis.get("type") == "space" or str(axis.get("name", "")).lower() in _SPATIAL
        if not is_space:
            continue
        unit = axis.get("unit")
        um = micrometres_per_unit(unit)
        if unit is None:
            missing_unit.append(i)
            um = 1.0
        if um is not None:
            spacing[i] = scale[i] * um
    if missing_unit:
        base = np.ones(len(missing_unit))
        level0 = _level_scale(datasets[0], multiscale)
        if level0 is not None and np.allclose(level0[missing_unit], base):
            spacing[missing_unit] = np.nan  # identity scale without unit: voxel units, no size
        else:
            warnings.warn(
                f"{path}: OME-Zarr axes have no unit; taking the scale as micrometres",
                UserWarning,
                stacklevel=5,
            )
    metadata = {
        "format": "ome-zarr",
        "ngff_version": version or multiscale.get("version"),
        "level": int(level),
        "n_levels": len(datasets),
        "level_path": entry["path"],
        "axes": [axis.get("name") for axis in axes],
        "translation": translation.tolist(),
        "name": multiscale.get("name"),
    }
    return array, spacing, metadata


def _level_scale(entry: dict, multiscale: dict) -> np.ndarray | None:
    scale = None
    for transforms in (
        entry.get("coordinateTransformations"),
        multiscale.get("coordinateTransformations"),
    ):
        for transform in transforms or []:
            if transform.get("type") == "scale" and "scale" in transform:
                value = np.asarray(transform["scale"], dtype=np.float64)
                scale = value if scale is None else scale * value
    return scale


# -------------------------------------------------------------------------------------- write
def write_ome_zarr(
    path: str | os.PathLike,
    data: Any,
    *,
    spacing: float | Sequence[float],
    chunks: int | Sequence[int] | None = None,
    n_levels: int = 1,
    compressor: str | None = "zstd",
    name: str | None = None,
    labels: bool | None = None,
) -> Path:
    """Write a 3D image as an OME-Zarr (NGFF 0.5, Zarr v3) multiscale image, atomically.

    The store is built in a temporary sibling folder and renamed into place when complete, so
    an interrupted write leaves nothing at `path`. Dask input is written chunk by chunk, never
    all in memory; each coarser level is computed from the level just written.

    Parameters
    ----------
    path : str or os.PathLike
        Output folder, conventionally ``name.ome.zarr``. An existing store there is replaced
        only after the new one is complete.
    data : (Z, Y, X) array-like (numpy, memmap, Zarr or Dask)
        Voxels, axis order (z, y, x).
    spacing : float or sequence of 3 float
        Voxel size (z, y, x) in micrometres of the full-resolution level.
    chunks : int or sequence of 3 int, optional
        Chunk shape on disk; default 64 per axis (or the whole axis when shorter).
    n_levels : int
        Number of resolution levels; level ``k`` is downsampled by ``2**k`` on every axis
        (odd sizes are padded by edge replication, so level ``k`` has ``ceil(n / 2**k)`` voxels).
    compressor : {"zstd", "lz4", "gzip", None}
        ``"zstd"`` and ``"lz4"`` use Blosc with byte shuffling; ``None`` stores chunks raw.
    name : str, optional
        Image name in the metadata; default the file name without ``.ome.zarr``.
    labels : bool, optional
        How to downsample: ``True`` takes the most frequent value of each 2x2x2 block (label
        images; ties go to the larger label, so background loses ties), ``False`` the mean
        (grey values; rounded back to integer types). Default: labels for boolean, 8-bit
        unsigned and 32/64-bit integer types, mean for 16-bit integers and floats.

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    InputError
        If `data` is not 3D, `spacing` is invalid, `n_levels` < 1 or `compressor` is unknown.

    Notes
    -----
    Level ``k`` has the scale ``spacing * 2**k`` and the translation
    ``spacing * (2**k - 1) / 2`` (voxel centres of the coarse grid), with axes ``z, y, x`` of
    type ``space`` and unit ``micrometer``, as NGFF 0.5 specifies; ``ome-zarr`` and
    `read_volume` both read it.
    """
    import dask.array as da
    import zarr

    target = Path(path)
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    voxel_size = normalize_spacing(spacing, 3, name="spacing")
    array = data if isinstance(data, da.Array) else None
    shape = tuple(int(n) for n in (data.shape if hasattr(data, "shape") else np.shape(data)))
    if len(shape) != 3:
        raise InputError(f"expected a 3D (Z, Y, X) array, got shape {tuple(shape)}", source="data")
    if int(n_levels) < 1:
        raise InputError(f"n_levels must be >= 1, got {n_levels}", source="n_levels")
    chunk_shape = _chunk_shape(chunks, shape)
    if array is None:
        array = da.from_array(data, chunks=chunk_shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    codecs = _compressors(compressor)
    use_mode = _default_labels(array.dtype) if labels is None else bool(labels)
    image_name = name or target.name.removesuffix(".zarr").removesuffix(".ome")

    datasets = []
    with atomic_directory(target) as temporary:
        root = zarr.open_group(store=str(temporary), mode="w", zarr_format=3)
        level_data, stored = array, None
        for level in range(int(n_levels)):
            if level:
                level_data = _downsample(da.from_zarr(stored), use_mode)
            level_chunks = tuple(
                min(c, n) for c, n in zip(chunk_shape, level_data.shape, strict=True)
            )
            stored = root.create_array(
                str(level),
                shape=level_data.shape,
                dtype=level_data.dtype,
                chunks=level_chunks,
                compressors=codecs,
                fill_value=0,
                dimension_names=_SPATIAL,
            )
            da.store(level_data.rechunk(level_chunks), stored, lock=False)
            factor = 2.0**level
            transforms = [{"type": "scale", "scale": (voxel_size * factor).tolist()}]
            if level:
                transforms.append(
                    {"type": "translation", "translation": (voxel_size * (factor - 1) / 2).tolist()}
                )
            datasets.append({"path": str(level), "coordinateTransformations": transforms})
        root.attrs.update(
            {
                "ome": {
                    "version": NGFF_VERSION,
                    "multiscales": [
                        {
                            "name": image_name,
                            "axes": [
                                {"name": axis, "type": "space", "unit": "micrometer"}
                                for axis in _SPATIAL
                            ],
                            "datasets": datasets,
                            "type": "mode" if use_mode else "mean",
                            "metadata": {
                                "description": "2x2x2 downsampling per level",
                                "method": "corrtomo.io.write_ome_zarr",
                            },
                        }
                    ],
                }
            }
        )
    return target


def _chunk_shape(chunks: int | Sequence[int] | None, shape: Sequence[int]) -> tuple[int, ...]:
    if chunks is None:
        chunks = 64
    values = np.atleast_1d(np.asarray(chunks)).ravel()
    if values.size == 1:
        values = np.repeat(values, len(shape))
    if values.size != len(shape) or np.any(values < 1):
        raise InputError(
            f"chunks must be 1 or {len(shape)} positive integers, got {chunks}", source="chunks"
        )
    return tuple(int(min(c, n)) for c, n in zip(values, shape, strict=True))


def _compressors(compressor: str | None) -> Any:
    from zarr.codecs import BloscCodec, BloscShuffle, GzipCodec

    if compressor is None:
        return None
    choices = {
        "zstd": lambda: BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle),
        "lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle),
        "gzip": lambda: GzipCodec(level=5),
    }
    key = str(compressor).lower().removeprefix("blosc-")
    if key not in choices:
        raise InputError(
            f"unknown compressor {compressor!r}; use one of {sorted(choices)} or None",
            source="compressor",
        )
    return (choices[key](),)


def _default_labels(dtype: np.dtype) -> bool:
    dtype = np.dtype(dtype)
    return dtype == np.bool_ or dtype == np.uint8 or (dtype.kind in "iu" and dtype.itemsize >= 4)


def _downsample(array: Any, use_mode: bool) -> Any:
    """Halve every axis: 2x2x2 mean (grey values) or most frequent value (labels)."""
    import dask.array as da

    pad = [(0, n % 2) for n in array.shape]
    if any(after for _, after in pad):
        array = da.pad(array, pad, mode="edge")
    array = array.rechunk(tuple(_even_chunk_sizes(axis_chunks) for axis_chunks in array.chunks))
    out_chunks = tuple(tuple(c // 2 for c in axis_chunks) for axis_chunks in array.chunks)
    return array.map_blocks(_downsample_block, use_mode, dtype=array.dtype, chunks=out_chunks)


def _even_chunk_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Chunk sizes of one axis rearranged so that every chunk is even (the total is even)."""
    total = int(sum(sizes))
    step = max(2, int(sizes[0]) + int(sizes[0]) % 2)
    out = [step] * (total // step)
    if total % step:
        out.append(total % step)
    return tuple(out)


def _downsample_block(block: np.ndarray, use_mode: bool) -> np.ndarray:
    z, y, x = (n // 2 for n in block.shape)
    cells = block.reshape(z, 2, y, 2, x, 2).transpose(0, 2, 4, 1, 3, 5).reshape(z, y, x, 8)
    if use_mode:
        values = np.sort(cells, axis=-1)[..., ::-1]
        counts = (values[..., :, None] == values[..., None, :]).sum(axis=-1)
        pick = np.argmax(counts, axis=-1)[..., None]
        return np.take_along_axis(values, pick, axis=-1)[..., 0]
    mean = cells.mean(axis=-1, dtype=np.float64)
    if block.dtype.kind in "iub":
        info = np.iinfo(block.dtype) if block.dtype.kind != "b" else None
        mean = np.rint(mean)
        if info is not None:
            mean = np.clip(mean, info.min, info.max)
    return mean.astype(block.dtype)
