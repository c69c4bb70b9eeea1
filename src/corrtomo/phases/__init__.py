"""Phase library: minerals and materials, their composition and X-ray attenuation, tube spectra.

Element mass fractions, mean atomic number and linear attenuation coefficients are computed from a
chemical formula and a density with xraydb (Elam tables); tube spectra come from SpekPy or
Kramers' law. Lengths are micrometres, energies keV, densities g/cm3.
"""

from ._attenuation import (
    MATERIALS,
    Material,
    effective_attenuation_coefficient,
    linear_attenuation_coefficient,
    mass_attenuation_coefficient,
)
from ._formula import atomic_number, mean_atomic_number, parse_formula, weight_fractions
from ._library import (
    DEFAULT_PALETTE,
    PRESET_NAMES,
    Phase,
    PhaseLibrary,
    load_phase_library,
    preset_library,
)
from ._spectrum import Spectrum, monochromatic, tube_spectrum

__all__ = [
    "DEFAULT_PALETTE",
    "MATERIALS",
    "PRESET_NAMES",
    "Material",
    "Phase",
    "PhaseLibrary",
    "Spectrum",
    "atomic_number",
    "effective_attenuation_coefficient",
    "linear_attenuation_coefficient",
    "load_phase_library",
    "mass_attenuation_coefficient",
    "mean_atomic_number",
    "monochromatic",
    "parse_formula",
    "preset_library",
    "tube_spectrum",
    "weight_fractions",
]
