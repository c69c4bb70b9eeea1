"""HDF5 datasets read lazily, one chunk at a time, with the file opened per read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

from ._units import micrometres_per_unit

SPACING_ATTRIBUTES = ("voxel_size_um", "spacing", "voxel_size", "element_size_um", "pixel_size")


class HDF5Dataset:
    """A picklable, read-only array view of one HDF5 dataset.

    The file is opened for each read and closed after it, so no handle stays open and Dask (or
    a distributed worker) can read chunks in parallel.

    Parameters
    ----------
    path : pathlib.Path
        The HDF5 file.
    name : str
        Dataset path inside the file, e.g. ``"/exchange/data"``.
    """

    def __init__(self, path: Path, name: str):
        import h5py

        self.path, self.name = Path(path), name
        with h5py.File(self.path, "r") as handle:
            dataset = handle[name]
            self.shape = tuple(int(n) for n in dataset.shape)
            self.dtype = np.dtype(dataset.dtype)
            self.chunks = dataset.chunks
            self.attrs = {key: _plain(value) for key, value in dataset.attrs.items()}
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as handle:
            return handle[self.name][key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self[...]
        return array if dtype is None else array.astype(dtype)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_hdf5(path: Path, *, dataset: str | None) -> tuple[Any, np.ndarray | None, dict]:
    """Open an HDF5 dataset lazily as a Dask array with the dataset's chunks.

    Without `dataset`, the file must hold exactly one dataset of three or more axes.

    Raises
    ------
    InputError
        If the file is not HDF5, the dataset is missing or not an array, or `dataset` is not
        given and the file holds no or several candidate datasets (they are listed).
    """
    import dask.array as da
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if dataset is None:
                dataset = _only_volume_dataset(handle, path)
            node = handle.get(dataset)
            if node is None:
                raise InputError(f"has no dataset {dataset!r}", source=path)
            if not isinstance(node, h5py.Dataset):
                raise InputError(f"{dataset!r} is a group, not a dataset", source=path)
            group_attrs = {key: _plain(value) for key, value in node.parent.attrs.items()}
            dataset = node.name
    except InputError:
        raise
    except OSError as error:
        raise InputError(f"cannot be read as HDF5 ({error})", source=path) from None
    view = HDF5Dataset(path, dataset)
    if view.dtype.kind not in "biuf":
        raise InputError(f"dataset {dataset!r} has non-numeric type {view.dtype}", source=path)
    chunks = view.chunks if view.chunks is not None else "auto"
    data = da.from_array(
        view, chunks=chunks, name=f"hdf5-{path.name}-{dataset}-{path.stat().st_mtime_ns}"
    )
    spacing = spacing_from_attributes({**group_attrs, **view.attrs}, view.ndim)
    return data, spacing, {"format": "hdf5", "dataset": dataset, "attrs": view.attrs}


def _only_volume_dataset(handle: Any, path: Path) -> str:
    import h5py

    found: list[str] = []
    handle.visititems(
        lambda name, node: (
            found.append("/" + name) if isinstance(node, h5py.Dataset) and node.ndim >= 3 else None
        )
    )
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError("holds no dataset with 3 or more axes", source=path)
    listed = ", ".join(found[:6]) + (", ..." if len(found) > 6 else "")
    raise InputError(
        f"holds several datasets ({listed}); name one as file.h5:/dataset or dataset=",
        source=path,
    )


def spacing_from_attributes(attrs: dict, ndim: int) -> np.ndarray | None:
    """Voxel size (micrometres, one per axis) from ``voxel_size_um`` or ``spacing`` attributes.

    ``voxel_size_um`` is in micrometres; other names are in micrometres unless a ``unit`` or
    ``spacing_unit`` attribute says otherwise. One value means isotropic voxels.
    """
    for key in SPACING_ATTRIBUTES:
        if key not in attrs:
            continue
        values = np.atleast_1d(np.asarray(attrs[key], dtype=np.float64)).ravel()
        if values.size == 1:
            values = np.repeat(values, ndim)
        if values.size != ndim:
            continue
        um = 1.0
        if key != "voxel_size_um":
            um = micrometres_per_unit(attrs.get("spacing_unit", attrs.get("unit")), default=1.0)
        return values * um
    return None
