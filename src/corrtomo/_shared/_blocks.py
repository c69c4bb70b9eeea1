"""Reading one block of a numpy, Zarr or Dask volume (shared by the chunked and scoring code)."""

from __future__ import annotations

import numpy as np

__all__ = ["read_block"]


def read_block(array, slices: tuple[slice, ...]) -> np.ndarray:
    """Read ``array[slices]`` of a numpy, Zarr or Dask array into memory (a numpy array)."""
    part = array[slices]
    compute = getattr(part, "compute", None)
    if compute is not None and not isinstance(part, np.ndarray):
        part = compute()
    return np.asarray(part)
