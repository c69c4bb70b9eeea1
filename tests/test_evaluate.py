"""Evaluation scores on tiny hand-made label arrays with exact answers; the block-wise
(``*_chunked``) scores equal the in-memory ones on random ball volumes."""

import math

import numpy as np
import pandas as pd
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.evaluate import (
    confusion_matrix,
    confusion_matrix_chunked,
    esd_wasserstein,
    match_instances,
    match_instances_chunked,
    phase_iou,
    phase_iou_chunked,
    phase_iou_from_confusion,
)


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


# --------------------------------------------------------------------------- block-wise scores
SHAPE = (40, 44, 36)  # several 16^3 blocks in every direction, partial blocks at the high ends
CHUNKS = [(16, 16, 16), (7, 13, 5), (40, 44, 36)]


def _balls(shape, n, seed):
    """`n` random overlapping balls (radius 4-9 voxels) labelled 1..n, later ones on top."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, sparse=True)
    labels = np.zeros(shape, np.uint32)
    for label in range(1, n + 1):  # a handful of test balls
        c = rng.uniform(0, shape)
        r = rng.uniform(4, 9)
        labels[(z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r] = label
    return labels


@pytest.fixture(scope="module")
def volumes():
    """Truth balls and a prediction that relabels them (non-sequential ids), merges some pairs,
    splits some along a plane, erodes noise away and adds false objects; phases likewise."""
    truth = _balls(SHAPE, 30, seed=1)
    rng = np.random.default_rng(2)
    relabel = np.concatenate([[0], rng.permutation(np.arange(1, 31)) * 7 + 1000]).astype(np.uint32)
    relabel[[3, 5, 9]] = relabel[[4, 6, 10]]  # merges: 3 -> 4's id, 5 -> 6's, 9 -> 10's
    predicted = relabel[truth]
    split = np.isin(truth, [1, 2, 8]) & (np.indices(SHAPE)[2] % 36 >= 18)
    predicted[split] += 50_000  # splits: one half of balls 1, 2 and 8 gets a new id
    predicted[rng.random(SHAPE) < 0.05] = 0
    predicted[_balls(SHAPE, 3, seed=9) > 0] = 77  # false objects
    phases = (truth % 3 + (truth > 0)).astype(np.uint8)  # 0 matrix, 1..3 phases
    found = phases.copy()
    noise = rng.random(SHAPE) < 0.1
    found[noise] = rng.integers(0, 5, int(noise.sum())).astype(np.uint8)  # phase 4: predicted only
    return truth, predicted, phases, found


def _zarr(tmp_path, name, data, chunks):
    array = zarr.create_array(store=str(tmp_path / f"{name}.zarr"), shape=data.shape, chunks=chunks,
                              dtype=data.dtype)
    array[...] = data
    return array


def _same_match(got, expected):
    """Every score equal (NaN == NaN) and the same pairs table."""
    a, b = got.summary(), expected.summary()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key])), key
    pd.testing.assert_frame_equal(got.pairs, expected.pairs, check_exact=True)


@pytest.mark.parametrize("chunks", CHUNKS)
def test_chunked_phase_iou_equals_in_memory(volumes, chunks, tmp_path):
    _, _, phases, found = volumes
    expected = phase_iou(phases, found)
    assert set(expected) == {1, 2, 3, 4}
    assert phase_iou_chunked(phases, found, chunks=chunks) == expected  # numpy, bit for bit
    zt, zp = _zarr(tmp_path, "t", phases, chunks), _zarr(tmp_path, "p", found, (16, 16, 16))
    assert phase_iou_chunked(zt, zp) == expected  # zarr, the truth's chunks by default
    assert phase_iou_chunked(zt, zp, chunks=chunks) == expected
    ids = [1, 3, 9]
    got = phase_iou_chunked(zt, zp, chunks=chunks, phase_ids=ids)
    reference = phase_iou(phases, found, phase_ids=ids)
    assert got[1] == reference[1] and got[3] == reference[3] and math.isnan(got[9]) and math.isnan(reference[9])
    mask = np.indices(SHAPE)[0] < 21
    assert phase_iou_chunked(zt, zp, mask=_zarr(tmp_path, "m", mask, (8, 8, 8)), chunks=chunks) == \
        phase_iou(phases, found, mask=mask)
    frame = confusion_matrix_chunked(zt, zp, chunks=chunks)
    pd.testing.assert_frame_equal(frame, confusion_matrix(phases, found), check_exact=True)
    pd.testing.assert_frame_equal(confusion_matrix_chunked(zt, zp, [3, 1, 6], chunks=chunks),
                                  confusion_matrix(phases, found, [3, 1, 6]), check_exact=True)
    assert phase_iou_from_confusion(frame) == expected
    # the row and column sums are the phase histograms of truth and prediction
    assert frame.sum(axis=1).tolist() == np.bincount(phases.ravel(), minlength=5).tolist()
    assert frame.sum(axis=0).tolist() == np.bincount(found.ravel()).tolist()


@pytest.mark.parametrize("chunks", CHUNKS)
def test_chunked_match_equals_in_memory(volumes, chunks, tmp_path):
    truth, predicted, _, _ = volumes
    expected = match_instances(truth, predicted)
    # the volumes exercise every rule: splits, merges, misses and false objects
    assert expected.n_split >= 1 and expected.n_merged >= 1 and 0 < expected.n_matched < expected.n_true
    assert expected.n_predicted > expected.n_matched
    _same_match(match_instances_chunked(truth, predicted, chunks=chunks), expected)
    zt, zp = _zarr(tmp_path, "t", truth, chunks), _zarr(tmp_path, "p", predicted, (16, 16, 16))
    _same_match(match_instances_chunked(zt, zp), expected)  # the truth's chunks
    _same_match(match_instances_chunked(zt, zp, chunks=chunks), expected)
    strict = match_instances(truth, predicted, iou_threshold=0.7, share=0.6)
    _same_match(match_instances_chunked(zt, zp, chunks=chunks, iou_threshold=0.7, share=0.6), strict)


def test_chunked_scores_of_dask_arrays(volumes):
    da = pytest.importorskip("dask.array")
    truth, predicted, phases, found = volumes
    _same_match(match_instances_chunked(da.from_array(truth, chunks=(9, 20, 17)),
                                        da.from_array(predicted, chunks=16)), match_instances(truth, predicted))
    assert phase_iou_chunked(da.from_array(phases, chunks=(11, 30, 7)), found) == phase_iou(phases, found)


def test_chunked_many_blocks_fold_the_pair_tables(volumes):
    truth, predicted, _, _ = volumes
    # 4 x 4 x 4 blocks: more than _MERGE_EVERY, so partial tables are folded before the end
    _same_match(match_instances_chunked(truth, predicted, chunks=(10, 11, 9)), match_instances(truth, predicted))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(*(st.integers(1, 10),) * 3),
    chunks=st.tuples(*(st.integers(1, 6),) * 3),
    n_true=st.integers(0, 6),
    n_predicted=st.integers(0, 6),
    threshold=st.sampled_from([0.3, 0.5, 0.8]),
)
def test_chunked_scores_property(seed, shape, chunks, n_true, n_predicted, threshold):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_true + 1, shape).astype(np.uint16)
    # a prediction correlated with the truth (so that matches happen), with noise
    predicted = np.where(rng.random(shape) < 0.7, truth % (n_predicted + 1), rng.integers(0, n_predicted + 1, shape))
    predicted = predicted.astype(np.int32)
    _same_match(match_instances_chunked(truth, predicted, chunks=chunks, iou_threshold=threshold),
                match_instances(truth, predicted, iou_threshold=threshold))
    got = phase_iou_chunked(truth, predicted, chunks=chunks)
    expected = phase_iou(truth, predicted)
    assert got == expected
    pd.testing.assert_frame_equal(confusion_matrix_chunked(truth, predicted, chunks=chunks),
                                  confusion_matrix(truth, predicted), check_exact=True)


def test_chunked_bad_input(tmp_path):
    a = np.zeros((4, 5, 6), np.uint8)
    with pytest.raises(InputError, match="differs from the truth"):
        match_instances_chunked(a, np.zeros((4, 5, 7), np.uint8), chunks=(2, 2, 2))
    with pytest.raises(InputError, match="differs from the truth"):
        phase_iou_chunked(_zarr(tmp_path, "a", a, (2, 2, 2)), np.zeros((4, 6, 6), np.uint8))
    with pytest.raises(InputError, match="differs from the truth"):
        confusion_matrix_chunked(a, a, mask=np.ones((4, 5), bool))
    with pytest.raises(InputError, match="integers"):
        match_instances_chunked(a, a.astype(np.float32))
    with pytest.raises(InputError, match=">= 0"):
        phase_iou_chunked(a, np.full(a.shape, -1, np.int16), chunks=(2, 2, 2))
    with pytest.raises(InputError, match="block sizes"):
        match_instances_chunked(a, a, chunks=(2, 0, 2))
    with pytest.raises(InputError, match="block sizes"):
        phase_iou_chunked(a, a, chunks=(2, 2))
    with pytest.raises(InputError, match="must lie"):
        match_instances_chunked(a, a, iou_threshold=0)
    with pytest.raises(InputError, match="same ids"):
        phase_iou_from_confusion(pd.DataFrame([[1, 2]], index=[1], columns=[1, 2]))
