"""``corrtomo segment unet``: train from sparse labels, save, apply the saved model; bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from corrtomo.cli._app import run_app
from corrtomo.io import read_volume, write_tiff

TINY = ["--patch", "16", "--base-channels", "4", "--levels", "2", "--steps", "30", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_torch_thread):
    folder = tmp_path_factory.mktemp("unet-cli")
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:32, :32, :32]
    truth = np.full((32, 32, 32), 255, np.uint8)
    truth[(z - 10) ** 2 + (y - 10) ** 2 + (x - 11) ** 2 <= 36] = 1
    truth[(z - 21) ** 2 + (y - 20) ** 2 + (x - 19) ** 2 <= 49] = 2
    grey = np.choose((truth == 1) + 2 * (truth == 2), [0.0, 1.0, 2.0]).astype(np.float32)
    grey += rng.normal(0.0, 0.05, grey.shape).astype(np.float32)
    labels = np.zeros_like(truth)
    labels[10], labels[21] = truth[10], truth[21]
    write_tiff(folder / "ct.tif", grey, spacing=0.5)
    write_tiff(folder / "labels.tif", labels, spacing=0.5)
    return folder


def test_train_save_and_apply(files):
    trained = files / "trained.tif"
    assert run_app(["segment", "unet", "--volume", str(files / "ct.tif"), "--labels", str(files / "labels.tif"),
                    "--out", str(trained), "--save-model", str(files / "m.unet"),
                    "--particles-out", str(files / "particles.tif"), "--foreground-out", str(files / "fg.tif"),
                    *TINY]) == 0
    assert (files / "m.unet" / "model.json").exists() and (files / "m.unet" / "weights.safetensors").exists()
    applied = files / "applied.tif"
    assert run_app(["segment", "unet", "--volume", str(files / "ct.tif"), "--model", str(files / "m.unet"),
                    "--out", str(applied), "-q"]) == 0
    first = np.asarray(read_volume(trained).data)
    np.testing.assert_array_equal(np.asarray(read_volume(applied).data), first)
    assert set(np.unique(first)) <= {0, 1, 2}
    assert set(np.unique(np.asarray(read_volume(files / "particles.tif").data))) <= {0, 1, 2}


def test_foreground_out_is_the_calibrated_particle_head(files):
    """The written foreground is the head's matrix probability, smoothed, below the threshold
    the model carries: a model whose stored threshold is changed writes the foreground of the
    new one."""
    import shutil

    from corrtomo.segment import foreground_mask
    from corrtomo.segment.unet import load_unet, predict_unet

    if not (files / "m.unet").exists():
        test_train_save_and_apply(files)
    ct = np.asarray(read_volume(files / "ct.tif").data)
    model = load_unet(files / "m.unet")
    matrix = predict_unet(model, ct, spacing=0.5, matrix=True, particle=False, device="cpu").matrix
    probability = matrix.astype(np.float32) / 255

    written = np.asarray(read_volume(files / "fg.tif").data)
    assert written.dtype == np.uint8 and set(np.unique(written)) == {0, 1}
    np.testing.assert_array_equal(written, foreground_mask(ct, spacing=0.5, probabilities=probability,
                                                           matrix_threshold=model.matrix_threshold))

    strict = files / "strict.unet"
    shutil.copytree(files / "m.unet", strict, dirs_exist_ok=True)
    meta = json.loads((strict / "model.json").read_text())
    meta["training"]["matrix_threshold"] = {"value": 0.1}
    (strict / "model.json").write_text(json.dumps(meta))
    assert run_app(["segment", "unet", "--volume", str(files / "ct.tif"), "--model", str(strict),
                    "--out", str(files / "strict.tif"), "--foreground-out", str(files / "strict_fg.tif"), "-q"]) == 0
    fewer = np.asarray(read_volume(files / "strict_fg.tif").data)
    np.testing.assert_array_equal(fewer, foreground_mask(ct, spacing=0.5, probabilities=probability,
                                                         matrix_threshold=0.1))
    assert 0 < fewer.sum() < written.sum()


def test_patch_of_three_edges_is_the_training_patch(files):
    assert run_app(["segment", "unet", "--volume", str(files / "ct.tif"), "--labels", str(files / "labels.tif"),
                    "--out", str(files / "slab.tif"), "--save-model", str(files / "slab.unet"),
                    *TINY[2:], "--patch", "8,16,16", "--steps", "2"]) == 0
    model = json.loads((files / "slab.unet" / "model.json").read_text())
    assert model["patch_shape"] == [8, 16, 16]


@pytest.mark.parametrize(("extra", "expect"), [
    (["--device", "cuda"], "device: CUDA was asked for"),
    (["--model", "m.unet"], "give either --labels (train) or --model (apply)"),
    (["--patch", "16,16"], "--patch: must be 1 or 3 edges, got '16,16'"),
    (["--patch", "a"], "--patch: must be an integer or Z,Y,X integers, got 'a'"),
])
def test_bad_input_is_one_line(files, capsys, extra, expect):
    argv = ["segment", "unet", "--volume", str(files / "ct.tif"), "--labels", str(files / "labels.tif"),
            "--out", str(files / "bad.tif"), "--patch", "16", "--levels", "2", "--steps", "2", *extra]
    assert run_app(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and "\n" not in err
