"""Localisation nets, :class:`SpatialTransformer`, classifiers and the architecture registry.

Every registered architecture's builder is importable from here (``from stnviz.models import
stn_fcn_tps``); :func:`stnviz.get_model` builds one by name and :func:`stnviz.list_models` lists them.
"""

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
from .fcn import fcn, stn_fcn, stn_fcn_tps
from .inputs import UNIT_RANGE_LIMIT, ImageRangeWarning, as_image_batch, warn_if_not_unit_range
from .modes import eval_mode, model_device_dtype
from .registry import register_model
from .transformer import GridGenerator, Normalize, SpatialTransformer, localization_parameters, param_groups

__all__ = [
    "GridGenerator",
    "ImageRangeWarning",
    "Normalize",
    "STNClassifier",
    "SpatialTransformer",
    "UNIT_RANGE_LIMIT",
    "as_image_batch",
    "cnn",
    "cnn_cifar",
    "cnn_gtsrb",
    "cnn_tutorial",
    "eval_mode",
    "fcn",
    "localization_parameters",
    "model_device_dtype",
    "param_groups",
    "register_model",
    "stn_cifar",
    "stn_cnn",
    "stn_fcn",
    "stn_fcn_tps",
    "stn_gtsrb",
    "stn_tutorial",
    "warn_if_not_unit_range",
]
