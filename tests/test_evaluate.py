"""Evaluation scores on tiny hand-made label arrays with exact answers."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.evaluate import confusion_matrix, esd_wasserstein, match_instances, phase_iou


def test_phase_iou_exact():
    truth = np.array([[0, 1, 1, 2], [2, 2, 3, 3]])
    predicted = np.array([[1, 1, 2, 2], [2, 2, 3, 0]])
    iou = phase_iou(truth, predicted)
    # phase 1: overlap 1, union 3; phase 2: overlap 3, union 4; phase 3: 1 / 2
    assert iou == {1: pytest.approx(1 / 3), 2: pytest.approx(3 / 4), 3: pytest.approx(1 / 2)}


def test_phase_iou_mask_and_absent_phase():
    truth = np.array([1, 1, 2, 2])
    predicted = np.array([1, 2, 2, 2])
    iou = phase_iou(truth, predicted, mask=np.array([True, False, True, True]), phase_ids=[1, 2, 7])
    assert iou[1] == 1.0 and iou[2] == 1.0
    assert np.isnan(iou[7])


def test_confusion_matrix_exact():
    truth = np.array([0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 2, 2, 2, 1])
    frame = confusion_matrix(truth, predicted)
    assert frame.index.tolist() == [0, 1, 2]
    assert frame.to_numpy().tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 2]]
    sub = confusion_matrix(truth, predicted, labels=[2, 1])
    assert sub.loc[2, 1] == 1 and sub.loc[1, 2] == 1 and sub.loc[2, 2] == 2


def test_match_perfect_and_permutation_invariant():
    rng = np.random.default_rng(3)
    truth = np.zeros((6, 10, 10), np.uint32)
    truth[:, :5, :5], truth[:, :5, 5:], truth[:, 5:, :] = 4, 9, 100
    permuted = np.array([0, 7, 3, 1], np.uint32)[np.searchsorted([0, 4, 9, 100], truth)]
    m = match_instances(truth, permuted)
    assert (m.f1, m.precision, m.recall, m.n_matched, m.n_split, m.n_merged) == (1.0, 1.0, 1.0, 3, 0, 0)
    assert_allclose(m.mean_matched_iou, 1.0)
    noisy = truth.copy()
    noisy[rng.random(truth.shape) < 0.1] = 0
    a = match_instances(truth, noisy)
    b = match_instances(permuted, noisy)
    assert (a.f1, a.n_matched) == (b.f1, b.n_matched)
    assert_allclose(a.mean_matched_iou, b.mean_matched_iou)


def test_split_and_merge_counts():
    truth = np.array([[1, 1, 1, 1, 2, 2, 3, 3, 0, 5, 5, 5, 5]])
    predicted = np.array([[1, 1, 2, 2, 3, 3, 3, 3, 0, 4, 4, 4, 4]])
    m = match_instances(truth, predicted)
    # truth 1 is split into predictions 1 and 2 (each half of truth 1 -> IoU 0.5: one matches);
    # prediction 3 merges truths 2 and 3 (IoU 0.5 with each: one matches); 5 <-> 4 perfect.
    assert m.n_true == 4 and m.n_predicted == 4
    assert m.n_split == 1
    assert m.n_merged == 1 and m.n_true_merged == 2
    assert m.n_matched == 3  # one-to-one even at IoU exactly 0.5
    assert m.f1 == pytest.approx(2 * 3 / 8)
    strict = match_instances(truth, predicted, iou_threshold=0.6)
    assert strict.n_matched == 1 and strict.f1 == pytest.approx(2 / 8)
    assert m.pairs["matched"].sum() == 3


def test_empty_and_errors():
    empty = np.zeros((3, 3), np.uint8)
    m = match_instances(empty, empty)
    assert m.f1 == 1.0 and m.n_true == 0
    with pytest.raises(InputError):
        match_instances(empty, np.zeros((3, 4), np.uint8))
    with pytest.raises(InputError):
        match_instances(empty, empty.astype(float))
    with pytest.raises(InputError):
        phase_iou(empty, np.zeros((2, 3), np.uint8))


def test_esd_wasserstein_exact():
    truth = np.zeros((4, 4, 20), np.uint32)
    truth[:2, :2, :2] = 1  # 8 voxels
    truth[:, :, 10:11] = 2  # 16 voxels
    assert esd_wasserstein(truth, truth, spacing=0.5) == 0.0
    shifted = np.zeros_like(truth)
    shifted[:2, :2, :2] = 1
    esd = lambda n: np.cbrt(6 * n * 0.125 / np.pi)  # noqa: E731
    # one particle of 8 voxels instead of one of 8 and one of 16: W1 = (esd16 - esd8) / 2
    assert esd_wasserstein(truth, shifted, spacing=0.5) == pytest.approx((esd(16) - esd(8)) / 2)
