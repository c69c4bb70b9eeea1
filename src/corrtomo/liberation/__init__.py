"""Mineral liberation from particle tables and label volumes.

3D liberation degree per phase and size class (Eq. 1-2 of the seed paper) with bootstrap
intervals, liberation spectra and grade-recovery curves, number/volume/mass size distributions
(Fig. 9), grain versus particle volume (Fig. 11), and 2D-versus-3D stereology on virtual or
measured sections.
"""

from ._common import geometric_size_bins
from ._liberation import (
    LIBERATION_COLUMNS,
    liberation_degree,
    liberation_table,
    measurement_summary,
)
from ._spectra import GRADE_CLASSES, grain_particle_volume, liberation_spectrum, size_distribution
from ._stereology import (
    SectionStack,
    composition_from_table,
    composition_table,
    section_liberation,
    section_particle_table,
    stereology_comparison,
    virtual_sections,
)

__all__ = [
    "GRADE_CLASSES",
    "LIBERATION_COLUMNS",
    "SectionStack",
    "composition_from_table",
    "composition_table",
    "geometric_size_bins",
    "grain_particle_volume",
    "liberation_degree",
    "liberation_spectrum",
    "liberation_table",
    "measurement_summary",
    "section_liberation",
    "section_particle_table",
    "size_distribution",
    "stereology_comparison",
    "virtual_sections",
]
