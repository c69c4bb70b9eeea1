"""The whole pipeline (``corrtomo.pipeline`` and ``corrtomo run``) on a small digital twin.

One talc-saxolite twin is written once per module; its phase labels come only from its simulated
EDS section, classified into minerals and registered hint-free into the CT (the twin's truth
enters only the ``evaluate`` stage). The twin is 112^3 voxels of 0.1 um, seed 3: a size at which
the hint-free registration of its section is confident and the one section labels all four
minerals (seed 0 at this size labels only 21 dolomite voxels, and at 96 x 112 x 112 its
registration is not confident).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from corrtomo._shared import InputError
from corrtomo.cli._app import run_app
from corrtomo.io import read_volume
from corrtomo.pipeline import (
    STAGE_NAMES,
    RunConfig,
    check_inputs,
    config_template,
    demo_config,
    load_config,
    parse_config,
    run_pipeline,
)
from corrtomo.pipeline._runner import content_hash
from corrtomo.pipeline._stages import STAGES
from corrtomo.synth import get_preset, make_sample, write_sample

PRESET, SHAPE, SEED = "talc-saxolite", (112, 112, 112), 3
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
UNTIL = "evaluate"
#: the stages of a run that stops after `evaluate`, in order
RUN_STAGES = [n for n in STAGE_NAMES[: STAGE_NAMES.index(UNTIL) + 1] if n != "overview"]  # no overview: volume


# ------------------------------------------------------------------------------------------
# helpers and fixtures
# ------------------------------------------------------------------------------------------


def _merge(base: dict, changes: dict) -> dict:
    """`base` with `changes` merged in (nested mappings merged key by key)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _config(sample_dir: Path, changes: dict | None = None, **kwargs) -> RunConfig:
    return parse_config(_merge(demo_config(sample_dir, **kwargs), changes or {}), base_dir=sample_dir)


def _write_config(path: Path, sample_dir: Path, changes: dict | None = None) -> Path:
    """A YAML config at `path` whose input paths point into `sample_dir` (absolute)."""
    data = _merge(demo_config(sample_dir, prefix=str(sample_dir)), changes or {})
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _affected(changed: tuple[str, ...], names: list[str]) -> list[str]:
    """The `changed` stages and every stage of `names` that reads from them, directly or not."""
    hit = set(changed)
    for stage in STAGES:  # STAGES is in dependency order
        if hit & set(stage.needs):
            hit.add(stage.name)
    return [n for n in names if n in hit]


def _stage_files(run_dir: Path) -> dict[str, str]:
    """Content hash of every file in the run's stage folders, by relative path."""
    out = {}
    for name in STAGE_NAMES:
        folder = run_dir / name
        if folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                out[str(path.relative_to(run_dir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _volume(run_dir: Path, stage: str, name: str) -> np.ndarray:
    """A stage's output volume, read whole."""
    return np.asarray(read_volume(run_dir / stage / name, lazy=False).data)


def _manifest(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "manifest.json").read_text())


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("corrtomo: error:"), err
    assert "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("twin") / "sample"
    write_sample(make_sample(PRESET, shape=SHAPE, seed=SEED), folder, preview=False)
    return folder


@pytest.fixture(scope="module")
def reference(sample_dir, tmp_path_factory):
    """An uninterrupted run through `evaluate`; tests that change things work on copies."""
    return run_pipeline(_config(sample_dir), tmp_path_factory.mktemp("reference") / "run", until=UNTIL, quiet=True)


@pytest.fixture()
def run_copy(reference, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(reference.run_dir, target)
    return target


# ------------------------------------------------------------------------------------------
# 1. accuracy with labels from the registered section only
# ------------------------------------------------------------------------------------------


def test_accuracy_with_labels_only_from_registered_section(reference, sample_dir):
    assert reference.ran == RUN_STAGES and reference.skipped == []
    run = reference.run_dir
    # the section was found by the hint-free search, not given
    registered = _manifest(run, "register")["result"]["section01"]
    assert registered["method"] != "given" and registered["confidence"] > 0.5
    # no stage before `evaluate` read a truth file (their content hashes are not among its inputs)
    truth = {content_hash(p) for p in [sample_dir / "truth" / "phases.tif", sample_dir / "truth" / "particles.tif",
                                       sample_dir / "sem" / "section01" / "pose.json"]}
    for stage in RUN_STAGES[:-1]:
        manifest = _manifest(run, stage)
        assert not truth & set(manifest["inputs"].values()), stage
        assert "truth" not in json.dumps(manifest["params"]), stage
    labelled = _manifest(run, "labels")["result"]
    assert labelled["missing_phases"] == []

    accuracy = json.loads((run / "evaluate" / "accuracy.json").read_text())
    print("\naccuracy:", json.dumps(accuracy, indent=1))
    print("labelled voxels:", labelled["labelled_voxels"])
    # measured (112^3, seed 3): mean IoU 0.906; |vf error| <= 0.007; median ESD -3.9 %; F1 0.995;
    # pose error 0.6 voxel
    assert accuracy["pose_error_voxels"]["section01"] < 1.5
    assert accuracy["mean_phase_iou"] >= 0.90, accuracy["phase_iou"]
    assert min(accuracy["phase_iou"].values()) >= 0.85, accuracy["phase_iou"]
    assert max(abs(v) for v in accuracy["volume_fraction_error"].values()) <= 0.02, accuracy["volume_fraction_error"]
    assert abs(accuracy["median_esd_error"]) <= 0.05, accuracy["median_esd_um"]
    assert accuracy["particle_f1"] >= 0.95
    # liberation degree vs truth: asserted to 0.05 on the demo sample (tests/test_demo.py); on this
    # smaller one (102 particles) measured calcite +0.110, dolomite -0.005, magnesite +0.056, talc
    # -0.032: its calcite particles are small (120-540 voxels) and their 2-12-voxel talc inclusions
    # lie below the detection threshold of the refinement
    assert set(accuracy["ld_error"]) == set(accuracy["phase_iou"])
    assert all(v is not None and math.isfinite(v) for v in accuracy["ld_error"].values()), accuracy["ld_error"]
    # the published summary is the analysis stage's
    assert reference.summary == run / "summary.json"
    assert reference.summary.read_bytes() == (run / "analysis" / "summary.json").read_bytes()


def test_truth_enters_only_the_evaluate_stage(sample_dir, run_copy):
    # the same run without truth: every stage up to analysis is up to date, evaluate is off,
    # and `until="evaluate"` still stops there (the report does not run)
    result = run_pipeline(_config(sample_dir, truth=False), run_copy, until=UNTIL, quiet=True)
    assert result.ran == []
    assert result.skipped == RUN_STAGES[:-1]
    assert not (run_copy / "report").exists()


# ------------------------------------------------------------------------------------------
# 2. re-run, 3. changed parameters and --from
# ------------------------------------------------------------------------------------------


def test_rerun_skips_every_stage(reference, sample_dir):
    before = _stage_files(reference.run_dir)
    assert {"measure/particles.parquet", "analysis/summary.json", "evaluate/accuracy.json"} <= set(before)
    assert any(k.startswith("phases/phases.ome.zarr/") for k in before)
    started = time.perf_counter()
    result = run_pipeline(_config(sample_dir), reference.run_dir, until=UNTIL, quiet=True)
    seconds = time.perf_counter() - started
    print(f"\nre-run of an up-to-date run: {seconds:.2f} s")
    assert result.ran == []
    assert result.skipped == RUN_STAGES
    assert _stage_files(reference.run_dir) == before
    assert "evaluate: up to date, skipped" in (reference.run_dir / "run.log").read_text()


def test_overall_progress_bar_counts_every_stage(reference, sample_dir):
    calls = []
    run_pipeline(_config(sample_dir), reference.run_dir, until=UNTIL, quiet=True,
                 progress=lambda step, done, total: calls.append((step, done, total)))
    overall = [c for c in calls if c[0] == "pipeline"]
    assert [done for _, done, _ in overall] == list(range(len(RUN_STAGES) + 1))
    assert {total for _, _, total in overall} == {len(RUN_STAGES) + 1}  # + report, after `until`


def test_changed_parameter_reruns_its_stage_and_dependents_only(sample_dir, run_copy):
    # (stages whose parameters change, config change); each case keeps the earlier changes
    cases = [
        (("particles",), {"stages": {"particles": {"h_um": 0.05}}}),
        # the threshold is a parameter of analysis and of evaluate (liberation vs truth)
        (("analysis", "evaluate"), {"stages": {"particles": {"h_um": 0.05}, "analysis": {"threshold": 0.95}}}),
        # train (phases options) -> phases -> measure ...; particles comes later but does not read them
        (("train",), {"stages": {"particles": {"h_um": 0.05}, "analysis": {"threshold": 0.95},
                                 "phases": {"n_estimators": 32}}}),
        # the refinement reads phases and particles; nothing before it reads it
        (("refine",), {"stages": {"particles": {"h_um": 0.05}, "analysis": {"threshold": 0.95},
                                  "phases": {"n_estimators": 32}, "refine": {"false_alarms": 0.01}}}),
    ]
    for changed, changes in cases:
        expected = _affected(changed, RUN_STAGES)
        before = _stage_files(run_copy)
        result = run_pipeline(_config(sample_dir, changes), run_copy, until=UNTIL, quiet=True)
        assert result.ran == expected, (changed, result.ran)
        assert result.skipped == [n for n in RUN_STAGES if n not in expected]
        after = _stage_files(run_copy)
        for name in result.skipped:  # untouched, byte for byte
            assert {k: v for k, v in after.items() if k.startswith(f"{name}/")} == \
                   {k: v for k, v in before.items() if k.startswith(f"{name}/")}, name
        for name in result.ran:  # new manifests with the new parameters
            assert after[f"{name}/manifest.json"] != before[f"{name}/manifest.json"], name
    assert _affected(("particles",), RUN_STAGES) == ["particles", "refine", "measure", "analysis", "evaluate"]
    assert _affected(("train",), RUN_STAGES) == ["train", "phases", "refine", "measure", "analysis", "evaluate"]
    assert _affected(("refine",), RUN_STAGES) == ["refine", "measure", "analysis", "evaluate"]
    assert _manifest(run_copy, "particles")["params"]["h_um"] == 0.05
    # the changed threshold reached the summary
    assert json.loads((run_copy / "summary.json").read_text())["threshold"] == 0.95

    # --from redoes that stage and every stage after it, changed or not
    result = run_pipeline(_config(sample_dir, cases[-1][1]), run_copy, from_stage="phases", until=UNTIL, quiet=True)
    assert result.ran == RUN_STAGES[RUN_STAGES.index("phases"):]
    assert result.skipped == RUN_STAGES[: RUN_STAGES.index("phases")]


# ------------------------------------------------------------------------------------------
# 4. a killed run resumes and gives the results of an uninterrupted one
# ------------------------------------------------------------------------------------------


def _kill_when(process: subprocess.Popen, log: Path, line: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text():
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {line!r}:\n"
                        + (log.read_text() if log.exists() else "(no run.log)"))
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=30)
    pytest.fail(f"{line!r} not logged within {timeout_s} s")


def test_killed_run_resumes_and_matches_uninterrupted_run(reference, sample_dir, tmp_path):
    # The config file sits in the sample folder so its keys equal the reference run's; the new run
    # folder starts with the reference's finished stages up to `labels` (the same keys: a CLI run
    # in a new process reuses them), then runs `train` and is killed in `phases`.
    config_path = sample_dir / "kill-test.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(sample_dir), sort_keys=False))
    assert load_config(config_path) == _config(sample_dir)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before_train = RUN_STAGES[: RUN_STAGES.index("train")]
    for name in before_train:
        shutil.copytree(reference.run_dir / name, run_dir / name)

    command = [sys.executable, "-m", "corrtomo.cli", "run", str(config_path), "--out", str(run_dir),
               "--until", UNTIL, "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(process, run_dir / "run.log", "phases: running")
    assert process.returncode == -signal.SIGKILL
    log = (run_dir / "run.log").read_text()
    for name in before_train:
        assert f"{name}: up to date, skipped" in log, log
    assert "train: done" in log
    # the interrupted stage left only its hidden temporary folder
    leftovers = sorted(p.name for p in run_dir.glob(".*.tmp-*"))
    assert [p.split(".tmp-")[0] for p in leftovers] == [".phases"], leftovers
    assert not (run_dir / "phases").exists()
    assert (run_dir / "train" / "manifest.json").is_file()

    result = run_pipeline(load_config(config_path), run_dir, until=UNTIL, quiet=True)
    assert result.skipped == RUN_STAGES[: RUN_STAGES.index("phases")]
    assert result.ran == RUN_STAGES[RUN_STAGES.index("phases"):]
    assert list(run_dir.glob(".*.tmp-*")) == []
    assert "removed 1 unfinished stage folder" in (run_dir / "run.log").read_text()

    ref = reference.run_dir
    for stage, name in (("phases", "phases.ome.zarr"), ("particles", "particles.ome.zarr"),
                        ("phases", "uncertainty.ome.zarr"), ("refine", "phases.ome.zarr")):
        resumed = _volume(run_dir, stage, name)
        expected = _volume(ref, stage, name)
        assert resumed.shape == expected.shape and resumed.dtype == expected.dtype
        np.testing.assert_array_equal(resumed, expected, err_msg=name)
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "measure" / "particles.parquet"),
                                  pd.read_parquet(ref / "measure" / "particles.parquet"))
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "analysis" / "liberation.csv"),
                                  pd.read_csv(ref / "analysis" / "liberation.csv"))

    def untimed(path: Path) -> dict:
        return {k: v for k, v in json.loads(path.read_text()).items()
                if not any(word in k for word in ("second", "time", "duration", "started"))}

    assert untimed(run_dir / "summary.json") == untimed(ref / "summary.json")
    assert untimed(run_dir / "evaluate" / "accuracy.json") == untimed(ref / "evaluate" / "accuracy.json")
    for stage in RUN_STAGES:  # same keys as the uninterrupted run
        assert _manifest(run_dir, stage)["key"] == _manifest(ref, stage)["key"], stage


# ------------------------------------------------------------------------------------------
# 5. bad input: one line, before any stage runs
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "key"), [
    ({"stages": {"particles": {"h_mu": 0.3}}}, "stages.particles.h_mu"),
    ({"colour": "red"}, "colour"),
    ({"stages": {"phases": {"n_estimators": "many"}}}, "stages.phases.n_estimators"),
    ({"ct": {"voxel_size_um": -0.1}}, "ct.voxel_size_um"),
    ({"ct": {"path": 3}}, "ct.path"),
    ({"stages": {"registration": {"source": "bsee"}}}, "stages.registration.source"),
    ({"sections": [{"name": "section01", "pixel_size_um": 0.05}]}, "sections.0"),
    ({"execution": {"scheduler": "cluster-7"}}, "execution.scheduler"),
    ({"execution": {"workers": 0}}, "execution.workers"),
])
def test_config_errors_name_the_key(sample_dir, tmp_path, capsys, changes, key):
    with pytest.raises(InputError) as caught:
        _config(sample_dir, changes)
    message = str(caught.value)
    assert "\n" not in message
    assert f"config key '{key}'" in message, message
    if "h_mu" in key or key == "colour":
        assert "unknown key" in message

    config_path = _write_config(tmp_path / "bad.yaml", sample_dir, changes)
    assert run_app(["run", str(config_path), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = _one_line_error(capsys)
    assert str(config_path) in err and f"'{key}'" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("where", "missing"), [
    (("ct", "path"), "no-ct.tif"),
    (("sections", 0, "eds"), "sem/section01/no-eds"),
    (("sections", 0, "bse"), "no-bse.tif"),
    (("truth", "phases"), "truth/no-phases.tif"),
])
def test_missing_input_file_is_named(sample_dir, tmp_path, capsys, where, missing):
    def with_missing(data: dict) -> dict:
        *parents, last = where
        target = data
        for key in parents:
            target = target[key]
        target[last] = missing
        return data

    config = parse_config(with_missing(demo_config(sample_dir)), base_dir=sample_dir)  # valid as a config
    with pytest.raises(InputError) as caught:
        run_pipeline(config, tmp_path / "run", quiet=True)
    assert "\n" not in str(caught.value)
    assert str(sample_dir / missing) in str(caught.value)
    assert not (tmp_path / "run").exists()

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(with_missing(demo_config(sample_dir, prefix=str(sample_dir)))))
    assert run_app(["run", str(config_path), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert str(tmp_path / missing) in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_ct_voxel_size_disagreeing_with_file(sample_dir, tmp_path, capsys):
    config = _config(sample_dir, {"ct": {"voxel_size_um": 0.2}})  # the file says 0.1 um
    with pytest.raises(InputError) as caught:
        run_pipeline(config, tmp_path / "run", quiet=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "ct.tif" in message and "voxel size" in message and "0.2" in message, message
    assert not (tmp_path / "run").exists()

    config_path = _write_config(tmp_path / "config.yaml", sample_dir, {"ct": {"voxel_size_um": 0.2}})
    assert run_app(["run", str(config_path), "--out", str(tmp_path / "run"), "-q"]) == 2
    assert "voxel size" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()
    # within 1 % is the same voxel size
    check_inputs(_config(sample_dir, {"ct": {"voxel_size_um": 0.1005}}))


def test_zarr_ct_without_voxel_size_or_with_oversized_chunks(sample_dir, tmp_path, capsys, monkeypatch):
    """A Zarr CT store with no voxel size, and one whose single chunk exceeds the per-block memory
    budget of the chunked path: one line naming the store, no stage run."""
    import tifffile
    import zarr

    import corrtomo.pipeline._stages as stages

    ct = tifffile.imread(sample_dir / "ct.tif")
    store = tmp_path / "ct.zarr"
    zarr.create_array(store, shape=ct.shape, chunks=ct.shape, dtype=ct.dtype)[:] = ct  # one chunk, no metadata
    config = _config(sample_dir, {"ct": {"path": str(store), "voxel_size_um": None}})
    with pytest.raises(InputError) as caught:
        run_pipeline(config, tmp_path / "run", quiet=True)
    assert str(caught.value).startswith(str(store)) and "no voxel size" in str(caught.value)
    assert not (tmp_path / "run").exists()

    chunked = _config(sample_dir, {"ct": {"path": str(store)}, "execution": {"mode": "chunked"}})
    monkeypatch.setattr(stages, "available_memory_bytes", lambda: 8 * ct.size)  # budget: 1 byte per voxel
    with pytest.raises(InputError) as caught:
        run_pipeline(chunked, tmp_path / "run2", quiet=True)
    message = str(caught.value)
    assert message.startswith(str(store)) and "one chunk of the store" in message and "rechunk" in message
    assert "\n" not in message
    assert not (tmp_path / "run2" / "volume").exists()  # nothing written; the next stage never ran


def test_chunked_run_checks_the_disk_before_it_writes(reference, sample_dir, tmp_path, monkeypatch):
    """Too little disk for the CT copy: one line with the numbers before anything is written.
    Too little for the foreground's smoothed-CT scratch: smoothed again in each pass instead,
    the same foreground."""
    import corrtomo.pipeline._stages as stages

    chunked = _config(sample_dir, {"execution": {"mode": "chunked", "chunk": 40}})
    raw = 4 * int(np.prod(SHAPE))  # the float32 CT; the smoothed CT has the same size
    monkeypatch.setattr(stages, "free_disk_bytes", lambda path: raw // 3)
    with pytest.raises(InputError) as caught:
        run_pipeline(chunked, tmp_path / "full", quiet=True)
    message = str(caught.value)
    assert message.startswith(str(sample_dir / "ct.tif")) and "\n" not in message
    assert f"the CT copy needs {raw / 2e9:.1f} GB to {raw / 1e9:.1f} GB of disk" in message
    assert not (tmp_path / "full" / "volume").exists()

    monkeypatch.setattr(stages, "free_disk_bytes", lambda path: raw - 1)  # the compressed CT fits
    result = run_pipeline(chunked, tmp_path / "run", until="foreground", quiet=True)
    assert result.stages[1].result["smoothing_stored"] is False
    log = (tmp_path / "run" / "run.log").read_text()
    assert "the CT copy may need up to" in log and "computed again in each pass instead of stored" in log
    np.testing.assert_array_equal(_volume(tmp_path / "run", "foreground", "foreground.ome.zarr"),
                                  _volume(reference.run_dir, "foreground", "foreground.ome.zarr"))


def test_registration_failure_stops_and_keeps_finished_stages(tmp_path, capsys):
    # the 48^3 `quick` twin is too small for a confident hint-free match of its section
    sample = tmp_path / "quick"
    write_sample(make_sample("quick", seed=0), sample, preview=False)
    config = parse_config(demo_config(sample), base_dir=sample)
    run_dir = tmp_path / "run"
    with pytest.raises(InputError) as caught:
        run_pipeline(config, run_dir, quiet=True)
    message = str(caught.value)
    print("\n", message)
    assert "\n" not in message
    assert "section 'section01'" in message and "registration failed" in message
    assert str(sample / "sem" / "section01" / "eds") in message
    finished = RUN_STAGES[: RUN_STAGES.index("register")]
    for name in finished:
        assert (run_dir / name / "manifest.json").is_file(), name
    assert not (run_dir / "register").exists()
    assert list(run_dir.glob(".*.tmp-*")) == []  # the failed stage cleaned up after itself

    # the CLI: exit 2, one line; the finished stages are reused
    config_path = sample / "config.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(sample)))
    assert run_app(["run", str(config_path), "--out", str(run_dir), "-q"]) == 2
    assert "registration failed" in _one_line_error(capsys)
    log = (run_dir / "run.log").read_text()
    assert all(f"{name}: up to date, skipped" in log for name in finished), log


def test_scheduler_that_does_not_answer(sample_dir, tmp_path, capsys):
    """``--scheduler`` with no cluster behind it: one line naming the address, exit 2, no run folder."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    config_path = _write_config(tmp_path / "config.yaml", sample_dir)
    run_dir = tmp_path / "run"
    assert run_app(["run", str(config_path), "--out", str(run_dir), "--scheduler", address, "-q"]) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"error: {address}: no dask scheduler answered") or f"{address}: no dask scheduler" in err
    assert not run_dir.exists()
    assert run_app(["run", str(config_path), "--out", str(run_dir), "--scheduler", "mpi", "-q"]) == 2
    assert "--scheduler" in _one_line_error(capsys)
    assert not run_dir.exists()


@pytest.mark.parametrize("flag", ["--from", "--until"])
def test_unknown_stage_name(sample_dir, tmp_path, capsys, flag):
    config_path = _write_config(tmp_path / "config.yaml", sample_dir)
    run_dir = tmp_path / "run"
    assert run_app(["run", str(config_path), "--out", str(run_dir), flag, "segment", "-q"]) == 2
    err = _one_line_error(capsys)
    assert flag in err and "'segment'" in err and "phases" in err  # names the stages there are
    assert not run_dir.exists()
    with pytest.raises(InputError, match="unknown stage"):
        run_pipeline(_config(sample_dir), run_dir, **{"from_stage" if flag == "--from" else "until": "segment"})
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------
# 6. config template and examples
# ------------------------------------------------------------------------------------------


def test_config_template(sample_dir, tmp_path, capsys):
    assert run_app(["config-template"]) == 0
    text = capsys.readouterr().out
    assert text == config_template()
    data = yaml.safe_load(text)
    config = parse_config(data, base_dir=tmp_path)  # validates; files are checked by check_inputs
    # the template shows the defaults
    defaults = RunConfig.model_fields
    assert config.stages == defaults["stages"].default
    assert config.output == defaults["output"].default
    with pytest.raises(InputError, match=r"ct\.path") as caught:
        check_inputs(config)
    assert str(tmp_path / "ct.tif") in str(caught.value)
    # its paths are those of a `corrtomo synth` sample: there it is accepted as it is
    check_inputs(parse_config(data, base_dir=sample_dir))


@pytest.mark.parametrize("preset", ["talc-saxolite", "li-slag"])
def test_example_configs(preset, sample_dir):
    path = EXAMPLES / f"{preset}.yaml"
    text = path.read_text()
    config = load_config(path)
    folder = f"{preset}-sample"
    # the header says how to make the sample and run it
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert f"corrtomo synth {folder} --preset {preset}" in header
    assert f"corrtomo run {path.name}" in header
    settings = get_preset(preset)
    assert config.phase_library == settings.phase_library and config.matrix == settings.matrix
    assert config.ct.path == f"{folder}/ct.tif"
    assert config.ct.voxel_size_um == pytest.approx(settings.voxel_size_um)
    names = [f"section{k + 1:02d}" for k in range(settings.sem.n_sections)]
    assert [s.name for s in config.sections] == names
    for section in config.sections:
        assert section.eds == f"{folder}/sem/{section.name}/eds"
        assert section.bse == f"{folder}/sem/{section.name}/bse.tif"
        assert section.pixel_size_um == pytest.approx(settings.sem.pixel_ratio * settings.voxel_size_um)
    assert config.truth is not None and sorted(config.truth.poses) == names
    if preset == PRESET:  # the same inputs as the config made for a written sample of this preset
        made = demo_config(sample_dir, prefix=folder)
        assert config.ct.model_dump() == made["ct"]
        assert [s.model_dump(exclude_none=True) for s in config.sections] == made["sections"]
        assert config.truth.model_dump(exclude_none=True) == made["truth"]


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def test_run_through_report(sample_dir, run_copy):
    started = time.perf_counter()
    result = run_pipeline(_config(sample_dir), run_copy, quiet=True)
    print(f"\nreport stage: {time.perf_counter() - started:.1f} s")
    assert result.ran == ["report"]
    assert result.skipped == RUN_STAGES
    assert result.report == run_copy / "report.html"
    html = result.report.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html[:500].lower()
    assert result.report.read_bytes() == (run_copy / "report" / "report.html").read_bytes()
    # a second run is all skipped and keeps the report
    again = run_pipeline(_config(sample_dir), run_copy, quiet=True)
    assert again.ran == [] and again.report == result.report


# ------------------------------------------------------------------------------------------
# the chunked (out-of-core) path
# ------------------------------------------------------------------------------------------


def _label_bijection(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """The (found, expected) label pairs, asserted to be a bijection (the same partition)."""
    pairs = np.unique(np.stack([found.ravel(), expected.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    return pairs


@pytest.mark.parametrize("execution", [
    {"mode": "chunked", "chunk": 40, "workers": 1},
    {"mode": "chunked", "chunk": 40, "workers": 2, "scheduler": "processes"},  # a LocalCluster on loopback
], ids=["serial", "local-cluster-2-workers"])
def test_chunked_execution_equals_in_memory(reference, sample_dir, tmp_path, execution):
    """``execution.mode: chunked`` runs foreground, training, phases (+ rim), particles and the
    particle table block by block (40^3 blocks, particles crossing them): same volumes, same table;
    also with the blocks spread over a ``dask.distributed`` LocalCluster of 2 worker processes."""

    config = _config(sample_dir, {"execution": execution})
    result = run_pipeline(config, tmp_path / "run", until=UNTIL, quiet=True)
    if execution.get("scheduler") == "processes":  # workers and scheduler change no result (no stage key)
        serial = _config(sample_dir, {"execution": {"mode": "chunked", "chunk": 40, "workers": 1}})
        assert run_pipeline(serial, tmp_path / "run", until=UNTIL, quiet=True).ran == []
        assert "chunked blocks run dask.distributed (2 workers" in (tmp_path / "run" / "run.log").read_text()
    assert result.stages[0].result["chunked"] is True
    assert reference.stages[0].result["chunked"] is False

    for stage, name in (("foreground", "foreground.ome.zarr"), ("labels", "labels.ome.zarr"),
                        ("phases", "phases.ome.zarr"), ("refine", "phases.ome.zarr")):
        np.testing.assert_array_equal(_volume(result.run_dir, stage, name), _volume(reference.run_dir, stage, name))
    pairs = _label_bijection(_volume(result.run_dir, "particles", "particles.ome.zarr"),
                             _volume(reference.run_dir, "particles", "particles.ome.zarr"))
    ours = pd.read_parquet(result.run_dir / "measure" / "particles.parquet").sort_values("volume_voxels", kind="stable")
    theirs = pd.read_parquet(reference.run_dir / "measure" / "particles.parquet").sort_values("volume_voxels",
                                                                                            kind="stable")
    assert len(ours) == len(theirs)
    np.testing.assert_allclose(np.sort(ours["surface_area_um2"]), np.sort(theirs["surface_area_um2"]), rtol=1e-9)
    # grains are numbered alike (raster order of their first voxel) on both paths; particles
    # differ only in numbering, so map the chunked particle labels through the bijection
    grains = pd.read_parquet(result.run_dir / "measure" / "grains.parquet")
    to_reference = dict(zip(pairs[0].tolist(), pairs[1].tolist(), strict=True))
    grains["particle_label"] = grains["particle_label"].map(to_reference).astype(grains["particle_label"].dtype)
    pd.testing.assert_frame_equal(grains, pd.read_parquet(reference.run_dir / "measure" / "grains.parquet"),
                                  check_exact=False, rtol=1e-9)
    # analysis from the particle table and the sampled planes only (no whole-volume read): the
    # same tables; particle sums may add in another (label) order, hence rtol
    for name, exact in (("representativeness", True), ("stereology", False)):
        pd.testing.assert_frame_equal(pd.read_parquet(result.run_dir / "analysis" / f"{name}.parquet"),
                                      pd.read_parquet(reference.run_dir / "analysis" / f"{name}.parquet"),
                                      check_exact=exact, rtol=1e-12)
    accuracy = json.loads((result.run_dir / "evaluate" / "accuracy.json").read_text())
    expected_accuracy = json.loads((reference.run_dir / "evaluate" / "accuracy.json").read_text())
    assert accuracy["mean_phase_iou"] == pytest.approx(expected_accuracy["mean_phase_iou"], abs=1e-12)
    assert accuracy["particle_f1"] == pytest.approx(expected_accuracy["particle_f1"], abs=1e-12)
    # evaluate reads no volume whole on the chunked path (confusion, pair tables, truth particle
    # table and pillar wall block by block): every number of accuracy.json as in memory
    assert {"phase_iou", "volume_fraction_error", "particle_precision", "particles_merged_share",
            "n_true_particles", "liberation_degree_true", "ld_error", "median_esd_error"} <= set(expected_accuracy)
    assert accuracy.keys() == expected_accuracy.keys()
    for key, value in expected_accuracy.items():
        got, want = (accuracy[key], value) if isinstance(value, dict) else ({key: accuracy[key]}, {key: value})
        assert got.keys() == want.keys(), key
        for name, number in want.items():
            assert got[name] == pytest.approx(number, rel=1e-9, abs=1e-12, nan_ok=True), (key, name)


def test_chunked_path_keeps_a_uint16_ct_as_uint16_and_gives_the_in_memory_results(sample_dir, tmp_path):
    """A uint16 CT (as scanners write it) is stored as uint16 by the chunked volume stage (half
    the disk of float32) and its blocks are read as float32: the stages find exactly what the
    in-memory path finds from the same file (here with the default ``workers: auto``, threads)."""
    import tifffile

    ct = tifffile.imread(sample_dir / "ct.tif").astype(np.float64)
    low, high = ct.min(), ct.max()
    scaled = np.round(1000 + (ct - low) / (high - low) * 60000).astype(np.uint16)  # a linear detector scale
    tifffile.imwrite(tmp_path / "ct16.tif", scaled)
    ct_entry = {"path": str(tmp_path / "ct16.tif"), "voxel_size_um": json.loads(
        (sample_dir / "sample.json").read_text())["voxel_size_um"]}
    until = "particles"
    runs = {mode: run_pipeline(_config(sample_dir, {"ct": ct_entry, "execution": {"mode": mode, "chunk": 40}}),
                               tmp_path / mode, until=until, quiet=True).run_dir for mode in ("chunked", "memory")}
    stored = read_volume(runs["chunked"] / "volume" / "ct.ome.zarr", lazy=True)
    assert np.dtype(stored.data.dtype) == np.uint16
    assert np.dtype(read_volume(runs["memory"] / "volume" / "ct.ome.zarr", lazy=True).data.dtype) == np.float32
    np.testing.assert_array_equal(np.asarray(stored.data), scaled)
    assert _manifest(runs["chunked"], "volume")["result"]["dtype"] == "uint16"
    assert _manifest(runs["chunked"], "foreground")["result"]["smoothing_stored"] is True

    for stage, name in (("foreground", "foreground.ome.zarr"), ("labels", "labels.ome.zarr"),
                        ("phases", "phases.ome.zarr")):
        np.testing.assert_array_equal(_volume(runs["chunked"], stage, name), _volume(runs["memory"], stage, name))
    found = _volume(runs["chunked"], "particles", "particles.ome.zarr")
    assert found.max() > 10
    _label_bijection(found, _volume(runs["memory"], "particles", "particles.ome.zarr"))


def test_chunked_stage_stopped_mid_pass_resumes_from_its_finished_blocks(reference, sample_dir, tmp_path,
                                                                          monkeypatch):
    """A chunked stage that stops in the middle of a pass (a crash, workers lost) keeps its
    temporary folder with the blocks it finished; the next run of the same key reads them back,
    computes only the rest and gives the uninterrupted run's results."""
    import corrtomo.chunked._separate as separate

    config = _config(sample_dir, {"execution": {"mode": "chunked", "chunk": 40, "workers": 1}})  # counted calls
    run_dir = tmp_path / "run"
    relabel = separate._relabel_block
    calls = {"segment": 0, "relabel": 0}

    def crash_at_fifth_block(item, **kwargs):
        if calls["relabel"] == 4:
            raise RuntimeError("the machine went down")
        calls["relabel"] += 1
        return relabel(item, **kwargs)

    monkeypatch.setattr(separate, "_relabel_block", crash_at_fifth_block)
    with pytest.raises(RuntimeError, match="went down"):
        run_pipeline(config, run_dir, until=UNTIL, quiet=True)
    leftovers = sorted(p.name for p in run_dir.glob(".*.tmp-*"))
    assert len(leftovers) == 1 and leftovers[0].startswith(".particles.tmp-"), leftovers
    assert not (run_dir / "particles").exists()
    kept = run_dir / leftovers[0] / ".work" / "blocks"
    n_blocks = 27  # 112^3 in 40^3 blocks
    passes = sorted(p.name for p in kept.iterdir())
    assert [p.split("-", 1)[1] for p in passes] == ["_block_top", "_segment_block", "_merge_block",
                                                    "crash_at_fifth_block"]
    assert [len(list((kept / p).glob("*.pkl"))) for p in passes] == [n_blocks, n_blocks, n_blocks, 4]

    segment = separate._segment_block

    def counted_segment(index, **kwargs):
        calls["segment"] += 1
        return segment(index, **kwargs)

    def counted_relabel(item, **kwargs):
        calls["relabel"] += 1
        return relabel(item, **kwargs)

    calls = {"segment": 0, "relabel": 0}
    monkeypatch.setattr(separate, "_segment_block", counted_segment)
    monkeypatch.setattr(separate, "_relabel_block", counted_relabel)
    # passes are known by their number and function name: the same passes as before
    monkeypatch.setattr(counted_segment, "__name__", "_segment_block")
    monkeypatch.setattr(counted_relabel, "__name__", "crash_at_fifth_block")
    result = run_pipeline(config, run_dir, until=UNTIL, quiet=True)
    assert result.stages[0].skipped  # the volume stage was finished
    assert calls == {"segment": 0, "relabel": n_blocks - 4}
    manifest = _manifest(run_dir, "particles")
    assert manifest["resumed_blocks"] == 3 * n_blocks + 4
    # the first attempt's time counts up to its last finished block (not its lost work)
    assert manifest["attempts"] == 2 and 0 < manifest["seconds_earlier_attempts"] < 600
    assert _manifest(run_dir, "refine")["attempts"] == 1 and _manifest(run_dir, "refine")["seconds_earlier_attempts"] == 0
    assert list(run_dir.glob(".*.tmp-*")) == []
    log = (run_dir / "run.log").read_text()
    assert "particles: resuming the interrupted run's finished blocks" in log
    assert f"particles: {3 * n_blocks + 4} blocks read back" in log

    _label_bijection(_volume(run_dir, "particles", "particles.ome.zarr"),
                     _volume(reference.run_dir, "particles", "particles.ome.zarr"))
    for stage in ("phases", "refine"):
        np.testing.assert_array_equal(_volume(run_dir, stage, "phases.ome.zarr"),
                                      _volume(reference.run_dir, stage, "phases.ome.zarr"))
    accuracy = json.loads((run_dir / "evaluate" / "accuracy.json").read_text())
    expected_accuracy = json.loads((reference.run_dir / "evaluate" / "accuracy.json").read_text())
    assert accuracy["particle_f1"] == pytest.approx(expected_accuracy["particle_f1"], abs=1e-12)
    assert accuracy["mean_phase_iou"] == pytest.approx(expected_accuracy["mean_phase_iou"], abs=1e-12)


def test_auto_execution_chooses_by_memory(sample_dir):
    from corrtomo.pipeline._stages import (
        IN_MEMORY_BYTES_PER_VOXEL,
        available_memory_bytes,
        choose_chunked,
    )

    config = _config(sample_dir)
    assert config.execution.mode == "auto"
    assert not choose_chunked(config, (112, 112, 112))
    side = round((available_memory_bytes() / IN_MEMORY_BYTES_PER_VOXEL) ** (1 / 3)) + 1
    assert choose_chunked(config, (side, side, side))  # the whole RAM: too big for half of it
    assert not choose_chunked(_config(sample_dir, {"execution": {"mode": "memory"}}), (side, side, side))
    assert choose_chunked(_config(sample_dir, {"execution": {"mode": "chunked"}}), (8, 8, 8))


def test_auto_workers_are_threads_one_per_core_within_the_memory_budget(sample_dir, monkeypatch):
    """``workers: auto`` (the default): a thread per core, fewer when their blocks (box of
    ``chunk + 80`` voxels per edge, 48 bytes a voxel) would not fit in memory_fraction of the
    available memory; an explicit count or scheduler is kept."""
    import os

    from corrtomo.pipeline._config import BYTES_PER_BOX_VOXEL, auto_workers

    block = BYTES_PER_BOX_VOXEL * (128 + 80) ** 3  # 432 MB
    assert auto_workers(128, None, cores=16) == 16
    assert auto_workers(128, 10 * block + 1, cores=16) == 10
    assert auto_workers(128, block - 1, cores=16) == 1  # at least one, even in too little memory
    assert auto_workers(128, 100 * block, cores=1) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    execution = _config(sample_dir).execution
    assert execution.workers == "auto"
    assert execution.runner_settings(None) == (4, "threads")
    # memory_fraction 0.5 of 3 blocks' worth: room for one block only, so serial
    assert execution.runner_settings(3 * block) == (1, None)
    assert _config(sample_dir, {"execution": {"workers": 1}}).execution.runner_settings(None) == (1, None)
    assert _config(sample_dir, {"execution": {"workers": 3, "scheduler": "processes"}}).execution.runner_settings(
        None) == (3, "processes")
    assert _config(sample_dir, {"execution": {"workers": 2}}).execution.runner_settings(None) == (2, "threads")


def test_given_pose_reads_only_the_box_of_its_plane():
    """With a pose given, the register stage samples the section plane from the box around it:
    the same plane as from the whole volume, also for planes leaving the volume."""
    from corrtomo._shared import PlanePose, sample_plane
    from corrtomo.pipeline._stages import _plane_box

    volume = np.random.default_rng(0).random((40, 50, 60)).astype(np.float32)
    for origin in ([5.3, 7.1, 3.2], [-4.0, 30.5, 50.2]):
        pose = PlanePose(origin=np.array(origin), u=np.array([0.1, 0.2, 0.97]), v=np.array([0.9, 0.3, -0.05]))
        box, local = _plane_box(volume, pose, (30, 40))
        assert box.size < volume.size / 4
        np.testing.assert_array_equal(sample_plane(box, local, (30, 40), order=1),
                                      sample_plane(volume, pose, (30, 40), order=1))
