"""Training the 3D U-Net from sparse labels (SEM sections registered into the CT).

The label volume is the one the random forest learns from: uint8, 0 = unlabelled, 255 = matrix
(epoxy), 1..254 = phase ids; the labels lie on a few (usually oblique) planes, so almost every
voxel is unlabelled. Only the labelled voxels enter the loss (:func:`masked_loss`); patches are
centred on labelled voxels, augmented, and the network is validated on labelled voxels held out
in spatially coherent cells, with early stopping.

Targets
-------
*Phase head*: matrix (label 255, output 0) and every mineral id present in the labels, sorted.
*Particle head* (:data:`PARTICLE_CLASSES`): labelled matrix -> ``matrix``; a labelled mineral
voxel -> ``boundary`` when a labelled matrix voxel lies within ``boundary_width_voxels``
(Euclidean, in units of the finest voxel edge, so anisotropic voxels are measured physically),
else ``core``. Section labels do not mark the borders between touching particles, so this head
learns the particle/matrix border; its foreground (core + boundary), or its core as markers,
feeds the distance-transform watershed of :func:`corrtomo.segment.separate_particles`.

Reproducibility
---------------
All randomness comes from ``settings.seed``: the network's initial weights (drawn inside
:func:`torch.random.fork_rng`, so the caller's global torch generator is left alone), and one
:class:`numpy.random.Generator` each for the normalisation sample, the training patches and
augmentation, and the validation patches. The U-Net has no dropout and every CPU operation used
is deterministic, so on the CPU the same seed gives bit-identical weights. On CUDA, cuDNN may
pick non-deterministic kernels, so weights agree only to rounding.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..._shared import MATRIX_LABEL, InputError, normalize_spacing
from ..._shared._blocks import read_block
from .._classifier import MATRIX_NAME, _class_names
from .._features import check_image, iter_blocks
from ._device import resolve_device
from ._model import PARTICLE_CLASSES, UNet3D, UNetArchitecture, UNetModel

__all__ = ["UNetTrainingSettings", "calibrate_matrix_threshold", "masked_loss", "matrix_threshold_from_votes",
           "particle_targets", "train_unet"]

Progress = Callable[[str, int, int], None]

#: Particle-head class indices (order of :data:`PARTICLE_CLASSES`).
PARTICLE_MATRIX, PARTICLE_CORE, PARTICLE_BOUNDARY = 0, 1, 2
#: Target value of voxels that do not enter the loss.
IGNORE = -1
#: Percentiles of the grey values mapped to -1 and +1 by the normalisation.
NORMALISATION_PERCENTILES = (0.5, 99.5)
#: Blocks in which the label volume is scanned for labelled voxels (never loaded whole).
_LABEL_BLOCK = (64, 512, 512)
#: z-planes read for the normalisation sample (at most).
_NORMALISATION_PLANES = 32
_AXES = "zyx"


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


def _integer(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise InputError(f"must be an integer, got {value!r}", source=name)
    if isinstance(value, (int, np.integer)):
        number = int(value)
    else:
        try:
            real = float(value)
        except (TypeError, ValueError):
            raise InputError(f"must be an integer, got {value!r}", source=name) from None
        if not math.isfinite(real) or real != int(real):
            raise InputError(f"must be an integer, got {value!r}", source=name)
        number = int(real)
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"must be {bounds}, got {number}", source=name)
    return number


def _real(name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False,
          open_high: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"must be a number, got {value!r}", source=name) from None
    too_low = number <= low if open_low else number < low
    too_high = number >= high if open_high else number > high
    if isinstance(value, bool) or not math.isfinite(number) or too_low or too_high:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise InputError(f"must be a finite number in {interval}, got {value!r}", source=name)
    return number


@dataclass(frozen=True)
class UNetTrainingSettings:
    """How :func:`train_unet` trains (stored with the model in ``training["settings"]``).

    Parameters
    ----------
    patch_shape : int or (3,) ints
        Training patch (z, y, x) in voxels; every edge a multiple of ``2 ** (levels - 1)`` and
        at most the volume's edge. Also the model's default inference window.
    batch_size : int
        Patches per optimisation step.
    max_steps : int
        Optimisation steps at most (AdamW).
    learning_rate, weight_decay : float
        AdamW (Loshchilov & Hutter 2019) step size and decoupled weight decay; constant.
    validation_fraction : float
        Share of the labelled voxels held out for validation, in [0, 0.9]. The volume is cut
        into cubic cells of ``validation_cell_voxels`` and a cell goes to validation when a
        seeded hash of its index falls below the fraction, so neighbouring voxels of one plane
        share their split (a voxel next to a training voxel says little about generalisation).
        A class whose every voxel falls into validation cells is kept whole for training. 0
        disables validation and early stopping (the last step's weights are returned).
    validation_cell_voxels : int
        Edge of the hash cells in voxels.
    validation_patches : int
        Fixed, seeded set of patches centred on held-out voxels (class-balanced centres) on
        which the validation loss and accuracy are computed; only held-out voxels count (a
        voxel inside several of these patches counts once per patch).
    validate_every : int
        Steps between validations (the last step is always validated).
    patience : int
        Early stopping: validations without an improvement of the validation loss by more
        than `min_delta` before training stops; the best validation's weights are returned.
    min_delta : float
        Smallest decrease of the validation loss that counts as an improvement.
    augment : bool
        Whether to augment training patches (the switches below); validation never is.
    flip_axes : tuple of int
        Axes (0 = z, 1 = y, 2 = x) each mirrored with probability 1/2.
    rotate_90 : bool
        Random multiples of 90 degrees about z; only applied when the y and x voxel edges and
        patch edges are equal (otherwise a rotation would change the voxel geometry).
    intensity_scale : float
        Grey values (normalised) multiplied by a factor uniform in ``1 +- intensity_scale``.
    intensity_shift : float
        Plus an offset uniform in ``+- intensity_shift`` (normalised units, i.e. fractions of
        half the 0.5-99.5 percentile range).
    noise_sigma : float
        Plus Gaussian noise of this standard deviation (normalised units).

        The three grey-value jitters are off by default: the network is trained and applied
        on the same scan, where the absolute grey value is what tells minerals of similar
        texture apart, and a jitter of the size of their contrast teaches the network to ignore
        it. On the li-slag twin (lialo2, spinel and glass differ by about 0.15 normalised
        units) a +-10 % scale, +-0.1 shift and 0.05 noise cost 0.040 mean IoU (0.432 against
        0.472, 500 steps). Turn them on for a model that will be applied to other scans.
    scale_range : float
        Isotropic zoom uniform in ``1 +- scale_range``: a region of ``round(patch * s)`` voxels
        is resampled to the patch, trilinearly for the image and by nearest neighbour for the
        labels (same ``align_corners`` grid, so they stay registered).
    base_channels, levels : int
        Width of the first level and number of resolutions of the :class:`UNet3D`.
    class_weighting : {"balanced", "none"}
        ``"balanced"``: cross-entropy weight of class c ``n / (C n_c)`` over the training
        voxels of each head, clipped to ``[1 / max_class_weight, max_class_weight]``. Patch
        centres are drawn class-balanced in either case.
    max_class_weight : float
        Clip of the balanced weights (>= 1).
    dice_weight : float
        Weight of the soft Dice term of :func:`masked_loss`.
    particle_weight : float
        Weight of the particle head's loss relative to the phase head's.
    boundary_width_voxels : float
        A labelled mineral voxel is a particle-``boundary`` target when a labelled matrix voxel
        lies within this distance (in units of the finest voxel edge).
    normalisation_samples : int
        Voxels drawn (seeded) from up to 32 z-planes for the grey-value percentiles.
    seed : int
        Seeds everything random (see the module notes).
    device : {"auto", "cpu", "cuda", "cuda:N"}
        ``"auto"``: CUDA when :func:`torch.cuda.is_available`, else the CPU. Asking for CUDA
        on a machine without it is an error, not a silent fallback.
    mixed_precision : bool
        On CUDA, run the network under :func:`torch.autocast` (bfloat16 where supported, else
        float16 with gradient scaling); the loss is always computed in float32. Ignored on the
        CPU (float32 throughout).
    """

    patch_shape: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    max_steps: int = 2000
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.15
    validation_cell_voxels: int = 8
    validation_patches: int = 16
    validate_every: int = 50
    patience: int = 8
    min_delta: float = 0.0
    augment: bool = True
    flip_axes: tuple[int, ...] = (0, 1, 2)
    rotate_90: bool = True
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0
    noise_sigma: float = 0.0
    scale_range: float = 0.1
    base_channels: int = 16
    levels: int = 4
    class_weighting: str = "balanced"
    max_class_weight: float = 10.0
    dice_weight: float = 0.5
    particle_weight: float = 1.0
    boundary_width_voxels: float = 2.0
    normalisation_samples: int = 1_000_000
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        edges = np.atleast_1d(np.asarray(self.patch_shape, dtype=object)).ravel().tolist()
        if len(edges) == 1:
            edges = edges * 3
        if len(edges) != 3:
            raise InputError(f"expected 1 or 3 edges, got {len(edges)}", source="patch_shape")
        put("patch_shape", tuple(_integer("patch_shape", e, 2) for e in edges))
        for name in ("batch_size", "max_steps", "validation_cell_voxels", "validation_patches",
                     "validate_every", "patience", "base_channels", "levels"):
            put(name, _integer(name, getattr(self, name), 1))
        put("normalisation_samples", _integer("normalisation_samples", self.normalisation_samples, 100))
        put("seed", _integer("seed", self.seed, 0, 2**63 - 1))
        put("learning_rate", _real("learning_rate", self.learning_rate, 0.0, open_low=True))
        put("weight_decay", _real("weight_decay", self.weight_decay, 0.0))
        put("validation_fraction", _real("validation_fraction", self.validation_fraction, 0.0, 0.9))
        put("min_delta", _real("min_delta", self.min_delta, 0.0))
        put("intensity_scale", _real("intensity_scale", self.intensity_scale, 0.0, 1.0, open_high=True))
        put("intensity_shift", _real("intensity_shift", self.intensity_shift, 0.0))
        put("noise_sigma", _real("noise_sigma", self.noise_sigma, 0.0))
        put("scale_range", _real("scale_range", self.scale_range, 0.0, 0.5))
        put("max_class_weight", _real("max_class_weight", self.max_class_weight, 1.0))
        put("dice_weight", _real("dice_weight", self.dice_weight, 0.0))
        put("particle_weight", _real("particle_weight", self.particle_weight, 0.0))
        put("boundary_width_voxels", _real("boundary_width_voxels", self.boundary_width_voxels, 0.0,
                                           open_low=True))
        put("augment", bool(self.augment))
        put("rotate_90", bool(self.rotate_90))
        put("mixed_precision", bool(self.mixed_precision))
        axes = tuple(_integer("flip_axes", a, 0) for a in np.atleast_1d(np.asarray(self.flip_axes, dtype=object)))
        if any(a > 2 for a in axes) or len(set(axes)) != len(axes):
            raise InputError(f"must be distinct axes among 0, 1, 2 (z, y, x), got {list(axes)}", source="flip_axes")
        put("flip_axes", tuple(sorted(axes)))
        if self.class_weighting not in ("balanced", "none"):
            raise InputError(f"must be 'balanced' or 'none', got {self.class_weighting!r}", source="class_weighting")
        device = str(self.device)
        if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
            raise InputError(f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}", source="device")
        put("device", device)
        divisor = 2 ** (self.levels - 1)
        if any(e % divisor for e in self.patch_shape):
            raise InputError(
                f"edges {self.patch_shape} must be multiples of 2**(levels-1) = {divisor} (levels={self.levels})",
                source="patch_shape",
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (tuples as lists)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UNetTrainingSettings:
        """Settings from :meth:`to_dict`'s output; unknown keys are an InputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown training settings {unknown}", source="settings")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# --------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------


def _head_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
               dice_weight: float) -> tuple[torch.Tensor, int]:
    """Masked CE + dice_weight * soft Dice of one head, and the number of labelled voxels."""
    n_classes = logits.shape[1]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    flat_target = target.reshape(-1)
    labelled = flat_target >= 0
    # Select the labelled voxels first: every later operation sees only them, so the loss cannot
    # depend on the other voxels (not even through 0 * NaN) and their gradient is exactly 0.
    z = logits.movedim(1, -1).reshape(-1, n_classes)[labelled].float()
    t = flat_target[labelled].long()
    if t.numel() == 0:
        return z.sum() * 0.0, 0
    log_p = torch.log_softmax(z, dim=1)
    nll = -log_p.gather(1, t[:, None])[:, 0]
    if weights is None:
        loss = nll.mean()
    else:
        w = weights.to(device=z.device, dtype=z.dtype)[t]
        loss = (w * nll).sum() / w.sum()
    if dice_weight > 0:
        p = log_p.exp()
        onehot = F.one_hot(t, n_classes).to(p.dtype)
        intersection = (p * onehot).sum(dim=0)
        truth = onehot.sum(dim=0)
        dice = (2.0 * intersection + 1e-5) / (p.sum(dim=0) + truth + 1e-5)
        loss = loss + dice_weight * (1.0 - dice[truth > 0].mean())
    return loss, int(t.numel())


def masked_loss(
    phase_logits: torch.Tensor,
    phase_target: torch.Tensor,
    particle_logits: torch.Tensor,
    particle_target: torch.Tensor,
    *,
    phase_weights: torch.Tensor | Sequence[float] | None = None,
    particle_weights: torch.Tensor | Sequence[float] | None = None,
    dice_weight: float = 0.5,
    particle_weight: float = 1.0,
) -> torch.Tensor:
    """Loss of both heads over the labelled voxels only.

    Parameters
    ----------
    phase_logits, particle_logits : (N, C, Z, Y, X) tensors
        Outputs of :class:`UNet3D`.
    phase_target, particle_target : (N, Z, Y, X) integer tensors
        Class index of each voxel; any negative value (``-1``) marks an unlabelled voxel.
    phase_weights, particle_weights : (C,) floats, optional
        Cross-entropy class weights (default: all 1).
    dice_weight : float
        Weight of the soft Dice term.
    particle_weight : float
        Weight of the particle head.

    Returns
    -------
    0-d float32 tensor

    Notes
    -----
    For one head, let :math:`L` be the labelled voxels of the whole batch, :math:`t_v` the
    target of voxel :math:`v`, :math:`p_{vc}` the softmax of its logits and :math:`w_c` the
    class weights. Then

    .. math::

        \\mathrm{CE} = \\frac{\\sum_{v \\in L} w_{t_v} (-\\log p_{v t_v})}{\\sum_{v \\in L} w_{t_v}},
        \\qquad
        \\mathrm{Dice} = 1 - \\frac{1}{|K|} \\sum_{c \\in K}
        \\frac{2 \\sum_{v \\in L} p_{vc} [t_v = c] + \\epsilon}
             {\\sum_{v \\in L} p_{vc} + \\sum_{v \\in L} [t_v = c] + \\epsilon},

    with :math:`K` the classes present among the targets and :math:`\\epsilon = 10^{-5}`;
    the head loss is :math:`\\mathrm{CE} + \\lambda_D \\mathrm{Dice}` (``dice_weight``
    :math:`\\lambda_D`) and the total ``phase + particle_weight * particle``. A head without
    labelled voxels contributes 0. The labelled voxels are selected before any arithmetic, so
    the loss is a function of the labelled voxels' logits alone: its gradient is exactly zero
    at every unlabelled voxel, and any values there (even NaN) leave it bit-identical.
    """
    if phase_weights is not None and not isinstance(phase_weights, torch.Tensor):
        phase_weights = torch.as_tensor(np.asarray(phase_weights, dtype=np.float32))
    if particle_weights is not None and not isinstance(particle_weights, torch.Tensor):
        particle_weights = torch.as_tensor(np.asarray(particle_weights, dtype=np.float32))
    phase, _ = _head_loss(phase_logits, phase_target, phase_weights, float(dice_weight))
    particle, _ = _head_loss(particle_logits, particle_target, particle_weights, float(dice_weight))
    return phase + float(particle_weight) * particle


# --------------------------------------------------------------------------------------------
# sparse targets
# --------------------------------------------------------------------------------------------


def _labelled_voxels(labels: Any, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, 3) int32 sorted in C order, and uint8 values of the non-zero labels,
    read block by block (a Zarr or Dask label volume is never loaded whole)."""
    coords, values = [], []
    block = tuple(min(b, n) for b, n in zip(_LABEL_BLOCK, shape, strict=True))
    for slices in iter_blocks(shape, block):
        region = read_block(labels, slices)
        local = np.nonzero(region)
        if local[0].size == 0:
            continue
        found = region[local]
        low, high = int(found.min()), int(found.max())
        if low < 0 or high > 255:
            bad = low if low < 0 else high
            raise InputError(f"label values must lie in 0..255 (0 unlabelled, 255 matrix), found {bad}",
                             source="labels")
        origin = np.array([s.start for s in slices], dtype=np.int64)
        coords.append(np.stack(local, axis=1).astype(np.int64) + origin)
        values.append(found.astype(np.uint8))
    if not coords:
        return np.empty((0, 3), dtype=np.int32), np.empty(0, dtype=np.uint8)
    coords = np.concatenate(coords)
    values = np.concatenate(values)
    order = np.argsort(np.ravel_multi_index(coords.T, shape), kind="stable")
    return coords[order].astype(np.int32), values[order]


def _particle_classes(coords: np.ndarray, is_matrix: np.ndarray, spacing: np.ndarray,
                      width: float) -> np.ndarray:
    """Particle-head class of each labelled voxel (see :func:`particle_targets`).

    A k-d tree over the labelled matrix voxels gives the exact Euclidean distance that
    ``distance_transform_edt(~matrix, sampling)`` would, without a dense pass over the volume.
    """
    from scipy.spatial import cKDTree

    classes = np.where(is_matrix, PARTICLE_MATRIX, PARTICLE_CORE).astype(np.int8)
    minerals = np.flatnonzero(~is_matrix)
    if minerals.size == 0 or not is_matrix.any():
        return classes
    scale = np.asarray(spacing, dtype=np.float64) / float(np.min(spacing))
    tree = cKDTree(coords[is_matrix].astype(np.float64) * scale)
    # the bound is exclusive: widen it by a rounding margin so that d == width counts
    bound = width * (1 + 1e-9) + 1e-9
    distance, _ = tree.query(coords[minerals].astype(np.float64) * scale, k=1, distance_upper_bound=bound)
    classes[minerals[distance <= bound]] = PARTICLE_BOUNDARY
    return classes


def particle_targets(
    labels: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    boundary_width_voxels: float = 2.0,
) -> np.ndarray:
    """Particle-head targets of a sparse label volume (what :func:`train_unet` trains towards).

    Parameters
    ----------
    labels : (Z, Y, X) integer array_like
        Sparse labels: 0 unlabelled, 1..254 phase ids, 255 matrix.
    spacing : float or (3,) floats, optional
        Voxel size in micrometres (only its ratios matter; default isotropic).
    boundary_width_voxels : float
        Width of the boundary class, in units of the finest voxel edge.

    Returns
    -------
    (Z, Y, X) int8 ndarray
        -1 unlabelled, 0 matrix (label 255), 1 core, 2 boundary: a labelled mineral voxel is
        ``boundary`` when its Euclidean distance (physical, divided by the finest voxel edge) to
        the nearest *labelled* matrix voxel is at most `boundary_width_voxels`, else ``core``.

    Notes
    -----
    Only the labels decide: unlabelled voxels count neither as matrix nor as particle, so a
    mineral voxel whose nearby matrix is unlabelled is ``core``. Section labels do not mark the
    borders between touching particles; the head learns the particle/matrix border and its
    foreground feeds the distance-transform watershed.
    """
    data = check_image(labels, name="labels")
    if np.dtype(data.dtype).kind not in "iu":
        raise InputError(f"labels must be integers, got dtype {data.dtype}", source="labels")
    shape = tuple(int(n) for n in data.shape)
    spacing = normalize_spacing(spacing)
    width = _real("boundary_width_voxels", boundary_width_voxels, 0.0, open_low=True)
    coords, values = _labelled_voxels(data, shape)
    out = np.full(shape, IGNORE, dtype=np.int8)
    classes = _particle_classes(coords, values == MATRIX_LABEL, spacing, width)
    out[tuple(coords.T)] = classes
    return out


def _validation_split(coords: np.ndarray, cell: int, fraction: float, seed: int) -> np.ndarray:
    """True for voxels whose ``cell``-voxel cube hashes below `fraction` (seeded)."""
    if fraction <= 0 or coords.shape[0] == 0:
        return np.zeros(coords.shape[0], dtype=bool)
    cells = (coords.astype(np.int64) // int(cell)).astype(np.uint64)
    # splitmix64 of a mix of the cell index and the seed (uint64 arrays wrap silently)
    key = (cells[:, 0] * np.uint64(0x9E3779B97F4A7C15) + cells[:, 1] * np.uint64(0xC2B2AE3D27D4EB4F)
           + cells[:, 2] * np.uint64(0x165667B19E3779F9) + np.uint64((int(seed) * 0x27D4EB2F165667C5) % 2**64))
    key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    key = key ^ (key >> np.uint64(31))
    return (key >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


def _class_weights(counts: np.ndarray, mode: str, clip: float) -> np.ndarray:
    """Inverse-frequency weights ``n / (C n_c)`` over the present classes, clipped (float32)."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(counts.size, dtype=np.float64)
    present = counts > 0
    if mode == "balanced" and present.any():
        weights[present] = counts[present].sum() / (present.sum() * counts[present])
        weights = np.clip(weights, 1.0 / clip, clip)
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# normalisation and patches
# --------------------------------------------------------------------------------------------


def _normalisation(data: Any, shape: tuple[int, int, int], n_samples: int,
                   rng: np.random.Generator) -> tuple[float, float, int]:
    """Centre and half-range of the 0.5-99.5 percentiles of a seeded voxel sample.

    The sample comes from up to 32 whole z-planes (read one at a time, so a Zarr volume is
    never loaded whole); percentiles rather than mean/std or median/MAD, because the matrix
    usually holds most voxels and would make the MAD the matrix noise alone.
    """
    n_planes = min(shape[0], _NORMALISATION_PLANES)
    planes = np.sort(rng.choice(shape[0], size=n_planes, replace=False))
    per_plane = max(1, -(-n_samples // n_planes))
    samples = []
    for z in planes:
        plane = read_block(data, (slice(int(z), int(z) + 1), slice(None), slice(None))).ravel()
        if plane.dtype.kind not in "biuf":
            raise InputError(f"image must be numeric, got dtype {plane.dtype}", source="image")
        if plane.size > per_plane:
            plane = plane[rng.integers(0, plane.size, size=per_plane)]
        plane = plane.astype(np.float64)
        if not np.isfinite(plane).all():
            raise InputError(f"image has NaN or infinite voxels (in plane z={int(z)})", source="image")
        samples.append(plane)
    values = np.concatenate(samples)
    low, high = np.percentile(values, NORMALISATION_PERCENTILES)
    center, scale = (low + high) / 2.0, (high - low) / 2.0
    if not scale > 0:  # a constant image: any scale will do
        scale = 1.0
    return float(center), float(scale), int(values.size)


@dataclass
class _SparseTargets:
    """The labelled voxels, sorted in C order, with both heads' class indices and their split."""

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    phase: np.ndarray  # int16 class index of the phase head
    particle: np.ndarray  # int8 class index of the particle head
    validation: np.ndarray  # bool: held out

    def region(self, start: Sequence[int], size: Sequence[int], validation: bool) -> tuple[np.ndarray, np.ndarray]:
        """Dense (phase, particle) int64 targets of a region, -1 where unlabelled or in the other split."""
        z0, y0, x0 = (int(s) for s in start)
        z1, y1, x1 = (int(s) + int(n) for s, n in zip(start, size, strict=True))
        lo, hi = np.searchsorted(self.z, [z0, z1])
        y, x = self.y[lo:hi], self.x[lo:hi]
        inside = (y >= y0) & (y < y1) & (x >= x0) & (x < x1) & (self.validation[lo:hi] == validation)
        index = lo + np.flatnonzero(inside)
        local = (self.z[index] - z0, self.y[index] - y0, self.x[index] - x0)
        phase = np.full(tuple(int(n) for n in size), IGNORE, dtype=np.int64)
        particle = np.full_like(phase, IGNORE)
        phase[local] = self.phase[index]
        particle[local] = self.particle[index]
        return phase, particle


class _PatchSampler:
    """Reads normalised, optionally augmented patches centred on labelled voxels."""

    def __init__(self, data: Any, targets: _SparseTargets, shape: tuple[int, int, int], settings: UNetTrainingSettings,
                 spacing: np.ndarray, center: float, scale: float):
        self.data, self.targets, self.shape, self.settings = data, targets, shape, settings
        self.patch = np.asarray(settings.patch_shape, dtype=np.int64)
        self.center, self.scale = center, scale
        self.rotate = (settings.rotate_90 and math.isclose(spacing[1], spacing[2], rel_tol=1e-6)
                       and settings.patch_shape[1] == settings.patch_shape[2])
        # class-balanced centres: per split, the voxel indices of each phase class
        self.by_class: dict[bool, list[np.ndarray]] = {}
        for split in (False, True):
            chosen = np.flatnonzero(targets.validation == split)
            order = np.argsort(targets.phase[chosen], kind="stable")
            chosen = chosen[order]
            classes, starts = np.unique(targets.phase[chosen], return_index=True)
            self.by_class[split] = np.split(chosen, starts[1:]) if classes.size else []

    def centre(self, rng: np.random.Generator, validation: bool) -> np.ndarray:
        """A labelled voxel of the split: a class uniformly, then one of its voxels."""
        groups = self.by_class[validation]
        group = groups[int(rng.integers(len(groups)))]
        index = int(group[int(rng.integers(group.size))])
        t = self.targets
        return np.array([t.z[index], t.y[index], t.x[index]], dtype=np.int64)

    def read(self, centre: np.ndarray, rng: np.random.Generator | None,
             validation: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image float32, phase int64, particle int64) patches; augmented when `rng` is given."""
        s = self.settings
        augment = rng is not None and s.augment
        zoom = 1.0 + float(rng.uniform(-s.scale_range, s.scale_range)) if augment and s.scale_range > 0 else 1.0
        shape = np.asarray(self.shape, dtype=np.int64)
        size = np.clip(np.rint(self.patch * zoom).astype(np.int64), 2, shape)
        # the region holds the centre and lies inside the volume
        start = np.clip(centre - size // 2, 0, shape - size)
        slices = tuple(slice(int(a), int(a + n)) for a, n in zip(start, size, strict=True))
        image = read_block(self.data, slices)
        if image.dtype.kind not in "biuf":
            raise InputError(f"image must be numeric, got dtype {image.dtype}", source="image")
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            bad = np.argwhere(~np.isfinite(image))[0] + start
            raise InputError(f"image has NaN or infinite voxels (first at z={bad[0]}, y={bad[1]}, x={bad[2]})",
                             source="image")
        image = (image - np.float32(self.center)) / np.float32(self.scale)
        phase, particle = self.targets.region(start, size, validation)
        if np.any(size != self.patch):
            image, phase, particle = self._resample(image, phase, particle, centre - start)
        if augment:
            for axis in s.flip_axes:
                if rng.random() < 0.5:
                    image, phase, particle = (np.flip(a, axis) for a in (image, phase, particle))
            if self.rotate:
                k = int(rng.integers(4))
                image, phase, particle = (np.rot90(a, k, axes=(1, 2)) for a in (image, phase, particle))
            factor = np.float32(1.0 + rng.uniform(-s.intensity_scale, s.intensity_scale))
            offset = np.float32(rng.uniform(-s.intensity_shift, s.intensity_shift))
            image = image * factor + offset
            if s.noise_sigma > 0:
                image = image + np.float32(s.noise_sigma) * rng.standard_normal(image.shape, dtype=np.float32)
        return (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(phase),
                np.ascontiguousarray(particle))

    def _resample(self, image: np.ndarray, phase: np.ndarray, particle: np.ndarray,
                  centre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Zoom a region onto the patch grid: trilinear image, nearest labels, same sample points.

        Along each axis the patch samples the region at ``a + i * (r - 1) / (p - 1)``, with the
        offset ``a`` chosen so that one sample falls exactly on the centre voxel: the labelled
        voxel a patch is drawn for always survives the nearest-neighbour resampling of the
        one-voxel-thick label planes.
        """
        points, nearest = [], []
        for p, r, c in zip(self.patch, image.shape, centre, strict=True):
            step = (r - 1) / (p - 1)
            node = min(max(int(np.rint(c / step)), 0), int(p) - 1)
            u = np.clip(c + (np.arange(p) - node) * step, 0.0, r - 1.0)
            points.append(u)
            nearest.append(np.rint(u).astype(np.int64))
        for axis, u in enumerate(points):
            image = _linear_along(image, u, axis)
        grid = np.ix_(*nearest)
        return image, phase[grid], particle[grid]


def _linear_along(values: np.ndarray, u: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of `values` at the (in-range) positions `u` along `axis`."""
    n = values.shape[axis]
    low = np.clip(np.floor(u).astype(np.int64), 0, max(n - 2, 0))
    high = np.minimum(low + 1, n - 1)
    weight = (u - low).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    return np.take(values, low, axis=axis) * (1 - weight) + np.take(values, high, axis=axis) * weight


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------


def _check_inputs(image: Any, labels: Any, patch: tuple[int, int, int]) -> tuple[Any, Any, tuple[int, int, int]]:
    data = check_image(image)
    label_data = check_image(labels, name="labels")
    shape = tuple(int(n) for n in data.shape)
    if tuple(int(n) for n in label_data.shape) != shape:
        raise InputError(f"labels shape {tuple(int(n) for n in label_data.shape)} differs from the volume shape "
                         f"{shape}", source="labels")
    if np.dtype(data.dtype).kind not in "biuf":
        raise InputError(f"image must be numeric, got dtype {data.dtype}", source="image")
    if np.dtype(label_data.dtype).kind not in "iu":
        raise InputError(f"labels must be integers (uint8: 0 unlabelled, 255 matrix), got dtype {label_data.dtype}",
                         source="labels")
    for axis, (n, p) in enumerate(zip(shape, patch, strict=True)):
        if n < p:
            raise InputError(f"volume {shape} is smaller than patch_shape {patch} along {_AXES[axis]}; "
                             f"use a smaller patch_shape", source="patch_shape")
    return data, label_data, shape


def _phase_classes(values: np.ndarray, names: dict[int, str],
                   require_all: bool) -> tuple[tuple[int, ...], tuple[str, ...], dict[int, str]]:
    """class_ids (0 = matrix first, then the labelled mineral ids), names and absent library phases."""
    counts = np.bincount(values, minlength=256)
    present = np.flatnonzero(counts)
    minerals = [int(c) for c in present if c != MATRIX_LABEL]
    if present.size == 0:
        raise InputError("label volume has no labelled voxels", source="labels")
    if names:
        unknown = [c for c in minerals if c not in names]
        if unknown:
            raise InputError(f"label ids {unknown} are not in the phase library (known: {sorted(names)})",
                             source="labels")
    describe = lambda c: MATRIX_NAME if c == MATRIX_LABEL else names.get(c, f"phase_{c}")  # noqa: E731
    if present.size < 2:
        only = int(present[0])
        raise InputError(f"labels hold one class only ({only} {describe(only)!r}); need the matrix (255) and at "
                         f"least one mineral", source="labels")
    if counts[MATRIX_LABEL] == 0:
        raise InputError("labels hold no matrix voxels (255); the U-Net's phase and particle heads need labelled "
                         "matrix (epoxy)", source="labels")
    absent = {c: n for c, n in sorted(names.items()) if c != MATRIX_LABEL and counts[c] == 0} if names else {}
    if require_all and absent:
        listed = ", ".join(f"{n!r} (id {c})" for c, n in absent.items())
        raise InputError(f"no labelled voxels of phase{'s' if len(absent) > 1 else ''} {listed}", source="labels")
    class_ids = (0, *minerals)
    class_names = (MATRIX_NAME, *(describe(c) for c in minerals))
    return class_ids, class_names, absent


def _stack(items: list[tuple[np.ndarray, np.ndarray, np.ndarray]], device: torch.device):
    image = torch.from_numpy(np.stack([i[0] for i in items])[:, None]).to(device)
    phase = torch.from_numpy(np.stack([i[1] for i in items])).to(device)
    particle = torch.from_numpy(np.stack([i[2] for i in items])).to(device)
    return image, phase, particle


def _sparse_targets(coords: np.ndarray, values: np.ndarray, class_ids: Sequence[int], spacing: np.ndarray,
                    settings: UNetTrainingSettings) -> tuple[_SparseTargets, list[int]]:
    """Both heads' targets of the labelled voxels and their train/validation split.

    Labels whose id is not in `class_ids` are ignored. A class held out whole is kept in
    training (returned as the second value): the network could not learn it.
    """
    lut = np.full(256, IGNORE, dtype=np.int16)
    lut[MATRIX_LABEL] = 0
    lut[list(class_ids[1:])] = np.arange(1, len(class_ids), dtype=np.int16)
    phase = lut[values]
    particle = _particle_classes(coords, values == MATRIX_LABEL, spacing, settings.boundary_width_voxels)
    validation = _validation_split(coords, settings.validation_cell_voxels, settings.validation_fraction,
                                   settings.seed)
    validation &= phase != IGNORE
    kept_whole = [int(class_ids[c]) for c in range(len(class_ids)) if not np.any((phase == c) & ~validation)]
    if kept_whole:
        validation &= ~np.isin(phase, [list(class_ids).index(c) for c in kept_whole])
    targets = _SparseTargets(z=coords[:, 0], y=coords[:, 1], x=coords[:, 2], phase=phase, particle=particle,
                             validation=validation)
    return targets, kept_whole


def _validation_patches(sampler: _PatchSampler, settings: UNetTrainingSettings) -> list:
    """The fixed, seeded validation patches (the third generator of ``settings.seed``)."""
    if not sampler.by_class[True]:
        return []
    val_seq = np.random.SeedSequence(settings.seed).spawn(3)[2]
    val_rng = np.random.default_rng(val_seq)
    return [sampler.read(sampler.centre(val_rng, True), None, True) for _ in range(settings.validation_patches)]


_THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)


def matrix_threshold_from_votes(matrix_probability: np.ndarray, is_matrix: np.ndarray) -> dict[str, Any]:
    """The matrix-probability threshold that best separates labelled matrix from particle voxels.

    The rule it calibrates: a voxel is particle where the particle head's smoothed matrix
    probability :math:`\\tilde p` is below the threshold :math:`t`. :math:`t` maximises the
    balanced accuracy on held-out labelled voxels,

    .. math:: BA(t) = \\tfrac12\\left(P(\\tilde p \\ge t \\mid \\mathrm{matrix})
              + P(\\tilde p < t \\mid \\mathrm{particle})\\right),

    over ``t = 0.01, 0.02, ..., 0.99``; where several ``t`` reach the maximum, the middle one
    (the lower of two middles; the middle of a plateau). Class-weighted training (weights ``n / (C n_c)``) and the Dice term
    move the head's probabilities away from calibrated ones by amounts that differ between
    samples, so 0.5 is not a safe threshold; held-out labels measure where the border is.

    Parameters
    ----------
    matrix_probability : (n,) float array
        Smoothed matrix probability at held-out labelled voxels.
    is_matrix : (n,) bool array
        Whether each voxel is labelled matrix (else a particle voxel).

    Returns
    -------
    dict
        ``value`` (the threshold; 0.5 when one class has no voxel), ``balanced_accuracy`` at it
        and ``at_half`` (at 0.5), and ``voxels`` (``matrix``, ``particle`` counts).
    """
    p = np.asarray(matrix_probability, dtype=np.float64).ravel()
    is_matrix = np.asarray(is_matrix, dtype=bool).ravel()
    if p.shape != is_matrix.shape:
        raise InputError(f"{p.size} probabilities for {is_matrix.size} labels", source="matrix_probability")
    n_matrix, n_particle = int(is_matrix.sum()), int((~is_matrix).sum())
    counts = {"matrix": n_matrix, "particle": n_particle}
    if n_matrix == 0 or n_particle == 0:
        return {"value": 0.5, "balanced_accuracy": None, "at_half": None, "voxels": counts}
    # per-class counts below each threshold from one sort (no loop over voxels)
    below_matrix = np.searchsorted(np.sort(p[is_matrix]), _THRESHOLDS, side="left")
    below_particle = np.searchsorted(np.sort(p[~is_matrix]), _THRESHOLDS, side="left")
    balanced = 0.5 * ((n_matrix - below_matrix) / n_matrix + below_particle / n_particle)
    best = _THRESHOLDS[balanced >= balanced.max() - 1e-12]
    value = float(best[(best.size - 1) // 2])
    half = int(np.flatnonzero(_THRESHOLDS == 0.5)[0])
    return {"value": value, "balanced_accuracy": float(balanced.max()), "at_half": float(balanced[half]),
            "voxels": counts}


def _patch_matrix_votes(network: torch.nn.Module, patches: list, spacing: np.ndarray,
                        device: torch.device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed matrix probability and matrix flag of the held-out particle-head voxels of the
    central half of each validation patch (its edges lack the context sliding-window inference
    gives them)."""
    from scipy import ndimage

    sigma = float(np.min(spacing)) / np.asarray(spacing, dtype=float)
    votes, flags = [], []
    network.eval()
    with torch.no_grad():
        for first in range(0, len(patches), batch_size):
            x, _, particle_target = _stack(patches[first:first + batch_size], device)
            _, particle_logits = network(x)
            matrix = torch.softmax(particle_logits.float(), dim=1)[:, PARTICLE_CLASSES.index("matrix")]
            for p, target in zip(matrix.cpu().numpy(), particle_target.cpu().numpy(), strict=True):
                p = ndimage.gaussian_filter(p, sigma, mode="nearest")
                inner = tuple(slice(n // 4, n - n // 4) for n in p.shape)
                p, target = p[inner], target[inner]
                labelled = target >= 0
                votes.append(p[labelled])
                flags.append(target[labelled] == PARTICLE_CLASSES.index("matrix"))
    if not votes:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=bool)
    return np.concatenate(votes), np.concatenate(flags)


def calibrate_matrix_threshold(model: UNetModel, image: Any, labels: Any, *,
                               spacing: float | Sequence[float] | None = None,
                               device: str | None = "cpu") -> dict[str, Any]:
    """The particle head's matrix threshold of a trained model, from its held-out labels.

    :func:`train_unet` does this at the end of training and stores the result in
    ``model.training["matrix_threshold"]``; this function repeats it for a saved model (one
    trained before the calibration existed, or to check it): the same labels and the model's
    training settings give the same held-out voxels and validation patches.

    Parameters
    ----------
    model : UNetModel
    image, labels : (Z, Y, X) array_like
        The CT and the sparse label volume the model was trained on.
    spacing : float or (3,) floats, optional
        Voxel size in micrometres (default: the model's).
    device : str
        Where the network runs.

    Returns
    -------
    dict
        As :func:`matrix_threshold_from_votes`.
    """
    settings = UNetTrainingSettings.from_dict(model.training.get("settings", {}))
    data, label_data, shape = _check_inputs(image, labels, settings.patch_shape)
    spacing = normalize_spacing(model.voxel_size_um if spacing is None else spacing)
    coords, values = _labelled_voxels(label_data, shape)
    targets, _ = _sparse_targets(coords, values, model.class_ids, spacing, settings)
    sampler = _PatchSampler(data, targets, shape, settings, spacing, model.normalisation["center"],
                            model.normalisation["scale"])
    run_on = resolve_device(device)
    network = model.network.to(run_on)
    try:
        votes, flags = _patch_matrix_votes(network, _validation_patches(sampler, settings), spacing, run_on,
                                           settings.batch_size)
    finally:
        model.network.cpu()
    return matrix_threshold_from_votes(votes, flags)


def train_unet(
    image: Any,
    labels: Any,
    *,
    spacing: float | Sequence[float] | None,
    phase_names: Mapping[int, str] | Any = None,
    settings: UNetTrainingSettings | None = None,
    require_all_phases: bool = False,
    progress: Progress | None = None,
) -> UNetModel:
    """Train a 3D U-Net (phase head + particle head) from a sparse label volume.

    Parameters
    ----------
    image : (Z, Y, X) array_like
        CT volume, axes (z, y, x): numpy, Zarr, Dask or :class:`corrtomo.io.Volume`; read patch
        by patch (and 32 planes for the normalisation), never loaded whole.
    labels : (Z, Y, X) integer array_like
        Sparse labels: 0 unlabelled, 1..254 phase ids, 255 matrix (epoxy). Must hold the
        matrix and at least one mineral.
    spacing : float or (3,) floats or None
        Voxel size in micrometres (``None``: the Volume's, else 1).
    phase_names : dict of int to str, or PhaseLibrary, optional
        Names of the phase ids; every labelled id must be in it. Phases of it without labels
        are not learnt: they are listed in ``training["absent_phases"]`` (or raise, with
        `require_all_phases`). Without it the classes are named ``"phase_<id>"``.
    settings : UNetTrainingSettings, optional
        Patch size, schedule, augmentation, network size, seed and device.
    require_all_phases : bool
        Raise InputError when a phase of `phase_names` has no labelled voxel.
    progress : callable, optional
        ``progress("train", step, max_steps)`` after every step.

    Returns
    -------
    UNetModel
        The network on the CPU in eval mode (the best validation's weights), ``class_ids``
        ``(0, *mineral ids)``, the normalisation and a ``training`` summary: ``settings``,
        ``steps``, ``best_step``, ``best_val_loss``, ``stopped_early``, ``history`` (one
        ``{step, train_loss, val_loss, val_accuracy}`` per validation; ``train_loss`` is the
        mean since the previous one), ``losses`` (every step's training loss), ``seconds``,
        ``device``, voxel counts, class weights, ``absent_phases`` and ``matrix_threshold``
        (the particle head's calibrated threshold, :func:`matrix_threshold_from_votes`, from the
        held-out voxels of the validation patches with the kept weights).

    Raises
    ------
    InputError
        Shapes that differ, non-integer labels or values beyond 255, no matrix or no mineral
        labelled, label ids missing from `phase_names`, a volume smaller than the patch, NaN
        grey values, CUDA asked for but not available.

    Notes
    -----
    Each step draws ``batch_size`` patches, each centred on a training voxel chosen
    class-balanced (a phase class uniformly, then one of its voxels), clipped to the volume,
    augmented (flips, 90-degree turns about z, zoom, grey-value scale/offset/noise), and takes
    one AdamW step on :func:`masked_loss`; validation voxels are masked out of training patches.
    Every ``validate_every`` steps the loss and phase accuracy over the held-out voxels of a
    fixed set of patches are computed; training stops after ``patience`` validations without
    improvement and the best weights are kept (Prechelt 1998). Loss on labelled voxels only
    follows Cicek et al. (2016).

    References
    ----------
    .. [1] O. Cicek et al., "3D U-Net: learning dense volumetric segmentation from sparse
       annotation", MICCAI 2016, 424-432.
    .. [2] L. Prechelt, "Early stopping - but when?", Neural Networks: Tricks of the Trade,
       55-69 (1998).
    """
    started = time.perf_counter()
    settings = UNetTrainingSettings() if settings is None else settings
    if not isinstance(settings, UNetTrainingSettings):
        raise InputError("settings must be a UNetTrainingSettings", source="settings")
    patch = settings.patch_shape
    data, label_data, shape = _check_inputs(image, labels, patch)
    if spacing is None and getattr(image, "spacing", None) is not None:
        spacing = image.spacing
    spacing = normalize_spacing(spacing)
    device = resolve_device(settings.device)
    names = _class_names(phase_names)

    # --- targets of the labelled voxels (one pass over the label volume) ---
    coords, values = _labelled_voxels(label_data, shape)
    class_ids, class_names, absent = _phase_classes(values, names, require_all_phases)
    targets, kept_whole = _sparse_targets(coords, values, class_ids, spacing, settings)
    phase, particle, validation = targets.phase, targets.particle, targets.validation
    n_classes = len(class_ids)
    del coords
    train_counts = np.bincount(phase[~validation], minlength=n_classes)
    val_counts = np.bincount(phase[validation], minlength=n_classes)
    particle_counts = np.bincount(particle[~validation], minlength=len(PARTICLE_CLASSES))
    phase_weights = torch.from_numpy(_class_weights(train_counts, settings.class_weighting,
                                                    settings.max_class_weight)).to(device)
    particle_weights = torch.from_numpy(_class_weights(particle_counts, settings.class_weighting,
                                                       settings.max_class_weight)).to(device)

    # --- seeded generators: normalisation, training patches, validation patches ---
    norm_seq, train_seq, _ = np.random.SeedSequence(settings.seed).spawn(3)  # the third: validation
    center, scale, n_normalisation = _normalisation(data, shape, settings.normalisation_samples,
                                                    np.random.default_rng(norm_seq))
    sampler = _PatchSampler(data, targets, shape, settings, spacing, center, scale)
    train_rng = np.random.default_rng(train_seq)
    validation_set = _validation_patches(sampler, settings)

    # --- network and optimiser ---
    architecture = UNetArchitecture(n_phase_classes=n_classes, base_channels=settings.base_channels,
                                    levels=settings.levels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        network = UNet3D(architecture)
    network.to(device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay)
    amp_dtype = None
    scaler = None
    if device.type == "cuda" and settings.mixed_precision:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if amp_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        context = (torch.autocast(device_type="cuda", dtype=amp_dtype) if amp_dtype is not None
                   else contextlib.nullcontext())
        with context:
            phase_logits, particle_logits = network(x)
        return phase_logits.float(), particle_logits.float()

    def loss_of(phase_logits, particle_logits, phase_target, particle_target) -> torch.Tensor:
        return masked_loss(phase_logits, phase_target, particle_logits, particle_target,
                           phase_weights=phase_weights, particle_weights=particle_weights,
                           dice_weight=settings.dice_weight, particle_weight=settings.particle_weight)

    def validate() -> tuple[float, float]:
        network.eval()
        losses, correct, total = [], 0, 0
        with torch.no_grad():
            for first in range(0, len(validation_set), settings.batch_size):
                x, phase_target, particle_target = _stack(validation_set[first:first + settings.batch_size], device)
                phase_logits, particle_logits = forward(x)
                losses.append(float(loss_of(phase_logits, particle_logits, phase_target, particle_target)))
                labelled = phase_target >= 0
                correct += int((phase_logits.argmax(dim=1)[labelled] == phase_target[labelled]).sum())
                total += int(labelled.sum())
        network.train()
        return float(np.mean(losses)), correct / max(total, 1)

    # --- training loop ---
    network.train()
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    best_loss, best_step, best_state = math.inf, 0, None
    waited, stopped_early, since = 0, False, 0
    step = 0
    for step in range(1, settings.max_steps + 1):
        batch = [sampler.read(sampler.centre(train_rng, False), train_rng, False) for _ in range(settings.batch_size)]
        x, phase_target, particle_target = _stack(batch, device)
        optimiser.zero_grad(set_to_none=True)
        phase_logits, particle_logits = forward(x)
        loss = loss_of(phase_logits, particle_logits, phase_target, particle_target)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        else:
            loss.backward()
            optimiser.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress("train", step, settings.max_steps)
        if step % settings.validate_every and step != settings.max_steps:
            continue
        entry: dict[str, Any] = {"step": step, "train_loss": float(np.mean(losses[since:])),
                                 "val_loss": None, "val_accuracy": None}
        since = step
        if validation_set:
            entry["val_loss"], entry["val_accuracy"] = validate()
            if entry["val_loss"] < best_loss - settings.min_delta:
                best_loss, best_step, waited = entry["val_loss"], step, 0
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            else:
                waited += 1
        history.append(entry)
        if waited >= settings.patience:
            stopped_early = True
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        best_step = step
    matrix_threshold = matrix_threshold_from_votes(
        *_patch_matrix_votes(network, validation_set, spacing, device, settings.batch_size))
    network.cpu().eval()

    training = {
        "settings": settings.to_dict(),
        "device": str(device),
        "mixed_precision": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "steps": step,
        "best_step": best_step,
        "best_val_loss": None if best_state is None else best_loss,
        "stopped_early": stopped_early,
        "history": history,
        "losses": losses,
        "seconds": time.perf_counter() - started,
        "labelled_voxels": {int(c): int(n) for c, n in zip(class_ids, train_counts + val_counts, strict=True)},
        "validation_voxels": {int(c): int(n) for c, n in zip(class_ids, val_counts, strict=True)},
        "validation_kept_whole": [int(c) for c in kept_whole],
        "particle_voxels": {n: int(c) for n, c in zip(PARTICLE_CLASSES, particle_counts, strict=True)},
        "class_weights": {"phase": [float(w) for w in phase_weights.cpu()],
                          "particle": [float(w) for w in particle_weights.cpu()]},
        "matrix_threshold": matrix_threshold,
        "absent_phases": {int(c): n for c, n in absent.items()},
        "normalisation": {"method": "percentiles", "percentiles": list(NORMALISATION_PERCENTILES),
                          "samples": n_normalisation},
        "torch_version": torch.__version__,
    }
    return UNetModel(
        network=network,
        class_ids=tuple(int(c) for c in class_ids),
        class_names=tuple(class_names),
        voxel_size_um=tuple(float(s) for s in spacing),
        normalisation={"center": center, "scale": scale},
        patch_shape=patch,
        training=training,
    )
