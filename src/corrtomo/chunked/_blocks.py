"""Block grids over numpy, Zarr and Dask volumes, and reading one block at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

import numpy as np

from corrtomo._shared import InputError
from corrtomo._shared._blocks import read_block

__all__ = ["BlockGrid", "block_grid", "read_block", "volume_shape"]


@dataclass(frozen=True)
class BlockGrid:
    """A rectilinear partition of a (Z, Y, X) volume into blocks.

    Attributes
    ----------
    shape : tuple of int
        Volume shape (z, y, x).
    bounds : tuple of three (n_k + 1,) ndarrays of int64
        Block boundaries along z, y and x: block ``(i, j, k)`` covers
        ``[bounds[0][i], bounds[0][i + 1]) x [bounds[1][j], ...) x [bounds[2][k], ...)``.
    """

    shape: tuple[int, int, int]
    bounds: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(int(b.size - 1) for b in self.bounds)  # type: ignore[return-value]

    @property
    def n_blocks(self) -> int:
        return int(np.prod(self.grid_shape))

    def slices(self, index: tuple[int, int, int], *, halo: int = 0) -> tuple[slice, ...]:
        """Slices of block `index`, extended by `halo` voxels past its high faces (clipped)."""
        return tuple(
            slice(int(b[i]), int(min(b[i + 1] + halo, n)))
            for b, i, n in zip(self.bounds, index, self.shape, strict=True)
        )

    def box(self, index: tuple[int, int, int], halo) -> tuple[tuple[slice, ...], ...]:
        """Block `index` with `halo` voxels on every side (one int or one per axis, clipped).

        Returns ``(core, box, inner)``: the block's slices in the volume, the slices of block +
        halo in the volume, and the block's slices inside the box.
        """
        core = self.slices(index)
        halo = np.broadcast_to(np.asarray(halo, dtype=np.int64), (3,))
        box = tuple(
            slice(max(s.start - int(h), 0), min(s.stop + int(h), n))
            for s, h, n in zip(core, halo, self.shape, strict=True)
        )
        inner = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(core, box, strict=True))
        return core, box, inner

    def origin(self, index: tuple[int, int, int]) -> np.ndarray:
        return np.array([b[i] for b, i in zip(self.bounds, index, strict=True)], dtype=np.int64)

    def block_shape(self, index: tuple[int, int, int]) -> np.ndarray:
        return np.array(
            [b[i + 1] - b[i] for b, i in zip(self.bounds, index, strict=True)], dtype=np.int64
        )

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        """Block indices in raster order (z slowest)."""
        return iter(product(*(range(n) for n in self.grid_shape)))


def volume_shape(array, name: str) -> tuple[int, int, int]:
    """Shape of a 3D numpy / Zarr / Dask array, or a one-line InputError."""
    shape = tuple(int(n) for n in getattr(array, "shape", np.shape(array)))
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume, got {len(shape)}D shape {shape}", source=name)
    return shape  # type: ignore[return-value]


def _native_chunks(array):
    """The array's own chunking (Zarr ``chunks``, Dask ``chunks``), or None for numpy."""
    if isinstance(array, np.ndarray):
        return None
    return getattr(array, "chunks", None)


def block_grid(shape, chunks=None, *, like=()) -> BlockGrid:
    """Partition `shape` into blocks.

    Parameters
    ----------
    shape : (3,) sequence of int
        Volume shape (z, y, x).
    chunks : (3,) sequence of int, or Dask-style tuple of three tuples of block sizes, optional
        Block shape. Default: the chunking of the first array in `like` that has one (Zarr or
        Dask), else the whole volume as one block.
    like : sequence of arrays
        Arrays whose native chunking is used when `chunks` is None.
    """
    shape = tuple(int(n) for n in shape)
    if chunks is None:
        for array in like:
            chunks = _native_chunks(array)
            if chunks is not None:
                break
        else:
            chunks = shape
    chunks = tuple(chunks)
    if len(chunks) != 3:
        raise InputError(f"expected 3 chunk sizes, got {chunks}", source="chunks")
    bounds = []
    for n, c in zip(shape, chunks, strict=True):
        if np.ndim(c) == 0:
            size = int(c)
            if size < 1:
                raise InputError(f"chunk sizes must be positive, got {chunks}", source="chunks")
            edges = np.unique(np.append(np.arange(0, n, size, dtype=np.int64), n))
        else:
            sizes = np.asarray(c, dtype=np.int64)
            if np.any(sizes < 0) or sizes.sum() != n:
                raise InputError(
                    f"block sizes {list(sizes)} do not add up to the volume size {n}",
                    source="chunks",
                )
            edges = np.unique(np.concatenate([[0], np.cumsum(sizes)]))
        if n == 0:
            edges = np.zeros(1, np.int64)
        bounds.append(edges.astype(np.int64))
    return BlockGrid(shape=shape, bounds=tuple(bounds))  # type: ignore[arg-type]


def volume_faces(array: np.ndarray, core: tuple[slice, ...], shape) -> np.ndarray:
    """Values of a core block on the faces it shares with the volume (flattened)."""
    parts = [np.zeros(0, array.dtype)]
    for axis, (s, n) in enumerate(zip(core, shape, strict=True)):
        index = [slice(None)] * 3
        if s.start == 0:
            index[axis] = 0
            parts.append(array[tuple(index)].ravel())
        if s.stop == n:
            index[axis] = array.shape[axis] - 1
            parts.append(array[tuple(index)].ravel())
    return np.concatenate(parts)
