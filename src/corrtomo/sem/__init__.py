"""SEM sections to mineral maps: EDS classification against the phase library, clustering,
and import of finished automated-mineralogy maps."""

from ._classify import backscatter_coefficient, classify_eds
from ._mineral_map import MineralMap, area_fractions, import_mineral_map
from ._references import eds_efficiency, reference_signatures

__all__ = [
    "MineralMap",
    "area_fractions",
    "backscatter_coefficient",
    "classify_eds",
    "eds_efficiency",
    "import_mineral_map",
    "reference_signatures",
]
