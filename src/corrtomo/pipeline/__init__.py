"""The whole workflow as resumable stages: config -> run folder -> report.

>>> from corrtomo.pipeline import load_config, run_pipeline      # doctest: +SKIP
>>> result = run_pipeline(load_config("run.yaml"), "run-out")       # doctest: +SKIP
>>> result.report                                                    # doctest: +SKIP

Each stage writes ``RUN/<stage>/`` atomically with a ``manifest.json`` (key = hash of inputs,
parameters and version; duration; peak memory); a re-run skips unchanged stages, ``from_stage``
redoes one and everything after it, and an interrupted run resumes at the stage it was in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .. import __version__
from .._shared import BlockRunner, InputError
from ._config import RunConfig, config_template, load_config, parse_config
from ._runner import StageRecord, clean_interrupted, execute, read_manifest, run_log
from ._stages import STAGE_NAMES, STAGES, RunContext, open_ct

__all__ = [
    "STAGE_NAMES",
    "RunConfig",
    "RunResult",
    "check_inputs",
    "config_template",
    "demo_config",
    "load_config",
    "pair_config",
    "parse_config",
    "read_manifest",
    "run_demo",
    "run_pipeline",
]


@dataclass(frozen=True)
class RunResult:
    """What a run produced: the run folder, the per-stage records and the report path."""

    run_dir: Path
    stages: list[StageRecord]
    report: Path | None
    summary: Path | None

    @property
    def ran(self) -> list[str]:
        return [r.stage for r in self.stages if not r.skipped]

    @property
    def skipped(self) -> list[str]:
        return [r.stage for r in self.stages if r.skipped]


def check_inputs(config: RunConfig) -> None:
    """Stop before any work when an input is missing or the CT's voxel size is wrong."""
    from ._stages import _ct_paths

    for path in _ct_paths(config):
        if not path.exists():
            raise InputError("CT volume not found (config key 'ct.path')", source=path)
        open_ct(config, path)
    for section in config.sections:
        for key in ("eds", "mineral_map", "bse", "pose"):
            value = getattr(section, key)
            if value is not None and not config.resolve(value).exists():
                raise InputError(f"file not found (config key 'sections.{section.name}.{key}')",
                                 source=config.resolve(value))
    if config.overview is not None:
        from ._stages import open_volume, overview_spacing

        path = config.resolve(config.overview.path)
        if not path.exists():
            raise InputError("overview volume not found (config key 'overview.path')", source=path)
        open_volume(path, overview_spacing(config), "overview.voxel_size_um")
    if config.truth is not None:
        paths = [config.truth.phases, config.truth.particles, config.truth.overview_transform,
                 *config.truth.poses.values()]
        for value in paths:
            if value is not None and not config.resolve(value).exists():
                raise InputError("file not found (config key 'truth')", source=config.resolve(value))
    from ..phases import load_phase_library

    library = config.resolve(config.phase_library)
    load_phase_library(library if library.exists() else config.phase_library)


def run_pipeline(
    config: RunConfig | str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    from_stage: str | None = None,
    until: str | None = None,
    quiet: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
) -> RunResult:
    """Run (or resume) the pipeline of `config` in `run_dir`.

    Parameters
    ----------
    config : RunConfig or path to a YAML file
    run_dir : path
        Run folder; created. Stage outputs go to ``run_dir/<stage>/``; ``report.html`` and
        ``summary.json`` are also published at its top.
    from_stage : str, optional
        Redo this stage and all after it even if up to date.
    until : str, optional
        Stop after this stage.
    quiet : bool
        No log lines on stderr (``run.log`` is always written).
    progress : callable, optional
        ``progress(step, done, total)`` for progress bars.
    scheduler, workers : optional
        Override ``execution.scheduler`` / ``execution.workers`` (``--scheduler``,
        ``--workers``): where the chunked path runs its blocks. The results do not depend on
        them, so changing them re-runs nothing.
    """
    if not isinstance(config, RunConfig):
        config = load_config(config)
    if scheduler is not None or workers is not None:
        changes = {k: v for k, v in (("scheduler", scheduler), ("workers", workers)) if v is not None}
        try:
            execution = type(config.execution).model_validate({**config.execution.model_dump(), **changes})
        except ValidationError as error:
            first = error.errors()[0]
            flag = "--" + str(first["loc"][0]) if first.get("loc") else "--scheduler"
            raise InputError(first["msg"], source=flag) from None
        config = config.model_copy(update={"execution": execution})
    for flag, name in (("--from", from_stage), ("--until", until)):  # before the run folder is made
        if name is not None and name not in STAGE_NAMES:
            raise InputError(f"unknown stage {name!r}; stages are {', '.join(STAGE_NAMES)}", source=flag)
    check_inputs(config)
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("exists and is not a folder", source=run_dir)
    runner = None
    address = config.execution.scheduler
    if address is not None and "://" in address:  # connect now: a cluster that does not answer stops the run here
        runner = BlockRunner(*config.execution.runner_settings())
    context = RunContext(config=config, run_dir=run_dir, progress=progress, block_runner=runner)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_log(run_dir, quiet=quiet) as log:
            removed = clean_interrupted(run_dir)
            if removed:
                log.info("removed %d unfinished stage folder(s) of an interrupted run", len(removed))
            (run_dir / "config.yaml").write_text(_config_yaml(config))
            records = execute(STAGES, context, run_dir, version=__version__, from_stage=from_stage,
                              only_until=until)
    finally:
        context.close()
    current = {r.stage for r in records}  # publish only what this run brought up to date
    report = _publish(run_dir, "report", "report.html") if "report" in current else None
    summary = _publish(run_dir, "analysis", "summary.json") if "analysis" in current else None
    return RunResult(run_dir=run_dir, stages=records, report=report, summary=summary)


def _config_yaml(config: RunConfig) -> str:
    import json

    import yaml

    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)


def _publish(run_dir: Path, stage: str, name: str) -> Path | None:
    """Copy a stage's main output to the top of the run folder (atomically)."""
    source = run_dir / stage / name
    if not source.exists():
        return None
    target = run_dir / name
    tmp = run_dir / f".{name}.tmp-publish"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return target


# ------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------


def demo_config(sample_dir: str | os.PathLike, *, truth: bool = True, prefix: str = ".") -> dict:
    """A run configuration for a sample written by ``corrtomo synth`` (EDS maps + BSE per section).

    Paths in it start with `prefix` (the sample folder seen from where the config will live).
    """
    import json

    sample_dir = Path(sample_dir)

    def at(path: str) -> str:
        return path if prefix in ("", ".") else f"{prefix}/{path}"

    meta = json.loads((sample_dir / "sample.json").read_text())
    sections = [{"name": s["name"], "eds": at(f"sem/{s['name']}/eds"), "bse": at(f"sem/{s['name']}/bse.tif"),
                 "pixel_size_um": s["pixel_size_um"]} for s in meta["sections"]]
    config = {
        "name": f"digital twin '{meta['preset']}' (seed {meta['seed']})",
        "phase_library": meta["preset_parameters"]["phase_library"],
        "matrix": meta["preset_parameters"]["matrix"],
        "ct": {"path": at("ct.tif"), "voxel_size_um": meta["voxel_size_um"]},
        "sections": sections,
    }
    if truth:
        config["truth"] = {"phases": at("truth/phases.tif"), "particles": at("truth/particles.tif"),
                           "poses": {s["name"]: at(f"sem/{s['name']}/pose.json") for s in meta["sections"]}}
    return config


def pair_config(pair_dir: str | os.PathLike, *, truth: bool = True, prefix: str = ".") -> dict:
    """A run configuration for a twin pair written by ``corrtomo synth-pair``: the nano-CT volume
    with its SEM sections is the CT, the micro-CT volume the overview."""
    import json

    pair_dir = Path(pair_dir)
    meta = json.loads((pair_dir / "pair.json").read_text())

    def at(path: str) -> str:
        return path if prefix in ("", ".") else f"{prefix}/{path}"

    nano = meta["nano"]
    config = {
        "name": f"digital twin pair '{meta['preset']}' (seed {meta['seed']})",
        "phase_library": meta["preset_parameters"].get("phase_library", "talc-saxolite"),
        "matrix": meta["preset_parameters"].get("matrix", "epoxy"),
        "ct": {"path": at("nano/ct.tif"), "voxel_size_um": nano["voxel_size_um"]},
        "sections": [{"name": s["name"], "eds": at(f"nano/sem/{s['name']}/eds"),
                      "bse": at(f"nano/sem/{s['name']}/bse.tif"), "pixel_size_um": s["pixel_size_um"]}
                     for s in nano["sections"]],
        "overview": {"path": at("micro/ct.tif"), "voxel_size_um": meta["micro"]["voxel_size_um"]},
        # a 128^3 pillar gives a wide null distribution of random section poses (std ~0.13 NCC):
        # the right pose sits ~7 standard deviations out, with a margin of ~0.2 over the runner-up
        "stages": {"registration": {"min_z_score": 6.0}},
    }
    if truth:
        config["truth"] = {"phases": at("nano/truth/phases.tif"), "particles": at("nano/truth/particles.tif"),
                           "poses": {s["name"]: at(f"nano/sem/{s['name']}/pose.json") for s in nano["sections"]},
                           "overview_transform": at("truth_transform.json")}
    return config


def run_demo(
    outdir: str | os.PathLike,
    *,
    preset: str = "talc-saxolite",
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    quiet: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> RunResult:
    """Make a twin sample in ``OUTDIR/sample`` and run the whole pipeline on it in ``OUTDIR/run``.

    Labels come only from the sample's simulated SEM sections (EDS maps classified into minerals,
    registered hint-free into the CT); the truth volumes and poses are used only for the accuracy
    section of the report. A second call reuses the sample and the finished stages.
    """
    import json

    import yaml

    from ..synth import PAIR_PRESETS, get_preset, make_sample, write_sample

    outdir = Path(outdir)
    sample_dir = outdir / "sample"
    if preset in PAIR_PRESETS:
        return _run_pair_demo(outdir, preset=preset, seed=seed, quiet=quiet, progress=progress)
    settings = get_preset(preset)
    shape = tuple(shape) if shape is not None else tuple(settings.shape)
    existing = sample_dir / "sample.json"
    meta = json.loads(existing.read_text()) if existing.exists() else {}
    if (meta.get("preset"), meta.get("seed"), tuple(meta.get("shape", ()))) != (preset, seed, shape):
        write_sample(make_sample(settings, shape=shape, seed=seed), sample_dir)
    config_path = outdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(demo_config(sample_dir, prefix="sample"), sort_keys=False))
    return run_pipeline(load_config(config_path), outdir / "run", quiet=quiet, progress=progress)


def _run_pair_demo(outdir: Path, *, preset: str, seed: int, quiet: bool, progress) -> RunResult:
    """``corrtomo demo --preset talc-micro-nano``: a micro/nano twin pair, the nano volume and its
    section through the whole pipeline, the micro volume as the overview."""
    import json

    import yaml

    from ..synth import make_scale_pair, write_scale_pair

    pair_dir = outdir / "pair"
    existing = pair_dir / "pair.json"
    meta = json.loads(existing.read_text()) if existing.exists() else {}
    if (meta.get("preset"), meta.get("seed")) != (preset, seed):
        write_scale_pair(make_scale_pair(preset, seed=seed), pair_dir)
    config_path = outdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(pair_config(pair_dir, prefix="pair"), sort_keys=False))
    return run_pipeline(load_config(config_path), outdir / "run", quiet=quiet, progress=progress)
