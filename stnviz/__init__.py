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

# ``stnviz.capture`` is the module and the verb at once: ``stnviz.capture(model)`` opens a capture.
_VERBS = {"fit": "train", "evaluate": "train", "collect": "capture"}
_SUBMODULES = ("analysis", "animate", "capture", "data", "models", "render", "train", "widgets")


def __getattr__(name):
    """Submodules on first use (``stnviz.widgets``...), so ``import stnviz`` stays light."""
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _VERBS:  # stnviz.fit(...), stnviz.evaluate(...)
        return getattr(importlib.import_module(f".{_VERBS[name]}", __name__), name)
    raise AttributeError(f"module 'stnviz' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "SpatialTransformer",
    "__version__",
    "analysis",
    "animate",
    "capture",
    "collect",
    "data",
    "evaluate",
    "fit",
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
