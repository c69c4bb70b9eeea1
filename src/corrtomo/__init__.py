"""corrtomo: correlative 3D mineralogy of particle systems from X-ray CT and SEM sections.

The package is laid out by pipeline stage; each stage is a plain Python API that a scientist can
call from a notebook. Axis order of every volume is (z, y, x) = (plane, row, column) and every
physical length is in micrometres.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("corrtomo")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

from ._shared import BlockRunner

__all__ = ["BlockRunner", "__version__"]
