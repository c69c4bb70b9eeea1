"""2D versus 3D liberation: virtual sections through labelled volumes and section liberation by area.

The 2D routine (:func:`section_particle_table`, :func:`section_liberation`) takes any stack of 2D
particle maps and phase maps, so a measured SEM mineral map and a virtual section of the CT
volume go through exactly the same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import ndimage

from .._shared import InputError, PlanePose, as_rng, normalize_spacing
from ._common import VF_PREFIX, check_edges, geometric_size_bins
from ._liberation import liberation_table

_MAX_CHUNK_VOXELS = 1 << 22


# --------------------------------------------------------------------------------------------
# per-label composition (any dimension)
# --------------------------------------------------------------------------------------------


def _is_lazy(image) -> bool:
    """A Zarr or Dask array (or any array-like read by slicing): never turned into one array."""
    return not isinstance(image, np.ndarray) and all(
        hasattr(image, name) for name in ("shape", "dtype", "ndim", "__getitem__")
    )


def _check_label_pair(
    particles: np.ndarray, phases: np.ndarray, *, ndim: int | None = None
) -> None:
    if particles.shape != phases.shape:
        raise InputError(
            f"particle and phase images differ in shape: {particles.shape} vs {phases.shape}",
            source="phases",
        )
    if ndim is not None and particles.ndim != ndim:
        raise InputError(f"expected a {ndim}D image, got {particles.ndim}D", source="particles")
    for name, image in (("particles", particles), ("phases", phases)):
        if not (np.issubdtype(image.dtype, np.integer) or image.dtype == bool):
            raise InputError(f"labels must be integers, got {image.dtype}", source=name)
        if _is_lazy(image):  # no pass over a lazy volume here: sections are checked once read
            continue
        if image.size and np.issubdtype(image.dtype, np.signedinteger) and image.min() < 0:
            raise InputError("labels must be non-negative", source=name)


def _present_phase_ids(phases) -> np.ndarray:
    """Sorted phase ids present in a volume; a lazy volume is read slab by slab along axis 0."""
    if not _is_lazy(phases):
        return np.unique(phases)
    plane = int(np.prod(phases.shape[1:], dtype=np.int64)) or 1
    step = max(1, _MAX_CHUNK_VOXELS // plane)
    ids = np.zeros(0, dtype=phases.dtype)
    for start in range(0, phases.shape[0], step):  # loop over slabs
        ids = np.union1d(ids, np.unique(np.asarray(phases[start : start + step])))
    return ids


def _read_planes(image, index: np.ndarray, axis: int) -> np.ndarray:
    """``np.moveaxis(np.take(image, index, axis), axis, 0)``, reading one plane of `image` at a time."""
    unique, inverse = np.unique(index, return_inverse=True)
    key = [slice(None)] * image.ndim
    planes = []
    for i in unique:  # loop over planes: a Zarr array reads only the chunks a plane crosses
        key[axis] = int(i)
        planes.append(np.asarray(image[tuple(key)]))
    return np.stack(planes)[inverse.ravel()]


def _read_points(image, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``image[z, y, x]`` for coordinate arrays; a lazy volume by coordinate (``vindex``) reads."""
    if not _is_lazy(image):
        return image[z, y, x]
    if not hasattr(image, "vindex"):
        raise InputError(
            f"oblique sections of a lazy {type(image).__name__} need point reads (vindex); "
            "use orientation='axis' or a Zarr/Dask array",
            source="orientation",
        )
    if z.size == 0:
        return np.zeros(0, dtype=image.dtype)
    return np.asarray(image.vindex[z, y, x])


def _phase_lookup(
    phases: np.ndarray, phase_names: Mapping[int, str] | None
) -> tuple[np.ndarray, list[str]]:
    """Map phase ids to slots ``0..P-1`` (named phases) and ``P`` (0 and unnamed ids)."""
    if phase_names is None:
        ids = np.unique(phases)
        ids = ids[ids > 0]
        phase_names = {int(k): f"phase{int(k)}" for k in ids}
    ids = np.array(sorted(int(k) for k in phase_names), dtype=np.int64)
    top = int(max(phases.max(initial=0), ids.max(initial=0)))
    lookup = np.full(top + 1, ids.size, dtype=np.int64)
    lookup[ids] = np.arange(ids.size)
    return lookup, [str(phase_names[int(k)]) for k in ids]


def _label_phase_counts(
    labels: np.ndarray, slots: np.ndarray, lookup: np.ndarray, n_labels: int
) -> np.ndarray:
    """(n_labels + 1, n_slots) voxel counts of every (label, phase slot), chunk by chunk along axis 0."""
    n_slots = int(lookup.max(initial=0)) + 1
    counts = np.zeros((n_labels + 1) * n_slots, dtype=np.int64)
    plane = int(np.prod(labels.shape[1:], dtype=np.int64)) or 1
    step = max(1, _MAX_CHUNK_VOXELS // plane)
    for start in range(0, labels.shape[0], step):
        label = labels[start : start + step].ravel().astype(np.int64)
        slot = lookup[slots[start : start + step].ravel()]
        counts += np.bincount(label * n_slots + slot, minlength=counts.size)
    return counts.reshape(n_labels + 1, n_slots)


def _composition(
    counts: np.ndarray, names: list[str], present: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    total = counts.sum(axis=1)
    keep = present & (total > 0)
    keep[0] = False
    labels = np.flatnonzero(keep)
    n = total[labels].astype(np.float64)
    fractions = {VF_PREFIX + name: counts[labels, j] / n for j, name in enumerate(names)}
    return labels, n, fractions


def _compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Renumber sparse labels (max label far above the voxel count) to 1..N; return the old labels."""
    top = int(labels.max(initial=0))
    if top <= max(1 << 24, 4 * labels.size):
        return labels, None
    import fastremap

    compact, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=False)
    original = np.zeros(len(mapping) + 1, dtype=np.int64)
    for old, new in mapping.items():  # one entry per label: a dict, not the volume
        original[new] = old
    return compact, original


def _border_labels_3d(labels: np.ndarray) -> np.ndarray:
    faces = []
    for axis in range(labels.ndim):
        faces.append(np.take(labels, 0, axis=axis).ravel())
        faces.append(np.take(labels, -1, axis=axis).ravel())
    return np.unique(np.concatenate(faces))


def composition_table(
    particles: np.ndarray,
    phases: np.ndarray,
    *,
    spacing: float | Sequence[float] = 1.0,
    phase_names: Mapping[int, str] | None = None,
) -> pd.DataFrame:
    """Per-particle size and phase composition of a 3D label volume, in one ``bincount`` pass.

    The subset of the ``particles.csv`` columns that liberation needs (``label, volume_voxels,
    volume_um3, esd_um, touches_border, vf_<phase>``); :func:`corrtomo.measure.particle_table`
    computes the full table. Used by :func:`stereology_comparison` so 3D and 2D go through the same
    counting code.

    Parameters
    ----------
    particles : (P, M, N) ndarray of int
        Particle labels (z, y, x), 0 is background.
    phases : (P, M, N) ndarray of int
        Phase ids of the phase library, 0 is matrix.
    spacing : float or (3,) sequence
        Voxel size in micrometres, (z, y, x).
    phase_names : mapping of int to str, optional
        Names of the phase ids; default ``phase<k>`` for every id present.

    Notes
    -----
    ``ESD = (6 V / pi)^(1/3)`` with ``V`` the voxel count times the voxel volume.
    """
    particles = np.asarray(particles)
    phases = np.asarray(phases)
    _check_label_pair(particles, phases, ndim=3)
    spacing_zyx = normalize_spacing(spacing, 3)
    lookup, names = _phase_lookup(phases, phase_names)
    particles, original = _compact_labels(particles)
    n_labels = int(particles.max(initial=0))
    counts = _label_phase_counts(particles, phases, lookup, n_labels)
    present = np.zeros(n_labels + 1, dtype=bool)
    present[np.flatnonzero(counts.sum(axis=1))] = True
    labels, n, fractions = _composition(counts, names, present)
    volume = n * float(np.prod(spacing_zyx))
    border = np.zeros(n_labels + 1, dtype=bool)
    border[_border_labels_3d(particles)] = True
    return pd.DataFrame(
        {
            "label": labels if original is None else original[labels],
            "volume_voxels": n.astype(np.int64),
            "volume_um3": volume,
            "esd_um": np.cbrt(6.0 * volume / np.pi),
            "touches_border": border[labels],
            **fractions,
        }
    )


def composition_from_table(
    table: pd.DataFrame,
    *,
    spacing: float | Sequence[float] = 1.0,
    phase_names: Mapping[int, str] | None = None,
    volume_shape: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The :func:`composition_table` of a volume from its particle table, without reading the volume.

    For volumes too large to read whole: the ``particles.csv`` table (from
    :func:`corrtomo.measure.particle_table` or its block-by-block twin) already holds every
    column that :func:`composition_table` computes, so :func:`stereology_comparison` can take this
    result as its `composition` and read only the planes it samples.

    Parameters
    ----------
    table : DataFrame
        One row per particle of the whole volume: ``label``, ``volume_voxels``, ``vf_<name>`` for
        every phase of `phase_names`, and ``touches_border`` (without `volume_shape`) or the
        half-open voxel box ``bbox_min_z .. bbox_max_x`` (with it).
    spacing : float or (3,) sequence
        Voxel size in micrometres, (z, y, x).
    phase_names : mapping of int to str, optional
        The phase names given to :func:`stereology_comparison`; default every ``vf_<name>`` column
        but ``vf_unassigned``, in table order.
    volume_shape : (3,) sequence of int, optional
        Shape of the measured volume. Given, ``touches_border`` is recomputed from the boxes as a
        voxel on a face of the volume - :func:`composition_table`'s definition - so flags that a
        table gained later (e.g. the pipeline's pillar wall) are not carried over.

    Returns
    -------
    DataFrame
        The columns of :func:`composition_table` (``label, volume_voxels, volume_um3, esd_um,
        touches_border, vf_<phase>``), sorted by label; equal to ``composition_table(particles,
        phases, ...)`` of the volume the table was measured on.

    Notes
    -----
    ``V = n v`` with ``n`` the voxel count and ``v`` the voxel volume, ``ESD = (6 V / pi)^(1/3)``,
    computed here as in :func:`composition_table`; the volume fractions ``n_i / n`` are the
    table's (the same division of the same integer counts).
    """
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"expected a DataFrame, got {type(table).__name__}", source="table")
    if phase_names is None:
        names = [
            c[len(VF_PREFIX) :]
            for c in table.columns
            if str(c).startswith(VF_PREFIX) and c != VF_PREFIX + "unassigned"
        ]
    else:
        names = [str(phase_names[k]) for k in sorted(phase_names, key=int)]
    box = [f"bbox_{end}_{a}" for end in ("min", "max") for a in "zyx"]
    needed = ["label", "volume_voxels", *(VF_PREFIX + n for n in names)]
    needed += ["touches_border"] if volume_shape is None else box
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise InputError(f"the particle table lacks columns {missing}", source="table")
    spacing_zyx = normalize_spacing(spacing, 3)
    table = table.sort_values("label", kind="stable")
    n = table["volume_voxels"].to_numpy(dtype=np.float64)
    volume = n * float(np.prod(spacing_zyx))
    if volume_shape is None:
        border = table["touches_border"].to_numpy(dtype=bool)
    else:
        shape = np.asarray(volume_shape, dtype=np.int64).ravel()
        if shape.size != 3:
            raise InputError(
                f"volume_shape must be three integers, got {shape.tolist()}", source="volume_shape"
            )
        low = table[box[:3]].to_numpy(dtype=np.int64)
        high = table[box[3:]].to_numpy(dtype=np.int64)
        border = np.any((low == 0) | (high == shape[None, :]), axis=1)
    return pd.DataFrame(
        {
            "label": table["label"].to_numpy(dtype=np.int64),
            "volume_voxels": n.astype(np.int64),
            "volume_um3": volume,
            "esd_um": np.cbrt(6.0 * volume / np.pi),
            "touches_border": border,
            **{
                VF_PREFIX + name: table[VF_PREFIX + name].to_numpy(dtype=np.float64)
                for name in names
            },
        }
    )


# --------------------------------------------------------------------------------------------
# virtual sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SectionStack:
    """A stack of 2D sections of a particle volume and its phase volume.

    Attributes
    ----------
    particles : (S, H, W) ndarray
        Particle labels of the 3D volume on each section (0 outside particles and outside the volume).
    phases : (S, H, W) ndarray
        Phase ids on each section.
    valid : (S, H, W) ndarray of bool
        Pixels that lie inside the volume.
    pixel_size_um : (2,) tuple of float
        Pixel size (rows, columns) in micrometres.
    poses : tuple of PlanePose
        Where each section lies in the volume (voxel coordinates, ``pose.json`` convention).
    """

    particles: np.ndarray
    phases: np.ndarray
    valid: np.ndarray
    pixel_size_um: tuple[float, float]
    poses: tuple[PlanePose, ...]


def _in_plane_axes(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = reference - (reference @ normal) * normal
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def virtual_sections(
    particles: np.ndarray,
    phases: np.ndarray,
    *,
    n_planes: int = 16,
    orientation: Literal["axis", "random"] = "axis",
    axis: int = 0,
    normal: Sequence[float] | None = None,
    spacing: float | Sequence[float] = 1.0,
    pixel_size_um: float | None = None,
    rng: np.random.Generator | int | None = None,
) -> SectionStack:
    """Cut a particle volume and its phase volume with planes (virtual SEM sections).

    Parameters
    ----------
    particles, phases : (P, M, N) ndarray, zarr.Array or dask.array.Array of int
        Particle labels and phase ids, (z, y, x). A lazy (Zarr/Dask) volume is never read whole:
        axis slices read only their planes, resampled sections only their points (``vindex``).
    n_planes : int
        Number of planes.
    orientation : {"axis", "random"}
        ``"axis"``: parallel slices perpendicular to `axis`, at systematic uniform random positions
        (one random start, then equal steps; an unbiased stereological design). ``"random"``:
        isotropic uniform random (IUR) planes, each with its own uniformly distributed normal and a
        position uniform along it, resampled by nearest neighbour (labels are never interpolated).
    axis : int
        Axis normal to the slices for ``orientation="axis"`` (0: z, 1: y, 2: x).
    normal : (3,) sequence of float, optional
        A fixed plane normal (z, y, x; physical): parallel planes with systematic random positions
        along it, resampled by nearest neighbour. Overrides `orientation`.
    spacing : float or (3,) sequence
        Voxel size in micrometres, (z, y, x).
    pixel_size_um : float, optional
        Pixel size of resampled (non-axis) sections; default the smallest voxel size.
    rng : Generator or int or None
        Random generator or seed (positions and orientations).

    Returns
    -------
    SectionStack
        Sections of shape (n_planes, H, W). Axis slices keep the voxel grid; resampled sections are
        square and large enough to hold the volume's cut at any position. The same for a volume
        in memory and the same volume lazy (same random draws, same planes).

    Raises
    ------
    InputError
        Mismatched shapes, non-3D or non-integer labels, bad `n_planes`, `axis`, `orientation`,
        `normal` or `pixel_size_um`; resampled sections of a lazy array without ``vindex``.
    """
    particles = particles if _is_lazy(particles) else np.asarray(particles)
    phases = phases if _is_lazy(phases) else np.asarray(phases)
    _check_label_pair(particles, phases, ndim=3)
    spacing_zyx = normalize_spacing(spacing, 3)
    if int(n_planes) < 1:
        raise InputError(f"n_planes must be positive, got {n_planes}", source="n_planes")
    n_planes = int(n_planes)
    generator = as_rng(rng)
    shape = np.asarray(particles.shape)

    if normal is None and orientation == "axis":
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0, 1 or 2, got {axis}", source="axis")
        step = shape[axis] / n_planes
        index = np.floor(generator.uniform(0.0, step) + step * np.arange(n_planes)).astype(np.int64)
        index = np.clip(index, 0, shape[axis] - 1)
        section_particles = _read_planes(particles, index, axis)
        section_phases = _read_planes(phases, index, axis)
        rows_axis, columns_axis = (a for a in range(3) if a != axis)
        eye = np.eye(3)
        poses = tuple(
            PlanePose(
                origin=eye[axis] * i, u=eye[columns_axis], v=eye[rows_axis], method=f"axis{axis}"
            )
            for i in index
        )
        return SectionStack(
            particles=section_particles,
            phases=section_phases,
            valid=np.ones(section_particles.shape, dtype=bool),
            pixel_size_um=(float(spacing_zyx[rows_axis]), float(spacing_zyx[columns_axis])),
            poses=poses,
        )
    if normal is None and orientation != "random":
        raise InputError(
            f"orientation must be 'axis' or 'random', got {orientation!r}", source="orientation"
        )

    pixel = float(spacing_zyx.min() if pixel_size_um is None else pixel_size_um)
    if not (np.isfinite(pixel) and pixel > 0):
        raise InputError(f"pixel size must be positive, got {pixel}", source="pixel_size_um")
    extent = (shape - 1) * spacing_zyx  # physical extent between the first and last voxel centres
    centre = extent / 2.0
    side = int(np.ceil(np.linalg.norm(extent) / pixel)) + 1
    if normal is not None:
        fixed = np.asarray(normal, dtype=np.float64).ravel()
        if fixed.shape != (3,) or not np.all(np.isfinite(fixed)) or np.linalg.norm(fixed) == 0:
            raise InputError("normal must be three finite numbers, not all zero", source="normal")
        normals = np.repeat((fixed / np.linalg.norm(fixed))[None], n_planes, axis=0)
        half = 0.5 * np.abs(normals[0]) @ extent
        step = 2.0 * half / n_planes
        offsets = -half + generator.uniform(0.0, step) + step * np.arange(n_planes)
    else:
        normals = generator.normal(size=(n_planes, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        half = 0.5 * np.abs(normals) @ extent
        offsets = generator.uniform(-half, half)

    out_particles = np.zeros((n_planes, side, side), dtype=particles.dtype)
    out_phases = np.zeros((n_planes, side, side), dtype=phases.dtype)
    valid = np.zeros((n_planes, side, side), dtype=bool)
    poses = []
    for k in range(n_planes):  # loop over planes, not particles
        n_k = normals[k]
        e1, e2 = _in_plane_axes(n_k)
        middle = (centre + offsets[k] * n_k) / spacing_zyx
        u = e1 * pixel / spacing_zyx
        v = e2 * pixel / spacing_zyx
        origin = middle - (side - 1) / 2.0 * (u + v)
        pose = PlanePose(origin=origin, u=u, v=v, method="virtual")
        poses.append(pose)
        index = np.rint(pose.points((side, side))).astype(np.int64)
        inside = np.all((index >= 0) & (index < shape), axis=-1)
        z, y, x = index[inside].T
        out_particles[k][inside] = _read_points(particles, z, y, x)
        out_phases[k][inside] = _read_points(phases, z, y, x)
        valid[k] = inside
    return SectionStack(
        particles=out_particles,
        phases=out_phases,
        valid=valid,
        pixel_size_um=(pixel, pixel),
        poses=tuple(poses),
    )


# --------------------------------------------------------------------------------------------
# 2D particles and 2D liberation
# --------------------------------------------------------------------------------------------


def _as_stack(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise InputError(
            f"expected a 2D section or a (S, H, W) stack, got {image.ndim}D", source="sections"
        )
    return image


def section_particle_table(
    particle_maps: np.ndarray,
    phase_maps: np.ndarray,
    *,
    pixel_size: float | Sequence[float] = 1.0,
    phase_names: Mapping[int, str] | None = None,
    valid: np.ndarray | None = None,
    connectivity: Literal[4, 8] = 8,
) -> pd.DataFrame:
    """Section particles (2D connected components) with their area, ECD and phase area fractions.

    Parameters
    ----------
    particle_maps : (H, W) or (S, H, W) ndarray of int or bool
        Particle map of each section: a particle label image (a virtual section keeps the 3D labels;
        different labels are never merged) or a binary particle mask of a measured SEM section.
    phase_maps : (H, W) or (S, H, W) ndarray of int
        Mineral map (phase ids) of each section.
    pixel_size : float or (2,) sequence
        Pixel size in micrometres (rows, columns).
    phase_names : mapping of int to str, optional
        Names of the phase ids; default ``phase<k>`` for every id present.
    valid : same shape as `particle_maps`, bool, optional
        Pixels that were imaged (inside the volume). Particles next to an invalid pixel or on the
        image edge are marked ``touches_border``.
    connectivity : {4, 8}
        Pixel connectivity of a section particle (default 8).

    Returns
    -------
    DataFrame
        One row per section particle: ``section, label, parent_label, area_pixels, area_um2,
        ecd_um, touches_border, vf_<phase>`` (area fractions). ``parent_label`` is the value of the
        particle map (the 3D particle for virtual sections). The equivalent circle diameter is
        ``ECD = sqrt(4 A / pi)``.
    """
    particle_maps = _as_stack(particle_maps)
    phase_maps = _as_stack(phase_maps)
    _check_label_pair(particle_maps, phase_maps)
    pixel = normalize_spacing(pixel_size, 2, name="pixel_size")
    if valid is None:
        valid_stack = np.ones(particle_maps.shape, dtype=bool)
    else:
        valid_stack = _as_stack(np.asarray(valid, dtype=bool))
        if valid_stack.shape != particle_maps.shape:
            raise InputError("the valid mask differs in shape from the sections", source="valid")
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}", source="connectivity")
    import cc3d

    components = np.zeros(particle_maps.shape, dtype=np.int64)
    offset = 0
    for s in range(particle_maps.shape[0]):  # loop over sections
        section = np.ascontiguousarray(particle_maps[s]).astype(np.uint32, copy=False)
        labelled, n = cc3d.connected_components(section, connectivity=connectivity, return_N=True)
        labelled = labelled.astype(np.int64)
        labelled[labelled > 0] += offset
        components[s] = labelled
        offset += int(n)
    n_labels = offset

    lookup, names = _phase_lookup(phase_maps, phase_names)
    counts = _label_phase_counts(components, phase_maps, lookup, n_labels)
    labels, n, fractions = _composition(counts, names, np.ones(n_labels + 1, dtype=bool))

    section_of = np.zeros(n_labels + 1, dtype=np.int64)
    parent_of = np.zeros(n_labels + 1, dtype=np.int64)
    section_index = np.broadcast_to(
        np.arange(particle_maps.shape[0])[:, None, None], particle_maps.shape
    )
    section_of[components] = section_index
    parent_of[components] = particle_maps
    edge = ndimage.binary_dilation(~valid_stack, structure=np.ones((1, 3, 3), dtype=bool))
    edge[:, 0, :] = edge[:, -1, :] = edge[:, :, 0] = edge[:, :, -1] = True
    border = np.zeros(n_labels + 1, dtype=bool)
    border[components[edge]] = True
    area = n * float(pixel[0] * pixel[1])
    return pd.DataFrame(
        {
            "section": section_of[labels],
            "label": labels,
            "parent_label": parent_of[labels],
            "area_pixels": n.astype(np.int64),
            "area_um2": area,
            "ecd_um": np.sqrt(4.0 * area / np.pi),
            "touches_border": border[labels],
            **fractions,
        }
    )


def _area_columns(table: pd.DataFrame) -> pd.DataFrame:
    return table.rename(
        columns={
            "esd_min_um": "ecd_min_um",
            "esd_max_um": "ecd_max_um",
            "volume_free_um3": "area_free_um2",
            "volume_total_um3": "area_total_um2",
        }
    )


def section_liberation(
    particle_maps: np.ndarray | pd.DataFrame,
    phase_maps: np.ndarray | None = None,
    *,
    threshold: float = 0.99,
    pixel_size: float | Sequence[float] = 1.0,
    phase_names: Mapping[int, str] | None = None,
    size_bins_um: Sequence[float] | np.ndarray | None = None,
    exclude_border: bool = True,
    min_ecd_um: float = 0.0,
    valid: np.ndarray | None = None,
    connectivity: Literal[4, 8] = 8,
    n_bootstrap: int = 0,
    rng: np.random.Generator | int | None = None,
) -> pd.DataFrame:
    """2D liberation degree by area of 2D sections (measured SEM mineral maps or virtual sections).

    Parameters
    ----------
    particle_maps : (H, W) or (S, H, W) ndarray, or DataFrame
        Particle maps (see :func:`section_particle_table`), or a table it returned.
    phase_maps : (H, W) or (S, H, W) ndarray
        Mineral maps (phase ids); not used when `particle_maps` is a table.
    threshold : float
        A section particle is free for phase i when its area fraction ``a_i > threshold`` (0.99).
    pixel_size, phase_names, valid, connectivity
        As in :func:`section_particle_table`.
    size_bins_um : sequence of float, optional
        ECD class edges; default the sqrt(2) series covering the ECDs.
    exclude_border : bool
        Drop section particles that touch the image edge or the unimaged area.
    min_ecd_um : float
        Drop section particles with a smaller equivalent circle diameter.
    n_bootstrap, rng
        Bootstrap confidence intervals over section particles, as in :func:`liberation_table`.

    Returns
    -------
    DataFrame
        The ``liberation.csv`` layout with 2D names: ``phase, ecd_min_um, ecd_max_um, n_particles,
        n_free, area_free_um2, area_total_um2, liberation_degree`` (+ CI columns).

    Notes
    -----
    Eq. (1)-(2) of the seed paper with areas in place of volumes, the "2D image analysis" where
    "only area fractions are being considered instead of volume fractions". A section through a
    locked particle that misses the other phase looks free, so 2D overestimates liberation (the
    stereological bias; Ueda et al. 2018; the second seed paper).
    """
    if isinstance(particle_maps, pd.DataFrame):
        table = particle_maps
    else:
        if phase_maps is None:
            raise InputError("phase maps are required with particle maps", source="phase_maps")
        table = section_particle_table(
            particle_maps,
            phase_maps,
            pixel_size=pixel_size,
            phase_names=phase_names,
            valid=valid,
            connectivity=connectivity,
        )
    result = liberation_table(
        table,
        threshold=threshold,
        size_bins_um=size_bins_um,
        exclude_border=exclude_border,
        min_esd_um=min_ecd_um,
        size_column="ecd_um",
        weight_column="area_um2",
        n_bootstrap=n_bootstrap,
        rng=rng,
    )
    return _area_columns(result)


def _check_composition(
    composition: pd.DataFrame, phase_names: Mapping[int, str], exclude_border: bool
) -> pd.DataFrame:
    if not isinstance(composition, pd.DataFrame):
        raise InputError(
            f"expected a DataFrame, got {type(composition).__name__}", source="composition"
        )
    needed = ["label", "esd_um", *(VF_PREFIX + str(n) for n in phase_names.values())]
    needed += ["touches_border"] if exclude_border else []
    missing = [c for c in needed if c not in composition.columns]
    if missing:
        raise InputError(f"the composition table lacks columns {missing}", source="composition")
    return composition


def stereology_comparison(
    particles: np.ndarray,
    phases: np.ndarray,
    *,
    spacing: float | Sequence[float] = 1.0,
    phase_names: Mapping[int, str] | None = None,
    threshold: float = 0.99,
    size_bins_um: Sequence[float] | np.ndarray | None = None,
    n_planes: int = 16,
    orientation: Literal["axis", "random"] = "axis",
    axis: int | None = None,
    normal: Sequence[float] | None = None,
    exclude_border: bool = True,
    min_esd_um: float = 0.0,
    size_2d: Literal["section", "parent"] = "section",
    rng: np.random.Generator | int | None = None,
    composition: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """2D (virtual sections) next to 3D liberation degree per phase and size class.

    Parameters
    ----------
    particles, phases : (P, M, N) ndarray, zarr.Array or dask.array.Array of int
        Particle labels and phase ids (z, y, x). Lazy (Zarr/Dask) volumes are never read whole:
        they need `composition`, and only the sampled planes (or, for resampled sections, their
        points) are read.
    spacing : float or (3,) sequence
        Voxel size in micrometres.
    phase_names : mapping of int to str, optional
        Phase names (default ``phase<k>``).
    threshold : float
        Free means fraction > threshold, by volume in 3D and by area in 2D.
    size_bins_um : sequence of float, optional
        Size class edges shared by 2D and 3D; default the sqrt(2) series covering both.
    n_planes : int
        Number of sections (per axis when ``orientation="axis"`` and `axis` is None).
    orientation, normal
        Section design, see :func:`virtual_sections`.
    axis : int, optional
        Slice axis for axis-aligned sections; None pools slices along all three axes.
    exclude_border : bool
        Drop particles touching the volume border in 3D and, in 2D, their sections and every
        section particle touching the section edge.
    min_esd_um : float
        Drop 3D particles below this ESD, and their sections.
    size_2d : {"section", "parent"}
        Size class of a section particle: its own ECD (what an SEM measures, default) or the ESD of
        the 3D particle it was cut from (isolates the bias from sectioning).
    rng : Generator or int or None
        Random generator or seed of the section positions and orientations.
    composition : DataFrame, optional
        The 3D per-particle table of the whole volume, as :func:`composition_table` would compute
        it (e.g. :func:`composition_from_table` of the measured particle table); default computed
        from the volumes. Required for lazy volumes. The result is the same either way: the
        random draws do not depend on it.

    Returns
    -------
    DataFrame
        Rows as in ``liberation.csv`` (all sizes first, then each class, per phase):
        ``phase, esd_min_um, esd_max_um, n_particles_3d, ld_3d, n_particles_2d, ld_2d,
        ld_difference`` (2D minus 3D; positive is the stereological overestimate).

    Raises
    ------
    InputError
        Lazy volumes without `composition`, a `composition` lacking columns, nothing left after
        filtering, and the errors of :func:`virtual_sections`.

    References
    ----------
    .. [1] Englisch S. et al., seed paper (``shared/seeds/000_22e43a0dd9515ebb.txt``), Sec. 2.3.4 and the introduction
           on the stereological bias; Ueda T., Oki T., Koyanaka S. (2018), Adv. Powder Technol. 29,
           462-470.
    """
    lazy = _is_lazy(particles) or _is_lazy(phases)
    particles = particles if _is_lazy(particles) else np.asarray(particles)
    phases = phases if _is_lazy(phases) else np.asarray(phases)
    if lazy and composition is None:
        raise InputError(
            "lazy (Zarr/Dask) volumes need the precomputed 3D table: pass composition= "
            "(composition_from_table of the particle table)",
            source="composition",
        )
    if composition is not None:  # else composition_table checks them
        _check_label_pair(particles, phases, ndim=3)
    generator = as_rng(rng)
    if phase_names is None:
        ids = _present_phase_ids(phases)
        phase_names = {int(k): f"phase{int(k)}" for k in ids[ids > 0]}
    if composition is None:
        table3d = composition_table(particles, phases, spacing=spacing, phase_names=phase_names)
    else:
        table3d = _check_composition(composition, phase_names, exclude_border)
    counted = table3d
    if exclude_border:
        counted = counted[~counted["touches_border"].to_numpy(dtype=bool)]
    counted = counted[counted["esd_um"].to_numpy() >= float(min_esd_um)]
    if counted.empty:
        raise InputError("no particle left after filtering", source="particles")

    if orientation == "axis" and normal is None and axis is None:
        axes: list[int] = [0, 1, 2]
    else:
        axes = [0 if axis is None else int(axis)]
    tables = []
    n_sections = 0
    for a in axes:
        stack = virtual_sections(
            particles,
            phases,
            n_planes=n_planes,
            orientation=orientation,
            axis=a,
            normal=normal,
            spacing=spacing,
            rng=generator,
        )
        part = section_particle_table(
            stack.particles,
            stack.phases,
            pixel_size=stack.pixel_size_um,
            phase_names=phase_names,
            valid=stack.valid,
        )
        tables.append(part.assign(section=part["section"] + n_sections, axis=a))
        n_sections += stack.particles.shape[0]
    table2d = pd.concat(tables, ignore_index=True)
    esd_of = pd.Series(counted["esd_um"].to_numpy(), index=counted["label"].to_numpy())
    table2d["parent_esd_um"] = table2d["parent_label"].map(esd_of).to_numpy(dtype=np.float64)
    table2d = table2d[np.isfinite(table2d["parent_esd_um"].to_numpy())]
    if exclude_border:
        table2d = table2d[~table2d["touches_border"].to_numpy(dtype=bool)]
    if table2d.empty:
        raise InputError("no section particle left; use more planes", source="particles")
    size_column = "ecd_um" if size_2d == "section" else "parent_esd_um"
    if size_bins_um is None:
        edges = geometric_size_bins(
            np.concatenate([counted["esd_um"].to_numpy(), table2d[size_column].to_numpy()])
        )
    else:
        edges = check_edges(size_bins_um)
    names = [str(phase_names[k]) for k in sorted(phase_names)]
    ld3 = liberation_table(
        counted, phases=names, threshold=threshold, size_bins_um=edges, exclude_border=False
    )
    ld2 = liberation_table(
        table2d,
        phases=names,
        threshold=threshold,
        size_bins_um=edges,
        exclude_border=False,
        size_column=size_column,
        weight_column="area_um2",
    )
    return pd.DataFrame(
        {
            "phase": ld3["phase"].to_numpy(),
            "esd_min_um": ld3["esd_min_um"].to_numpy(),
            "esd_max_um": ld3["esd_max_um"].to_numpy(),
            "n_particles_3d": ld3["n_particles"].to_numpy(),
            "ld_3d": ld3["liberation_degree"].to_numpy(),
            "n_particles_2d": ld2["n_particles"].to_numpy(),
            "ld_2d": ld2["liberation_degree"].to_numpy(),
            "ld_difference": (ld2["liberation_degree"] - ld3["liberation_degree"]).to_numpy(),
        }
    )
