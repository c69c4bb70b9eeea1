"""Representativeness of sub-volumes (Fig. 12): per-piece size counts, mean, SE and t intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from corrtomo._shared import InputError
from corrtomo.stats import (
    interval_statistics,
    piece_grid,
    piece_size_counts,
    representativeness,
    representativeness_from_table,
)

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


# ------------------------------------------------------------------------------------------
# from the particle table (no volume read): equal to the volume path with centroid assignment
# ------------------------------------------------------------------------------------------

SPACING = (0.7, 1.3, 0.9)  # not powers of two: the table's centroids are rounded in um
PIECE_UM = (5.6, 15.6, 9.0)  # 8 x 12 x 10 voxels: 5 x 3 x 4 = 60 pieces of a (40, 36, 40) volume


@pytest.fixture(scope="module")
def population() -> np.ndarray:
    """Boxes of 1 to 7 voxels a side at random places (some on the faces, some overlapping, so
    labels can be split), plus cubes whose centroid lies exactly on a piece face."""
    rng = np.random.default_rng(7)
    v = np.zeros((40, 36, 40), dtype=np.uint32)
    label = 0
    for _ in range(90):  # building the phantom, not measuring
        label += 1
        size = rng.integers(1, 8, size=3)
        corner = rng.integers(-2, np.array(v.shape) - size + 2)
        lo = np.clip(corner, 0, None)
        hi = np.clip(corner + size, None, v.shape)
        v[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = label
    for z, y, x in [(31, 28, 33), (7, 11, 9), (15, 23, 29)]:  # 2-voxel cubes: c + 1/2 on faces
        label += 1
        v[z : z + 2, y : y + 2, x : x + 2] = label
    return v


def _from_table(volume, **options):
    from corrtomo.measure import particle_table

    table = particle_table(volume, spacing=SPACING, surface=False)
    return representativeness_from_table(
        table, volume_shape=volume.shape, spacing=SPACING, piece_size_um=PIECE_UM, **options
    )


@pytest.mark.parametrize("frequency", ["count", "relative"])
@pytest.mark.parametrize("exclude_border", [False, True])
def test_table_path_equals_volume_path(population, frequency, exclude_border):
    options = {"frequency": frequency, "exclude_border": exclude_border}
    for bins in ([0.5, 1.5, 3.0, 6.0, 12.0], None):
        expected = representativeness(
            population, spacing=SPACING, piece_size_um=PIECE_UM, esd_bins_um=bins, **options
        )
        found = _from_table(population, esd_bins_um=bins, **options)
        pd.testing.assert_frame_equal(found, expected, check_exact=True)
    assert expected["total"].sum() > 20


def test_table_path_with_resolution_cut_off_and_confidence(population):
    options = {"resolution_um": 1.2, "confidence": 0.9}
    expected = representativeness(population, spacing=SPACING, piece_size_um=PIECE_UM, **options)
    pd.testing.assert_frame_equal(_from_table(population, **options), expected, check_exact=True)
    assert expected["esd_min_um"].iloc[0] >= 2.4


def test_table_path_centroids_on_piece_faces(population):
    """A centroid with ``c + 1/2`` on a piece face belongs to the upper piece on both paths; a
    centroid taken as ``c_um / spacing`` would miss it by rounding for this spacing."""
    from corrtomo.measure import particle_table

    table = particle_table(population, spacing=SPACING, surface=False)
    c = table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy() / np.array(SPACING)
    face = np.rint((c + 0.5) / np.array([8, 12, 10])) * np.array([8, 12, 10])
    on_face = np.isclose(c + 0.5, face, rtol=0, atol=1e-9) & (face > 0)
    assert on_face.sum() >= 3
    assert np.any(on_face & (c + 0.5 < face))  # the naive centroid falls in the lower piece


def test_table_path_by_hand(volume):
    """The docstring example and the hand-counted fixture: same numbers from the table."""
    from corrtomo.measure import particle_table

    two = np.zeros((4, 4, 8), dtype=np.uint32)
    two[1:3, 1:3, 1:3] = 1
    two[1:3, 1:3, 5:7] = 2
    result = representativeness_from_table(
        particle_table(two), volume_shape=two.shape, spacing=1.0, piece_size_um=4, esd_bins_um=[1, 4]
    )
    assert result[["n_pieces", "mean", "sem", "total"]].values.tolist() == [[2, 1.0, 0.0, 2]]
    table = representativeness_from_table(
        particle_table(volume), volume_shape=volume.shape, spacing=1.0, piece_size_um=4,
        esd_bins_um=[1, 2, 3],
    )
    assert table["total"].tolist() == [8, 4]  # the straddling cube is in piece 1
    assert_allclose(table["mean"], [2.0, 1.0])
    assert_allclose(table["sem"], [np.sqrt(2.0 / 3.0) / 2] * 2)


def test_table_path_bad_input(volume):
    from corrtomo.measure import particle_table

    table = particle_table(volume)
    common = {"volume_shape": volume.shape, "spacing": 1.0, "piece_size_um": 4}
    with pytest.raises(InputError, match="centroid_x_um"):
        representativeness_from_table(table.drop(columns="centroid_x_um"), **common)
    with pytest.raises(InputError, match="touches_border"):
        representativeness_from_table(
            table.drop(columns="touches_border"), exclude_border=True, **common
        )
    with pytest.raises(InputError, match="volume_shape"):
        representativeness_from_table(table, **{**common, "volume_shape": (4, 16)})
    with pytest.raises(InputError, match="frequency"):
        representativeness_from_table(table, frequency="share", **common)
    with pytest.raises(InputError, match="at least 2"):
        representativeness_from_table(table, **{**common, "piece_size_um": 16})
    with pytest.raises(InputError, match="table"):
        representativeness_from_table(table.to_numpy(), **common)
