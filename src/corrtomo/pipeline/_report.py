"""Gather a finished run's outputs into :class:`corrtomo.report.ReportData`."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from .._shared import MATRIX_LABEL, sample_plane

_PACKAGES = ("corrtomo", "numpy", "scipy", "scikit-image", "scikit-learn", "numba", "zarr", "pandas", "xraydb",
             "pydantic")


def _versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - optional
            continue
    return found


def _stage_timings(run_dir: Path, skipped: set[str]) -> list[dict]:
    """Duration and peak memory of each stage as recorded when it last ran."""
    from ._stages import STAGE_NAMES

    rows = []
    for name in STAGE_NAMES:
        try:
            manifest = json.loads((run_dir / name / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        rows.append({"stage": name, "seconds": manifest.get("seconds"), "peak_memory_mb": manifest.get("peak_memory_mb"),
                     "skipped": name in skipped})
    return rows


def plane_image(volume, pose, shape: tuple[int, int]) -> np.ndarray:
    """The volume sampled on a section's plane, reading only the plane's bounding box."""
    from dataclasses import replace

    corners = pose.corners(shape)
    low = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
    high = np.minimum(np.ceil(corners.max(0)).astype(int) + 3, np.asarray(volume.shape))
    if np.any(high <= low):  # the plane misses the volume
        return np.full(shape, np.nan, dtype=np.float32)
    box = np.asarray(volume[low[0]:high[0], low[1]:high[1], low[2]:high[2]], dtype=np.float32)
    return sample_plane(box, replace(pose, origin=pose.origin - low), shape)


def build_report(context, path: Path) -> Path:
    """Write ``report.html`` for the run in `context` (see :func:`corrtomo.report.write_report`)."""
    import pandas as pd
    import yaml

    from ..io import read_image2d, read_volume
    from ..report import ReportData, ReportSection, write_report

    config = context.config
    run_dir = context.run_dir
    ct = read_volume(run_dir / "volume" / "ct.ome.zarr", lazy=True).data
    phases = read_volume(run_dir / "refine" / "phases.ome.zarr", lazy=True).data
    particles = read_volume(run_dir / "particles" / "particles.ome.zarr", lazy=True).data
    accuracy = context.results.get("evaluate") or None
    sections = []
    for section in config.sections:
        from ._stages import load_pose, read_mineral_map_ids

        ids = read_mineral_map_ids(context, section.name)
        pose = load_pose(context, section.name)
        register = context.results.get("register", {}).get(section.name, {})
        error = None if accuracy is None else accuracy.get("pose_error_voxels", {}).get(section.name)
        sections.append(ReportSection(
            name=section.name,
            mineral_map=np.where(ids == MATRIX_LABEL, 0, ids).astype(np.uint8),
            bse=read_image2d(config.resolve(section.bse)) if section.bse else None,
            ct_plane=plane_image(ct, pose, ids.shape),
            score=register.get("score"),
            pose_error_voxels=error,
        ))
    analysis = run_dir / "analysis"
    summary = json.loads((analysis / "summary.json").read_text())
    cross_scale = None
    if (run_dir / "overview" / "manifest.json").exists() and config.overview is not None:
        from ..report import CrossScaleReport

        folder = run_dir / "overview"
        table = pd.read_parquet(folder / "cross_scale.parquet")
        table.attrs["summary"] = json.loads((folder / "cross_scale_summary.json").read_text())
        cross_scale = CrossScaleReport(
            table=table,
            registration=json.loads((folder / "transform.json").read_text()),
            overlay_png=folder / "overlay.png",
            pose_error_voxels=None if accuracy is None else accuracy.get("overview_corner_error_voxels"),
        )
    data = ReportData(
        title=config.name,
        library=context.library,
        voxel_size_um=tuple(float(v) for v in context.spacing()),
        ct=ct,
        phases=phases,
        particles=particles,
        particles_table=pd.read_parquet(run_dir / "measure" / "particles.parquet"),
        grains_table=pd.read_parquet(run_dir / "measure" / "grains.parquet"),
        liberation=pd.read_csv(analysis / "liberation.csv"),
        summary=summary,
        sections=sections,
        stereology=pd.read_csv(analysis / "stereology.csv"),
        representativeness=pd.read_csv(analysis / "representativeness.csv"),
        accuracy=accuracy,
        cross_scale=cross_scale,
        provenance={
            "config": yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False),
            "versions": _versions(),
            "stages": _stage_timings(run_dir, {r.stage for r in context.records if r.skipped}),
            "run_dir": str(run_dir),
        },
    )
    return write_report(path, data)
