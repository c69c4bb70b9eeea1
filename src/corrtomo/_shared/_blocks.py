"""Reading one block of a numpy, Zarr or Dask volume (shared by the chunked and scoring code)."""

from __future__ import annotations

import numpy as np

__all__ = ["Float32Blocks", "read_block"]


def read_block(array, slices: tuple[slice, ...]) -> np.ndarray:
    """Read ``array[slices]`` of a numpy, Zarr or Dask array into memory (a numpy array)."""
    part = array[slices]
    compute = getattr(part, "compute", None)
    if compute is not None and not isinstance(part, np.ndarray):
        part = compute()
    return np.asarray(part)


class Float32Blocks:
    """A read-only view of an integer volume whose every read comes back as float32.

    The chunked path stores an integer CT (uint8, uint16, int16) as it is, half or a quarter of
    the bytes of float32, and its stages read blocks through this view. The conversion is exact
    for integers of up to 24 bits (float32's significand), so every stage sees the same numbers
    as from a float32 copy.

    Parameters
    ----------
    array : numpy, Zarr or Dask array of integers
        The stored volume; indexed, never modified.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, array) -> None:
        if not self.holds(array.dtype):
            raise TypeError(f"Float32Blocks views integers of at most 16 bits, not {np.dtype(array.dtype)}")
        self.array = array

    @staticmethod
    def holds(dtype) -> bool:
        """Whether `dtype` is an integer (or bool) type of at most 16 bits, which this view reads."""
        kind = np.dtype(dtype)
        return kind.kind in "iub" and kind.itemsize <= 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def chunks(self):
        return self.array.chunks

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        return np.asarray(read_block(self.array, index), dtype=np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[tuple(slice(None) for _ in self.shape)]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"Float32Blocks({self.array!r})"
