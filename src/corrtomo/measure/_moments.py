"""Additive per-label moments: the one pass over the volume that every particle statistic comes from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np

from corrtomo._shared import InputError, normalize_spacing

from ._checks import check_label_image, check_offset, check_phase_image, label_index
from ._runs import F_COUNT, F_FIRST, F_HIGH, F_LOW, F_PHASE, F_SECOND, fused_pass, max_label
from ._surface import configuration_weights

# Labels are used directly as accumulator rows while the per-thread accumulators for labels
# 0..max stay below this many bytes (or a quarter of the image); otherwise the image is indexed.
_DENSE_BYTES = 64 << 20

__all__ = ["LabelMoments", "label_moments", "merge_moments"]

_BIG = np.iinfo(np.int64).max


@dataclass(frozen=True, eq=False)
class LabelMoments:
    """Additive per-label moments of a label volume (or of one block of it).

    All coordinates are global voxel indices (z, y, x), i.e. block indices plus the block offset.
    Two `LabelMoments` of disjoint blocks of the same volume merge into those of their union.

    Attributes
    ----------
    labels : (N,) ndarray of uint64
        Sorted labels; a label seen only in a block's halo has ``count == 0``.
    count : (N,) ndarray of int64
        Voxel count ``m0 = sum 1``.
    first : (N, 3) ndarray of int64
        ``sum z, sum y, sum x`` over the label's voxels.
    second : (N, 6) ndarray of int64
        ``sum zz, sum yy, sum xx, sum zy, sum zx, sum yx``.
    bbox_min, bbox_max : (N, 3) ndarray of int64
        Half-open bounding box (``bbox_max`` is one past the last voxel).
    phase_counts : (N, P) ndarray of int64
        Voxels of each phase id 0..P-1 in the label (P = 1 when no phase image was given).
    surface_um2 : (N,) ndarray of float64
        Sum of the 2x2x2-cell area weights of the cells the block owns.
    spacing : (3,) ndarray of float64
        Voxel size (dz, dy, dx) the surface weights were computed for, micrometres.
    volume_shape : (3,) ndarray of int64
        Shape of the whole volume (for ``touches_border``).
    """

    labels: np.ndarray
    count: np.ndarray
    first: np.ndarray
    second: np.ndarray
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    phase_counts: np.ndarray
    surface_um2: np.ndarray
    spacing: np.ndarray = field(repr=False)
    volume_shape: np.ndarray = field(repr=False)

    @property
    def n_labels(self) -> int:
        return int(self.labels.size)

    def merge(self, other: LabelMoments) -> LabelMoments:
        """Moments of the union of two disjoint blocks of the same volume."""
        return merge_moments([self, other])

    def select(self, keep: np.ndarray) -> LabelMoments:
        """Rows where the boolean mask `keep` is true."""
        return LabelMoments(
            labels=self.labels[keep],
            count=self.count[keep],
            first=self.first[keep],
            second=self.second[keep],
            bbox_min=self.bbox_min[keep],
            bbox_max=self.bbox_max[keep],
            phase_counts=self.phase_counts[keep],
            surface_um2=self.surface_um2[keep],
            spacing=self.spacing,
            volume_shape=self.volume_shape,
        )


def merge_moments(parts: Sequence[LabelMoments]) -> LabelMoments:
    """Merge the moments of disjoint blocks of one volume: sums add, boxes take min/max.

    Parameters
    ----------
    parts : sequence of LabelMoments
        Moments of blocks that own disjoint voxels and disjoint 2x2x2 cells.

    Returns
    -------
    LabelMoments
        Moments of the union; a label keeps every row it has in any part.

    Raises
    ------
    InputError
        If the parts were measured with different voxel sizes or volume shapes.
    """
    parts = list(parts)
    if not parts:
        raise InputError("nothing to merge", source="moments")
    reference = parts[0]
    for part in parts[1:]:
        if not np.allclose(part.spacing, reference.spacing, rtol=1e-12, atol=0):
            raise InputError(
                "cannot merge moments measured with different voxel sizes", source="moments"
            )
        if not np.array_equal(part.volume_shape, reference.volume_shape):
            raise InputError("cannot merge moments of different volume shapes", source="moments")
    labels = np.unique(np.concatenate([part.labels for part in parts]))
    n = labels.size
    n_phases = max(part.phase_counts.shape[1] for part in parts)
    count = np.zeros(n, np.int64)
    first = np.zeros((n, 3), np.int64)
    second = np.zeros((n, 6), np.int64)
    low = np.full((n, 3), _BIG, np.int64)
    high = np.full((n, 3), -1, np.int64)
    phase_counts = np.zeros((n, n_phases), np.int64)
    surface = np.zeros(n)
    for part in parts:  # a loop over blocks, not over labels
        rows = np.searchsorted(labels, part.labels)
        count[rows] += part.count
        first[rows] += part.first
        second[rows] += part.second
        low[rows] = np.minimum(low[rows], part.bbox_min)
        high[rows] = np.maximum(high[rows], part.bbox_max)
        phase_counts[rows, : part.phase_counts.shape[1]] += part.phase_counts
        surface[rows] += part.surface_um2
    return LabelMoments(
        labels=labels,
        count=count,
        first=first,
        second=second,
        bbox_min=low,
        bbox_max=high,
        phase_counts=phase_counts,
        surface_um2=surface,
        spacing=reference.spacing,
        volume_shape=reference.volume_shape,
    )


def label_moments(
    particles,
    phases=None,
    *,
    offset=(0, 0, 0),
    spacing=1.0,
    core_shape=None,
    volume_shape=None,
    n_phase_ids: int | None = None,
    surface: bool = True,
    _index=None,
) -> LabelMoments:
    """Additive moments of every label of a (block of a) 3D label volume, in one pass.

    Parameters
    ----------
    particles : (Z, Y, X) ndarray of int
        Label image or block of one, 0 = background; axes (plane, row, column).
    phases : (Z, Y, X) ndarray of uint8, optional
        Phase-id image of the same shape.
    offset : (3,) sequence of int
        Global voxel index of ``particles[0, 0, 0]``.
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres; only the surface weights depend on it.
    core_shape : (3,) sequence of int, optional
        The part of the block this call owns, ``particles[:cz, :cy, :cx]`` (default: all of it).
        Voxel moments are taken over the core only. The 2x2x2 cells owned are those whose lower
        corner lies in the core (plus the padding cells at index -1 on the volume's low faces);
        they read one voxel past the core, so a block that does not end at the volume's high face
        must carry that one-voxel halo: ``particles.shape == core_shape + 1`` there. Voxels past
        the core of a block that ends at the volume's high face are ignored (read as background).
    volume_shape : (3,) sequence of int, optional
        Shape of the whole volume (default ``offset + core_shape``).
    n_phase_ids : int, optional
        Number of phase-id columns (default ``max(phases) + 1``).
    surface : bool
        Also accumulate the surface (default). With ``surface=False`` the 2x2x2-cell part of the
        pass is skipped (about half of the work) and ``surface_um2`` is NaN; the other moments are
        identical, but labels that occur only in the block's halo are not listed.

    Returns
    -------
    LabelMoments

    Notes
    -----
    Per label ``l`` with voxels ``(z_i, y_i, x_i)``: ``m0 = #voxels``, first moments ``sum z``,
    second moments ``sum z z, sum z y, ...``, bounding box min/max, phase histogram, and the
    surface ``sum_cells w[config_l(cell)]`` (see :func:`surface_area`). All are sums (or min/max)
    over voxels or cells, so blocks merge exactly with :func:`merge_moments`.

    Everything comes from one parallel sweep over the rows of the volume, run-length encoded
    along x: a run of ``L`` equal labels adds its count and moments in closed form, and the cells
    between run boundaries of four neighbouring rows are added by configuration, not one by one
    (``corrtomo.measure._runs``). Labels index the accumulators directly while the largest label
    is moderate; otherwise the image is renumbered once (``fastremap``).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((4, 4, 4), dtype=np.uint32)
    >>> labels[1:3, 1:3, 1:3] = 7
    >>> whole = label_moments(labels)
    >>> top = label_moments(labels[:3], core_shape=(2, 4, 4), volume_shape=(4, 4, 4))
    >>> bottom = label_moments(labels[2:], offset=(2, 0, 0), volume_shape=(4, 4, 4))
    >>> merged = top.merge(bottom)
    >>> int(merged.count[0]), bool(np.isclose(merged.surface_um2[0], whole.surface_um2[0]))
    (8, True)
    """
    image = check_label_image(particles, "particles")
    use_phases = phases is not None
    phase_image = check_phase_image(phases, image) if use_phases else None
    values = normalize_spacing(spacing, 3)
    origin = check_offset(offset)
    block_shape = np.array(image.shape, dtype=np.int64)
    core = (
        block_shape.copy() if core_shape is None else np.asarray(core_shape, dtype=np.int64).ravel()
    )
    if core.size != 3 or np.any(core < 0) or np.any(core > block_shape):
        raise InputError(
            f"core_shape {list(core)} must lie inside the block shape {list(block_shape)}",
            source="core_shape",
        )
    full = (
        origin + core if volume_shape is None else np.asarray(volume_shape, dtype=np.int64).ravel()
    )
    if full.size != 3 or np.any(origin + core > full):
        raise InputError(
            f"block at {list(origin)} of core {list(core)} exceeds volume shape {list(full)}",
            source="volume_shape",
        )
    ends_inside = origin + core < full
    if np.any(ends_inside & (block_shape < core + 1)):
        raise InputError(
            "a block that does not reach the volume's high face needs a one-voxel halo past its core",
            source="particles",
        )
    # the voxels read: the core, plus the halo where the block does not end at the volume's face
    ext = np.where(ends_inside & surface, core + 1, core)
    region = image[tuple(slice(0, int(e)) for e in ext)]
    if use_phases:
        phase_region = phase_image[tuple(slice(0, int(e)) for e in ext)]
        if phase_region.dtype != np.uint8:
            phase_region = phase_region.astype(np.uint8)  # ids are checked to be <= 255
        top_phase = int(phase_region.max()) + 1 if phase_region.size else 1
        n_phases = top_phase if n_phase_ids is None else int(n_phase_ids)
        if n_phases < top_phase:
            raise InputError(
                f"phase id {top_phase - 1} exceeds n_phase_ids={n_phases}", source="phases"
            )
    else:
        phase_region = None
        n_phases = 1
    if region.size == 0:
        dense, present, lut, n_rows = False, np.zeros(0, np.uint64), np.full(1, -1, np.int64), 0
    elif _index is not None:
        dense = False
        present, lut = _index
        n_rows = present.size
    else:
        top = max_label(region)
        row_bytes = (F_PHASE + n_phases + 2) * 8
        budget = max(_DENSE_BYTES, region.nbytes // 4)
        dense = top * row_bytes * numba.get_num_threads() <= budget
        if dense:  # label l -> row l - 1
            lut = np.arange(-1, top, dtype=np.int64)
            n_rows = top
        else:
            present, lut, region = label_index(region)
            n_rows = present.size
    weights = configuration_weights(values)
    if n_rows == 0 or np.any(core == 0):
        acc = np.zeros((n_rows, F_PHASE + n_phases), np.int64)
        acc[:, F_LOW : F_LOW + 3] = _BIG
        acc[:, F_HIGH : F_HIGH + 3] = -1
        surf = np.zeros(n_rows)
        seen = np.zeros(n_rows, dtype=bool)
    else:
        low_face = origin == 0
        lo = np.where(low_face, -1, 0)
        acc, surf, seen = fused_pass(
            region, phase_region, lut, n_rows, n_phases, weights, core, lo, surface=surface
        )
    if dense:
        rows = np.flatnonzero(seen)
        present = (rows + 1).astype(np.uint64)
        acc = acc[rows]
        surf = surf[rows]
    count = acc[:, F_COUNT].copy()
    first = acc[:, F_FIRST : F_FIRST + 3]
    second = acc[:, F_SECOND : F_SECOND + 6]
    low = acc[:, F_LOW : F_LOW + 3]
    high = acc[:, F_HIGH : F_HIGH + 3]
    phase_counts = np.ascontiguousarray(acc[:, F_PHASE:])
    if not surface:
        surf = np.full(count.size, np.nan)
    shift = origin[None, :]
    first = first + count[:, None] * shift
    z0, y0, x0 = (int(v) for v in origin)
    second = second + np.stack(
        [
            2 * z0 * first[:, 0] - count * z0 * z0,
            2 * y0 * first[:, 1] - count * y0 * y0,
            2 * x0 * first[:, 2] - count * x0 * x0,
            z0 * first[:, 1] + y0 * first[:, 0] - count * z0 * y0,
            z0 * first[:, 2] + x0 * first[:, 0] - count * z0 * x0,
            y0 * first[:, 2] + x0 * first[:, 1] - count * y0 * x0,
        ],
        axis=1,
    ).reshape(-1, 6)
    seen_voxels = count > 0
    low = np.where(seen_voxels[:, None], low + shift, _BIG)
    high = np.where(seen_voxels[:, None], high + shift, -1)
    return LabelMoments(
        labels=present,
        count=count,
        first=first,
        second=second,
        bbox_min=low,
        bbox_max=high,
        phase_counts=phase_counts,
        surface_um2=surf,
        spacing=values,
        volume_shape=full,
    )
