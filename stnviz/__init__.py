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

_SUBMODULES = ("analysis", "animate", "capture", "data", "models", "render", "train", "widgets")


def __getattr__(name):
    """Submodules on first use (``stnviz.widgets``...), so ``import stnviz`` stays light."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'stnviz' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "SpatialTransformer",
    "__version__",
    "analysis",
    "animate",
    "capture",
    "data",
    "geometry",
    "get_model",
    "list_models",
    "load_checkpoint",
    "load_pretrained",
    "param_groups",
    "render",
    "resolve_device",
    "save_checkpoint",
    "train",
    "widgets",
]
