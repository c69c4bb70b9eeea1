"""Benchmark: which foreground of the U-Net particle head gives the best particles.

Usage: ``python bench/bench_particle_head.py RUN [RUN ...] [--tag TAG]``

Each RUN is a finished pipeline run with ``stages.particles.foreground: unet`` (for example the
``run-u-net-phases---particles*`` folders of ``bench/bench_unet.py``). Its trained model
(``train/phase_unet.unet``) predicts the particle head once more; the head's output is turned into
a particle foreground by each rule below, which then goes through the run's own particle options
(distance-transform watershed, ``stages.particles``) and is scored against the twin's truth
(particle F1 at IoU 0.5, foreground IoU). The classical peer is the run's CT foreground.

Rules (all cleaned as the CT foreground is: pillar, cavities, dust):

- ``classes``: the head's most probable class is not matrix (the pipeline before this bench);
- ``classes, smoothed``: that matrix decision smoothed with the one-voxel Gaussian the CT gets,
  below 0.5 (the pipeline's rule until the calibrated threshold);
- ``matrix p``: the head's matrix probability below 0.5;
- ``matrix p, smoothed``: the same after the one-voxel Gaussian;
- ``classes p, smoothed``: each class probability smoothed, then the most probable class;
- ``... prior-corrected``: the head's probabilities divided by the class weights of its training loss
  and renormalised, ``p_c = q_c / w_c / sum_j q_j / w_j`` (the minimiser of a class-weighted
  cross-entropy is ``q_c ∝ w_c p_c``, Saerens et al. 2002), then the rule;
- ``matrix p, smoothed, calibrated t``: the smoothed matrix probability below the model's
  calibrated threshold (:func:`corrtomo.segment.unet.calibrate_matrix_threshold`: the
  balanced-accuracy optimum on the held-out labelled voxels of its validation patches; new
  models carry it from training), the pipeline's rule.

Writes ``bench/results/bench_particle_head[_TAG].md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

RESULTS = Path(__file__).parent / "results"


def score(truth: np.ndarray, foreground: np.ndarray, spacing, particle_options: dict, pillar) -> dict:
    from corrtomo.evaluate import match_instances
    from corrtomo.segment import separate_particles

    segmentation = separate_particles(
        foreground, spacing=spacing, method=particle_options.get("method", "h_maxima"),
        h_um=particle_options.get("h_um"), resolution_um=particle_options.get("resolution_um"),
        merge_oversplit=bool(particle_options.get("merge_oversplit", True)),
        merge_ratio=float(particle_options.get("merge_ratio", 0.9)), pillar=pillar)
    match = match_instances(truth, segmentation.labels)
    inside = truth > 0
    iou = float((foreground & inside).sum() / max((foreground | inside).sum(), 1))
    return {"f1": match.f1, "precision": match.precision, "recall": match.recall,
            "n": segmentation.n_particles, "n_true": match.n_true, "foreground_iou": iou}


def bench_run(run: Path) -> list[tuple[str, dict]]:
    import tifffile

    from corrtomo.io import read_volume
    from corrtomo.segment import detect_pillar, foreground_mask
    from corrtomo.segment.unet import calibrate_matrix_threshold, load_unet, predict_unet

    config = yaml.safe_load((run / "config.yaml").read_text())
    base = Path(config["base_dir"])
    truth = tifffile.imread(base / config["truth"]["particles"])
    volume = read_volume(run / "volume" / "ct.ome.zarr")
    ct = np.asarray(volume.data)
    spacing = volume.spacing
    particle_options = config["stages"]["particles"]
    pillar = detect_pillar(ct, spacing=spacing) if config["stages"]["foreground"].get("pillar", True) else None
    model = load_unet(run / "train" / "phase_unet.unet", spacing=spacing)
    calibration = (model.training.get("matrix_threshold")
                   or calibrate_matrix_threshold(model, volume.data, read_volume(run / "labels" / "labels.ome.zarr").data))
    start = time.perf_counter()
    head = predict_unet(model, ct, spacing=spacing, particle=True, boundary=True, matrix=True,
                        block_shape=ct.shape)
    predict_s = time.perf_counter() - start
    matrix = head.matrix.astype(np.float32) / np.float32(255.0)
    boundary = head.boundary.astype(np.float32) / np.float32(255.0)
    core = np.clip(1.0 - matrix - boundary, 0.0, 1.0)
    sigma = tuple(float(np.min(spacing)) / np.asarray(spacing, dtype=float))

    def smoothed(p):
        return ndimage.gaussian_filter(p, sigma, mode="nearest")

    classes_matrix = (head.particle == 0).astype(np.float32)
    weights = np.asarray(model.training["class_weights"]["particle"], dtype=np.float32)
    corrected = np.stack([matrix / weights[0], core / weights[1], boundary / weights[2]])
    corrected /= np.maximum(corrected.sum(axis=0), np.float32(1e-12))
    corrected_matrix = corrected[0]
    corrected_classes = (corrected_matrix >= np.maximum(corrected[1], corrected[2])).astype(np.float32)
    del corrected
    class_argmax = (smoothed(matrix) >= np.maximum(smoothed(core), smoothed(boundary))).astype(np.float32)
    rules = [
        ("classes", classes_matrix, 0.0),
        ("classes, smoothed", classes_matrix, None),
        ("matrix p", matrix, 0.0),
        ("matrix p, smoothed", matrix, None),
        ("classes p, smoothed", class_argmax, 0.0),
        ("classes prior-corrected, smoothed", corrected_classes, None),
        ("matrix p prior-corrected, smoothed", corrected_matrix, None),
    ]
    threshold = float(calibration["value"])
    rule = f"matrix p, smoothed, calibrated t = {threshold:.2f} (pipeline)"
    ct_foreground = np.asarray(read_volume(run / "foreground" / "foreground.ome.zarr").data) > 0
    rows = [("CT foreground (classical)", score(truth, ct_foreground, spacing, particle_options, pillar))]
    for name, probability, smooth_um, cut in [(*r, 0.5) for r in rules] + [(rule, matrix, None, threshold)]:
        foreground = foreground_mask(ct, spacing=spacing, probabilities=probability, smooth_um=smooth_um,
                                     matrix_threshold=cut,
                                     pillar=pillar if pillar is not None else False,
                                     fill_holes=config["stages"]["foreground"].get("fill_holes", True))
        rows.append((name, score(truth, foreground, spacing, particle_options, pillar)))
    print(f"{run}: head predicted in {predict_s:.1f} s; calibration {calibration}")
    return rows, calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    lines = [f"corrtomo bench_particle_head, {platform.node()}, CPU ({os.cpu_count()} cores); particle F1 at "
             "IoU 0.5 against the twin's truth, the run's own particle options", ""]
    for run in args.runs:
        lines += [f"run: `{run}`", "",
                  "| particle foreground | particle F1 | precision | recall | particles (true) | foreground IoU |",
                  "|---|---|---|---|---|---|"]
        rows, calibration = bench_run(run)
        for name, row in rows:
            lines.append(f"| {name} | {row['f1']:.3f} | {row['precision']:.3f} | {row['recall']:.3f} | "
                         f"{row['n']} ({row['n_true']}) | {row['foreground_iou']:.3f} |")
        voxels = calibration["voxels"]
        lines += ["", f"calibration: t = {calibration['value']:.2f}, balanced accuracy "
                      f"{calibration['balanced_accuracy']:.4f} (at 0.5: {calibration['at_half']:.4f}) on "
                      f"{voxels['matrix']} matrix and {voxels['particle']} particle held-out voxels", ""]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_particle_head{'_' + args.tag if args.tag else ''}.md"
    out.write_text(text)
    print(f"written {out}")


if __name__ == "__main__":
    main()
