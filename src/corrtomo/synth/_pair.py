"""A twin pair across length scales: one phantom imaged by a micro-CT overview and a nano-CT pillar.

The seed paper (seeds/000, Sec. 2.2, 3.5, Fig. 12) images the same powder twice: a micro-CT
overview (about 0.7 um voxels, polychromatic tube, weak phase contrast, particles below about
3.2 um lost or merged) and nano-CT pillars (64-150 nm voxels) cut out of that sample. The pair
made here renders ONE analytic phantom on two grids:

* the **micro grid** (the phantom's own frame): a box field of view, voxel size ``d_m``;
* the **nano grid**: a pillar (cylinder along its z axis) whose voxel ``p_n`` (z, y, x) lies at
  micro position

  .. math::  p_m = s R p_n + t, \\qquad s = d_n / d_m = 1 / \\text{ratio},

  with ``R`` a rotation about the pillar axis by ``rotation_deg`` followed by a tilt of the axis
  by ``tilt_deg`` towards ``tilt_azimuth_deg``. The 4x4 matrix ``[[s R, t], [0, 1]]`` is the truth
  :class:`~corrtomo._shared.RigidTransform` (nano voxel -> micro voxel), the convention of
  stitching and :func:`corrtomo.register.register_volume`.

The phantom is analytic, so the nano volume is rendered exactly (not resampled): the particle
system is moved into the nano grid's voxel frame by the inverse similarity ``x_n = (R^T (x_m - t)) / s``
(:func:`transform_system`) and rendered there with its own super-sampling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .. import __version__
from .._shared import InputError, RigidTransform, as_rng, atomic_directory, write_json_atomic
from ..phases import PhaseLibrary, preset_library
from ._ct import simulate_ct, simulate_ct_image_domain
from ._particles import ParticleSpec, ParticleSystem, generate_particles
from ._presets import CTSettings, get_preset
from ._render import MatrixTexture, PhantomRenderer
from ._sample import _attenuation_table, simulate_sections, write_sections

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PairPreset:
    """Recipe of a micro-CT / nano-CT twin pair.

    Attributes
    ----------
    name, description : str
    phase_library, matrix : str
        Phase library preset and matrix material.
    particles : ParticleSpec
        The powder (sizes in um), generated on the micro grid.
    micro_shape : (P, M, N) tuple of int
    micro_voxel_size_um : float
    micro_ct : CTSettings
        Overview scan: polychromatic, reduced phase contrast, PSF of about one voxel.
    nano_shape : (P, M, N) tuple of int
    nano_ct : CTSettings
        Pillar scan (quasi-monochromatic 5.4 keV).
    scale_ratio_range : (float, float)
        Range of ``micro_voxel_size_um / nano_voxel_size_um`` drawn when no ratio is given.
    max_tilt_deg : float
        Largest pillar-axis tilt drawn when no tilt is given.
    micro_supersample, nano_supersample : int
    texture_amplitude : float
    """

    name: str
    description: str
    phase_library: str
    matrix: str
    particles: ParticleSpec
    micro_shape: tuple[int, int, int]
    micro_voxel_size_um: float
    micro_ct: CTSettings
    nano_shape: tuple[int, int, int]
    nano_ct: CTSettings
    scale_ratio_range: tuple[float, float] = (4.0, 10.0)
    max_tilt_deg: float = 10.0
    micro_supersample: int = 2
    nano_supersample: int = 2
    texture_amplitude: float = 0.08

    def to_dict(self) -> dict:
        return asdict(self)


_TALC = get_preset("talc-saxolite")

PAIR_PRESETS: dict[str, PairPreset] = {
    "talc-micro-nano": PairPreset(
        name="talc-micro-nano",
        description=(
            "talc-saxolite powder: micro-CT overview (0.6 um voxels, 40 kVp W tube + 0.1 mm Al, half the phase "
            "contrast, 1-voxel PSF) and a nano-CT pillar (5.4 keV, 4-10x finer voxels) inside it"
        ),
        phase_library="talc-saxolite",
        matrix="epoxy",
        particles=replace(_TALC.particles, esd_median_um=1.4, esd_sigma=0.55, esd_min_um=0.4, esd_max_um=6.0, solids_fraction=0.25),
        micro_shape=(112, 112, 112),
        micro_voxel_size_um=0.6,
        micro_ct=CTSettings(
            energy_kev=None, kvp=40.0, anode="W", filters_mm={"Al": 0.1}, photons_per_pixel=5e5,
            psf_sigma_voxels=1.0, reconstruction="fbp", contrast_scale=0.5,
        ),
        nano_shape=(128, 128, 128),
        nano_ct=replace(_TALC.ct, photons_per_pixel=1e4, psf_sigma_voxels=0.7, n_angles=160),
    ),
}


def get_pair_preset(name: str | PairPreset) -> PairPreset:
    """Return a twin-pair preset by name (``talc-micro-nano``)."""
    if isinstance(name, PairPreset):
        return name
    try:
        return PAIR_PRESETS[name]
    except KeyError:
        raise InputError(f"unknown pair preset {name!r}; known: {', '.join(PAIR_PRESETS)}", source="--preset") from None


def pose_rotation(rotation_deg: float, tilt_deg: float = 0.0, tilt_azimuth_deg: float = 0.0) -> np.ndarray:
    """Rotation (3, 3) acting on (z, y, x): spin about z by `rotation_deg`, then tilt the z axis.

    ``R = T(tilt, azimuth) @ Z(rotation)`` where ``Z`` rotates the (y, x) plane and ``T`` turns the
    z axis by `tilt_deg` towards the in-plane direction ``(sin a, cos a)`` (y, x) of `tilt_azimuth_deg`
    (Rodrigues' formula about the horizontal axis ``z x that direction``).
    """
    theta = np.deg2rad(rotation_deg)
    c, s = np.cos(theta), np.sin(theta)
    spin = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    azimuth = np.deg2rad(tilt_azimuth_deg)
    direction = np.array([0.0, np.sin(azimuth), np.cos(azimuth)])
    axis = np.cross([1.0, 0.0, 0.0], direction)
    axis /= np.linalg.norm(axis)
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    phi = np.deg2rad(tilt_deg)
    tilt = np.eye(3) + np.sin(phi) * k + (1.0 - np.cos(phi)) * (k @ k)
    return tilt @ spin


def transform_system(system: ParticleSystem, matrix: np.ndarray, *, keep: np.ndarray | None = None) -> ParticleSystem:
    """Express a particle system in the voxel frame of another grid.

    Parameters
    ----------
    system : ParticleSystem
        Particles in the old (world) frame.
    matrix : (4, 4) array_like
        Similarity ``x_old = s R x_new + t`` (new-grid voxel -> old-grid voxel), ``R`` a rotation.
    keep : (k,) int array, optional
        Indices of the particles to keep (default all).

    Returns
    -------
    ParticleSystem
        In the new frame: world points ``c`` (centres, Voronoi seeds, inclusion centres) map to
        ``R^T (c - t) / s``; the world -> particle rotations become ``Q R`` and the inverse semi-axes
        ``s / a`` (so that ``e = Q (x_old - c) / a = Q R (x_new - c_new) s / a``); particle-frame
        arrays (bumps, facets) are unchanged; lengths in voxels scale by ``1 / s`` (bounding radius,
        inclusion radius); lamella carriers ``cos(2 pi f n . x_old)`` become ``n' = R^T n``,
        ``f' = f s`` and phase offsets ``f (n . t)`` (likewise for the wobble direction).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    linear, t = matrix[:3, :3], matrix[:3, 3]
    s = float(np.cbrt(np.linalg.det(linear)))
    rotation = linear / s
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-8) or s <= 0:
        raise InputError("transform_system needs a similarity (scaled rotation) matrix")
    idx = np.arange(system.n) if keep is None else np.asarray(keep, dtype=np.int64)

    def points(p: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((p - t) @ rotation / s)  # R^T (p - t) / s, row-wise

    offsets_old = system.seed_offsets
    n_seeds = np.diff(offsets_old)[idx]
    seed_index = np.repeat(offsets_old[idx], n_seeds) + (np.arange(n_seeds.sum()) - np.repeat(np.cumsum(n_seeds) - n_seeds, n_seeds))
    old_offsets = np.zeros((system.n, 2)) if system.lamella_offsets is None else system.lamella_offsets
    frequency = system.lamella_frequency[idx]
    normals, wobble = system.lamella_normals[idx], system.lamella_wobble_directions[idx]
    lamella_offsets = np.stack(
        [old_offsets[idx, 0] + frequency * (normals @ t), old_offsets[idx, 1] + frequency * (wobble @ t)], axis=1
    )
    return replace(
        system,
        centers=points(system.centers[idx]),
        rotations=np.ascontiguousarray(system.rotations[idx] @ rotation),
        inverse_axes=np.ascontiguousarray(system.inverse_axes[idx] * s),
        bump_directions=system.bump_directions[idx],
        bump_amplitudes=system.bump_amplitudes[idx],
        facet_normals=system.facet_normals[idx],
        facet_distances=system.facet_distances[idx],
        bounding_radius=system.bounding_radius[idx] / s,
        esd_um=system.esd_um[idx],
        kind=system.kind[idx],
        liberated=system.liberated[idx],
        touching=system.touching[idx],
        seed_offsets=np.concatenate([[0], np.cumsum(n_seeds)]).astype(np.int64),
        seed_positions=points(system.seed_positions[seed_index]),
        seed_phases=system.seed_phases[seed_index],
        inclusion_centers=points(system.inclusion_centers[idx]),
        inclusion_radius2=system.inclusion_radius2[idx] / s**2,
        inclusion_phases=system.inclusion_phases[idx],
        lamella_normals=np.ascontiguousarray(normals @ rotation),
        lamella_wobble_directions=np.ascontiguousarray(wobble @ rotation),
        lamella_frequency=frequency * s,
        lamella_threshold=system.lamella_threshold[idx],
        lamella_phases=system.lamella_phases[idx],
        lamella_offsets=lamella_offsets,
        info={**system.info, "frame_transform": matrix.tolist()},
    )


def transform_texture(texture: MatrixTexture, matrix: np.ndarray) -> MatrixTexture:
    """The matrix texture in a new frame ``x_old = M x_new + t``: ``k' = M^T k``, ``phi' = phi + k . t``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return MatrixTexture(
        wave_vectors=np.ascontiguousarray(texture.wave_vectors @ matrix[:3, :3]),
        phases=texture.phases + texture.wave_vectors @ matrix[:3, 3],
        amplitude=texture.amplitude,
    )


def particles_in_box(system: ParticleSystem, matrix: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Indices of the particles whose bounding sphere reaches the box of a grid placed by `matrix`.

    The new grid's box ``[-0.5, shape - 0.5]`` is mapped to the old frame; a particle is kept when its
    centre, mapped to the new frame, lies within ``bounding_radius / s`` (+1 voxel) of that box.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    s = float(np.cbrt(np.linalg.det(matrix[:3, :3])))
    centers = (system.centers - matrix[:3, 3]) @ (matrix[:3, :3] / s) / s
    low = -0.5 - system.bounding_radius[:, None] / s - 1.0
    high = np.asarray(shape, dtype=np.float64) - 0.5 + system.bounding_radius[:, None] / s + 1.0
    return np.flatnonzero(np.all((centers >= low) & (centers <= high), axis=1))


@dataclass(frozen=True)
class ScalePair:
    """A micro-CT overview and a nano-CT pillar of one phantom, with the truth placement.

    Attributes
    ----------
    micro_ct, nano_ct : float32 volumes (z, y, x), reconstructed attenuation in 1/um.
    micro_phases, nano_phases : uint8 truth phase ids.
    micro_particles, nano_particles : uint32 truth labels; the same particle has the same label in
        both volumes (label ``i + 1`` is particle ``i`` of `system`).
    micro_voxel_size_um, nano_voxel_size_um : float
    transform : RigidTransform
        Truth 4x4, nano voxel (z, y, x) -> micro voxel.
    nano_pillar_radius_voxels : float
        Radius of the nano pillar (air outside), in nano voxels.
    system : ParticleSystem
        The phantom in the micro frame.
    library : PhaseLibrary
    metadata : dict
    """

    micro_ct: np.ndarray
    micro_phases: np.ndarray
    micro_particles: np.ndarray
    nano_ct: np.ndarray
    nano_phases: np.ndarray
    nano_particles: np.ndarray
    micro_voxel_size_um: float
    nano_voxel_size_um: float
    transform: RigidTransform
    nano_pillar_radius_voxels: float
    system: ParticleSystem
    library: PhaseLibrary
    metadata: dict = field(default_factory=dict)
    nano_sections: tuple = ()  # simulated SEM sections of the nano volume (as make_sample's)

    @property
    def scale_ratio(self) -> float:
        """Micro voxel size over nano voxel size."""
        return self.micro_voxel_size_um / self.nano_voxel_size_um

    def nano_corners_in_micro(self) -> np.ndarray:
        """Micro voxel positions (8, 3) of the nano volume's corner voxel centres."""
        return self.transform.corners(self.nano_ct.shape)

    def nano_region_mask(self) -> np.ndarray:
        """Micro-grid mask of the voxels whose centre lies inside the nano pillar (cylinder)."""
        grid = np.indices(self.micro_ct.shape, dtype=np.float64).reshape(3, -1).T
        nano = self.transform.inverse().apply(grid)
        shape = np.asarray(self.nano_ct.shape, dtype=np.float64)
        cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
        inside = (nano[:, 0] >= -0.5) & (nano[:, 0] <= shape[0] - 0.5)
        inside &= (nano[:, 1] - cy) ** 2 + (nano[:, 2] - cx) ** 2 <= self.nano_pillar_radius_voxels**2
        return inside.reshape(self.micro_ct.shape)


def _draw_placement(preset: PairPreset, rng: np.random.Generator, scale_ratio, rotation_deg, tilt_deg, tilt_azimuth_deg, center):
    low, high = preset.scale_ratio_range
    ratio = float(rng.uniform(low, high)) if scale_ratio is None else float(scale_ratio)
    rotation_deg = float(rng.uniform(0.0, 360.0)) if rotation_deg is None else float(rotation_deg)
    tilt_deg = float(rng.uniform(0.0, preset.max_tilt_deg)) if tilt_deg is None else float(tilt_deg)
    tilt_azimuth_deg = float(rng.uniform(0.0, 360.0)) if tilt_azimuth_deg is None else float(tilt_azimuth_deg)
    if not np.isfinite(ratio) or ratio <= 1.0:
        raise InputError(f"scale_ratio must be > 1 (micro voxel over nano voxel), got {ratio}", source="--scale-ratio")
    s = 1.0 / ratio
    rotation = pose_rotation(rotation_deg, tilt_deg, tilt_azimuth_deg)
    nano_half = (np.asarray(preset.nano_shape, dtype=np.float64) - 1.0) / 2.0
    # micro half-extent of the rotated nano box (its corners relative to its centre)
    bits = (np.arange(8)[:, None] >> np.arange(3)[::-1][None, :]) & 1
    corners = (bits * 2.0 - 1.0) * nano_half
    reach = np.abs(corners @ rotation.T * s).max(axis=0)
    micro = np.asarray(preset.micro_shape, dtype=np.float64)
    lo, hi = reach + 1.0, micro - 2.0 - reach
    if np.any(hi < lo):
        raise InputError(
            f"a nano volume of {preset.nano_shape} voxels at scale ratio {ratio:g} does not fit in the micro volume "
            f"of {preset.micro_shape} voxels",
            source="--scale-ratio",
        )
    if center is None:
        center = rng.uniform(lo, hi)
    center = np.asarray(center, dtype=np.float64)
    if center.shape != (3,) or np.any(center < lo) or np.any(center > hi):
        raise InputError(f"nano centre {center.tolist()} puts the nano volume outside the micro volume", source="center")
    translation = center - s * rotation @ nano_half
    return ratio, rotation_deg, tilt_deg, tilt_azimuth_deg, RigidTransform.from_parts(rotation, translation, s)


def _scan(amounts, table, weights, settings: CTSettings, voxel_size_um: float, rng, progress=None):
    if settings.method == "image":
        return simulate_ct_image_domain(
            amounts, table, weights, voxel_size_um=voxel_size_um, photons_per_pixel=settings.photons_per_pixel,
            n_angles=settings.n_angles, psf_sigma_voxels=settings.psf_sigma_voxels, rng=rng,
        )
    return simulate_ct(
        amounts, table, weights, voxel_size_um=voxel_size_um, n_angles=settings.n_angles,
        photons_per_pixel=settings.photons_per_pixel, reconstruction=settings.reconstruction,
        sirt_iterations=settings.sirt_iterations, psf_sigma_voxels=settings.psf_sigma_voxels, rng=rng, progress=progress,
    )


def make_scale_pair(
    preset: str | PairPreset = "talc-micro-nano",
    *,
    seed: int = 0,
    scale_ratio: float | None = None,
    rotation_deg: float | None = None,
    tilt_deg: float | None = None,
    tilt_azimuth_deg: float | None = None,
    center_voxels: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ScalePair:
    """Render one phantom as a micro-CT overview and a nano-CT pillar placed inside it.

    Parameters
    ----------
    preset : str or PairPreset
        ``talc-micro-nano``.
    seed : int
        Seed of the one random generator (phantom, placement, noise).
    scale_ratio : float, optional
        ``micro_voxel_size_um / nano_voxel_size_um``; drawn from the preset's range (4-10) if omitted.
    rotation_deg : float, optional
        Rotation of the nano grid about its pillar (z) axis; uniform 0-360 if omitted.
    tilt_deg, tilt_azimuth_deg : float, optional
        Tilt of the pillar axis from the micro z axis (uniform 0-10 degrees) and its direction.
    center_voxels : (3,) array_like, optional
        Micro voxel position of the nano volume's centre; uniform over the positions keeping the
        whole nano box inside the micro box if omitted.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    ScalePair
        Both scans, their truth, and the truth transform ``p_m = s R p_n + t`` (nano voxel ->
        micro voxel, ``s = 1 / scale_ratio``).

    Raises
    ------
    InputError
        Unknown preset, a ratio <= 1, or a placement that does not fit in the micro volume.
    """
    preset = get_pair_preset(preset)
    rng = as_rng(seed)
    ratio, rotation_deg, tilt_deg, tilt_azimuth_deg, transform = _draw_placement(
        preset, rng, scale_ratio, rotation_deg, tilt_deg, tilt_azimuth_deg, center_voxels
    )
    library = preset_library(preset.phase_library)
    max_phase_id = int(library.ids.max())
    micro_voxel = float(preset.micro_voxel_size_um)
    nano_voxel = micro_voxel / ratio
    system = generate_particles(
        preset.particles, shape=preset.micro_shape, voxel_size_um=micro_voxel, pillar_radius_voxels=None, rng=rng
    )
    texture = MatrixTexture.random(rng, amplitude=preset.texture_amplitude)

    def stage(name):
        return None if progress is None else (lambda done, total: progress(name, done, total))

    micro_renderer = PhantomRenderer(
        system, preset.micro_shape, max_phase_id=max_phase_id, supersample=preset.micro_supersample, texture=texture
    )
    micro_particles, micro_phases, micro_amounts = micro_renderer.render_all(progress=stage("micro phantom"))

    keep = particles_in_box(system, transform.matrix, preset.nano_shape)
    nano_system = transform_system(system, transform.matrix, keep=keep)
    nano_radius = 0.47 * min(preset.nano_shape[1], preset.nano_shape[2])
    nano_renderer = PhantomRenderer(
        nano_system, preset.nano_shape, max_phase_id=max_phase_id, supersample=preset.nano_supersample,
        pillar_radius_voxels=nano_radius, texture=transform_texture(texture, transform.matrix),
    )
    local_labels, nano_phases, nano_amounts = nano_renderer.render_all(progress=stage("nano phantom"))
    # back to the phantom's labels: local label j + 1 is particle keep[j]
    lookup = np.concatenate([[0], keep + 1]).astype(np.uint32)
    nano_particles = lookup[local_labels]

    micro_table, micro_energies, micro_weights = _attenuation_table(
        replace(_TALC, matrix=preset.matrix, ct=preset.micro_ct), library, max_phase_id
    )
    nano_table, nano_energies, nano_weights = _attenuation_table(
        replace(_TALC, matrix=preset.matrix, ct=preset.nano_ct), library, max_phase_id
    )
    micro_result = _scan(micro_amounts, micro_table, micro_weights, preset.micro_ct, micro_voxel,
                         np.random.default_rng(rng.integers(2**63)), stage("micro ct"))
    del micro_amounts
    nano_result = _scan(nano_amounts, nano_table, nano_weights, preset.nano_ct, nano_voxel,
                        np.random.default_rng(rng.integers(2**63)), stage("nano ct"))
    del nano_amounts
    # FIB-SEM sections of the nano pillar, as the talc-saxolite twin makes them (their own stream,
    # drawn last, so the volumes do not depend on them)
    section_preset = replace(_TALC, matrix=preset.matrix, voxel_size_um=nano_voxel, shape=tuple(preset.nano_shape))
    nano_sections = simulate_sections(section_preset, nano_phases, library, nano_renderer.inside_pillar,
                                      np.random.default_rng(rng.integers(2**63)))
    metadata = {
        "corrtomo_version": __version__,
        "preset": preset.name,
        "seed": int(seed),
        "axes": "zyx",
        "scale_ratio": ratio,
        "rotation_deg": rotation_deg,
        "tilt_deg": tilt_deg,
        "tilt_azimuth_deg": tilt_azimuth_deg,
        "micro": {
            "shape": list(preset.micro_shape), "voxel_size_um": micro_voxel,
            "energies_kev": micro_energies.tolist(), "spectrum_weights": micro_weights.tolist(),
            "n_particles": int(np.unique(micro_particles).size - 1),
        },
        "nano": {
            "shape": list(preset.nano_shape), "voxel_size_um": nano_voxel, "pillar_radius_voxels": nano_radius,
            "sections": [{"name": x.name, "pixel_size_um": x.pixel_size_um, "shape": list(x.mineral_map.shape)}
                         for x in nano_sections],
            "energies_kev": nano_energies.tolist(), "n_particles": int(np.unique(nano_particles).size - 1),
        },
        "transform": {**transform.to_dict(), "from": "nano voxel", "to": "micro voxel", "scale": 1.0 / ratio},
        "preset_parameters": preset.to_dict(),
    }
    return ScalePair(
        micro_ct=micro_result.image.astype(np.float32, copy=False),
        micro_phases=micro_phases,
        micro_particles=micro_particles,
        nano_ct=nano_result.image.astype(np.float32, copy=False),
        nano_phases=nano_phases,
        nano_particles=nano_particles,
        micro_voxel_size_um=micro_voxel,
        nano_voxel_size_um=nano_voxel,
        transform=transform,
        nano_pillar_radius_voxels=nano_radius,
        system=system,
        library=library,
        metadata=metadata,
        nano_sections=tuple(nano_sections),
    )


def write_scale_pair(pair: ScalePair, outdir: str | os.PathLike) -> Path:
    """Write a twin pair: ``micro/ct.tif``, ``micro/truth/{phases,particles}.tif``, the same under
    ``nano/`` with its SEM sections in ``nano/sem/<name>/`` (as ``write_sample``),
    ``truth_transform.json`` (4x4 nano voxel -> micro voxel) and ``pair.json``; atomically."""
    from ..io import write_tiff

    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir()) and not (outdir / "pair.json").exists())):
        raise InputError("exists and is not an empty folder or a corrtomo pair; choose another OUTDIR", source=outdir)
    with atomic_directory(outdir) as tmp:
        for name, ct, phases, particles, voxel in (
            ("micro", pair.micro_ct, pair.micro_phases, pair.micro_particles, pair.micro_voxel_size_um),
            ("nano", pair.nano_ct, pair.nano_phases, pair.nano_particles, pair.nano_voxel_size_um),
        ):
            spacing = (voxel,) * 3
            write_tiff(tmp / name / "ct.tif", ct, spacing=spacing)
            write_tiff(tmp / name / "truth" / "phases.tif", phases, spacing=spacing)
            write_tiff(tmp / name / "truth" / "particles.tif", particles, spacing=spacing)
        write_sections(tmp / "nano" / "sem", pair.nano_sections)
        truth = {
            **pair.transform.to_dict(),
            "from": "nano voxel (z, y, x)",
            "to": "micro voxel (z, y, x)",
            "scale": pair.transform.scale,
            "corners_micro_voxels": pair.nano_corners_in_micro().tolist(),
            "method": "truth",
        }
        write_json_atomic(tmp / "truth_transform.json", truth)
        write_json_atomic(tmp / "pair.json", pair.metadata)
    return outdir
