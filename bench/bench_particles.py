"""Particle separation on a 512^3 twin foreground: corrtomo versus scikit-image.

Both chains start from the same exact EDT (``edt``) of the truth foreground of a talc-saxolite
twin with 40 % touching particles (rendered without CT). The baseline is skimage ``h_maxima``
(h = 0.5 voxel on the EDT, the best h for it measured at 256^3) + ``ndimage.label`` + skimage
``watershed`` restricted to the foreground; corrtomo runs :func:`separate_particles` with its
defaults (smoothed-EDT h-maxima, numba flooding). Each method runs in a fresh process so its
peak memory (ru_maxrss) is its own. Prints a markdown table.

Usage: python bench/bench_particles.py [--size 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

VOXEL_UM = 0.128


def make_truth(size: int, seed: int) -> np.ndarray:
    from dataclasses import replace

    from corrtomo.synth import PRESETS, PhantomRenderer, generate_particles

    preset = PRESETS["talc-saxolite"]
    spec = replace(preset.particles, touching_share=0.4)
    shape = (size, size, size)
    radius = 0.47 * size
    system = generate_particles(spec, shape=shape, voxel_size_um=VOXEL_UM, pillar_radius_voxels=radius,
                                rng=np.random.default_rng(seed))
    renderer = PhantomRenderer(system, shape, max_phase_id=4, supersample=1, pillar_radius_voxels=radius)
    labels = np.zeros(shape, np.uint32)
    for z0 in range(0, size, 32):
        labels[z0:z0 + 32] = renderer.render(z0, min(size, z0 + 32)).particles
    return labels


def run_one(method: str, truth_path: str, out_path: str) -> None:
    import resource

    from corrtomo.segment import distance_map, separate_particles

    truth = np.load(truth_path, mmap_mode="r")
    foreground = np.asarray(truth) > 0
    del truth
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    distance = distance_map(foreground, spacing=VOXEL_UM)
    t_edt = time.perf_counter() - start
    if method == "corrtomo":
        result = separate_particles(foreground, spacing=VOXEL_UM, distance=distance)
        labels = result.labels
    else:
        from scipy import ndimage
        from skimage.morphology import h_maxima
        from skimage.segmentation import watershed

        peaks = h_maxima(distance, 0.5 * VOXEL_UM)
        markers = ndimage.label(peaks, structure=np.ones((3, 3, 3)))[0]
        labels = watershed(-distance, markers, mask=foreground)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    np.save(out_path, labels.astype(np.uint32, copy=False))
    print(json.dumps({"method": method, "edt_s": t_edt, "total_s": elapsed, "peak_mb": peak / 1024,
                      "input_mb": base / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_one(args.run, args.truth, args.out)
        return
    from corrtomo.evaluate import match_instances
    from corrtomo.segment import separate_particles

    # warm the numba caches on a small volume so compilation is not timed
    warm = np.zeros((32, 32, 32), bool)
    warm[8:24, 8:24, 8:24] = True
    separate_particles(warm, spacing=VOXEL_UM)
    with tempfile.TemporaryDirectory() as folder:
        truth_path = os.path.join(folder, "truth.npy")
        start = time.perf_counter()
        truth = make_truth(args.size, args.seed)
        np.save(truth_path, truth)
        print(f"twin {args.size}^3 rendered in {time.perf_counter() - start:.1f} s; "
              f"{len(np.unique(truth)) - 1} particles", file=sys.stderr)
        rows = []
        for method in ("corrtomo", "skimage"):
            out_path = os.path.join(folder, f"{method}.npy")
            load = os.getloadavg()[0]
            done = subprocess.run(
                [sys.executable, __file__, "--run", method, "--truth", truth_path, "--out", out_path],
                check=True, capture_output=True, text=True,
            )
            record = json.loads(done.stdout.strip().splitlines()[-1])
            match = match_instances(truth, np.load(out_path))
            record.update(f1=match.f1, merged_share=match.merged_share, split=match.n_split,
                          n=match.n_predicted, n_true=match.n_true, load=load)
            rows.append(record)
            print(record, file=sys.stderr)
    ours, theirs = rows
    print(f"Particle separation, {args.size}^3 talc-saxolite twin foreground, "
          f"{ours['n_true']} particles, {os.cpu_count()} cores (load average at start in the table)\n")
    print("| method | time (s) incl. EDT | peak RSS (MB) | F1 @ IoU 0.5 | merged share | split | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['total_s']:.1f} | {r['peak_mb']:.0f} | {r['f1']:.4f} | "
              f"{r['merged_share']:.2%} | {r['split']} | {r['load']:.1f} |")
    print(f"\nspeed-up {theirs['total_s'] / ours['total_s']:.1f}x, "
          f"memory ratio {theirs['peak_mb'] / ours['peak_mb']:.2f}x, "
          f"F1 {ours['f1']:.4f} vs {theirs['f1']:.4f}")


if __name__ == "__main__":
    main()
