"""Benchmark corrtomo.measure against skimage.regionprops_table and porespy.regionprops_3D.

Run: ``python bench/bench_analyze.py [--size 512] [--particles 26000]``. Prints a markdown table.

porespy is not a corrtomo dependency (it pulls in VTK/pyvista); it is looked for on
``--porespy-path`` (default /tmp/pspy, e.g. ``pip install --target /tmp/pspy --no-deps porespy
tqdm pyvista vtk pooch scooby pyvista-validation``) and run in a subprocess on a central crop; its
time is extrapolated per particle to the whole volume and labelled as such.

Every timed call (corrtomo and skimage alike) is repeated ``--repeats`` times (default 3) and the
minimum wall time is reported, to damp the noise of other processes on a shared machine; the peak
memory is the largest over the repeats. The load average is printed next to the table. The
descriptors are timed twice: without the surface (``particle_table(..., surface=False)``: exactly
the kind of descriptors regionprops_table computes - area, centroid, bbox, axis lengths - plus the
phase-free particles.csv columns) and with it (the full particle table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numba
import numpy as np
import psutil

from corrtomo.measure import grain_table, label_grains, particle_table, phase_association

NAMES = {1: "calcite", 2: "dolomite", 3: "magnesite", 4: "talc"}


@numba.njit(cache=True)
def _paint(particles, phases, centres, forms, host, inclusions, radii2, phase_of):
    """Paint random ellipsoids (later ones win where they overlap) with spherical inclusions."""
    nz, ny, nx = particles.shape
    for p in range(centres.shape[0]):
        c = centres[p]
        form = forms[p]
        extent = 1.0 / np.sqrt(np.linalg.eigvalsh(form)[0])
        lo = np.maximum(np.floor(c - extent), 0).astype(np.int64)
        hi = np.minimum(np.ceil(c + extent) + 1, np.array([nz, ny, nx])).astype(np.int64)
        for z in range(lo[0], hi[0]):
            for y in range(lo[1], hi[1]):
                for x in range(lo[2], hi[2]):
                    d0, d1, d2 = z - c[0], y - c[1], x - c[2]
                    q = (
                        form[0, 0] * d0 * d0
                        + form[1, 1] * d1 * d1
                        + form[2, 2] * d2 * d2
                        + 2 * (form[0, 1] * d0 * d1 + form[0, 2] * d0 * d2 + form[1, 2] * d1 * d2)
                    )
                    if q > 1.0:
                        continue
                    particles[z, y, x] = p + 1
                    phase = host[p]
                    for k in range(inclusions.shape[1]):
                        e = inclusions[p, k]
                        if (z - e[0]) ** 2 + (y - e[1]) ** 2 + (x - e[2]) ** 2 <= radii2[p, k]:
                            phase = phase_of[p, k]
                    phases[z, y, x] = phase


def make_sample(size: int, n_particles: int, seed: int = 0):
    """Touching ellipsoidal particles (log-normal sizes, random shapes) with 0-3 inclusions."""
    rng = np.random.default_rng(seed)
    radius = np.clip(rng.lognormal(np.log(5.5), 0.45, n_particles), 2.0, 30.0)
    radius = np.sort(radius)[::-1]  # large first, small ones painted over them
    centres = rng.uniform(0, size, (n_particles, 3))
    axes = radius[:, None] * rng.uniform(0.6, 1.4, (n_particles, 3))
    q, r = np.linalg.qr(rng.normal(size=(n_particles, 3, 3)))
    rot = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    forms = np.einsum("nij,nj,nkj->nik", rot, 1.0 / axes**2, rot)
    host = rng.integers(1, 5, n_particles).astype(np.uint8)
    n_inclusions = 3
    offsets = rng.normal(size=(n_particles, n_inclusions, 3)) * 0.5 * radius[:, None, None]
    inclusions = centres[:, None, :] + offsets
    radii = radius[:, None] * rng.uniform(0.2, 0.6, (n_particles, n_inclusions))
    radii[rng.random((n_particles, n_inclusions)) < 0.45] = -1.0  # ~40 % of particles liberated
    phase_of = rng.integers(1, 5, (n_particles, n_inclusions)).astype(np.uint8)
    particles = np.zeros((size,) * 3, np.uint32)
    phases = np.zeros((size,) * 3, np.uint8)
    _paint(particles, phases, centres, forms, host, inclusions, np.sign(radii) * radii**2, phase_of)
    return particles, phases


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.start = time.perf_counter()
        return self

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.extra = self.peak - self.base


def analyze(particles, phases, spacing):
    grains = label_grains(particles, phases)
    parts = particle_table(particles, phases, spacing=spacing, phase_names=NAMES, grains=grains)
    grain_rows = grain_table(
        particles, phases, spacing=spacing, phase_names=NAMES, grains=grains, particle_table=parts
    )
    association = phase_association(
        particles, phases, spacing=spacing, phase_names=NAMES, grains=grains
    )
    # liberation degree per phase over all sizes (paper Eq. 1-2), inline: corrtomo.liberation is
    # another stage; this is the same vectorised arithmetic it performs
    inner = parts[~parts.touches_border]
    liberation = {}
    for name in NAMES.values():
        phase_volume = inner[f"vf_{name}"] * inner.volume_um3
        liberation[name] = phase_volume[inner[f"vf_{name}"] > 0.99].sum() / max(
            phase_volume.sum(), 1
        )
    return parts, grain_rows, association, liberation


PORESPY_SCRIPT = """
import sys, time, json, numpy as np, porespy
crop = np.load(sys.argv[1])
t = time.perf_counter()
props = porespy.metrics.regionprops_3D(crop)
frame = porespy.metrics.props_to_DataFrame(props)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(frame)}))
"""


def run_porespy(crop: np.ndarray, path: str) -> dict | None:
    if not Path(path).exists():
        return None
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "crop.npy", crop)
        env = {**os.environ, "PYTHONPATH": path}
        done = subprocess.run(
            [sys.executable, "-c", PORESPY_SCRIPT, str(Path(folder) / "crop.npy")],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed(repeats: int, function, *args, **kwargs):
    """Run `function` `repeats` times; return (result, min seconds, max extra peak RSS bytes)."""
    best, extra, result = float("inf"), 0, None
    for _ in range(repeats):
        with PeakRSS() as run:
            result = function(*args, **kwargs)
        best, extra = min(best, run.seconds), max(extra, run.extra)
    return result, best, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--particles", type=int, default=26000)
    parser.add_argument("--crop", type=int, default=96, help="porespy crop edge (voxels)")
    parser.add_argument("--porespy-path", default="/tmp/pspy")
    parser.add_argument("--skip-skimage", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (minimum reported)")
    args = parser.parse_args()
    spacing = 0.8

    t = time.perf_counter()
    particles, phases = make_sample(args.size, args.particles)
    make_seconds = time.perf_counter() - t
    small_p, small_f = make_sample(40, 40, seed=1)
    analyze(small_p, small_f, spacing)  # numba compilation / cache load out of the timings
    label_bytes = particles.nbytes

    load_before = os.getloadavg()
    (parts, grain_rows, association, liberation), ours_s, ours_mem = timed(
        args.repeats, analyze, particles, phases, spacing
    )
    print(association.to_string(index=False))
    _, shared_s, shared_mem = timed(
        args.repeats, particle_table, particles, spacing=spacing, surface=False
    )
    _, full_s, full_mem = timed(args.repeats, particle_table, particles, spacing=spacing)
    n = len(parts)
    print(f"sample: {args.size}^3 uint32 labels ({label_bytes / 2**20:.0f} MiB), {n} particles, "
          f"{len(grain_rows)} grains, 4 phases, {numba.get_num_threads()} numba threads, "
          f"{psutil.cpu_count()} CPUs; generated in {make_seconds:.1f} s")  # fmt: skip
    print(f"liberation degree (inline, border excluded): "
          f"{ {k: round(float(v), 3) for k, v in liberation.items()} }")  # fmt: skip

    rows = [
        ("corrtomo analyze: particles + grains + association + LD", ours_s, ours_mem, n, ""),
        (
            "corrtomo particle_table, labels only, surface=False (the descriptors skimage computes)",
            shared_s,
            shared_mem,
            n,
            "",
        ),
        (
            "corrtomo particle_table, labels only, with surface area + sphericity",
            full_s,
            full_mem,
            n,
            "",
        ),
    ]
    if not args.skip_skimage:
        from skimage.measure import regionprops_table

        properties = ("label", "area", "centroid", "bbox", "axis_major_length", "axis_minor_length")
        _, skimage_s, skimage_mem = timed(
            args.repeats, regionprops_table, particles, spacing=(spacing,) * 3,
            properties=properties,
        )  # fmt: skip
        rows.append(("skimage regionprops_table (area, centroid, bbox, axis lengths)", skimage_s,
                     skimage_mem, n, ""))  # fmt: skip
    lo = (args.size - args.crop) // 2
    crop = np.ascontiguousarray(
        particles[lo : lo + args.crop, lo : lo + args.crop, lo : lo + args.crop]
    )
    crop_n = int(np.count_nonzero(np.bincount(crop.ravel())[1:]))
    porespy = run_porespy(crop, args.porespy_path)
    if porespy is not None:
        per_particle = porespy["seconds"] / max(porespy["rows"], 1)
        rows.append((f"porespy regionprops_3D + props_to_DataFrame, {args.crop}^3 crop "
                     f"({porespy['rows']} particles, {porespy['seconds']:.1f} s), "
                     "EXTRAPOLATED per particle", per_particle * n, float("nan"), n, "extrapolated"))  # fmt: skip
    print()
    print("| run | time (s) | extra peak RSS (MiB) | peak / label volume | particles | "
          "/ analyze | / particle_table surface=False | / particle_table with surface |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, seconds, extra, count, _ in rows:
        memory = "n/a" if np.isnan(extra) else f"{extra / 2**20:.0f}"
        ratio = "n/a" if np.isnan(extra) else f"{extra / label_bytes:.2f}"
        print(f"| {name} | {seconds:.2f} | {memory} | {ratio} | {count} | "
              f"{seconds / ours_s:.1f}x | {seconds / shared_s:.1f}x | {seconds / full_s:.1f}x |")  # fmt: skip
    load_after = os.getloadavg()
    print(f"\nminimum of {args.repeats} repeats per timed call (porespy: 1 run); load average "
          f"(1, 5, 15 min) before timing {tuple(round(v, 2) for v in load_before)}, after "
          f"{tuple(round(v, 2) for v in load_after)} on {psutil.cpu_count()} CPUs")  # fmt: skip
    print(f"\n(crop for porespy: {crop_n} labels present; speed-ups = time of the row / time of "
          "corrtomo; peak RSS is resident memory above the level before the call, inputs excluded)")  # fmt: skip


if __name__ == "__main__":
    main()
