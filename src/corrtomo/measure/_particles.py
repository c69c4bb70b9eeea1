"""The per-particle table (particles.csv contract) from additive moments."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from corrtomo._shared import InputError, normalize_spacing

from ._checks import check_label_image, check_phase_image, label_index
from ._grains import GrainLabels, equivalent_spherical_diameter, label_grains, phase_name_table
from ._moments import LabelMoments, label_moments

__all__ = ["particle_table", "particle_table_from_moments"]


def _covariance(moments: LabelMoments, spacing: np.ndarray) -> np.ndarray:
    """(N, 3, 3) covariance of voxel-centre coordinates in um^2 (axes z, y, x).

    The integer sums are first shifted exactly to the bounding-box corner ``o``
    (``sum (p - o)_a (p - o)_b = S_ab - o_a F_b - o_b F_a + n o_a o_b``), so the floating-point
    cancellation is small and a translated particle gives bit-identical axes.
    """
    count = moments.count
    origin = np.where(count[:, None] > 0, moments.bbox_min, 0)
    first = moments.first - count[:, None] * origin
    pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    shifted = np.stack(
        [
            moments.second[:, k]
            - origin[:, a] * moments.first[:, b]
            - origin[:, b] * moments.first[:, a]
            + count * origin[:, a] * origin[:, b]
            for k, (a, b) in enumerate(pairs)
        ],
        axis=1,
    ).reshape(-1, 6)
    n = np.maximum(count, 1).astype(np.float64)[:, None]
    mean = first / n
    second = shifted / n
    zz, yy, xx, zy, zx, yx = (second[:, k] for k in range(6))
    mz, my, mx = mean[:, 0], mean[:, 1], mean[:, 2]
    cov = np.empty((moments.n_labels, 3, 3))
    cov[:, 0, 0] = zz - mz * mz
    cov[:, 1, 1] = yy - my * my
    cov[:, 2, 2] = xx - mx * mx
    cov[:, 0, 1] = cov[:, 1, 0] = zy - mz * my
    cov[:, 0, 2] = cov[:, 2, 0] = zx - mz * mx
    cov[:, 1, 2] = cov[:, 2, 1] = yx - my * mx
    return cov * np.outer(spacing, spacing)[None]


def particle_table_from_moments(
    moments: LabelMoments,
    spacing=None,
    phase_names: Mapping[int, str] | None = None,
    *,
    grain_counts: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build the particle table from (merged) additive moments.

    Parameters
    ----------
    moments : LabelMoments
        From :func:`label_moments` / :func:`merge_moments`; labels with ``count == 0`` are dropped.
    spacing : float or (3,) sequence of float, optional
        Voxel size (dz, dy, dx), micrometres; default (and required match): ``moments.spacing``.
    phase_names : mapping of int to str, optional
        Phase id -> name; default ``phase<k>`` for every phase id present.
    grain_counts : (N, P) ndarray of int, optional
        Grains per phase id for each row of `moments` (:meth:`GrainLabels.counts_per_particle`);
        without it no ``grains_<name>`` columns are written.

    Returns
    -------
    pandas.DataFrame
        See :func:`particle_table`.

    Notes
    -----
    With ``n`` voxels, voxel volume ``v = dz dy dx`` and covariance ``C`` of the voxel centres in
    um^2 (``C = S(sum p p^T / n - mean mean^T)S``, ``S = diag(spacing)``, from the second moments):
    ``V = n v``; ``esd = (6 V / pi)^(1/3)``; ``sphericity = pi^(1/3) (6 V)^(2/3) / A``;
    principal axis lengths ``L_i = sqrt(20 lambda_i)`` with ``lambda_1 >= lambda_2 >= lambda_3``
    the eigenvalues of ``C`` - the full axis lengths of the solid ellipsoid with the same second
    moments (variance ``a^2 / 5`` along a semi-axis ``a``), identical to skimage's
    ``axis_major_length = sqrt(10 (I_1 + I_2 - I_3))`` from the inertia tensor
    ``I = tr(C) 1 - C``. ``elongation = L_2 / L_1``, ``flatness = L_3 / L_2``.
    """
    values = moments.spacing if spacing is None else normalize_spacing(spacing, 3)
    if not np.allclose(values, moments.spacing, rtol=1e-9, atol=0):
        raise InputError(
            f"moments were measured with voxel size {moments.spacing.tolist()}, not {values.tolist()}",
            source="spacing",
        )
    keep = moments.count > 0
    if grain_counts is not None:
        grain_counts = np.asarray(grain_counts)[keep]
    moments = moments.select(keep)
    count = moments.count
    voxel_volume = float(np.prod(values))
    volume = count * voxel_volume
    area = moments.surface_um2
    centroid = (moments.first / np.maximum(count, 1)[:, None]) * values[None, :]
    eigen = (
        np.linalg.eigvalsh(_covariance(moments, values))[:, ::-1]
        if count.size
        else np.zeros((0, 3))
    )
    lengths = np.sqrt(20.0 * np.clip(eigen, 0.0, None))
    table = {
        "label": moments.labels.astype(np.int64),
        "volume_voxels": count.astype(np.int64),
        "volume_um3": volume,
        "esd_um": equivalent_spherical_diameter(volume),
        "surface_area_um2": area,
        "sphericity": np.divide(
            np.pi ** (1 / 3) * (6.0 * volume) ** (2 / 3),
            area,
            out=np.full(count.size, np.nan),
            where=area > 0,
        ),
        "centroid_z_um": centroid[:, 0],
        "centroid_y_um": centroid[:, 1],
        "centroid_x_um": centroid[:, 2],
        "touches_border": np.any(
            (moments.bbox_min == 0) | (moments.bbox_max == moments.volume_shape[None, :]), axis=1
        ),
    }
    phase_counts = moments.phase_counts
    present_ids = np.flatnonzero(phase_counts.sum(axis=0) > 0)
    names = phase_name_table(phase_names, present_ids)
    padded = np.zeros((count.size, max(phase_counts.shape[1], max(names, default=0) + 1)), np.int64)
    padded[:, : phase_counts.shape[1]] = phase_counts
    fractions = padded / np.maximum(count, 1)[:, None]
    named = [i for i in names if i != 0]
    for i in named:
        table[f"vf_{names[i]}"] = fractions[:, i]
    if 0 in names:
        table["vf_unassigned"] = fractions[:, 0]
    if grain_counts is not None:
        padded_grains = np.zeros_like(padded)
        padded_grains[:, : grain_counts.shape[1]] = grain_counts
        for i in named:
            table[f"grains_{names[i]}"] = padded_grains[:, i].astype(np.int64)
    if named:
        best = np.asarray(named)[np.argmax(padded[:, named], axis=1)]
        dominant = np.array([names[i] for i in named], dtype=object)[
            np.argmax(padded[:, named], axis=1)
        ]
        dominant[padded[np.arange(count.size), best] == 0] = "unassigned"
    else:
        dominant = np.full(count.size, "unassigned", dtype=object)
    table["dominant_phase"] = dominant
    for axis, letter in enumerate("zyx"):
        table[f"bbox_min_{letter}"] = moments.bbox_min[:, axis]
    for axis, letter in enumerate("zyx"):
        table[f"bbox_max_{letter}"] = moments.bbox_max[:, axis]
    table["axis_major_length_um"] = lengths[:, 0]
    table["axis_intermediate_length_um"] = lengths[:, 1]
    table["axis_minor_length_um"] = lengths[:, 2]
    table["elongation"] = np.divide(
        lengths[:, 1], lengths[:, 0], out=np.zeros(count.size), where=lengths[:, 0] > 0
    )
    table["flatness"] = np.divide(
        lengths[:, 2], lengths[:, 1], out=np.zeros(count.size), where=lengths[:, 1] > 0
    )
    return pd.DataFrame(table)


def particle_table(
    particles,
    phases=None,
    *,
    spacing=1.0,
    phase_names: Mapping[int, str] | None = None,
    extra: bool = False,
    connectivity: int = 26,
    grains: GrainLabels | None = None,
    surface: bool = True,
) -> pd.DataFrame:
    """One row per particle: size, shape, position and phase composition (particles.csv contract).

    Parameters
    ----------
    particles : (Z, Y, X) ndarray of int
        Particle label image, 0 = background; labels need not be sequential. Axes (plane, row,
        column).
    phases : (Z, Y, X) ndarray of uint8, optional
        Phase id per voxel (0 = unassigned). Without it, the phase columns are left out.
    spacing : float or (3,) sequence of float
        Voxel size (dz, dy, dx), micrometres; anisotropic spacing is supported by every column.
    phase_names : mapping of int to str, optional
        Phase id -> name (the phase library); default ``phase<k>``. Every named phase gets columns,
        present or not; a phase id in the image but not in the mapping is an error.
    extra : bool
        Also compute ``convex_volume_um3``, ``solidity`` and ``feret_max_um`` (slower).
    connectivity : {6, 18, 26}
        Connectivity of grains for the ``grains_<name>`` columns.
    grains : GrainLabels, optional
        Precomputed :func:`label_grains` result to reuse.
    surface : bool
        Estimate the surface area (default). ``surface=False`` skips the 2x2x2-cell part of the
        pass (about half of the measuring time) when only size, position, box, axes and phase
        composition are wanted; ``surface_area_um2`` and ``sphericity`` are then NaN (the columns
        stay, so the table keeps the particles.csv layout).

    Returns
    -------
    pandas.DataFrame
        Sorted by ``label``: ``label, volume_voxels, volume_um3, esd_um, surface_area_um2,
        sphericity, centroid_z_um, centroid_y_um, centroid_x_um, touches_border``, ``vf_<name>``
        per phase (``vf_unassigned`` only if phase 0 occurs inside particles), ``grains_<name>``,
        ``dominant_phase``, ``bbox_min_z .. bbox_max_x`` (voxel indices, half-open),
        ``axis_major_length_um, axis_intermediate_length_um, axis_minor_length_um, elongation,
        flatness`` [, ``convex_volume_um3, solidity, feret_max_um``].

    Raises
    ------
    InputError
        Non-3D or non-integer or negative labels, mismatched shapes, phase ids > 255 or missing
        from `phase_names`, non-positive spacing.

    Notes
    -----
    One fused pass over the volume gathers the additive moments and the 2x2x2-cell surface
    (:func:`label_moments`, :func:`surface_area`, Lindblad 2005), and the grains come from one
    ``cc3d`` labelling (:func:`label_grains`). Formulas: :func:`particle_table_from_moments`.
    ``touches_border``: a voxel on a face of the volume. Surface faces on the volume border count.

    Examples
    --------
    >>> import numpy as np
    >>> particles = np.zeros((8, 8, 8), dtype=np.uint32)
    >>> particles[1:7, 1:7, 1:7] = 5
    >>> phases = np.where(particles > 0, 1, 0).astype(np.uint8)
    >>> phases[1:7, 1:7, 1:3] = 2
    >>> table = particle_table(particles, phases, spacing=2.0, phase_names={1: "calcite", 2: "talc"})
    >>> table[["label", "volume_um3", "vf_talc", "grains_calcite", "dominant_phase"]].values.tolist()
    [[5, 1728.0, 0.3333333333333333, 1, 'calcite']]
    """
    image = check_label_image(particles, "particles")
    values = normalize_spacing(spacing, 3)
    if phases is not None:
        phase_image = check_phase_image(phases, image)
    moments = label_moments(image, phases, spacing=values, surface=surface)
    present = moments.labels
    grain_counts = None
    if phases is not None:
        if grains is None:
            grains = label_grains(image, phase_image, connectivity=connectivity)
        if not np.array_equal(grains.labels, present):
            raise InputError(
                "the precomputed grains belong to another particle image", source="grains"
            )
        grain_counts = grains.counts_per_particle()
    table = particle_table_from_moments(moments, values, phase_names, grain_counts=grain_counts)
    if extra:
        from ._extra import convex_descriptors

        _, lut, indexed = label_index(image)
        convex_volume, feret = convex_descriptors(indexed, lut, present.size, values)
        table["convex_volume_um3"] = convex_volume
        table["solidity"] = np.divide(
            table["volume_um3"].to_numpy(),
            convex_volume,
            out=np.full(present.size, np.nan),
            where=convex_volume > 0,
        )
        table["feret_max_um"] = feret
    return table
