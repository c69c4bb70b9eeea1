"""Segmentation of CT volumes: mineral phases from sparse labels, and individual particles.

Phases: the ilastik voxel features (:func:`voxel_features`, block by block with halos) and a
random-forest :class:`PhaseClassifier` trained from sparse labels (:func:`train_phase_classifier`),
applied block by block with probabilities and an uncertainty map, saved with skops
(:func:`save_classifier` / :func:`load_classifier`).

Particles: foreground (matrix versus particles, pillar field of view) and marker-based watershed
separation.
"""

from ._classifier import (
    MODEL_KINDS,
    ClassifierConfig,
    PhaseClassifier,
    PhasePrediction,
    load_classifier,
    save_classifier,
    train_phase_classifier,
)
from ._features import (
    DEFAULT_FEATURES,
    DEFAULT_SCALES_VOXELS,
    FEATURE_KINDS,
    FeatureSettings,
    eigenvalues_sym3,
    feature_names,
    voxel_features,
)
from ._foreground import Pillar, detect_pillar, fill_cavities, foreground_mask, pillar_mask
from ._particles import (
    ParticleSegmentation,
    border_touching,
    distance_map,
    eroded_core_markers,
    h_maxima_markers,
    merge_oversplit_particles,
    remove_small_particles,
    separate_particles,
    smooth_distance,
    watershed_from_markers,
)
from ._refine import (
    InclusionModel,
    InclusionReport,
    InclusionSettings,
    ball_peak_fraction,
    correct_contact_phases,
    detection_threshold,
    estimate_inclusion_model,
    reclassify_small_grains,
    recover_inclusions,
    refine_phases,
)
from ._rim import correct_rim_phases, rim_halo_voxels

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_SCALES_VOXELS",
    "FEATURE_KINDS",
    "MODEL_KINDS",
    "ClassifierConfig",
    "FeatureSettings",
    "InclusionModel",
    "InclusionReport",
    "InclusionSettings",
    "ParticleSegmentation",
    "PhaseClassifier",
    "PhasePrediction",
    "Pillar",
    "ball_peak_fraction",
    "border_touching",
    "correct_contact_phases",
    "correct_rim_phases",
    "detect_pillar",
    "detection_threshold",
    "distance_map",
    "eigenvalues_sym3",
    "eroded_core_markers",
    "estimate_inclusion_model",
    "feature_names",
    "fill_cavities",
    "foreground_mask",
    "h_maxima_markers",
    "load_classifier",
    "merge_oversplit_particles",
    "pillar_mask",
    "reclassify_small_grains",
    "recover_inclusions",
    "refine_phases",
    "remove_small_particles",
    "rim_halo_voxels",
    "save_classifier",
    "separate_particles",
    "smooth_distance",
    "train_phase_classifier",
    "voxel_features",
    "watershed_from_markers",
]
