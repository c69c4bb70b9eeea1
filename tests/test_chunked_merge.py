"""Chunked separation with merge_oversplit == in-memory separation with merging, up to renumbering."""

from __future__ import annotations

import numpy as np
import pytest

from _twins import crossing_particles, touching_talc_foreground
from corrtomo._shared import BlockRunner, InputError
from corrtomo.chunked._separate import separate_particles_chunked
from corrtomo.segment import Pillar, separate_particles
from corrtomo.synth import make_sample


def _assert_same_partition(expected: np.ndarray, actual: np.ndarray) -> None:
    """Same background and a bijection between the label sets (same voxels per label)."""
    np.testing.assert_array_equal(expected == 0, actual == 0)
    pairs = np.unique(np.stack([expected.ravel(), actual.ravel()]).astype(np.int64), axis=1)
    assert pairs.shape[1] == np.unique(expected).size == np.unique(actual).size


def _assert_same_result(expected, result) -> None:
    _assert_same_partition(expected.labels, result.labels)
    assert result.n_particles == expected.n_particles
    assert result.n_cut_particles == 0
    labels = np.asarray(result.labels)
    inside = expected.labels > 0
    np.testing.assert_array_equal(result.touches_border[labels[inside]],
                                  expected.touches_border[expected.labels[inside]])
    assert result.touches_border.shape == (result.n_particles + 1,) and not result.touches_border[0]
    assert set(np.unique(labels)) == set(range(result.n_particles + 1))


@pytest.fixture(scope="module")
def talc():
    """Truth foreground of a 96^3 talc-saxolite twin with 40 % touching particles, in a pillar."""
    return touching_talc_foreground()


@pytest.fixture(scope="module")
def talc_options(talc):
    """Unsmoothed relief and a tiny h: the markers over-split, so merging has work to do."""
    _, spacing = talc
    return dict(spacing=spacing, pillar=Pillar(center_yx=(47.5, 47.5), radius_voxels=0.46 * 96),
                resolution_um=4 * spacing, smooth_um=0.0, h_um=0.01 * spacing)


@pytest.fixture(scope="module")
def talc_expected(talc, talc_options):
    foreground, _ = talc
    unmerged = separate_particles(foreground, **talc_options)
    merged = separate_particles(foreground, merge_oversplit=True, **talc_options)
    assert merged.n_particles < unmerged.n_particles - 10  # the in-memory merge really merges
    return unmerged, merged


@pytest.fixture(scope="module")
def quick():
    sample = make_sample("quick", seed=0)
    return sample.particles > 0, float(sample.voxel_size_um)


@pytest.mark.parametrize("chunks", [(32, 32, 32), (40, 29, 51), (24, 48, 13)])
def test_talc_twin_merge_equals_in_memory(talc, talc_options, talc_expected, chunks):
    foreground, _ = talc
    before = foreground.copy()
    unmerged, merged = talc_expected
    result = separate_particles_chunked(foreground, chunks=chunks, merge_oversplit=True, **talc_options)
    np.testing.assert_array_equal(foreground, before)
    assert crossing_particles(merged.labels, chunks) >= 10
    _assert_same_result(merged, result)
    assert result.n_particles < unmerged.n_particles
    assert result.info["merge_oversplit"] and result.info["n_merged_markers"] > 0
    assert result.info["merge_s"] > 0


def test_merge_off_is_unchanged(talc, talc_options, talc_expected):
    foreground, _ = talc
    unmerged, _ = talc_expected
    result = separate_particles_chunked(foreground, chunks=(40, 29, 51), **talc_options)
    _assert_same_result(unmerged, result)
    assert result.info["n_merged_markers"] == 0 and not result.info["merge_oversplit"]
    assert result.info["merge_s"] == 0.0


def test_merged_particle_touches_border_if_any_part_does(quick):
    foreground, spacing = quick
    options = dict(spacing=spacing, smooth_um=0.0, chunks=(16, 20, 12))
    parts = separate_particles_chunked(foreground, **options)
    merged = separate_particles_chunked(foreground, merge_oversplit=True, **options)
    assert merged.n_particles < parts.n_particles
    pairs = np.unique(np.stack([merged.labels.ravel(), parts.labels.ravel()]), axis=1)
    pairs = pairs[:, pairs[0] > 0]
    assert np.unique(pairs[1]).size == pairs.shape[1]  # every part lies in one merged particle
    any_part = np.zeros(merged.n_particles + 1, bool)
    np.logical_or.at(any_part, pairs[0], parts.touches_border[pairs[1]])
    np.testing.assert_array_equal(merged.touches_border, any_part)
    _assert_same_result(separate_particles(foreground, spacing=spacing, smooth_um=0.0, merge_oversplit=True),
                        merged)


def test_face_connectivity_ratio_and_threads(quick):
    foreground, spacing = quick
    options = dict(spacing=spacing, connectivity=6, smooth_um=0.0, merge_ratio=0.8)
    expected = separate_particles(foreground, merge_oversplit=True, **options)
    assert expected.n_particles < separate_particles(foreground, **options).n_particles
    serial = separate_particles_chunked(foreground, chunks=(16, 16, 16), merge_oversplit=True, **options)
    _assert_same_result(expected, serial)
    with BlockRunner(2, "threads") as runner:
        threaded = separate_particles_chunked(foreground, chunks=(16, 16, 16), merge_oversplit=True,
                                              runner=runner, **options)
    np.testing.assert_array_equal(threaded.labels, serial.labels)
    np.testing.assert_array_equal(threaded.touches_border, serial.touches_border)


def test_anisotropic_voxels(quick):
    foreground, _ = quick
    options = dict(spacing=(0.128, 0.1, 0.15), smooth_um=0.0)
    expected = separate_particles(foreground, merge_oversplit=True, **options)
    assert expected.n_particles < separate_particles(foreground, **options).n_particles
    _assert_same_result(expected, separate_particles_chunked(foreground, chunks=(13, 17, 11),
                                                             merge_oversplit=True, **options))


def test_small_halo_that_grows_still_merges_exactly(talc, talc_options, talc_expected):
    """The merge pass sizes its own halo from the volume's largest distance, not from halo_um."""
    foreground, spacing = talc
    _, merged = talc_expected
    result = separate_particles_chunked(foreground, chunks=(48, 48, 48), halo_um=4 * spacing,
                                        max_halo_um=64 * spacing, merge_oversplit=True, **talc_options)
    assert result.info["n_blocks_grown"] > 0
    _assert_same_result(merged, result)


def test_zarr_output_on_a_cluster_equals_serial(quick, tmp_path):
    import zarr

    foreground, spacing = quick
    options = dict(spacing=spacing, smooth_um=0.0, chunks=(16, 24, 16), merge_oversplit=True)
    serial = separate_particles_chunked(foreground, **options)
    out = zarr.create_array(tmp_path / "labels.zarr", shape=foreground.shape, dtype="uint16", chunks=(16, 24, 16))
    with BlockRunner(2, "processes") as runner:
        spread = separate_particles_chunked(foreground, out=out, runner=runner, **options)
    assert spread.labels is out
    np.testing.assert_array_equal(out[:], serial.labels)
    np.testing.assert_array_equal(spread.touches_border, serial.touches_border)
    assert spread.n_particles == serial.n_particles


def test_bad_merge_ratio():
    with pytest.raises(InputError, match="merge_ratio"):
        separate_particles_chunked(np.ones((4, 4, 4), bool), merge_oversplit=True, merge_ratio=float("nan"))
