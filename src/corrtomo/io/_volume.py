"""The `Volume` container, `read_volume` (format dispatch) and `check_finite`."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError, normalize_spacing

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
IMAGE2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nxs")
RAW_SUFFIXES = (".raw", ".bin", ".vol", ".dat")
_HDF5_INNER = re.compile(
    r"^(?P<file>.+?\.(?:h5|hdf5|hdf|he5|nxs)):(?P<dataset>/?.*)$", re.IGNORECASE
)

NO_VOXEL_SIZE = "no voxel size in the file; pass --voxel-size / spacing="


@dataclass(frozen=True)
class Volume:
    """A 3D image with its voxel size, kept lazy where the file allows.

    Parameters
    ----------
    data : (Z, Y, X) ndarray, numpy.memmap, zarr.Array or dask.array.Array
        The voxels, axis order (z, y, x) = (plane, row, column). Large files stay on disk:
        memory-mapped (uncompressed TIFF, raw, ``.npy``), a Zarr array (Zarr, OME-Zarr,
        compressed TIFF) or a Dask array (HDF5, slice folders).
    spacing : (3,) ndarray of float or None
        Voxel size per axis (z, y, x) in micrometres, ``None`` if unknown.
    source : str
        Where the voxels came from (a path, or ``file.h5:/dataset``).
    metadata : dict
        What the reader learnt: ``format``, ``spacing_from`` (``"file"`` or ``"user"``),
        ``file_spacing`` (micrometres, when the file had one), ``level`` and ``n_levels``
        (OME-Zarr), ``byte_order`` (raw), ``files`` (slice folders), ...
    """

    data: Any
    spacing: np.ndarray | None
    source: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape (Z, Y, X) in voxels."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Voxel data type."""
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        """Number of axes (3)."""
        return len(self.data.shape)

    def to_numpy(self) -> np.ndarray:
        """Load all voxels into memory.

        Returns
        -------
        (Z, Y, X) ndarray
            In native byte order (big-endian raw data is converted); memory-mapped data is
            copied, so the result never aliases the input file.
        """
        if hasattr(self.data, "compute"):
            array = np.asarray(self.data.compute())
        elif isinstance(self.data, np.memmap):
            array = np.array(self.data)  # a writable copy, detached from the file
        else:
            array = np.asarray(self.data[...])
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        return array

    def to_dask(self, chunks: Any = None):
        """Return the voxels as a Dask array, without reading them.

        Parameters
        ----------
        chunks : int, tuple of int, str or None
            Dask chunks; ``None`` keeps the file's own chunks (Zarr, HDF5, slices) or lets Dask
            choose (``"auto"``) for in-memory and memory-mapped data.

        Returns
        -------
        dask.array.Array
            Shape (Z, Y, X), native byte order.
        """
        import dask.array as da

        if isinstance(self.data, da.Array):
            array = self.data if chunks is None else self.data.rechunk(chunks)
        else:
            file_chunks = getattr(self.data, "chunks", None)
            default = file_chunks if _is_chunk_tuple(file_chunks, self.ndim) else "auto"
            array = da.from_array(self.data, chunks=default if chunks is None else chunks)
        if not array.dtype.isnative:
            native = array.dtype.newbyteorder("=")
            array = array.map_blocks(lambda block: block.astype(native), dtype=native)
        return array


def _is_chunk_tuple(chunks: Any, ndim: int) -> bool:
    return (
        isinstance(chunks, tuple)
        and len(chunks) == ndim
        and all(isinstance(c, int | np.integer) for c in chunks)
    )


def read_volume(
    path: str | os.PathLike,
    *,
    spacing: float | Sequence[float] | None = None,
    dataset: str | None = None,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
    byte_order: str = "little",
    offset: int = 0,
    level: int = 0,
    lazy: bool = True,
) -> Volume:
    """Open a 3D image (CT volume, label volume) from any of the usual formats.

    The format follows from what `path` is:

    * a folder of 2D slices (TIFF, PNG, JPEG), natural sort order (``s2.tif`` before ``s10.tif``);
    * a multipage, ImageJ or OME TIFF (memory-mapped when uncompressed, otherwise read lazily
      through a Zarr view of the file);
    * a Zarr (v2 or v3) array or group, or an OME-Zarr image with multiscales (`level` picks one);
    * an HDF5 dataset, given as ``file.h5:/group/dataset`` or with `dataset`;
    * raw binary (``.raw``, ``.bin``, ``.vol``, ``.dat``, or any file when `shape` and `dtype`
      are given), memory-mapped;
    * a NumPy ``.npy`` file, memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike
        File or folder to read. Never modified.
    spacing : float or sequence of 3 float, optional
        Voxel size (z, y, x) in micrometres. Overrides the file's own voxel size, which is read
        from OME metadata (``PhysicalSizeX/Y/Z`` and units), ImageJ metadata (``spacing``,
        ``unit`` and resolution), TIFF ``XResolution``/``ResolutionUnit`` (z taken equal to x),
        OME-Zarr ``coordinateTransformations`` (scale with the axis units), and HDF5 or Zarr
        attributes ``voxel_size_um`` or ``spacing`` (micrometres).
    dataset : str, optional
        HDF5 dataset path, or the array inside a plain Zarr group.
    shape : sequence of 3 int, optional
        Raw data only: shape (Z, Y, X).
    dtype : str or numpy.dtype, optional
        Raw data only: voxel type, e.g. ``"uint16"``.
    byte_order : {"little", "big", "native"}
        Raw data only.
    offset : int
        Raw data only: header bytes to skip.
    level : int
        OME-Zarr only: resolution level, 0 the finest. The voxel size is that of the level.
    lazy : bool
        If False, load the voxels into memory (a numpy array).

    Returns
    -------
    Volume
        ``data`` of shape (Z, Y, X); ``spacing`` in micrometres. A 4D file with a singleton axis
        (e.g. one channel or one time point) is squeezed to 3D.

    Raises
    ------
    InputError
        If the file does not exist or cannot be read, is 2D or has more than three non-singleton
        axes, is RGB, has no voxel size and none is given, is a slice folder with slices of
        different shapes or types, or is raw data whose size does not match shape x dtype. The
        message names the file.

    Notes
    -----
    NaNs are not checked here (that would read every voxel); call `check_finite`.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from corrtomo.io import write_tiff, read_volume
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ct.tif"
    >>> _ = write_tiff(path, np.zeros((4, 5, 6), np.uint16), spacing=(2.0, 0.5, 0.5))
    >>> volume = read_volume(path)
    >>> volume.shape, volume.spacing.tolist()
    ((4, 5, 6), [2.0, 0.5, 0.5])
    """
    text = os.fspath(path)
    user_spacing = None if spacing is None else normalize_spacing(spacing, 3, name="spacing")
    match = _HDF5_INNER.match(text)
    if match and not Path(text).exists():
        text, dataset = match.group("file"), match.group("dataset") or dataset
    file_path = Path(text)
    if not file_path.exists():
        raise InputError("no such file or folder", source=text)
    suffix = file_path.suffix.lower()
    raw_given = shape is not None or dtype is not None

    if file_path.is_dir():
        if _is_zarr(file_path):
            from ._zarr import read_zarr

            data, file_spacing, metadata = read_zarr(file_path, dataset=dataset, level=level)
        else:
            from ._slices import read_slice_folder

            data, file_spacing, metadata = read_slice_folder(file_path)
    elif raw_given or suffix in RAW_SUFFIXES:
        from ._raw import read_raw

        data, file_spacing, metadata = read_raw(
            file_path, shape=shape, dtype=dtype, byte_order=byte_order, offset=offset
        )
    else:
        kind = _sniff(file_path)
        if kind == "tiff":
            from ._tiff import read_tiff_volume

            data, file_spacing, metadata = read_tiff_volume(file_path)
        elif kind == "hdf5":
            from ._hdf5 import read_hdf5

            data, file_spacing, metadata = read_hdf5(file_path, dataset=dataset)
        elif kind == "npy":
            data = _open_npy(file_path)
            file_spacing, metadata = None, {"format": "npy"}
        elif kind == "image2d":
            raise InputError("is 2D, expected a 3D volume (a PNG/JPEG image)", source=text)
        else:
            raise InputError(
                "unrecognised volume format (expected a TIFF, Zarr, HDF5, slice folder, .npy, "
                "or raw data with shape= and dtype=)",
                source=text,
            )

    source = text if not metadata.get("dataset") else f"{text}:{metadata['dataset']}"
    file_ndim = len(data.shape)
    data, kept_axes = _squeeze_to_3d(data, source)
    if kept_axes is not None and file_spacing is not None and len(file_spacing) == file_ndim:
        file_spacing = np.asarray(file_spacing, dtype=np.float64)[kept_axes]
    if file_spacing is not None:
        file_spacing = np.asarray(file_spacing, dtype=np.float64)
        if file_spacing.shape != (3,) or not np.all(np.isfinite(file_spacing) & (file_spacing > 0)):
            file_spacing = None
    if user_spacing is not None:
        final_spacing, spacing_from = user_spacing, "user"
    elif file_spacing is not None:
        final_spacing, spacing_from = file_spacing, "file"
    else:
        raise InputError(NO_VOXEL_SIZE, source=source)
    metadata = dict(metadata)
    metadata["spacing_from"] = spacing_from
    if file_spacing is not None:
        metadata["file_spacing"] = file_spacing.tolist()
    if not lazy:
        data = Volume(data, final_spacing, source).to_numpy()
    return Volume(data=data, spacing=final_spacing, source=source, metadata=metadata)


def _is_zarr(path: Path) -> bool:
    markers = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
    return path.suffix.lower() == ".zarr" or any((path / name).exists() for name in markers)


def _sniff(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".npy":
        return "npy"
    if suffix in IMAGE2D_SUFFIXES:
        return "image2d"
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as error:
        raise InputError(f"cannot be read ({error.strerror})", source=path) from None
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if magic == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if magic[:6] == b"\x93NUMPY":
        return "npy"
    if magic[:8] == b"\x89PNG\r\n\x1a\n" or magic[:3] == b"\xff\xd8\xff":
        return "image2d"
    return "unknown"


def _open_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputError(f"cannot be read as a .npy array ({error})", source=path) from None


def _squeeze_to_3d(data: Any, source: str) -> tuple[Any, np.ndarray | None]:
    """Drop singleton axes of a >3D array; reject 2D and RGB-like data.

    Returns the array and, when axes were dropped, the indices of the kept axes.
    """
    shape = tuple(int(n) for n in data.shape)
    if len(shape) == 3 and min(shape) > 1:
        return data, None
    kept = np.array([i for i, n in enumerate(shape) if n > 1])
    if len(shape) < 3 or kept.size < 3:
        dims = "1D" if kept.size <= 1 else "2D"
        raise InputError(f"is {dims}, expected a 3D volume (shape {shape})", source=source)
    if kept.size > 3:
        raise InputError(f"is {kept.size}D, expected a 3D volume (shape {shape})", source=source)
    index = tuple(slice(None) if n > 1 else 0 for n in shape)
    if isinstance(data, np.ndarray):
        return data[index], kept
    import dask.array as da

    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=_dask_chunks(data))
    return data[index], kept


def _dask_chunks(data: Any) -> Any:
    chunks = getattr(data, "chunks", None)
    return chunks if _is_chunk_tuple(chunks, len(data.shape)) else "auto"


def check_finite(volume: Volume | Any, source: str | os.PathLike | None = None) -> None:
    """Raise if a volume holds NaN or infinite values, reading it chunk by chunk.

    Parameters
    ----------
    volume : Volume or array-like (numpy, Zarr, Dask)
        The voxels to check. Integer and boolean data pass at once.
    source : str or os.PathLike, optional
        Name used in the error message; defaults to ``volume.source``.

    Raises
    ------
    InputError
        If any voxel is NaN or infinite; the message gives how many and names `source`.
    """
    import dask.array as da

    if isinstance(volume, Volume):
        name = volume.source if source is None else os.fspath(source)
        array = volume.to_dask()
    else:
        name = "volume" if source is None else os.fspath(source)
        array = (
            volume
            if isinstance(volume, da.Array)
            else da.from_array(volume, chunks=_dask_chunks(volume))
        )
    if not np.issubdtype(array.dtype, np.inexact):
        return
    bad = int((~da.isfinite(array)).sum(dtype=np.int64).compute())
    if bad:
        raise InputError(
            f"contains {bad} NaN or infinite voxel{'s' if bad != 1 else ''} "
            f"out of {int(np.prod(array.shape))}",
            source=name,
        )
