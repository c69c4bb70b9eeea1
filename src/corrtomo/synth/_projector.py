"""Numba kernels for parallel-beam CT, one independent 2D problem per z slice.

Geometry shared by every kernel (all lengths in voxel units):

* a slice is a square of ``N x N`` pixels, axes (y, x) = (row, column); pixel ``(i, j)`` has its
  centre at ``x = j - (N - 1) / 2`` and ``y = (N - 1) / 2 - i`` (y points *up* the displayed image,
  the convention of :func:`skimage.transform.radon`);
* the ray at angle ``theta`` and detector coordinate ``t`` is the line
  ``x cos(theta) + y sin(theta) = t``; detector bin ``k`` of ``D`` has its centre at
  ``t = k - (D - 1) / 2`` and width 1.

Every kernel loops ``prange`` over independent outputs (a (slice, angle) pair or a (slice, row)
pair) and accumulates each output value sequentially in float64, so results do not depend on the
number of threads or on scheduling: same input, bit-identical output.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = [
    "detector_bins",
    "joseph_adjoint",
    "joseph_forward",
    "linear_backproject",
    "transmission",
]


def detector_bins(n: int) -> int:
    """Number of detector bins ``D`` for an ``n x n`` slice.

    The smallest integer ``D >= sqrt(2) n`` with the parity of ``n``: the detector covers the
    slice diagonal, and at ``theta = 0`` the bin centres fall on pixel-column centres.
    """
    d = math.ceil(math.sqrt(2.0) * n - 1e-9)
    if (d - n) % 2:
        d += 1
    return int(d)


@njit(parallel=True, cache=True, fastmath=False)
def joseph_forward(volume, cos_t, sin_t, n_det, out):  # pragma: no cover - compiled
    """Joseph (1982) ray-driven projector: ``out[z, a, k] = sum_pixels w * volume[z]``.

    For a ray steeper than 45 degrees to the x axis the image is sampled once per row at the
    ray's crossing, with linear interpolation between the two neighbouring pixels of that row and
    a path length ``1 / |cos(theta)|`` per row; otherwise once per column with ``1 / |sin(theta)|``.
    Pixels outside the slice are zero.
    """
    n_z, n, _ = volume.shape
    n_a = cos_t.shape[0]
    c = 0.5 * (n - 1)
    cd = 0.5 * (n_det - 1)
    for za in prange(n_z * n_a):
        z = za // n_a
        a = za - z * n_a
        ca = cos_t[a]
        sa = sin_t[a]
        if abs(ca) >= abs(sa):
            # one sample per row i: y = c - i, x = (t - y sa) / ca, column j = x + c
            inv = 1.0 / ca
            scale = 1.0 / abs(ca)
            dj = sa * inv
            for k in range(n_det):
                t = k - cd
                j_first = (t - c * sa) * inv + c
                acc = 0.0
                for i in range(n):
                    fj = j_first + i * dj
                    if fj <= -1.0 or fj >= n:
                        continue
                    j0 = math.floor(fj)
                    w = fj - j0
                    if j0 >= 0:
                        acc += (1.0 - w) * volume[z, i, j0]
                    if j0 + 1 < n:
                        acc += w * volume[z, i, j0 + 1]
                out[z, a, k] = acc * scale
        else:
            # one sample per column j: x = j - c, y = (t - x ca) / sa, row i = c - y
            inv = 1.0 / sa
            scale = 1.0 / abs(sa)
            di = ca * inv
            for k in range(n_det):
                t = k - cd
                i_first = c - (t + c * ca) * inv
                acc = 0.0
                for j in range(n):
                    fi = i_first + j * di
                    if fi <= -1.0 or fi >= n:
                        continue
                    i0 = math.floor(fi)
                    w = fi - i0
                    if i0 >= 0:
                        acc += (1.0 - w) * volume[z, i0, j]
                    if i0 + 1 < n:
                        acc += w * volume[z, i0 + 1, j]
                out[z, a, k] = acc * scale


@njit(parallel=True, cache=True, fastmath=False)
def linear_backproject(sinogram, cos_t, sin_t, n, out):  # pragma: no cover - compiled
    """Pixel-driven backprojection: ``out[z, i, j] = sum_a interp(sinogram[z, a], t_ij(a))``.

    ``t_ij = x_j cos(theta) + y_i sin(theta)``; linear interpolation between the two nearest
    detector bins, zero beyond the detector. No angular weight is applied.
    """
    n_z, n_a, n_det = sinogram.shape
    c = 0.5 * (n - 1)
    cd = 0.5 * (n_det - 1)
    for zi in prange(n_z * n):
        z = zi // n
        i = zi - z * n
        y = c - i
        row = np.zeros(n, dtype=np.float64)
        for a in range(n_a):
            ca = cos_t[a]
            base = y * sin_t[a] - c * ca + cd
            for j in range(n):
                fk = base + j * ca
                if fk <= -1.0 or fk >= n_det:
                    continue
                k0 = math.floor(fk)
                w = fk - k0
                v = 0.0
                if k0 >= 0:
                    v += (1.0 - w) * sinogram[z, a, k0]
                if k0 + 1 < n_det:
                    v += w * sinogram[z, a, k0 + 1]
                row[j] += v
        for j in range(n):
            out[z, i, j] = row[j]


@njit(parallel=True, cache=True, fastmath=False)
def joseph_adjoint(sinogram, cos_t, sin_t, n, out):  # pragma: no cover - compiled
    """Exact transpose of :func:`joseph_forward`, written as a pixel-driven gather.

    The Joseph weight of pixel ``(i, j)`` in ray ``(a, k)`` is
    ``max(0, 1 - |t_k - t_ij| / h) / h`` with ``h = max(|cos|, |sin|)`` and
    ``t_ij = x_j cos + y_i sin``, so the transpose gathers the bins within ``h`` of ``t_ij``
    (``h <= 1``: only bins ``floor(t_ij)`` and ``floor(t_ij) + 1``). Gathering instead of
    scattering keeps the kernel race-free and deterministic.
    """
    n_z, n_a, n_det = sinogram.shape
    c = 0.5 * (n - 1)
    cd = 0.5 * (n_det - 1)
    for zi in prange(n_z * n):
        z = zi // n
        i = zi - z * n
        y = c - i
        row = np.zeros(n, dtype=np.float64)
        for a in range(n_a):
            ca = cos_t[a]
            h = max(abs(ca), abs(sin_t[a]))
            inv_h = 1.0 / h
            base = y * sin_t[a] - c * ca + cd
            for j in range(n):
                fk = base + j * ca
                if fk <= -1.0 or fk >= n_det:
                    continue
                # h <= 1, so only bins k0 and k0 + 1 can lie within h of fk
                k0 = math.floor(fk)
                d = fk - k0
                v = 0.0
                w = 1.0 - d * inv_h
                if k0 >= 0 and w > 0.0:
                    v += w * sinogram[z, a, k0]
                w = 1.0 - (1.0 - d) * inv_h
                if k0 + 1 < n_det and w > 0.0:
                    v += w * sinogram[z, a, k0 + 1]
                row[j] += v * inv_h
        for j in range(n):
            out[z, i, j] = row[j]


@njit(parallel=True, cache=True, fastmath=False)
def transmission(basis_projections, mixing, weights, out):  # pragma: no cover - compiled
    """Polychromatic Beer-Lambert transmission from basis-material line integrals.

    ``out[z, a, k] = sum_e weights[e] * exp(-sum_r mixing[r, e] * basis_projections[r, z, a, k])``
    """
    n_r, n_z, n_a, n_det = basis_projections.shape
    n_e = weights.shape[0]
    for za in prange(n_z * n_a):
        z = za // n_a
        a = za - z * n_a
        for k in range(n_det):
            acc = 0.0
            for e in range(n_e):
                s = 0.0
                for r in range(n_r):
                    s += mixing[r, e] * basis_projections[r, z, a, k]
                acc += weights[e] * math.exp(-s)
            out[z, a, k] = acc
