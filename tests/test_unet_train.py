"""U-Net training from sparse labels: masked loss, targets, split, reproducibility, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from scipy import ndimage

torch = pytest.importorskip("torch")

from corrtomo._shared import MATRIX_LABEL, InputError  # noqa: E402
from corrtomo.segment.unet import (  # noqa: E402
    PARTICLE_CLASSES,
    UNetModel,
    UNetTrainingSettings,
    calibrate_matrix_threshold,
    masked_loss,
    matrix_threshold_from_votes,
    particle_targets,
    train_unet,
)
from corrtomo.segment.unet._train import (  # noqa: E402
    _PatchSampler,
    _SparseTargets,
    _validation_split,
)

#: A network and patch small enough for a CPU test (a step takes ~20 ms on one thread).
TINY = dict(patch_shape=16, base_channels=4, levels=2, batch_size=2, learning_rate=1e-2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def blobs(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three spheres of two minerals in a darker matrix (grey 0; minerals 1 and 2, as in CT where
    the epoxy attenuates least), a little noise, labels on three planes."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:n, :n, :n]
    truth = np.full((n, n, n), MATRIX_LABEL, np.uint8)
    truth[(z - 10) ** 2 + (y - 10) ** 2 + (x - 11) ** 2 <= 36] = 1
    truth[(z - 21) ** 2 + (y - 20) ** 2 + (x - 19) ** 2 <= 49] = 2
    truth[(z - 9) ** 2 + (y - 23) ** 2 + (x - 22) ** 2 <= 25] = 2
    grey = np.choose((truth == 1) + 2 * (truth == 2), [0.0, 1.0, 2.0]).astype(np.float32)
    grey += rng.normal(0.0, 0.05, grey.shape).astype(np.float32)
    labels = np.zeros_like(truth)
    labels[10] = truth[10]
    labels[21] = truth[21]
    labels[:, 22, :] = truth[:, 22, :]
    return grey, labels, truth


def predict_phases(model: UNetModel, grey: np.ndarray) -> np.ndarray:
    """Phase ids (0 = matrix) of a whole (small) volume, straight through the network."""
    x = (grey - model.normalisation["center"]) / model.normalisation["scale"]
    with torch.no_grad():
        phase_logits, _ = model.network(torch.from_numpy(x.astype(np.float32))[None, None])
    return np.asarray(model.class_ids)[phase_logits[0].argmax(0).numpy()]


def state(model: UNetModel) -> dict:
    return model.network.state_dict()


# --------------------------------------------------------------------------------------------
# training works
# --------------------------------------------------------------------------------------------


def test_overfits_a_small_labelled_volume():
    # The minerals differ only in their absolute grey value; the heads see the input grey value
    # beside the (instance-normalised) features, so the network tells them apart.
    grey, labels, _ = blobs()
    settings = UNetTrainingSettings(**TINY, max_steps=300, validate_every=50, validation_fraction=0.0,
                                    class_weighting="none", seed=0)
    model = train_unet(grey, labels, spacing=1.0, phase_names={1: "dark", 2: "bright"}, settings=settings)

    assert model.class_ids == (0, 1, 2)
    assert model.class_names == ("matrix", "dark", "bright")
    assert model.patch_shape == (16, 16, 16)
    assert not model.network.training
    assert next(model.network.parameters()).device.type == "cpu"
    losses = np.asarray(model.training["losses"])
    assert losses.size == 300 == model.training["steps"]
    assert losses[-20:].mean() < 0.4 * losses[:20].mean()

    labelled = labels != 0
    expected = np.where(labels == MATRIX_LABEL, 0, labels)
    predicted = predict_phases(model, grey)
    assert (predicted[labelled] == expected[labelled]).mean() >= 0.95
    for phase in (1, 2):  # each mineral, not only the matrix that fills most of the planes
        assert (predicted[labels == phase] == phase).mean() >= 0.9


def test_training_summary_and_progress():
    grey, labels, _ = blobs()
    calls = []
    settings = UNetTrainingSettings(**TINY, max_steps=6, validate_every=4, validation_patches=2, seed=3)
    model = train_unet(grey, labels, spacing=(1.0, 0.5, 0.5), phase_names={1: "a", 2: "b", 4: "talc"},
                       settings=settings, progress=lambda *a: calls.append(a))
    assert calls == [("train", k, 6) for k in range(1, 7)]
    training = model.training
    assert training["settings"] == settings.to_dict()
    assert UNetTrainingSettings.from_dict(training["settings"]) == settings
    assert training["device"] == "cpu" and training["mixed_precision"] is None
    assert [h["step"] for h in training["history"]] == [4, 6]
    assert all(h["val_loss"] is not None and 0 <= h["val_accuracy"] <= 1 for h in training["history"])
    assert training["absent_phases"] == {4: "talc"}
    counts = np.bincount(labels.ravel(), minlength=256)
    assert training["labelled_voxels"] == {0: counts[255], 1: counts[1], 2: counts[2]}
    assert 0 < sum(training["validation_voxels"].values()) < labels.astype(bool).sum() // 2
    assert sum(training["particle_voxels"].values()) + sum(training["validation_voxels"].values()) == (labels > 0).sum()
    assert set(model.normalisation) == {"center", "scale"}
    assert model.voxel_size_um == (1.0, 0.5, 0.5)


def test_calibrated_matrix_threshold_is_stored_and_reproduced():
    grey, labels, _ = blobs()
    settings = UNetTrainingSettings(**TINY, max_steps=30, validate_every=10, validation_patches=4, seed=1)
    model = train_unet(grey, labels, spacing=1.0, settings=settings)
    stored = model.training["matrix_threshold"]
    assert 0.0 < stored["value"] < 1.0 and stored["value"] == model.matrix_threshold
    assert stored["voxels"]["matrix"] > 0 and stored["voxels"]["particle"] > 0
    assert stored["balanced_accuracy"] >= stored["at_half"]
    # a saved model's threshold is found again from its labels and training settings
    assert calibrate_matrix_threshold(model, grey, labels) == stored
    # a model saved before the calibration existed thresholds at 0.5
    del model.training["matrix_threshold"]
    assert model.matrix_threshold == 0.5


def test_matrix_threshold_separates_a_shifted_head():
    # a head whose matrix probability never reaches 0.5: matrix voxels in [0.3, 0.4), particle
    # voxels in [0, 0.1); every t in (0.1, 0.3] separates them, the middle is 0.2
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.3, 0.4, 300), rng.uniform(0.0, 0.1, 100)])
    is_matrix = np.arange(400) < 300
    found = matrix_threshold_from_votes(p, is_matrix)
    assert found["value"] == pytest.approx(0.2)
    assert found["balanced_accuracy"] == 1.0 and found["at_half"] == 0.5
    assert found["voxels"] == {"matrix": 300, "particle": 100}
    # one class missing: no calibration
    assert matrix_threshold_from_votes(p[:300], is_matrix[:300])["value"] == 0.5


@hypothesis_settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=2, max_size=60))
def test_matrix_threshold_is_a_balanced_accuracy_optimum(votes):
    p = np.array([v[0] for v in votes])
    is_matrix = np.array([v[1] for v in votes])
    found = matrix_threshold_from_votes(p, is_matrix)
    if is_matrix.all() or not is_matrix.any():
        assert found["value"] == 0.5
        return

    def balanced(t):
        return 0.5 * ((p[is_matrix] >= t).mean() + (p[~is_matrix] < t).mean())

    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    assert balanced(found["value"]) == pytest.approx(found["balanced_accuracy"])
    assert found["balanced_accuracy"] == pytest.approx(max(balanced(t) for t in grid))
    assert found["at_half"] == pytest.approx(balanced(0.5))


def test_missing_library_phase_can_be_required():
    grey, labels, _ = blobs()
    settings = UNetTrainingSettings(**TINY, max_steps=1)
    with pytest.raises(InputError, match=r"no labelled voxels of phase 'talc' \(id 4\)"):
        train_unet(grey, labels, spacing=1.0, phase_names={1: "a", 2: "b", 4: "talc"}, settings=settings,
                   require_all_phases=True)


# --------------------------------------------------------------------------------------------
# the loss sees labelled voxels only
# --------------------------------------------------------------------------------------------


def _random_heads(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (2, 12, 8, 8)
    phase_logits = torch.randn(2, 4, *shape[1:], generator=generator)
    particle_logits = torch.randn(2, 3, *shape[1:], generator=generator)
    labelled = torch.rand(shape, generator=generator) < 0.05
    phase_target = torch.where(labelled, torch.randint(0, 4, shape, generator=generator), -1)
    particle_target = torch.where(labelled, torch.randint(0, 3, shape, generator=generator), -1)
    return phase_logits, particle_logits, phase_target, particle_target, labelled


def test_unlabelled_voxels_do_not_affect_the_loss():
    phase_logits, particle_logits, phase_target, particle_target, labelled = _random_heads()
    kwargs = dict(phase_weights=[0.5, 2.0, 1.0, 3.0], particle_weights=[1.0, 0.2, 4.0], dice_weight=0.5,
                  particle_weight=0.7)

    def loss_and_grads(a, b):
        a, b = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        loss = masked_loss(a, phase_target, b, particle_target, **kwargs)
        loss.backward()
        return loss.detach(), a.grad, b.grad

    loss, grad_phase, grad_particle = loss_and_grads(phase_logits, particle_logits)
    unlabelled = ~labelled[:, None]
    assert torch.all(grad_phase.masked_select(unlabelled) == 0)
    assert torch.all(grad_particle.masked_select(unlabelled) == 0)
    assert grad_phase.masked_select(~unlabelled).abs().sum() > 0

    generator = torch.Generator().manual_seed(1)
    for fill in ("random", "nan"):
        other_phase, other_particle = phase_logits.clone(), particle_logits.clone()
        for logits in (other_phase, other_particle):
            mask = unlabelled.expand_as(logits)
            if fill == "nan":
                logits[mask] = float("nan")
            else:
                logits[mask] = 100 * torch.randn(int(mask.sum()), generator=generator)
        other_loss, other_grad_phase, _ = loss_and_grads(other_phase, other_particle)
        assert torch.equal(other_loss, loss)  # bit-identical
        assert torch.equal(other_grad_phase.masked_select(~unlabelled), grad_phase.masked_select(~unlabelled))


def test_masked_loss_matches_its_formula():
    phase_logits, particle_logits, phase_target, particle_target, labelled = _random_heads(2)
    weights_phase = np.array([0.5, 2.0, 1.0, 3.0])
    weights_particle = np.array([1.0, 0.2, 4.0])

    def head(logits, target, weights, dice_weight):
        z = logits.movedim(1, -1)[labelled].double().numpy()
        t = target[labelled].numpy()
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        w = weights[t]
        ce = -(w * log_p[np.arange(t.size), t]).sum() / w.sum()
        p = np.exp(log_p)
        onehot = np.eye(z.shape[1])[t]
        present = onehot.sum(0) > 0
        dice = (2 * (p * onehot).sum(0) + 1e-5) / (p.sum(0) + onehot.sum(0) + 1e-5)
        return ce + dice_weight * (1 - dice[present].mean())

    got = masked_loss(phase_logits, phase_target, particle_logits, particle_target, phase_weights=weights_phase,
                      particle_weights=weights_particle, dice_weight=0.3, particle_weight=0.7)
    want = head(phase_logits, phase_target, weights_phase, 0.3) + 0.7 * head(
        particle_logits, particle_target, weights_particle, 0.3)
    assert float(got) == pytest.approx(want, rel=1e-5)
    nothing = torch.full_like(phase_target, -1)
    empty = masked_loss(phase_logits.requires_grad_(True), nothing, particle_logits, torch.full_like(nothing, -1))
    assert float(empty.detach()) == 0.0


# --------------------------------------------------------------------------------------------
# reproducibility
# --------------------------------------------------------------------------------------------


def test_same_seed_same_weights_and_caller_rng_untouched():
    grey, labels, _ = blobs()
    settings = UNetTrainingSettings(**TINY, max_steps=8, validate_every=4, validation_patches=2, seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = train_unet(grey, labels, spacing=1.0, settings=settings)
    assert torch.equal(torch.get_rng_state(), before)
    second = train_unet(grey, labels, spacing=1.0, settings=settings)
    assert first.training["losses"] == second.training["losses"]
    assert first.normalisation == second.normalisation
    for name, tensor in state(first).items():
        assert torch.equal(tensor, state(second)[name]), name
    other = train_unet(grey, labels, spacing=1.0, settings=UNetTrainingSettings(**{**settings.to_dict(), "seed": 8}))
    assert any(not torch.equal(tensor, state(other)[name]) for name, tensor in state(first).items())


def test_dask_input_trains_like_numpy():
    da = pytest.importorskip("dask.array")
    grey, labels, _ = blobs()
    settings = UNetTrainingSettings(**TINY, max_steps=3, validate_every=3, validation_patches=2)
    from_numpy = train_unet(grey, labels, spacing=1.0, settings=settings)
    from_dask = train_unet(da.from_array(grey, chunks=8), da.from_array(labels, chunks=8), spacing=1.0,
                           settings=settings)
    for name, tensor in state(from_numpy).items():
        assert torch.equal(tensor, state(from_dask)[name]), name


# --------------------------------------------------------------------------------------------
# validation split and early stopping
# --------------------------------------------------------------------------------------------


def test_validation_split_is_spatially_coherent():
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 400, size=(200_000, 3)).astype(np.int32)
    held = _validation_split(coords, 8, 0.15, seed=0)
    assert 0.12 < held.mean() < 0.18
    cells = np.ravel_multi_index(tuple((coords // 8).T), (50, 50, 50))
    order = np.argsort(cells, kind="stable")
    cells, split = cells[order], held[order]
    starts = np.flatnonzero(np.diff(cells)) + 1
    assert all(np.all(s == s[0]) for s in np.split(split, starts))  # one split per cell
    assert not np.array_equal(held, _validation_split(coords, 8, 0.15, seed=1))
    assert not _validation_split(coords, 8, 0.0, seed=0).any()


def test_early_stopping_returns_the_best_weights():
    grey, labels, _ = blobs()
    # an improvement must exceed 100 (never): the first validation stays the best
    settings = UNetTrainingSettings(**TINY, max_steps=200, validate_every=3, patience=2, min_delta=100.0,
                                    validation_patches=2, seed=1)
    model = train_unet(grey, labels, spacing=1.0, settings=settings)
    training = model.training
    assert training["stopped_early"] is True
    assert training["steps"] == 9 < settings.max_steps
    assert training["best_step"] == 3
    assert [h["step"] for h in training["history"]] == [3, 6, 9]
    assert training["best_val_loss"] == training["history"][0]["val_loss"]
    # the same run stopped at the best step has the returned weights
    at_best = train_unet(grey, labels, spacing=1.0,
                         settings=UNetTrainingSettings(**{**settings.to_dict(), "max_steps": 3}))
    for name, tensor in state(model).items():
        assert torch.equal(tensor, state(at_best)[name]), name


# --------------------------------------------------------------------------------------------
# targets and patches
# --------------------------------------------------------------------------------------------


def test_particle_targets_analytic():
    labels = np.zeros((3, 4, 12), np.uint8)
    labels[1, :, :5] = MATRIX_LABEL
    labels[1, :, 5:] = 3
    labels[1, 0, 11] = 0  # unlabelled stays unlabelled
    targets = particle_targets(labels, spacing=1.0, boundary_width_voxels=2)
    assert targets.dtype == np.int8
    row = np.array([0] * 5 + [2, 2] + [1] * 5, np.int8)  # matrix, boundary (d = 1, 2), core (d >= 3)
    assert_array_equal(targets[1, 1:], np.broadcast_to(row, (3, 12)))
    assert targets[1, 0, 11] == -1 and np.all(targets[[0, 2]] == -1)
    assert PARTICLE_CLASSES[2] == "boundary"

    # anisotropic voxels: a column above a matrix plane, z edge twice the finest edge
    column = np.zeros((5, 1, 1), np.uint8)
    column[0] = MATRIX_LABEL
    column[1:] = 1
    assert_array_equal(particle_targets(column, spacing=(2.0, 1.0, 1.0), boundary_width_voxels=2.0).ravel(),
                       [0, 2, 1, 1, 1])
    assert_array_equal(particle_targets(column, spacing=(2.0, 1.0, 1.0), boundary_width_voxels=4.0).ravel(),
                       [0, 2, 2, 1, 1])

    # agrees with the Euclidean distance transform of the labelled matrix
    rng = np.random.default_rng(1)
    sparse = rng.choice(np.array([0, 0, 0, 2, 7, MATRIX_LABEL], np.uint8), size=(9, 10, 11))
    spacing = (1.5, 1.0, 1.2)
    distance = ndimage.distance_transform_edt(sparse != MATRIX_LABEL, sampling=np.asarray(spacing) / 1.0)
    minerals = (sparse != 0) & (sparse != MATRIX_LABEL)
    expected = np.full(sparse.shape, -1, np.int8)
    expected[sparse == MATRIX_LABEL] = 0
    expected[minerals] = np.where(distance[minerals] <= 1.7, 2, 1)
    assert_array_equal(particle_targets(sparse, spacing=spacing, boundary_width_voxels=1.7), expected)


def test_zoomed_patch_keeps_its_centre_and_stays_registered():
    shape = (40, 40, 40)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    ramp = 3 * z + 2 * y + x  # linear: trilinear resampling reproduces it exactly
    centre = np.array([21, 17, 19])
    targets = _SparseTargets(z=np.array([centre[0]]), y=np.array([centre[1]]), x=np.array([centre[2]]),
                             phase=np.array([1], np.int16), particle=np.array([2], np.int8),
                             validation=np.array([False]))
    settings = UNetTrainingSettings(patch_shape=16, levels=2, flip_axes=(), rotate_90=False, intensity_scale=0,
                                    intensity_shift=0, noise_sigma=0, scale_range=0.3)
    sampler = _PatchSampler(ramp, targets, shape, settings, np.ones(3), center=0.0, scale=1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, phase, particle = sampler.read(centre, rng, validation=False)
        assert image.shape == phase.shape == particle.shape == (16, 16, 16)
        where = np.argwhere(phase == 1)
        assert len(where) >= 1 and np.all(particle[tuple(where.T)] == 2)
        assert np.all(phase[phase != 1] == -1)
        assert any(np.isclose(image[tuple(w)], ramp[tuple(centre)], atol=1e-3) for w in where)
    # the held-out split is masked out of training patches and vice versa
    _, phase, _ = sampler.read(centre, None, validation=True)
    assert np.all(phase == -1)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(grey=np.zeros((12, 32, 32), np.float32), labels_shape=(12, 32, 32)),
         r"patch_shape: volume \(12, 32, 32\) is smaller than patch_shape \(16, 16, 16\) along z; use a smaller"),
        (dict(labels_shape=(32, 32, 31)), r"labels: labels shape \(32, 32, 31\) differs from the volume shape"),
        (dict(only=MATRIX_LABEL), r"labels: labels hold one class only \(255 'matrix'\)"),
        (dict(only=2), r"labels: labels hold one class only \(2 'phase_2'\)"),
        (dict(no_matrix=True), r"labels: labels hold no matrix voxels \(255\)"),
        (dict(float_labels=True), r"labels: labels must be integers"),
        (dict(names={1: "a"}), r"labels: label ids \[2\] are not in the phase library"),
        (dict(settings=dict(device="cuda")), "device: CUDA was asked for but no CUDA device is available"),
        (dict(nan=True), r"image: image has NaN or infinite voxels"),
    ],
)
def test_bad_input_is_one_line(change, message):
    if "device" in change.get("settings", {}) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    grey, labels, _ = blobs()
    grey = change.get("grey", grey)
    if "labels_shape" in change:
        labels = np.zeros(change["labels_shape"], np.uint8)
        labels[0, 0, :2] = [1, MATRIX_LABEL]
    if "only" in change:
        labels = np.where(labels == change["only"], labels, 0).astype(np.uint8)
    if change.get("no_matrix"):
        labels = np.where(labels == MATRIX_LABEL, 0, labels).astype(np.uint8)
    if change.get("float_labels"):
        labels = labels.astype(np.float32)
    if change.get("nan"):
        grey = grey.copy()
        grey[5, 5, 5] = np.nan
    settings = UNetTrainingSettings(**{**TINY, "max_steps": 1, **change.get("settings", {})})
    with pytest.raises(InputError) as error:
        train_unet(grey, labels, spacing=1.0, phase_names=change.get("names"), settings=settings)
    assert _one_line(error)
    assert error.match(message)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(patch_shape=(16, 10, 16), levels=3), r"patch_shape: edges \(16, 10, 16\) must be multiples of "
                                                   r"2\*\*\(levels-1\) = 4"),
        (dict(patch_shape=(16, 16)), r"patch_shape: expected 1 or 3 edges"),
        (dict(batch_size=0), r"batch_size: must be >= 1"),
        (dict(max_steps=2.5), r"max_steps: must be an integer"),
        (dict(learning_rate=0), r"learning_rate: must be a finite number in \(0, inf\]"),
        (dict(validation_fraction=0.95), r"validation_fraction: must be a finite number in \[0, 0.9\]"),
        (dict(flip_axes=(0, 3)), r"flip_axes: must be distinct axes"),
        (dict(class_weighting="inverse"), r"class_weighting: must be 'balanced' or 'none'"),
        (dict(device="tpu"), r"device: must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (dict(boundary_width_voxels=0), r"boundary_width_voxels: must be a finite number in \(0, inf\]"),
    ],
)
def test_bad_settings_are_one_line(fields, message):
    with pytest.raises(InputError) as error:
        UNetTrainingSettings(**fields)
    assert _one_line(error)
    assert error.match(message)


def test_settings_normalise_and_round_trip():
    settings = UNetTrainingSettings(patch_shape=32, flip_axes=[2, 0], levels=3)
    assert settings.patch_shape == (32, 32, 32)
    assert settings.flip_axes == (0, 2)
    assert UNetTrainingSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(InputError, match="unknown training settings"):
        UNetTrainingSettings.from_dict({"epochs": 3})


def test_large_seed_is_kept_exactly():
    assert UNetTrainingSettings(seed=2**62 + 1).seed == 2**62 + 1
    with pytest.raises(InputError, match=r"seed: must be in \[0, "):
        UNetTrainingSettings(seed=2**64)
