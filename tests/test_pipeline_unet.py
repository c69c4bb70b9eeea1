"""The U-Net path of the pipeline: ``stages.phases.method: unet`` and ``stages.particles.foreground:
unet`` train a (tiny) 3D U-Net from the section labels, save it, and give the same phases and
particle foreground in memory and block by block."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from corrtomo._shared import InputError
from corrtomo.io import read_volume
from corrtomo.pipeline import demo_config, parse_config, run_pipeline
from corrtomo.synth import make_sample, write_sample

TINY = {"patch": 32, "base_channels": 4, "levels": 3, "max_steps": 40, "batch_size": 2, "patience": 2,
        "overlap": 0.25, "device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("twin") / "sample"
    write_sample(make_sample("talc-saxolite", shape=(96, 96, 96), seed=2), folder, preview=False)
    return folder


def _config(sample: Path, **execution):
    config = demo_config(sample)
    for section in config["sections"]:  # this test is about the U-Net, not registration
        section["pose"] = f"sem/{section['name']}/pose.json"
    config["stages"] = {"phases": {"method": "unet", "unet": TINY},
                        "particles": {"foreground": "unet"}}
    if execution:
        config["execution"] = execution
    return parse_config(config, base_dir=sample)


def _volume(run: Path, stage: str, name: str) -> np.ndarray:
    return np.asarray(read_volume(run / stage / name, lazy=False).data)


def test_unet_pipeline_in_memory_and_chunked_agree(sample, tmp_path):
    memory = run_pipeline(_config(sample, mode="memory"), tmp_path / "memory", until="evaluate", quiet=True)
    train = next(r for r in memory.stages if r.stage == "train").result
    assert train["method"] == "unet" and train["device"] == "cpu" and 1 <= train["steps"] <= TINY["max_steps"]
    model = json.loads((memory.run_dir / "train" / "phase_unet.unet" / "model.json").read_text())
    assert model["class_names"][0] == "matrix" and model["voxel_size_um"] == pytest.approx([0.1] * 3)
    assert (memory.run_dir / "train" / "phase_unet.unet" / "weights.safetensors").stat().st_size > 1000
    accuracy = json.loads((memory.run_dir / "evaluate" / "accuracy.json").read_text())
    assert np.isfinite(accuracy["mean_phase_iou"]) and np.isfinite(accuracy["particle_f1"])
    phases = _volume(memory.run_dir, "phases", "phases.ome.zarr")
    foreground = _volume(memory.run_dir, "foreground", "foreground.ome.zarr") > 0
    assert not phases[~foreground].any() and phases[foreground].min() > 0  # minerals inside the foreground only
    threshold = model["training"]["matrix_threshold"]["value"]
    assert 0.0 < threshold < 1.0
    assert next(r for r in memory.stages if r.stage == "phases").result["matrix_threshold"] == threshold
    head_matrix = _volume(memory.run_dir, "phases", "unet_matrix.ome.zarr")
    assert head_matrix.dtype == np.uint8
    unet_foreground = head_matrix < 255 * threshold
    assert 0.05 < unet_foreground.mean() < 0.95

    chunked = run_pipeline(_config(sample, mode="chunked", chunk=32), tmp_path / "chunked", until="particles",
                           quiet=True)
    assert chunked.stages[0].result["chunked"] is True
    # the sliding windows lie on one global grid, so 32^3 blocks give the in-memory result exactly
    np.testing.assert_array_equal(_volume(chunked.run_dir, "phases", "phases.ome.zarr"), phases)
    # the same windows; only float sums in another order, so a probability may round the other way
    chunked_matrix = _volume(chunked.run_dir, "phases", "unet_matrix.ome.zarr").astype(np.int16)
    assert np.abs(chunked_matrix - head_matrix).max() <= 1
    assert (chunked_matrix != head_matrix).mean() < 1e-3

    # the particles come from the head's smoothed matrix probability below the calibrated
    # threshold, cleaned as the CT foreground is: no cavities, no dust
    import cc3d
    from scipy import ndimage

    from corrtomo.segment import fill_cavities

    particles = _volume(memory.run_dir, "particles", "particles.ome.zarr") > 0
    smoothed = ndimage.gaussian_filter(head_matrix.astype(np.float32) / 255, 1.0, mode="nearest")
    head_foreground = fill_cavities(smoothed < np.float32(threshold))
    assert not (particles & ~head_foreground).any()  # cleaning only fills cavities and removes
    assert particles.mean() > 0.5 * unet_foreground.mean()
    np.testing.assert_array_equal(fill_cavities(particles), particles)
    dust = int(np.ceil(np.pi / 6 * 0.2**3 / 0.1**3))  # the default smallest size: 2 voxels across
    assert cc3d.dust(particles, threshold=dust, connectivity=26).sum() == particles.sum()
    if not np.array_equal(fill_cavities(unet_foreground), unet_foreground):  # the head had holes
        assert (particles & ~unet_foreground).any()
    np.testing.assert_array_equal(_volume(chunked.run_dir, "particles", "particles.ome.zarr") > 0, particles)


def test_unet_foreground_needs_the_unet_phases(sample):
    config = demo_config(sample)
    config["stages"] = {"particles": {"foreground": "unet"}}
    with pytest.raises(InputError, match=r"needs stages\.phases\.method: unet"):
        parse_config(config, base_dir=sample)


def test_unet_config_takes_a_patch_of_three_edges_and_refuses_small_ones(sample):
    config = demo_config(sample)
    config["stages"] = {"phases": {"method": "unet", "unet": {**TINY, "patch": [16, 32, 32]}}}
    parsed = parse_config(config, base_dir=sample)
    assert parsed.stages.phases.unet.patch == (16, 32, 32)
    assert parsed.stages.phases.unet.intensity_shift == 0.0  # grey-value jitter off by default
    config["stages"]["phases"]["unet"]["patch"] = [4, 32, 32]
    with pytest.raises(InputError, match=r"stages\.phases\.unet\.patch.*>= 8 voxels"):
        parse_config(config, base_dir=sample)
