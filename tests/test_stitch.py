"""Stitching of overlapping sub-volumes cut from a twin CT volume."""

from __future__ import annotations

import numpy as np
import pytest

from _twins import twin
from corrtomo._shared import InputError
from corrtomo.register._stitch import masked_ncc, stitch_volumes

NOISE = 0.0005  # added noise, 1/um (the CT grey values have a spread of ~0.014)


def cut_pieces(volume, rng):
    """Three pieces with random overlaps (8..30 slices), lateral shifts (0..6 voxels), gain and offset."""
    z_size, y_size, x_size = volume.shape
    overlaps = rng.integers(8, 31, size=2)
    length = (z_size + overlaps.sum()) // 3
    starts = [0, length - overlaps[0], 2 * length - overlaps.sum()]
    width = (y_size - 8, x_size - 8)
    pieces, truth = [], []
    for k, start in enumerate(starts):
        stop = z_size if k == 2 else start + length
        y0, x0 = (0, 0) if k == 0 else rng.integers(0, 7, size=2)
        gain, offset = rng.uniform(0.6, 1.5), rng.uniform(-0.02, 0.02)
        piece = volume[start:stop, y0 : y0 + width[0], x0 : x0 + width[1]] * gain + offset
        pieces.append((piece + rng.normal(0, NOISE, piece.shape)).astype(np.float32))
        truth.append((np.array([start, y0, x0], float), gain, offset))
    return pieces, truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_pieces_reassembled(seed):
    volume = twin("talc-saxolite", 1).ct.astype(np.float64)
    pieces, truth = cut_pieces(volume, np.random.default_rng(seed))
    result = stitch_volumes(pieces, spacing=0.128)
    true_offsets = np.array([t[0] for t in truth]) - truth[0][0]
    found = result.offsets - result.offsets[0]
    error = np.abs(found - true_offsets).max()
    print(f"\nseed {seed}: offsets {found.round(3).tolist()}, truth {true_offsets.tolist()}, "
          f"max error {error:.3f} voxel, NCC {result.scores.round(3).tolist()}")
    assert error <= 0.5
    # grey values mapped to the first piece's scale: gain_k * g_k = g_0
    gain0, offset0 = truth[0][1], truth[0][2]
    np.testing.assert_allclose(result.gains * [t[1] for t in truth], gain0, rtol=0.03)
    # interior (covered by every piece laterally) equals the original on the first piece's scale
    origin = np.rint(result.offsets[0]).astype(int)
    lateral_lo = np.rint(result.offsets[:, 1:].max(axis=0)).astype(int)
    lateral_hi = np.rint(result.offsets[:, 1:].min(axis=0)).astype(int) + np.array(pieces[0].shape[1:])
    stitched = result.volume[:, lateral_lo[0] : lateral_hi[0], lateral_lo[1] : lateral_hi[1]]
    y0, x0 = lateral_lo - origin[1:]
    expected = volume[:, y0 : y0 + stitched.shape[1], x0 : x0 + stitched.shape[2]] * gain0 + offset0
    assert stitched.shape[0] == volume.shape[0]
    residual = stitched - expected
    rms = float(np.sqrt(np.mean(residual**2)))
    print(f"interior residual rms {rms:.2e} (noise x first gain {NOISE * gain0:.2e})")
    assert rms <= 2.0 * NOISE * gain0


def test_out_of_core_zarr_and_axis_match_in_memory(tmp_path):
    import zarr

    from corrtomo.io import read_volume

    volume = twin("talc-saxolite", 1).ct[:, :64, :64].astype(np.float32)
    pieces = [volume[0:40], volume[28:70], volume[61:]]
    memory = stitch_volumes(pieces)
    np.testing.assert_allclose(memory.offsets[:, 0], [0, 28, 61], atol=0.05)
    stores = []
    for k, piece in enumerate(pieces):
        store = zarr.create_array(store=str(tmp_path / f"piece{k}.zarr"), shape=piece.shape,
                                  chunks=(8, 32, 32), dtype="f4")
        store[:] = piece
        stores.append(zarr.open_array(str(tmp_path / f"piece{k}.zarr"), mode="r"))
    result = stitch_volumes(stores, out=tmp_path / "stitched.ome.zarr", spacing=0.128, slab=8)
    assert result.volume is None
    stitched = read_volume(result.path)
    np.testing.assert_allclose(stitched.spacing, 0.128)
    np.testing.assert_allclose(stitched.to_numpy(), memory.volume, atol=1e-6)
    along_x = stitch_volumes([np.moveaxis(p, 0, 2) for p in pieces], axis=2)
    np.testing.assert_allclose(np.moveaxis(along_x.volume, 2, 0), memory.volume, atol=1e-6)
    np.testing.assert_allclose(along_x.offsets[:, 2], memory.offsets[:, 0])


def test_small_rotation_refined():
    from scipy import ndimage

    volume = twin("talc-saxolite", 1).ct.astype(np.float32)
    rotated = ndimage.rotate(volume, 2.0, axes=(1, 2), reshape=False, order=1)
    pieces = [volume[:56, 16:96, 16:96], rotated[40:, 16:96, 16:96]]
    result = stitch_volumes(pieces, max_rotation_deg=4.0)
    matrix = result.transforms[1].matrix
    angle = np.rad2deg(np.arctan2(abs(matrix[1, 2]), matrix[1, 1]))
    assert 1.5 <= angle <= 2.5
    assert abs(matrix[0, 3] - 40) <= 0.5


def test_masked_ncc_finds_shift():
    rng = np.random.default_rng(0)
    image = ndimage_smooth(rng.normal(size=(20, 24, 24)))
    ncc, _ = masked_ncc(image[2:18, 3:21, 1:23], image[5:20, 1:23, 4:24], (8, 8, 8))
    d = np.array(np.unravel_index(np.argmax(ncc), ncc.shape)) - 8
    np.testing.assert_array_equal(d, [3, -2, 3])
    assert ncc.max() == pytest.approx(1.0)


def ndimage_smooth(image):
    from scipy import ndimage

    return ndimage.gaussian_filter(image, 1.0)


def test_bad_input(tmp_path, capsys):
    volume = np.random.default_rng(0).normal(size=(30, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match="at least two"):
        stitch_volumes([volume])
    with pytest.raises(InputError, match="3D"):
        stitch_volumes([volume, volume[0]])
    with pytest.raises(InputError, match="voxel size"):
        stitch_volumes([volume[:20], volume[10:]], out=tmp_path / "x.ome.zarr")
    with pytest.raises(InputError, match="axis"):
        stitch_volumes([volume[:20], volume[10:]], axis=3)
    # CLI: a piece without voxel size -> one line, exit 2
    import tifffile

    from corrtomo.cli._app import run_app

    for k, piece in enumerate([volume[:20], volume[10:]]):
        tifffile.imwrite(tmp_path / f"p{k}.tif", piece, photometric="minisblack")
    code = run_app(["stitch", str(tmp_path / "p0.tif"), str(tmp_path / "p1.tif"), "--out", str(tmp_path / "s.tif"), "-q"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and "voxel size" in error and "\n" not in error
    code = run_app(["stitch", str(tmp_path / "p0.tif"), str(tmp_path / "p1.tif"), "--out", str(tmp_path / "s.tif"),
                    "--voxel-size", "0.5", "-q"])
    assert code == 0 and (tmp_path / "s.tif").is_file() and (tmp_path / "s.stitch.json").is_file()
