"""Helpers shared by every stage: errors, spacing, atomic output, random generators, poses."""

from ._atomic import (
    atomic_directory,
    atomic_path,
    file_sha256,
    to_jsonable,
    write_json_atomic,
    write_text_atomic,
)
from ._blocks import Float32Blocks
from ._components import connected_components, remove_dust
from ._errors import InputError
from ._geometry import fibonacci_sphere
from ._labels import MATRIX_LABEL, UNLABELLED
from ._parallel import BlockRunner, WorkerLostWarning, WorkersLostError, connect_scheduler
from ._rng import as_rng
from ._spacing import normalize_spacing
from ._transform import PlanePose, RigidTransform, sample_plane

__all__ = [
    "MATRIX_LABEL",
    "UNLABELLED",
    "BlockRunner",
    "Float32Blocks",
    "InputError",
    "PlanePose",
    "RigidTransform",
    "WorkerLostWarning",
    "WorkersLostError",
    "as_rng",
    "atomic_directory",
    "atomic_path",
    "connect_scheduler",
    "connected_components",
    "fibonacci_sphere",
    "file_sha256",
    "normalize_spacing",
    "remove_dust",
    "sample_plane",
    "to_jsonable",
    "write_json_atomic",
    "write_text_atomic",
]
