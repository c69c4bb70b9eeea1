"""Chunked particle separation == in-memory separation, up to renumbering (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest

from _twins import crossing_particles, touching_talc_foreground
from corrtomo._shared import InputError
from corrtomo.chunked._separate import HaloWarning, separate_particles_chunked
from corrtomo.segment import Pillar, separate_particles
from corrtomo.synth import make_sample


def _assert_same_partition(expected: np.ndarray, actual: np.ndarray) -> None:
    """Same background and a bijection between the label sets (same voxels per label)."""
    np.testing.assert_array_equal(expected == 0, actual == 0)
    pairs = np.unique(np.stack([expected.ravel(), actual.ravel()]).astype(np.int64), axis=1)
    assert pairs.shape[1] == np.unique(expected).size == np.unique(actual).size


@pytest.fixture(scope="module")
def quick():
    sample = make_sample("quick", seed=0)
    return sample.particles > 0, float(sample.voxel_size_um)


@pytest.fixture(scope="module")
def talc():
    """Truth foreground of a 96^3 talc-saxolite twin with 40 % touching particles, in a pillar."""
    return touching_talc_foreground()


@pytest.mark.parametrize("chunks", [(16, 16, 16), (13, 17, 11), (24, 48, 7), (48, 48, 48)])
def test_quick_twin_equals_in_memory(quick, chunks):
    foreground, spacing = quick
    before = foreground.copy()
    expected = separate_particles(foreground, spacing=spacing)
    result = separate_particles_chunked(foreground, spacing=spacing, chunks=chunks)
    np.testing.assert_array_equal(foreground, before)
    assert crossing_particles(expected.labels, chunks) > 0 or chunks == (48, 48, 48)
    _assert_same_partition(expected.labels, result.labels)
    assert result.n_particles == expected.n_particles
    assert result.n_cut_particles == 0
    inside = expected.labels > 0
    np.testing.assert_array_equal(result.touches_border[result.labels[inside]],
                                  expected.touches_border[expected.labels[inside]])
    assert result.labels.dtype == np.uint32
    assert set(np.unique(result.labels)) == set(range(result.n_particles + 1))


@pytest.mark.parametrize("chunks", [(32, 32, 32), (40, 29, 51)])
def test_talc_twin_with_pillar_and_resolution(talc, chunks):
    foreground, spacing = talc
    pillar = Pillar(center_yx=(47.5, 47.5), radius_voxels=0.46 * 96)
    options = dict(spacing=spacing, pillar=pillar, resolution_um=4 * spacing)
    expected = separate_particles(foreground, **options)
    result = separate_particles_chunked(foreground, chunks=chunks, **options)
    assert crossing_particles(expected.labels, chunks) >= 10
    assert expected.info["n_markers"] > expected.n_particles  # some particles were removed
    _assert_same_partition(expected.labels, result.labels)
    assert result.n_particles == expected.n_particles
    inside = expected.labels > 0
    np.testing.assert_array_equal(result.touches_border[result.labels[inside]],
                                  expected.touches_border[expected.labels[inside]])
    # the provable condition does not hold everywhere (clusters cross the halo), yet labels agree
    assert result.info["n_blocks_exact"] <= result.info["n_blocks"]


def test_eroded_cores_and_face_connectivity(quick):
    foreground, spacing = quick
    options = dict(spacing=spacing, method="eroded_cores", connectivity=6)
    expected = separate_particles(foreground, **options)
    result = separate_particles_chunked(foreground, chunks=(20, 15, 25), **options)
    _assert_same_partition(expected.labels, result.labels)


def test_single_block_is_exact(quick):
    foreground, spacing = quick
    result = separate_particles_chunked(foreground, spacing=spacing)  # numpy: one block
    assert result.exact and result.info["n_blocks"] == 1
    _assert_same_partition(separate_particles(foreground, spacing=spacing).labels, result.labels)


def test_zarr_in_zarr_out_and_dask(quick, tmp_path):
    import dask.array as da
    import zarr

    foreground, spacing = quick
    source = zarr.create_array(tmp_path / "fg.zarr", data=foreground, chunks=(16, 24, 16))
    out = zarr.create_array(tmp_path / "labels.zarr", shape=foreground.shape, dtype="uint32",
                            chunks=(16, 24, 16))
    result = separate_particles_chunked(source, spacing=spacing, out=out)  # chunks from the input
    assert result.labels is out and result.info["n_blocks"] == 3 * 2 * 3
    expected = separate_particles(foreground, spacing=spacing).labels
    _assert_same_partition(expected, np.asarray(zarr.open_array(tmp_path / "labels.zarr")[:]))
    np.testing.assert_array_equal(source[:], foreground)
    lazy = separate_particles_chunked(da.from_array(foreground, chunks=(24, 16, 48)), spacing=spacing)
    _assert_same_partition(expected, lazy.labels)
    # block-local labels in a scratch store (not relabelled in place): the same labels in `out`
    scratch = zarr.create_array(tmp_path / "local.zarr", shape=foreground.shape, dtype="uint32", chunks=(16, 24, 16))
    out2 = zarr.create_array(tmp_path / "labels2.zarr", shape=foreground.shape, dtype="uint32", chunks=(16, 24, 16))
    separate_particles_chunked(source, spacing=spacing, out=out2, scratch=scratch)
    np.testing.assert_array_equal(out2[:], out[:])
    assert scratch[:].max() < out[:].max()  # block-local numbers stay in the scratch store


def test_halo_too_small_warns_and_flags(talc):
    foreground, spacing = talc
    with pytest.warns(HaloWarning, match="beyond the largest halo"):
        result = separate_particles_chunked(foreground, spacing=spacing, chunks=(32, 32, 32),
                                            halo_um=3 * spacing, max_halo_um=3 * spacing)
    assert result.n_cut_particles > 0 and not result.exact
    assert result.info["largest_halo_voxels"] == [3, 3, 3]
    # documented behaviour: every foreground voxel is still labelled, labels are 1..n
    np.testing.assert_array_equal(result.labels > 0, foreground)
    assert set(np.unique(result.labels)) == set(range(result.n_particles + 1))


def test_halo_grows_until_particles_fit(talc):
    foreground, spacing = talc
    expected = separate_particles(foreground, spacing=spacing)
    result = separate_particles_chunked(foreground, spacing=spacing, chunks=(48, 48, 48),
                                        halo_um=4 * spacing, max_halo_um=64 * spacing)
    assert result.info["n_blocks_grown"] > 0 and result.n_cut_particles == 0
    _assert_same_partition(expected.labels, result.labels)


def test_bad_input():
    with pytest.raises(InputError, match="3D"):
        separate_particles_chunked(np.ones((4, 4), bool))
    with pytest.raises(InputError, match="differs"):
        separate_particles_chunked(np.ones((4, 4, 4), bool), out=np.zeros((4, 4, 5), np.uint32))
    with pytest.raises(InputError, match="unsigned"):
        separate_particles_chunked(np.ones((4, 4, 4), bool), out=np.zeros((4, 4, 4), np.int32))
    with pytest.raises(InputError, match="differs") as caught:
        separate_particles_chunked(np.ones((4, 4, 4), bool), scratch=np.zeros((4, 4, 5), np.uint32))
    assert str(caught.value).startswith("scratch")
    with pytest.raises(InputError, match="method"):
        separate_particles_chunked(np.ones((4, 4, 4), bool), method="snow")
    with pytest.raises(InputError, match="halo_um"):
        separate_particles_chunked(np.ones((4, 4, 4), bool), halo_um=-1.0)
