"""Correlation of SEM sections with CT volumes: slice-to-volume registration, label transfer,
stitching of stacked volumes; ``register_volume`` places a high-resolution volume (nano-CT pillar)
inside a low-resolution one (micro-CT) across length scales.

``register_section`` finds, without a starting pose, the plane (3 rotations, 3 translations and the
pixel-to-voxel scale) where a 2D section (BSE image or mineral map) lies in a 3D volume, and says
whether the match is confident. ``transfer_labels`` turns a registered mineral map into sparse 3D
training labels; ``stitch_volumes`` joins vertically stacked sub-volumes.
"""

from ._similarity import (
    dice,
    ncc,
    normalized_mutual_information,
    otsu_threshold,
    particle_probability,
    sample_grid,
    sample_points,
    section_valid_mask,
)
from ._slice import (
    RegistrationHint,
    RegistrationResult,
    landmark_pose,
    pose_error,
    register_section,
    write_overlay,
)
from ._stitch import StitchResult, masked_ncc, stitch_volumes
from ._transfer import SparseLabels, boundary_mask, merge_sparse_labels, transfer_labels
from ._volume import (
    VolumeRegistration,
    corner_error,
    detect_cylinder,
    moving_region_mask,
    register_volume,
    write_volume_overlay,
)

__all__ = [
    "RegistrationHint",
    "RegistrationResult",
    "SparseLabels",
    "StitchResult",
    "VolumeRegistration",
    "boundary_mask",
    "corner_error",
    "detect_cylinder",
    "dice",
    "landmark_pose",
    "masked_ncc",
    "merge_sparse_labels",
    "moving_region_mask",
    "ncc",
    "normalized_mutual_information",
    "otsu_threshold",
    "particle_probability",
    "pose_error",
    "register_section",
    "register_volume",
    "sample_grid",
    "sample_points",
    "section_valid_mask",
    "stitch_volumes",
    "transfer_labels",
    "write_overlay",
    "write_volume_overlay",
]
