"""Slice-to-volume registration on the digital twin (random poses, failures, CLI, bad input)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from corrtomo._shared import InputError, PlanePose
from corrtomo.register import (
    RegistrationHint,
    landmark_pose,
    normalized_mutual_information,
    pose_error,
    register_section,
)

# the former 96 x 112 x 112 voxels at 0.128 um (12.3 x 14.3 x 14.3 um) at the preset's 0.1 um, and a
# section of 205 x 205 pixels (10.2 um wide, as before): a smaller field of view holds fewer particles,
# so random poses score a wider null distribution and true matches fall below the confidence z-score
SHAPE = (123, 143, 143)
SECTION = (205, 205)


@pytest.fixture(scope="module")
def twin():
    from corrtomo.synth import make_sample

    return make_sample("talc-saxolite", shape=SHAPE, seed=3)


def _section_at(sample, pose, shape, seed):
    """A BSE section at `pose`, simulated exactly as make_sample does."""
    from corrtomo.phases import MATERIALS
    from corrtomo.synth import simulate_section
    from corrtomo.synth._sample import _section_material

    library = sample.library
    materials = {int(p.id): _section_material(p.name, p) for p in library}
    matrix = _section_material(sample.preset.matrix, MATERIALS[sample.preset.matrix])
    radius = 0.47 * min(SHAPE[1], SHAPE[2])
    cy, cx = (SHAPE[1] - 1) / 2, (SHAPE[2] - 1) / 2

    def inside(points):
        return (points[..., 1] - cy) ** 2 + (points[..., 2] - cx) ** 2 <= radius**2

    return simulate_section(
        sample.phases, pose, shape, materials=materials, matrix=matrix, inside_sample=inside,
        pixel_size_um=0.5 * sample.voxel_size_um, rng=np.random.default_rng(seed),
    )


def _random_pose(rng, shape=SECTION):
    center = np.array(SHAPE, float) / 2 + rng.uniform(-10, 10, 3)
    return PlanePose.from_angles(
        center=center, shape=shape, pixel_ratio=0.5, tilt_deg=rng.uniform(0, 40),
        tilt_azimuth_deg=rng.uniform(0, 360), inplane_deg=rng.uniform(0, 360),
    )


def test_twin_section_registers_without_hint(twin):
    section = twin.sections[0]
    result = register_section(
        twin.ct, section.bse, voxel_size_um=twin.voxel_size_um, pixel_size_um=section.pixel_size_um, rng=0
    )
    assert result.confident
    assert pose_error(result.pose, section.pose, section.bse.shape) < 1.5
    assert abs(result.pose.pixel_size_ratio - 0.5) < 0.01
    assert result.pose.method.startswith("fourier-mellin")


@pytest.mark.parametrize("seed", [11, 12])
def test_random_poses_with_tilt_hint(twin, seed):
    rng = np.random.default_rng(seed)
    pose = _random_pose(rng)
    tilt = float(np.rad2deg(np.arccos(abs(pose.normal[0]))))
    section = _section_at(twin, pose, SECTION, seed)
    result = register_section(
        twin.ct, section.bse, voxel_size_um=twin.voxel_size_um, pixel_size_um=section.pixel_size_um,
        hint=RegistrationHint(tilt_deg=tilt + rng.uniform(-3, 3)), rng=seed,
    )
    assert result.confident
    assert pose_error(result.pose, pose, SECTION) < 1.5


def test_landmarks_give_the_pose(twin):
    section = twin.sections[0]
    rows, columns = section.bse.shape
    points = np.array([[10, 10], [10, columns - 20], [rows - 15, 30], [rows // 2, columns // 2]], float)
    volume_points = section.pose.origin + points[:, 1:2] * section.pose.u + points[:, 0:1] * section.pose.v
    start = landmark_pose(points, volume_points + np.random.default_rng(0).normal(0, 0.5, volume_points.shape), (rows, columns))
    assert pose_error(start, section.pose, (rows, columns)) < 1.5
    result = register_section(
        twin.ct, section.bse, voxel_size_um=twin.voxel_size_um, pixel_size_um=section.pixel_size_um,
        hint=RegistrationHint(landmarks=(points, volume_points)), rng=0,
    )
    assert result.pose.method.startswith("landmarks")
    assert pose_error(result.pose, section.pose, (rows, columns)) < 1.0


def test_foreign_section_is_not_confident(twin):
    noise = np.random.default_rng(0).poisson(30, size=(160, 160)).astype(np.uint16)
    result = register_section(
        twin.ct, noise, voxel_size_um=twin.voxel_size_um, pixel_size_um=0.5 * twin.voxel_size_um,
        hint=RegistrationHint(tilt_deg=28.0), rng=0,
    )
    assert not result.confident
    assert result.pose.extra["confident"] is False


def test_nmi_bounds():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 64))
    assert normalized_mutual_information(a, a) == pytest.approx(2.0, abs=0.02)
    assert normalized_mutual_information(a, rng.normal(size=(64, 64))) < 1.1


def test_bad_inputs(twin):
    section = twin.sections[0].bse
    with pytest.raises(InputError, match="2D"):
        register_section(twin.ct, twin.ct, voxel_size_um=1.0, pixel_size_um=0.5)
    with pytest.raises(InputError, match="pixel_size_um"):
        register_section(twin.ct, section, voxel_size_um=1.0, pixel_size_um=None)
    with pytest.raises(InputError, match="3D"):
        register_section(section, section, voxel_size_um=1.0, pixel_size_um=0.5)
    with pytest.raises(InputError, match="landmark"):
        landmark_pose([[0, 0], [1, 1]], [[0, 0, 0], [1, 1, 1]], (8, 8))


def test_cli_round_trip(twin, tmp_path):
    from corrtomo.cli._app import run_app
    from corrtomo.io import write_image2d, write_tiff

    section = twin.sections[0]
    write_tiff(tmp_path / "ct.tif", twin.ct, spacing=(twin.voxel_size_um,) * 3)
    write_image2d(tmp_path / "bse.tif", section.bse)
    out = tmp_path / "pose.json"
    code = run_app([
        "register", "--volume", str(tmp_path / "ct.tif"), "--section", str(tmp_path / "bse.tif"),
        "--pixel-size", str(section.pixel_size_um), "--tilt-hint", "28", "--out", str(out),
        "--overlay", str(tmp_path / "overlay.png"), "--quiet",
    ])
    assert code == 0
    data = json.loads(out.read_text())
    assert {"origin", "u", "v", "score", "method"} <= set(data)
    pose = PlanePose.load(out)
    assert pose_error(pose, section.pose, section.bse.shape) < 1.5
    assert (tmp_path / "overlay.png").stat().st_size > 1000

    # missing pixel size, a 3D image as section
    code = run_app(["register", "--volume", str(tmp_path / "ct.tif"), "--section", str(tmp_path / "bse.tif"), "--out", str(out)])
    assert code == 2
    code = run_app(["register", "--volume", str(tmp_path / "ct.tif"), "--section", str(tmp_path / "ct.tif"),
                    "--pixel-size", "0.064", "--out", str(out)])
    assert code == 2
