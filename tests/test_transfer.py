"""Label transfer: a mineral map on its pose -> sparse 3D labels; merging; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from _twins import twin
from corrtomo._shared import MATRIX_LABEL, InputError, PlanePose
from corrtomo.register._transfer import (
    SparseLabels,
    boundary_mask,
    merge_sparse_labels,
    transfer_labels,
)
from corrtomo.sem import classify_eds


def agreement(labels: SparseLabels, phases: np.ndarray) -> tuple[float, float]:
    truth = phases[tuple(labels.indices.T)]
    mineral = labels.values != MATRIX_LABEL
    return (
        float((truth[mineral] == labels.values[mineral]).mean()),
        float((truth[~mineral] == 0).mean()),
    )


@pytest.mark.parametrize("source", ["eds", "truth"])
def test_transfer_at_truth_pose_agrees_with_truth_phases(source):
    sample = twin("talc-saxolite", 1)
    section = sample.sections[0]
    if source == "eds":
        mineral_map = classify_eds(section.eds, library=sample.library).phase_ids
    else:
        mineral_map = np.where(section.mineral_map > 0, section.mineral_map, MATRIX_LABEL)
        mineral_map = np.where(section.inside, mineral_map, 0).astype(np.uint8)
    labels = transfer_labels(mineral_map, section.pose, sample.phases.shape)
    mineral_agreement, matrix_agreement = agreement(labels, sample.phases)
    report = labels.report(sample.library)
    print(f"\n{source}: mineral agreement {mineral_agreement:.4f}, matrix {matrix_agreement:.4f}\n{report}")
    assert mineral_agreement >= 0.99
    assert matrix_agreement >= 0.99
    assert set(report["phase"]) >= {"matrix", *[n for n in sample.library.names if n in set(report["phase"])]}
    assert (labels.values != MATRIX_LABEL).sum() > 500
    # every labelled voxel lies within half a voxel of the plane
    distance = np.abs((labels.indices - section.pose.origin) @ section.pose.normal)
    assert distance.max() <= 0.5 + 1e-9
    # the dense volume holds the same labels
    dense = labels.to_dense()
    assert dense.shape == sample.phases.shape and np.count_nonzero(dense) == len(labels)


def test_merge_keeps_agreement_and_drops_conflicts():
    shape = (4, 4, 4)
    a = SparseLabels(np.array([[0, 0, 0], [1, 1, 1]]), np.array([1, 2], np.uint8), shape,
                     np.array([3, 2]), np.array([1.0, 1.0], np.float32))
    b = SparseLabels(np.array([[1, 1, 1], [2, 2, 2], [0, 0, 0]]), np.array([3, 255, 1], np.uint8), shape,
                     np.array([1, 4, 1]), np.array([0.5, 1.0, 1.0], np.float32))
    merged = merge_sparse_labels([a, b])
    assert merged.info["conflicts"] == 1
    np.testing.assert_array_equal(merged.indices, [[0, 0, 0], [2, 2, 2]])
    np.testing.assert_array_equal(merged.values, [1, 255])
    np.testing.assert_array_equal(merged.votes, [4, 4])
    assert merged.counts == {1: 1, 255: 1}
    with pytest.raises(InputError):
        merge_sparse_labels([a, SparseLabels(a.indices, a.values, (5, 5, 5), a.votes, a.agreement)])


def test_axis_plane_boundary_margin_and_zarr_output(tmp_path):
    import zarr

    # plane z = 2, pixel half a voxel: 2 x 2 pixels per voxel; left half class 1, right half 2
    section = np.ones((16, 16), np.uint8)
    section[:, 8:] = 2
    pose = PlanePose(origin=[2, 0, 0], u=[0, 0, 0.5], v=[0, 0.5, 0])
    labels = transfer_labels(section, pose, (5, 8, 8))
    dense = labels.to_dense()
    assert np.all(dense[[0, 1, 3, 4]] == 0)
    # boundary between x = 3.5 and 4: margin of one voxel (2 px) drops voxels x = 3 and 4
    assert np.all(dense[2, :, :3] == 1) and np.all(dense[2, :, 5:] == 2)
    assert np.all(dense[2, :, 3:5] == 0)
    no_margin = transfer_labels(section, pose, (5, 8, 8), boundary_margin_px=0).to_dense()
    assert np.all(no_margin[2, :, :4] == 1) and np.all(no_margin[2, :, 4:] == 2)
    near = boundary_mask(section, 2.0)
    assert near[:, 6:10].all() and not near[:, :6].any() and not near[:, 10:].any()
    out = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=(5, 8, 8), chunks=(2, 4, 4), dtype="u1")
    labels.to_dense(out=out)
    np.testing.assert_array_equal(out[:], dense)


def test_bad_input():
    pose = PlanePose(origin=[2, 0, 0], u=[0, 0, 0.5], v=[0, 0.5, 0])
    with pytest.raises(InputError, match="2D section"):
        transfer_labels(np.ones((3, 8, 8), np.uint8), pose, (5, 8, 8))
    with pytest.raises(InputError, match="integer"):
        transfer_labels(np.ones((8, 8)), pose, (5, 8, 8))
    far = PlanePose(origin=[50, 50, 50], u=[0, 0, 0.5], v=[0, 0.5, 0])
    with pytest.raises(InputError, match="does not reach"):
        transfer_labels(np.ones((8, 8), np.uint8), far, (5, 8, 8))
    with pytest.raises(InputError, match="volume shape"):
        transfer_labels(np.ones((8, 8), np.uint8), pose, (5, 8))
