"""Connected components on arrays of any shape, thin ones included (cc3d 4.1 fails on some)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from corrtomo._shared import connected_components, remove_dust

_BUDGET = {6: 1, 18: 2, 26: 3}


def _scipy_labels(mask, connectivity):
    structure = ndimage.generate_binary_structure(3, _BUDGET[connectivity])
    return ndimage.label(mask, structure=structure)


def test_plane_that_cc3d_under_counts_is_labelled():
    # four corner voxels of a 3x3 plane: cc3d 4.1 raises "maximum length exception" here
    mask = np.zeros((3, 1, 3), dtype=bool)
    mask[[0, 0, 2, 2], 0, [0, 2, 0, 2]] = True
    labels, n = connected_components(mask, 26, return_N=True)
    assert n == 4
    assert labels.shape == mask.shape and labels.dtype == np.uint32
    np.testing.assert_array_equal(labels[mask], [1, 2, 3, 4])


def test_bool_plane_that_cc3d_mislabels_keeps_its_background():
    # cc3d 4.1's 2D 8-connected path puts the background voxel (1, 0) into a component
    # when this plane is bool (not when it is uint8)
    plane = np.array([[0, 0, 1, 0, 1], [0, 0, 0, 0, 1], [0, 0, 1, 0, 1]], dtype=bool)
    labels, n = connected_components(plane[None], 26, return_N=True)
    assert n == 3
    np.testing.assert_array_equal(labels[0], [[0, 0, 1, 0, 2], [0, 0, 0, 0, 2], [0, 0, 3, 0, 2]])


@pytest.mark.parametrize("shape", [(1, 1, 6), (6, 1, 1), (1, 5, 1)])
def test_line_of_alternating_voxels_has_one_label_per_voxel(shape):
    mask = (np.arange(int(np.prod(shape))) % 2 == 0).reshape(shape)
    labels, n = connected_components(mask, 26, return_N=True)
    assert n == mask.sum()
    np.testing.assert_array_equal(labels[mask], np.arange(1, n + 1))


def test_equal_values_join_and_different_values_do_not():
    image = np.array([[[1, 1, 2], [0, 2, 2]]], dtype=np.uint32)  # a (1, 2, 3) plane
    labels, n = connected_components(image, 26, return_N=True)
    assert n == 2
    np.testing.assert_array_equal(labels, [[[1, 1, 2], [0, 2, 2]]])


def test_connectivity_other_than_6_18_26_is_refused():
    with pytest.raises(ValueError, match="connectivity"):
        connected_components(np.ones((2, 2, 2), bool), 8)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(*(st.integers(1, 6),) * 3),
    density=st.floats(0.1, 0.9),
    connectivity=st.sampled_from([6, 18, 26]),
)
def test_labels_equal_scipy_for_every_shape(seed, shape, density, connectivity):
    mask = np.random.default_rng(seed).random(shape) < density
    labels, n = connected_components(mask, connectivity, return_N=True)
    expected, n_expected = _scipy_labels(mask, connectivity)
    assert n == n_expected
    np.testing.assert_array_equal(labels, expected)  # both number in raster order


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(*(st.integers(1, 6),) * 3),
    min_voxels=st.integers(1, 6),
)
def test_remove_dust_keeps_exactly_the_components_of_min_voxels(seed, shape, min_voxels):
    mask = np.random.default_rng(seed).random(shape) < 0.4
    expected_labels, n = _scipy_labels(mask, 26)
    sizes = np.bincount(expected_labels.ravel(), minlength=n + 1)
    expected = (sizes >= min_voxels)[expected_labels] & mask
    kept = remove_dust(mask.copy(), min_voxels, connectivity=26)
    np.testing.assert_array_equal(kept, expected)
