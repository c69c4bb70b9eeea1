"""Time and peak memory of ``corrtomo synth`` for every preset at several sizes.

Each run is a fresh ``corrtomo synth`` process (numba caches warm after the first), so peak
memory is that of the whole command. Prints a markdown table.

    python bench/bench_synth.py [--sizes 256 512] [--presets quick talc-saxolite li-slag]
                                [--image-sizes 512]

Sizes in ``--sizes`` use the presets' projection CT (Beer-Lambert projections, Poisson noise,
reconstruction); sizes in ``--image-sizes`` use the fast image-domain CT approximation
(``--ct-method image``), meant for large test volumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def run_measured(command: list[str]) -> tuple[float, float, int]:
    """Run a command; return (seconds, peak RSS in GiB of the process tree, exit code)."""
    start = time.perf_counter()
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
                peak = max(peak, rss)
            except psutil.Error:
                pass
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _, stderr = process.communicate()
    stop.set()
    thread.join()
    if process.returncode:
        sys.stderr.write(stderr.decode(errors="replace")[-2000:])
    return time.perf_counter() - start, peak / 2**30, process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--image-sizes", type=int, nargs="*", default=[])
    parser.add_argument("--presets", nargs="+", default=["quick", "talc-saxolite", "li-slag"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    corrtomo = str(Path(sys.executable).with_name("corrtomo"))
    workdir = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    # warm the numba caches once so timings are of the work, not of compilation
    subprocess.run([corrtomo, "synth", str(workdir / "warm"), "--preset", "quick", "-q"], check=True)
    rows = []
    for preset in args.presets:
        runs = [(None, "projection")] if preset == "quick" else [
            *((size, "projection") for size in args.sizes), *((size, "image") for size in args.image_sizes)
        ]
        for size, method in runs:
            out = workdir / f"{preset}-{size}-{method}"
            command = [corrtomo, "synth", str(out), "--preset", preset, "--seed", str(args.seed), "-q", "--ct-method", method]
            if size is not None:
                command += ["--shape", str(size), str(size), str(size)]
            seconds, peak_gib, code = run_measured(command)
            info = json.loads((out / "sample.json").read_text()) if code == 0 else {}
            shape = "x".join(map(str, info.get("shape", [size] * 3)))
            rows.append((preset, shape, method, info.get("truth", {}).get("n_particles", "-"), f"{seconds:.1f}", f"{peak_gib:.2f}", "ok" if code == 0 else f"exit {code}"))
            shutil.rmtree(out, ignore_errors=True)
            print(f"# {preset} {shape} {method}: {seconds:.1f} s, {peak_gib:.2f} GiB", file=sys.stderr, flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"corrtomo synth on {psutil.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; load average at the end {load}\n")
    print("| preset | shape | CT method | particles | time (s) | peak memory (GiB) | status |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
