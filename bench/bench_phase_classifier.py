"""Benchmark the phase classifier against skimage.feature.multiscale_basic_features + scikit-learn.

Run: ``python bench/bench_phase_classifier.py [--size 256] [--trees 64]``. Prints a markdown table.

All methods get the same sparse labels (one SEM section plane of the talc-saxolite twin at its
truth pose, eroded one voxel at phase boundaries, matrix = 255), the same number of trees and the
same class-balanced sample (at most 20000 labelled voxels per class). Rows:

* ``skimage+sklearn``: multiscale_basic_features + RandomForestClassifier on the whole volume;
  the forest also decides matrix versus particle (air outside the pillar included).
* ``skimage+sklearn+fg``: the same features, but the forest is trained on the mineral labels
  inside the CT foreground (``corrtomo.segment.foreground_mask``) and predicts only there (the
  foreground decides particle versus matrix), as corrtomo does; the foreground time is counted.
* ``corrtomo``: what a user runs: ``foreground_mask`` (pillar detection, matrix threshold, hole
  filling) then ``train_phase_classifier(..., foreground=fg)`` / ``predict`` with the defaults.
* ``corrtomo (no foreground)``: the full ilastik feature set, the classifier deciding matrix versus
  particle itself (the same task as the first row).

The throughput measured is foreground + features + classification of the whole volume (training
is reported apart); the mean IoU of the four minerals is over the whole volume, every voxel
counted (matrix and air outside the pillar included). Each method runs in its own process; peak
memory is the process's resident set (psutil, sampled every 20 ms). The twin is generated once
and cached in ``--cache`` (default /tmp/corrtomo_bench), keyed by the preset's settings.

``--importance`` instead measures which feature kinds and scales matter (permutation importance:
drop in balanced accuracy on held-out truth voxels when a group of channels is shuffled) on the
talc-saxolite and li-slag twins, the measurement behind ``DEFAULT_FEATURES``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from scipy import ndimage

MAX_PER_CLASS = 20000


class PeakMemory:
    """Sample this process's RSS in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02):
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        return False


def section_labels(phases: np.ndarray, pose, mineral_map: np.ndarray) -> np.ndarray:
    """Sparse labels from a section plane at its truth pose (see tests/test_segment_phases.py)."""
    labels = np.zeros(phases.shape, dtype=np.uint8)
    for z in range(phases.shape[0]):  # plane by plane keeps memory small
        grid = np.stack(np.meshgrid(np.array([z], float), *[np.arange(n, dtype=float) for n in phases.shape[1:]],
                                    indexing="ij"), axis=-1)[0]
        offset = grid - pose.origin
        distance = np.abs(offset @ pose.normal)
        column = np.rint(offset @ pose.u / (pose.u @ pose.u)).astype(int)
        row = np.rint(offset @ pose.v / (pose.v @ pose.v)).astype(int)
        rows, columns = mineral_map.shape
        on = (distance <= 0.5) & (column >= 0) & (column < columns) & (row >= 0) & (row < rows)
        values = mineral_map[row[on], column[on]]
        labels[z][on] = np.where(values == 0, 255, values)
    uniform = ndimage.maximum_filter(phases, size=3) == ndimage.minimum_filter(phases, size=3)
    truth = np.where(phases == 0, 255, phases)
    labels[~uniform | (labels != truth)] = 0
    return labels


def twin(cache: Path, preset: str, shape: tuple[int, int, int]) -> Path:
    import hashlib

    from corrtomo.synth import get_preset, make_sample

    key = hashlib.sha256(repr(get_preset(preset)).encode()).hexdigest()[:10]
    path = cache / f"{preset}_{'x'.join(map(str, shape))}_{key}.npz"
    if path.exists():
        return path

    sample = make_sample(preset, shape=shape, seed=0)
    labels = np.zeros(sample.phases.shape, dtype=np.uint8)
    for section in sample.sections:
        plane = section_labels(sample.phases, section.pose, section.mineral_map)
        labels[plane > 0] = plane[plane > 0]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, ct=sample.ct, phases=sample.phases, labels=labels, voxel_size_um=sample.voxel_size_um,
             ids=sample.library.ids, names=np.array(sample.library.names))
    return path


def mean_iou(truth: np.ndarray, predicted: np.ndarray, ids) -> float:
    values = []
    for i in ids:
        union = np.count_nonzero((truth == i) | (predicted == i))
        values.append(np.count_nonzero((truth == i) & (predicted == i)) / union if union else np.nan)
    return float(np.nanmean(values))


def per_phase_iou(truth: np.ndarray, predicted: np.ndarray, ids) -> list[float]:
    return [np.count_nonzero((truth == i) & (predicted == i)) / max(np.count_nonzero((truth == i) | (predicted == i)), 1)
            for i in ids]


def volume_fraction_error(truth: np.ndarray, predicted: np.ndarray, ids) -> float:
    """Largest absolute difference of the phase volume fractions (of all mineral voxels)."""
    return max(abs(np.count_nonzero(predicted == i) / max(np.count_nonzero(predicted), 1)
                   - np.count_nonzero(truth == i) / np.count_nonzero(truth)) for i in ids)


def balanced_sample(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = labels.ravel()
    chosen = []
    for c in np.unique(flat[flat > 0]):
        where = np.flatnonzero(flat == c)
        if where.size > MAX_PER_CLASS:
            where = np.sort(rng.choice(where, MAX_PER_CLASS, replace=False))
        chosen.append(where)
    return np.concatenate(chosen)


def run_method(method: str, path: str, trees: int) -> dict:
    data = np.load(path)
    ct, phases, labels = data["ct"], data["phases"], data["labels"]
    spacing = float(data["voxel_size_um"])
    ids = [int(i) for i in data["ids"]]
    names = dict(zip(ids, [str(n) for n in data["names"]], strict=True))
    rng = np.random.default_rng(0)
    result: dict = {"method": method}
    with PeakMemory() as memory:
        if method.startswith("corrtomo"):
            from corrtomo.segment import foreground_mask, train_phase_classifier

            t0 = time.perf_counter()
            foreground = None if method == "corrtomo (no foreground)" else foreground_mask(ct, spacing=spacing)
            t1 = time.perf_counter()
            clf = train_phase_classifier(ct, labels, spacing=spacing, class_names=names, foreground=foreground,
                                         n_estimators=trees, max_samples_per_class=MAX_PER_CLASS, rng=0)
            t2 = time.perf_counter()
            predicted = clf.predict(ct, foreground=foreground)
            t3 = time.perf_counter()
            result.update(train_s=t2 - t1, features_s=float("nan"), foreground_s=t1 - t0, classify_s=t3 - t2,
                          throughput_s=(t1 - t0) + (t3 - t2), n_features=clf.settings.n_features)
        else:
            from skimage.feature import multiscale_basic_features
            from sklearn.ensemble import RandomForestClassifier

            t0 = time.perf_counter()
            foreground = None
            if method == "skimage+sklearn+fg":
                from corrtomo.segment import foreground_mask

                foreground = foreground_mask(ct, spacing=spacing)
                labels = np.where(foreground & (labels != 255), labels, 0).astype(np.uint8)
            tf = time.perf_counter()
            stack = multiscale_basic_features(ct, intensity=True, edges=True, texture=True,
                                              workers=os.cpu_count())
            t1 = time.perf_counter()
            index = balanced_sample(labels, rng)
            flat = stack.reshape(-1, stack.shape[-1])
            forest = RandomForestClassifier(n_estimators=trees, class_weight="balanced", n_jobs=-1, random_state=0)
            forest.fit(flat[index], labels.ravel()[index])
            t2 = time.perf_counter()
            if foreground is None:
                predicted = forest.predict(flat).reshape(ct.shape)
                predicted[predicted == 255] = 0
            else:
                predicted = np.zeros(ct.size, dtype=np.uint8)
                inside = np.flatnonzero(foreground.ravel())
                predicted[inside] = forest.predict(flat[inside])
                predicted = predicted.reshape(ct.shape)
            t3 = time.perf_counter()
            result.update(train_s=t2 - t1, features_s=t1 - tf, foreground_s=tf - t0, classify_s=t3 - t2,
                          throughput_s=(t1 - t0) + (t3 - t2), n_features=stack.shape[-1])
    result.update(peak_gb=memory.peak / 1e9, mean_iou=mean_iou(phases, predicted, ids),
                  iou={i: round(v, 3) for i, v in zip(ids, per_phase_iou(phases, predicted, ids), strict=True)},
                  vf_error=volume_fraction_error(phases, predicted, ids), voxels=int(ct.size))
    return result


def importance(cache: Path) -> None:
    from corrtomo.segment import FEATURE_KINDS, train_phase_classifier
    from corrtomo.segment._features import compute_features

    kinds = FEATURE_KINDS[:6]
    print("| twin | group | permutation drop of balanced accuracy |")
    print("|---|---|---|")
    for preset, shape in (("talc-saxolite", (128, 128, 128)), ("li-slag", (64, 96, 96))):
        data = np.load(twin(cache, preset, shape))
        ct, phases, labels = data["ct"], data["phases"], data["labels"]
        ids = [int(i) for i in data["ids"]]
        names = dict(zip(ids, [str(n) for n in data["names"]], strict=True))
        spacing = float(data["voxel_size_um"])
        clf = train_phase_classifier(ct, labels, spacing=spacing, class_names=names, features=kinds, rng=0)
        stack = compute_features(ct, clf.settings, spacing=np.full(3, spacing))
        rng = np.random.default_rng(1)
        truth = np.where(phases == 0, 255, phases).ravel()
        held = rng.choice(truth.size, 100000, replace=False)
        X = stack.reshape(stack.shape[0], -1)[:, held]
        y = truth[held]

        def accuracy(features, clf=clf, y=y):
            proba = clf._forest.predict_proba(features)
            predicted = np.asarray(clf.class_ids)[proba.argmax(axis=0)]
            return np.mean([np.mean(predicted[y == c] == c) for c in np.unique(y)])

        base = accuracy(X)
        names_ = clf.feature_names
        groups = {k: [i for i, n in enumerate(names_) if n.startswith(k)] for k in kinds}
        for s in clf.settings.scales_um:
            groups[f"scale {s:.4g} um"] = [i for i, n in enumerate(names_) if n.endswith(f"_s{s:.4g}um")]
        for group, channels in groups.items():
            shuffled = X.copy()
            shuffled[channels] = X[channels][:, rng.permutation(X.shape[1])]
            print(f"| {preset} | {group} | {base - accuracy(shuffled):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--trees", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/corrtomo_bench"))
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--importance", action="store_true")
    parser.add_argument("--skip", nargs="*", default=[], help="methods to leave out")
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_method(args.method, args.data, args.trees)))
        return
    if args.importance:
        importance(args.cache)
        return
    t = time.perf_counter()
    path = twin(args.cache, "talc-saxolite", (args.size,) * 3)
    print(f"twin: talc-saxolite {args.size}^3 ({time.perf_counter() - t:.0f} s to make or load), "
          f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", file=sys.stderr)
    rows = []
    for method in ("skimage+sklearn", "skimage+sklearn+fg", "corrtomo", "corrtomo (no foreground)"):
        if method in args.skip:
            continue
        child = subprocess.run(
            [sys.executable, __file__, "--method", method, "--data", str(path), "--trees", str(args.trees)],
            capture_output=True, text=True,
        )
        if child.returncode:
            sys.exit(f"{method} failed:\n{child.stderr}")
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"{method}: done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    base = next((r for r in rows if r["method"] == "skimage+sklearn"), None)
    print(f"\nPhase classification, talc-saxolite twin {args.size}^3, {args.trees} trees, labels from one section plane, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} after the run. Throughput = foreground + "
          "features + classification of the whole volume; IoU and volume-fraction error over the whole volume; "
          "ratio against skimage+sklearn (whole volume).\n")
    print("| method | features | foreground+features+classify (s) | of which foreground (s) | of which skimage "
          "features (s) | train (s) | peak memory (GB) | mean IoU (4 minerals) | IoU calcite/dolomite/magnesite/talc "
          "| volume-fraction error | throughput ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = base["throughput_s"] / r["throughput_s"] if base else float("nan")
        features = "n/a (in blocks)" if np.isnan(r["features_s"]) else f"{r['features_s']:.1f}"
        per = "/".join(f"{v:.2f}" for v in r["iou"].values())
        print(f"| {r['method']} | {r['n_features']} | {r['throughput_s']:.1f} | {r['foreground_s']:.1f} | {features} "
              f"| {r['train_s']:.1f} | {r['peak_gb']:.2f} | {r['mean_iou']:.3f} | {per} | {r['vf_error']:.3f} "
              f"| {ratio:.1f}x |")


if __name__ == "__main__":
    main()
