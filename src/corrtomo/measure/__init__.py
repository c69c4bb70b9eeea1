"""Per-particle and per-grain measurements from particle and phase label volumes (z, y, x)."""

from ._association import phase_association
from ._grains import GrainLabels, equivalent_spherical_diameter, grain_table, label_grains
from ._moments import LabelMoments, label_moments, merge_moments
from ._particles import particle_table, particle_table_from_moments
from ._surface import configuration_weights, surface_area

__all__ = [
    "GrainLabels",
    "LabelMoments",
    "configuration_weights",
    "equivalent_spherical_diameter",
    "grain_table",
    "label_grains",
    "label_moments",
    "merge_moments",
    "particle_table",
    "particle_table_from_moments",
    "phase_association",
    "surface_area",
]
