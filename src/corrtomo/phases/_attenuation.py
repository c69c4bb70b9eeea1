"""X-ray attenuation from formula and density (xraydb / Elam tables), and non-mineral materials."""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from corrtomo._shared import InputError

from ._formula import mean_atomic_number, parse_formula, weight_fractions

if TYPE_CHECKING:
    from ._spectrum import Spectrum

#: Energy range of the Elam et al. (2002) cross-section tables used by xraydb, keV.
ENERGY_RANGE_KEV = (0.1, 800.0)


def _energies_kev(energy_kev) -> np.ndarray:
    try:
        energies = np.asarray(energy_kev, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"energy_kev must be a number or an array of numbers, got {energy_kev!r}"
        ) from None
    low, high = ENERGY_RANGE_KEV
    if energies.size and not (
        np.all(np.isfinite(energies)) and energies.min() >= low and energies.max() <= high
    ):
        raise InputError(
            f"energy_kev must lie within {low:g}..{high:g} keV (the Elam tables), got "
            f"{energies.min():g}..{energies.max():g}"
        )
    return energies


def _check_density(density) -> float:
    if isinstance(density, bool) or not isinstance(density, int | float | np.integer | np.floating):
        raise InputError(f"density must be a number in g/cm3, got {density!r}")
    if not (math.isfinite(density) and density > 0):
        raise InputError(f"density must be a positive finite number in g/cm3, got {density!r}")
    return float(density)


def mass_attenuation_coefficient(
    formula: str, energy_kev: float | np.ndarray
) -> float | np.ndarray:
    """Mass attenuation coefficient of a compound, cm2/g.

    Parameters
    ----------
    formula : str
        Chemical formula, see :func:`parse_formula`.
    energy_kev : float or ndarray
        Photon energy (keV), within 0.1..800 keV.

    Returns
    -------
    float or ndarray
        ``mu/rho = sum_i w_i (mu/rho)_i(E)`` (cm2/g), the mixture rule over element mass fractions
        ``w_i`` with the total (photo-electric + coherent + incoherent) element cross-sections of
        Elam, Ravel & Sieber (2002) as tabulated in xraydb (``xraydb.mu_elam(..., kind="total")``).
        Same shape as `energy_kev`.

    References
    ----------
    .. [1] W. T. Elam, B. D. Ravel, J. R. Sieber, "A new atomic database for X-ray spectroscopic
       calculations", Radiat. Phys. Chem. 63 (2002) 121-128.
    .. [2] M. Newville, xraydb, https://xraypy.github.io/XrayDB/
    """
    import xraydb

    energies = _energies_kev(energy_kev)
    flat = np.atleast_1d(energies).ravel() * 1000.0  # keV -> eV
    total = np.zeros(flat.shape)
    for element, fraction in weight_fractions(formula).items():
        total += fraction * np.asarray(
            xraydb.mu_elam(element, flat, kind="total"), dtype=np.float64
        )
    if energies.ndim == 0:
        return float(total[0])
    return total.reshape(energies.shape)


def linear_attenuation_coefficient(
    formula: str, density: float, energy_kev: float | np.ndarray
) -> float | np.ndarray:
    """Linear X-ray attenuation coefficient of a compound, 1/um (per micrometre).

    Parameters
    ----------
    formula : str
        Chemical formula, see :func:`parse_formula`.
    density : float
        Density, g/cm3.
    energy_kev : float or ndarray
        Photon energy (keV), within 0.1..800 keV.

    Returns
    -------
    float or ndarray
        ``mu = rho * sum_i w_i (mu/rho)_i(E) * 1e-4`` in 1/um (the factor converts 1/cm to 1/um);
        the same quantity as ``xraydb.material_mu(formula, 1000 * E, density)`` / 1e4. The attenuation
        length (1/e depth) is ``1 / mu`` um. Same shape as `energy_kev`.

    Examples
    --------
    >>> round(1 / linear_attenuation_coefficient("MgCO3", 3.00, 5.4), 1)  # um
    55.2
    """
    density = _check_density(density)
    return mass_attenuation_coefficient(formula, energy_kev) * (density * 1e-4)


def _effective_from_mu(mu: np.ndarray, weights: np.ndarray, thickness_um: float) -> np.ndarray:
    """Effective mu for rows of `mu` (..., n_energies) over spectral `weights` (n_energies,)."""
    from scipy.special import logsumexp

    thickness_um = float(thickness_um)
    if not (math.isfinite(thickness_um) and thickness_um >= 0):
        raise InputError(f"thickness_um must be a finite number >= 0, got {thickness_um!r}")
    if thickness_um == 0:
        return mu @ weights
    log_transmission = logsumexp(-mu * thickness_um, b=weights, axis=-1)
    return -log_transmission / thickness_um


def effective_attenuation_coefficient(
    formula: str, density: float, spectrum: Spectrum, *, thickness_um: float = 0.0
) -> float:
    """Spectrum-weighted (effective) linear attenuation coefficient, 1/um.

    Parameters
    ----------
    formula : str
        Chemical formula.
    density : float
        Density, g/cm3.
    spectrum : Spectrum
        Photon spectrum reaching the sample (weights = share of photons seen by the detector; use
        :meth:`Spectrum.energy_weighted` for an energy-integrating detector).
    thickness_um : float
        Path length through the material, um. 0 (default) gives the thin-sample limit.

    Returns
    -------
    float
        ``mu_eff(t) = -ln( sum_k s_k exp(-mu(E_k) t) ) / t`` (1/um), the Beer-Lambert coefficient that
        reproduces the polychromatic transmission through thickness ``t``; for ``t -> 0`` it is the
        spectrum mean ``sum_k s_k mu(E_k)``. It lies between the smallest and largest ``mu(E_k)`` and
        falls as ``t`` grows (beam hardening).
    """
    mu = np.atleast_1d(linear_attenuation_coefficient(formula, density, spectrum.energies_kev))
    return float(_effective_from_mu(mu, spectrum.weights, thickness_um))


class _AttenuatingMixin:
    """Derived composition and attenuation for a dataclass with ``formula`` and ``density``."""

    formula: str
    density: float

    @property
    def weight_fractions(self) -> dict[str, float]:
        """Element mass fractions (sum 1), see :func:`weight_fractions`."""
        return weight_fractions(self.formula)

    @property
    def atom_counts(self) -> dict[str, float]:
        """Atoms per formula unit, see :func:`parse_formula`."""
        return parse_formula(self.formula)

    @property
    def mean_atomic_number(self) -> float:
        """Mass-fraction weighted mean atomic number (the BSE-relevant one)."""
        return mean_atomic_number(self.formula)

    def linear_attenuation(self, energy_kev: float | np.ndarray) -> float | np.ndarray:
        """Linear attenuation coefficient at `energy_kev` (keV), 1/um."""
        return linear_attenuation_coefficient(self.formula, self.density, energy_kev)

    def attenuation_length_um(self, energy_kev: float | np.ndarray) -> float | np.ndarray:
        """Attenuation length ``1 / mu`` (depth where intensity falls to 1/e) at `energy_kev`, um."""
        return 1.0 / self.linear_attenuation(energy_kev)

    def effective_attenuation(self, spectrum: Spectrum, *, thickness_um: float = 0.0) -> float:
        """Spectrum-weighted attenuation, 1/um; see :func:`effective_attenuation_coefficient`."""
        return effective_attenuation_coefficient(
            self.formula, self.density, spectrum, thickness_um=thickness_um
        )


@dataclass(frozen=True)
class Material(_AttenuatingMixin):
    """A non-mineral material (embedding resin, air, carbon black, filter) with attenuation methods.

    Parameters
    ----------
    name : str
        Name.
    formula : str
        Chemical formula (decimal counts allowed), see :func:`parse_formula`.
    density : float
        Density, g/cm3.

    Examples
    --------
    >>> epoxy = MATERIALS["epoxy"]
    >>> bool(epoxy.linear_attenuation(5.4) < MATERIALS["carbon-black"].linear_attenuation(5.4))
    True
    """

    name: str
    formula: str
    density: float

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError(f"material name must be a non-empty string, got {self.name!r}")
        parse_formula(self.formula)
        object.__setattr__(self, "density", _check_density(self.density))

    def to_dict(self) -> dict[str, str | float]:
        """``{name, formula, density}``."""
        return {"name": self.name, "formula": self.formula, "density": self.density}


MATERIALS = types.MappingProxyType(
    {
        # Cured bisphenol-A epoxy embedding resin: two DGEBA molecules (C21H24O4) per isophorone
        # diamine (C10H22N2, four N-H per two epoxide pairs), the stoichiometric network C52H70N2O8.
        # Density 1.16 g/cm3, typical of cured DGEBA/amine resins (1.15-1.20 g/cm3; e.g. H. Lee and
        # K. Neville, Handbook of Epoxy Resins, McGraw-Hill 1967, ch. 6).
        "epoxy": Material("epoxy", "C52H70N2O8", 1.16),
        # Dry air near sea level, NIST composition (mass fractions C 0.000124, N 0.755268,
        # O 0.231781, Ar 0.012827; density 1.20479e-3 g/cm3 at 20 C, 101.325 kPa) written per
        # "molecule" of air: N2 78.08 %, O2 20.95 %, Ar 0.934 %, CO2 0.04 % by volume.
        # Source: NIST X-ray mass attenuation tables (Hubbell & Seltzer, NISTIR 5632, table 2).
        "air": Material("air", "N1.5617O0.4198Ar0.00934C0.0004", 1.20479e-3),
        # Carbon black (conductive filler in SEM/FIB sample preparation): amorphous carbon with a
        # skeletal density of about 1.8 g/cm3 (1.7-1.9; J.-B. Donnet, R. C. Bansal, M.-J. Wang,
        # Carbon Black, 2nd ed., Marcel Dekker 1993).
        "carbon-black": Material("carbon-black", "C", 1.8),
    }
)
"""Preset non-mineral materials by name: ``"epoxy"``, ``"air"``, ``"carbon-black"``."""
