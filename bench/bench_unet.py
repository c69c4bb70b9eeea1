"""Benchmark: the 3D U-Net against the random forest, trained from the same registered-section labels.

Usage: ``python bench/bench_unet.py [--preset li-slag] [--seed 0] [--steps 600] [--patch 24,80,80]
[--base-channels 8] [--levels 4] [--boundary-margin PX] [--device auto] [--workdir DIR]``

One twin sample is made (``corrtomo synth`` presets; li-slag: overlapping grey values and fine
LiAlO2 lamellae). ``corrtomo run`` takes it from the CT to the transferred labels once, with
hint-free registration of the simulated SEM sections; truth is used only by the evaluate stage.
From those same labels three runs continue to the evaluation: the random forest (the classical
path, particles from the CT foreground), the U-Net for phases (particles still from the CT
foreground), and the U-Net for phases and particles (its particle head as the foreground).
Reported per run: mean and per-phase IoU, the largest volume-fraction error, particle F1 at IoU
0.5, training seconds (train stage), phase inference throughput (phases stage, Mvox/s) and the
run's peak memory. The defaults are a CPU budget (8 base channels, 24x80x80 patches, thin across
the near-axial sections, 600 steps at most); on a GPU raise them (``--base-channels 16 --patch 64
--steps 2000``). ``--boundary-margin`` sets ``stages.labels.boundary_margin_px`` for every method
(default: the pipeline's, one CT voxel). Writes ``bench/results/bench_unet_<preset>[_<tag>].md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="li-slag")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--patch", default="24,80,80", help="one edge or Z,Y,X edges")
    parser.add_argument("--boundary-margin", type=float, default=None, help="labels: boundary_margin_px")
    parser.add_argument("--tag", default="", help="suffix of the results file")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/unet"))
    args = parser.parse_args()

    import torch

    from corrtomo.pipeline import demo_config, parse_config, run_pipeline
    from corrtomo.synth import make_sample, write_sample

    work = (args.workdir / f"{args.preset}-{args.seed}").resolve()
    margin = args.boundary_margin
    patch = [int(v) for v in args.patch.split(",")]
    patch = patch[0] if len(patch) == 1 else patch
    sample = work / "sample"
    if not (sample / "sample.json").exists():
        start = time.perf_counter()
        write_sample(make_sample(args.preset, seed=args.seed), sample, preview=False)
        print(f"twin made in {time.perf_counter() - start:.0f} s", flush=True)
    base = demo_config(sample)
    unet = {"patch": patch, "base_channels": args.base_channels, "levels": args.levels,
            "max_steps": args.steps, "device": args.device}
    variants = {
        "random forest (CT foreground)": {},
        "U-Net phases (CT foreground)": {"phases": {"method": "unet", "unet": unet}},
        "U-Net phases + particles": {"phases": {"method": "unet", "unet": unet},
                                     "particles": {"foreground": "unet"}},
    }
    labels = {"labels": {"boundary_margin_px": margin}}
    variants = {name: {**labels, **stages} for name, stages in variants.items()}
    suffix = f"-margin{margin:g}" if margin is not None else ""
    shared = work / f"labels-run{suffix}"
    run_pipeline(parse_config({**base, "stages": labels}, base_dir=sample), shared, until="labels", quiet=True)
    rows = []
    previous = shared
    for name, stages in variants.items():
        run = work / ("run-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") + suffix)
        if not (run / "evaluate" / "manifest.json").exists():
            shutil.rmtree(run, ignore_errors=True)
            # the same registered-section labels for every method; the particle-head run reuses
            # the U-Net trained by the run before it (same train stage key)
            shutil.copytree(previous if "particles" in name else shared, run)
        previous = run
        config = parse_config({**base, "stages": stages}, base_dir=sample)
        start = time.perf_counter()
        run_pipeline(config, run, until="evaluate", quiet=True)
        wall = time.perf_counter() - start
        accuracy = json.loads((run / "evaluate" / "accuracy.json").read_text())
        train, phases = manifest(run, "train"), manifest(run, "phases")
        voxels = 1
        for n in manifest(run, "volume")["result"]["shape"]:
            voxels *= int(n)
        peak = max(manifest(run, s)["peak_memory_mb"] for s in ("train", "phases", "particles")) / 1024
        rows.append({
            "method": name,
            "mean_iou": accuracy["mean_phase_iou"],
            "iou": accuracy["phase_iou"],
            "vf": max(abs(v) for v in accuracy["volume_fraction_error"].values()),
            "f1": accuracy["particle_f1"],
            "train_s": train["seconds"],
            "steps": train["result"].get("steps"),
            "mvox_s": voxels / phases["seconds"] / 1e6,
            "peak_gb": peak,
            "wall_s": wall,
        })
        print(rows[-1], flush=True)
    device = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu" else \
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    names = list(rows[0]["iou"])
    lines = [f"corrtomo bench_unet, {args.preset} twin seed {args.seed}, {platform.node()}, {device}; U-Net "
             f"{args.base_channels} base channels, {args.levels} levels, {'x'.join(args.patch.split(','))} patches, "
             f"<= {args.steps} steps; labels: boundary margin {'one CT voxel' if margin is None else f'{margin:g} px'}, "
             f"{json.dumps(manifest(shared, 'labels')['result']['labelled_voxels'])}",
             "",
             "| method | mean IoU | " + " | ".join(names) + " | max vf error | particle F1 | train (s) | steps | "
             "phase inference (Mvox/s) | peak memory (GiB) |",
             "|---|" + "---|" * (len(names) + 7)]
    for r in rows:
        lines.append(f"| {r['method']} | {r['mean_iou']:.3f} | " + " | ".join(f"{r['iou'][n]:.3f}" for n in names)
                     + f" | {r['vf']:.3f} | {r['f1']:.3f} | {r['train_s']:.0f} | {r['steps'] or ''} | "
                     f"{r['mvox_s']:.2f} | {r['peak_gb']:.2f} |")
    lines.append("")
    lines.append(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    out = RESULTS / f"bench_unet_{args.preset}{'_' + args.tag if args.tag else ''}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written {out}")


if __name__ == "__main__":
    main()
