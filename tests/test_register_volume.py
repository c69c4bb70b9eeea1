"""Hint-free registration of a nano-CT pillar inside a micro-CT overview (twin pair truth)."""

from __future__ import annotations

import numpy as np
import pytest

from corrtomo._shared import InputError
from corrtomo.cli._app import run_app
from corrtomo.register import corner_error, detect_cylinder, register_volume, write_volume_overlay
from corrtomo.synth import make_scale_pair
from test_scale_pair import SMALL_PAIR


@pytest.fixture(scope="module")
def pair():
    return make_scale_pair(SMALL_PAIR, seed=11, scale_ratio=4.5, rotation_deg=131.0, tilt_deg=7.0, tilt_azimuth_deg=200.0)


@pytest.fixture(scope="module")
def result(pair):
    return register_volume(pair.micro_ct, pair.nano_ct, fixed_spacing=pair.micro_voxel_size_um, moving_spacing=pair.nano_voxel_size_um)


def test_register_volume_finds_the_pillar(pair, result):
    error = corner_error(result.transform, pair.transform, pair.nano_ct.shape)
    assert error < 1.0, result.diagnostics
    assert result.confident and result.score > 0.6
    assert result.scale == pytest.approx(1 / 4.5, rel=0.03)
    np.testing.assert_allclose(result.corners, result.transform.corners(pair.nano_ct.shape))
    assert result.field_of_view_radius == pytest.approx(pair.nano_pillar_radius_voxels, abs=2.0)
    data = result.to_dict()
    assert data["confident"] and len(data["matrix"]) == 4 and data["axes"] == "zyx"


def test_unrelated_volume_is_flagged(pair):
    other = make_scale_pair(SMALL_PAIR, seed=12, scale_ratio=4.5, rotation_deg=10.0, tilt_deg=0.0)
    result = register_volume(pair.micro_ct, other.nano_ct, fixed_spacing=0.6, moving_spacing=other.nano_voxel_size_um)
    assert not result.confident


def test_detect_cylinder_and_box():
    volume = np.random.default_rng(0).normal(5.0, 1.0, size=(8, 40, 40)).astype(np.float32)
    assert detect_cylinder(volume) is None
    yy, xx = np.indices((40, 40))
    volume[:, np.hypot(yy - 19.5, xx - 19.5) > 18] = 0.0
    assert detect_cylinder(volume) == pytest.approx(18.0, abs=1.0)


def test_bad_input(pair):
    micro, nano = pair.micro_ct, pair.nano_ct
    with pytest.raises(InputError, match="no voxel size"):
        register_volume(micro, nano, fixed_spacing=None, moving_spacing=0.1)
    with pytest.raises(InputError, match="positive"):
        register_volume(micro, nano, fixed_spacing=0.6, moving_spacing=-1)
    with pytest.raises(InputError, match="larger than the fixed"):
        register_volume(nano, micro, fixed_spacing=pair.nano_voxel_size_um, moving_spacing=0.6)
    with pytest.raises(InputError, match="3D"):
        register_volume(micro[0], nano, fixed_spacing=0.6, moving_spacing=0.1)
    bad = nano.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register_volume(micro, bad, fixed_spacing=0.6, moving_spacing=0.1)
    assert not np.isnan(nano).any()  # input not modified


def test_cli_register_volume(tmp_path, pair, result, capsys):
    import json

    from corrtomo.io import write_tiff

    write_tiff(tmp_path / "micro.tif", pair.micro_ct, spacing=pair.micro_voxel_size_um)
    write_tiff(tmp_path / "nano.tif", pair.nano_ct, spacing=pair.nano_voxel_size_um)
    code = run_app(["register-volume", "--fixed", str(tmp_path / "micro.tif"), "--moving", str(tmp_path / "nano.tif"),
                    "--out", str(tmp_path / "t.json"), "--overlay", str(tmp_path / "o.png")])
    assert code == 0
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["confident"] and (tmp_path / "o.png").stat().st_size > 1000
    np.testing.assert_allclose(np.asarray(data["matrix"]), result.transform.matrix, atol=1e-6)
    # moving larger than fixed: one line, exit 2
    capsys.readouterr()
    code = run_app(["register-volume", "--fixed", str(tmp_path / "nano.tif"), "--moving", str(tmp_path / "micro.tif"),
                    "--out", str(tmp_path / "u.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "larger than the fixed" in err and len(err.splitlines()) == 1
    code = run_app(["register-volume", "--fixed", str(tmp_path / "missing.tif"), "--moving", str(tmp_path / "nano.tif"),
                    "--out", str(tmp_path / "u.json")])
    assert code == 2


def test_overlay_with_truth(tmp_path, pair, result):
    path = write_volume_overlay(tmp_path / "overlay.png", pair.micro_ct, pair.nano_ct, result, truth=pair.transform)
    assert path.stat().st_size > 1000


def test_moving_region_mask_is_the_mapped_box_and_cylinder():
    from corrtomo._shared import RigidTransform
    from corrtomo.register import moving_region_mask

    # moving voxels half the fixed size, moving origin at fixed (4, 5, 6): p_f = 0.5 p_m + t
    matrix = np.eye(4)
    matrix[:3, :3] *= 0.5
    matrix[:3, 3] = [4.0, 5.0, 6.0]
    transform = RigidTransform(matrix)
    mask = moving_region_mask((20, 20, 20), transform, (10, 12, 12), slab=3)
    # moving z in [-0.5, 9.5] -> fixed z in [3.75, 8.75]: planes 4..8; y: [4.75, 10.75] -> 5..10
    expected = np.zeros((20, 20, 20), bool)
    expected[4:9, 5:11, 6:12] = True
    np.testing.assert_array_equal(mask, expected)
    round_mask = moving_region_mask((20, 20, 20), transform, (10, 12, 12), radius_voxels=5.5)
    assert round_mask.sum() < mask.sum() and not (round_mask & ~mask).any()
    # the corner columns of the box fall outside the cylinder, its centre column inside
    assert not round_mask[6, 5, 6] and round_mask[6, 8, 9]
