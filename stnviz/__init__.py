"""stnviz: train, load, inspect and animate Spatial Transformer Networks.

The verbs a user needs first live here; everything else is in a submodule named by its noun
(``stnviz.geometry``, ``stnviz.data``, ``stnviz.render`` ...)::

    model = stnviz.load_pretrained("stn_gtsrb.gtsrb_loc") # or stnviz.get_model("stn_cnn") untrained
    with stnviz.capture(model) as rec:                    # what every transformer did
        model(images)
    stnviz.STNInspector(model, images)                    # browse it; ThetaExplorer to slide theta
    stnviz.fit(model, train, val, epochs=10)              # train; stnviz.evaluate(model, test)
    stnviz.diagnose(model, images, labels)                # what is wrong with its transformers, and the fix

Conventions (details in :mod:`stnviz.geometry`): images are float ``(B, C, H, W)`` in ``[0, 1]``;
transform parameters map *output* to *input* in normalised coordinates with
``align_corners=False``.
"""

__version__ = "0.1.0"

from . import geometry
from .checkpoints import CheckpointError
from .hub import get_model, list_models, load_pretrained
from .models import SpatialTransformer

# Imported here, not on first use: importing the package stnviz.capture binds ``stnviz.capture`` to
# the package, and this line binds it to the function ``capture`` once, before anything else can
# import the package (the package stays importable: ``from stnviz.capture import collect``).
from .capture import capture, collect

# The same for the verb ``diagnose`` and its package (light: pandas and matplotlib load on use).
from .diagnose import Diagnosis, diagnose

# Loaded on first use, so ``import stnviz`` stays light.
_LAZY = {
    "fit": "train", "evaluate": "train", "TrainConfig": "train",
    "ThetaExplorer": "widgets", "STNInspector": "widgets", "TrainingPlayer": "widgets", "StabilityViewer": "widgets",
}
_SUBMODULES = ("analysis", "animate", "checkpoints", "data", "device", "hub", "integrations", "models", "render",
               "train", "widgets")


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'stnviz' has no attribute {name!r}")


__all__ = [
    "CheckpointError",
    "Diagnosis",
    "STNInspector",
    "SpatialTransformer",
    "StabilityViewer",
    "ThetaExplorer",
    "TrainConfig",
    "TrainingPlayer",
    "__version__",
    "analysis",
    "animate",
    "capture",
    "collect",
    "data",
    "diagnose",
    "evaluate",
    "fit",
    "geometry",
    "get_model",
    "list_models",
    "load_pretrained",
    "render",
    "train",
    "widgets",
]
