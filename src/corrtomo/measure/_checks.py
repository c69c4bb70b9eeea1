"""Input checks and the label -> row index shared by the measure kernels."""

from __future__ import annotations

import numba
import numpy as np

from corrtomo._shared import InputError

# Dense label -> row tables are used up to this many entries (or up to the voxel count).
_DENSE_LUT_LIMIT = 1 << 26


def check_label_image(image, name: str, *, ndim: int = 3) -> np.ndarray:
    """Return `image` as an integer ndarray (no copy when possible) or raise a one-line InputError."""
    array = np.asarray(image)
    if array.ndim != ndim:
        raise InputError(
            f"expected a {ndim}D label image, got {array.ndim}D shape {array.shape}", source=name
        )
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"labels must be integers, got dtype {array.dtype}", source=name)
    if array.size and np.issubdtype(array.dtype, np.signedinteger) and array.min() < 0:
        raise InputError("labels must be non-negative", source=name)
    return array


def check_phase_image(phases, particles: np.ndarray, name: str = "phases") -> np.ndarray:
    """Check a phase-id image against the particle image (same shape, ids 0..255)."""
    array = check_label_image(phases, name, ndim=particles.ndim)
    if array.shape != particles.shape:
        raise InputError(
            f"shape {array.shape} differs from the particle image shape {particles.shape}",
            source=name,
        )
    if array.size and array.dtype.itemsize > 1 and array.max() > 255:
        raise InputError(f"phase ids must be 0..255, got {int(array.max())}", source=name)
    return array


def check_offset(offset, name: str = "offset") -> np.ndarray:
    values = np.asarray(offset, dtype=np.int64).ravel()
    if values.size != 3 or np.any(values < 0):
        raise InputError(
            f"expected 3 non-negative integers, got {list(np.ravel(offset))}", source=name
        )
    return values


@numba.njit(parallel=True, cache=True)
def _presence(image, size, bounds):
    n_blocks = bounds.shape[0] - 1
    seen = np.zeros((n_blocks, size), dtype=np.bool_)
    for block in numba.prange(n_blocks):
        mark = seen[block]
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(image.shape[1]):
                for x in range(image.shape[2]):
                    mark[image[z, y, x]] = True
    out = np.zeros(size, dtype=np.bool_)
    for block in range(n_blocks):
        out |= seen[block]
    return out


def z_blocks(depth: int) -> np.ndarray:
    parts = max(1, min(4 * numba.get_num_threads(), depth))
    return np.linspace(0, depth, parts + 1).round().astype(np.int64)


def label_index(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted non-zero labels, a dense lookup table label -> row (-1 for absent), and the image.

    When the largest label is too large for a dense table, the image is renumbered (a copy) and the
    returned image holds rows + 1; the returned labels are still the original ones.
    """
    if image.size == 0:
        return np.zeros(0, np.uint64), np.full(1, -1, np.int64), image
    top = int(image.max())
    if top + 1 <= max(_DENSE_LUT_LIMIT, image.size):
        seen = _presence(image, top + 1, z_blocks(image.shape[0]))
        seen[0] = False
        present = np.flatnonzero(seen).astype(np.uint64)
        lut = np.full(top + 1, -1, dtype=np.int64)
        lut[present.astype(np.int64)] = np.arange(present.size)
        return present, lut, image
    import fastremap

    renumbered, mapping = fastremap.renumber(image, preserve_zero=True, in_place=False)
    original = np.fromiter(mapping.keys(), dtype=np.uint64, count=len(mapping))
    new = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
    keep = original != 0
    present = np.sort(original[keep])
    # fastremap numbers in order of appearance; re-map to sorted order for a stable row order
    forward = np.zeros(new.max() + 1, dtype=renumbered.dtype)
    forward[new[keep]] = np.searchsorted(present, original[keep]) + 1
    renumbered = fastremap.remap(
        renumbered, dict(zip(range(forward.size), forward.tolist(), strict=True)), in_place=True
    )
    lut = np.arange(-1, present.size, dtype=np.int64)
    return present, lut, renumbered
