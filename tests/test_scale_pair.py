"""The micro-CT / nano-CT twin pair: one analytic phantom rendered exactly on two similar grids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from corrtomo._shared import InputError, RigidTransform
from corrtomo.synth import (
    MatrixTexture,
    ParticleSpec,
    ParticleType,
    PhantomRenderer,
    generate_particles,
    make_scale_pair,
    pose_rotation,
    transform_system,
    transform_texture,
)
from corrtomo.synth._pair import PAIR_PRESETS, particles_in_box

_SPEC = ParticleSpec(
    types=(
        ParticleType(name="a", volume_share=0.6, phases={1: 0.5, 2: 0.5}, liberated_share=0.2, grains=(2, 4),
                     inclusion=(3, 1.0, 0.05)),
        ParticleType(name="b", volume_share=0.4, phases={2: 0.6, 4: 0.4}, liberated_share=0.0, grains=(2, 3),
                     lamella=(1, 1.0, 0.3, 0.5)),
    ),
    esd_median_um=1.2, esd_sigma=0.3, esd_min_um=0.6, esd_max_um=2.0, solids_fraction=0.3, touching_share=0.3,
)
_SHAPE = (40, 40, 40)
_VOXEL = 0.1

#: a small pair preset for tests (the real one is 112^3 + 128^3)
SMALL_PAIR = replace(
    PAIR_PRESETS["talc-micro-nano"],
    name="small",
    particles=replace(PAIR_PRESETS["talc-micro-nano"].particles, esd_min_um=0.6, esd_max_um=4.0),
    micro_shape=(64, 64, 64),
    nano_shape=(64, 64, 64),
    micro_ct=replace(PAIR_PRESETS["talc-micro-nano"].micro_ct, method="image"),
    nano_ct=replace(PAIR_PRESETS["talc-micro-nano"].nano_ct, method="image"),
    nano_supersample=1,
)


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(3)
    system = generate_particles(_SPEC, shape=_SHAPE, voxel_size_um=_VOXEL, pillar_radius_voxels=None, rng=rng)
    texture = MatrixTexture.random(rng, amplitude=0.1)
    renderer = PhantomRenderer(system, _SHAPE, max_phase_id=4, supersample=1, texture=texture)
    particles, phases, amounts = renderer.render_all()
    assert (system.lamella_frequency > 0).any() and (system.inclusion_radius2 > 0).any()
    return system, texture, particles, phases, amounts


def _render(system, texture, matrix, shape):
    keep = particles_in_box(system, matrix, shape)
    moved = transform_system(system, matrix, keep=keep)
    renderer = PhantomRenderer(moved, shape, max_phase_id=4, supersample=1, texture=transform_texture(texture, matrix))
    labels, phases, amounts = renderer.render_all()
    lookup = np.concatenate([[0], keep + 1]).astype(np.uint32)
    return lookup[labels], phases, amounts


def test_transformed_system_renders_the_same_phantom_exactly(phantom):
    """A grid at half the voxel size, turned by 90 degrees about z and shifted: every second fine voxel
    centre is a coarse voxel centre, so point-sampled labels, phases (grains, inclusions, lamellae) and
    matrix texture must agree there exactly."""
    system, texture, particles, phases, amounts = phantom
    rotation = np.rint(pose_rotation(90.0))  # exact permutation (z, y, x) -> (z, -x, y)
    offset = np.array([6.0, 33.0, 5.0])
    matrix = RigidTransform.from_parts(rotation, offset, 0.5).matrix
    fine_shape = (48, 48, 48)
    fine_labels, fine_phases, fine_amounts = _render(system, texture, matrix, fine_shape)
    index = np.indices(fine_shape)[:, ::2, ::2, ::2].reshape(3, -1).T.astype(np.float64)
    coarse = np.rint(RigidTransform(matrix).apply(index)).astype(np.int64)
    assert coarse.min() >= 0 and (coarse < np.asarray(_SHAPE)).all()
    z, y, x = coarse.T
    np.testing.assert_array_equal(fine_labels[::2, ::2, ::2].ravel(), particles[z, y, x])
    np.testing.assert_array_equal(fine_phases[::2, ::2, ::2].ravel(), phases[z, y, x])
    np.testing.assert_allclose(fine_amounts[:, ::2, ::2, ::2].reshape(5, -1), amounts[:, z, y, x], atol=1e-5)
    assert np.unique(fine_labels).size > 5 and (fine_phases == 1).any()


def test_tilted_scaled_grid_matches_point_evaluation(phantom):
    """Arbitrary rotation, tilt and scale: the fine-grid label at a voxel equals the phantom evaluated
    at the mapped coarse position (a one-voxel grid shifted there)."""
    system, texture, _, _, _ = phantom
    rotation = pose_rotation(37.0, 8.0, 120.0)
    scale = 1 / 2.7
    fine_shape = (60, 60, 60)
    center = np.array([19.5, 19.0, 20.0])
    offset = center - scale * rotation @ ((np.asarray(fine_shape) - 1) / 2)
    matrix = RigidTransform.from_parts(rotation, offset, scale).matrix
    fine_labels, fine_phases, _ = _render(system, texture, matrix, fine_shape)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, 60, size=(300, 3))
    mapped = RigidTransform(matrix).apply(picks.astype(np.float64))
    agree = hits = 0
    for pick, point in zip(picks, mapped, strict=True):  # 300 one-voxel renders (test only)
        labels, phases, _ = _render(system, texture, RigidTransform.from_translation(point).matrix, (1, 1, 1))
        agree += int(labels[0, 0, 0] == fine_labels[tuple(pick)] and phases[0, 0, 0] == fine_phases[tuple(pick)])
        hits += int(labels[0, 0, 0] > 0)
    assert agree == len(picks)
    assert hits > 25 and (fine_labels > 0).mean() > 0.1


def test_transform_system_rejects_non_similarity(phantom):
    with pytest.raises(InputError, match="similarity"):
        transform_system(phantom[0], np.diag([1.0, 2.0, 1.0, 1.0]))


@pytest.fixture(scope="module")
def small_pair():
    return make_scale_pair(SMALL_PAIR, seed=5, scale_ratio=5.0, rotation_deg=30.0, tilt_deg=6.0, tilt_azimuth_deg=45.0)


def test_scale_pair_truth_is_consistent(small_pair):
    pair = small_pair
    assert pair.micro_ct.shape == (64, 64, 64) and pair.nano_ct.shape == (64, 64, 64)
    assert pair.nano_voxel_size_um == pytest.approx(0.6 / 5.0)
    assert pair.transform.scale == pytest.approx(0.2)
    rotation = pair.transform.matrix[:3, :3] / 0.2
    assert np.degrees(np.arccos(rotation[0, 0])) == pytest.approx(6.0)
    corners = pair.nano_corners_in_micro()
    assert corners.min() >= 0 and (corners <= 63).all()
    # same labels in both volumes: nano particles are micro particles
    nano_labels = np.unique(pair.nano_particles)[1:]
    assert nano_labels.size > 3 and np.isin(nano_labels, np.unique(pair.micro_particles)).all()
    # nano voxel centres deep inside a micro particle carry that particle's label and phase
    index = np.indices(pair.nano_ct.shape)[:, ::2, ::2, ::2].reshape(3, -1).T
    micro_index = np.rint(pair.transform.apply(index.astype(np.float64))).astype(np.int64)
    from scipy import ndimage

    core = ndimage.binary_erosion(pair.micro_particles > 0, iterations=1) & (
        ndimage.minimum_filter(pair.micro_particles, 3) == ndimage.maximum_filter(pair.micro_particles, 3)
    )
    zm, ym, xm = micro_index.T
    zn, yn, xn = index.T
    inside_pillar = (yn - 31.5) ** 2 + (xn - 31.5) ** 2 < (pair.nano_pillar_radius_voxels - 1) ** 2
    use = core[zm, ym, xm] & inside_pillar
    assert use.sum() > 50
    assert (pair.nano_particles[zn, yn, xn][use] == pair.micro_particles[zm, ym, xm][use]).mean() > 0.98
    # the pillar: air (label 0, low CT) outside the cylinder
    assert pair.nano_particles[:, 0, 0].max() == 0
    mask = pair.nano_region_mask()
    assert 0 < mask.sum() < mask.size
    assert pair.metadata["transform"]["scale"] == pytest.approx(0.2)


def test_scale_pair_is_seeded(small_pair):
    again = make_scale_pair(SMALL_PAIR, seed=5, scale_ratio=5.0, rotation_deg=30.0, tilt_deg=6.0, tilt_azimuth_deg=45.0)
    np.testing.assert_array_equal(again.nano_particles, small_pair.nano_particles)
    np.testing.assert_array_equal(again.micro_ct, small_pair.micro_ct)


def test_scale_pair_bad_input():
    with pytest.raises(InputError, match="scale_ratio"):
        make_scale_pair(SMALL_PAIR, seed=0, scale_ratio=0.5)
    with pytest.raises(InputError, match="does not fit"):
        make_scale_pair(SMALL_PAIR, seed=0, scale_ratio=1.5)
    with pytest.raises(InputError, match="unknown pair preset"):
        make_scale_pair("nope")


def test_write_scale_pair(tmp_path, small_pair):
    import json

    from corrtomo.io import read_volume
    from corrtomo.synth import write_scale_pair

    out = write_scale_pair(small_pair, tmp_path / "pair")
    for name in ("micro/ct.tif", "nano/ct.tif", "micro/truth/particles.tif", "nano/truth/phases.tif", "pair.json"):
        assert (out / name).is_file()
    truth = json.loads((out / "truth_transform.json").read_text())
    np.testing.assert_allclose(truth["matrix"], small_pair.transform.matrix)
    nano = read_volume(out / "nano" / "ct.tif", lazy=False)
    assert np.allclose(nano.spacing, small_pair.nano_voxel_size_um)
