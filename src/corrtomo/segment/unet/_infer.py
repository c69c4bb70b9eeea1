"""Sliding-window inference of a :class:`UNetModel`, block by block on numpy, Zarr or Dask volumes.

How a volume is covered
-----------------------
Windows of the inference window size lie on one *global* grid per axis, fixed by the volume
edge ``n``, the window ``w`` and the stride ``s = round(w * (1 - overlap))`` alone (the nnU-Net
placement: ``k = ceil((n - w) / s) + 1`` windows spread evenly from 0 to ``n - w``). Every
window's softmax probabilities are weighted by a Gaussian importance map (sigma = w / 8 per axis,
Isensee et al. 2021) and the weighted sums are divided by the summed weights.

The output is written block by block: for a block (its *core*), every global window that
touches the core is run on the network (reading only the union box of those windows; never the
whole volume) and the windows are accumulated in the global window order. A voxel therefore
sees the same windows, in the same order, with the same batch size (the last batch of a block is
padded to `batch_size`, as the CPU convolutions round differently for another batch size),
whatever the block shape and whatever the runner: the phases and particle classes do not depend
on `block_shape` or on the number of workers. Windows straddling a block edge are evaluated by
each block they touch; larger blocks waste less (about ``(B + w - s) / B`` per axis).

Volumes smaller than the window
-------------------------------
Along an axis shorter than the window, the volume is extended to the window edge by
half-sample symmetric reflection (scipy's ``"reflect"``) as long as it is at least half the
window; a shorter axis raises :class:`~corrtomo._shared.InputError` (the network would see mostly
mirrored data): use a smaller window, a multiple of the architecture's divisor.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from ..._shared import BlockRunner, InputError, normalize_spacing
from ..._shared._blocks import read_block
from .._classifier import check_voxel_size
from .._features import _block_shape, check_foreground, check_image, iter_blocks
from ._device import resolve_device
from ._model import PARTICLE_CLASSES, UNetModel

__all__ = ["UNetPrediction", "predict_unet", "resolve_device"]

Progress = Callable[[str, int, int], None]

#: Default output block (voxels per axis).
DEFAULT_BLOCK_SHAPE: tuple[int, int, int] = (128, 128, 128)
_BOUNDARY = PARTICLE_CLASSES.index("boundary")
_MATRIX = PARTICLE_CLASSES.index("matrix")


@dataclass(frozen=True)
class UNetPrediction:
    """The output of :func:`predict_unet`.

    Attributes
    ----------
    phases : (Z, Y, X) uint8 array
        Phase id of every voxel (``model.class_ids`` of the most probable phase class; 0 is the
        matrix and, with a foreground, everything outside it). The `out_phases` array when one
        was given.
    particle : (Z, Y, X) uint8 array or None
        Most probable class of the particle head: 0 matrix, 1 particle core, 2 particle
        boundary (:data:`PARTICLE_CLASSES`); the particle foreground is ``particle > 0``. Not
        masked by `foreground`. ``None`` with ``particle=False``.
    boundary : (Z, Y, X) uint8 array or None
        Probability of the particle-boundary class, ``round(255 * p)``; only with
        ``boundary=True`` or `out_boundary`.
    matrix : (Z, Y, X) uint8 array or None
        Probability of the particle head's matrix class, ``round(255 * p)``: the soft particle
        foreground (``matrix < 128`` is about ``particle > 0``); only with ``matrix=True`` or
        `out_matrix`.
    class_ids : tuple of int
        Phase id of each phase-head output.
    device : str
        Where the network ran (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    window : (3,) tuple of int
        Sliding-window edge in voxels.
    stride : (3,) tuple of int
        Nominal window stride (the windows are spread evenly, at most this far apart).
    """

    phases: Any
    particle: Any
    boundary: Any
    matrix: Any
    class_ids: tuple[int, ...]
    device: str
    window: tuple[int, int, int]
    stride: tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# window grid
# --------------------------------------------------------------------------------------------


def _window_starts(n: int, w: int, s: int) -> np.ndarray:
    """Start of every window along an axis of `n` voxels (evenly spread, at most `s` apart)."""
    if n <= w:
        return np.zeros(1, dtype=np.int64)
    k = math.ceil((n - w) / s) + 1
    step = (n - w) / (k - 1)
    return np.array([round(i * step) for i in range(k)], dtype=np.int64)


def _gaussian(window: Sequence[int]) -> np.ndarray:
    """Importance map: a separable Gaussian with sigma = w / 8 per axis, peak 1 (float32)."""
    axes = []
    for w in window:
        x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
        sigma = w / 8.0
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    weight = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weight /= weight.max()
    return np.maximum(weight, 1e-6).astype(np.float32)


def _check_window(window: Any, model: UNetModel, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    given = model.patch_shape if window is None else window
    try:
        window = tuple(int(v) for v in np.broadcast_to(np.asarray(given), (3,)))
    except (TypeError, ValueError):
        raise InputError(f"window must be 1 or 3 integers, got {given!r}", source="window") from None
    divisor = model.architecture.divisor
    if any(w < 1 or w % divisor for w in window):
        raise InputError(f"window edges must be positive multiples of {divisor} (the U-Net's divisor), got "
                         f"{list(window)}", source="window")
    for axis, (n, w) in enumerate(zip(shape, window, strict=True)):
        if 2 * n < w:
            raise InputError(f"volume edge {n} (axis {'zyx'[axis]}) is smaller than half the window {w}; use a "
                             f"smaller window (a multiple of {divisor})", source="window")
    return window


def _check_out(out: Any, shape: tuple[int, ...], name: str) -> Any:
    if out is None:
        return np.zeros(shape, dtype=np.uint8)
    if tuple(int(n) for n in out.shape) != tuple(shape):
        raise InputError(f"output shape {tuple(out.shape)} differs from the volume shape {tuple(shape)}",
                         source=name)
    return out


# --------------------------------------------------------------------------------------------
# one block
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """Everything a block task needs besides its slices (shared by all blocks)."""

    network: torch.nn.Module
    device: str
    amp: bool
    center: float
    scale: float
    shape: tuple[int, int, int]
    window: tuple[int, int, int]
    starts: tuple[np.ndarray, np.ndarray, np.ndarray]
    gaussian: np.ndarray
    lut: np.ndarray  # class index -> phase id (uint8)
    minerals: np.ndarray  # class indices that are not the matrix
    batch_size: int
    particle: bool
    boundary: bool
    matrix: bool

    @property
    def needs_particle_head(self) -> bool:
        return self.particle or self.boundary or self.matrix


def _read_box(data: Any, box: Sequence[tuple[int, int]], shape: Sequence[int]) -> np.ndarray:
    """``data[box]`` as float32; parts beyond the volume (only where it is shorter than the
    window) filled by half-sample symmetric reflection."""
    inside = tuple(slice(lo, min(hi, n)) for (lo, hi), n in zip(box, shape, strict=True))
    region = read_block(data, inside)
    if region.dtype.kind not in "biuf":
        raise InputError(f"image must be numeric, got dtype {region.dtype}", source="image")
    region = region.astype(np.float32, copy=False)
    if not np.isfinite(region).all():
        bad = np.argwhere(~np.isfinite(region))[0] + np.array([s.start for s in inside])
        raise InputError(f"image has NaN or infinite voxels (first at z={bad[0]}, y={bad[1]}, x={bad[2]})",
                         source="image")
    pad = [(0, max(0, hi - n)) for (_, hi), n in zip(box, shape, strict=True)]
    if any(high for _, high in pad):
        region = np.pad(region, pad, mode="symmetric")
    return region


def _blend(block: tuple[slice, ...], plan: _Plan, data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gaussian-blended softmax probabilities of the block core: phase (C, *core) and particle
    (P, *core) float32 tensors on the plan's device (particle None when not needed).

    Every global window touching the core is evaluated, in global C order, in batches of exactly
    ``plan.batch_size`` (the last one padded by repeating its last window)."""
    device = torch.device(plan.device)
    core = [(s.start, s.stop) for s in block]
    core_shape = tuple(c1 - c0 for c0, c1 in core)
    per_axis = [[int(t) for t in starts if t < c1 and t + w > c0]
                for (c0, c1), starts, w in zip(core, plan.starts, plan.window, strict=True)]
    box = [(axis[0], axis[-1] + w) for axis, w in zip(per_axis, plan.window, strict=True)]
    region = _read_box(data, box, plan.shape)
    region = (region - np.float32(plan.center)) / np.float32(plan.scale)
    volume = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32)).to(device)
    gaussian = torch.from_numpy(plan.gaussian).to(device)
    need_particle = plan.needs_particle_head
    n_phase = plan.lut.size
    n_particle = plan.network.architecture.n_particle_classes
    phase_sum = torch.zeros((n_phase, *core_shape), dtype=torch.float32, device=device)
    particle_sum = (torch.zeros((n_particle, *core_shape), dtype=torch.float32, device=device)
                    if need_particle else None)
    weight_sum = torch.zeros(core_shape, dtype=torch.float32, device=device)
    windows = list(product(*per_axis))
    for first in range(0, len(windows), plan.batch_size):
        group = windows[first:first + plan.batch_size]
        padded = group + [group[-1]] * (plan.batch_size - len(group))
        tiles = torch.stack([
            volume[tuple(slice(t - lo, t - lo + w) for t, (lo, _), w in zip(start, box, plan.window, strict=True))]
            for start in padded
        ])[:, None]
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=plan.amp):
            phase_logits, particle_logits = plan.network(tiles)
        phase_p = torch.softmax(phase_logits.float(), dim=1)
        particle_p = torch.softmax(particle_logits.float(), dim=1) if need_particle else None
        for j, start in enumerate(group):
            src = tuple(slice(max(c0, t) - t, min(c1, t + w) - t)
                        for t, (c0, c1), w in zip(start, core, plan.window, strict=True))
            dst = tuple(slice(max(c0, t) - c0, min(c1, t + w) - c0)
                        for t, (c0, c1), w in zip(start, core, plan.window, strict=True))
            g = gaussian[src]
            phase_sum[(slice(None), *dst)] += phase_p[j][(slice(None), *src)] * g
            if particle_sum is not None:
                particle_sum[(slice(None), *dst)] += particle_p[j][(slice(None), *src)] * g
            weight_sum[dst] += g
    phase_sum /= weight_sum
    if particle_sum is not None:
        particle_sum /= weight_sum
    return phase_sum, particle_sum


def _as_bytes(probability: torch.Tensor) -> np.ndarray:
    """A probability as uint8 ``round(255 p)``."""
    return torch.round(probability * 255.0).clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _predict_block(block: tuple[slice, ...], *, plan: _Plan, data: Any, mask: Any, out_phases: Any,
                   out_particle: Any, out_boundary: Any, out_matrix: Any) -> int:
    """Predict one block and write it into the outputs (a task of :class:`BlockRunner`)."""
    shape = tuple(s.stop - s.start for s in block)
    inside = None
    if mask is not None:
        inside = read_block(mask, block) != 0
        if not inside.any() and not plan.needs_particle_head:
            out_phases[block] = np.zeros(shape, np.uint8)
            return int(np.prod(shape))
    with torch.inference_mode():
        phase_p, particle_p = _blend(block, plan, data)
        if inside is not None and plan.minerals.size and plan.minerals.size < plan.lut.size:
            minerals = torch.from_numpy(plan.minerals).to(phase_p.device)
            index = plan.minerals[torch.argmax(phase_p[minerals], dim=0).cpu().numpy()]
        else:
            index = torch.argmax(phase_p, dim=0).cpu().numpy()
        phases = plan.lut[index]
        if inside is not None:
            phases[~inside] = 0
        out_phases[block] = phases
        if plan.particle:
            out_particle[block] = torch.argmax(particle_p, dim=0).to(torch.uint8).cpu().numpy()
        if plan.boundary:
            out_boundary[block] = _as_bytes(particle_p[_BOUNDARY])
        if plan.matrix:
            out_matrix[block] = _as_bytes(particle_p[_MATRIX])
    return int(np.prod(shape))



# --------------------------------------------------------------------------------------------
# the public function
# --------------------------------------------------------------------------------------------


def _phase_layout(model: UNetModel) -> tuple[np.ndarray, np.ndarray]:
    ids = [int(c) for c in model.class_ids]
    if len(ids) != model.architecture.n_phase_classes:
        raise InputError(f"{len(ids)} class ids for {model.architecture.n_phase_classes} phase outputs",
                         source="model")
    if any(not 0 <= c <= 255 for c in ids):
        raise InputError(f"class ids must lie within 0..255, got {ids}", source="model")
    lut = np.asarray(ids, dtype=np.uint8)
    return lut, np.flatnonzero(lut != 0)


def _normalisation(model: UNetModel) -> tuple[float, float]:
    try:
        center = float(model.normalisation["center"])
        scale = float(model.normalisation["scale"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"normalisation must be {{'center': c, 'scale': s}}, got {model.normalisation!r}",
                         source="model") from None
    if not (math.isfinite(center) and math.isfinite(scale) and scale > 0):
        raise InputError(f"normalisation needs a finite center and a positive scale, got {model.normalisation!r}",
                         source="model")
    return center, scale


def predict_unet(
    model: UNetModel,
    image: Any,
    *,
    spacing: float | Sequence[float] | None = None,
    foreground: Any = None,
    out_phases: Any = None,
    out_particle: Any = None,
    out_boundary: Any = None,
    out_matrix: Any = None,
    particle: bool = True,
    boundary: bool = False,
    matrix: bool = False,
    block_shape: Sequence[int] | int | None = DEFAULT_BLOCK_SHAPE,
    window: Sequence[int] | int | None = None,
    overlap: float = 0.5,
    device: str | torch.device = "auto",
    batch_size: int = 2,
    progress: Progress | None = None,
    runner: BlockRunner | None = None,
) -> UNetPrediction:
    """Phases (and particle classes) of every voxel by sliding-window U-Net inference, block by block.

    Parameters
    ----------
    model : UNetModel
        A trained network (from training or :func:`load_unet`).
    image : (Z, Y, X) array_like
        CT volume (numpy, Zarr, Dask or :class:`corrtomo.io.Volume`), axes (z, y, x); read one
        block (plus the windows around it) at a time. Normalised as
        ``(grey - center) / scale`` with the model's normalisation.
    spacing : float or (3,) floats, optional
        Voxel size in micrometres (default: the Volume's, else unchecked); must match the model's
        within 2 %.
    foreground : (Z, Y, X) bool array_like, optional
        Particle voxels: outside, the phase is 0; inside, the most probable *mineral* (the
        matrix class is left out), as :meth:`PhaseClassifier.predict` does. The particle output
        is not masked.
    out_phases, out_particle, out_boundary, out_matrix : (Z, Y, X) uint8 arrays, optional
        Where to write the phases, the particle classes, the boundary and the matrix
        probability (e.g. Zarr arrays; a ``dask.distributed`` runner needs Zarr arrays on a path
        every worker sees).
        Default: numpy arrays. With several workers, give blocks that are whole output chunks.
    particle : bool
        Write the particle-head classes (0 matrix, 1 core, 2 boundary); implied by `out_particle`.
    boundary : bool
        Write the boundary probability as ``round(255 * p)``; implied by `out_boundary`.
    matrix : bool
        Write the particle head's matrix probability as ``round(255 * p)`` (the soft particle
        foreground the pipeline thresholds after smoothing); implied by `out_matrix`.
    block_shape : int or (3,) ints
        Output block; each block evaluates the windows touching it (the result does not depend
        on it).
    window : int or (3,) ints, optional
        Sliding-window edge (default: the training patch); multiples of the architecture's
        divisor. An axis of the volume shorter than the window is extended by reflection if it
        is at least half the window.
    overlap : float
        Fraction of the window shared by neighbouring windows, in [0, 1) (0.5: stride w / 2).
    device : {"auto", "cpu", "cuda", "cuda:N"} or torch.device
        ``"auto"``: CUDA when available, else the CPU. On CUDA the network runs in float16
        autocast (mixed precision); probabilities are blended in float32.
    batch_size : int
        Windows per forward pass (every pass has exactly this many, for reproducibility).
    progress : callable, optional
        ``progress("unet", done, total)`` after every block.
    runner : BlockRunner, optional
        Spreads the blocks over threads or a ``dask.distributed`` cluster; the result is the
        same as a serial run's (default: serial).

    Returns
    -------
    UNetPrediction

    Raises
    ------
    InputError
        Another voxel size than the model's, a window that is not a multiple of the divisor or
        more than twice a volume edge, CUDA asked for without one, outputs of another shape, a
        distributed runner without Zarr outputs, NaN voxels.

    Notes
    -----
    See the module documentation for the window placement and why the result is independent of
    the block shape and the runner.
    """
    data = check_image(image)
    shape = tuple(int(n) for n in data.shape)
    if spacing is None:
        spacing = getattr(image, "spacing", None)
    if spacing is not None:
        check_voxel_size(model.voxel_size_um, normalize_spacing(spacing), source="spacing")
    mask = check_foreground(foreground, shape)
    lut, minerals = _phase_layout(model)
    center, scale = _normalisation(model)
    window = _check_window(window, model, shape)
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must lie in [0, 1), got {overlap}", source="overlap")
    if int(batch_size) < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}", source="batch_size")
    stride = tuple(max(1, round(w * (1.0 - overlap))) for w in window)
    chosen = resolve_device(device)
    particle = bool(particle) or out_particle is not None
    boundary = bool(boundary) or out_boundary is not None
    matrix = bool(matrix) or out_matrix is not None
    out_phases = _check_out(out_phases, shape, "out_phases")
    out_particle = _check_out(out_particle, shape, "out_particle") if particle else None
    out_boundary = _check_out(out_boundary, shape, "out_boundary") if boundary else None
    out_matrix = _check_out(out_matrix, shape, "out_matrix") if matrix else None
    runner = BlockRunner() if runner is None else runner
    if runner.kind == "distributed":
        for name, out in (("out_phases", out_phases), ("out_particle", out_particle), ("out_boundary", out_boundary),
                          ("out_matrix", out_matrix)):
            if out is not None and not hasattr(out, "store"):
                raise InputError(f"a dask.distributed runner writes into Zarr arrays: pass {name}=", source=name)

    network = copy.deepcopy(model.network).to(chosen).eval().requires_grad_(False)
    plan = _Plan(
        network=network, device=str(chosen), amp=chosen.type == "cuda", center=center, scale=scale,
        shape=shape, window=window,
        starts=tuple(_window_starts(n, w, s) for n, w, s in zip(shape, window, stride, strict=True)),
        gaussian=_gaussian(window), lut=lut, minerals=minerals, batch_size=int(batch_size),
        particle=particle, boundary=boundary, matrix=matrix,
    )
    blocks = list(iter_blocks(shape, _block_shape(block_shape, shape)))
    done = 0
    for _ in runner.map(_predict_block, blocks, plan=plan, data=data, mask=mask, out_phases=out_phases,
                        out_particle=out_particle, out_boundary=out_boundary, out_matrix=out_matrix):
        done += 1
        if progress is not None:
            progress("unet", done, len(blocks))
    return UNetPrediction(phases=out_phases, particle=out_particle, boundary=out_boundary, matrix=out_matrix,
                          class_ids=tuple(int(c) for c in model.class_ids), device=str(chosen),
                          window=window, stride=stride)
