"""Benchmark: the whole pipeline on the chunked (out-of-core) path at growing volume sizes.

Usage: ``python bench/bench_pipeline_scaling.py [--sizes 256 512 1024] [--workers 1 2]
[--workers-size 256] [--size-workers 1|N|auto] [--chunk 128] [--dtype float32|uint16] [--resume]
[--workdir DIR]``

A talc-saxolite twin of 256^3 voxels (0.1 um) is made once (its SEM sections, EDS maps and
truth poses included). Larger CT volumes are its CT mirror-tiled block by block into an
OME-Zarr store (never held whole), so particles continue across tile borders. Each size runs
``corrtomo run`` from the CT to the analysis stage with ``execution.mode: chunked`` (blocks of
``--chunk``^3 voxels, default 128; ``--size-workers``: 1 serial, N or auto threads) in a fresh subprocess; the sections are placed at their truth poses (``pose:`` in the
config), because this benchmark measures throughput and memory, not registration (see
``bench_register.py``). Per stage it reports the wall time, the throughput in Mvox/s (CT voxels
over stage seconds) and the peak resident memory that the stage manifest recorded (this process
plus its dask worker processes). In the same run, the in-memory path at the smallest size is the
reference a user would otherwise use, and the worker comparison runs the chunked path at
``--workers-size`` with 1 and 2 workers (threads, or with ``--workers-scheduler processes`` a
local ``dask.distributed`` cluster of worker processes).
Writes ``bench/results/bench_pipeline_scaling.md`` (or ``--results``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "bench_pipeline_scaling.md"
BASE = 256
UNTIL = "analysis"


def make_base(workdir: Path) -> Path:
    """The 256^3 twin sample (cached in `workdir`)."""
    from corrtomo.synth import make_sample, write_sample

    sample = workdir / f"twin{BASE}"
    if not (sample / "sample.json").exists():
        start = time.perf_counter()
        write_sample(make_sample("talc-saxolite", shape=(BASE,) * 3, seed=0), sample, preview=False)
        print(f"twin {BASE}^3 made in {time.perf_counter() - start:.0f} s", flush=True)
    return sample


def make_ct(sample: Path, size: int, workdir: Path, dtype: str = "float32") -> Path:
    """The CT of `sample` mirror-tiled to size^3 as OME-Zarr (128^3 chunks), written block-wise.

    With ``dtype="uint16"`` the twin's attenuation values are first mapped linearly onto
    1000..61000 (as a scanner's reconstruction writes 16-bit grey values), rounded.
    """
    import dask.array as da
    import tifffile

    from corrtomo.io import write_ome_zarr

    path = workdir / (f"ct{size}.ome.zarr" if dtype == "float32" else f"ct{size}-{dtype}.ome.zarr")
    if path.exists():
        return path
    meta = json.loads((sample / "sample.json").read_text())
    base = da.from_array(tifffile.memmap(sample / "ct.tif"), chunks=128) if _is_memmappable(sample / "ct.tif") \
        else da.from_array(tifffile.imread(sample / "ct.tif"), chunks=128)
    if dtype == "uint16":
        low, high = float(base.min().compute()), float(base.max().compute())
        base = da.round(1000 + (base.astype(np.float64) - low) * (60000 / (high - low))).astype(np.uint16)
    elif dtype != "float32":
        raise ValueError(f"dtype must be float32 or uint16, not {dtype!r}")
    reps = size // BASE
    tiles = [[[base[:: (-1 if k % 2 else 1), :: (-1 if j % 2 else 1), :: (-1 if i % 2 else 1)]
               for i in range(reps)] for j in range(reps)] for k in range(reps)]
    volume = da.block(tiles).rechunk(128)
    start = time.perf_counter()
    write_ome_zarr(path, volume, spacing=meta["voxel_size_um"], chunks=128)
    print(f"CT {size}^3 written in {time.perf_counter() - start:.0f} s", flush=True)
    return path


def _is_memmappable(path: Path) -> bool:
    import tifffile

    try:
        tifffile.memmap(path, mode="r")
        return True
    except (ValueError, OSError):
        return False


def write_config(sample: Path, ct: Path, mode: str, workers, path: Path, chunk: int = 128,
                 scheduler: str | None = None) -> Path:
    import yaml

    from corrtomo.pipeline import demo_config

    config = demo_config(sample, truth=False, prefix=str(sample))
    config["ct"] = {"path": str(ct), "voxel_size_um": config["ct"]["voxel_size_um"]}
    for section in config["sections"]:  # truth poses: throughput, not registration, is measured
        section["pose"] = str(sample / "sem" / section["name"] / "pose.json")
    config["execution"] = {"mode": mode, "chunk": chunk, "workers": workers, "scheduler": scheduler}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(config: Path, run_dir: Path, resume: bool = False) -> dict:
    """One `corrtomo run` in a fresh process; the stage manifests. With `resume`, a run folder
    left by an earlier (interrupted) run is kept, so its finished stages and blocks are reused."""
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    command = [sys.executable, "-m", "corrtomo.cli", "run", str(config), "--out", str(run_dir), "--until", UNTIL, "-q"]
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:], "wall_s": wall}
    stages = {}
    for manifest in sorted(run_dir.glob("*/manifest.json")):
        data = json.loads(manifest.read_text())
        stages[data["stage"]] = data
    return {"stages": stages, "wall_s": wall}


def stage_rows(label: str, size: int, result: dict) -> list[str]:
    if "error" in result:
        return [f"| {label} | {size}^3 | failed: {result['error']} | | | |"]
    voxels = size**3
    rows = []
    peak = 0.0
    from corrtomo.pipeline import STAGE_NAMES

    order = STAGE_NAMES[: STAGE_NAMES.index(UNTIL) + 1]
    for name in order:
        data = result["stages"].get(name)
        if data is None:
            continue
        seconds = float(data["seconds"]) + float(data.get("seconds_earlier_attempts", 0.0))
        memory = float(data["peak_memory_mb"]) / 1024
        peak = max(peak, memory)
        rate = voxels / seconds / 1e6 if name not in ("sections", "register") else float("nan")
        rows.append(f"| {label} | {size}^3 | {name} | {seconds:.1f} | {rate:.2f} | {memory:.2f} |")
    total = sum(float(d["seconds"]) + float(d.get("seconds_earlier_attempts", 0.0)) for d in result["stages"].values())
    rows.append(f"| {label} | {size}^3 | **whole pipeline** | {total:.1f} | {voxels / total / 1e6:.2f} | "
                f"**{peak:.2f}** |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers-size", type=int, default=256)
    parser.add_argument("--workers-scheduler", choices=["threads", "processes"], default="threads",
                        help="how the worker comparison runs more than one worker")
    parser.add_argument("--size-workers", default="1",
                        help="execution.workers of the runs at --sizes (a number or auto: threads, one per core)")
    parser.add_argument("--chunk", type=int, default=128, help="block edge of the chunked path (voxels)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/pipeline-scaling"))
    parser.add_argument("--no-memory-reference", action="store_true")
    parser.add_argument("--dtype", choices=["float32", "uint16"], default="float32",
                        help="grey values of the tiled CT (uint16: a scanner's 16-bit scale)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the run folders of an interrupted bench run and resume them")
    parser.add_argument("--results", type=Path, default=RESULTS, help="markdown table to write")
    args = parser.parse_args()
    for size in args.sizes:
        if size % BASE:
            parser.error(f"sizes must be multiples of {BASE}")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sample = make_base(args.workdir)
    lines = [
        f"corrtomo pipeline scaling, chunked path ({args.chunk}^3 blocks), {platform.node()}: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
        f"stages volume..analysis, sections at truth poses, CT {args.dtype}",
        "",
        "| run | size | stage | seconds | Mvox/s | peak memory (GiB) |",
        "|---|---|---|---|---|---|",
    ]

    def report(rows):
        lines.extend(rows)
        for row in rows:
            print(row, flush=True)
        args.results.write_text("\n".join(lines) + "\n")

    if not args.no_memory_reference:
        ct = make_ct(sample, min(args.sizes), args.workdir, args.dtype)
        config = write_config(sample, ct, "memory", 1, args.workdir / "memory.yaml")
        report(stage_rows("in memory (reference)", min(args.sizes), run(config, args.workdir / "run-memory")))
    tag = ("" if args.chunk == 128 else f"-c{args.chunk}") + ("" if args.dtype == "float32" else f"-{args.dtype}")
    size_workers = args.size_workers if args.size_workers == "auto" else int(args.size_workers)
    if size_workers == "auto":
        from corrtomo.pipeline._config import ExecutionOptions
        from corrtomo.pipeline._stages import available_memory_bytes

        threads = ExecutionOptions(chunk=args.chunk).runner_settings(available_memory_bytes())[0]
        size_label = f"auto: {threads} thread{'s' if threads > 1 else ''}"
    else:
        size_label = "1 worker" if size_workers == 1 else f"{size_workers} threads"
    for size in args.sizes:
        ct = make_ct(sample, size, args.workdir, args.dtype)
        config = write_config(sample, ct, "chunked", size_workers, args.workdir / f"chunked{size}{tag}.yaml",
                              args.chunk)
        report(stage_rows(f"chunked, {size_label}", size, run(config, args.workdir / f"run-chunked{size}{tag}",
                                                              args.resume)))
    size = args.workers_size
    ct = make_ct(sample, size, args.workdir, args.dtype)
    results = {}
    for workers in args.workers:
        if workers == 1 and size in args.sizes:
            continue  # measured above
        config = write_config(sample, ct, "chunked", workers, args.workdir / f"workers{workers}{tag}.yaml", args.chunk,
                              scheduler=args.workers_scheduler if workers > 1 else None)
        results[workers] = run(config, args.workdir / f"run-workers{workers}{tag}-{args.workers_scheduler}",
                               args.resume)
        kind = "worker processes" if args.workers_scheduler == "processes" else "threads"
        report(stage_rows(f"chunked, {workers} {kind}", size, results[workers]))
    lines.append("")
    lines.append(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    args.results.write_text("\n".join(lines) + "\n")
    print(f"written {args.results}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
