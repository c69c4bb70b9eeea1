"""Simulated SEM sections: BSE images and EDS element maps of a plane through the phantom.

Physics (one pixel = one beam position):

* BSE: the backscatter coefficient of a compound follows its mass-weighted mean atomic number
  ``Z``, ``eta(Z) = -0.0254 + 0.016 Z - 1.86e-4 Z^2 + 8.3e-7 Z^3`` (Reuter 1972); the detected
  signal is Poisson with mean ``dose * eta``.
* EDS: the characteristic counts of element ``e`` are Poisson with mean
  ``counts * sum_m w_m c_{m,e} k_e`` where ``c_{m,e}`` is the weight fraction of ``e`` in the
  material ``m`` under the beam (from its formula), ``w_m`` the share of material ``m`` in the
  interaction volume and ``k_e`` a detector efficiency (0 for H-Be, which EDS cannot see, 0.5 for the
  soft lines of B-F, 1 otherwise).
* Interaction volume: material shares are blurred with a Gaussian of standard deviation
  ``0.25 R_KO`` (EDS) and ``0.1 R_KO`` (BSE), with the Kanaya-Okayama range
  ``R_KO = 0.0276 A E^1.67 / (Z^0.889 rho)`` micrometres (A in g/mol, E in keV, rho in g/cm^3).

References
----------
Reuter, W. (1972). Proc. 6th Int. Conf. X-ray Optics and Microanalysis, 121.
Kanaya, K., Okayama, S. (1972). J. Phys. D 5, 43.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .._shared import PlanePose, sample_plane

# Atomic numbers of the elements EDS maps are made for (enough for rock-forming minerals and slags).
_LIGHTEST_DETECTABLE_Z = 5


def backscatter_coefficient(mean_atomic_number: np.ndarray | float) -> np.ndarray:
    """Backscattered-electron coefficient from the mean atomic number (Reuter 1972)."""
    z = np.asarray(mean_atomic_number, dtype=np.float64)
    return -0.0254 + 0.016 * z - 1.86e-4 * z**2 + 8.3e-7 * z**3


def kanaya_okayama_range_um(beam_kev: float, molar_mass: float, mean_atomic_number: float, density: float) -> float:
    """Electron range in micrometres (Kanaya & Okayama 1972)."""
    return 0.0276 * molar_mass * beam_kev**1.67 / (mean_atomic_number**0.889 * density)


def eds_efficiency(atomic_number: int) -> float:
    """Relative detection efficiency of an element's characteristic line (see module notes)."""
    if atomic_number < _LIGHTEST_DETECTABLE_Z:
        return 0.0
    return 0.5 if atomic_number <= 9 else 1.0


@dataclass(frozen=True)
class SectionMaterial:
    """A material seen by the electron beam: composition and density."""

    name: str
    weight_fractions: dict[str, float]
    mean_atomic_number: float
    density: float


@dataclass(frozen=True)
class SimulatedSection:
    """One simulated SEM section with its truth.

    Attributes
    ----------
    name : str
    pose : PlanePose
        Truth pose in CT voxel coordinates.
    mineral_map : (rows, columns) uint8
        Truth phase id per pixel (0 = matrix, air or outside the volume).
    bse : (rows, columns) uint16
        Backscattered-electron counts.
    eds : dict[str, (rows, columns) uint16]
        Characteristic X-ray counts per element symbol.
    inside : (rows, columns) bool
        Pixels whose position lies inside the CT volume.
    pixel_size_um : float
    """

    name: str
    pose: PlanePose
    mineral_map: np.ndarray
    bse: np.ndarray
    eds: dict[str, np.ndarray]
    inside: np.ndarray
    pixel_size_um: float
    info: dict = field(default_factory=dict)


def simulate_section(
    truth_phases: np.ndarray,
    pose: PlanePose,
    shape: tuple[int, int],
    *,
    materials: dict[int, SectionMaterial],
    matrix: SectionMaterial,
    inside_sample,
    pixel_size_um: float,
    beam_kev: float = 5.0,
    bse_dose: float = 400.0,
    eds_counts: float = 150.0,
    name: str = "section",
    rng: np.random.Generator,
) -> SimulatedSection:
    """Simulate the BSE image and EDS maps of a plane through a truth phase volume.

    Parameters
    ----------
    truth_phases : (P, M, N) uint8
        Truth phase ids on the CT grid (0 = no mineral).
    pose : PlanePose
        Where the section lies (voxel coordinates).
    shape : (rows, columns)
        Section size in pixels.
    materials : dict[int, SectionMaterial]
        Composition of every phase id.
    matrix : SectionMaterial
        The embedding (epoxy) seen where no mineral is.
    inside_sample : callable
        ``inside_sample(points)`` -> bool array: whether (..., 3) voxel positions are sample
        (matrix or particle) rather than vacuum (outside a pillar).
    pixel_size_um : float
        Section pixel size in micrometres.
    beam_kev, bse_dose, eds_counts : float
        Beam energy, mean BSE counts for ``eta = 1``, and EDS counts scale.
    rng : numpy.random.Generator

    Returns
    -------
    SimulatedSection
    """
    mineral_map = sample_plane(truth_phases, pose, shape, order=0, cval=0).astype(np.uint8)
    points = pose.points(shape)
    volume_shape = np.asarray(truth_phases.shape)
    inside = np.all((np.rint(points) >= 0) & (np.rint(points) < volume_shape), axis=-1)
    sample = inside_sample(points)

    # Material index per pixel: 0 vacuum, 1 matrix, 2.. phases.
    phase_ids = sorted(materials)
    all_materials = [matrix] + [materials[i] for i in phase_ids]
    index = np.where(sample, 1, 0).astype(np.int64)
    lookup = np.zeros(256, dtype=np.int64)
    lookup[np.asarray(phase_ids, dtype=np.int64)] = np.arange(2, len(phase_ids) + 2)
    index = np.where(mineral_map > 0, lookup[mineral_map], index)

    from xraydb import atomic_mass, atomic_number

    def _molar_mass(material: SectionMaterial) -> float:
        # mean atomic mass per atom weighted by mass fractions -> use harmonic mean (A/Z ~ 2)
        return float(1.0 / sum(w / atomic_mass(e) for e, w in material.weight_fractions.items()))

    ranges = [
        kanaya_okayama_range_um(beam_kev, _molar_mass(m), m.mean_atomic_number, m.density) for m in all_materials[1:]
    ]
    typical_range = float(np.median(ranges))
    sigma_eds = 0.25 * typical_range / pixel_size_um
    sigma_bse = 0.1 * typical_range / pixel_size_um

    n_materials = len(all_materials) + 1  # + vacuum
    shares = np.zeros((n_materials, *shape), dtype=np.float32)
    for m in range(n_materials):  # a handful of materials, each one vectorised over the section
        shares[m] = index == m
    eta = np.concatenate([[0.0], backscatter_coefficient([m.mean_atomic_number for m in all_materials])])
    bse_shares = ndimage.gaussian_filter(shares, sigma=(0, sigma_bse, sigma_bse), mode="nearest")
    bse_mean = bse_dose * np.tensordot(eta, bse_shares, axes=1)
    bse = rng.poisson(np.clip(bse_mean, 0, None)).astype(np.uint16)

    elements = sorted(
        {e for m in all_materials for e in m.weight_fractions if atomic_number(e) >= _LIGHTEST_DETECTABLE_Z},
        key=atomic_number,
    )
    composition = np.zeros((n_materials, len(elements)))
    for m, material in enumerate(all_materials, start=1):
        for k, element in enumerate(elements):
            composition[m, k] = material.weight_fractions.get(element, 0.0) * eds_efficiency(atomic_number(element))
    eds_shares = ndimage.gaussian_filter(shares, sigma=(0, sigma_eds, sigma_eds), mode="nearest")
    eds_mean = eds_counts * np.tensordot(composition.T, eds_shares, axes=1)  # (n_elements, rows, cols)
    eds = {
        element: rng.poisson(np.clip(eds_mean[k], 0, None)).astype(np.uint16) for k, element in enumerate(elements)
    }
    info = {
        "beam_kev": beam_kev,
        "kanaya_okayama_range_um": typical_range,
        "eds_blur_sigma_px": sigma_eds,
        "bse_blur_sigma_px": sigma_bse,
        "inside_fraction": float(inside.mean()),
    }
    return SimulatedSection(
        name=name,
        pose=pose,
        mineral_map=mineral_map,
        bse=bse,
        eds=eds,
        inside=inside,
        pixel_size_um=float(pixel_size_um),
        info=info,
    )
