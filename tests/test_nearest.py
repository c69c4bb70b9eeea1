"""nearest_within: the nearest seed voxel within a reach, against scipy's exact feature transform."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from corrtomo.segment._nearest import ball_offsets, nearest_within


def test_ball_offsets_count_and_order():
    # the 6-, 18- and 26-neighbourhoods plus the centre
    assert [len(ball_offsets(r)[0]) for r in (0.0, 1.0, np.sqrt(2), np.sqrt(3))] == [1, 7, 19, 27]
    offsets, lengths = ball_offsets(3.0, sampling=(2.0, 1.0, 1.0))
    assert np.all(np.diff(lengths) >= 0) and lengths[-1] <= 3.0
    assert np.abs(offsets[:, 0]).max() == 1  # 2 um steps along z: one step within 3 um
    np.testing.assert_allclose(lengths, np.sqrt(((offsets * [2.0, 1.0, 1.0]) ** 2).sum(axis=1)))
    with pytest.raises(ValueError, match="reach"):
        ball_offsets(-1.0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), fill=st.floats(0.02, 0.6), reach=st.floats(0.0, 4.0),
       anisotropic=st.booleans())
def test_distances_equal_scipy_feature_transform(seed, fill, reach, anisotropic):
    rng = np.random.default_rng(seed)
    seeds = rng.random((14, 15, 16)) < fill
    queries = rng.random(seeds.shape) < 0.5
    sampling = (1.5, 1.0, 0.8) if anisotropic else None
    where, nearest, distance = nearest_within(seeds, queries, reach=reach, sampling=sampling)
    if not seeds.any():
        assert where[0].size == 0
        return
    truth = ndimage.distance_transform_edt(~seeds, sampling=sampling)
    expected = queries & (truth <= reach)
    found = np.zeros_like(queries)
    found[where] = True
    np.testing.assert_array_equal(found, expected)  # exactly the voxels with a seed within reach
    np.testing.assert_allclose(distance, truth[where], rtol=1e-12)  # at the exact nearest distance
    assert seeds[nearest].all()
    step = np.stack(where, axis=1) - np.stack(nearest, axis=1)
    np.testing.assert_allclose(np.sqrt(((step * np.asarray(sampling or 1.0)) ** 2).sum(axis=1)), distance)


def test_a_block_with_a_halo_of_the_reach_chooses_the_same_voxels():
    # ties between equidistant seeds are broken by the offsets' order, the same everywhere
    rng = np.random.default_rng(1)
    seeds = rng.random((30, 30, 30)) < 0.05
    queries = ~seeds
    reach = 2.5
    whole = np.full((30, 30, 30, 3), -1)
    where, nearest, _ = nearest_within(seeds, queries, reach=reach)
    whole[where] = np.stack(nearest, axis=1)
    box = (slice(7, 25), slice(4, 22), slice(10, 30))  # core 10..22 x 7..19 x 13..27, halo 3
    part = np.full((18, 18, 20, 3), -1)
    where, nearest, _ = nearest_within(seeds[box], queries[box], reach=reach)
    part[where] = np.stack(nearest, axis=1) + np.array([7, 4, 10])
    core = (slice(10, 22), slice(7, 19), slice(13, 27))
    inner = (slice(3, 15), slice(3, 15), slice(3, 17))
    np.testing.assert_array_equal(part[inner], whole[core])
    ties = 0  # the test means something only if some voxels had equidistant seeds
    truth_distance, _ = ndimage.distance_transform_edt(~seeds, return_indices=True)
    for z, y, x in zip(*np.nonzero(queries & (truth_distance <= reach)), strict=True):
        lo = np.maximum([z - 3, y - 3, x - 3], 0)
        window = seeds[lo[0]:z + 4, lo[1]:y + 4, lo[2]:x + 4]
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.nonzero(window), (z - lo[0], y - lo[1], x - lo[2]),
                                                      strict=True)))
        ties += int(np.sum(np.isclose(d, d.min())) > 1)
    assert ties > 100
