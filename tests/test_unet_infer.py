"""U-Net sliding-window inference and model files (tiny untrained networks, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from corrtomo._shared import BlockRunner, InputError  # noqa: E402
from corrtomo.segment.unet import (  # noqa: E402
    UNet3D,
    UNetArchitecture,
    UNetModel,
    load_unet,
    predict_unet,
    resolve_device,
    save_unet,
)

CLASS_IDS = (0, 2, 5)
CLASS_NAMES = ("matrix", "quartz", "talc")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(seed: int = 0, *, voxel: float = 2.0) -> UNetModel:
    torch.manual_seed(seed)
    network = UNet3D(UNetArchitecture(n_phase_classes=3, base_channels=4, levels=2))
    return UNetModel(network=network, class_ids=CLASS_IDS, class_names=CLASS_NAMES,
                     voxel_size_um=(voxel, voxel, voxel), normalisation={"center": 0.5, "scale": 0.25},
                     patch_shape=(16, 16, 16), training={"steps": 0, "seed": seed})


@pytest.fixture(scope="module")
def model() -> UNetModel:
    return make_model()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.random((40, 36, 44)).astype(np.float32)


@pytest.fixture(scope="module")
def reference(model, volume):
    """Whole-volume prediction (one block)."""
    return predict_unet(model, volume, block_shape=volume.shape, boundary=True, matrix=True)


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------------------------
# sliding window
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_shape", [(16, 16, 16), (13, 20, 9)])
def test_result_does_not_depend_on_block_shape(model, volume, reference, block_shape):
    result = predict_unet(model, volume, block_shape=block_shape, boundary=True, matrix=True)
    np.testing.assert_array_equal(result.phases, reference.phases)
    np.testing.assert_array_equal(result.particle, reference.particle)
    np.testing.assert_array_equal(result.boundary, reference.boundary)
    np.testing.assert_array_equal(result.matrix, reference.matrix)
    assert result.phases.dtype == result.particle.dtype == result.boundary.dtype == np.uint8
    assert set(np.unique(result.phases)) <= set(CLASS_IDS)
    assert set(np.unique(result.particle)) <= {0, 1, 2}
    assert result.window == (16, 16, 16) and result.stride == (8, 8, 8) and result.device == "cpu"


def test_zarr_in_and_out_equal_numpy(model, volume, reference):
    image = zarr.create_array(store={}, shape=volume.shape, chunks=(16, 16, 16), dtype="float32")
    image[:] = volume
    outs = [zarr.create_array(store={}, shape=volume.shape, chunks=(20, 18, 22), dtype="uint8") for _ in range(4)]
    result = predict_unet(model, image, block_shape=(20, 18, 22), out_phases=outs[0], out_particle=outs[1],
                          out_boundary=outs[2], out_matrix=outs[3])
    assert result.phases is outs[0] and result.particle is outs[1] and result.boundary is outs[2]
    assert result.matrix is outs[3]
    np.testing.assert_array_equal(outs[3][:], reference.matrix)
    np.testing.assert_array_equal(outs[0][:], reference.phases)
    np.testing.assert_array_equal(outs[1][:], reference.particle)
    np.testing.assert_array_equal(outs[2][:], reference.boundary)


def test_threads_runner_equals_serial(model, volume, reference):
    calls = []
    with BlockRunner(2, "threads") as runner:
        result = predict_unet(model, volume, block_shape=(20, 18, 22), boundary=True, runner=runner,
                              progress=lambda *args: calls.append(args))
    np.testing.assert_array_equal(result.phases, reference.phases)
    np.testing.assert_array_equal(result.particle, reference.particle)
    np.testing.assert_array_equal(result.boundary, reference.boundary)
    assert calls[-1] == ("unet", 8, 8)


def test_one_window_equals_the_network(model):
    image = np.random.default_rng(2).random((16, 16, 16)).astype(np.float32)
    result = predict_unet(model, image, boundary=True, matrix=True, batch_size=1)
    x = torch.from_numpy((image - 0.5) / 0.25)[None, None]
    with torch.inference_mode():
        phase_logits, particle_logits = model.network.eval()(x)
    expected = np.asarray(CLASS_IDS, np.uint8)[phase_logits[0].argmax(0).numpy()]
    np.testing.assert_array_equal(result.phases, expected)
    np.testing.assert_array_equal(result.particle, particle_logits[0].argmax(0).numpy())
    boundary = torch.softmax(particle_logits[0], 0)[2].numpy()
    assert np.abs(result.boundary.astype(float) - 255 * boundary).max() <= 0.51
    matrix = torch.softmax(particle_logits[0], 0)[0].numpy()
    assert np.abs(result.matrix.astype(float) - 255 * matrix).max() <= 0.51


def test_foreground_gives_minerals_inside_and_zero_outside(model, volume, reference):
    mask = np.random.default_rng(3).random(volume.shape) < 0.5
    result = predict_unet(model, volume, foreground=mask, block_shape=(20, 36, 44))
    assert not result.phases[~mask].any()
    assert np.all(result.phases[mask] != 0)
    mineral = mask & (reference.phases != 0)  # where a mineral won anyway it is kept
    np.testing.assert_array_equal(result.phases[mineral], reference.phases[mineral])
    np.testing.assert_array_equal(result.particle, reference.particle)  # particle head not masked


def test_volume_shorter_than_the_window_is_reflected(model):
    image = np.random.default_rng(4).random((10, 16, 20)).astype(np.float32)
    result = predict_unet(model, image, particle=False)
    assert result.phases.shape == image.shape and result.particle is None
    padded = np.pad(image, [(0, 6), (0, 0), (0, 0)], mode="symmetric")
    expected = predict_unet(model, padded, particle=False).phases[:10]
    np.testing.assert_array_equal(result.phases, expected)


def test_volume_shorter_than_half_the_window_is_refused(model):
    with pytest.raises(InputError, match="smaller than half the window 16") as error:
        predict_unet(model, np.zeros((7, 16, 16), np.float32))
    assert _one_line(error).startswith("window: ")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window": 15}, "positive multiples of 2"),
    ({"window": (16, 16)}, "window must be 1 or 3 integers"),
    ({"overlap": 1.0}, "overlap must lie"),
    ({"spacing": 2.1}, "voxel size 2 um"),
    ({"out_phases": np.zeros((4, 4, 4), np.uint8)}, "out_phases: output shape"),
    ({"device": "tpu"}, "device"),
])
def test_bad_arguments(model, kwargs, match):
    with pytest.raises(InputError, match=match) as error:
        predict_unet(model, np.zeros((16, 16, 16), np.float32), **kwargs)
    _one_line(error)


def test_spacing_within_two_percent_is_accepted(model):
    result = predict_unet(model, np.zeros((16, 16, 16), np.float32), spacing=2.03, particle=False)
    assert result.phases.shape == (16, 16, 16)


def test_distributed_runner_needs_zarr_outputs(model):
    runner = BlockRunner(1, object())  # stands for a dask client; nothing is sent to it
    assert runner.kind == "distributed"
    with pytest.raises(InputError, match=r"out_phases: a dask\.distributed runner writes into Zarr") as error:
        predict_unet(model, np.zeros((16, 16, 16), np.float32), runner=runner)
    _one_line(error)


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------


def test_cuda_without_a_device_is_a_one_line_error(model, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError) as error:
        predict_unet(model, np.zeros((16, 16, 16), np.float32), device="cuda")
    assert _one_line(error) == "device: CUDA was asked for but no CUDA device is available"
    with pytest.raises(InputError, match="CUDA was asked for"):
        resolve_device("cuda:1")
    assert resolve_device("auto").type == "cpu"
    result = predict_unet(model, np.zeros((16, 16, 16), np.float32), device="auto", particle=False)
    assert result.device == "cpu"


# --------------------------------------------------------------------------------------------
# model files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return save_unet(model, tmp_path_factory.mktemp("models") / "tiny.unet")


def test_save_load_round_trip(model, saved, volume, reference):
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "weights.safetensors"]
    loaded = load_unet(saved, spacing=2.0, phase_names={2: "quartz", 5: "talc", 7: "pyrite"})
    original = model.network.state_dict()
    restored = loaded.network.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    assert loaded.architecture == model.architecture
    assert (loaded.class_ids, loaded.class_names) == (CLASS_IDS, CLASS_NAMES)
    assert loaded.voxel_size_um == (2.0, 2.0, 2.0) and loaded.patch_shape == (16, 16, 16)
    assert loaded.normalisation == model.normalisation and loaded.training == model.training
    meta = json.loads((saved / "model.json").read_text())
    assert meta["format"] == "corrtomo.unet" and meta["format_version"] == 1 and "corrtomo_version" in meta
    result = predict_unet(loaded, volume, block_shape=volume.shape, boundary=True)
    np.testing.assert_array_equal(result.phases, reference.phases)
    np.testing.assert_array_equal(result.boundary, reference.boundary)
    assert load_unet(saved / "model.json").class_ids == CLASS_IDS


def test_save_replaces_an_existing_model(tmp_path):
    path = save_unet(make_model(1), tmp_path / "m.unet")
    save_unet(make_model(2), path)
    loaded = load_unet(path)
    assert loaded.training["seed"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.unet"]


def test_load_checks_voxel_size_and_classes(saved):
    with pytest.raises(InputError, match=r"voxel size 2 um, the volume has 2\.5 um") as error:
        load_unet(saved, spacing=2.5)
    assert _one_line(error).startswith(str(saved / "model.json"))
    with pytest.raises(InputError, match=r"class 'talc' \(id 5\) is not in the phase library") as error:
        load_unet(saved, phase_names={2: "quartz", 4: "talc"})
    assert _one_line(error).startswith(str(saved / "model.json"))
    with pytest.raises(InputError, match=r"class 'quartz' \(id 2\) is 'calcite' in the phase library") as error:
        load_unet(saved, phase_names={2: "calcite", 5: "talc"})
    _one_line(error)


def _copy(saved, tmp_path):
    import shutil

    return shutil.copytree(saved, tmp_path / "copy.unet")


def test_load_damaged_files(saved, tmp_path):
    with pytest.raises(InputError, match="model folder not found") as error:
        load_unet(tmp_path / "missing.unet")
    _one_line(error)

    path = _copy(saved, tmp_path)
    meta_text = (path / "model.json").read_text()
    (path / "model.json").write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(path / "model.json"))

    meta = json.loads(meta_text)
    (path / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(InputError, match="newer than this corrtomo reads"):
        load_unet(path)
    (path / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "class_ids"}))
    with pytest.raises(InputError, match="'class_ids' is missing"):
        load_unet(path)

    (path / "model.json").write_text(meta_text)
    weights = path / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-8] + b"\x00" * 8)
    with pytest.raises(InputError, match="does not match the checksum") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(weights))

    weights.write_bytes(b"garbage")
    (path / "model.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    with pytest.raises(InputError, match="not a readable safetensors file") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(weights))

    weights.write_bytes(data)
    wider = {**meta, "architecture": {**meta["architecture"], "base_channels": 8}}
    (path / "model.json").write_text(json.dumps({k: v for k, v in wider.items() if k != "sha256"}))
    with pytest.raises(InputError, match="weights do not fit the architecture") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(weights))

    weights.unlink()
    with pytest.raises(InputError, match="weights file not found") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(weights))

    (path / "model.json").unlink()
    with pytest.raises(InputError, match="model description not found") as error:
        load_unet(path)
    assert _one_line(error).startswith(str(path / "model.json"))
