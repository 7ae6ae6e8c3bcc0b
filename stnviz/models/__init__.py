"""Localisation nets, :class:`SpatialTransformer`, classifiers and the architecture registry."""

from .classifiers import (
    STNClassifier,
    cnn,
    cnn_cifar,
    cnn_gtsrb,
    cnn_tutorial,
    stn_cifar,
    stn_cnn,
    stn_gtsrb,
    stn_tutorial,
)
from .fcn import fcn, stn_fcn
from .modes import eval_mode, model_device_dtype
from .registry import build_model, list_architectures, register_model
from .transformer import GridGenerator, Normalize, SpatialTransformer, localization_parameters, param_groups

__all__ = [
    "GridGenerator",
    "Normalize",
    "STNClassifier",
    "SpatialTransformer",
    "build_model",
    "cnn",
    "cnn_cifar",
    "cnn_gtsrb",
    "cnn_tutorial",
    "eval_mode",
    "list_architectures",
    "localization_parameters",
    "model_device_dtype",
    "param_groups",
    "register_model",
    "stn_cifar",
    "stn_cnn",
    "stn_gtsrb",
    "stn_tutorial",
]
