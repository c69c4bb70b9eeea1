"""Tests of corrtomo.io: round trips of voxels and voxel size, bad input, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import ClassVar

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

from corrtomo._shared import InputError
from corrtomo.io import (
    EDSMaps,
    Volume,
    check_finite,
    element_from_name,
    load_legend,
    read_eds_maps,
    read_image2d,
    read_mineral_map,
    read_volume,
    write_image2d,
    write_label_png,
    write_ome_zarr,
    write_tiff,
)

SPACING = (2.0, 0.5, 0.25)


@pytest.fixture
def grey():
    return np.random.default_rng(0).integers(0, 4000, (6, 7, 9)).astype(np.uint16)


@pytest.fixture
def labels():
    return np.random.default_rng(1).integers(0, 5, (6, 7, 9)).astype(np.uint32)


def _fingerprint(path: Path) -> dict:
    """Bytes hash and mtime of every file under `path` (or of `path`)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {
        str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files
    }


def _assert_names(error: pytest.ExceptionInfo, path) -> None:
    assert str(path) in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------ TIFF
@pytest.mark.parametrize("metadata_format", ["imagej", "ome"])
@pytest.mark.parametrize("compression", ["zlib", None])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_tiff_round_trip(tmp_path, grey, metadata_format, compression, dtype):
    data = grey.astype(dtype)
    path = write_tiff(
        tmp_path / "ct.tif",
        data,
        spacing=SPACING,
        compression=compression,
        metadata_format=metadata_format,
    )
    volume = read_volume(path)
    assert volume.shape == data.shape and volume.dtype == data.dtype
    np.testing.assert_allclose(volume.spacing, SPACING)
    assert volume.metadata["spacing_from"] == "file"
    assert volume.metadata["format"] == f"{metadata_format}-tiff"
    np.testing.assert_array_equal(volume.to_numpy(), data)
    if compression is None:
        assert isinstance(volume.data, np.memmap)  # lazy, memory-mapped
    else:
        assert not isinstance(volume.data, np.ndarray)  # lazy Zarr view
    np.testing.assert_array_equal(volume.to_dask(chunks=(2, 7, 9)).compute(), data)


def test_tiff_label_image_keeps_integer_type(tmp_path, labels):
    volume = read_volume(write_tiff(tmp_path / "particles.tif", labels, spacing=1.5))
    assert volume.dtype == np.uint32 and volume.metadata["format"] == "ome-tiff"
    np.testing.assert_allclose(volume.spacing, 1.5)
    np.testing.assert_array_equal(volume.to_numpy(), labels)


def test_tiff_from_dask_and_user_spacing_overrides(tmp_path, grey):
    path = write_tiff(tmp_path / "ct.tif", da.from_array(grey, chunks=(2, 7, 9)), spacing=SPACING)
    volume = read_volume(path, spacing=3.0)
    np.testing.assert_array_equal(volume.to_numpy(), grey)
    np.testing.assert_allclose(volume.spacing, 3.0)
    assert volume.metadata["spacing_from"] == "user"
    np.testing.assert_allclose(volume.metadata["file_spacing"], SPACING)


def test_tiff_resolution_tags_give_spacing_with_warning(tmp_path, grey):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, grey, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    with pytest.warns(UserWarning, match="no slice spacing"):
        volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, 0.5)


def test_four_d_tiff_with_singleton_axis_is_squeezed(tmp_path, grey):
    path = tmp_path / "czyx.ome.tif"
    metadata = {"axes": "CZYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, grey[None], ome=True, metadata=metadata)
    volume = read_volume(path)
    assert volume.shape == grey.shape
    np.testing.assert_allclose(volume.spacing, SPACING)
    np.testing.assert_array_equal(volume.to_numpy(), grey)


def test_ome_tiff_units_are_converted(tmp_path, grey):
    path = tmp_path / "nm.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm"}
    metadata |= {"PhysicalSizeY": 0.5, "PhysicalSizeZ": 0.002, "PhysicalSizeZUnit": "mm"}
    tifffile.imwrite(path, grey, ome=True, metadata=metadata)
    np.testing.assert_allclose(read_volume(path).spacing, SPACING)


# -------------------------------------------------------------------------------- OME-Zarr
def test_ome_zarr_two_levels_round_trip(tmp_path, grey):
    path = write_ome_zarr(tmp_path / "ct.ome.zarr", grey, spacing=SPACING, n_levels=2, chunks=4)
    full = read_volume(path)
    assert full.metadata["format"] == "ome-zarr" and full.metadata["n_levels"] == 2
    np.testing.assert_array_equal(full.to_numpy(), grey)
    np.testing.assert_allclose(full.spacing, SPACING)
    coarse = read_volume(path, level=1)
    assert coarse.shape == (3, 4, 5)
    np.testing.assert_allclose(coarse.spacing, np.multiply(SPACING, 2))
    block_mean = grey[:2, :2, :2].mean()
    assert abs(int(coarse.to_numpy()[0, 0, 0]) - block_mean) <= 0.5
    with pytest.raises(InputError, match="level 2") as error:
        read_volume(path, level=2)
    _assert_names(error, path)


def test_ome_zarr_labels_downsample_by_mode_from_dask(tmp_path):
    labels = np.zeros((8, 8, 8), np.uint32)
    labels[:2, :2, :2] = [[[7, 7], [7, 3]], [[3, 7], [0, 0]]]  # 7 is the most frequent
    labels[2:4, :2, :2] = 5  # a uniform block stays 5, never a mean
    source = da.from_array(labels, chunks=(3, 3, 3))  # odd chunks: rechunked for writing
    path = write_ome_zarr(tmp_path / "labels.ome.zarr", source, spacing=1.0, n_levels=3, chunks=3)
    coarse = read_volume(path, level=1).to_numpy()
    assert coarse.dtype == np.uint32
    assert coarse[0, 0, 0] == 7 and coarse[1, 0, 0] == 5
    assert set(np.unique(coarse)) <= {0, 3, 5, 7}
    assert read_volume(path, level=2).shape == (2, 2, 2)


def test_ome_zarr_is_readable_by_ome_zarr_reader(tmp_path, grey):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path = write_ome_zarr(tmp_path / "ct.ome.zarr", grey, spacing=SPACING, n_levels=2)
    node = next(iter(Reader(parse_url(str(path)))()))
    assert [tuple(level.shape) for level in node.data] == [(6, 7, 9), (3, 4, 5)]
    np.testing.assert_array_equal(np.asarray(node.data[0]), grey)
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    np.testing.assert_allclose(scale, SPACING)
    assert {axis["unit"] for axis in node.metadata["axes"]} == {"micrometer"}


def test_ome_zarr_written_by_ome_zarr_is_read(tmp_path, grey):
    import zarr
    from ome_zarr.writer import write_image

    path = tmp_path / "theirs.ome.zarr"
    group = zarr.open_group(str(path), mode="w")
    write_image(
        grey,
        group,
        scale_factors=[2],
        axes="zyx",
        scale={"z": 2.0, "y": 0.5, "x": 0.25},
        axes_units={"z": "micrometer", "y": "micrometer", "x": "nanometer"},
    )
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.to_numpy(), grey)
    np.testing.assert_allclose(volume.spacing, (2.0, 0.5, 0.25e-3))
    coarse = read_volume(path, level=1)
    ratio = np.divide(volume.shape, coarse.shape)
    np.testing.assert_allclose(coarse.spacing, volume.spacing * ratio, rtol=0.25)


def test_plain_zarr_array_needs_spacing(tmp_path, grey):
    import zarr

    path = tmp_path / "plain.zarr"
    array = zarr.create_array(str(path), shape=grey.shape, dtype=grey.dtype, chunks=(3, 7, 9))
    array[...] = grey
    with pytest.raises(InputError, match="no voxel size in the file") as error:
        read_volume(path)
    _assert_names(error, path)
    volume = read_volume(path, spacing=SPACING)
    np.testing.assert_allclose(volume.spacing, SPACING)
    np.testing.assert_array_equal(volume.to_numpy(), grey)
    array.attrs["voxel_size_um"] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(read_volume(path).spacing, (1.0, 2.0, 3.0))


def test_zarr_group_array_chosen_by_dataset(tmp_path, grey):
    import zarr

    path = tmp_path / "group.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("a", shape=grey.shape, dtype=grey.dtype)[...] = grey
    group.create_array("b", shape=(2, 2, 2), dtype="u1")
    with pytest.raises(InputError, match="dataset=") as error:
        read_volume(path, spacing=1)
    _assert_names(error, path)
    np.testing.assert_array_equal(read_volume(path, dataset="a", spacing=1).to_numpy(), grey)


# ------------------------------------------------------------------------------------ HDF5
def test_hdf5_round_trip_with_attributes(tmp_path, grey):
    import h5py

    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset("exchange/data", data=grey, chunks=(2, 7, 9))
        dataset.attrs["voxel_size_um"] = SPACING
        handle.create_dataset("exchange/dark", data=np.zeros((2, 7, 9)))
    for volume in (
        read_volume(f"{path}:/exchange/data"),
        read_volume(path, dataset="exchange/data"),
    ):
        assert isinstance(volume.data, da.Array)
        assert volume.source.endswith(":/exchange/data")
        np.testing.assert_allclose(volume.spacing, SPACING)
        np.testing.assert_array_equal(volume.to_numpy(), grey)
    with pytest.raises(InputError, match="several datasets") as error:
        read_volume(path)
    _assert_names(error, path)


def test_hdf5_spacing_attribute_with_unit(tmp_path, grey):
    import h5py

    path = tmp_path / "scan.hdf5"
    with h5py.File(path, "w") as handle:
        handle["volume"] = grey
        handle["volume"].attrs["spacing"] = 0.001
        handle["volume"].attrs["unit"] = "mm"
    np.testing.assert_allclose(read_volume(path).spacing, 1.0)


# ------------------------------------------------------------------------------------- raw
@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_raw_round_trip(tmp_path, grey, byte_order):
    path = tmp_path / "ct.raw"
    header = b"HEADER16"
    code = "<" if byte_order == "little" else ">"
    path.write_bytes(header + grey.astype(f"{code}u2").tobytes())
    volume = read_volume(
        path, shape=grey.shape, dtype="uint16", byte_order=byte_order, offset=8, spacing=SPACING
    )
    assert isinstance(volume.data, np.memmap)
    result = volume.to_numpy()
    assert result.dtype.isnative
    np.testing.assert_array_equal(result, grey)
    np.testing.assert_array_equal(volume.to_dask().compute(), grey)


def test_raw_size_mismatch(tmp_path, grey):
    path = tmp_path / "ct.vol"
    path.write_bytes(grey.tobytes()[:-2])
    with pytest.raises(InputError, match=r"holds 754 bytes .* needs 756 bytes") as error:
        read_volume(path, shape=grey.shape, dtype="uint16", spacing=1)
    _assert_names(error, path)
    with pytest.raises(InputError, match="shape") as error:
        read_volume(path, spacing=1)
    _assert_names(error, path)


# ---------------------------------------------------------------------------- slice folder
def test_slice_folder_natural_sort(tmp_path, grey):
    folder = tmp_path / "slices"
    folder.mkdir()
    for index, plane in enumerate(grey):
        tifffile.imwrite(folder / f"s{index * 5}.tif", plane)  # s0, s5, s10, ...: s5 < s10
    (folder / "notes.txt").write_text("ignored")
    volume = read_volume(folder, spacing=SPACING)
    assert volume.metadata["files"][:3] == ["s0.tif", "s5.tif", "s10.tif"]
    np.testing.assert_array_equal(volume.to_numpy(), grey)


def test_slice_folder_png_s2_before_s10(tmp_path):
    folder = tmp_path / "png"
    folder.mkdir()
    for index in (10, 2, 1):
        Image.fromarray(np.full((4, 5), index, np.uint8)).save(folder / f"s{index}.png")
    volume = read_volume(folder, spacing=1)
    np.testing.assert_array_equal(volume.to_numpy()[:, 0, 0], [1, 2, 10])


def test_slice_folder_mixed_sizes(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "s1.tif", np.zeros((4, 5), np.uint16))
    tifffile.imwrite(folder / "s2.tif", np.zeros((4, 5), np.uint16))
    tifffile.imwrite(folder / "s3.tif", np.zeros((4, 6), np.uint16))
    with pytest.raises(InputError, match="all slices must match") as error:
        read_volume(folder, spacing=1)
    _assert_names(error, folder / "s3.tif")


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no image slices") as error:
        read_volume(tmp_path, spacing=1)
    _assert_names(error, tmp_path)


# ------------------------------------------------------------------------------- bad input
def test_two_d_file_given_as_volume(tmp_path):
    tiff, png = tmp_path / "section.tif", tmp_path / "section.png"
    tifffile.imwrite(tiff, np.zeros((5, 6), np.uint8))
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(png)
    for path in (tiff, png):
        with pytest.raises(InputError, match="is 2D, expected a 3D volume") as error:
            read_volume(path, spacing=1)
        _assert_names(error, path)


def test_missing_voxel_size_and_missing_file(tmp_path, grey):
    path = tmp_path / "bare.tif"
    tifffile.imwrite(path, grey)
    with pytest.raises(InputError, match="no voxel size in the file") as error:
        read_volume(path)
    _assert_names(error, path)
    with pytest.raises(InputError, match="no such file") as error:
        read_volume(tmp_path / "absent.tif")
    _assert_names(error, tmp_path / "absent.tif")


def test_npy_four_d_squeezed_and_five_d_rejected(tmp_path, grey):
    path = tmp_path / "ct.npy"
    np.save(path, grey[None])
    assert read_volume(path, spacing=1).shape == grey.shape
    np.save(path, np.zeros((2, 3, 4, 5)))
    with pytest.raises(InputError, match="4D") as error:
        read_volume(path, spacing=1)
    _assert_names(error, path)


def test_check_finite(tmp_path):
    data = np.zeros((4, 5, 6), np.float32)
    volume = Volume(da.from_array(data, chunks=2), np.ones(3), "ct.tif")
    check_finite(volume)
    check_finite(np.zeros((2, 2, 2), np.uint8))
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite") as error:
        check_finite(Volume(da.from_array(data, chunks=2), np.ones(3), "ct.tif"))
    _assert_names(error, "ct.tif")


def test_lazy_false_gives_numpy(tmp_path, grey):
    volume = read_volume(write_tiff(tmp_path / "ct.tif", grey, spacing=1), lazy=False)
    assert type(volume.data) is np.ndarray


# ---------------------------------------------------------------------------------- 2D SEM
def test_read_image2d(tmp_path):
    bse = np.arange(20, dtype=np.uint16).reshape(4, 5)
    path = write_image2d(tmp_path / "bse.tif", bse, spacing=0.1)
    np.testing.assert_array_equal(read_image2d(path), bse)
    grey_rgb = tmp_path / "grey.png"
    Image.fromarray(np.repeat(bse.astype(np.uint8)[..., None], 3, axis=-1)).save(grey_rgb)
    np.testing.assert_array_equal(read_image2d(grey_rgb), bse)
    colour = tmp_path / "colour.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (4, 5, 3), np.uint8)).save(colour)
    with pytest.raises(InputError, match="colour image") as error:
        read_image2d(colour)
    _assert_names(error, colour)
    assert read_image2d(colour, allow_rgb=True).shape == (4, 5, 3)
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match="is 3D, expected a 2D section") as error:
        read_image2d(stack)
    _assert_names(error, stack)


@pytest.mark.parametrize(
    ("stem", "symbol"),
    [
        ("Ca", "Ca"),
        ("Mg_K", "Mg"),
        ("Si Ka", "Si"),
        ("eds_Ca", "Ca"),
        ("FeLa1", "Fe"),
        ("K_Ka", "K"),
        ("al", "Al"),
        ("Map 3 - O Ka1", "O"),
        ("Ka", None),
        ("BSE", None),
        ("overview", None),
    ],
)
def test_element_from_name(stem, symbol):
    assert element_from_name(stem) == symbol


def _eds_folder(folder: Path, names: dict[str, tuple[int, int]]) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name, shape in names.items():
        tifffile.imwrite(folder / name, rng.poisson(5, shape).astype(np.uint16))
    return folder


def test_read_eds_maps(tmp_path):
    folder = _eds_folder(
        tmp_path / "eds", {"Si Ka.tif": (4, 5), "Ca.tif": (4, 5), "eds_Mg_K.tiff": (4, 5)}
    )
    (folder / "acquisition.json").write_text("{}")
    maps = read_eds_maps(folder)
    assert isinstance(maps, EDSMaps)
    assert maps.elements == ("Mg", "Si", "Ca") and maps.shape == (4, 5)
    assert maps.stack().shape == (3, 4, 5)
    assert maps.stack(["Ca", "Mg"]).shape == (2, 4, 5)
    with pytest.raises(InputError, match="no map for Fe"):
        maps.stack(["Fe"])


def test_eds_bad_input(tmp_path):
    unknown = _eds_folder(tmp_path / "unknown", {"Ca.tif": (4, 5), "Xx_map.tif": (4, 5)})
    with pytest.raises(InputError, match="names no chemical element") as error:
        read_eds_maps(unknown)
    _assert_names(error, unknown / "Xx_map.tif")
    mixed = _eds_folder(tmp_path / "mixed", {"Ca.tif": (4, 5), "Si.tif": (4, 6)})
    with pytest.raises(InputError, match="shape") as error:
        read_eds_maps(mixed)
    _assert_names(error, mixed / "Si.tif")
    twice = _eds_folder(tmp_path / "twice", {"Ca.tif": (4, 5), "Ca_K.tif": (4, 5)})
    with pytest.raises(InputError, match="second map of Ca"):
        read_eds_maps(twice)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no element maps") as error:
        read_eds_maps(empty)
    _assert_names(error, empty)


class _Library:
    """Stands in for corrtomo.phases.PhaseLibrary (same duck type)."""

    ids = (1, 2, 3)
    names = ("calcite", "dolomite", "talc")
    colors: ClassVar[dict] = {1: (230, 25, 75), 2: (60, 180, 75), 3: (0, 130, 200)}

    def id_of(self, name):
        return self.ids[self.names.index(name)]


LEGEND_COLOURS = {"calcite": (230, 25, 75), "dolomite": (60, 180, 75), "talc": (0, 130, 200)}


def _mineral_image(truth: np.ndarray, noise: int = 0) -> np.ndarray:
    palette = np.array([(0, 0, 0), *LEGEND_COLOURS.values()], dtype=np.int64)
    rgb = palette[truth]
    if noise:
        rgb = rgb + np.random.default_rng(3).integers(-noise, noise + 1, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture
def truth_map():
    truth = np.random.default_rng(4).integers(0, 4, (12, 10)).astype(np.uint8)
    truth[0, 0] = 3
    return truth


def test_mineral_map_dict_legend_with_noise(tmp_path, truth_map):
    path = tmp_path / "map.png"
    Image.fromarray(_mineral_image(truth_map, noise=6)).save(path)
    legend = {f"#{r:02x}{g:02x}{b:02x}": name for name, (r, g, b) in LEGEND_COLOURS.items()}
    legend["#000000"] = "background"
    ids = read_mineral_map(path, legend=legend, library=_Library())
    assert ids.dtype == np.uint8
    np.testing.assert_array_equal(ids, truth_map)
    by_id = {"230,25,75": 1, "60,180,75": 2, "0,130,200": 3}  # colour -> id, no library
    np.testing.assert_array_equal(read_mineral_map(path, legend=by_id), truth_map)


def test_mineral_map_unknown_colour_is_unclassified(tmp_path, truth_map):
    image = _mineral_image(truth_map)
    image[0, 0] = (255, 255, 0)
    path = tmp_path / "map.tif"
    write_image2d(path, image)
    ids = read_mineral_map(path, legend={"calcite": "#e6194b"}, library=_Library())
    assert ids[0, 0] == 0
    np.testing.assert_array_equal(ids == 1, truth_map == 1)


@pytest.mark.parametrize("kind", ["csv", "json", "yaml"])
def test_mineral_map_legend_files(tmp_path, truth_map, kind):
    path = tmp_path / "map.png"
    Image.fromarray(_mineral_image(truth_map)).save(path)
    legend = tmp_path / f"legend.{kind}"
    if kind == "csv":
        rows = [f"{name},{r},{g},{b}" for name, (r, g, b) in LEGEND_COLOURS.items()]
        legend.write_text("Mineral,R,G,B\n" + "\n".join(rows) + "\n")
    elif kind == "json":
        records = [{"name": n, "color": list(c)} for n, c in LEGEND_COLOURS.items()]
        legend.write_text(json.dumps({"legend": records}))
    else:
        legend.write_text(
            "\n".join(f"'#{r:02x}{g:02x}{b:02x}': {n}" for n, (r, g, b) in LEGEND_COLOURS.items())
        )
    assert len(load_legend(legend)) == 3
    np.testing.assert_array_equal(
        read_mineral_map(path, legend=legend, library=_Library()), truth_map
    )


def test_mineral_map_bad_input(tmp_path, truth_map):
    path = tmp_path / "map.png"
    Image.fromarray(_mineral_image(truth_map)).save(path)
    with pytest.raises(InputError, match="legend="):
        read_mineral_map(path)
    with pytest.raises(InputError, match="library="):
        read_mineral_map(path, legend={"calcite": "#e6194b"})
    with pytest.raises(InputError, match="'quartz' is not in the phase library"):
        read_mineral_map(path, legend={"quartz": "#e6194b"}, library=_Library())
    ids_path = tmp_path / "ids.tif"
    write_image2d(ids_path, truth_map + 5)
    with pytest.raises(InputError, match="does not define") as error:
        read_mineral_map(ids_path, library=_Library())
    _assert_names(error, ids_path)


def test_mineral_map_single_channel_ids(tmp_path, truth_map):
    path = write_image2d(tmp_path / "ids.tif", truth_map)
    np.testing.assert_array_equal(read_mineral_map(path, library=_Library()), truth_map)
    remapped = read_mineral_map(path, legend={1: "talc", 3: "calcite"}, library=_Library())
    np.testing.assert_array_equal(remapped, np.choose(truth_map, [0, 3, 0, 1]))


def test_write_label_png(tmp_path, truth_map):
    path = write_label_png(tmp_path / "phases.png", truth_map, _Library.colors)
    rgb = np.asarray(Image.open(path))
    np.testing.assert_array_equal(rgb[truth_map == 2][0], (60, 180, 75))
    np.testing.assert_array_equal(rgb[truth_map == 0][0], (0, 0, 0))
    legend = {"#{:02x}{:02x}{:02x}".format(*c): i for i, c in _Library.colors.items()}
    np.testing.assert_array_equal(read_mineral_map(path, legend=legend), truth_map)
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ atomicity
def _failing_dask(shape=(6, 7, 9)):
    def block(x, block_info=None):
        if block_info[0]["chunk-location"][0] == 1:
            raise RuntimeError("disk full")
        return x

    return da.zeros(shape, dtype=np.uint16, chunks=(3, 7, 9)).map_blocks(block, dtype=np.uint16)


def test_failed_tiff_write_leaves_nothing(tmp_path):
    target = tmp_path / "ct.tif"
    with pytest.raises(RuntimeError, match="disk full"):
        write_tiff(target, _failing_dask(), spacing=1)
    assert not target.exists() and _leftovers(tmp_path) == []
    write_tiff(target, np.ones((2, 3, 4), np.uint8), spacing=1)
    before = _fingerprint(target)
    with pytest.raises(RuntimeError):
        write_tiff(target, _failing_dask(), spacing=1)
    assert _fingerprint(target) == before and _leftovers(tmp_path) == []


def test_failed_ome_zarr_write_leaves_nothing(tmp_path):
    target = tmp_path / "ct.ome.zarr"
    with pytest.raises(RuntimeError, match="disk full"):
        write_ome_zarr(target, _failing_dask(), spacing=1, chunks=3)
    assert not target.exists() and _leftovers(tmp_path) == []
    write_ome_zarr(target, np.ones((2, 3, 4), np.uint8), spacing=1)
    before = _fingerprint(target)
    with pytest.raises(RuntimeError):
        write_ome_zarr(target, _failing_dask(), spacing=1, chunks=3)
    assert _fingerprint(target) == before and _leftovers(tmp_path) == []


def test_writers_reject_bad_arrays(tmp_path):
    with pytest.raises(InputError, match="3D"):
        write_tiff(tmp_path / "a.tif", np.zeros((3, 4)), spacing=1)
    with pytest.raises(InputError, match="3D"):
        write_ome_zarr(tmp_path / "a.zarr", np.zeros((3, 4)), spacing=1)
    with pytest.raises(InputError, match="ImageJ"):
        write_tiff(
            tmp_path / "a.tif", np.zeros((2, 3, 4), np.uint32), spacing=1, metadata_format="imagej"
        )
    with pytest.raises(InputError, match="spacing"):
        write_tiff(tmp_path / "a.tif", np.zeros((2, 3, 4)), spacing=(1, 2))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------- inputs never modified
def test_reading_never_modifies_inputs(tmp_path, grey):
    import h5py

    inputs = [
        write_tiff(tmp_path / "a.tif", grey, spacing=1, compression=None),
        write_tiff(tmp_path / "b.tif", grey, spacing=1),
        write_ome_zarr(tmp_path / "c.ome.zarr", grey, spacing=1, n_levels=2),
        tmp_path / "d.raw",
        tmp_path / "e.h5",
        _eds_folder(tmp_path / "eds", {"Ca.tif": (4, 5)}),
    ]
    inputs[3].write_bytes(grey.tobytes())
    with h5py.File(inputs[4], "w") as handle:
        handle["v"] = grey
    before = {str(p): _fingerprint(p) for p in inputs}
    for path in inputs[:3]:
        read_volume(path).to_numpy()
    read_volume(inputs[3], shape=grey.shape, dtype="uint16", spacing=1).to_numpy()
    read_volume(inputs[4], spacing=1).to_numpy()
    read_eds_maps(inputs[5])
    assert {str(p): _fingerprint(p) for p in inputs} == before
    assert not os.listdir(tmp_path / "c.ome.zarr") == []
