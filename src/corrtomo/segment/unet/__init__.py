"""Deep-learning segmentation: a 3D U-Net trained from the same sparse labels as the classifier.

Needs PyTorch (``pip install corrtomo[dl]``, ``torch==2.13.0``); importing this package without
it raises an ImportError that says so. The rest of corrtomo never imports it eagerly.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - torch is in the dev and dl extras
    raise ImportError("corrtomo.segment.unet needs PyTorch: pip install 'corrtomo[dl]' (torch==2.13.0)") from error

from ._infer import UNetPrediction, predict_unet, resolve_device
from ._io import load_unet, save_unet
from ._model import PARTICLE_CLASSES, UNet3D, UNetArchitecture, UNetModel
from ._train import (
    UNetTrainingSettings,
    calibrate_matrix_threshold,
    masked_loss,
    matrix_threshold_from_votes,
    particle_targets,
    train_unet,
)

__all__ = [
    "PARTICLE_CLASSES",
    "UNet3D",
    "UNetArchitecture",
    "UNetModel",
    "UNetPrediction",
    "UNetTrainingSettings",
    "calibrate_matrix_threshold",
    "load_unet",
    "masked_loss",
    "matrix_threshold_from_votes",
    "particle_targets",
    "predict_unet",
    "resolve_device",
    "save_unet",
    "train_unet",
]
