"""Connected components that are safe on thin arrays (planes and lines of voxels)."""

from __future__ import annotations

import numpy as np

# a 3D connectivity restricted to a plane of voxels: faces stay faces, edges and corners
# both become the plane's diagonal neighbours
_PLANE_CONNECTIVITY = {6: 4, 18: 8, 26: 8}


def _thick_axes(shape) -> list[int]:
    """The axes longer than one voxel."""
    return [axis for axis, n in enumerate(shape) if n > 1]


def connected_components(
    image: np.ndarray,
    connectivity: int = 26,
    *,
    return_N: bool = False,
    out_dtype=np.uint32,
):
    """``cc3d.connected_components`` of a 3D array, correct for any shape.

    cc3d 4.1 estimates its union-find size from the array's shape and can under-count on
    arrays one voxel thick along an axis (a raster line with 26-connectivity, rarely a plane),
    where it raises ``RuntimeError: maximum length exception``; its 2D path labels some bool
    planes with a background voxel in a component, but not the same plane as uint8. Such
    arrays are labelled as the 2D plane (or line) they are, with the connectivity that equals
    the 3D one there, so the labels (1..n in raster order) are the same as a correct 3D
    labelling would give.

    Parameters
    ----------
    image : (P, M, N) ndarray
        Bool mask or integer labels (equal neighbouring values join).
    connectivity : {6, 18, 26}
    return_N : bool
        Also return the number of components.
    out_dtype : dtype
        Label dtype.

    Returns
    -------
    labels : (P, M, N) ndarray of ``out_dtype``
    n : int
        Only with ``return_N``.
    """
    import cc3d
    import fastremap

    image = np.asarray(image)
    connectivity = int(connectivity)
    if connectivity not in _PLANE_CONNECTIVITY:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity}")
    thick = _thick_axes(image.shape)
    if image.ndim == 3 and len(thick) < 3 and image.size:
        if len(thick) == 2:
            flat = image.reshape([image.shape[axis] for axis in thick])
            if flat.dtype == np.bool_:  # cc3d 4.1's 2D path mislabels some bool planes
                flat = flat.view(np.uint8)
            labels, n = cc3d.connected_components(
                flat, connectivity=_PLANE_CONNECTIVITY[connectivity], return_N=True,
                out_dtype=out_dtype,
            )
            # cc3d's 2D 8-connected labelling does not number in raster order; 3D does
            labels, _ = fastremap.renumber(labels, preserve_zero=True, in_place=True)
            labels = labels.astype(out_dtype, copy=False)
        else:
            # a line: every connectivity joins only the two raster neighbours
            labels, n = cc3d.connected_components(
                image, connectivity=6, return_N=True, out_dtype=out_dtype
            )
        labels = labels.reshape(image.shape)
    else:
        labels, n = cc3d.connected_components(
            image, connectivity=connectivity, return_N=True, out_dtype=out_dtype
        )
    return (labels, int(n)) if return_N else labels


def remove_dust(mask: np.ndarray, min_voxels: int, connectivity: int = 26) -> np.ndarray:
    """``mask`` without its components of fewer than ``min_voxels`` voxels (as ``cc3d.dust``).

    Uses ``cc3d.dust`` (in place on ``mask``, which must then be a bool array) except on arrays
    one voxel thick, which are labelled with :func:`connected_components`.
    """
    if len(_thick_axes(np.shape(mask))) == 3:
        import cc3d

        return cc3d.dust(mask, threshold=int(min_voxels), connectivity=int(connectivity),
                         in_place=True)
    labels, n = connected_components(mask, connectivity, return_N=True)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= int(min_voxels)
    keep[0] = False
    return keep[labels]
