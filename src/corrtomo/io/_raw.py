"""Raw binary volumes: shape, dtype, byte order and header offset given by the user."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from corrtomo._shared import InputError

_BYTE_ORDERS = {"little": "<", "big": ">", "native": "="}


def read_raw(
    path: Path,
    *,
    shape: Sequence[int] | None,
    dtype: Any,
    byte_order: str = "little",
    offset: int = 0,
) -> tuple[np.memmap, None, dict]:
    """Memory-map raw voxels read-only; raw files carry no voxel size.

    Raises
    ------
    InputError
        If shape or dtype is missing or invalid, or the file size is not
        ``offset + prod(shape) * itemsize`` bytes (the message gives both numbers).
    """
    if shape is None or dtype is None:
        raise InputError(
            "is raw binary data; pass its shape (Z, Y, X) and dtype (e.g. shape=(512, 512, 512), "
            "dtype='uint16')",
            source=path,
        )
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise InputError(f"raw shape must be 3 integers, got {shape!r}", source=path) from None
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(
            f"raw shape must be 3 positive integers (Z, Y, X), got {shape}", source=path
        )
    if byte_order not in _BYTE_ORDERS:
        raise InputError(
            f"byte order must be one of {sorted(_BYTE_ORDERS)}, got {byte_order!r}", source=path
        )
    try:
        voxel_type = np.dtype(dtype)
    except TypeError:
        raise InputError(f"unknown dtype {dtype!r}", source=path) from None
    if voxel_type.kind not in "biuf" or voxel_type.fields is not None:
        raise InputError(f"raw dtype must be a number type, got {voxel_type}", source=path)
    voxel_type = voxel_type.newbyteorder(_BYTE_ORDERS[byte_order])
    if int(offset) < 0:
        raise InputError(f"offset must be >= 0, got {offset}", source=path)
    expected = int(offset) + int(np.prod(shape)) * voxel_type.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise InputError(
            f"holds {actual} bytes but shape {shape} x {voxel_type.name} ({voxel_type.itemsize} "
            f"bytes) + offset {int(offset)} needs {expected} bytes",
            source=path,
        )
    data = np.memmap(path, dtype=voxel_type, mode="r", shape=shape, offset=int(offset))
    return data, None, {"format": "raw", "byte_order": byte_order, "offset": int(offset)}
