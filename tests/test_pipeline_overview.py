"""The pipeline's overview stage: the CT located inside a coarser scan, particle sizes across scales."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from corrtomo.pipeline import pair_config, parse_config, run_pipeline
from corrtomo.synth import make_scale_pair, write_scale_pair
from test_scale_pair import SMALL_PAIR


@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    pair = make_scale_pair(SMALL_PAIR, seed=21, scale_ratio=4.0, rotation_deg=20.0, tilt_deg=3.0)
    write_scale_pair(pair, folder / "pair")
    settings = pair_config(folder / "pair", prefix="pair")
    # the section pose is given (the 64^3 pillar is too small for a confident hint-free search);
    # what is tested here is the overview stage
    for section in settings["sections"]:
        section["pose"] = f"pair/nano/sem/{section['name']}/pose.json"
    config = parse_config(settings, base_dir=folder)
    result = run_pipeline(config, folder / "run", quiet=True)
    return pair, folder / "run", result


def test_overview_locates_the_ct_and_compares_scales(pair_run):
    pair, run, result = pair_run
    assert "overview" in result.ran
    transform = json.loads((run / "overview" / "transform.json").read_text())
    assert transform["confident"]
    accuracy = json.loads((run / "evaluate" / "accuracy.json").read_text())
    assert accuracy["overview_corner_error_voxels"] < 1.0
    assert abs(transform["scale"] - 1 / pair.scale_ratio) < 0.02 / pair.scale_ratio
    table = pd.read_parquet(run / "overview" / "cross_scale.parquet")
    assert set(table["source"]) == {"nano", "micro region", "micro pieces"}
    summary = json.loads((run / "overview" / "cross_scale_summary.json").read_text())
    print("cross-scale summary", summary)
    # the paper's findings: the coarser scan shifts the PSD to larger sizes and loses the fines
    assert summary["micro region"]["median_esd_um"] > summary["nano"]["median_esd_um"]
    def below(source):
        return summary[source]["n_particles"] * summary[source]["share_below_micro_cutoff"]

    assert below("nano") > 3 * below("micro region")  # measured 49 against 5
    # the nano counts are the pipeline's own particles
    particles = pd.read_parquet(run / "measure" / "particles.parquet")
    assert summary["nano"]["n_particles"] <= len(particles)
    assert np.isfinite(table["density_per_1000um3"]).all()


def test_report_shows_the_cross_scale_section(pair_run):
    _, run, result = pair_run
    html = result.report.read_text()
    for figure in ("fig-cross-scale-overlay", "fig-cross-scale-psd"):
        assert f'id="{figure}"' in html
    summary = json.loads((run / "overview" / "cross_scale_summary.json").read_text())
    assert f'data-value="{summary["nano"]["median_esd_um"]!r}"' in html


def test_overview_bad_input(pair_run, tmp_path):
    from corrtomo._shared import InputError

    _, run, _ = pair_run
    folder = run.parent
    settings = pair_config(folder / "pair", prefix=str(folder / "pair"))
    settings["overview"]["path"] = str(folder / "missing.tif")
    with pytest.raises(InputError, match="overview volume not found"):
        run_pipeline(parse_config(settings), tmp_path / "run", quiet=True)
    settings = pair_config(folder / "pair", prefix=str(folder / "pair"))
    settings["overview"]["voxel_size_um"] = 0.3  # the file says 0.6
    with pytest.raises(InputError, match=r"overview\.voxel_size_um"):
        run_pipeline(parse_config(settings), tmp_path / "run2", quiet=True)
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()
