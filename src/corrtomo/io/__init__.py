"""Reading and writing corrtomo's data: CT volumes (TIFF, Zarr/OME-Zarr, HDF5, raw, slice folders)
with their voxel size, and 2D SEM data (BSE images, EDS element maps, mineral maps).

Axis order is (z, y, x); voxel sizes are in micrometres. Readers stay lazy on large files
(memory map, Zarr, Dask), never modify their input, and raise `corrtomo.InputError` with a
one-line message naming the file. Writers are atomic (temporary sibling, then rename).
"""

from ._elements import ELEMENT_SYMBOLS, element_from_name
from ._legend import load_legend
from ._sem import EDSMaps, read_eds_maps, read_image2d, read_mineral_map
from ._volume import Volume, check_finite, read_volume
from ._write import write_image2d, write_label_png, write_tiff
from ._zarr import write_ome_zarr

__all__ = [
    "ELEMENT_SYMBOLS",
    "EDSMaps",
    "Volume",
    "check_finite",
    "element_from_name",
    "load_legend",
    "read_eds_maps",
    "read_image2d",
    "read_mineral_map",
    "read_volume",
    "write_image2d",
    "write_label_png",
    "write_ome_zarr",
    "write_tiff",
]
