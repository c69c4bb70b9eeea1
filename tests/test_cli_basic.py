"""The CLI shell: help, version, and the foundation's bad-input contract (one line, exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from corrtomo import __version__
from corrtomo.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("synth", "info", "phases", "analyze"):
        assert command in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


def test_phases_table(capsys):
    assert main(["phases", "talc-saxolite", "--energy", "5.4"]) == 0
    out = capsys.readouterr().out
    assert "calcite" in out and "16.71" in out  # attenuation length of CaCO3 at 5.4 keV, um


def test_info_reads_metadata(tmp_path, capsys):
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, np.zeros((4, 5, 6), np.uint16), imagej=True, resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 0.5, "unit": "um"})
    assert main(["info", str(path)]) == 0
    assert "4x5x6" in capsys.readouterr().out


def _two_d(tmp_path):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, np.zeros((5, 6), np.uint8))
    return ["info", str(path), "--voxel-size", "1"], "2D"


def _mixed_folder(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    tifffile.imwrite(folder / "s1.tif", np.zeros((5, 6), np.uint8))
    tifffile.imwrite(folder / "s2.tif", np.zeros((5, 7), np.uint8))
    return ["info", str(folder), "--voxel-size", "1"], "s2.tif"


def _raw_mismatch(tmp_path):
    path = tmp_path / "v.raw"
    path.write_bytes(b"\0" * 100)
    return ["info", str(path), "--voxel-size", "1", "--shape", "4", "5", "6", "--dtype", "uint16"], "bytes"


def _bad_formula(tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text("phases:\n  - {id: 1, name: x, formula: 'Ca(CO3', density: 2.7}\n")
    return ["phases", str(path)], "lib.yaml"


def _unknown_element(tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text("phases:\n  - {id: 1, name: x, formula: 'CaXq3', density: 2.7}\n")
    return ["phases", str(path)], "lib.yaml"


def _no_voxel_size(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    return ["info", str(path)], "voxel size"


@pytest.mark.parametrize("case", [_two_d, _mixed_folder, _raw_mismatch, _bad_formula, _unknown_element, _no_voxel_size])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    args, fragment = case(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert fragment in err, err
    # inputs untouched, nothing written
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert before == after
