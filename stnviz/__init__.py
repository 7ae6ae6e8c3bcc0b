"""stnviz: train, load, inspect and animate Spatial Transformer Networks.

Conventions (details in :mod:`stnviz.geometry`): images are float ``(B, C, H, W)`` in ``[0, 1]``;
transform parameters map *output* to *input* in normalised coordinates with
``align_corners=False``.
"""

__version__ = "0.1.0"

from . import geometry
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .device import resolve_device
from .hub import get_model, list_models, load_pretrained
from .models import SpatialTransformer, param_groups

__all__ = [
    "CheckpointError",
    "SpatialTransformer",
    "__version__",
    "geometry",
    "get_model",
    "list_models",
    "load_checkpoint",
    "load_pretrained",
    "param_groups",
    "resolve_device",
    "save_checkpoint",
]
