"""Chunked particle foreground == in-memory foreground_mask, voxel for voxel (issue 6)."""

from __future__ import annotations

from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import zarr

from corrtomo._shared import InputError
from corrtomo.chunked import foreground_mask_chunked
from corrtomo.segment import Pillar, detect_pillar, foreground_mask
from corrtomo.synth import PRESETS, make_sample


@pytest.fixture(scope="module")
def quick():
    sample = make_sample("quick", seed=0)
    return sample.ct, float(sample.voxel_size_um)


@pytest.fixture(scope="module")
def talc():
    """A (64, 96, 96) talc-saxolite CT twin in a pillar (particles up to 2.5 um to fit the grid)."""
    preset = PRESETS["talc-saxolite"]
    preset = replace(preset, supersample=1, particles=replace(preset.particles, esd_max_um=2.5))
    sample = make_sample(preset, shape=(64, 96, 96), seed=0)
    return sample.ct, float(sample.voxel_size_um)


def _shell_volume() -> np.ndarray:
    """Two hollow shells and specks on a (40, 44, 48) grid, values 0 (matrix) and 1 (particles).

    The closed shell's cavity spans several blocks of every block shape tested; the open shell
    (a hole through its wall, in another block than most of its cavity) must stay hollow; the
    one-voxel specks (one on a block corner) are dust; a 6-voxel rod crosses a block border.
    """
    z, y, x = np.indices((40, 44, 48))
    volume = np.zeros((40, 44, 48), np.float32)
    r = np.sqrt((z - 16.0) ** 2 + (y - 16.0) ** 2 + (x - 16.0) ** 2)
    volume[(r >= 7) & (r < 10)] = 1.0  # closed shell, cavity of radius 7 around (16, 16, 16)
    r = np.sqrt((z - 28.0) ** 2 + (y - 30.0) ** 2 + (x - 33.0) ** 2)
    shell = (r >= 5) & (r < 8)
    shell[28, 30, 38:42] = False  # a hole along +x
    volume[shell] = 1.0
    volume[3, 40, 4] = 1.0  # specks
    volume[16, 16, 16] = 1.0  # inside the cavity: filled anyway
    volume[8, 8, 40] = 1.0  # on the corner of the 8^3 blocks
    volume[35, 3, 13:19] = 1.0  # 6 voxels across the x = 16 border of 8^3 / 16^3 blocks
    volume[0:6, 0:6, 40:46] = 1.0  # a block on the volume border
    return volume


SHELL_OPTIONS = {"spacing": 1.0, "pillar": False, "smooth_um": 0.0, "refine_edges": False, "min_size_um": 2.0}


@pytest.mark.parametrize("chunks", [(16, 16, 16), (13, 17, 11), (48, 7, 48), (48, 48, 48)])
def test_quick_twin_equals_in_memory(quick, chunks):
    ct, spacing = quick
    before = ct.copy()
    expected = foreground_mask(ct, spacing=spacing)
    mask, info = foreground_mask_chunked(ct, spacing=spacing, chunks=chunks, return_info=True)
    np.testing.assert_array_equal(ct, before)
    assert mask.dtype == np.bool_ and 0.02 < expected.mean() < 0.6
    np.testing.assert_array_equal(mask, expected)
    assert info["pillar"] == detect_pillar(ct, spacing=spacing)  # the same pillar, exactly


@pytest.mark.parametrize(
    ("method", "chunks"),
    [("otsu", (32, 32, 32)), ("otsu", (23, 41, 29)), ("multiotsu", (21, 50, 33)), ("gmm", (32, 48, 96))],
)
def test_talc_twin_in_a_pillar_equals_in_memory(talc, method, chunks):
    ct, spacing = talc
    expected = foreground_mask(ct, spacing=spacing, method=method)
    mask, info = foreground_mask_chunked(ct, spacing=spacing, chunks=chunks, method=method, return_info=True)
    assert info["pillar"] is not None and info["pillar"] == detect_pillar(ct, spacing=spacing)
    assert not mask[:, 0, 0].any()  # cleared outside the pillar
    if method == "gmm":  # more in-pillar voxels than the 200 000 subsampled: the subsample is drawn
        assert ct.shape[0] * np.pi * info["pillar"].radius_voxels ** 2 > 200_000
    np.testing.assert_array_equal(mask, expected)


def test_options_given_pillar_no_refinement_and_probabilities(talc):
    ct, spacing = talc
    pillar = Pillar((47.0, 48.0), 40.0)
    for options in ({"pillar": pillar, "smooth_um": 0.15, "edge_window_um": 0.3, "noise_sigmas": 3.0},
                    {"pillar": False, "refine_edges": False, "fill_holes": False, "min_size_um": 0.4}):
        expected = foreground_mask(ct, spacing=spacing, **options)
        np.testing.assert_array_equal(
            foreground_mask_chunked(ct, spacing=spacing, chunks=(20, 30, 40), **options), expected
        )
    probabilities = 1.0 - ct / ct.max()
    expected = foreground_mask(ct, spacing=spacing, probabilities=probabilities)
    actual = foreground_mask_chunked(ct, spacing=spacing, chunks=(20, 30, 40), probabilities=probabilities)
    np.testing.assert_array_equal(actual, expected)
    # a calibrated threshold of the matrix probability: the same in blocks, and a different mask
    expected = foreground_mask(ct, spacing=spacing, probabilities=probabilities, matrix_threshold=0.8)
    actual, info = foreground_mask_chunked(ct, spacing=spacing, chunks=(20, 30, 40), probabilities=probabilities,
                                           matrix_threshold=0.8, return_info=True)
    np.testing.assert_array_equal(actual, expected)
    assert info["threshold"] == 0.8 and expected.sum() > foreground_mask(ct, spacing=spacing,
                                                                           probabilities=probabilities).sum()


@pytest.mark.parametrize("chunks", [(8, 8, 8), (16, 16, 16), (7, 11, 13), (40, 44, 5)])
def test_cavities_and_dust_across_blocks(chunks):
    volume = _shell_volume()
    expected = foreground_mask(volume, **SHELL_OPTIONS)
    mask, info = foreground_mask_chunked(volume, chunks=chunks, return_info=True, **SHELL_OPTIONS)
    np.testing.assert_array_equal(mask, expected)
    assert mask[16, 16, 16] and mask[16, 10:23, 10:23].all()  # the closed cavity is filled
    assert not mask[28, 30, 33] and not mask[3, 40, 4] and not mask[8, 8, 40]  # open; dust
    assert mask[35, 3, 13:19].all() and mask[0:6, 0:6, 40:46].all()  # kept
    assert info["n_cavities"] == 1 and info["n_dust_components"] == 2
    # the same with the default half-maximum edges and smoothing
    options = {**SHELL_OPTIONS, "smooth_um": None, "refine_edges": True}
    np.testing.assert_array_equal(foreground_mask_chunked(volume, chunks=chunks, **options),
                                  foreground_mask(volume, **options))


def test_zarr_in_zarr_out_and_dask_input(quick, tmp_path):
    ct, spacing = quick
    expected = foreground_mask(ct, spacing=spacing)
    source = zarr.create_array(store=str(tmp_path / "ct.zarr"), shape=ct.shape, chunks=(16, 20, 24),
                               dtype=ct.dtype)
    source[...] = ct
    out = zarr.create_array(store=str(tmp_path / "mask.zarr"), shape=ct.shape, chunks=(16, 20, 24),
                            dtype="uint8")
    result = foreground_mask_chunked(source, spacing=spacing, out=out)  # chunks from the Zarr input
    assert result is out
    np.testing.assert_array_equal(out[...], expected.astype(np.uint8))
    np.testing.assert_array_equal(source[...], ct)
    lazy = da.from_array(ct, chunks=(20, 24, 16))
    np.testing.assert_array_equal(foreground_mask_chunked(lazy, spacing=spacing), expected)


@pytest.mark.parametrize("workers", [1, 2])
def test_smoothed_once_into_scratch_equals_in_memory(talc, tmp_path, workers):
    """With a scratch store the image is smoothed once (on threads with 2 workers) and the later
    passes read it: the same mask as in memory, for every method."""
    from corrtomo._shared import BlockRunner

    ct, spacing = talc
    with BlockRunner(workers) as runner:
        for method in ("otsu", "gmm"):
            scratch = zarr.create_array(store=str(tmp_path / f"s{method}.zarr"), shape=ct.shape,
                                        chunks=(23, 41, 29), dtype="float32")
            mask, info = foreground_mask_chunked(ct, spacing=spacing, chunks=(23, 41, 29), method=method,
                                                 scratch=scratch, runner=runner, return_info=True)
            np.testing.assert_array_equal(mask, foreground_mask(ct, spacing=spacing, method=method))
            assert info["smooth_s"] > 0
    with pytest.raises(InputError, match="scratch: must be float32"):
        foreground_mask_chunked(ct, spacing=spacing, scratch=np.zeros(ct.shape, np.float64))


def _zarr_like(path, shape, chunks, dtype="uint8"):
    return zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


@pytest.mark.parametrize("options", [{}, {"fill_holes": False}, {"min_size_um": 0.0}])
@pytest.mark.parametrize("chunks", [(8, 8, 8), (7, 11, 13)])
def test_the_first_mask_in_a_scratch_array_gives_the_same_mask(chunks, options, tmp_path):
    """With `mask_scratch` the cavity and dust passes read the first mask there and write `out`."""
    volume = _shell_volume()
    options = {**SHELL_OPTIONS, **options}
    out = _zarr_like(tmp_path / "out.zarr", volume.shape, chunks)
    first = _zarr_like(tmp_path / "first.zarr", volume.shape, chunks, "bool")
    foreground_mask_chunked(volume, chunks=chunks, out=out, mask_scratch=first, **options)
    np.testing.assert_array_equal(out[...], foreground_mask(volume, **options).astype(np.uint8))
    unfilled = foreground_mask(volume, **{**options, "fill_holes": False, "min_size_um": 0.0})
    np.testing.assert_array_equal(first[...], unfilled)  # before cavities and dust
    with pytest.raises(InputError, match="mask_scratch: must have a bool or unsigned"):
        foreground_mask_chunked(volume, chunks=chunks, mask_scratch=np.zeros(volume.shape, np.float32), **options)


def test_a_pass_stopped_midway_resumes_from_its_block_records(tmp_path, monkeypatch):
    """Every pass keeps block records: a run stopped in the cavity pass reads back the blocks
    of all earlier passes and the cavity blocks it finished, computes only the rest and gives
    the in-memory mask."""
    import functools

    import corrtomo.chunked._foreground as module
    from corrtomo._shared import BlockRunner

    volume = _shell_volume()
    chunks = (16, 16, 16)  # 3 x 3 x 3 blocks
    out = _zarr_like(tmp_path / "out.zarr", volume.shape, chunks)
    first = _zarr_like(tmp_path / "first.zarr", volume.shape, chunks)
    calls = {"mask": 0, "fill": 0}
    originals = {"mask": module._mask_block, "fill": module._fill_block}

    def counted(name, stop_after=None):
        @functools.wraps(originals[name])  # the same name: passes are known by number and name
        def block(item, **kwargs):
            if calls[name] == stop_after:
                raise RuntimeError("the machine went down")
            calls[name] += 1
            return originals[name](item, **kwargs)
        return block

    monkeypatch.setattr(module, "_fill_block", counted("fill", stop_after=5))
    with BlockRunner() as runner, pytest.raises(RuntimeError, match="went down"):
        runner.keep_records(tmp_path / "records")
        foreground_mask_chunked(volume, chunks=chunks, out=out, mask_scratch=first, runner=runner, **SHELL_OPTIONS)
    assert calls == {"mask": 0, "fill": 5}
    passes = sorted(p.name.split("-", 1)[1] for p in (tmp_path / "records").iterdir())
    assert passes == ["_fill_block", "_histogram_block", "_mask_block", "_range_block"]

    calls.update(mask=0, fill=0)
    monkeypatch.setattr(module, "_mask_block", counted("mask"))
    monkeypatch.setattr(module, "_fill_block", counted("fill"))
    with BlockRunner() as runner:
        runner.keep_records(tmp_path / "records")
        foreground_mask_chunked(volume, chunks=chunks, out=out, mask_scratch=first, runner=runner, **SHELL_OPTIONS)
        assert runner.resumed_blocks == 3 * 27 + 5
    assert calls == {"mask": 0, "fill": 27 - 5}
    np.testing.assert_array_equal(out[...], foreground_mask(volume, **SHELL_OPTIONS).astype(np.uint8))


def test_bad_input_gives_one_line_errors(quick):
    ct, spacing = quick
    bad = ct.copy()
    bad[40, 3, 3] = np.nan
    cases = [
        (ct[0], {}, "3D"),
        (np.zeros((0, 4, 4), np.float32), {}, "empty"),
        (bad, {"chunks": (8, 8, 8)}, "NaN"),
        (ct.astype(str), {}, "dtype"),
        (ct, {"method": "kmeans"}, "unknown method"),
        (ct, {"chunks": (0, 8, 8)}, "positive"),
        (ct, {"out": np.zeros((4, 4, 4), bool)}, "differs"),
        (ct, {"out": np.zeros(ct.shape, np.float32)}, "dtype"),
        (ct, {"probabilities": ct[:10]}, "differs"),
        (ct, {"probabilities": ct, "matrix_threshold": 1.0}, "must lie in"),
        (np.ones((8, 8, 8), np.float32), {"pillar": False}, "constant"),
    ]
    for image, options, message in cases:
        with pytest.raises(InputError, match=message) as caught:
            foreground_mask_chunked(image, spacing=spacing, **options)
        assert "\n" not in str(caught.value)
