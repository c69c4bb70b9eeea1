"""Blocks of numpy, Zarr and Dask label volumes for the out-of-core scores (no chunked import:
``corrtomo.chunked`` lies above this package)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product

import numpy as np

from .._shared import InputError
from .._shared._blocks import read_block

__all__ = ["as_array", "block_slices", "check_label_dtype", "read_block", "read_labels"]


def as_array(array):
    """A numpy / Zarr / Dask array as it is (anything else, e.g. a list, as numpy)."""
    if hasattr(array, "shape") and hasattr(array, "dtype"):
        return array
    return np.asarray(array)


def check_label_dtype(array, name: str) -> None:
    """InputError unless the array holds integers or booleans (checked on the dtype, no read)."""
    dtype = np.dtype(array.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(f"labels must be integers, got {dtype}", source=name)


def _edges(n: int, chunk) -> np.ndarray:
    if isinstance(chunk, (int, np.integer)):
        size = int(chunk)
        if size < 1:
            raise InputError(f"block sizes must be positive, got {chunk}", source="chunks")
        return np.unique(np.append(np.arange(0, n, size, dtype=np.int64), n))
    sizes = np.asarray(chunk, dtype=np.int64)
    if np.any(sizes < 0) or int(sizes.sum()) != n:
        raise InputError(f"block sizes {sizes.tolist()} do not add up to the size {n}", source="chunks")
    return np.unique(np.concatenate([[0], np.cumsum(sizes)]))


def block_slices(shape: tuple[int, ...], chunks=None, like=()) -> Iterator[tuple[slice, ...]]:
    """Slices of the blocks that partition `shape`, in raster order (first axis slowest).

    Parameters
    ----------
    shape : tuple of int
    chunks : int, sequence of int, or Dask-style tuple of tuples of block sizes, optional
        Block shape; default the native chunks of the first Zarr / Dask array in `like`, else
        the whole volume as one block.
    like : sequence of arrays
    """
    if chunks is None:
        for array in like:
            if not isinstance(array, np.ndarray) and getattr(array, "chunks", None) is not None:
                chunks = array.chunks
                break
        else:
            chunks = shape
    if isinstance(chunks, (int, np.integer)):
        chunks = (chunks,) * len(shape)
    chunks = tuple(chunks)
    if len(chunks) != len(shape):
        raise InputError(f"expected {len(shape)} block sizes, got {chunks}", source="chunks")
    if 0 in shape:
        return iter(())
    edges = [_edges(n, c) for n, c in zip(shape, chunks, strict=True)]
    ranges = [[slice(int(e[i]), int(e[i + 1])) for i in range(e.size - 1)] for e in edges]
    return iter(product(*ranges))


def read_labels(array, slices: tuple[slice, ...], name: str) -> np.ndarray:
    """``array[slices]`` in memory (numpy); InputError for negative labels."""
    part = read_block(array, slices)
    if part.size and np.issubdtype(part.dtype, np.signedinteger) and part.min() < 0:
        raise InputError("labels must be >= 0", source=name)
    return part
