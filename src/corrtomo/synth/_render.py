"""Digitise a particle system onto the CT grid, slab by slab, with super-sampled partial volume.

Each CT voxel is sampled at ``s**3`` sub-voxel points. A sub-voxel belongs to the particle with
the smallest normalised radius ``rho < 1`` (touching particles meet where their radial functions
balance), its phase is that of the nearest Voronoi seed of the particle, overridden by an
inclusion or a lamella where present; outside particles it is matrix (textured epoxy) inside the
pillar and air outside it. Per voxel the renderer returns

* the truth particle label: the most frequent label among the sub-voxels (0 = no particle),
* the truth phase: the most frequent phase among the sub-voxels of that particle (0 for matrix),
* the amount of every material: sub-voxel share of each phase, and of the matrix weighted by its
  texture (a density modulation), which the CT simulation turns into attenuation.

The kernel runs in parallel over the voxel planes of a slab and needs memory only for that slab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from ._particles import ParticleSystem, _radial_function


@dataclass(frozen=True)
class MatrixTexture:
    """Smooth random density modulation of the matrix: ``1 + a * sum_w cos(k_w . x + phi_w) / sqrt(W / 2)``.

    A sum of `W` plane waves with random directions and wavelengths has a Gaussian-like
    distribution with standard deviation ``a`` and no memory cost (evaluated point-wise).
    """

    wave_vectors: np.ndarray  # (W, 3) radians per voxel
    phases: np.ndarray  # (W,)
    amplitude: float

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        *,
        amplitude: float,
        wavelength_voxels: tuple[float, float] = (3.0, 12.0),
        n_waves: int = 24,
    ) -> MatrixTexture:
        directions = rng.normal(size=(n_waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        wavelength = np.exp(rng.uniform(*np.log(wavelength_voxels), size=n_waves))
        return cls(
            wave_vectors=directions * (2 * np.pi / wavelength)[:, None],
            phases=rng.uniform(0, 2 * np.pi, size=n_waves),
            amplitude=float(amplitude),
        )


def build_cell_grid(system: ParticleSystem, shape: tuple[int, int, int], cell_size: float):
    """Uniform grid of cells listing every particle whose bounding sphere overlaps the cell.

    Returns ``(dims, offsets, items)`` in CSR form: the particles of cell ``c`` (flat index) are
    ``items[offsets[c]:offsets[c + 1]]``.
    """
    dims = np.maximum(1, np.ceil(np.asarray(shape) / cell_size).astype(np.int64))
    low = np.floor((system.centers - system.bounding_radius[:, None] + 0.5) / cell_size).astype(np.int64)
    high = np.floor((system.centers + system.bounding_radius[:, None] + 0.5) / cell_size).astype(np.int64)
    low = np.clip(low, 0, dims - 1)
    high = np.clip(high, 0, dims - 1)
    return (dims, *_fill_cells(dims, low, high))


@numba.njit(cache=True)
def _fill_cells(dims, low, high):
    n_cells = dims[0] * dims[1] * dims[2]
    counts = np.zeros(n_cells + 1, dtype=np.int64)
    for i in range(low.shape[0]):
        for cz in range(low[i, 0], high[i, 0] + 1):
            for cy in range(low[i, 1], high[i, 1] + 1):
                for cx in range(low[i, 2], high[i, 2] + 1):
                    counts[(cz * dims[1] + cy) * dims[2] + cx + 1] += 1
    offsets = np.cumsum(counts)
    items = np.empty(offsets[-1], dtype=np.int64)
    fill = offsets[:-1].copy()
    for i in range(low.shape[0]):
        for cz in range(low[i, 0], high[i, 0] + 1):
            for cy in range(low[i, 1], high[i, 1] + 1):
                for cx in range(low[i, 2], high[i, 2] + 1):
                    key = (cz * dims[1] + cy) * dims[2] + cx
                    items[fill[key]] = i
                    fill[key] += 1
    return offsets, items


@numba.njit(cache=True, inline="always")
def _rho(p, z, y, x, centers, rotations, inverse_axes, bump_directions, bump_amplitudes, facet_normals, facet_distances):
    dz = z - centers[p, 0]
    dy = y - centers[p, 1]
    dx = x - centers[p, 2]
    e0 = (rotations[p, 0, 0] * dz + rotations[p, 0, 1] * dy + rotations[p, 0, 2] * dx) * inverse_axes[p, 0]
    e1 = (rotations[p, 1, 0] * dz + rotations[p, 1, 1] * dy + rotations[p, 1, 2] * dx) * inverse_axes[p, 1]
    e2 = (rotations[p, 2, 0] * dz + rotations[p, 2, 1] * dy + rotations[p, 2, 2] * dx) * inverse_axes[p, 2]
    norm = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
    reach = 1.0
    for k in range(bump_amplitudes.shape[1]):
        reach += max(bump_amplitudes[p, k], 0.0)
    if norm >= reach:  # beyond the largest possible radial function: outside
        return norm
    if norm < 1e-12:
        return 0.0
    f = _radial_function(e0, e1, e2, norm, bump_directions[p], bump_amplitudes[p], facet_normals[p], facet_distances[p])
    return norm / f


@numba.njit(cache=True, inline="always")
def _phase_at(
    p, z, y, x, seed_offsets, seed_positions, seed_phases,
    inclusion_centers, inclusion_radius2, inclusion_phases,
    lamella_normals, lamella_wobble, lamella_frequency, lamella_threshold, lamella_phases, lamella_offsets,
):
    best = 1e300
    phase = seed_phases[seed_offsets[p]]
    for g in range(seed_offsets[p], seed_offsets[p + 1]):
        d2 = (z - seed_positions[g, 0]) ** 2 + (y - seed_positions[g, 1]) ** 2 + (x - seed_positions[g, 2]) ** 2
        if d2 < best:
            best = d2
            phase = seed_phases[g]
    if inclusion_radius2[p] > 0.0:
        d2 = (z - inclusion_centers[p, 0]) ** 2 + (y - inclusion_centers[p, 1]) ** 2 + (x - inclusion_centers[p, 2]) ** 2
        if d2 < inclusion_radius2[p]:
            phase = inclusion_phases[p]
    if lamella_frequency[p] > 0.0:
        along = z * lamella_normals[p, 0] + y * lamella_normals[p, 1] + x * lamella_normals[p, 2]
        across = z * lamella_wobble[p, 0] + y * lamella_wobble[p, 1] + x * lamella_wobble[p, 2]
        angle = 2 * np.pi * (lamella_frequency[p] * along + lamella_offsets[p, 0]) + 1.6 * np.sin(
            0.9 * np.pi * (lamella_frequency[p] * across + lamella_offsets[p, 1])
        )
        if np.cos(angle) > lamella_threshold[p]:
            phase = lamella_phases[p]
    return phase


@numba.njit(parallel=True, cache=True)
def _render_slab_kernel(
    z_start, z_stop, ny, nx, s,
    centers, rotations, inverse_axes, bump_directions, bump_amplitudes, facet_normals, facet_distances,
    seed_offsets, seed_positions, seed_phases,
    inclusion_centers, inclusion_radius2, inclusion_phases,
    lamella_normals, lamella_wobble, lamella_frequency, lamella_threshold, lamella_phases, lamella_offsets,
    cell_size, cell_dims, cell_offsets, cell_items,
    pillar_radius, pillar_y, pillar_x,
    texture_k, texture_phase, texture_amplitude,
    out_labels, out_phases, out_amounts,
):
    n_sub = s * s * s
    inv_n = 1.0 / n_sub
    texture_norm = texture_amplitude / np.sqrt(max(1.0, texture_k.shape[0] / 2.0))
    for zi in numba.prange(z_stop - z_start):
        z = z_start + zi
        labels = np.empty(n_sub, dtype=np.int64)
        phases = np.empty(n_sub, dtype=np.int64)
        for yi in range(ny):
            for xi in range(nx):
                matrix = 0.0
                m = 0
                for a in range(s):
                    pz = z + (a + 0.5) / s - 0.5
                    for b in range(s):
                        py = yi + (b + 0.5) / s - 0.5
                        for c in range(s):
                            px = xi + (c + 0.5) / s - 0.5
                            label = 0
                            phase = 0
                            if pillar_radius > 0.0 and (py - pillar_y) ** 2 + (px - pillar_x) ** 2 > pillar_radius * pillar_radius:
                                label = -1  # air
                            else:
                                cz = min(max(int((pz + 0.5) / cell_size), 0), cell_dims[0] - 1)
                                cy = min(max(int((py + 0.5) / cell_size), 0), cell_dims[1] - 1)
                                cx = min(max(int((px + 0.5) / cell_size), 0), cell_dims[2] - 1)
                                key = (cz * cell_dims[1] + cy) * cell_dims[2] + cx
                                best = 1.0
                                owner = -1
                                for j in range(cell_offsets[key], cell_offsets[key + 1]):
                                    p = cell_items[j]
                                    r = _rho(p, pz, py, px, centers, rotations, inverse_axes, bump_directions, bump_amplitudes, facet_normals, facet_distances)
                                    if r < best:
                                        best = r
                                        owner = p
                                if owner >= 0:
                                    label = owner + 1
                                    phase = _phase_at(
                                        owner, pz, py, px, seed_offsets, seed_positions, seed_phases,
                                        inclusion_centers, inclusion_radius2, inclusion_phases,
                                        lamella_normals, lamella_wobble, lamella_frequency, lamella_threshold, lamella_phases,
                                        lamella_offsets,
                                    )
                                else:
                                    t = 0.0
                                    for w in range(texture_k.shape[0]):
                                        t += np.cos(texture_k[w, 0] * pz + texture_k[w, 1] * py + texture_k[w, 2] * px + texture_phase[w])
                                    matrix += 1.0 + texture_norm * t
                            labels[m] = label
                            phases[m] = phase
                            m += 1
                # amounts of each material
                out_amounts[0, zi, yi, xi] = matrix * inv_n
                for q in range(n_sub):
                    if labels[q] > 0:
                        out_amounts[phases[q], zi, yi, xi] += inv_n
                # mode of the labels (fast path: all equal)
                same = True
                for q in range(1, n_sub):
                    if labels[q] != labels[0]:
                        same = False
                        break
                if same:
                    best_label = labels[0]
                else:
                    best_label = labels[0]
                    best_count = 0
                    for q in range(n_sub):
                        count = 0
                        for r in range(n_sub):
                            if labels[r] == labels[q]:
                                count += 1
                        # ties go to a particle rather than to matrix/air, then to the lower label
                        if count > best_count or (count == best_count and labels[q] > 0 and (best_label <= 0 or labels[q] < best_label)):
                            best_count = count
                            best_label = labels[q]
                if best_label <= 0:
                    out_labels[zi, yi, xi] = 0
                    out_phases[zi, yi, xi] = 0
                    continue
                out_labels[zi, yi, xi] = best_label
                best_phase = 0
                best_count = 0
                for q in range(n_sub):
                    if labels[q] != best_label:
                        continue
                    count = 0
                    for r in range(n_sub):
                        if labels[r] == best_label and phases[r] == phases[q]:
                            count += 1
                    if count > best_count or (count == best_count and phases[q] < best_phase):
                        best_count = count
                        best_phase = phases[q]
                out_phases[zi, yi, xi] = best_phase


@dataclass(frozen=True)
class RenderedSlab:
    """Truth labels and material amounts of the voxel planes ``z_start:z_stop``."""

    z_start: int
    z_stop: int
    particles: np.ndarray  # (Zs, Y, X) uint32
    phases: np.ndarray  # (Zs, Y, X) uint8
    amounts: np.ndarray  # (1 + max_phase_id, Zs, Y, X) float32; channel 0 = matrix


class PhantomRenderer:
    """Render a particle system onto a CT grid slab by slab.

    Parameters
    ----------
    system : ParticleSystem
        The particles, in voxel units of the grid.
    shape : (P, M, N) tuple of int
        CT grid (z, y, x).
    max_phase_id : int
        Largest phase id used (number of phase channels in `amounts`).
    supersample : int
        Sub-voxels per axis (1 = point sampling at voxel centres).
    pillar_radius_voxels : float or None
        Cylindrical field of view along z (air outside), or ``None``.
    texture : MatrixTexture or None
        Density modulation of the matrix.
    """

    def __init__(
        self,
        system: ParticleSystem,
        shape: tuple[int, int, int],
        *,
        max_phase_id: int,
        supersample: int = 2,
        pillar_radius_voxels: float | None = None,
        texture: MatrixTexture | None = None,
    ):
        self.system = system
        self.shape = tuple(int(v) for v in shape)
        self.max_phase_id = int(max_phase_id)
        self.supersample = int(supersample)
        self.pillar = (
            (float(pillar_radius_voxels), (self.shape[1] - 1) / 2, (self.shape[2] - 1) / 2)
            if pillar_radius_voxels
            else (0.0, 0.0, 0.0)
        )
        self.texture = texture or MatrixTexture(np.zeros((0, 3)), np.zeros(0), 0.0)
        typical = float(np.median(system.bounding_radius)) if system.n else 8.0
        self.cell_size = max(4.0, typical)
        self.cell_dims, self.cell_offsets, self.cell_items = build_cell_grid(system, self.shape, self.cell_size)

    def render(self, z_start: int, z_stop: int) -> RenderedSlab:
        """Render voxel planes ``z_start:z_stop``."""
        depth = z_stop - z_start
        ny, nx = self.shape[1], self.shape[2]
        labels = np.zeros((depth, ny, nx), dtype=np.uint32)
        phases = np.zeros((depth, ny, nx), dtype=np.uint8)
        amounts = np.zeros((self.max_phase_id + 1, depth, ny, nx), dtype=np.float32)
        s = self.system
        _render_slab_kernel(
            z_start, z_stop, ny, nx, self.supersample,
            s.centers, s.rotations, s.inverse_axes, s.bump_directions, s.bump_amplitudes,
            s.facet_normals, s.facet_distances, s.seed_offsets, s.seed_positions, s.seed_phases.astype(np.int64),
            s.inclusion_centers, s.inclusion_radius2, s.inclusion_phases.astype(np.int64),
            s.lamella_normals, s.lamella_wobble_directions, s.lamella_frequency, s.lamella_threshold,
            s.lamella_phases.astype(np.int64),
            np.zeros((s.n, 2)) if s.lamella_offsets is None else np.ascontiguousarray(s.lamella_offsets, dtype=np.float64),
            self.cell_size, self.cell_dims, self.cell_offsets, self.cell_items,
            self.pillar[0], self.pillar[1], self.pillar[2],
            self.texture.wave_vectors, self.texture.phases, self.texture.amplitude,
            labels, phases, amounts,
        )
        return RenderedSlab(z_start, z_stop, labels, phases, amounts)

    def render_all(
        self, *, slab_size: int = 16, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render the whole grid; returns ``(particles, phases, amounts)``."""
        nz, ny, nx = self.shape
        particles = np.zeros(self.shape, dtype=np.uint32)
        phases = np.zeros(self.shape, dtype=np.uint8)
        amounts = np.zeros((self.max_phase_id + 1, nz, ny, nx), dtype=np.float32)
        for z0 in range(0, nz, slab_size):
            z1 = min(nz, z0 + slab_size)
            slab = self.render(z0, z1)
            particles[z0:z1], phases[z0:z1], amounts[:, z0:z1] = slab.particles, slab.phases, slab.amounts
            if progress is not None:
                progress(z1, nz)
        return particles, phases, amounts

    def inside_pillar(self, points: np.ndarray) -> np.ndarray:
        """Whether (..., 3) voxel positions lie inside the pillar (all True without a pillar)."""
        radius, cy, cx = self.pillar
        if radius <= 0:
            return np.ones(points.shape[:-1], dtype=bool)
        return (points[..., 1] - cy) ** 2 + (points[..., 2] - cx) ** 2 <= radius**2
