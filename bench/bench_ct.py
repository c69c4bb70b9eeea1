"""Speed and agreement of corrtomo's CT kernels against scikit-image's radon/iradon/iradon_sart.

Run: ``python bench/bench_ct.py`` (about 1-3 minutes on 2 cores). Prints one table row per
operation: corrtomo time, scikit-image time, speed ratio and the relative RMS difference between
the two results (the same parallel-beam geometry; scikit-image rotates the image with bilinear
interpolation, corrtomo uses Joseph's projector, so a difference of ~1 % is expected).

Sizes: single 128^2 and 256^2 slices with ``ceil(pi/2 N)`` angles, and 64-slice slabs; the
scikit-image time of the 256^2 slab is extrapolated from 4 slices (marked ``*``) to keep the run
short. Times are the best of ``REPEATS`` runs after one warm-up call (numba compile excluded and
reported separately).
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np
from skimage.transform import iradon, iradon_sart, radon

from corrtomo.synth._ct import (
    backproject,
    default_n_angles,
    fbp,
    forward_project,
    simulate_ct,
    simulate_ct_image_domain,
    sirt,
)

REPEATS = 3


def phantom(n: int, n_z: int = 1, seed: int = 0) -> np.ndarray:
    """Random disks inside the inscribed circle, (n_z, n, n) float32, attenuation ~0.01/voxel."""
    rng = np.random.default_rng(seed)
    c = 0.5 * (n - 1)
    yy, xx = np.mgrid[:n, :n] - c
    out = np.zeros((n_z, n, n), np.float32)
    for z in range(n_z):
        out[z][np.hypot(xx, yy) < 0.45 * n] = 0.01
        for _ in range(12):
            r = rng.uniform(0.03, 0.1) * n
            rho, phi = rng.uniform(0, 0.3 * n), rng.uniform(0, 2 * np.pi)
            inside = np.hypot(xx - rho * np.cos(phi), yy - rho * np.sin(phi)) < r
            out[z][inside] = rng.uniform(0.005, 0.04)
    return out


def best(function, repeats: int = REPEATS) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def sk_radon(volume: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """scikit-image radon per slice, as (Z, A, D)."""
    return np.stack([radon(s, degrees, circle=False).T for s in volume]).astype(np.float32)


def sk_iradon(sino: np.ndarray, degrees: np.ndarray, n: int) -> np.ndarray:
    return np.stack(
        [iradon(s.T, degrees, output_size=n, circle=False, filter_name="ramp") for s in sino]
    ).astype(np.float32)


def to_sk(sino: np.ndarray, n: int) -> np.ndarray:
    """Our (Z, A, D) sinogram re-binned onto scikit-image's detector for circle=False.

    scikit-image pads the image to ``P = n + ceil(sqrt(2) n - n)`` and puts the rotation centre
    at ``P // 2``; ours is at ``(D - 1) / 2``. For odd n both are whole bins.
    """
    d = sino.shape[2]
    pad = math.ceil(math.sqrt(2) * n - n)
    p = n + pad
    out = np.zeros((*sino.shape[:2], p), np.float32)
    shift = p // 2 - (d - 1) // 2
    lo, hi = max(0, shift), min(p, shift + d)
    out[..., lo:hi] = sino[..., lo - shift : hi - shift]
    return out


def main() -> None:
    rows: list[tuple[str, float, float | None, str, str]] = []
    print(
        f"# numba threads: {os.environ.get('NUMBA_NUM_THREADS', 'default')}, cpus: {os.cpu_count()}"
    )

    start = time.perf_counter()
    warm = phantom(17)
    warm_angles = np.linspace(0, np.pi, 5, endpoint=False)
    fbp(forward_project(warm, warm_angles), warm_angles, 17)
    sirt(forward_project(warm, warm_angles), warm_angles, 17, iterations=1)
    print(f"# first call (numba compile or cache load): {time.perf_counter() - start:.2f} s")

    for n in (129, 257):  # odd sizes: both libraries put the rotation axis on a pixel centre
        volume = phantom(n)
        angles = np.arange(default_n_angles(n)) * (np.pi / default_n_angles(n))
        degrees = np.rad2deg(angles)
        t_ours, sino = best(lambda v=volume, a=angles: forward_project(v, a))
        t_sk, sino_sk = best(lambda v=volume, d=degrees: sk_radon(v, d))
        label = f"{n}^2 slice, {angles.size} angles"
        rows.append(
            ("forward projection", t_ours, t_sk, label, f"{rel_rms(to_sk(sino, n), sino_sk):.1e}")
        )
        t_ours, recon = best(lambda s=sino, a=angles, n=n: fbp(s, a, n))
        t_sk, recon_sk = best(lambda s=sino, d=degrees, n=n: sk_iradon(to_sk(s, n), d, n))
        rows.append(("FBP (ramp)", t_ours, t_sk, label, f"{rel_rms(recon, recon_sk):.1e}"))
        t_ours, _ = best(lambda s=sino, a=angles, n=n: backproject(s, a, n))
        rows.append(("backprojection only", t_ours, None, label, ""))
        if n == 129:
            t_ours, _ = best(lambda s=sino, a=angles, n=n: sirt(s, a, n, iterations=1))
            sino_circle = np.ascontiguousarray(to_sk(sino, n)[0].T)
            off = sino_circle.shape[0] // 2 - n // 2
            t_sk, _ = best(
                lambda s=sino_circle[off : off + n], d=degrees: iradon_sart(s, d.astype(float))
            )
            rows.append(("SIRT 1 iter / SART 1 pass", t_ours, t_sk, label, ""))
            t_ours, _ = best(lambda s=sino, a=angles, n=n: sirt(s, a, n, iterations=50), 1)
            rows.append(("SIRT 50 iterations", t_ours, None, label, ""))
        sys.stdout.flush()

    for n, sk_slices in ((129, 64), (257, 4)):
        n_z = 64
        volume = phantom(n, n_z, seed=1)
        angles = np.arange(default_n_angles(n)) * (np.pi / default_n_angles(n))
        degrees = np.rad2deg(angles)
        label = f"{n_z} x {n}^2 slab, {angles.size} angles"
        t_ours, sino = best(lambda v=volume, a=angles: forward_project(v, a), 1)
        t_sk, sino_sk = best(lambda v=volume[:sk_slices], d=degrees: sk_radon(v, d), 1)
        mark = "" if sk_slices == n_z else "*"
        t_sk *= n_z / sk_slices
        rows.append(
            (
                f"forward projection{mark}",
                t_ours,
                t_sk,
                label,
                f"{rel_rms(to_sk(sino[:sk_slices], n), sino_sk):.1e}",
            )
        )
        t_ours, recon = best(lambda s=sino, a=angles, n=n: fbp(s, a, n), 1)
        t_sk, recon_sk = best(
            lambda s=sino[:sk_slices], d=degrees, n=n: sk_iradon(to_sk(s, n), d, n), 1
        )
        t_sk *= n_z / sk_slices
        rows.append(
            (
                f"FBP (ramp){mark}",
                t_ours,
                t_sk,
                label,
                f"{rel_rms(recon[:sk_slices], recon_sk):.1e}",
            )
        )
        sys.stdout.flush()

    # end to end: 3 materials, 2-energy spectrum, Poisson noise, 64 x 128^2
    n, n_z = 128, 64
    base = phantom(n, n_z, seed=2) > 0
    grains = phantom(n, n_z, seed=3) > 0.02
    fractions = np.stack(
        [base & ~grains, grains & (np.arange(n) < n // 2), grains & (np.arange(n) >= n // 2)]
    )
    fractions = fractions.astype(np.float32)
    mu = np.array([[0.02, 0.01], [0.06, 0.03], [0.1, 0.05]])
    label = f"{n_z} x {n}^2, 3 materials, 2 energies"
    t, _ = best(lambda: simulate_ct(fractions, mu, [0.5, 0.5], voxel_size_um=1.0, rng=0), 1)
    rows.append(("simulate_ct (FBP)", t, None, label, ""))
    t, _ = best(
        lambda: simulate_ct(
            fractions[:, :16], mu, [0.5, 0.5], voxel_size_um=1.0, rng=0, reconstruction="sirt"
        ),
        1,
    )
    rows.append(("simulate_ct (SIRT 50)", t, None, label.replace(f"{n_z} x", "16 x"), ""))
    t, _ = best(
        lambda: simulate_ct_image_domain(fractions, mu, [0.5, 0.5], voxel_size_um=1.0, rng=0), 1
    )
    rows.append(("simulate_ct_image_domain", t, None, label, ""))

    header = f"{'operation':28s} {'size':34s} {'corrtomo s':>11s} {'skimage s':>10s} {'speed-up':>9s} {'rel RMS diff':>13s}"
    print(header)
    print("-" * len(header))
    for name, ours, theirs, size, diff in rows:
        theirs_text = f"{theirs:10.3f}" if theirs is not None else f"{'':10s}"
        ratio = f"{theirs / ours:8.1f}x" if theirs is not None else f"{'':9s}"
        print(f"{name:28s} {size:34s} {ours:11.3f} {theirs_text} {ratio} {diff:>13s}")
    print("* scikit-image time extrapolated from 4 slices")


if __name__ == "__main__":
    main()
