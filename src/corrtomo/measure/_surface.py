"""Surface area from weighted 2x2x2 voxel configurations (additive over cells).

The estimator follows Lindblad (2005): every 2x2x2 cell of voxel centres is classified by which of
its eight voxels belong to a label (an 8-bit configuration) and contributes a fixed area weight for
that configuration. Weights are fitted here, per voxel spacing, so that the estimate is unbiased for
planar surfaces averaged over isotropic orientations and has minimal variance over orientations
(Lindblad's optimality criterion), which makes the estimator exact-on-average for smooth surfaces
and additive over cells: chunks that own disjoint sets of cells sum to the whole.
"""

from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np

from .._shared import fibonacci_sphere
from ._checks import check_label_image

__all__ = ["configuration_weights", "surface_area"]

# Corner ``i`` of a cell is voxel (z0 + bz, y0 + by, x0 + bx) with i = 4 bz + 2 by + bx.
_CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64)
_N_ORIENTATIONS = 6000


def _corner_permutations(spacing: np.ndarray) -> list[np.ndarray]:
    """Corner permutations of the cell symmetries: axis flips, swaps of equally spaced axes."""
    axes_orders = []
    for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        if np.allclose(spacing[list(order)], spacing, rtol=1e-9, atol=0):
            axes_orders.append(order)
    perms = []
    bits = _CORNERS.astype(np.int64)
    for order in axes_orders:
        for flips in range(8):
            flip = np.array([(flips >> 2) & 1, (flips >> 1) & 1, flips & 1])
            moved = np.abs(bits[:, list(order)] - flip)
            perms.append(moved @ np.array([4, 2, 1]))
    return perms


def _configuration_classes(spacing: np.ndarray) -> np.ndarray:
    """Class id (smallest equivalent configuration) of each of the 256 configurations."""
    configs = np.arange(256)
    present = (configs[:, None] >> np.arange(8)) & 1  # (256, 8)
    best = configs.copy()
    for perm in _corner_permutations(spacing):
        image = (present[:, np.argsort(perm)] << np.arange(8)).sum(axis=1)
        # image: configuration after moving corner i to corner perm[i]
        for candidate in (image, 255 - image):
            best = np.minimum(best, candidate)
    return best


def _plane_frequencies(spacing: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Number of cells of each configuration per unit area of a plane, for every normal.

    A plane ``n . p = d`` sweeping through a lattice of cells (one per ``prod(spacing)`` of volume)
    meets, per unit area, cells whose offset ``d`` lies in an interval of total length ``L`` with
    ``L / prod(spacing)`` cells; between two consecutive sorted corner projections the cell's
    configuration (corners with ``n . p < d``) is constant, so the frequencies are exact.
    """
    projections = normals @ (_CORNERS * spacing).T  # (M, 8)
    order = np.argsort(projections, axis=1)
    ordered = np.take_along_axis(projections, order, axis=1)
    configs = np.cumsum(1 << order, axis=1)[:, :7]
    lengths = np.diff(ordered, axis=1) / np.prod(spacing)
    frequencies = np.zeros((normals.shape[0], 256))
    rows = np.repeat(np.arange(normals.shape[0]), 7)
    np.add.at(frequencies, (rows, configs.ravel()), lengths.ravel())
    return frequencies


def _face_count_weights(spacing: np.ndarray) -> np.ndarray:
    """Voxel-face counting: a quarter of each face between an inside and an outside voxel."""
    present = (np.arange(256)[:, None] >> np.arange(8)) & 1
    face_area = np.array(
        [spacing[1] * spacing[2], spacing[0] * spacing[2], spacing[0] * spacing[1]]
    )
    weights = np.zeros(256)
    for axis, step in enumerate((4, 2, 1)):
        for corner in range(8):
            if corner & step:
                continue
            weights += 0.25 * face_area[axis] * (present[:, corner] != present[:, corner + step])
    return weights


@lru_cache(maxsize=32)
def _weights_cached(spacing_key: tuple[float, float, float]) -> np.ndarray:
    spacing = np.asarray(spacing_key, dtype=np.float64)
    scale = spacing.max()
    unit = spacing / scale
    classes = _configuration_classes(unit)
    normals = fibonacci_sphere(_N_ORIENTATIONS)
    per_config = _plane_frequencies(unit, normals)
    class_ids = np.unique(classes[1:255])
    design = np.stack([per_config[:, classes == c].sum(axis=1) for c in class_ids], axis=1)
    attained = design.max(axis=0) > 1e-12
    fitted, *_ = np.linalg.lstsq(design[:, attained], np.ones(len(normals)), rcond=None)
    fitted /= (design[:, attained] @ fitted).mean()  # unbiased over isotropic orientations
    class_weight = np.zeros(256)
    class_weight[class_ids[attained]] = fitted
    # Configurations that no plane produces (thin or checkered structures): face counting scaled
    # to be unbiased on planes as well.
    face = _face_count_weights(unit)
    face *= 1.0 / (per_config @ face).mean()
    for c in class_ids[~attained]:
        class_weight[c] = face[c]
    weights = class_weight[classes] * scale**2
    weights[0] = weights[255] = 0.0
    weights.setflags(write=False)
    return weights


def configuration_weights(spacing=1.0) -> np.ndarray:
    """Area weight (um^2) of each of the 256 configurations of a 2x2x2 cell.

    Parameters
    ----------
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx) in micrometres.

    Returns
    -------
    weights : (256,) ndarray of float64, read-only
        ``weights[c]`` is the area contributed by a cell whose corners ``i`` with bit ``i`` of ``c``
        set belong to the object; corner ``i`` is voxel ``(z + (i >> 2 & 1), y + (i >> 1 & 1),
        x + (i & 1))``. ``weights[c] == weights[255 - c]``.

    Notes
    -----
    Configurations are grouped into classes under the symmetries of the cell (axis reflections,
    swaps of equally spaced axes, complement): 14 classes for isotropic voxels, as in Lindblad
    (2005). For a plane with unit normal ``n`` the number of cells of each class per unit area,
    ``f_k(n)``, is computed exactly; the weights minimise the variance over isotropic orientations
    of ``A_hat / A = sum_k w_k f_k(n)`` subject to ``E_n[A_hat / A] = 1`` (least squares on 6000
    Fibonacci-sphere normals, rescaled to unit mean). Classes that no plane produces get the
    voxel-face count scaled to be unbiased on planes. Anisotropic spacing is supported exactly:
    the fit is done for the actual cell shape.

    References
    ----------
    .. [1] J. Lindblad, "Surface area estimation of digitized 3D objects using weighted local
       configurations", Image and Vision Computing 23 (2005) 111-122.
    """
    from corrtomo._shared import normalize_spacing

    values = normalize_spacing(spacing, 3)
    return _weights_cached(tuple(float(v) for v in values))


@numba.njit(cache=True, nogil=True)
def _read(image, z, y, x):
    if z < 0 or y < 0 or x < 0:
        return 0
    if z >= image.shape[0] or y >= image.shape[1] or x >= image.shape[2]:
        return 0
    return image[z, y, x]


@numba.njit(cache=True, nogil=True)
def _fill_cell(image, z, y, x, values):
    nz, ny, nx = image.shape
    if z >= 0 and y >= 0 and x >= 0 and z + 1 < nz and y + 1 < ny and x + 1 < nx:
        values[0] = image[z, y, x]
        values[1] = image[z, y, x + 1]
        values[2] = image[z, y + 1, x]
        values[3] = image[z, y + 1, x + 1]
        values[4] = image[z + 1, y, x]
        values[5] = image[z + 1, y, x + 1]
        values[6] = image[z + 1, y + 1, x]
        values[7] = image[z + 1, y + 1, x + 1]
    else:
        values[0] = _read(image, z, y, x)
        values[1] = _read(image, z, y, x + 1)
        values[2] = _read(image, z, y + 1, x)
        values[3] = _read(image, z, y + 1, x + 1)
        values[4] = _read(image, z + 1, y, x)
        values[5] = _read(image, z + 1, y, x + 1)
        values[6] = _read(image, z + 1, y + 1, x)
        values[7] = _read(image, z + 1, y + 1, x + 1)
    first = values[0]
    for i in range(1, 8):
        if values[i] != first:
            return False
    return True


def _split(low: int, high: int, parts: int) -> np.ndarray:
    parts = max(1, min(parts, high - low))
    return np.linspace(low, high, parts + 1).round().astype(np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform_cell(r00, r01, r10, r11, x):
    """Whether the 2x2x2 cell at column `x` of four adjacent rows holds one value (no surface)."""
    a = r00[x]
    return (
        r00[x + 1] == a
        and r01[x] == a
        and r01[x + 1] == a
        and r10[x] == a
        and r10[x + 1] == a
        and r11[x] == a
        and r11[x + 1] == a
    )


@numba.njit(cache=True, nogil=True)
def _load(r00, r01, r10, r11, x, values):
    values[0] = r00[x]
    values[1] = r00[x + 1]
    values[2] = r01[x]
    values[3] = r01[x + 1]
    values[4] = r10[x]
    values[5] = r10[x + 1]
    values[6] = r11[x]
    values[7] = r11[x + 1]


@numba.njit(cache=True, nogil=True)
def _add_labels(values, lut, weights, acc):
    remaining = 255
    for i in range(8):
        if not (remaining >> i) & 1:
            continue
        v = values[i]
        mask = 0
        for j in range(i, 8):
            if values[j] == v:
                mask |= 1 << j
        remaining &= ~mask
        if v != 0:
            acc[lut[v]] += weights[mask]
        if remaining == 0:
            break


@numba.njit(parallel=True, cache=True)
def _label_surface_kernel(image, lut, n_labels, weights, lo, hi, bounds):
    nz, ny, nx = image.shape
    n_blocks = bounds.shape[0] - 1
    partial = np.zeros((n_blocks, n_labels), dtype=np.float64)
    # cells whose 8 voxels all lie inside the image and inside [lo, hi) along x
    x_first = max(lo[2], 0)
    x_stop = min(hi[2], nx - 1)
    for block in numba.prange(n_blocks):
        values = np.empty(8, dtype=np.int64)
        acc = partial[block]
        for z in range(bounds[block], bounds[block + 1]):
            for y in range(lo[1], hi[1]):
                if z >= 0 and z + 1 < nz and y >= 0 and y + 1 < ny and x_first < x_stop:
                    r00 = image[z, y]
                    r01 = image[z, y + 1]
                    r10 = image[z + 1, y]
                    r11 = image[z + 1, y + 1]
                    for x in range(x_first, x_stop):
                        if _uniform_cell(r00, r01, r10, r11, x):
                            continue
                        _load(r00, r01, r10, r11, x, values)
                        _add_labels(values, lut, weights, acc)
                    for x in range(lo[2], x_first):
                        if not _fill_cell(image, z, y, x, values):
                            _add_labels(values, lut, weights, acc)
                    for x in range(max(x_stop, lo[2]), hi[2]):
                        if not _fill_cell(image, z, y, x, values):
                            _add_labels(values, lut, weights, acc)
                else:
                    for x in range(lo[2], hi[2]):
                        if not _fill_cell(image, z, y, x, values):
                            _add_labels(values, lut, weights, acc)
    return partial.sum(axis=0)


def label_surface(image, lut, n_labels, weights, lo, hi) -> np.ndarray:
    """Per-label area summed over cells whose lower corner lies in ``[lo, hi)`` (voxel indices).

    Voxels outside `image` read as background. ``lut[label]`` is the row of a label. This is the
    plain cell-by-cell reference; the measuring functions use the run-length pass of
    ``corrtomo.measure._runs``, which the tests check against it.
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if n_labels == 0 or np.any(hi <= lo):
        return np.zeros(n_labels)
    bounds = _split(int(lo[0]), int(hi[0]), 4 * numba.get_num_threads())
    return _label_surface_kernel(image, lut, n_labels, weights, lo, hi, bounds)


def surface_area(labels, *, spacing=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Surface area of every label of a 3D label image.

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of int
        Label image, 0 = background; labels need not be sequential. Axes are (plane, row, column).
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx) in micrometres; anisotropic spacing is supported.

    Returns
    -------
    labels_present : (N,) ndarray of uint64
        Sorted non-zero labels.
    area_um2 : (N,) ndarray of float64
        Surface area of each label in um^2; the volume is padded with background, so faces on the
        volume border count.

    Notes
    -----
    ``A = sum over 2x2x2 cells c of w[config_label(c)]``, with the configuration weights of
    :func:`configuration_weights` (Lindblad 2005, weights fitted for unbiased planar surfaces over
    isotropic orientations). Measured on digital balls: +9.4 % at r = 3, +1.9 % at r = 5,
    +0.7 % at r = 10 and -0.3 % at r = 20 voxels (``tests/test_measure.py``); axis-aligned planes
    are the worst orientation (-7.3 %), so boxes are underestimated. The sum is over cells, so chunks owning
    disjoint cells add up to the whole.

    References
    ----------
    .. [1] J. Lindblad, "Surface area estimation of digitized 3D objects using weighted local
       configurations", Image and Vision Computing 23 (2005) 111-122.

    Examples
    --------
    >>> import numpy as np
    >>> cube = np.zeros((12, 12, 12), dtype=np.uint8)
    >>> cube[2:10, 2:10, 2:10] = 1
    >>> present, area = surface_area(cube)
    >>> present.tolist(), round(float(area[0]) / (6 * 8 * 8), 1)  # axis-aligned faces: worst case
    ([1], 0.9)
    """
    from corrtomo._shared import normalize_spacing

    from ._moments import label_moments

    image = check_label_image(labels, "labels")
    moments = label_moments(image, spacing=normalize_spacing(spacing, 3))
    return moments.labels, moments.surface_um2
