"""Chunked labelling and particle table from Zarr (128^3 chunks) versus cc3d / measure in memory.

The volume is a cheap realistic foreground: ~20k random ellipsoids (random semi-axes 2.5-9
voxels, random orientation) in 512^3, many touching, written to Zarr with 128^3 chunks. Cases,
each in a fresh process so its peak memory (VmHWM) is its own:

- ``cc3d``: the whole mask read from Zarr, then ``cc3d.connected_components`` (26) in memory
  (the reference; time of the labelling only, read time reported apart);
- ``chunked``: :func:`corrtomo.chunked.label_components` Zarr -> Zarr, 128^3 blocks (all of it:
  reading, labelling, union-find, relabelling, writing); its labels are then compared with the
  reference voxel for voxel;
- ``dask-image``: ``dask_image.ndmeasure.label`` on the Zarr array (if installed), killed after
  the timeout;
- ``table``: :func:`corrtomo.measure.particle_table` in memory on the labels and a phase image
  (three phases in slabs, so particles hold several grains) versus
  :func:`corrtomo.chunked.particle_table_chunked` from Zarr.

Usage: python bench/bench_chunked.py [--size 512] [--objects 20000] [--timeout 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

CHUNK = 128


@numba.njit(cache=True)
def _draw(mask, centres, axes, rotations):
    nz, ny, nx = mask.shape
    for i in range(centres.shape[0]):
        r = axes[i].max()
        cz, cy, cx = centres[i]
        for z in range(max(0, int(cz - r)), min(nz, int(cz + r) + 2)):
            for y in range(max(0, int(cy - r)), min(ny, int(cy + r) + 2)):
                for x in range(max(0, int(cx - r)), min(nx, int(cx + r) + 2)):
                    d0, d1, d2 = z - cz, y - cy, x - cx
                    s = 0.0
                    for k in range(3):
                        u = (
                            rotations[i, k, 0] * d0
                            + rotations[i, k, 1] * d1
                            + rotations[i, k, 2] * d2
                        )
                        s += (u / axes[i, k]) ** 2
                    if s <= 1.0:
                        mask[z, y, x] = True


def make_volume(size: int, n_objects: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (n_objects, 3))
    axes = rng.uniform(2.5, 9.0, (n_objects, 3))
    q = rng.normal(size=(n_objects, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    rotations = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], 1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], 1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1),
        ],
        1,
    )
    mask = np.zeros((size, size, size), dtype=bool)
    _draw(mask, centres, axes, rotations)
    return mask


def _peak_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss would carry the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, folder: str) -> dict:
    import zarr

    root = Path(folder)
    mask_zarr = zarr.open_array(str(root / "mask.zarr"), mode="r")
    result: dict = {"case": case, "rss_start_mb": _peak_mb()}
    if case == "cc3d":
        import cc3d

        start = time.perf_counter()
        mask = mask_zarr[...]
        result["read_s"] = time.perf_counter() - start
        start = time.perf_counter()
        labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
        result["time_s"] = time.perf_counter() - start
        result["n"] = int(n)
        np.save(root / "reference.npy", labels.astype(np.uint32))
    elif case == "chunked":
        from corrtomo.chunked import label_components

        label_components(np.zeros((4, 4, 4), bool), chunks=(2, 2, 2))  # numba cache warm-up
        out = zarr.create_array(
            store=str(root / "labels.zarr"), shape=mask_zarr.shape, chunks=(CHUNK,) * 3,
            dtype="uint32", overwrite=True,
        )  # fmt: skip
        start = time.perf_counter()
        _, n = label_components(mask_zarr, connectivity=26, out=out)
        result["time_s"] = time.perf_counter() - start
        result["n"] = int(n)
    elif case == "dask-image":
        import dask
        import dask.array as da
        from dask_image.ndmeasure import label

        array = da.from_zarr(mask_zarr)
        start = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            labels, n = label(array, structure=np.ones((3, 3, 3), bool))
            labels = labels.astype(np.uint32).compute()
            n = int(n.compute()) if hasattr(n, "compute") else int(n)
        result["time_s"] = time.perf_counter() - start
        result["n"] = n
    elif case in ("table-memory", "table-chunked"):
        spacing = (1.0, 1.0, 1.0)
        if case == "table-memory":
            from corrtomo.measure import particle_table

            particles = zarr.open_array(str(root / "labels.zarr"), mode="r")[...]
            phases = zarr.open_array(str(root / "phases.zarr"), mode="r")[...]
            particle_table(particles[:8, :8, :8], phases[:8, :8, :8])  # warm-up
            start = time.perf_counter()
            table = particle_table(particles, phases, spacing=spacing)
        else:
            from corrtomo.chunked import particle_table_chunked

            particles = zarr.open_array(str(root / "labels.zarr"), mode="r")
            phases = zarr.open_array(str(root / "phases.zarr"), mode="r")
            particle_table_chunked(particles[:8, :8, :8], phases[:8, :8, :8], chunks=(4, 4, 4))
            start = time.perf_counter()
            table = particle_table_chunked(particles, phases, spacing=spacing)
        result["time_s"] = time.perf_counter() - start
        result["n"] = len(table)
        table.to_parquet(root / f"{case}.parquet")
    result["peak_rss_mb"] = _peak_mb()
    return result


def spawn(case: str, folder: str, timeout: float) -> dict:
    command = [sys.executable, __file__, "--case", case, "--folder", folder]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"case": case, "timeout": timeout}
    if done.returncode != 0:
        return {"case": case, "error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare_labels(folder: Path) -> bool:
    import zarr

    reference = np.load(folder / "reference.npy", mmap_mode="r")
    labels = zarr.open_array(str(folder / "labels.zarr"), mode="r")
    for z0 in range(0, labels.shape[0], CHUNK):
        if not np.array_equal(labels[z0 : z0 + CHUNK], reference[z0 : z0 + CHUNK]):
            return False
    return True


def compare_tables(folder: Path) -> float:
    import pandas as pd

    a = pd.read_parquet(folder / "table-memory.parquet")
    b = pd.read_parquet(folder / "table-chunked.parquet")
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return float("inf")
    worst = 0.0
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype.kind == "f":
            scale = np.maximum(np.abs(x), 1e-300)
            finite = np.isfinite(x)
            if not np.array_equal(finite, np.isfinite(y)):
                return float("inf")
            worst = max(worst, float(np.max(np.abs(x - y)[finite] / scale[finite], initial=0.0)))
        elif not np.array_equal(x, y):
            return float("inf")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--objects", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--case")
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.folder)))
        return
    import importlib.util

    import zarr

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        mask = make_volume(args.size, args.objects, args.seed)
        made_s = time.perf_counter() - start
        chunks = (CHUNK,) * 3
        source = zarr.create_array(
            store=str(folder / "mask.zarr"), shape=mask.shape, chunks=chunks, dtype=bool
        )
        source[...] = mask
        zz = np.arange(args.size)[:, None, None] // 9
        yy = np.arange(args.size)[None, :, None] // 13
        xx = np.arange(args.size)[None, None, :] // 17
        phases = (1 + (zz + yy + xx) % 3).astype(np.uint8) * mask
        phase_store = zarr.create_array(
            store=str(folder / "phases.zarr"), shape=mask.shape, chunks=chunks, dtype="uint8"
        )
        phase_store[...] = phases
        fraction = float(mask.mean())
        del mask, phases, zz, yy, xx
        results = {"cc3d": spawn("cc3d", tmp, 3600)}
        results["chunked"] = spawn("chunked", tmp, 3600)
        exact = compare_labels(folder)
        if importlib.util.find_spec("dask_image") is not None:
            results["dask-image"] = spawn("dask-image", tmp, args.timeout)
        else:
            results["dask-image"] = {"case": "dask-image", "error": "dask-image not installed"}
        results["table-memory"] = spawn("table-memory", tmp, 3600)
        results["table-chunked"] = spawn("table-chunked", tmp, 3600)
        worst = compare_tables(folder)
    voxels = args.size**3
    n = results["cc3d"].get("n")
    lines = [
        f"Chunked labelling, {args.size}^3 bool foreground ({fraction:.1%} foreground, "
        f"{args.objects} random ellipsoids, {n} 26-connected components, made in {made_s:.1f} s), "
        f"Zarr with {CHUNK}^3 chunks; {os.cpu_count()} cores, load average {load:.1f} at start; "
        "each case in a fresh process (peak RSS includes the interpreter and imports).",
        "",
        "| case | time (s) | Mvox/s | peak RSS (MB) | components / rows | note |",
        "|---|---|---|---|---|---|",
    ]
    notes = {
        "cc3d": "in memory, labelling only (reading the Zarr: {read_s:.1f} s)",
        "chunked": "Zarr -> Zarr, 128^3 blocks; labels identical to cc3d: {exact}",
        "dask-image": "ndmeasure.label, 26-connectivity, threads",
        "table-memory": "measure.particle_table in memory (grains by cc3d)",
        "table-chunked": "particle_table_chunked from Zarr; worst relative float difference {worst:.1e}",
    }
    for case, result in results.items():
        if "time_s" in result:
            note = notes[case].format(exact=exact, worst=worst, **result)
            lines.append(
                f"| {case} | {result['time_s']:.2f} | {voxels / result['time_s'] / 1e6:.0f} | "
                f"{result['peak_rss_mb']:.0f} | {result['n']} | {note} |"
            )
        elif "timeout" in result:
            lines.append(
                f"| {case} | > {result['timeout']:.0f} | - | - | - | killed at the timeout |"
            )
        else:
            lines.append(f"| {case} | - | - | - | - | {result['error']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(__file__).parent / "results" / "bench_chunked.md"
    out.write_text(text)


if __name__ == "__main__":
    main()
