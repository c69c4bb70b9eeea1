"""Voxel spacing in micrometres, normalised in one place."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._errors import InputError


def normalize_spacing(
    spacing: float | Sequence[float] | np.ndarray | None,
    ndim: int = 3,
    *,
    name: str = "spacing",
) -> np.ndarray:
    """Return the voxel size per axis as a float64 array of length `ndim`, in micrometres.

    Parameters
    ----------
    spacing : float or sequence of float or None
        One value for isotropic voxels, or one value per axis in (z, y, x) order. ``None`` means
        1 micrometre per axis (voxel units).
    ndim : int
        Number of image axes.
    name : str
        Argument name used in error messages.

    Raises
    ------
    InputError
        If a value is not finite and positive, or the number of values does not match `ndim`.
    """
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise InputError(f"expected 1 or {ndim} values, got {values.size}", source=name)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(f"voxel size must be finite and positive, got {values.tolist()}", source=name)
    return values
