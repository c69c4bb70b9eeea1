"""Out-of-core execution of the stages: block by block on numpy, Zarr or Dask volumes.

Labelling and the particle table give the same result as their in-memory counterparts (labels
voxel for voxel, tables within float rounding) for any block shape; particle separation gives
the same particles as :func:`corrtomo.segment.separate_particles` under the halo condition its
docstring states (checked per block and reported as ``exact``; a ``HaloWarning`` otherwise).
"""

from ._blocks import BlockGrid, block_grid, read_block
from ._foreground import foreground_mask_chunked
from ._grains import grain_table_chunked
from ._label import BlockUnion, LabelShell, label_components
from ._refine import refine_phases_chunked
from ._rim import correct_rim_phases_chunked
from ._separate import ChunkedParticleSegmentation, HaloWarning, separate_particles_chunked
from ._table import particle_table_chunked

__all__ = [
    "BlockGrid",
    "BlockUnion",
    "ChunkedParticleSegmentation",
    "HaloWarning",
    "LabelShell",
    "block_grid",
    "correct_rim_phases_chunked",
    "foreground_mask_chunked",
    "grain_table_chunked",
    "label_components",
    "particle_table_chunked",
    "read_block",
    "refine_phases_chunked",
    "separate_particles_chunked",
]
