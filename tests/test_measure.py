"""corrtomo.measure against analytic truth, hand-built particles, additivity and invariances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from corrtomo._shared import InputError
from corrtomo.measure import (
    equivalent_spherical_diameter,
    grain_table,
    label_grains,
    label_moments,
    merge_moments,
    particle_table,
    particle_table_from_moments,
    phase_association,
    surface_area,
)

NAMES = {1: "calcite", 2: "talc", 3: "dolomite"}
CONTRACT = [
    "label", "volume_voxels", "volume_um3", "esd_um", "surface_area_um2", "sphericity",
    "centroid_z_um", "centroid_y_um", "centroid_x_um", "touches_border",
]  # fmt: skip


def ball(radius: float, margin: int = 3) -> np.ndarray:
    size = int(2 * np.ceil(radius)) + 2 * margin + 1
    centre = size // 2
    z, y, x = np.ogrid[:size, :size, :size]
    return ((z - centre) ** 2 + (y - centre) ** 2 + (x - centre) ** 2 <= radius**2).astype(
        np.uint32
    )


def rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def ellipsoid(semi_axes, rot: np.ndarray, size: int = 48) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1) - (size - 1) / 2
    local = grid @ rot  # coordinates in the ellipsoid frame
    return ((local / np.asarray(semi_axes, float)) ** 2).sum(axis=-1) <= 1.0


def blobs(shape=(20, 24, 26), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Random touching multi-phase particles (Voronoi cells clipped to balls)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, dtype=np.uint32)
    points = rng.integers(0, shape, size=(12, 3))
    seeds[tuple(points.T)] = rng.permutation(np.arange(1, 13) * 7)
    distance, index = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    particles = np.where(distance < 5.5, seeds[tuple(index)], 0).astype(np.uint32)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    phases = np.digitize(noise, np.quantile(noise, [0.4, 0.75])).astype(np.uint8) + 1
    phases[particles == 0] = 0
    return particles, phases


# -- size and surface --------------------------------------------------------------------------


def test_volume_and_esd_exact():
    particles = np.zeros((10, 10, 10), np.uint16)
    particles[1:4, 2:6, 3:8] = 3
    particles[6:9, 6:9, 6:9] = 9
    table = particle_table(particles, spacing=(0.5, 2.0, 3.0))
    assert_array_equal(table["label"], [3, 9])
    assert_array_equal(table["volume_voxels"], [60, 27])
    assert_allclose(table["volume_um3"], [60 * 3.0, 27 * 3.0])
    assert_allclose(table["esd_um"], (6 * table["volume_um3"] / np.pi) ** (1 / 3))
    assert_allclose(equivalent_spherical_diameter([np.pi / 6, 4 * np.pi / 3]), [1.0, 2.0])
    assert list(table.columns[: len(CONTRACT)]) == CONTRACT
    assert_array_equal(table[["bbox_min_z", "bbox_min_y", "bbox_min_x"]].to_numpy()[0], [1, 2, 3])
    assert_array_equal(table[["bbox_max_z", "bbox_max_y", "bbox_max_x"]].to_numpy()[0], [4, 6, 8])
    assert_allclose(table["centroid_x_um"], [5.0 * 3.0, 7.0 * 3.0])


# measured relative surface errors of digital balls, recorded here and in the docstrings
SPHERE_ERRORS = {3: 0.094, 5: 0.019, 10: 0.007}


@pytest.mark.parametrize("radius", [3, 5, 10])
def test_sphere_surface_and_sphericity(radius):
    image = ball(radius)
    table = particle_table(image)
    area = table["surface_area_um2"].iloc[0]
    error = area / (4 * np.pi * radius**2) - 1
    assert abs(error - SPHERE_ERRORS[radius]) < 0.002  # the recorded error is the measured one
    if radius == 10:
        assert abs(error) < 0.03
        assert 0.95 <= table["sphericity"].iloc[0] <= 1.02
    present, area_direct = surface_area(image)
    assert_array_equal(present, [1]) and assert_allclose(area_direct, [area])


def test_plane_surfaces_unbiased_over_orientations():
    """A thick slab at random orientations: mean error of its two faces close to zero."""
    rng = np.random.default_rng(3)
    errors = []
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), axis=-1) - 19.5
    for _ in range(12):
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        # a slab clipped by a ball: two flat discs and a spherical zone of height 12
        inside = (np.abs(grid @ normal) <= 6) & ((grid**2).sum(-1) <= 18**2)
        _, area = surface_area(inside.astype(np.uint8))
        truth = 2 * np.pi * (18**2 - 6**2) + 2 * np.pi * 18 * 12
        errors.append(area[0] / truth - 1)
    assert abs(np.mean(errors)) < 0.02


def test_anisotropic_spacing_surface():
    """An axis-aligned box measured with anisotropic voxels equals the isotropic twin."""
    image = np.zeros((14, 30, 30), np.uint8)
    image[2:12, 3:27, 5:25] = 1  # 10 x 24 x 20 voxels
    iso = np.zeros((22, 26, 26), np.uint8)
    iso[1:21, 2:26, 3:23] = 1  # the same box with z voxels split in two (20 x 24 x 20)
    _, area_aniso = surface_area(image, spacing=(2.0, 1.0, 1.0))
    _, area_iso = surface_area(iso, spacing=1.0)
    assert_allclose(area_aniso, area_iso, rtol=0.03)
    # and a ball digitised on an anisotropic grid
    z, y, x = np.ogrid[:16, :32, :32]
    squashed = (((z - 7.5) * 2) ** 2 + (y - 15.5) ** 2 + (x - 15.5) ** 2 <= 12**2).astype(np.uint8)
    table = particle_table(squashed, spacing=(2.0, 1.0, 1.0))
    assert abs(table["surface_area_um2"].iloc[0] / (4 * np.pi * 144) - 1) < 0.03
    assert abs(table["volume_um3"].iloc[0] / (4 / 3 * np.pi * 12**3) - 1) < 0.02


# -- shape ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_rotated_ellipsoid_axes(seed):
    from skimage.measure import regionprops

    rng = np.random.default_rng(seed)
    semi = np.sort(rng.uniform(7, 20, size=3))[::-1]
    image = ellipsoid(semi, rotation(rng)).astype(np.uint8)
    table = particle_table(image)
    lengths = table[["axis_major_length_um", "axis_intermediate_length_um", "axis_minor_length_um"]]
    assert_allclose(lengths.to_numpy()[0], 2 * semi, rtol=0.01)
    props = regionprops(image)[0]
    assert_allclose(table["axis_major_length_um"].iloc[0], props.axis_major_length, rtol=1e-6)
    assert_allclose(table["axis_minor_length_um"].iloc[0], props.axis_minor_length, rtol=1e-6)
    assert_allclose(table["elongation"].iloc[0], semi[1] / semi[0], rtol=0.02)
    assert_allclose(table["flatness"].iloc[0], semi[2] / semi[1], rtol=0.02)


def test_axes_with_anisotropic_spacing_match_skimage():
    from skimage.measure import regionprops

    image = ellipsoid((12, 8, 5), rotation(np.random.default_rng(9)), size=36).astype(np.uint8)
    spacing = (1.5, 1.0, 0.75)
    table = particle_table(image, spacing=spacing)
    props = regionprops(image, spacing=spacing)[0]
    assert_allclose(table["axis_major_length_um"].iloc[0], props.axis_major_length, rtol=1e-6)
    assert_allclose(table["axis_minor_length_um"].iloc[0], props.axis_minor_length, rtol=1e-6)


def test_extra_convex_descriptors():
    image = np.zeros((12, 12, 12), np.uint8)
    image[2:10, 2:10, 2:10] = 1
    image[4:8, 4:8, 6:10] = 0  # a notch: solidity < 1
    table = particle_table(image, spacing=2.0, extra=True)
    assert_allclose(table["convex_volume_um3"], [8**3 * 8.0])
    assert_allclose(table["solidity"], [(512 - 64) / 512])
    assert_allclose(table["feret_max_um"], [np.sqrt(3) * 16.0])


# -- phases and grains --------------------------------------------------------------------------


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Pure (1), binary (2), sandwich A|B|A (3), core-shell (4) particles."""
    particles = np.zeros((12, 40, 12), np.uint32)
    phases = np.zeros_like(particles, dtype=np.uint8)
    particles[2:8, 1:7, 2:8] = 1
    phases[2:8, 1:7, 2:8] = 1
    particles[2:8, 9:15, 2:8] = 2
    phases[2:8, 9:15, 2:8] = 1
    phases[2:8, 9:15, 2:4] = 2  # 2 of 6 columns talc
    particles[2:8, 17:26, 2:8] = 3
    phases[2:8, 17:26, 2:8] = 1
    phases[2:8, 20:23, 2:8] = 2  # A | B | A along y
    particles[1:11, 28:38, 1:11] = 4
    phases[1:11, 28:38, 1:11] = 3
    phases[4:8, 31:35, 4:8] = 2  # enclosed talc core in dolomite
    return particles, phases


def test_hand_built_fractions_and_grain_counts():
    particles, phases = hand_built()
    table = particle_table(particles, phases, phase_names=NAMES).set_index("label")
    assert_allclose(table["vf_calcite"], [1.0, 4 / 6, 6 / 9, 0.0])
    assert_allclose(table["vf_talc"], [0.0, 2 / 6, 3 / 9, 64 / 1000])
    assert_allclose(table["vf_dolomite"], [0.0, 0.0, 0.0, 936 / 1000])
    assert_array_equal(table["grains_calcite"], [1, 1, 2, 0])
    assert_array_equal(table["grains_talc"], [0, 1, 1, 1])
    assert_array_equal(table["grains_dolomite"], [0, 0, 0, 1])
    assert table["dominant_phase"].tolist() == ["calcite", "calcite", "calcite", "dolomite"]
    assert "vf_unassigned" not in table


def test_grain_table_and_exposure():
    particles, phases = hand_built()
    grains = grain_table(particles, phases, phase_names=NAMES, spacing=0.5)
    assert {
        "grain_id",
        "particle_label",
        "phase",
        "volume_um3",
        "esd_um",
        "exposed_surface_fraction",
    } <= set(grains)
    assert grains.groupby("particle_label").size().to_dict() == {1: 1, 2: 2, 3: 3, 4: 2}
    pure = grains[grains.particle_label == 1].iloc[0]
    assert pure["exposed_surface_fraction"] == 1.0
    assert_allclose(pure["volume_um3"], 216 * 0.125)
    core = grains[(grains.particle_label == 4) & (grains.phase == "talc")].iloc[0]
    assert core["exposed_surface_fraction"] == 0.0
    shell = grains[(grains.particle_label == 4) & (grains.phase == "dolomite")].iloc[0]
    assert shell["exposed_surface_fraction"] < 1.0
    sandwich = grains[grains.particle_label == 3].sort_values("phase")
    assert sandwich.phase.tolist() == ["calcite", "calcite", "talc"]
    assert_array_equal(sandwich.volume_voxels, [108, 108, 108])
    # a slab between two exposed slabs: 2 of its 6 faces are inside the particle
    assert 0.3 < sandwich.exposed_surface_fraction.iloc[2] < 0.9
    assert_allclose(
        grains.groupby("particle_label").volume_um3.sum().to_numpy(), [27, 27, 40.5, 125]
    )


def test_unassigned_voxels_and_default_names():
    particles, phases = hand_built()
    phases[2:4, 1:7, 2:8] = 0
    table = particle_table(particles, phases).set_index("label")
    assert "vf_unassigned" in table and "vf_phase1" in table and "grains_phase2" in table
    assert_allclose(table.loc[1, "vf_unassigned"], 1 / 3)
    assert (grain_table(particles, phases).phase != "unassigned").all()


def test_phase_association():
    particles = np.zeros((24, 24, 14), np.uint32)
    particles[2:22, 2:22, 2:12] = 1
    phases = np.zeros_like(particles, np.uint8)
    phases[2:22, 2:22, 2:7] = 1
    phases[2:22, 2:22, 7:12] = 2
    table = phase_association(particles, phases, phase_names={1: "a", 2: "b", 3: "c"})
    area = {(r.phase_a, r.phase_b): r.interface_area_um2 for r in table.itertuples()}
    assert set(area) == {
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a", "matrix"),
        ("b", "matrix"),
        ("c", "matrix"),
    }
    # a 20 x 20 voxel axis-aligned interface; axis-aligned planes are the estimator's worst case
    # (-7.3 %), and cells only see the face between voxel centres (19 x 19) plus a rim share
    assert_allclose(area[("a", "b")], 400, rtol=0.15)
    assert area[("a", "c")] == 0.0 and area[("c", "matrix")] == 0.0
    assert_allclose(area[("a", "matrix")], area[("b", "matrix")])
    # interfaces split each phase's surface: phase surface = interfaces with everything else
    grains = grain_table(particles, phases)
    assert_allclose(
        grains.surface_area_um2.sum(),
        2 * area[("a", "b")] + area[("a", "matrix")] + area[("b", "matrix")],
    )


# -- additivity and invariances ----------------------------------------------------------------


@pytest.mark.parametrize("cut", [7, 10, 13])
def test_moments_of_two_halves_merge_to_whole(cut):
    particles, phases = blobs()
    shape = particles.shape
    whole = label_moments(particles, phases, spacing=0.7)
    top = label_moments(
        particles[: cut + 1],
        phases[: cut + 1],
        spacing=0.7,
        core_shape=(cut, *shape[1:]),
        volume_shape=shape,
    )
    bottom = label_moments(
        particles[cut:], phases[cut:], offset=(cut, 0, 0), spacing=0.7, volume_shape=shape
    )
    crossing = np.intersect1d(np.unique(particles[cut - 1]), np.unique(particles[cut]))
    assert crossing.size > 1  # particles do cross the cut
    merged = merge_moments([bottom, top])
    assert_array_equal(merged.labels, whole.labels)
    for name in ("count", "first", "second", "bbox_min", "bbox_max", "phase_counts"):
        assert_array_equal(getattr(merged, name), getattr(whole, name))
    assert_allclose(merged.surface_um2, whole.surface_um2, rtol=1e-12)
    pd.testing.assert_frame_equal(
        particle_table_from_moments(merged), particle_table_from_moments(whole)
    )


def test_halo_is_required():
    particles, _ = blobs()
    with pytest.raises(InputError, match="halo"):
        label_moments(
            particles[:8], core_shape=(8, *particles.shape[1:]), volume_shape=particles.shape
        )


def test_label_permutation_and_translation_invariance():
    particles, phases = blobs()
    reference = particle_table(particles, phases, phase_names=NAMES).set_index("label")
    labels = np.unique(particles)[1:]
    permuted_labels = np.random.default_rng(1).permutation(labels) * 1000 + 5
    lookup = np.zeros(particles.max() + 1, np.uint32)
    lookup[labels] = permuted_labels
    permuted = particle_table(lookup[particles], phases, phase_names=NAMES)
    permuted["label"] = labels.astype(np.int64)[np.argsort(permuted_labels)][
        np.searchsorted(np.sort(permuted_labels), permuted["label"])
    ]
    permuted = permuted.set_index("label").sort_index()
    pd.testing.assert_frame_equal(permuted, reference)
    shift = (3, 1, 4)
    moved = np.pad(particles, [(s, 2) for s in shift])
    moved_phases = np.pad(phases, [(s, 2) for s in shift])
    translated = particle_table(moved, moved_phases, phase_names=NAMES).set_index("label")
    for axis, letter in enumerate("zyx"):
        assert_allclose(
            translated[f"centroid_{letter}_um"], reference[f"centroid_{letter}_um"] + shift[axis]
        )
    same = [c for c in reference if not c.startswith(("centroid", "bbox", "touches"))]
    pd.testing.assert_frame_equal(translated[same], reference[same])
    grains_a = grain_table(particles, phases).sort_values(
        ["particle_label", "phase", "volume_voxels"]
    )
    grains_b = grain_table(moved, moved_phases).sort_values(
        ["particle_label", "phase", "volume_voxels"]
    )
    assert_allclose(grains_a.exposed_surface_fraction, grains_b.exposed_surface_fraction)


def test_volume_scales_with_spacing():
    particles, phases = blobs()
    unit = particle_table(particles, phases)
    spacing = (0.5, 1.5, 2.0)
    scaled = particle_table(particles, phases, spacing=spacing)
    assert_allclose(scaled.volume_um3, unit.volume_um3 * np.prod(spacing))
    assert_array_equal(scaled.volume_voxels, unit.volume_voxels)
    iso = particle_table(particles, phases, spacing=2.5)
    assert_allclose(iso.surface_area_um2, unit.surface_area_um2 * 2.5**2)
    assert_allclose(iso.sphericity, unit.sphericity)


def test_touches_border():
    particles = np.zeros((8, 8, 8), np.uint8)
    particles[0:2, 3:5, 3:5] = 1
    particles[3:5, 3:5, 3:5] = 2
    particles[3:5, 3:5, 6:8] = 3
    table = particle_table(particles)
    assert table.touches_border.tolist() == [True, False, True]
    assert table.touches_border.dtype == bool


def test_precomputed_grains_are_reused():
    particles, phases = blobs()
    grains = label_grains(particles, phases)
    direct = particle_table(particles, phases)
    reused = particle_table(particles, phases, grains=grains)
    pd.testing.assert_frame_equal(direct, reused)
    pd.testing.assert_frame_equal(
        grain_table(particles, phases, grains=grains), grain_table(particles, phases)
    )


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("particles", "phases", "kwargs", "message"),
    [
        (np.zeros((4, 4, 4), np.float32), None, {}, "integers"),
        (-np.ones((4, 4, 4), np.int32), None, {}, "non-negative"),
        (np.zeros((4, 4), np.uint8), None, {}, "3D"),
        (np.ones((4, 4, 4), np.uint8), np.ones((4, 4, 5), np.uint8), {}, "shape"),
        (np.ones((4, 4, 4), np.uint8), None, {"spacing": 0.0}, "positive"),
        (
            np.ones((4, 4, 4), np.uint8),
            np.full((4, 4, 4), 7, np.uint8),
            {"phase_names": NAMES},
            r"\[7\]",
        ),
    ],
)
def test_bad_input(particles, phases, kwargs, message):
    with pytest.raises(InputError, match=message):
        particle_table(particles, phases, **kwargs)


def test_large_label_values_and_empty():
    particles = np.zeros((6, 6, 6), np.uint64)
    particles[1:3, 1:3, 1:3] = 2**40
    particles[3:5, 3:5, 3:5] = 5
    table = particle_table(particles)
    assert table.label.tolist() == [5, 2**40]
    assert_array_equal(table.volume_voxels, [8, 8])
    assert_allclose(table.surface_area_um2.iloc[0], table.surface_area_um2.iloc[1])
    empty = particle_table(np.zeros((3, 3, 3), np.uint8))
    assert len(empty) == 0 and list(empty.columns[: len(CONTRACT)]) == CONTRACT


# -- property tests (hypothesis) -----------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
small_shapes = st.tuples(*[st.integers(1, 7)] * 3)
label_volumes = small_shapes.flatmap(
    lambda shape: arrays(np.uint16, shape, elements=st.integers(0, 5))
)


def brute_force_moments(labels):
    """Per-label count, centroid and second moments by direct numpy sums (the reference)."""
    rows = []
    for value in np.unique(labels[labels > 0]):
        z, y, x = np.nonzero(labels == value)
        rows.append((value, z.size, z.sum(), y.sum(), x.sum(), (x * x).sum(), (z * x).sum()))
    return np.array(rows, dtype=np.int64).reshape(-1, 7)


@SETTINGS
@given(labels=label_volumes, seed=st.integers(0, 2**16))
def test_property_moments_match_brute_force_and_reference_surface(labels, seed):
    from corrtomo.measure._checks import label_index
    from corrtomo.measure._surface import configuration_weights, label_surface

    rng = np.random.default_rng(seed)
    labels = np.repeat(labels, rng.integers(1, 4), axis=2)  # runs along x
    phases = rng.integers(0, 3, labels.shape).astype(np.uint8)
    moments = label_moments(labels, phases, spacing=(0.7, 1.0, 1.3))
    truth = brute_force_moments(labels)
    assert_array_equal(moments.labels, truth[:, 0])
    assert_array_equal(moments.count, truth[:, 1])
    assert_array_equal(moments.first, truth[:, 2:5])
    assert_array_equal(moments.second[:, [2, 4]], truth[:, 5:7])
    for row, value in enumerate(moments.labels):
        assert_array_equal(
            moments.phase_counts[row],
            np.bincount(phases[labels == value], minlength=moments.phase_counts.shape[1]),
        )
    # the run-length surface equals the plain cell-by-cell sum
    present, lut, image = label_index(labels)
    weights = configuration_weights((0.7, 1.0, 1.3))
    plain = label_surface(image, lut, present.size, weights, (-1, -1, -1), image.shape)
    assert_allclose(moments.surface_um2, plain, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(labels=label_volumes, seed=st.integers(0, 2**16))
def test_property_label_permutation_invariance(labels, seed):
    rng = np.random.default_rng(seed)
    present = np.unique(labels[labels > 0])
    reference = particle_table(labels, spacing=(0.5, 1.0, 2.0))
    new_values = rng.choice(np.arange(1, 60000), size=present.size, replace=False)
    lookup = np.zeros(int(labels.max()) + 1, np.uint32)
    lookup[present] = new_values
    permuted = particle_table(lookup[labels], spacing=(0.5, 1.0, 2.0))
    back = dict(zip(new_values.tolist(), present.tolist(), strict=True))
    permuted["label"] = permuted["label"].map(back).astype(np.int64)
    permuted = permuted.sort_values("label").reset_index(drop=True)
    pd.testing.assert_frame_equal(permuted, reference)


@SETTINGS
@given(
    labels=label_volumes,
    shift=st.tuples(*[st.integers(0, 4)] * 3),
    spacing=st.tuples(*[st.sampled_from([0.5, 1.0, 1.7])] * 3),
)
def test_property_translation_invariance(labels, shift, spacing):
    reference = particle_table(labels, spacing=spacing).set_index("label")
    moved = np.pad(labels, [(s, 3) for s in shift])
    translated = particle_table(moved, spacing=spacing).set_index("label")
    for axis, letter in enumerate("zyx"):
        assert_allclose(
            translated[f"centroid_{letter}_um"],
            reference[f"centroid_{letter}_um"] + shift[axis] * spacing[axis],
        )
        assert_array_equal(
            translated[f"bbox_min_{letter}"], reference[f"bbox_min_{letter}"] + shift[axis]
        )
    # the surface sees the padding the same way (the volume is padded with background anyway)
    same = ["volume_voxels", "volume_um3", "esd_um", "surface_area_um2", "sphericity",
            "axis_major_length_um", "axis_intermediate_length_um", "axis_minor_length_um"]  # fmt: skip
    pd.testing.assert_frame_equal(translated[same], reference[same], check_exact=False, rtol=1e-9)


@SETTINGS
@given(labels=label_volumes, spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3))
def test_property_volume_scales_with_spacing(labels, spacing):
    unit = particle_table(labels)
    scaled = particle_table(labels, spacing=spacing)
    assert_array_equal(scaled.volume_voxels, unit.volume_voxels)
    assert_allclose(scaled.volume_um3, unit.volume_um3 * np.prod(spacing), rtol=1e-12)
    skipped = particle_table(labels, spacing=spacing, surface=False)
    assert skipped.surface_area_um2.isna().all() and skipped.sphericity.isna().all()
    different = [c for c in scaled if c not in ("surface_area_um2", "sphericity")]
    pd.testing.assert_frame_equal(skipped[different], scaled[different])
