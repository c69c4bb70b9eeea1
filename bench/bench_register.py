"""Benchmark of hint-free slice-to-volume registration on the digital twin.

For each preset: one twin volume, >= 20 random section poses (inclination 0-40 degrees from z, any
azimuth and in-plane rotation, random depth and lateral offset, section pixel 0.5 x voxel, Poisson
BSE noise), registered with NO hint. Success = mean distance between the true and found volume
positions of the 4 corners and the centre < 1.5 voxels. Then one timing run: a 256^3 volume
with a 512^2 section. Prints a markdown table.

Run: ``python bench/bench_register.py [--poses 20]``
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from corrtomo._shared import PlanePose
from corrtomo.phases import MATERIALS
from corrtomo.register import pose_error, register_section
from corrtomo.synth import get_preset, make_sample, simulate_section
from corrtomo.synth._sample import _section_material


def section_at(sample, pose, shape, seed):
    preset = sample.preset
    materials = {int(p.id): _section_material(p.name, p) for p in sample.library}
    matrix = _section_material(preset.matrix, MATERIALS[preset.matrix])
    grid = sample.ct.shape
    if preset.pillar:
        radius, cy, cx = 0.47 * min(grid[1], grid[2]), (grid[1] - 1) / 2, (grid[2] - 1) / 2

        def inside(points):
            return (points[..., 1] - cy) ** 2 + (points[..., 2] - cx) ** 2 <= radius**2
    else:

        def inside(points):
            return np.ones(points.shape[:-1], dtype=bool)

    return simulate_section(
        sample.phases, pose, shape, materials=materials, matrix=matrix, inside_sample=inside,
        pixel_size_um=preset.sem.pixel_ratio * sample.voxel_size_um, beam_kev=preset.sem.beam_kev,
        bse_dose=preset.sem.bse_dose, eds_counts=preset.sem.eds_counts, rng=np.random.default_rng(seed),
    )


def random_pose(rng, grid, shape):
    grid = np.asarray(grid, float)
    center = (grid - 1) / 2 + np.array([rng.uniform(-0.2, 0.2) * grid[0], *rng.uniform(-0.08, 0.08, 2) * grid[1:]])
    return PlanePose.from_angles(
        center=center, shape=shape, pixel_ratio=0.5, tilt_deg=rng.uniform(0, 40),
        tilt_azimuth_deg=rng.uniform(0, 360), inplane_deg=rng.uniform(0, 360),
    )


def run_preset(name, shape, section_shape, n_poses, seed):
    sample = make_sample(name, shape=shape, seed=seed)
    rng = np.random.default_rng(seed + 100)
    rows = []
    for k in range(n_poses):
        pose = random_pose(rng, sample.ct.shape, section_shape)
        section = section_at(sample, pose, section_shape, seed * 1000 + k)
        started = time.perf_counter()
        result = register_section(
            sample.ct, section.bse, voxel_size_um=sample.voxel_size_um, pixel_size_um=section.pixel_size_um, rng=k
        )
        elapsed = time.perf_counter() - started
        error = pose_error(result.pose, pose, section_shape)
        tilt = float(np.rad2deg(np.arccos(abs(pose.normal[0]))))
        rows.append((error, result.confident, elapsed, tilt, float(section.inside.mean()), result.score, result.runner_up_score))
        print(f"  {name} pose {k:2d}: tilt {tilt:5.1f}  inside {section.inside.mean():.2f}  error {error:7.3f}  "
              f"confident {result.confident!s:5}  score {result.score:.3f} runner-up {result.runner_up_score:.3f}  {elapsed:5.1f} s", flush=True)
    return sample, rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--poses", type=int, default=20)
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    table = []
    for name, shape in (("talc-saxolite", (128, 128, 128)), ("li-slag", (128, 128, 128))):
        _, rows = run_preset(name, shape, (200, 200), args.poses, seed=7)
        errors = np.array([r[0] for r in rows])
        confident = np.array([r[1] for r in rows])
        success = errors < 1.5
        flagged_failures = int(np.sum(~success & ~confident))
        silent_failures = int(np.sum(~success & confident))
        table.append((name, "x".join(map(str, shape)), len(rows), success.mean(), np.median(errors), errors[success].max() if success.any() else np.nan,
                      errors.max(), flagged_failures, silent_failures, int(np.sum(success & ~confident)), np.mean([r[2] for r in rows])))
    timing = None
    if not args.skip_timing:
        preset = get_preset("li-slag")
        preset = replace(preset, name="li-slag-256", ct=replace(preset.ct, method="image"))
        sample = make_sample(preset, shape=(256, 256, 256), seed=9)
        rng = np.random.default_rng(9)
        pose = random_pose(rng, sample.ct.shape, (512, 512))
        section = section_at(sample, pose, (512, 512), 9)
        started = time.perf_counter()
        result = register_section(sample.ct, section.bse, voxel_size_um=sample.voxel_size_um, pixel_size_um=section.pixel_size_um, rng=0)
        timing = (time.perf_counter() - started, pose_error(result.pose, pose, (512, 512)), result.confident)

    print("\n| preset | volume | poses | success (<1.5 vox) | median error (vox) | max error of successes | max error | failures flagged | failures NOT flagged | successes flagged unsure | time / registration (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row[0]} | {row[1]} | {row[2]} | {100 * row[3]:.0f} % | {row[4]:.3f} | {row[5]:.3f} | {row[6]:.2f} | {row[7]} | {row[8]} | {row[9]} | {row[10]:.1f} |")
    if timing is not None:
        print(f"\nTiming: 256^3 volume (li-slag, image-domain CT), 512^2 section: {timing[0]:.1f} s, error {timing[1]:.3f} voxel, confident {timing[2]}")


if __name__ == "__main__":
    main()
