"""Chunked connected-component labelling: per-block cc3d plus a union-find over block faces."""

from __future__ import annotations

from itertools import product

import numba
import numpy as np

from corrtomo._shared import InputError, connected_components

from ._blocks import BlockGrid, block_grid, read_block, volume_shape

__all__ = ["BlockUnion", "LabelShell", "label_components"]

# The 13 "forward" neighbour-block offsets (first non-zero component +1): every pair of blocks
# that share a face, an edge or a corner appears once as (earlier block, later block).
_FORWARD = tuple(
    d for d in product((-1, 0, 1), repeat=3) if any(d) and d[int(np.flatnonzero(d)[0])] == 1
)
# how many axes two voxels may differ in and still be neighbours
_BUDGET = {6: 1, 18: 2, 26: 3}


@numba.njit(cache=True, nogil=True)
def _first_voxel(flat, n):
    """Flat index of the first voxel (raster order) of each label 1..n of a block; -1 if absent."""
    first = np.full(n + 1, -1, np.int64)
    found = 0
    for i in range(flat.size):
        label = flat[i]
        if label != 0 and first[label] < 0:
            first[label] = i
            found += 1
            if found == n:
                break
    return first


def block_components(block: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """``cc3d.connected_components`` of one block: uint32 labels 1..n in raster order, and n.

    Through :func:`corrtomo._shared.connected_components`, so blocks one voxel thick (edge
    blocks, thin chunks) are labelled correctly too.
    """
    return connected_components(block, connectivity, return_N=True)


class LabelShell:
    """What :class:`BlockUnion` needs of a block's local labels: its six faces and first voxels.

    A block task returns this instead of the whole (block-sized) label array, so a pass that
    labels its blocks on workers sends the client only O(block face + labels) numbers, and a
    kept block record (:meth:`corrtomo.BlockRunner.keep_records`) stays small.

    Parameters
    ----------
    local : (P, M, N) ndarray of uint32
        Block-local labels 1..n (0 = background), e.g. from :func:`block_components`.
    n : int
        Number of local labels.
    values : (P, M, N) ndarray, optional
        The block's input values, for a :class:`BlockUnion` with ``values=True``.

    Attributes
    ----------
    shape : tuple of 3 int
    n : int
    first : (n,) int64
        Flat (raster) index inside the block of the first voxel of each label 1..n.
    low, high : list of 3 (2D ndarray or None)
        The block's first and last plane along each axis (``None`` for an empty axis).
    first_values : (n,) ndarray or None
        The input value of each label (with `values`).
    value_low, value_high : list of 3 (2D ndarray or None) or None
        The input's first and last planes (with `values`).
    """

    def __init__(self, local: np.ndarray, n: int, values: np.ndarray | None = None):
        local = np.ascontiguousarray(local)
        self.shape = tuple(int(k) for k in local.shape)
        self.n = int(n)
        self.first = _first_voxel(local.ravel(), self.n)[1:]
        self.low, self.high = _planes(local)
        self.first_values = self.value_low = self.value_high = None
        if values is not None:
            values = np.ascontiguousarray(values)
            self.first_values = values.ravel()[self.first[self.first >= 0]]
            self.value_low, self.value_high = _planes(values)


def _planes(array: np.ndarray) -> tuple[list, list]:
    """The first and the last plane of `array` along each axis (``None`` where it is empty)."""
    return ([np.take(array, 0, axis=k) if array.shape[k] else None for k in range(3)],
            [np.take(array, -1, axis=k) if array.shape[k] else None for k in range(3)])


def _check_connectivity(connectivity: int) -> int:
    if connectivity not in _BUDGET:
        raise InputError(
            f"connectivity must be 6, 18 or 26, got {connectivity}", source="connectivity"
        )
    return int(connectivity)


def _pack_pairs(a: np.ndarray, b: np.ndarray, top: int) -> np.ndarray:
    """Distinct (a, b) pairs of positive ids < `top` as an (M, 2) int64 array."""
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    if top < 2**31:
        keys = np.unique(a.astype(np.int64) * top + b.astype(np.int64))
        return np.stack([keys // top, keys % top], axis=1)
    return np.unique(np.stack([a, b], axis=1).astype(np.int64), axis=0)


class BlockUnion:
    """Join block-local connected components into global ones (union-find over block faces).

    Blocks are added in raster order of the grid (:meth:`add`), each with its block-local
    ``cc3d`` labels 1..n. Local label ``k`` of a block gets the provisional global id
    ``offset + k`` (offsets are the running total of local labels). Only the three high-side
    planes of the blocks in the current and the previous z-row of blocks are kept, plus, per
    local label, the global raster index of its first voxel (and its input value); so memory is
    a few blocks plus ``O(#local labels)``. :meth:`finish` solves the equivalences and numbers
    the global components.

    Parameters
    ----------
    grid : BlockGrid
        The block partition.
    connectivity : {6, 18, 26}
        Voxel connectivity across block borders (the same as inside the blocks).
    values : bool
        Voxels join across a border only if their input values are equal (multi-label input);
        otherwise any two foreground voxels join.
    """

    def __init__(self, grid: BlockGrid, connectivity: int = 26, *, values: bool = False):
        self.grid = grid
        self.connectivity = _check_connectivity(connectivity)
        self.values = bool(values)
        self.total = 0
        self._offsets: dict[tuple[int, int, int], tuple[int, int]] = {}
        self._faces: dict[tuple[int, int, int], tuple[list, list | None]] = {}
        self._first: list[np.ndarray] = [np.full(1, -1, np.int64)]
        self._value: list[np.ndarray] = [np.zeros(1, np.uint64)]
        self._pairs: list[np.ndarray] = []
        self._final: np.ndarray | None = None
        self._component_value: np.ndarray | None = None
        self.n = 0

    # ------------------------------------------------------------------------------ adding
    def add(self, index, local, n: int, block: np.ndarray | None = None) -> None:
        """Register block `index` with its local labels `local` (1..n, 0 = background).

        `local` is the label array or its :class:`LabelShell` (the same result). `block` is
        the block's input (required with ``values=True`` and a label array; the value of each
        local label is read from it; a shell carries its own values).
        """
        index = tuple(int(i) for i in index)
        n = int(n)
        if isinstance(local, LabelShell):
            shell = local
            if self.values and shell.first_values is None:
                raise InputError("values=True needs a LabelShell made with the block's values", source="labels")
        else:
            if self.values and block is None:
                raise InputError("values=True needs the block's input values", source="block")
            shell = LabelShell(local, n, block if self.values else None)
        origin = self.grid.origin(index)
        first = shell.first[:n]
        if first.size != n or np.any(first < 0):
            raise InputError("block labels must be consecutive 1..n", source="labels")
        position = np.stack(np.unravel_index(first, shell.shape), axis=1) + origin[None, :]
        total_shape = np.asarray(self.grid.shape, dtype=np.int64)
        raster = np.ravel_multi_index(tuple(position.T), tuple(total_shape)).astype(np.int64)
        self._first.append(raster)
        if self.values:
            self._value.append(shell.first_values.astype(np.uint64))
        offset = self.total
        self._offsets[index] = (offset, n)
        self.total += n
        self._join_earlier(index, shell, offset)
        # faces: the high-side planes (needed by later neighbours)
        self._faces[index] = (shell.high, shell.value_high)
        for old in [key for key in self._faces if key[0] < index[0] - 1]:
            del self._faces[old]

    def _join_earlier(self, index, shell: LabelShell, offset) -> None:
        budget = _BUDGET[self.connectivity]
        grid_shape = self.grid.grid_shape
        found_a, found_b = [], []
        for d in _FORWARD:
            if int(np.count_nonzero(d)) > budget:
                continue
            earlier = tuple(i - s for i, s in zip(index, d, strict=True))
            if min(earlier) < 0 or any(e >= g for e, g in zip(earlier, grid_shape, strict=True)):
                continue
            if earlier not in self._faces:
                raise RuntimeError(f"block {earlier} must be added before block {index}")
            k0 = int(np.flatnonzero(d)[0])
            planes, value_planes = self._faces[earlier]
            a_plane = planes[k0]
            if a_plane is None or shell.shape[k0] == 0:
                continue
            b_plane = shell.low[k0]
            a_values = value_planes[k0] if self.values else None
            b_values = shell.value_low[k0] if self.values else None
            a_offset = self._offsets[earlier][0]
            for sa, sb in _plane_pairs(d, k0, budget, a_plane.shape, b_plane.shape):
                a = a_plane[sa].ravel()
                b = b_plane[sb].ravel()
                keep = (a != 0) & (b != 0)
                if self.values:
                    keep &= a_values[sa].ravel() == b_values[sb].ravel()
                if np.any(keep):
                    found_a.append(a[keep].astype(np.int64) + a_offset)
                    found_b.append(b[keep].astype(np.int64) + offset)
        if found_a:
            self._pairs.append(
                _pack_pairs(np.concatenate(found_a), np.concatenate(found_b), self.total + 1)
            )

    # ------------------------------------------------------------------------------ solving
    def finish(self) -> int:
        """Solve the equivalences; returns the number of global components.

        Components are numbered 1..n in raster order of their first voxel in the whole volume
        (the order ``cc3d`` numbers them in memory), so the numbering does not depend on the
        block shape.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        first = np.concatenate(self._first)
        key = first.copy()
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.int64)
        if pairs.size:
            nodes, inverse = np.unique(pairs.ravel(), return_inverse=True)
            inverse = inverse.reshape(-1, 2)
            graph = coo_matrix(
                (np.ones(inverse.shape[0], np.int8), (inverse[:, 0], inverse[:, 1])),
                shape=(nodes.size, nodes.size),
            )
            n_sets, member = connected_components(graph, directed=False)
            smallest = np.full(n_sets, np.iinfo(np.int64).max, np.int64)
            np.minimum.at(smallest, member, first[nodes])
            key[nodes] = smallest[member]
        final = np.zeros(first.size, np.int64)
        unique_keys, final[1:] = np.unique(key[1:], return_inverse=True)
        final[1:] += 1
        self.n = int(unique_keys.size)
        self._final = final
        self._first = []
        self._pairs = []
        self._faces = {}
        if self.values:
            values = np.concatenate(self._value)
            component_value = np.zeros(self.n + 1, np.uint64)
            component_value[final[1:]] = values[1:]
            self._component_value = component_value
            self._value = []
        return self.n

    def block_map(self, index, dtype=np.uint32) -> np.ndarray:
        """Lookup table local label -> global label (entry 0 = background) for block `index`."""
        if self._final is None:
            raise RuntimeError("call finish() first")
        offset, n = self._offsets[tuple(int(i) for i in index)]
        table = self._final[offset : offset + n + 1].astype(dtype)
        table[0] = 0
        return table

    @property
    def component_values(self) -> np.ndarray:
        """(n + 1,) uint64 input value of each global component (``values=True`` only)."""
        if self._component_value is None:
            raise RuntimeError("only available with values=True after finish()")
        return self._component_value


def _plane_pairs(d, k0, budget, a_shape, b_shape):
    """Slices into A's high plane and B's low plane (along `k0`) that pair neighbouring voxels.

    The planes span the two axes other than `k0`. Along an axis where the blocks differ
    (``d = +-1``) only the extreme row or column takes part; along a shared axis, in-plane
    shifts of -1, 0, +1 are applied as far as the connectivity allows (``budget`` differing
    axes in total).
    """
    other = [k for k in range(3) if k != k0]
    used = 1 + sum(1 for k in other if d[k] != 0)
    if used > budget:
        return
    free = [j for j, k in enumerate(other) if d[k] == 0]
    for shifts in product((-1, 0, 1), repeat=len(free)):
        if used + sum(1 for s in shifts if s) > budget:
            continue
        sa, sb = [], []
        shift_of = dict(zip(free, shifts, strict=True))
        for j, k in enumerate(other):
            if d[k] == 1:
                sa.append(slice(a_shape[j] - 1, a_shape[j]))
                sb.append(slice(0, 1))
            elif d[k] == -1:
                sa.append(slice(0, 1))
                sb.append(slice(b_shape[j] - 1, b_shape[j]))
            else:
                s, length = shift_of[j], a_shape[j]
                sa.append(slice(max(0, -s), length - max(0, s)))
                sb.append(slice(max(0, s), length - max(0, -s)))
        yield tuple(sa), tuple(sb)


def _check_input(array, name: str) -> np.dtype:
    dtype = np.dtype(array.dtype)
    if dtype != np.bool_ and not np.issubdtype(dtype, np.integer):
        raise InputError(f"expected a boolean or integer volume, got dtype {dtype}", source=name)
    return dtype


def _check_out(out, shape, name: str = "out"):
    if tuple(int(n) for n in out.shape) != tuple(shape):
        raise InputError(
            f"shape {tuple(out.shape)} differs from the input shape {tuple(shape)}", source=name
        )
    if not np.issubdtype(np.dtype(out.dtype), np.unsignedinteger):
        raise InputError(f"must have an unsigned integer dtype, got {out.dtype}", source=name)


def label_components(
    mask, *, connectivity: int = 26, chunks=None, out=None, values: bool = False
) -> tuple[object, int]:
    """Connected components of a 3D volume, block by block, identical to ``cc3d`` in memory.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray, zarr.Array or dask.array.Array of bool or int
        Axes (plane, row, column). Non-zero voxels are foreground; never modified.
    connectivity : {6, 18, 26}
        Voxel connectivity (faces; faces and edges; faces, edges and corners).
    chunks : (3,) sequence of int or Dask-style tuple of tuples, optional
        Block shape. Default: the chunks of `mask` (Zarr/Dask), else those of `out` (Zarr), else
        the whole volume as one block.
    out : zarr.Array or ndarray of unsigned int, optional
        Where the labels are written, block by block (same shape as `mask`; best with the same
        chunks). Default: a new uint32 numpy array.
    values : bool
        Multi-label input: components are connected voxels of *equal* non-zero value (as
        ``cc3d`` labels a multi-label image), e.g. grains as components of a (particle, phase)
        key image. Default False: all non-zero voxels are one foreground.

    Returns
    -------
    labels : ndarray or zarr.Array of uint
        `out` (or a new uint32 array): 0 = background, components 1..n.
    n : int
        Number of components.

    Raises
    ------
    InputError
        Non-3D or non-integer input, negative values with ``values=True``, bad connectivity,
        chunks, or `out` of the wrong shape or dtype (or too small for the labels).

    Notes
    -----
    Three passes over the blocks (raster order; a Python loop over blocks, never over voxels):

    1. Each block is labelled with ``cc3d.connected_components`` (ids 1..n_b, provisional
       global id ``offset_b + k``; kept in `out` when it is a numpy array). The block's
       planes facing its 13 earlier neighbours (face, edge and corner neighbours) are compared
       with the stored high-side planes of those neighbours: every pair of foreground voxels
       that are neighbours under `connectivity` (for 26, the 3x3 diagonal neighbourhood on the
       adjacent plane, the edge lines and the corner voxels) and, with ``values=True``, have
       equal values, gives an equivalence ``(id_a, id_b)``. Pair extraction is vectorised
       slicing of the planes.
    2. The distinct equivalences form a graph on the provisional ids whose connected components
       (``scipy.sparse.csgraph``, an exact union-find) are the global components. Each global
       component is keyed by the global raster index of its first voxel (the minimum over its
       pieces) and numbered by the rank of that key.
    3. Each block's local labels (from `out` in memory; out of core the block is read and
       labelled again - ``cc3d`` is deterministic, and this is cheaper than writing and reading
       back provisional labels) are mapped with the block's local -> global lookup table (one
       vectorised take) and written to `out`.

    Guarantee: the labels equal ``cc3d.connected_components(mask, connectivity=...)`` of the
    whole volume in memory voxel for voxel (same ids, which ``cc3d`` assigns in raster order of
    first voxels), for any block shape. Memory: a few blocks, the high-side planes of two
    z-rows of blocks, and O(number of block-local components) for the equivalence table.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((4, 4, 4), dtype=bool)
    >>> mask[0, 0, :] = mask[1, 1, :] = True   # joined diagonally across the z border
    >>> mask[3, 3, 3] = True
    >>> labels, n = label_components(mask, chunks=(1, 2, 2))
    >>> n, int(labels[1, 1, 3]), int(labels[3, 3, 3])
    (2, 1, 2)
    """
    connectivity = _check_connectivity(connectivity)
    shape = volume_shape(mask, "mask")
    dtype = _check_input(mask, "mask")
    grid = block_grid(shape, chunks, like=(mask, out) if out is not None else (mask,))
    if out is None:
        target = np.zeros(shape, dtype=np.uint32)
    else:
        _check_out(out, shape)
        target = out
    top = np.iinfo(np.dtype(target.dtype)).max
    union = BlockUnion(grid, connectivity, values=values)
    signed = np.issubdtype(dtype, np.signedinteger)
    in_memory = isinstance(target, np.ndarray)

    def local_labels(index) -> tuple[np.ndarray, int, np.ndarray]:
        block = read_block(mask, grid.slices(index))
        if values:
            if signed and block.size and block.min() < 0:
                raise InputError("values must be non-negative", source="mask")
            source = block.view(np.uint8) if block.dtype == np.bool_ else block
        else:
            source = block != 0
        local, n = block_components(source, connectivity)
        return local, n, source

    for index in grid:
        local, n, source = local_labels(index)
        if n > top:
            raise InputError(f"dtype {target.dtype} cannot hold {n} labels", source="out")
        union.add(index, local, n, source if values else None)
        if in_memory:  # keep the local labels; out of core they are recomputed in pass 3
            target[grid.slices(index)] = local
    n = union.finish()
    if n > top:
        raise InputError(f"dtype {target.dtype} cannot hold {n} labels", source="out")
    for index in grid:
        slices = grid.slices(index)
        local = target[slices] if in_memory else local_labels(index)[0]
        target[slices] = np.take(union.block_map(index, target.dtype), local)
    return target, n
