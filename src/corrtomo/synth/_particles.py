"""Particle systems of the digital twin: sizes, irregular shapes, placement, grains and inclusions.

A particle is a star-shaped body around its centre ``c``: a point ``x`` is inside when

.. math::  \\rho(x) = \\frac{|e|}{f(e / |e|)} < 1, \\qquad e = \\frac{R^T (x - c)}{a},

where ``R`` is a random rotation, ``a`` the three semi-axes of a base ellipsoid and
``f(d) = min(1 + \\sum_k b_k \\exp(\\kappa (d \\cdot n_k - 1)), \\min_{j: d \\cdot m_j > 0} h_j / (d \\cdot m_j))``
a radial function: ``K`` smooth bumps of amplitude ``b_k`` around random unit directions ``n_k``,
cut by ``F`` random planes (normals ``m_j`` at distances ``h_j``) — the flat facets and sharp
edges of crushed mineral grains.
The overall scale is set so that the particle's volume equals ``pi/6 * ESD**3`` for an
equivalent spherical diameter ``ESD`` drawn from a truncated log-normal distribution.

Inside a particle, phases are Voronoi grains of a few seeds, optionally a small spherical
inclusion of a given volume fraction and lamellae (a thresholded cosine field with a sinusoidal
wobble: fine dendritic/lamellar intergrowth such as LiAlO2 in slags).

Everything is in voxel units of the CT grid (voxel centres at integer (z, y, x) positions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from .._shared import InputError, fibonacci_sphere

_N_QUADRATURE = 512  # directions of the Fibonacci sphere used for volume and bounding radius
_KAPPA = 4.0  # sharpness of the radial bumps (width about 30 degrees)


@dataclass(frozen=True)
class ParticleType:
    """A kind of particle in a sample (e.g. talcum or saxolite).

    Attributes
    ----------
    name : str
        Name of the particle kind.
    volume_share : float
        Share of the total particle volume taken by this kind (shares of a sample sum to 1).
    phases : dict[int, float]
        Expected volume share of each phase id among the grains of this kind (sums to 1).
    liberated_share : float
        Share of particles (by number) that are a single grain of one phase.
    grains : tuple[int, int]
        Inclusive range of the number of Voronoi grain seeds in a non-liberated particle.
    inclusion : tuple[int, float, float] or None
        ``(phase_id, probability, volume_fraction)``: a non-liberated particle holds, with the
        given probability, one spherical inclusion of that phase and volume fraction.
    lamella : tuple[int, float, float, float] or None
        ``(phase_id, probability, volume_fraction, period_um)``: a non-liberated particle is
        intergrown, with the given probability, with lamellae of that phase.
    flatness : tuple[float, float]
        Range of the ratio of the shortest to the longest semi-axis of the base ellipsoid.
    roughness : float
        Standard deviation of the bump amplitudes ``b_k``.
    angularity : float
        How deep the facet planes cut into the body (0 = none; 0.3 = strongly faceted).
    """

    name: str
    volume_share: float
    phases: dict[int, float]
    liberated_share: float = 1.0
    grains: tuple[int, int] = (2, 4)
    inclusion: tuple[int, float, float] | None = None
    lamella: tuple[int, float, float, float] | None = None
    flatness: tuple[float, float] = (0.55, 1.0)
    roughness: float = 0.12
    angularity: float = 0.25

    def expected_phase_fractions(self) -> dict[int, float]:
        """Expected volume fraction of each phase in particles of this kind.

        Voronoi grains with i.i.d. seed phases have, by symmetry, the expected composition
        ``phases``; an inclusion of fraction ``f`` present with probability ``q`` in non-liberated
        particles moves ``(1 - L) q f`` of the volume to its phase, then lamellae likewise.
        """
        fractions = dict(self.phases)
        free = 1.0 - self.liberated_share
        for override in (self.inclusion, self.lamella):
            if override is None:
                continue
            phase_id, probability, fraction = override[0], override[1], override[2]
            moved = free * probability * fraction
            fractions = {k: v * (1.0 - moved) for k, v in fractions.items()}
            fractions[phase_id] = fractions.get(phase_id, 0.0) + moved
        return fractions


@dataclass(frozen=True)
class ParticleSpec:
    """What particle system to generate.

    Attributes
    ----------
    types : tuple[ParticleType, ...]
        Particle kinds and their volume shares.
    esd_median_um, esd_sigma : float
        Median and log standard deviation of the log-normal ESD distribution.
    esd_min_um, esd_max_um : float
        Truncation of the ESD distribution.
    solids_fraction : float
        Target particle volume over the domain (or pillar) volume.
    touching_share : float
        Share of particles placed in contact with an already placed particle.
    gap_voxels : float
        Minimum gap between the bounding spheres of particles placed apart.
    """

    types: tuple[ParticleType, ...]
    esd_median_um: float
    esd_sigma: float
    esd_min_um: float
    esd_max_um: float
    solids_fraction: float = 0.25
    touching_share: float = 0.2
    gap_voxels: float = 1.0

    def expected_phase_fractions(self) -> dict[int, float]:
        """Expected phase volume fractions of all particle volume (the preset's request)."""
        total: dict[int, float] = {}
        for kind in self.types:
            for phase_id, fraction in kind.expected_phase_fractions().items():
                total[phase_id] = total.get(phase_id, 0.0) + kind.volume_share * fraction
        return dict(sorted(total.items()))


@dataclass(frozen=True)
class ParticleSystem:
    """A generated particle system, in voxel units of the CT grid (z, y, x).

    All per-particle arrays have length ``n``; particle ``i`` gets label ``i + 1``.
    """

    centers: np.ndarray  # (n, 3) float64
    rotations: np.ndarray  # (n, 3, 3) world -> particle frame (R^T)
    inverse_axes: np.ndarray  # (n, 3) 1 / semi-axes
    bump_directions: np.ndarray  # (n, K, 3)
    bump_amplitudes: np.ndarray  # (n, K)
    facet_normals: np.ndarray  # (n, F, 3) in the particle's normalised frame
    facet_distances: np.ndarray  # (n, F)
    bounding_radius: np.ndarray  # (n,)
    esd_um: np.ndarray  # (n,) nominal ESD
    kind: np.ndarray  # (n,) int index into spec.types
    liberated: np.ndarray  # (n,) bool
    touching: np.ndarray  # (n,) bool: placed in contact with another particle
    seed_offsets: np.ndarray  # (n + 1,) CSR offsets into the seed arrays
    seed_positions: np.ndarray  # (g, 3)
    seed_phases: np.ndarray  # (g,) uint8
    inclusion_centers: np.ndarray  # (n, 3)
    inclusion_radius2: np.ndarray  # (n,) squared radius, 0 = none
    inclusion_phases: np.ndarray  # (n,) uint8
    lamella_normals: np.ndarray  # (n, 3)
    lamella_wobble_directions: np.ndarray  # (n, 3)
    lamella_frequency: np.ndarray  # (n,) cycles per voxel, 0 = none
    lamella_threshold: np.ndarray  # (n,)
    lamella_phases: np.ndarray  # (n,) uint8
    n_dropped: int = 0
    info: dict = field(default_factory=dict)
    # (n, 2) phase offsets (cycles) of the lamella carrier and wobble; None = zeros. A system moved
    # into another grid's frame (similarity transform, :mod:`corrtomo.synth._pair`) needs them.
    lamella_offsets: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.centers.shape[0])


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform random rotation matrices (n, 3, 3) from random unit quaternions (Shoemake 1992)."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], axis=1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], axis=1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=1),
        ],
        axis=1,
    )


def _random_unit_vectors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    v = rng.normal(size=(*shape, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _radial_modulation(
    directions: np.ndarray,
    bump_directions: np.ndarray,
    amplitudes: np.ndarray,
    facet_normals: np.ndarray,
    facet_distances: np.ndarray,
) -> np.ndarray:
    """f(d) for directions (D, 3) and n particles -> (n, D)."""
    cosine = np.einsum("nkc,dc->nkd", bump_directions, directions)
    f = 1.0 + np.einsum("nk,nkd->nd", amplitudes, np.exp(_KAPPA * (cosine - 1.0)))
    facing = np.einsum("nfc,dc->nfd", facet_normals, directions)
    with np.errstate(divide="ignore"):
        cut = np.where(facing > 0, facet_distances[:, :, None] / np.maximum(facing, 1e-12), np.inf).min(axis=1)
    return np.minimum(f, cut)


def _seed_modulation(directions, bump_directions, amplitudes, facet_normals, facet_distances) -> np.ndarray:
    """f(d) for one direction per row: directions (G, 3), per-row particle arrays -> (G,)."""
    cosine = np.einsum("gkc,gc->gk", bump_directions, directions)
    f = 1.0 + np.einsum("gk,gk->g", amplitudes, np.exp(_KAPPA * (cosine - 1.0)))
    facing = np.einsum("gfc,gc->gf", facet_normals, directions)
    cut = np.where(facing > 0, facet_distances / np.maximum(facing, 1e-12), np.inf).min(axis=1)
    return np.minimum(f, cut)


@numba.njit(cache=True, inline="always")
def _radial_function(e0, e1, e2, norm, bump_directions, bump_amplitudes, facet_normals, facet_distances):
    """f(d) at the unit direction (e0, e1, e2) / norm of the normalised particle frame."""
    f = 1.0
    for k in range(bump_amplitudes.shape[0]):
        cosine = (e0 * bump_directions[k, 0] + e1 * bump_directions[k, 1] + e2 * bump_directions[k, 2]) / norm
        f += bump_amplitudes[k] * np.exp(_KAPPA * (cosine - 1.0))
    for j in range(facet_distances.shape[0]):
        facing = (e0 * facet_normals[j, 0] + e1 * facet_normals[j, 1] + e2 * facet_normals[j, 2]) / norm
        if facing > 0.0:
            f = min(f, facet_distances[j] / facing)
    return f


def sample_esd(spec: ParticleSpec, rng: np.random.Generator, total_volume_um3: float) -> np.ndarray:
    """Draw ESDs (um) from the truncated log-normal until their volume reaches the target.

    Returns the ESDs in decreasing order.
    """
    mean_volume = np.pi / 6 * spec.esd_median_um**3 * np.exp(4.5 * spec.esd_sigma**2)
    batch = max(64, int(2 * total_volume_um3 / mean_volume))
    esd: list[np.ndarray] = []
    volume = 0.0
    while volume < total_volume_um3:
        draw = spec.esd_median_um * np.exp(spec.esd_sigma * rng.standard_normal(batch))
        draw = draw[(draw >= spec.esd_min_um) & (draw <= spec.esd_max_um)]
        cumulative = volume + np.cumsum(np.pi / 6 * draw**3)
        keep = int(np.searchsorted(cumulative, total_volume_um3)) + 1
        esd.append(draw[:keep])
        volume = float(cumulative[min(keep, cumulative.size) - 1]) if cumulative.size else volume
    return np.sort(np.concatenate(esd))[::-1]


@numba.njit(cache=True)
def _radial_extent(rotation, inverse_axes, bump_directions, bump_amplitudes, facet_normals, facet_distances, direction):
    """Distance from the centre to the surface along a world unit `direction` (voxels)."""
    g = np.empty(3)
    for i in range(3):
        g[i] = (rotation[i, 0] * direction[0] + rotation[i, 1] * direction[1] + rotation[i, 2] * direction[2]) * inverse_axes[i]
    norm = np.sqrt(g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
    f = _radial_function(g[0], g[1], g[2], norm, bump_directions, bump_amplitudes, facet_normals, facet_distances)
    return f / norm


@numba.njit(cache=True)
def _place_particles(
    bounding_radius,
    rotations,
    inverse_axes,
    bump_directions,
    bump_amplitudes,
    facet_normals,
    facet_distances,
    domain,
    pillar,
    gap,
    want_touch,
    uniforms,
    directions,
    partner_uniforms,
):
    """Random sequential addition with a share of particles placed in contact.

    Particles come in decreasing size. A free particle is put at a random position whose
    bounding sphere keeps `gap` voxels from every placed bounding sphere. A touching particle is put
    against a random placed partner along a random direction, at the sum of the two surfaces'
    radial extents (minus 2 %, so that the digitised particles share a face), and must keep the
    gap to all others. A uniform grid of cells as large as the largest bounding diameter keeps
    the collision test local.
    """
    n = bounding_radius.shape[0]
    n_tries = uniforms.shape[1]
    centers = np.zeros((n, 3))
    placed = np.zeros(n, dtype=np.bool_)
    touching = np.zeros(n, dtype=np.bool_)
    cell = 2.0 * bounding_radius.max() + gap + 1e-6
    dims = np.empty(3, dtype=np.int64)
    for a in range(3):
        dims[a] = max(1, int(np.ceil(domain[a] / cell)) + 2)
    heads = -np.ones(dims[0] * dims[1] * dims[2], dtype=np.int64)
    nexts = -np.ones(n, dtype=np.int64)
    placed_list = np.empty(n, dtype=np.int64)
    n_placed = 0
    for i in range(n):
        for t in range(n_tries):
            candidate = np.empty(3)
            partner = -1
            if want_touch[i] and n_placed > 0 and t < n_tries // 2:
                partner = placed_list[min(int(partner_uniforms[i, t] * n_placed), n_placed - 1)]
                w = directions[i, t]
                reach = _radial_extent(rotations[partner], inverse_axes[partner], bump_directions[partner], bump_amplitudes[partner], facet_normals[partner], facet_distances[partner], w)
                back = np.empty(3)
                for a in range(3):
                    back[a] = -w[a]
                reach += _radial_extent(rotations[i], inverse_axes[i], bump_directions[i], bump_amplitudes[i], facet_normals[i], facet_distances[i], back)
                for a in range(3):
                    candidate[a] = centers[partner, a] + 0.98 * reach * w[a]
            else:
                for a in range(3):
                    candidate[a] = uniforms[i, t, a] * domain[a] - 0.5
            # inside the domain (centre) and the pillar (centre)
            ok = True
            for a in range(3):
                if candidate[a] < -0.5 or candidate[a] > domain[a] - 0.5:
                    ok = False
            if ok and pillar[0] > 0:
                dy = candidate[1] - pillar[1]
                dx = candidate[2] - pillar[2]
                if dy * dy + dx * dx > pillar[0] * pillar[0]:
                    ok = False
            if not ok:
                continue
            c = np.empty(3, dtype=np.int64)
            for a in range(3):
                c[a] = int((candidate[a] + 0.5) / cell) + 1
            for dz in range(-1, 2):
                for dy in range(-1, 2):
                    for dx in range(-1, 2):
                        if not ok:
                            break
                        cz, cy, cx = c[0] + dz, c[1] + dy, c[2] + dx
                        if cz < 0 or cy < 0 or cx < 0 or cz >= dims[0] or cy >= dims[1] or cx >= dims[2]:
                            continue
                        j = heads[(cz * dims[1] + cy) * dims[2] + cx]
                        while j >= 0:
                            if j != partner:
                                d2 = 0.0
                                for a in range(3):
                                    d2 += (candidate[a] - centers[j, a]) ** 2
                                limit = bounding_radius[i] + bounding_radius[j] + gap
                                if d2 < limit * limit:
                                    # bounding spheres overlap: compare the surfaces along the
                                    # line of centres, with a 15 % margin for off-axis contact
                                    distance = np.sqrt(d2)
                                    w = np.empty(3)
                                    for a in range(3):
                                        w[a] = (candidate[a] - centers[j, a]) / max(distance, 1e-12)
                                    reach = _radial_extent(rotations[j], inverse_axes[j], bump_directions[j], bump_amplitudes[j], facet_normals[j], facet_distances[j], w)
                                    for a in range(3):
                                        w[a] = -w[a]
                                    reach += _radial_extent(rotations[i], inverse_axes[i], bump_directions[i], bump_amplitudes[i], facet_normals[i], facet_distances[i], w)
                                    if distance < 1.15 * reach + gap:
                                        ok = False
                                        break
                            j = nexts[j]
            if ok:
                for a in range(3):
                    centers[i, a] = candidate[a]
                placed[i] = True
                touching[i] = partner >= 0
                if partner >= 0:
                    touching[partner] = True
                key = (c[0] * dims[1] + c[1]) * dims[2] + c[2]
                nexts[i] = heads[key]
                heads[key] = i
                placed_list[n_placed] = i
                n_placed += 1
                break
    return centers, placed, touching


@numba.njit(cache=True)
def _balanced_choice(weights: np.ndarray, targets: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Assign each item (in `order`) to the class whose assigned weight lags its target share most.

    Keeps realised shares close to `targets` even when a few large items dominate.
    """
    assigned = np.zeros(targets.size)
    choice = np.empty(weights.size, dtype=np.int64)
    total = 0.0
    for index in order:
        total += weights[index]
        k = int(np.argmax(targets * total - assigned))
        choice[index] = k
        assigned[k] += weights[index]
    return choice


def generate_particles(
    spec: ParticleSpec,
    *,
    shape: tuple[int, int, int],
    voxel_size_um: float,
    pillar_radius_voxels: float | None,
    rng: np.random.Generator,
    n_bumps: int = 6,
    n_facets: int = 7,
) -> ParticleSystem:
    """Generate a particle system for a CT grid of `shape` voxels of `voxel_size_um`.

    Parameters
    ----------
    spec : ParticleSpec
        Sizes, kinds, compositions, touching share.
    shape : (P, M, N) tuple of int
        CT grid (z, y, x).
    voxel_size_um : float
        CT voxel size in micrometres.
    pillar_radius_voxels : float or None
        Radius of a cylindrical pillar along z centred in the (y, x) plane; ``None`` for a full
        box field of view.
    rng : numpy.random.Generator
        Random generator (the only source of randomness).

    Raises
    ------
    InputError
        If the largest requested particle does not fit in the grid.
    """
    shape_arr = np.asarray(shape, dtype=np.float64)
    esd_max_voxels = spec.esd_max_um / voxel_size_um
    if esd_max_voxels > 0.5 * shape_arr.min():
        raise InputError(
            f"shape {tuple(shape)} is too small for particles up to {spec.esd_max_um:g} um "
            f"({esd_max_voxels:.0f} voxels); use at least {int(np.ceil(2 * esd_max_voxels))} voxels per axis",
            source="--shape",
        )
    if pillar_radius_voxels is not None:
        domain_volume = np.pi * pillar_radius_voxels**2 * shape_arr[0]
        pillar = np.array([pillar_radius_voxels, (shape[1] - 1) / 2, (shape[2] - 1) / 2])
    else:
        domain_volume = float(np.prod(shape_arr))
        pillar = np.zeros(3)
    target_volume_um3 = spec.solids_fraction * domain_volume * voxel_size_um**3
    esd_um = sample_esd(spec, rng, target_volume_um3)
    n = esd_um.size

    # Particle kinds, balanced by volume (before placement, which drops only a few particles).
    shares = np.array([t.volume_share for t in spec.types], dtype=np.float64)
    kind = _balanced_choice(np.pi / 6 * esd_um**3, shares / shares.sum(), rng.permutation(n))

    # Shapes: base ellipsoid axes (1, b/a, c/a), random rotation, radial bumps.
    flatness = np.array([t.flatness for t in spec.types])[kind]
    flat = rng.uniform(flatness[:, 0], flatness[:, 1])
    middle = rng.uniform(flat, 1.0)
    axes_ratio = np.stack([np.ones(n), middle, flat], axis=1)
    rotations = _random_rotations(rng, n)
    bump_directions = _random_unit_vectors(rng, (n, n_bumps))
    roughness = np.array([t.roughness for t in spec.types])[kind]
    bump_amplitudes = np.clip(rng.normal(size=(n, n_bumps)) * roughness[:, None], -0.3, 0.3)
    angularity = np.array([t.angularity for t in spec.types])[kind]
    facet_normals = _random_unit_vectors(rng, (n, n_facets))
    # planes cut 0..angularity of the radius: 0 = no facet, 0.3 = strongly faceted
    facet_distances = 1.0 - angularity[:, None] * rng.uniform(0.3, 1.0, size=(n, n_facets))
    quadrature = fibonacci_sphere(_N_QUADRATURE)
    modulation = _radial_modulation(quadrature, bump_directions, bump_amplitudes, facet_normals, facet_distances)
    mean_f3 = (modulation**3).mean(axis=1)
    esd_voxels = esd_um / voxel_size_um
    scale = (esd_voxels**3 / 8.0 / (axes_ratio[:, 1] * axes_ratio[:, 2] * mean_f3)) ** (1.0 / 3.0)
    axes = axes_ratio * scale[:, None]
    surface_points = (quadrature[None, :, :] * modulation[:, :, None]) * axes[:, None, :]
    bounding_radius = 1.08 * np.linalg.norm(surface_points, axis=2).max(axis=1)

    tries = 128
    # each contact placement puts two particles in contact
    want_touch = rng.random(n) < spec.touching_share / 2
    uniforms = rng.random((n, tries, 3))
    directions = _random_unit_vectors(rng, (n, tries))
    partner_uniforms = rng.random((n, tries))
    # rotation maps particle frame -> world; the renderer needs world -> particle (transpose).
    world_to_particle = np.ascontiguousarray(np.transpose(rotations, (0, 2, 1)))
    inverse_axes = 1.0 / axes
    centers, placed, touching = _place_particles(
        bounding_radius,
        world_to_particle,
        inverse_axes,
        bump_directions,
        bump_amplitudes,
        facet_normals,
        facet_distances,
        shape_arr,
        pillar,
        float(spec.gap_voxels),
        want_touch,
        uniforms,
        directions,
        partner_uniforms,
    )
    keep = np.flatnonzero(placed)
    n_dropped = int(n - keep.size)
    centers, world_to_particle, inverse_axes = centers[keep], world_to_particle[keep], inverse_axes[keep]
    bump_directions, bump_amplitudes = bump_directions[keep], bump_amplitudes[keep]
    facet_normals, facet_distances = facet_normals[keep], facet_distances[keep]
    bounding_radius, esd_um, touching, axes = bounding_radius[keep], esd_um[keep], touching[keep], axes[keep]
    kind = kind[keep]
    n = keep.size
    volumes = np.pi / 6 * esd_um**3

    # Liberated particles by number.
    liberated_share = np.array([t.liberated_share for t in spec.types])
    liberated = rng.random(n) < liberated_share[kind]
    grain_range = np.array([t.grains for t in spec.types])
    n_seeds = np.where(
        liberated, 1, rng.integers(grain_range[kind, 0], grain_range[kind, 1] + 1)
    ).astype(np.int64)
    seed_offsets = np.concatenate([[0], np.cumsum(n_seeds)])
    seed_owner = np.repeat(np.arange(n), n_seeds)
    # Seeds uniformly inside the particle: random direction, radius f(d) * u^(1/3) * 0.9 in e-space.
    seed_dirs = _random_unit_vectors(rng, (seed_owner.size,))
    f_seed = _seed_modulation(
        seed_dirs, bump_directions[seed_owner], bump_amplitudes[seed_owner],
        facet_normals[seed_owner], facet_distances[seed_owner],
    )
    radius = 0.9 * f_seed * rng.random(seed_owner.size) ** (1.0 / 3.0)
    local = seed_dirs * radius[:, None] * axes[seed_owner]
    # particle frame -> world: R @ local = (R^T)^T @ local
    seed_positions = centers[seed_owner] + np.einsum("gji,gj->gi", world_to_particle[seed_owner], local)
    # Seed phases balanced per kind by the expected seed volume (particle volume / seeds).
    seed_phases = np.zeros(seed_owner.size, dtype=np.uint8)
    seed_weight = volumes[seed_owner] / n_seeds[seed_owner]
    for k, particle_kind in enumerate(spec.types):  # a handful of kinds
        members = np.flatnonzero(kind[seed_owner] == k)
        if members.size == 0:
            continue
        ids = np.array(sorted(particle_kind.phases), dtype=np.uint8)
        targets = np.array([particle_kind.phases[i] for i in ids], dtype=np.float64)
        choice = _balanced_choice(seed_weight[members], targets / targets.sum(), rng.permutation(members.size))
        seed_phases[members] = ids[choice]

    inclusion_centers = np.zeros((n, 3))
    inclusion_radius2 = np.zeros(n)
    inclusion_phases = np.zeros(n, dtype=np.uint8)
    lamella_normals = _random_unit_vectors(rng, (n,))
    lamella_wobble = _random_unit_vectors(rng, (n,))
    lamella_frequency = np.zeros(n)
    lamella_threshold = np.ones(n)
    lamella_phases = np.zeros(n, dtype=np.uint8)
    inclusion_draw = rng.random(n)
    lamella_draw = rng.random(n)
    inclusion_position = _random_unit_vectors(rng, (n,)) * (0.5 * rng.random(n) ** (1 / 3))[:, None]
    for k, particle_kind in enumerate(spec.types):
        members = (kind == k) & ~liberated
        if particle_kind.inclusion is not None:
            phase_id, probability, fraction = particle_kind.inclusion
            chosen = members & (inclusion_draw < probability)
            # a sphere of `fraction` of the particle volume, centred well inside
            r = (fraction * volumes[chosen] * 6 / np.pi) ** (1 / 3) / 2 / voxel_size_um
            local = inclusion_position[chosen] * axes[chosen]
            inclusion_centers[chosen] = centers[chosen] + np.einsum("nji,nj->ni", world_to_particle[chosen], local)
            inclusion_radius2[chosen] = r**2
            inclusion_phases[chosen] = phase_id
        if particle_kind.lamella is not None:
            phase_id, probability, fraction, period_um = particle_kind.lamella
            chosen = members & (lamella_draw < probability)
            lamella_frequency[chosen] = voxel_size_um / period_um
            # cos(phi) > cos(pi f) on a share f of a uniformly distributed phase
            lamella_threshold[chosen] = np.cos(np.pi * fraction)
            lamella_phases[chosen] = phase_id

    info = {
        "n_requested": int(n + n_dropped),
        "n_placed": int(n),
        "n_dropped": n_dropped,
        "n_touching_placed": int(touching.sum()),
        "n_liberated_by_construction": int(liberated.sum()),
    }
    return ParticleSystem(
        centers=centers,
        rotations=world_to_particle,
        inverse_axes=np.ascontiguousarray(inverse_axes),
        bump_directions=np.ascontiguousarray(bump_directions),
        bump_amplitudes=np.ascontiguousarray(bump_amplitudes),
        facet_normals=np.ascontiguousarray(facet_normals),
        facet_distances=np.ascontiguousarray(facet_distances),
        bounding_radius=bounding_radius,
        esd_um=esd_um,
        kind=kind,
        liberated=liberated,
        touching=touching,
        seed_offsets=seed_offsets,
        seed_positions=np.ascontiguousarray(seed_positions),
        seed_phases=seed_phases,
        inclusion_centers=inclusion_centers,
        inclusion_radius2=inclusion_radius2,
        inclusion_phases=inclusion_phases,
        lamella_normals=lamella_normals,
        lamella_wobble_directions=lamella_wobble,
        lamella_frequency=lamella_frequency,
        lamella_threshold=lamella_threshold,
        lamella_phases=lamella_phases,
        n_dropped=n_dropped,
        info=info,
    )
