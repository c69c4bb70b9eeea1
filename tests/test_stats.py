"""Representativeness of sub-volumes (Fig. 12): per-piece size counts, mean, SE and t intervals."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.stats import interval_statistics, piece_grid, piece_size_counts, representativeness

T_975_DF3 = 3.182446305284263  # Student t quantile 0.975 with 3 degrees of freedom (tables)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    """A (4, 4, 16) volume = four 4x4x4 pieces along x with known particles (voxel size 1 um).

    Small particles are single voxels (ESD 1.24 um), large ones 2x2x2 cubes (ESD 2.48 um).
    Piece 0: 3 small + 1 large; piece 1: 1 small + 1 large (a cube straddling x = 3|4 with its
    centroid at x = 3.5, i.e. at the start of piece 1); piece 2: 2 small; piece 3: 2 small + 2 large.
    """
    v = np.zeros((4, 4, 16), dtype=np.uint16)
    label = iter(range(1, 100))
    for z, y, x in [
        (0, 0, 0),
        (0, 0, 2),
        (2, 0, 0),
        (0, 0, 5),
        (0, 0, 8),
        (3, 3, 11),
        (0, 0, 12),
        (0, 3, 15),
    ]:
        v[z, y, x] = next(label)
    for z, y, x in [(1, 2, 1), (2, 0, 3), (0, 1, 13), (2, 2, 13)]:
        v[z : z + 2, y : y + 2, x : x + 2] = next(label)
    return v


def test_piece_counts_by_centroid(volume):
    counts, edges = piece_size_counts(volume, spacing=1.0, piece_size_um=4.0, esd_bins_um=[1, 2, 3])
    assert_allclose(edges, [1, 2, 3])
    assert counts.tolist() == [[3, 1], [1, 1], [2, 0], [2, 2]]
    assert counts.sum() == 12  # every particle once


def test_representativeness_mean_se_and_t_interval_by_hand(volume):
    table = representativeness(volume, spacing=1.0, piece_size_um=(4, 4, 4), esd_bins_um=[1, 2, 3])
    assert table["n_pieces"].tolist() == [4, 4]
    assert table["total"].tolist() == [8, 4]
    # small: counts 3, 1, 2, 2; large: 1, 1, 0, 2
    assert_allclose(table["mean"], [2.0, 1.0])
    s = np.sqrt(2.0 / 3.0)
    assert_allclose(table["std"], [s, s])
    assert_allclose(table["sem"], [s / 2, s / 2])
    assert_allclose(table["ci_low"], [2.0 - T_975_DF3 * s / 2, 1.0 - T_975_DF3 * s / 2])
    assert_allclose(table["ci_high"], [2.0 + T_975_DF3 * s / 2, 1.0 + T_975_DF3 * s / 2])
    assert_allclose(table["esd_center_um"], [np.sqrt(2), np.sqrt(6)])


def test_relative_frequencies(volume):
    table = representativeness(
        volume, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], frequency="relative"
    )
    assert_allclose(table["mean"], [(0.75 + 0.5 + 1.0 + 0.5) / 4, (0.25 + 0.5 + 0.0 + 0.5) / 4])


def test_cut_assignment_measures_fragments(volume):
    counts, _ = piece_size_counts(
        volume, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], assign="cut"
    )
    # the straddling cube becomes two 1x2x2 fragments (ESD 1.97 um), one in each piece
    assert counts.tolist() == [[4, 1], [2, 0], [2, 0], [2, 2]]


def test_resolution_cut_off_drops_small_particles(volume):
    table = representativeness(
        volume, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], resolution_um=0.7
    )
    assert table["total"].tolist() == [0, 4]
    default = representativeness(volume, spacing=1.0, piece_size_um=4, resolution_um=0.7)
    assert default["esd_min_um"].iloc[0] >= 1.4
    assert default["total"].sum() == 4


def test_border_particles_can_be_excluded(volume):
    counts, _ = piece_size_counts(
        volume, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], exclude_border=True
    )
    assert counts.sum() == 0  # every particle of this thin volume touches its border
    padded = np.pad(volume, ((1, 1), (1, 1), (0, 0)))  # now only x = 0 and x = 15 are borders
    counts, _ = piece_size_counts(
        padded, spacing=1.0, piece_size_um=(6, 6, 4), esd_bins_um=[1, 2, 3], exclude_border=True
    )
    assert counts.tolist() == [[1, 1], [1, 1], [2, 0], [1, 2]]


def test_piece_grid_with_anisotropic_voxels():
    grid = piece_grid((10, 20, 30), spacing=(1.0, 0.5, 2.0), piece_size_um=(5, 5, 20))
    assert grid.tolist() == [[2, 2, 3], [5, 10, 10]]


def test_interval_statistics_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    values = rng.poisson(5.0, size=(60, 3))
    table = interval_statistics(values, confidence=0.9)
    for j in range(3):
        low, high = stats.t.interval(
            0.9, 59, loc=values[:, j].mean(), scale=stats.sem(values[:, j])
        )
        assert table["ci_low"][j] == pytest.approx(low)
        assert table["ci_high"][j] == pytest.approx(high)
        assert table["ci_low"][j] <= table["mean"][j] <= table["ci_high"][j]


def test_bad_input(volume):
    with pytest.raises(InputError, match="at least 2"):
        representativeness(volume, spacing=1.0, piece_size_um=16)
    with pytest.raises(InputError, match="smaller than a voxel"):
        representativeness(volume, spacing=1.0, piece_size_um=0.1)
    with pytest.raises(InputError, match="integers"):
        representativeness(volume.astype(float), spacing=1.0, piece_size_um=4)
    with pytest.raises(InputError, match="positive"):
        representativeness(volume, spacing=0.0, piece_size_um=4)
    with pytest.raises(InputError, match="assign"):
        representativeness(volume, spacing=1.0, piece_size_um=4, assign="nearest")


def test_sparse_labels_change_nothing(volume):
    sparse = volume.astype(np.uint64) * (2**40)
    for assign in ("centroid", "cut"):
        expected, _ = piece_size_counts(
            volume, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], assign=assign
        )
        counts, _ = piece_size_counts(
            sparse, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 2, 3], assign=assign
        )
        assert counts.tolist() == expected.tolist()
