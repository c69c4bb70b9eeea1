"""The phase classifier: a random forest on voxel features, trained from sparse labels and applied
block by block, with class probabilities, an uncertainty map and safe (skops) persistence.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numba
import numpy as np

from .._shared import (
    MATRIX_LABEL,
    BlockRunner,
    InputError,
    as_rng,
    atomic_path,
    file_sha256,
    normalize_spacing,
    write_json_atomic,
)
from ._features import (
    DEFAULT_BLOCK_SHAPE,
    DEFAULT_FOREGROUND_FEATURES,
    FeatureSettings,
    _block_shape,
    _threads,
    block_features,
    check_foreground,
    check_image,
    iter_blocks,
    read_block,
    read_mask,
)

#: Classifier kinds ``train_phase_classifier`` accepts.
MODEL_KINDS: tuple[str, ...] = ("random_forest", "extra_trees", "hist_gradient_boosting")
#: Relative voxel-size difference tolerated between a model and the volume it is applied to.
VOXEL_SIZE_TOLERANCE = 0.02
#: Name of the matrix class (sparse label 255).
MATRIX_NAME = "matrix"
_FORMAT = "corrtomo.phase-classifier"
_FORMAT_VERSION = 1
#: Module prefixes of the types a saved model may hold (checked before loading with skops).
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.", "builtins.", "collections.")

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# fast forest inference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Forest:
    """A tree ensemble as flat arrays (all trees concatenated) for compiled inference."""

    roots: np.ndarray  # (T,) int64, first node of each tree
    left: np.ndarray  # (N,) int32, absolute index of the left child, -1 at leaves
    right: np.ndarray  # (N,) int32
    feature: np.ndarray  # (N,) int32
    threshold: np.ndarray  # (N,) float64; go left when x <= threshold (as scikit-learn)
    value: np.ndarray  # (N, C) float32, class fractions at each node

    @classmethod
    def from_sklearn(cls, model: Any) -> _Forest:
        roots, left, right, feature, threshold, value = [], [], [], [], [], []
        offset = 0
        for estimator in model.estimators_:
            tree = estimator.tree_
            n = tree.node_count
            children_left = tree.children_left.astype(np.int64)
            children_right = tree.children_right.astype(np.int64)
            leaf = children_left < 0
            left.append(np.where(leaf, -1, children_left + offset))
            right.append(np.where(leaf, -1, children_right + offset))
            feature.append(np.where(leaf, 0, tree.feature))
            threshold.append(tree.threshold)
            fractions = tree.value[:, 0, :].astype(np.float64)
            fractions /= np.maximum(fractions.sum(axis=1, keepdims=True), 1e-300)
            value.append(fractions)
            roots.append(offset)
            offset += n
        return cls(
            roots=np.asarray(roots, dtype=np.int64),
            left=np.concatenate(left).astype(np.int32),
            right=np.concatenate(right).astype(np.int32),
            feature=np.concatenate(feature).astype(np.int32),
            threshold=np.concatenate(threshold).astype(np.float64),
            value=np.ascontiguousarray(np.concatenate(value), dtype=np.float32),
        )

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Mean class fractions of the leaves, (C, n), for features (F, n) float32."""
        out = np.zeros((self.value.shape[1], features.shape[1]), dtype=np.float32)
        with _threads(1 if features.shape[1] < 20000 else None):
            _forest_proba(
                np.ascontiguousarray(features, dtype=np.float32), self.roots, self.left, self.right,
                self.feature, self.threshold, self.value, out,
            )
        return out


@numba.njit(parallel=True, cache=True)
def _forest_proba(features, roots, left, right, feature, threshold, value, out):  # pragma: no cover
    n = features.shape[1]
    n_classes = value.shape[1]
    n_trees = roots.size
    chunk = 1024
    n_chunks = (n + chunk - 1) // chunk
    scale = np.float32(1.0 / n_trees)
    for b in numba.prange(n_chunks):
        start = b * chunk
        stop = min(n, start + chunk)
        for t in range(n_trees):
            root = roots[t]
            for i in range(start, stop):
                node = root
                while left[node] >= 0:
                    if features[feature[node], i] <= threshold[node]:
                        node = left[node]
                    else:
                        node = right[node]
                for c in range(n_classes):
                    out[c, i] += value[node, c]
        for c in range(n_classes):
            for i in range(start, stop):
                out[c, i] *= scale


# --------------------------------------------------------------------------------------------
# the classifier
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierConfig:
    """How the classifier was trained (stored with the model).

    Parameters
    ----------
    model : str
        ``"random_forest"`` (default; Breiman 2001), ``"extra_trees"`` or
        ``"hist_gradient_boosting"`` (scikit-learn's LightGBM-style boosting).
    n_estimators : int
        Trees (forests) or boosting iterations.
    max_depth : int or None
        Depth limit of each tree (forests); ``None`` grows trees until leaves are pure.
    min_samples_leaf : int
        Smallest leaf (forests).
    max_samples_per_class : int
        Labelled voxels drawn at random per class (class balancing); the rest are not used.
    class_weight : str or None
        ``"balanced"`` re-weights classes inversely to their sample counts.
    """

    model: str = "random_forest"
    n_estimators: int = 64
    max_depth: int | None = None
    min_samples_leaf: int = 1
    max_samples_per_class: int = 20000
    class_weight: str | None = "balanced"

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise InputError(f"unknown model {self.model!r}; choose from {', '.join(MODEL_KINDS)}", source="model")
        if int(self.n_estimators) < 1 or int(self.max_samples_per_class) < 1 or int(self.min_samples_leaf) < 1:
            raise InputError("n_estimators, min_samples_leaf and max_samples_per_class must be >= 1", source="model")

    def build(self, random_state: int) -> Any:
        if self.model == "hist_gradient_boosting":
            from sklearn.ensemble import HistGradientBoostingClassifier

            return HistGradientBoostingClassifier(
                max_iter=int(self.n_estimators), class_weight=self.class_weight, random_state=random_state,
                early_stopping=False,
            )
        if self.model == "extra_trees":
            from sklearn.ensemble import ExtraTreesClassifier as Forest
        else:
            from sklearn.ensemble import RandomForestClassifier as Forest
        return Forest(
            n_estimators=int(self.n_estimators), max_depth=self.max_depth, min_samples_leaf=int(self.min_samples_leaf),
            class_weight=self.class_weight, max_features="sqrt", n_jobs=-1, random_state=random_state,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "n_estimators": int(self.n_estimators), "max_depth": self.max_depth,
            "min_samples_leaf": int(self.min_samples_leaf), "max_samples_per_class": int(self.max_samples_per_class),
            "class_weight": self.class_weight,
        }


@dataclass(frozen=True)
class PhasePrediction:
    """The output of :meth:`PhaseClassifier.predict_proba`.

    Attributes
    ----------
    phases : (Z, Y, X) uint8 ndarray
        Phase ids of the library; 0 for matrix and for voxels outside the foreground.
    probabilities : (C, Z, Y, X) float32 ndarray
        Class probabilities in the order of `class_ids` (mean leaf class fractions of the trees).
    uncertainty : (Z, Y, X) float32 ndarray
        ``1 - max_c p_c`` (``"margin"``) or the normalised entropy
        :math:`-\\sum_c p_c \\log p_c / \\log C` (``"entropy"``); 0 outside the foreground.
    class_ids : tuple of int
        Class of each probability channel (255 = matrix).
    """

    phases: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    class_ids: tuple[int, ...]


@dataclass(frozen=True)
class PhaseClassifier:
    """A trained voxel classifier for mineral phases (see :func:`train_phase_classifier`).

    Attributes
    ----------
    model : scikit-learn classifier
        The fitted estimator; ``model.classes_`` equals `class_ids`.
    settings : FeatureSettings
        Voxel features (scales in micrometres).
    class_ids : tuple of int
        Classes in probability order; 255 is the matrix class.
    class_names : dict of int to str
        Name of every class.
    voxel_size_um : (3,) tuple of float
        Voxel size (z, y, x) of the training volume.
    config : ClassifierConfig
        Training settings.
    uses_foreground : bool
        Trained inside a particle foreground (then :meth:`predict` needs one).
    training : dict
        Summary: labelled and used voxels per class, impurity feature importances.
    version : str
        corrtomo version that trained it.
    """

    model: Any
    settings: FeatureSettings
    class_ids: tuple[int, ...]
    class_names: dict[int, str]
    voxel_size_um: tuple[float, float, float]
    config: ClassifierConfig = field(default_factory=ClassifierConfig)
    uses_foreground: bool = False
    training: dict = field(default_factory=dict)
    version: str = ""

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature channels."""
        return self.settings.names()

    @property
    def mineral_ids(self) -> tuple[int, ...]:
        """Classes that are minerals (all but the matrix)."""
        return tuple(c for c in self.class_ids if c != MATRIX_LABEL)

    @cached_property
    def _forest(self) -> _Forest | None:
        if self.config.model in ("random_forest", "extra_trees"):
            return _Forest.from_sklearn(self.model)
        return None

    def feature_importances(self) -> dict[str, float]:
        """Impurity (mean decrease in Gini) importance of each feature channel, summing to 1."""
        values = getattr(self.model, "feature_importances_", None)
        if values is None:
            return {}
        return {name: float(v) for name, v in zip(self.feature_names, values, strict=True)}

    def _check_spacing(self, image: Any, spacing: Any) -> np.ndarray:
        if spacing is None:
            spacing = getattr(image, "spacing", None)
        if spacing is None:
            return np.asarray(self.voxel_size_um, dtype=np.float64)
        spacing = normalize_spacing(spacing)
        check_voxel_size(self.voxel_size_um, spacing)
        return spacing

    def _classify(self, features: np.ndarray) -> np.ndarray:
        """(C, n) probabilities for features (F, n)."""
        forest = self._forest
        if forest is not None:
            return forest.predict_proba(features)
        return self.model.predict_proba(np.ascontiguousarray(features.T)).T.astype(np.float32)

    def predict_proba(
        self,
        image: Any,
        *,
        spacing: float | Sequence[float] | None = None,
        foreground: Any = None,
        block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
        uncertainty: str = "margin",
        out: Any = None,
        progress: Progress | None = None,
    ) -> PhasePrediction:
        """Phases, class probabilities and uncertainty of every voxel, block by block.

        Parameters
        ----------
        image : (Z, Y, X) array_like
            CT volume (numpy, Zarr, Dask or :class:`corrtomo.io.Volume`), axes (z, y, x).
        spacing : float or (3,) floats, optional
            Voxel size in micrometres; must match the model's within 2 % (default: the model's).
        foreground : (Z, Y, X) bool array_like, optional
            Particle voxels. Only these are classified (blocks without any are skipped); inside,
            the phase is the most probable *mineral* (the foreground decides particle versus
            matrix); outside, phases are 0, the matrix probability 1 and the uncertainty 0.
            Required when the model was trained with a foreground.
        block_shape : int or (3,) ints
            Block size; features are computed per block with their halo, never for the whole
            volume at once.
        uncertainty : {"margin", "entropy"}
            ``1 - max p`` or the normalised Shannon entropy.
        out : (Z, Y, X) uint8 array, optional
            Where to write the phases (e.g. a Zarr array).
        progress : callable, optional
            ``progress("classify", done, total)``.

        Returns
        -------
        PhasePrediction
        """
        return self._run(image, spacing=spacing, foreground=foreground, block_shape=block_shape,
                         probabilities=True, uncertainty=uncertainty, out=out, progress=progress)

    def predict(
        self,
        image: Any,
        *,
        spacing: float | Sequence[float] | None = None,
        foreground: Any = None,
        block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
        return_probabilities: bool = False,
        out: Any = None,
        progress: Progress | None = None,
        runner: BlockRunner | None = None,
    ) -> Any:
        """Phase ids of every voxel (uint8; 0 = matrix or outside the foreground).

        See :meth:`predict_proba` for the parameters; with ``return_probabilities=True`` the
        :class:`PhasePrediction` is returned instead of the phase volume. `runner` (a
        :class:`corrtomo.BlockRunner`) spreads the blocks over threads or a ``dask.distributed``
        cluster (which needs `out` to be a Zarr array on a path every worker sees); the phases
        are identical to a serial run's.
        """
        if return_probabilities:
            return self.predict_proba(image, spacing=spacing, foreground=foreground, block_shape=block_shape,
                                      out=out, progress=progress)
        return self._run(image, spacing=spacing, foreground=foreground, block_shape=block_shape,
                         probabilities=False, uncertainty="margin", out=out, progress=progress,
                         runner=runner).phases

    def predict_foreground(
        self,
        image: Any,
        *,
        spacing: float | Sequence[float] | None = None,
        block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Particle foreground: voxels whose most probable class is a mineral, not the matrix.

        Returns
        -------
        (Z, Y, X) bool ndarray

        Raises
        ------
        InputError
            If the classifier has no matrix class (trained without matrix labels or inside a
            foreground).
        """
        if MATRIX_LABEL not in self.class_ids or self.uses_foreground:
            raise InputError("this classifier has no matrix class (label 255); it cannot find the foreground",
                             source="model")
        phases = self.predict(image, spacing=spacing, block_shape=block_shape, progress=progress)
        return phases != 0

    def _run(self, image, *, spacing, foreground, block_shape, probabilities, uncertainty, out, progress,
             runner=None):
        if uncertainty not in ("margin", "entropy"):
            raise InputError(f"uncertainty must be 'margin' or 'entropy', got {uncertainty!r}", source="uncertainty")
        data = check_image(image)
        spacing = self._check_spacing(image, spacing)
        shape = tuple(int(n) for n in data.shape)
        mask = check_foreground(foreground, shape, required=self.uses_foreground)
        if self.uses_foreground and mask is None:
            raise InputError("this classifier was trained inside a foreground; pass foreground=", source="foreground")
        blocks = _block_shape(block_shape, shape)
        halo = self.settings.halo_voxels(spacing)
        matrix = _class_layout(self.class_ids)[2]
        n_classes = len(self.class_ids)
        phases = np.zeros(shape, dtype=np.uint8) if out is None else out
        if tuple(phases.shape) != shape:
            raise InputError(f"output shape {tuple(phases.shape)} differs from {shape}", source="out")
        all_blocks = list(iter_blocks(shape, blocks))
        if not probabilities:  # phases only: blocks are independent, the runner may spread them
            runner = BlockRunner() if runner is None else runner
            if runner.kind == "distributed" and not hasattr(phases, "store"):
                raise InputError("a dask.distributed runner writes into a Zarr array: pass out=", source="out")
            done = 0
            for _ in runner.map(_write_block_phases, all_blocks, classifier=self, data=data, mask=mask,
                                halo=tuple(int(h) for h in halo), spacing=spacing, out=phases):
                done += 1
                if progress is not None:
                    progress("classify", done, len(all_blocks))
            return PhasePrediction(phases=phases, probabilities=None, uncertainty=None, class_ids=self.class_ids)
        # with probabilities and uncertainty: whole-volume arrays, filled block by block here
        proba_volume = np.zeros((n_classes, *shape), dtype=np.float32)
        if mask is not None and matrix.size:
            proba_volume[matrix[0]] = 1.0
        uncertainty_volume = np.zeros(shape, dtype=np.float32)
        for done, block in enumerate(all_blocks, start=1):
            found = _block_phases(self, data, mask, block, halo, spacing)
            block_shape_ = tuple(s.stop - s.start for s in block)
            if found is None:
                if out is not None:
                    phases[block] = 0
                if progress is not None:
                    progress("classify", done, len(all_blocks))
                continue
            result, proba, choice, inside = found
            phases[block] = result.reshape(block_shape_)
            full = np.zeros((n_classes, result.size), dtype=np.float32)
            if inside is None:
                full[:] = proba
            else:
                if matrix.size:
                    full[matrix[0]] = 1.0
                full[:, inside] = proba
            proba_volume[(slice(None), *block)] = full.reshape(n_classes, *block_shape_)
            unc = np.zeros(result.size, dtype=np.float32)
            unc_values = _uncertainty(choice, uncertainty)
            if inside is None:
                unc[:] = unc_values
            else:
                unc[inside] = unc_values
            uncertainty_volume[block] = unc.reshape(block_shape_)
            if progress is not None:
                progress("classify", done, len(all_blocks))
        return PhasePrediction(phases=phases, probabilities=proba_volume, uncertainty=uncertainty_volume,
                               class_ids=self.class_ids)


def _class_layout(class_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class index -> phase id lookup, mineral class indices, matrix class indices)."""
    ids = np.asarray(class_ids, dtype=np.int64)
    lut = np.where(ids == MATRIX_LABEL, 0, ids).astype(np.uint8)
    return lut, np.flatnonzero(ids != MATRIX_LABEL), np.flatnonzero(ids == MATRIX_LABEL)


def _block_phases(classifier, data, mask, block, halo, spacing):
    """One block's phases (flat uint8), probabilities, the argmax input and inside-mask, or None.

    Inside a foreground the phase is the most probable mineral; blocks without foreground give
    None (all matrix).
    """
    lut, minerals, matrix = _class_layout(classifier.class_ids)
    inside = None
    if mask is not None:
        region = mask[block]
        region = np.asarray(region.compute() if hasattr(region, "compute") else region) != 0
        if not region.any():
            return None
        inside = region.ravel()
    settings = classifier.settings
    padded = read_block(data, block, halo)
    mask_block = read_mask(mask, block, halo) if settings.needs_mask else None
    values = block_features(padded, halo, settings, spacing, mask=mask_block)
    flat = values.reshape(values.shape[0], -1)
    if inside is not None:
        flat = flat[:, inside]
    proba = classifier._classify(flat)
    del values, flat
    choice = proba
    if inside is not None and matrix.size and minerals.size:
        choice = proba[minerals]
        labels = lut[minerals][np.argmax(choice, axis=0)]
    else:
        labels = lut[np.argmax(choice, axis=0)]
    size = int(np.prod([s.stop - s.start for s in block]))
    result = np.zeros(size, dtype=np.uint8)
    if inside is None:
        result[:] = labels
    else:
        result[inside] = labels
    return result, proba, choice, inside


def _write_block_phases(block, *, classifier, data, mask, halo, spacing, out) -> int:
    """Classify one block and write its phases into `out` (a task of :class:`BlockRunner`)."""
    found = _block_phases(classifier, data, mask, block, halo, spacing)
    shape = tuple(s.stop - s.start for s in block)
    out[block] = np.zeros(shape, np.uint8) if found is None else found[0].reshape(shape)
    return int(np.prod(shape))


def _uncertainty(proba: np.ndarray, kind: str) -> np.ndarray:
    total = np.maximum(proba.sum(axis=0), np.float32(1e-12))
    p = proba / total
    if kind == "margin":
        return (1.0 - p.max(axis=0)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0)
    return (entropy / math.log(max(p.shape[0], 2))).astype(np.float32)


def check_voxel_size(model_um: Sequence[float], spacing: Sequence[float], *, tolerance: float = VOXEL_SIZE_TOLERANCE,
                     source: str = "spacing") -> None:
    """Raise InputError when `spacing` differs from the model's voxel size by more than `tolerance`."""
    model_um = np.asarray(model_um, dtype=np.float64)
    spacing = normalize_spacing(spacing)
    if np.any(np.abs(spacing - model_um) > tolerance * model_um):
        raise InputError(
            f"model was trained at voxel size {_fmt(model_um)} um, the volume has {_fmt(spacing)} um "
            f"(more than {tolerance:.0%} apart); retrain or resample",
            source=source,
        )


def _fmt(values: np.ndarray) -> str:
    values = np.asarray(values, dtype=float)
    if np.allclose(values, values[0]):
        return f"{values[0]:.4g}"
    return "x".join(f"{v:.4g}" for v in values)


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _labelled_voxels(labels: Any, mask: Any, block_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, 3) and values of the non-zero labels (inside `mask`), read block by block."""
    coords, values = [], []
    for block in iter_blocks(labels.shape, block_shape):
        region = labels[block]
        region = np.asarray(region.compute() if hasattr(region, "compute") else region)
        if mask is not None:
            keep = mask[block]
            keep = np.asarray(keep.compute() if hasattr(keep, "compute") else keep) != 0
            region = np.where(keep, region, 0)
        local = np.nonzero(region)
        if local[0].size:
            origin = np.array([s.start for s in block])
            coords.append(np.stack(local, axis=1) + origin)
            values.append(region[local])
    if not coords:
        return np.empty((0, 3), dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(coords).astype(np.int64), np.concatenate(values).astype(np.int64)


def _class_names(class_names: Any) -> dict[int, str]:
    if class_names is None:
        return {}
    if hasattr(class_names, "ids") and hasattr(class_names, "names"):  # a PhaseLibrary
        return {int(i): str(n) for i, n in zip(class_names.ids, class_names.names, strict=True)}
    if isinstance(class_names, Mapping):
        try:
            return {int(k): str(v) for k, v in class_names.items()}
        except (TypeError, ValueError):
            raise InputError("class names must map integer ids to names", source="class_names") from None
    raise InputError("class names must be a dict {id: name} or a PhaseLibrary", source="class_names")


def train_phase_classifier(
    image: Any,
    labels: Any,
    *,
    spacing: float | Sequence[float] | None,
    class_names: Mapping[int, str] | Any,
    scales_um: Sequence[float] | None = None,
    features: Sequence[str] | str | None = None,
    foreground: Any = None,
    model: str = "random_forest",
    n_estimators: int = 64,
    max_depth: int | None = None,
    min_samples_leaf: int = 1,
    max_samples_per_class: int = 20000,
    class_weight: str | None = "balanced",
    block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
    rng: np.random.Generator | int | None = None,
    progress: Progress | None = None,
) -> PhaseClassifier:
    """Train a voxel classifier of mineral phases from a sparse label volume.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        CT volume, axes (z, y, x) (numpy, Zarr, Dask or :class:`corrtomo.io.Volume`).
    labels : (Z, Y, X) integer array_like
        Sparse labels: 0 = not labelled, phase ids 1..254, 255 = matrix (epoxy, air).
    spacing : float or (3,) floats
        Voxel size in micrometres.
    class_names : dict of int to str, or PhaseLibrary
        Names of the phase ids (the library); every labelled id must be in it.
    scales_um, features : optional
        Feature scales (micrometres) and kinds, see :func:`voxel_features`. With a `foreground`
        the default kinds are ``gradient`` and ``core_gaussian`` (the mean grey value of the
        nearby particle-core voxels, free of partial volume with the matrix).
    foreground : (Z, Y, X) bool array_like, optional
        Particle voxels: only labels inside are used (the matrix class then drops out), and the
        model must be applied with a foreground too.
    model : {"random_forest", "extra_trees", "hist_gradient_boosting"}
        Classifier (default: random forest, Breiman 2001).
    n_estimators, max_depth, min_samples_leaf : int
        Forest size and tree limits (see :class:`ClassifierConfig`).
    max_samples_per_class : int
        At most this many labelled voxels per class, drawn at random (class balancing; the
        forest also weights classes ``"balanced"``).
    class_weight : str or None
        scikit-learn class weighting.
    block_shape : int or (3,) ints
        Blocks for the feature computation (only blocks holding drawn voxels are computed).
    rng : Generator, int or None
        Seeds the sampling and the forest.
    progress : callable, optional
        ``progress("train", done, total)``.

    Returns
    -------
    PhaseClassifier

    Raises
    ------
    InputError
        Labels of another shape than the image, no labels, only one class, ids missing from
        `class_names`, NaN or infinite voxels.

    Notes
    -----
    Each labelled voxel is described by the feature vector of :class:`FeatureSettings`; a
    random forest (Breiman 2001) of `n_estimators` trees with class-balanced weights, each
    grown on a bootstrap sample with :math:`\\sqrt{F}` candidate features per split, predicts
    class probabilities as the mean of its trees' leaf class fractions. This is ilastik's pixel
    classification (Berg et al. 2019) computed out of core.

    References
    ----------
    .. [1] L. Breiman, "Random forests", Machine Learning 45, 5-32 (2001).
    .. [2] S. Berg et al., "ilastik: interactive machine learning for (bio)image analysis",
       Nature Methods 16, 1226-1232 (2019).
    """
    from .. import __version__

    data = check_image(image)
    label_data = check_image(labels, name="labels")
    shape = tuple(int(n) for n in data.shape)
    if tuple(int(n) for n in label_data.shape) != shape:
        raise InputError(f"labels shape {tuple(label_data.shape)} differs from the volume shape {shape}",
                         source="labels")
    if np.dtype(label_data.dtype).kind not in "biu":
        raise InputError(f"labels must be integers, got dtype {label_data.dtype}", source="labels")
    if spacing is None and getattr(image, "spacing", None) is not None:
        spacing = image.spacing
    spacing = normalize_spacing(spacing)
    names = _class_names(class_names)
    mask = check_foreground(foreground, shape)
    if features is None and mask is not None:
        features = DEFAULT_FOREGROUND_FEATURES
    settings = FeatureSettings.default(spacing, scales_um=scales_um, features=features)
    if settings.needs_mask and mask is None:
        raise InputError("the foreground features need a foreground; pass foreground=", source="features")
    config = ClassifierConfig(model=model, n_estimators=n_estimators, max_depth=max_depth,
                              min_samples_leaf=min_samples_leaf, max_samples_per_class=max_samples_per_class,
                              class_weight=class_weight)
    generator = as_rng(rng)
    blocks = _block_shape(block_shape, shape)

    coords, values = _labelled_voxels(label_data, mask, blocks)
    if values.size == 0:
        raise InputError("label volume has no labelled voxels" + (" inside the foreground" if mask is not None else ""),
                         source="labels")
    present, counts = np.unique(values, return_counts=True)
    unknown = [int(c) for c in present if c != MATRIX_LABEL and c not in names]
    if unknown:
        raise InputError(f"label ids {unknown} are not in the phase library (known: {sorted(names)})", source="labels")
    if present.size < 2:
        only = int(present[0])
        raise InputError(f"labels hold one class only ({only} {names.get(only, MATRIX_NAME)!r}); need at least two",
                         source="labels")

    chosen = []
    for c in present:
        where = np.flatnonzero(values == c)
        if where.size > config.max_samples_per_class:
            where = np.sort(generator.choice(where, config.max_samples_per_class, replace=False))
        chosen.append(where)
    chosen = np.concatenate(chosen)
    coords, values = coords[chosen], values[chosen]

    # features of the drawn voxels, one block at a time
    block_index = coords // np.asarray(blocks)
    grid = -(-np.asarray(shape) // np.asarray(blocks))
    keys = np.ravel_multi_index(block_index.T, grid)
    order = np.argsort(keys, kind="stable")
    keys, coords, values = keys[order], coords[order], values[order]
    unique_keys, starts = np.unique(keys, return_index=True)
    stops = np.append(starts[1:], keys.size)
    halo = settings.halo_voxels(spacing)
    X = np.empty((coords.shape[0], settings.n_features), dtype=np.float32)
    for done, (key, start, stop) in enumerate(zip(unique_keys, starts, stops, strict=True), start=1):
        origin = np.array(np.unravel_index(key, grid)) * np.asarray(blocks)
        block = tuple(slice(int(o), int(min(o + b, n))) for o, b, n in zip(origin, blocks, shape, strict=True))
        padded = read_block(data, block, halo)
        mask_block = read_mask(mask, block, halo) if settings.needs_mask else None
        block_values = block_features(padded, halo, settings, spacing, mask=mask_block)
        local = coords[start:stop] - origin
        X[start:stop] = block_values[:, local[:, 0], local[:, 1], local[:, 2]].T
        if progress is not None:
            progress("train", done, unique_keys.size)

    estimator = config.build(int(generator.integers(2**31 - 1)))
    estimator.fit(X, values)
    class_ids = tuple(int(c) for c in estimator.classes_)
    all_names = {c: (MATRIX_NAME if c == MATRIX_LABEL else names[c]) for c in class_ids}
    used = np.bincount(np.searchsorted(present, values), minlength=present.size)
    training = {
        "labelled_voxels": {int(c): int(n) for c, n in zip(present, counts, strict=True)},
        "used_voxels": {int(c): int(n) for c, n in zip(present, used, strict=True)},
        "n_features": settings.n_features,
    }
    if hasattr(estimator, "feature_importances_"):
        training["feature_importances"] = {
            n: round(float(v), 6) for n, v in zip(settings.names(), estimator.feature_importances_, strict=True)
        }
    return PhaseClassifier(
        model=estimator, settings=settings, class_ids=class_ids, class_names=all_names,
        voxel_size_um=tuple(float(s) for s in spacing), config=config, uses_foreground=mask is not None,
        training=training, version=__version__,
    )


# --------------------------------------------------------------------------------------------
# persistence
# --------------------------------------------------------------------------------------------


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_classifier(classifier: PhaseClassifier, path: str | os.PathLike) -> Path:
    """Save a classifier: the estimator with skops (no pickle) plus a JSON sidecar.

    Parameters
    ----------
    classifier : PhaseClassifier
    path : str or os.PathLike
        Model file, conventionally ``*.skops``; the sidecar ``<path>.json`` holds the feature
        settings, voxel size, class ids and names, training summary, corrtomo version and the
        SHA-256 of the model file. Both are written atomically.

    Returns
    -------
    Path of the model file.
    """
    import skops.io

    path = Path(path)
    with atomic_path(path) as temporary:
        skops.io.dump(classifier.model, temporary)
        digest = file_sha256(temporary)
        write_json_atomic(_sidecar(path), {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "corrtomo_version": classifier.version,
            "model_file": path.name,
            "sha256": digest,
            "class_ids": list(classifier.class_ids),
            "class_names": {str(k): v for k, v in classifier.class_names.items()},
            "voxel_size_um": list(classifier.voxel_size_um),
            "feature_settings": classifier.settings.to_dict(),
            "feature_names": classifier.feature_names,
            "uses_foreground": classifier.uses_foreground,
            "config": classifier.config.to_dict(),
            "training": classifier.training,
        })
    return path


def _expected_names(expected: Any) -> dict[int, str] | None:
    if expected is None:
        return None
    if isinstance(expected, Mapping) or hasattr(expected, "ids"):
        return _class_names(expected)
    raise InputError("expected classes must be a dict {id: name} or a PhaseLibrary", source="expected_classes")


def load_classifier(
    path: str | os.PathLike,
    *,
    expected_classes: Mapping[int, str] | Any = None,
    voxel_size_um: float | Sequence[float] | None = None,
    tolerance: float = VOXEL_SIZE_TOLERANCE,
    require_all: bool = True,
) -> PhaseClassifier:
    """Load a classifier saved by :func:`save_classifier`, checking what it was trained for.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.skops`` model file (its ``.json`` sidecar must lie next to it).
    expected_classes : dict of int to str, or PhaseLibrary, optional
        The mineral classes the caller needs: every mineral class of the model must be among
        them with the same name, and (with `require_all`) every expected class must be one of the
        model's (the matrix class 255 is not compared).
    voxel_size_um : float or (3,) floats, optional
        Voxel size of the volume to classify; must match the model's within `tolerance`
        (relative, default 2 %: feature scales are in micrometres, but the CT point-spread and
        noise texture the model learnt are in voxels).
    tolerance : float
    require_all : bool
        Whether every expected class must be a class of the model (False: a library may hold
        phases the model never learnt, e.g. when applying with a full phase library).

    Returns
    -------
    PhaseClassifier

    Raises
    ------
    InputError
        Missing or damaged files, a model file that does not match its sidecar, types outside
        scikit-learn/numpy in the model file, other classes or another voxel size.
    """
    import skops.io

    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file():
        raise InputError("model file not found", source=path)
    if not sidecar.is_file():
        raise InputError(f"model sidecar {sidecar.name} not found next to the model", source=path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"model sidecar is not valid JSON ({error})", source=sidecar) from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise InputError("not a corrtomo phase-classifier sidecar", source=sidecar)
    if int(meta.get("format_version", 0)) > _FORMAT_VERSION:
        raise InputError(f"model format {meta.get('format_version')} is newer than this corrtomo reads", source=sidecar)
    if meta.get("sha256") != file_sha256(path):
        raise InputError("model file does not match its sidecar (changed or replaced after saving)", source=path)
    try:
        untrusted = skops.io.get_untrusted_types(file=path)
    except Exception as error:  # damaged zip
        raise InputError(f"not a skops model file ({error})", source=path) from None
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if foreign:
        raise InputError(f"model file holds types outside scikit-learn/numpy: {', '.join(foreign)}", source=path)
    estimator = skops.io.load(path, trusted=untrusted)

    class_ids = tuple(int(c) for c in meta["class_ids"])
    if tuple(int(c) for c in getattr(estimator, "classes_", ())) != class_ids:
        raise InputError("model classes differ from its sidecar", source=path)
    names = {int(k): str(v) for k, v in meta["class_names"].items()}
    spacing = tuple(float(v) for v in meta["voxel_size_um"])
    expected = _expected_names(expected_classes)
    if expected is not None:
        have = {c: names[c] for c in class_ids if c != MATRIX_LABEL}
        want = {c: n for c, n in expected.items() if c != MATRIX_LABEL}
        mismatched = any(want.get(c) != n for c, n in have.items())
        if mismatched or (require_all and set(want) != set(have)):
            describe = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items()))  # noqa: E731
            raise InputError(f"model classes ({describe(have)}) differ from the expected ({describe(want)})",
                             source=path)
    if voxel_size_um is not None:
        check_voxel_size(spacing, voxel_size_um, tolerance=tolerance, source=str(path))
    config_data = dict(meta.get("config", {}))
    return PhaseClassifier(
        model=estimator,
        settings=FeatureSettings.from_dict(meta["feature_settings"]),
        class_ids=class_ids,
        class_names=names,
        voxel_size_um=spacing,
        config=ClassifierConfig(**config_data),
        uses_foreground=bool(meta.get("uses_foreground", False)),
        training=dict(meta.get("training", {})),
        version=str(meta.get("corrtomo_version", "")),
    )
