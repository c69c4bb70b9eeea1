"""Make a synthetic sample (phantom -> CT + SEM sections + truth) and write it to a folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from .._shared import InputError, PlanePose, as_rng, atomic_directory, write_json_atomic
from ..phases import MATERIALS, PhaseLibrary, preset_library, tube_spectrum
from ._ct import simulate_ct, simulate_ct_image_domain
from ._particles import ParticleSystem, generate_particles
from ._presets import SynthPreset, get_preset
from ._render import MatrixTexture, PhantomRenderer
from ._sem import SectionMaterial, SimulatedSection, simulate_section

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SyntheticSample:
    """A synthetic sample in memory: CT image, truth volumes, SEM sections and how they were made.

    Attributes
    ----------
    preset : SynthPreset
    seed : int
    ct : (P, M, N) float32
        Reconstructed linear attenuation in 1/um.
    phases : (P, M, N) uint8
        Truth phase ids (0 = matrix or air).
    particles : (P, M, N) uint32
        Truth particle labels; label ``i + 1`` is particle ``i`` of `system` (not sequential when a
        particle has no voxel).
    sections : tuple of SimulatedSection
    library : PhaseLibrary
    system : ParticleSystem
    metadata : dict
        Everything ``sample.json`` records.
    """

    preset: SynthPreset
    seed: int
    ct: np.ndarray
    phases: np.ndarray
    particles: np.ndarray
    sections: tuple[SimulatedSection, ...]
    library: PhaseLibrary
    system: ParticleSystem
    metadata: dict = field(default_factory=dict)

    @property
    def voxel_size_um(self) -> float:
        return self.preset.voxel_size_um


def _attenuation_table(preset: SynthPreset, library: PhaseLibrary, max_phase_id: int):
    """Attenuation (1/um) of [matrix, phase 1..max_id] at the spectrum energies, and the weights."""
    settings = preset.ct
    if settings.energy_kev is not None:
        energies = np.array([float(settings.energy_kev)])
        weights = np.array([1.0])
    else:
        spectrum = tube_spectrum(settings.kvp, anode=settings.anode, filters_mm=settings.filters_mm)
        energies, weights = spectrum.energies_kev, spectrum.weights
    table = np.zeros((max_phase_id + 1, energies.size))
    table[0] = np.atleast_1d(MATERIALS[preset.matrix].linear_attenuation(energies))
    phase_mu = np.atleast_2d(library.linear_attenuation(energies)).reshape(len(library), energies.size)
    if settings.contrast_scale != 1.0:
        mean = phase_mu.mean(axis=0, keepdims=True)
        phase_mu = mean + settings.contrast_scale * (phase_mu - mean)
    table[library.ids.astype(np.int64)] = phase_mu
    return table, energies, weights


def _section_material(name: str, formula_holder) -> SectionMaterial:
    return SectionMaterial(
        name=name,
        weight_fractions=dict(formula_holder.weight_fractions),
        mean_atomic_number=float(formula_holder.mean_atomic_number),
        density=float(formula_holder.density),
    )


def _section_poses(preset: SynthPreset, shape, rng: np.random.Generator) -> list[tuple[PlanePose, tuple[int, int]]]:
    sem = preset.sem
    side = round(sem.coverage * min(shape[1], shape[2]) / sem.pixel_ratio)
    section_shape = (side, side)
    poses = []
    for k in range(sem.n_sections):
        # spread sections over depth, each at a random azimuth and in-plane rotation
        depth = (k + 0.5) / sem.n_sections
        center = np.array(
            [
                (0.3 + 0.4 * depth + rng.uniform(-0.05, 0.05)) * (shape[0] - 1),
                (0.5 + rng.uniform(-0.05, 0.05)) * (shape[1] - 1),
                (0.5 + rng.uniform(-0.05, 0.05)) * (shape[2] - 1),
            ]
        )
        pose = PlanePose.from_angles(
            center=center,
            shape=section_shape,
            pixel_ratio=sem.pixel_ratio,
            tilt_deg=sem.tilt_deg + rng.uniform(-sem.tilt_jitter_deg, sem.tilt_jitter_deg),
            tilt_azimuth_deg=rng.uniform(0, 360),
            inplane_deg=rng.uniform(0, 360),
            method="truth",
        )
        poses.append((pose, section_shape))
    return poses


def make_sample(
    preset: str | SynthPreset = "quick",
    *,
    shape: tuple[int, int, int] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> SyntheticSample:
    """Make a synthetic sample whose truth is known.

    Parameters
    ----------
    preset : str or SynthPreset
        ``quick``, ``talc-saxolite`` or ``li-slag`` (see :mod:`corrtomo.synth._presets`).
    shape : (P, M, N) tuple of int, optional
        CT grid size (z, y, x); particle sizes stay in micrometres.
    seed : int
        Seed of the one random generator used; the same seed gives the same sample.
    progress : callable, optional
        ``progress(stage, done, total)``.

    Returns
    -------
    SyntheticSample

    Raises
    ------
    InputError
        Unknown preset or a shape too small for the particle sizes.
    """
    preset = get_preset(preset).with_shape(shape)
    rng = as_rng(seed)
    library = preset_library(preset.phase_library)
    grid = preset.shape
    pillar_radius = 0.47 * min(grid[1], grid[2]) if preset.pillar else None
    system = generate_particles(
        preset.particles, shape=grid, voxel_size_um=preset.voxel_size_um, pillar_radius_voxels=pillar_radius, rng=rng
    )
    max_phase_id = int(library.ids.max())
    texture = MatrixTexture.random(rng, amplitude=preset.texture_amplitude)
    renderer = PhantomRenderer(
        system, grid, max_phase_id=max_phase_id, supersample=preset.supersample,
        pillar_radius_voxels=pillar_radius, texture=texture,
    )
    particles, phases, amounts = renderer.render_all(
        progress=None if progress is None else lambda done, total: progress("phantom", done, total)
    )

    table, energies, weights = _attenuation_table(preset, library, max_phase_id)
    ct_rng = np.random.default_rng(rng.integers(2**63))
    settings = preset.ct
    if settings.method == "image":
        result = simulate_ct_image_domain(
            amounts, table, weights, voxel_size_um=preset.voxel_size_um,
            photons_per_pixel=settings.photons_per_pixel, n_angles=settings.n_angles,
            psf_sigma_voxels=settings.psf_sigma_voxels, rng=ct_rng,
        )
    else:
        result = simulate_ct(
            amounts, table, weights, voxel_size_um=preset.voxel_size_um, n_angles=settings.n_angles,
            photons_per_pixel=settings.photons_per_pixel, reconstruction=settings.reconstruction,
            sirt_iterations=settings.sirt_iterations, psf_sigma_voxels=settings.psf_sigma_voxels, rng=ct_rng,
            progress=None if progress is None else lambda done, total: progress("ct", done, total),
        )
    del amounts
    ct = result.image.astype(np.float32, copy=False)

    sections = simulate_sections(preset, phases, library, renderer.inside_pillar, rng, progress=progress)

    metadata = _metadata(preset, seed, library, system, particles, phases, result, energies, weights, sections)
    return SyntheticSample(
        preset=preset, seed=int(seed), ct=ct, phases=phases, particles=particles, sections=tuple(sections),
        library=library, system=system, metadata=metadata,
    )


def simulate_sections(preset: SynthPreset, phases: np.ndarray, library: PhaseLibrary, inside_sample, rng,
                      *, progress: Progress | None = None) -> list:
    """The SEM sections of a rendered phantom: poses drawn as the preset says, BSE + EDS simulated."""
    materials = {int(p.id): _section_material(p.name, p) for p in library}
    matrix = _section_material(preset.matrix, MATERIALS[preset.matrix])
    sections = []
    for k, (pose, section_shape) in enumerate(_section_poses(preset, phases.shape, rng)):
        section = simulate_section(
            phases, pose, section_shape, materials=materials, matrix=matrix,
            inside_sample=inside_sample, pixel_size_um=preset.sem.pixel_ratio * preset.voxel_size_um,
            beam_kev=preset.sem.beam_kev, bse_dose=preset.sem.bse_dose, eds_counts=preset.sem.eds_counts,
            name=f"section{k + 1:02d}", rng=rng,
        )
        sections.append(section)
        if progress is not None:
            progress("sem", k + 1, preset.sem.n_sections)
    return sections


def write_sections(folder: Path, sections) -> None:
    """Write SEM sections as ``folder/<name>/{bse.tif, eds/<Element>.tif, mineral_map.tif, pose.json}``."""
    from ..io import write_image2d

    for section in sections:
        where = folder / section.name
        write_image2d(where / "bse.tif", section.bse)
        write_image2d(where / "mineral_map.tif", section.mineral_map)
        for element, counts in section.eds.items():
            write_image2d(where / "eds" / f"{element}.tif", counts)
        pose = PlanePose(
            origin=section.pose.origin, u=section.pose.u, v=section.pose.v, score=None, method="truth",
            extra={"shape": list(section.mineral_map.shape), "pixel_size_um": section.pixel_size_um},
        )
        pose.save(where / "pose.json")


def touching_particle_share(particles: np.ndarray) -> float:
    """Share of particles that share a face (6-neighbourhood) with another particle."""
    touching: set[int] = set()
    pairs = []
    for axis in range(3):
        a = np.moveaxis(particles, axis, 0)[:-1].ravel()
        b = np.moveaxis(particles, axis, 0)[1:].ravel()
        contact = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.concatenate([a[contact], b[contact]]))
    touching = np.unique(np.concatenate(pairs))
    n = np.unique(particles).size - (1 if (particles == 0).any() else 0)
    return float(touching.size / max(n, 1))


def _channel_values(library: PhaseLibrary, values: np.ndarray) -> dict[str, float]:
    """Name the per-channel values of [matrix, phase 1..max_id]."""
    names = {0: "matrix", **{int(i): library.name_of(int(i)) for i in library.ids}}
    return {names[i]: float(v) for i, v in enumerate(np.ravel(values)) if i in names}


def grey_value_statistics(ct: np.ndarray, phases: np.ndarray, particles: np.ndarray, library: PhaseLibrary) -> dict:
    """Mean and standard deviation of the CT value (1/um) over the voxels of each truth phase."""
    keys = np.where(particles > 0, phases.astype(np.int64), 0).ravel()
    values = ct.ravel().astype(np.float64)
    n = int(library.ids.max()) + 1
    counts = np.bincount(keys, minlength=n)
    sums = np.bincount(keys, weights=values, minlength=n)
    squares = np.bincount(keys, weights=values * values, minlength=n)
    stats = {}
    for i in library.ids:
        i = int(i)
        if counts[i]:
            mean = sums[i] / counts[i]
            stats[library.name_of(i)] = {"mean": float(mean), "std": float(np.sqrt(max(squares[i] / counts[i] - mean**2, 0.0))), "voxels": int(counts[i])}
    return stats


def _metadata(preset, seed, library, system, particles, phases, ct_result, energies, weights, sections) -> dict:
    counts = np.bincount(phases[particles > 0].ravel(), minlength=int(library.ids.max()) + 1)
    total = max(int(counts.sum()), 1)
    realised = {library.name_of(int(i)): float(counts[int(i)] / total) for i in library.ids}
    expected = {library.name_of(i): float(f) for i, f in preset.particles.expected_phase_fractions().items()}
    return {
        "corrtomo_version": __version__,
        "preset": preset.name,
        "seed": int(seed),
        "shape": list(preset.shape),
        "axes": "zyx",
        "voxel_size_um": preset.voxel_size_um,
        "ct_units": "linear attenuation, 1/um",
        "matrix": {"name": preset.matrix, "formula": MATERIALS[preset.matrix].formula, "density": MATERIALS[preset.matrix].density},
        "phase_library": library.to_dict(),
        "preset_parameters": preset.to_dict(),
        "ct": {
            "energies_kev": energies.tolist(),
            "spectrum_weights": weights.tolist(),
            "mu_effective_per_um": _channel_values(library, ct_result.mu_effective_per_um),
            "n_angles": int(ct_result.angles_rad.size),
            "reconstruction": ct_result.reconstruction,
            "photons_per_pixel": ct_result.photons_per_pixel,
            "mean_transmission": ct_result.mean_transmission,
            "grey_value_by_phase": grey_value_statistics(ct_result.image, phases, particles, library),
        },
        "truth": {
            "n_particles": int(np.unique(particles).size - 1),
            "n_particles_generated": system.n,
            "touching_share": touching_particle_share(particles),
            "phase_volume_fractions": realised,
            "phase_volume_fractions_requested": expected,
            "solids_fraction": float((particles > 0).mean()),
            "generator": system.info,
        },
        "sections": [
            {
                "name": s.name,
                "shape": list(s.mineral_map.shape),
                "pixel_size_um": s.pixel_size_um,
                "elements": list(s.eds),
                **s.info,
            }
            for s in sections
        ],
    }


def write_sample(sample: SyntheticSample, outdir: str | os.PathLike, *, preview: bool = True) -> Path:
    """Write a sample as the ``corrtomo synth`` folder contract, atomically.

    Layout: ``ct.tif``, ``sample.json``, ``truth/phases.tif``, ``truth/particles.tif``,
    ``sem/<name>/{bse.tif, eds/<Element>.tif, mineral_map.tif, pose.json}`` and ``preview.png``.
    The folder is built next to `outdir` and renamed into place when complete; an existing
    `outdir` is replaced only if it is empty or a previous sample (holds ``sample.json``).
    """
    from ..io import write_tiff

    outdir = Path(outdir)
    if outdir.exists() and (not outdir.is_dir() or (any(outdir.iterdir()) and not (outdir / "sample.json").exists())):
        raise InputError("exists and is not an empty folder or a corrtomo sample; choose another OUTDIR", source=outdir)
    spacing = (sample.voxel_size_um,) * 3
    with atomic_directory(outdir) as tmp:
        write_tiff(tmp / "ct.tif", sample.ct, spacing=spacing)
        write_tiff(tmp / "truth" / "phases.tif", sample.phases, spacing=spacing)
        write_tiff(tmp / "truth" / "particles.tif", sample.particles, spacing=spacing)
        write_sections(tmp / "sem", sample.sections)
        write_json_atomic(tmp / "sample.json", sample.metadata)
        if preview:
            from ._preview import write_preview

            write_preview(sample, tmp / "preview.png")
    return outdir
