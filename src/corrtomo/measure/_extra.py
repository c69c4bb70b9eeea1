"""Opt-in convex-hull descriptors: convex volume, solidity, maximum Feret diameter."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["convex_descriptors"]

_CORNER_OFFSETS = (
    np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64) - 0.5
)


@numba.njit(cache=True)
def _boundary_voxels(image, lut, n_labels):
    """Voxels of a label with a 6-neighbour outside it (or on the volume face), grouped by label."""
    nz, ny, nx = image.shape
    counts = np.zeros(n_labels + 1, dtype=np.int64)
    for sweep in range(2):
        if sweep == 1:
            starts = np.zeros(n_labels + 1, dtype=np.int64)
            for row in range(n_labels):
                starts[row + 1] = starts[row] + counts[row]
            coords = np.empty((starts[n_labels], 3), dtype=np.int64)
            fill = starts[:-1].copy()
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    v = image[z, y, x]
                    if v == 0:
                        continue
                    edge = (
                        z == 0
                        or y == 0
                        or x == 0
                        or z == nz - 1
                        or y == ny - 1
                        or x == nx - 1
                        or image[z - 1, y, x] != v
                        or image[z + 1, y, x] != v
                        or image[z, y - 1, x] != v
                        or image[z, y + 1, x] != v
                        or image[z, y, x - 1] != v
                        or image[z, y, x + 1] != v
                    )
                    if not edge:
                        continue
                    row = lut[v]
                    if sweep == 0:
                        counts[row] += 1
                    else:
                        coords[fill[row]] = (z, y, x)
                        fill[row] += 1
    return starts, coords


def convex_descriptors(image, lut, n_labels, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Convex-hull volume (um^3) and maximum Feret diameter (um) of every label row.

    Notes
    -----
    The hull is that of the corners of the label's boundary voxels (so it contains every voxel and
    ``solidity = V / V_hull <= 1``); the maximum Feret diameter is the largest distance between
    hull vertices. Boundary voxels are gathered for all labels in one numba pass; the hulls are
    then computed with ``scipy.spatial.ConvexHull`` in a loop over particles on these small point
    sets - the one per-particle Python loop of the package, and only for this opt-in extra.
    """
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    starts, coords = _boundary_voxels(image, lut, n_labels)
    volume = np.zeros(n_labels)
    feret = np.zeros(n_labels)
    for row in range(n_labels):
        voxels = coords[starts[row] : starts[row + 1]].astype(np.float64)
        points = (
            np.unique((voxels[:, None, :] + _CORNER_OFFSETS[None]).reshape(-1, 3), axis=0) * spacing
        )
        hull = ConvexHull(points)
        volume[row] = hull.volume
        feret[row] = pdist(points[hull.vertices]).max()
    return volume, feret
