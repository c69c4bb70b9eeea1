"""Benchmark: hint-free nano-CT-in-micro-CT registration on 10 seeded twin pairs.

For each placement (random rotation about the pillar axis, tilt up to 10 degrees, scale ratio
4-10, random position) a ``talc-micro-nano`` twin pair is rendered and registered with
:func:`corrtomo.register.register_volume`, and with the registration a user would try first:
plain SimpleITK (similarity transform, Mattes mutual information, three resolution levels,
initialised by centring the two volumes' geometry, identity rotation). The error is the largest
distance between the nano volume's 8 corners under the found and the truth transform, in micro
voxels. Writes ``bench/results/bench_register_volume.md``.

Run: ``python bench/bench_register_volume.py [--n 10] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from corrtomo._shared import RigidTransform
from corrtomo.register import corner_error, register_volume
from corrtomo.synth import make_scale_pair

_P = np.eye(3)[::-1]  # (z, y, x) <-> (x, y, z)


def _image(array, spacing):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(tuple(float(v) for v in np.broadcast_to(spacing, (3,))[::-1]))
    return image


def sitk_peer(fixed, moving, fixed_spacing: float, moving_spacing: float) -> RigidTransform:
    """Plain SimpleITK multi-resolution similarity registration from the centred identity."""
    import SimpleITK as sitk

    nano = _image(moving, moving_spacing)  # SimpleITK samples its fixed image: the small volume
    micro = _image(fixed, fixed_spacing)
    initial = sitk.CenteredTransformInitializer(
        nano, micro, sitk.Similarity3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SetInitialTransform(initial, inPlace=True)
    method.Execute(nano, micro)
    a = np.asarray(initial.GetMatrix()).reshape(3, 3)
    c = np.asarray(initial.GetCenter())
    offset = np.asarray(initial.GetTranslation()) + c - a @ c
    matrix = np.eye(4)
    matrix[:3, :3] = (_P @ a @ _P) * moving_spacing / fixed_spacing
    matrix[:3, 3] = (_P @ offset) / fixed_spacing
    return RigidTransform(matrix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_register_volume.md")
    args = parser.parse_args()
    rows = []
    header = (
        "| placement | seed | scale ratio | rotation (deg) | tilt (deg) | error (micro voxels) | score | runner-up "
        "| confident | seconds | SimpleITK peer error | peer seconds |"
    )
    print(header)
    for k in range(args.n):
        seed = args.seed + 1000 + k
        t0 = time.perf_counter()
        pair = make_scale_pair("talc-micro-nano", seed=seed)
        render = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = register_volume(
            pair.micro_ct, pair.nano_ct, fixed_spacing=pair.micro_voxel_size_um, moving_spacing=pair.nano_voxel_size_um
        )
        seconds = time.perf_counter() - t0
        error = corner_error(result.transform, pair.transform, pair.nano_ct.shape)
        t0 = time.perf_counter()
        try:
            peer = sitk_peer(pair.micro_ct, pair.nano_ct, pair.micro_voxel_size_um, pair.nano_voxel_size_um)
            peer_error = corner_error(peer, pair.transform, pair.nano_ct.shape)
        except RuntimeError:
            peer_error = float("nan")
        peer_seconds = time.perf_counter() - t0
        m = pair.metadata
        row = (
            f"| {k + 1} | {seed} | {m['scale_ratio']:.2f} | {m['rotation_deg']:.1f} | {m['tilt_deg']:.1f} | {error:.2f} "
            f"| {result.score:.3f} | {result.runner_up:.3f} | {result.confident} | {seconds:.1f} | {peer_error:.1f} "
            f"| {peer_seconds:.1f} |"
        )
        print(row, f"(render {render:.0f} s)", flush=True)
        rows.append((row, error, result.confident, seconds, peer_error))
    errors = np.array([r[1] for r in rows])
    confident = np.array([r[2] for r in rows])
    peer_errors = np.array([r[4] for r in rows])
    within = int((errors <= 1.0).sum())
    summary = [
        f"- within 1 micro voxel: {within}/{len(rows)} (register_volume); "
        f"{int((peer_errors <= 1.0).sum())}/{len(rows)} (plain SimpleITK peer)",
        f"- confident: {int(confident.sum())}/{len(rows)}; confident but wrong (> 1 voxel): "
        f"{int((confident & (errors > 1.0)).sum())}; correct but flagged: {int((~confident & (errors <= 1.0)).sum())}",
        f"- median error {np.median(errors):.2f} micro voxels, max {errors.max():.2f}; "
        f"median time {np.median([r[3] for r in rows]):.1f} s per registration (2 shared CPU cores)",
    ]
    text = "\n".join(
        [
            "# bench_register_volume",
            "",
            "Hint-free registration of a nano-CT pillar inside a micro-CT overview (`talc-micro-nano` twin pairs:",
            "micro 112^3 at 0.6 um, nano 128^3 at 0.6/ratio um). Error: largest corner distance, micro voxels.",
            "",
            header,
            "|" + "---|" * 12,
            *[r[0] for r in rows],
            "",
            *summary,
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
