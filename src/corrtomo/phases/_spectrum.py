"""Photon spectra: monochromatic beams and filtered X-ray tube spectra."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from corrtomo._shared import InputError

from ._attenuation import (
    ENERGY_RANGE_KEV,
    MATERIALS,
    Material,
    _energies_kev,
    linear_attenuation_coefficient,
)
from ._formula import ELEMENT_SYMBOLS, parse_formula

_MODELS = ("auto", "spekpy", "kramers")


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A discrete photon spectrum.

    Parameters
    ----------
    energies_kev : (K,) ndarray
        Bin energies, keV (within 0.1..800 keV).
    weights : (K,) ndarray
        Share of photons in each bin; non-negative, normalised here to sum 1.

    Attributes
    ----------
    mean_energy_kev : float
        ``sum_k w_k E_k``, keV.

    Examples
    --------
    >>> Spectrum([10.0, 20.0], [1.0, 3.0]).mean_energy_kev
    17.5
    """

    energies_kev: np.ndarray
    weights: np.ndarray

    def __post_init__(self):
        energies = np.array(_energies_kev(self.energies_kev), dtype=np.float64).ravel()
        try:
            weights = np.array(self.weights, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"spectrum weights must be numbers, got {self.weights!r}") from None
        if energies.size == 0 or energies.shape != weights.shape:
            raise InputError(
                f"a spectrum needs as many weights as energies (at least one), got "
                f"{energies.size} energies and {weights.size} weights"
            )
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
            raise InputError("spectrum weights must be finite, non-negative and not all zero")
        weights = weights / weights.sum()
        energies.setflags(write=False)
        weights.setflags(write=False)
        object.__setattr__(self, "energies_kev", energies)
        object.__setattr__(self, "weights", weights)

    def __eq__(self, other):
        if not isinstance(other, Spectrum):
            return NotImplemented
        return np.array_equal(self.energies_kev, other.energies_kev) and np.array_equal(
            self.weights, other.weights
        )

    def __hash__(self):
        return hash((self.energies_kev.tobytes(), self.weights.tobytes()))

    def __len__(self) -> int:
        return self.energies_kev.size

    @property
    def mean_energy_kev(self) -> float:
        """Photon-weighted mean energy ``sum_k w_k E_k``, keV."""
        return float(self.energies_kev @ self.weights)

    def filtered(self, filters_mm: Mapping[str | Material, float]) -> Spectrum:
        """The spectrum after passing through filters (Beer-Lambert per bin).

        Parameters
        ----------
        filters_mm : mapping
            Filter -> thickness in mm. A filter is an element symbol (density of the pure element
            from xraydb), a name of :data:`MATERIALS` or of xraydb's material table
            (``"kapton"``, ``"water"``...), or a :class:`Material`.

        Returns
        -------
        Spectrum
            Weights ``w_k exp(-sum_f mu_f(E_k) t_f)``, renormalised.
        """
        attenuation = np.zeros_like(self.energies_kev)
        for key, thickness_mm in dict(filters_mm).items():
            material = _filter_material(key)
            if isinstance(thickness_mm, bool) or not isinstance(
                thickness_mm, int | float | np.number
            ):
                raise InputError(
                    f"filter {material.name!r}: thickness must be a number in mm, got {thickness_mm!r}"
                )
            if not (math.isfinite(thickness_mm) and thickness_mm >= 0):
                raise InputError(
                    f"filter {material.name!r}: thickness must be >= 0 mm, got {thickness_mm!r}"
                )
            mu_per_um = linear_attenuation_coefficient(
                material.formula, material.density, self.energies_kev
            )
            attenuation += mu_per_um * (1000.0 * thickness_mm)
        weights = self.weights * np.exp(-attenuation)
        if not weights.sum() > 0:
            raise InputError(f"filters {dict(filters_mm)!r} absorb the whole spectrum")
        return Spectrum(self.energies_kev, weights)

    def energy_weighted(self) -> Spectrum:
        """Weights ``w_k E_k`` (renormalised): the signal share of an energy-integrating detector."""
        return Spectrum(self.energies_kev, self.weights * self.energies_kev)


def monochromatic(energy_kev: float) -> Spectrum:
    """A single-energy spectrum (synchrotron or quasi-monochromatic nano-CT beam).

    Parameters
    ----------
    energy_kev : float
        Photon energy, keV.

    Examples
    --------
    >>> monochromatic(5.4).mean_energy_kev
    5.4
    """
    energies = _energies_kev(energy_kev)
    if energies.ndim != 0:
        raise InputError(f"monochromatic needs one energy, got {energy_kev!r}")
    return Spectrum(np.array([float(energies)]), np.array([1.0]))


def _filter_material(key) -> Material:
    if isinstance(key, Material):
        return key
    if not isinstance(key, str):
        raise InputError(f"a filter must be an element symbol or a material name, got {key!r}")
    if key in ELEMENT_SYMBOLS:
        import xraydb

        return Material(key, key, float(xraydb.atomic_density(key)))
    if key in MATERIALS:
        return MATERIALS[key]
    import xraydb

    found = xraydb.find_material(key)
    if found is not None:
        return Material(key, found.formula, float(found.density))
    parse_formula(key)  # an unparseable key gets the formula error
    raise InputError(
        f"filter {key!r}: density unknown; give an element symbol, a material name "
        f"({', '.join(MATERIALS)} or one of xraydb's materials) or a Material"
    )


def _bin_edges(kvp: float, energy_bin_kev: float) -> np.ndarray:
    low = 1.0  # keV; below this a tube spectrum is absorbed by any window
    count = max(1, math.ceil((kvp - low) / energy_bin_kev - 1e-9))
    return np.minimum(low + energy_bin_kev * np.arange(count + 1), kvp)


def _kramers_weights(
    kvp: float, anode: str, energy_bin_kev: float
) -> tuple[np.ndarray, np.ndarray]:
    """Kramers' thick-target bremsstrahlung photon spectrum, integrated over energy bins.

    ``dN/dE ~ Z (E0 - E) / E`` photons per keV (Kramers 1923), so a bin ``[a, b]`` holds
    ``E0 ln(b/a) - (b - a)``; the anode's Z only scales it. No characteristic lines, no self-filtration.
    """
    edges = _bin_edges(kvp, energy_bin_kev)
    low, high = edges[:-1], edges[1:]
    weights = kvp * np.log(high / low) - (high - low)
    return 0.5 * (low + high), np.clip(weights, 0.0, None)


@functools.lru_cache(maxsize=32)
def _spekpy_weights(kvp: float, anode: str, energy_bin_kev: float) -> tuple[np.ndarray, np.ndarray]:
    import spekpy

    model = spekpy.Spek(kvp=kvp, targ=anode, dk=energy_bin_kev)
    energies, fluence = model.get_spectrum()
    energies = np.asarray(energies, dtype=np.float64)
    weights = np.asarray(fluence, dtype=np.float64) * energy_bin_kev
    keep = (energies >= ENERGY_RANGE_KEV[0]) & (energies < kvp)
    return energies[keep], weights[keep]


def tube_spectrum(
    kvp: float,
    *,
    anode: str = "W",
    filters_mm: Mapping[str | Material, float] | None = None,
    energy_bin_kev: float = 1.0,
    model: str = "auto",
) -> Spectrum:
    """Filtered X-ray tube spectrum.

    Parameters
    ----------
    kvp : float
        Tube voltage, kV (the spectrum ends at ``kvp`` keV); 5..800.
    anode : str
        Anode (target) element, e.g. ``"W"``, ``"Mo"``, ``"Cu"``, ``"Rh"``.
    filters_mm : mapping, optional
        Filter -> thickness in mm (see :meth:`Spectrum.filtered`); default ``{"Al": 1.0}``.
        Pass ``{}`` for no filter.
    energy_bin_kev : float
        Bin width, keV. Bins start at 1 keV.
    model : {"auto", "spekpy", "kramers"}
        ``"spekpy"``: SpekPy's physics model (Poludniowski et al. 2021): bremsstrahlung,
        characteristic lines and anode self-filtration, 12 degree take-off angle. ``"kramers"``:
        Kramers' law ``dN/dE ~ Z (E0 - E) / E`` integrated over each bin (no lines, no
        self-filtration). ``"auto"`` uses SpekPy where it is installed and supports the anode and
        kVp (W: 30..300 kV; Mo, Rh, Cu...: up to 50 kV), Kramers otherwise.

    Returns
    -------
    Spectrum
        Photon spectrum after filtration; filters attenuate with xraydb (Elam) cross-sections.

    References
    ----------
    .. [1] G. Poludniowski, A. Omar, R. Bujila, P. Andreo, "SpekPy v2.0 - a software toolkit for
       modeling x-ray tube spectra", Med. Phys. 48 (2021) 3630-3637.
    .. [2] H. A. Kramers, "On the theory of X-ray absorption and of the continuous X-ray spectrum",
       Phil. Mag. 46 (1923) 836-871.

    Examples
    --------
    >>> spectrum = tube_spectrum(60, filters_mm={"Al": 1.0}, model="kramers")
    >>> bool(10 < spectrum.mean_energy_kev < 60)
    True
    """
    if isinstance(kvp, bool) or not isinstance(kvp, int | float | np.number) or not 5 <= kvp <= 800:
        raise InputError(f"kvp must be a number within 5..800 kV, got {kvp!r}")
    if isinstance(energy_bin_kev, bool) or not isinstance(energy_bin_kev, int | float | np.number):
        raise InputError(f"energy_bin_kev must be a number, got {energy_bin_kev!r}")
    if not 0.01 <= energy_bin_kev <= kvp / 4:
        raise InputError(f"energy_bin_kev must lie within 0.01 keV..kvp/4, got {energy_bin_kev!r}")
    if anode not in ELEMENT_SYMBOLS:
        raise InputError(f"anode must be an element symbol, got {anode!r}")
    if model not in _MODELS:
        raise InputError(f"model must be one of {', '.join(_MODELS)}, got {model!r}")
    kvp, energy_bin_kev = float(kvp), float(energy_bin_kev)
    energies = weights = None
    if model in ("auto", "spekpy"):
        try:
            energies, weights = _spekpy_weights(kvp, anode, energy_bin_kev)
        except Exception as error:  # spekpy signals unsupported targets/kVp with bare Exception
            if model == "spekpy":
                reason = " ".join(str(error).split())
                raise InputError(
                    f"spekpy cannot model anode {anode} at {kvp:g} kV: {reason}"
                ) from None
    if energies is None or not np.sum(weights) > 0:
        energies, weights = _kramers_weights(kvp, anode, energy_bin_kev)
    spectrum = Spectrum(energies, weights)
    return spectrum.filtered({"Al": 1.0} if filters_mm is None else filters_mm)
