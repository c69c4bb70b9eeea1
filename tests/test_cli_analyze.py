"""``corrtomo analyze`` end to end on a tiny labelled volume, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from corrtomo import __version__
from corrtomo.cli import main

LIBRARY = """phases:
  - {id: 1, name: calcite, formula: CaCO3, density: 2.75}
  - {id: 2, name: talc, formula: Mg3Si4O10(OH)2, density: 2.76}
"""


def hand_built() -> tuple[np.ndarray, np.ndarray]:
    """Pure, binary, A|B|A sandwich and 0.5 %-speck particles (1 = calcite, 2 = talc), plus one
    particle touching the border (pure talc, excluded by default)."""
    particles = np.zeros((14, 24, 12), dtype=np.uint16)
    phases = np.zeros(particles.shape, dtype=np.uint8)
    particles[1:7, 1:7, 1:7] = 1
    phases[1:7, 1:7, 1:7] = 1
    particles[1:7, 9:15, 1:7] = 2
    phases[1:7, 9:15, 1:4] = 1
    phases[1:7, 9:15, 4:7] = 2
    particles[1:7, 17:23, 5:11] = 3
    phases[1:7, 17:23, 5:11] = 1
    phases[1:7, 17:23, 7:9] = 2
    particles[8:13, 1:6, 2:10] = 4
    phases[8:13, 1:6, 2:10] = 1
    phases[10, 3, 5] = 2
    particles[9:14, 12:16, 4:8] = 5
    phases[9:14, 12:16, 4:8] = 2
    return particles, phases


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    particles, phases = hand_built()
    paths = {
        "particles": tmp_path / "particles.tif",
        "phases": tmp_path / "phases.tif",
        "library": tmp_path / "library.yaml",
    }
    tifffile.imwrite(paths["particles"], particles)
    tifffile.imwrite(paths["phases"], phases)
    paths["library"].write_text(LIBRARY)
    return paths


def run(inputs: dict[str, Path], out: Path, *extra: str, library: bool = True) -> int:
    argv = [
        "analyze",
        "--particles",
        str(inputs["particles"]),
        "--phases",
        str(inputs["phases"]),
        "--out",
        str(out),
        "--quiet",
    ]
    if "--voxel-size" not in extra:
        argv += ["--voxel-size", "0.5"]
    if library:
        argv += ["--phase-library", str(inputs["library"])]
    return main([*argv, *extra])


def test_analyze_end_to_end(inputs, tmp_path, capsys):
    out = tmp_path / "result"
    rc = run(
        inputs,
        out,
        "--bootstrap",
        "200",
        "--spectra",
        "--stereology",
        "--stereology-planes",
        "4",
        "--representativeness",
        "--piece-size-um",
        "3.5,6,3",
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err == ""
    written = {p.name for p in out.iterdir()}
    assert written == {
        "particles.csv",
        "particles.parquet",
        "grains.csv",
        "liberation.csv",
        "summary.json",
        "liberation_spectrum.csv",
        "size_distribution.csv",
        "grain_particle_volume.csv",
        "stereology.csv",
        "representativeness.csv",
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_particles"] == 5
    assert summary["n_particles_counted"] == 4
    assert summary["voxel_size_um"] == 0.5
    assert summary["version"] == __version__
    voxels = 216 * 3 + 200 + 80
    calcite = 216 + 108 + 144 + 199
    assert summary["phase_volume_fractions"]["calcite"] == pytest.approx(calcite / voxels)
    assert summary["phase_volume_fractions"]["talc"] == pytest.approx(1 - calcite / voxels)
    assert summary["liberation_degree"]["calcite"] == pytest.approx(415 / 667)
    assert summary["liberation_degree"]["talc"] == 0.0

    particles = pd.read_csv(out / "particles.csv")
    contract = ["label", "volume_voxels", "volume_um3", "esd_um", "surface_area_um2", "sphericity"]
    contract += ["centroid_z_um", "centroid_y_um", "centroid_x_um", "touches_border"]
    contract += ["vf_calcite", "vf_talc", "grains_calcite", "grains_talc", "dominant_phase"]
    assert set(contract) <= set(particles.columns)
    assert particles.set_index("label").loc[3, "grains_calcite"] == 2  # the sandwich
    assert particles["volume_um3"].sum() == pytest.approx(voxels * 0.125)
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "particles.parquet"), particles, check_dtype=False
    )

    grains = pd.read_csv(out / "grains.csv")
    assert {
        "grain_id",
        "particle_label",
        "phase",
        "volume_um3",
        "esd_um",
        "exposed_surface_fraction",
    } <= set(grains.columns)

    liberation = pd.read_csv(out / "liberation.csv")
    assert list(liberation.columns[:3]) == ["phase", "esd_min_um", "esd_max_um"]
    for column in ("n_particles", "volume_free_um3", "volume_total_um3", "liberation_degree"):
        assert column in liberation.columns
    row = liberation[(liberation["phase"] == "calcite") & liberation["esd_min_um"].isna()].iloc[0]
    assert row["volume_free_um3"] == pytest.approx(415 * 0.125)
    assert row["ld_ci_low"] <= row["liberation_degree"] <= row["ld_ci_high"]

    spectrum = pd.read_csv(out / "liberation_spectrum.csv")
    assert spectrum.groupby("phase")["phase_volume_um3"].sum()["calcite"] == pytest.approx(
        667 * 0.125
    )
    sizes = pd.read_csv(out / "size_distribution.csv")
    assert sizes[sizes["group"] == "all"]["mass_fraction"].sum() == pytest.approx(1.0)
    stereo = pd.read_csv(out / "stereology.csv")
    assert {"ld_2d", "ld_3d"} <= set(stereo.columns)
    representative = pd.read_csv(out / "representativeness.csv")
    assert (representative["n_pieces"] == 8).all()


def test_analyze_without_library_names_phases_by_id(inputs, tmp_path):
    out = tmp_path / "plain"
    assert run(inputs, out, "--bootstrap", "0", "--include-border", library=False) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["liberation_degree"]) == {"phase1", "phase2"}
    assert summary["n_particles_counted"] == 5
    assert "ld_ci_low" not in pd.read_csv(out / "liberation.csv").columns


def test_voxel_size_from_file_and_existing_folder_kept(inputs, tmp_path):
    from corrtomo.io import write_tiff

    particles, phases = hand_built()
    write_tiff(inputs["particles"], particles, spacing=(2.0, 1.0, 1.0))
    write_tiff(inputs["phases"], phases, spacing=(2.0, 1.0, 1.0))
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "liberation.csv").write_text("old")
    argv = ["analyze", "--particles", str(inputs["particles"]), "--phases", str(inputs["phases"])]
    assert main([*argv, "--out", str(out), "-q", "--bootstrap", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["voxel_size_um"] == [2.0, 1.0, 1.0]
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "liberation.csv").read_text() != "old"


def _bad(kind: str, inputs: dict[str, Path]) -> tuple[list[str], str]:
    """Break one input; return extra CLI arguments and the file the message must name."""
    particles, phases = hand_built()
    if kind == "shape":
        tifffile.imwrite(inputs["phases"], phases[:-1])
        return [], inputs["phases"].name
    if kind == "float":
        tifffile.imwrite(inputs["particles"], particles.astype(np.float32))
        return [], inputs["particles"].name
    if kind == "negative":
        labels = particles.astype(np.int32)
        labels[0, 0, 0] = -1
        tifffile.imwrite(inputs["particles"], labels)
        return [], inputs["particles"].name
    if kind == "unknown-phase":
        phases[phases == 2] = 7
        tifffile.imwrite(inputs["phases"], phases)
        return [], inputs["phases"].name
    if kind == "empty":
        tifffile.imwrite(inputs["particles"], np.zeros_like(particles))
        return [], inputs["particles"].name
    if kind == "filtered":
        return ["--min-esd-um", "100"], inputs["particles"].name
    if kind == "voxel-zero":
        return ["--voxel-size", "0"], "--voxel-size"
    if kind == "voxel-negative":
        return ["--voxel-size", "0.5,-1,0.5"], "--voxel-size"
    if kind == "missing":
        inputs["phases"].unlink()
        return [], inputs["phases"].name
    if kind == "bad-library":
        inputs["library"].write_text("phases: [{id: 1, name: x}]\n")
        return [], inputs["library"].name
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "shape",
        "float",
        "negative",
        "unknown-phase",
        "empty",
        "filtered",
        "voxel-zero",
        "voxel-negative",
        "missing",
        "bad-library",
    ],
)
def test_bad_input_exit_2_one_line_no_output(kind, inputs, tmp_path, capsys):
    extra, named = _bad(kind, inputs)
    out = tmp_path / "out"
    rc = run(inputs, out, "--bootstrap", "0", *extra)
    captured = capsys.readouterr()
    assert rc == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert named in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in inputs.values() if p.exists()
    )
