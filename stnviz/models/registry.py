"""Architecture registry: builders by name, refusing duplicates (after torchvision's ``_api``).

Every registered builder is keyword-only and records how it was called on the model it returns
(``model.stnviz_config = {"arch": name, "kwargs": {...}}``), so a checkpoint can rebuild it.
Names of *trained weights* (``arch.tag``) live in :mod:`stnviz.hub`.
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Callable

from torch import nn

__all__ = ["build_model", "list_architectures", "register_model"]

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None):
    """Decorator: register a keyword-only builder under ``name`` (default: the function's name).

    Example:
        >>> @register_model()
        ... def tiny_mlp(*, num_classes: int = 10):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))
        >>> build_model("tiny_mlp", num_classes=3).stnviz_config  # how to rebuild it (checkpoints)
        {'arch': 'tiny_mlp', 'kwargs': {'num_classes': 3}}
        >>> register_model("stn_cnn")(tiny_mlp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: an architecture named 'stn_cnn' is already registered
    """

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if "." in key:
            raise ValueError(f"architecture names may not contain '.', got {key!r} ('.' separates the weights tag)")
        if key in _ARCHITECTURES:
            raise ValueError(f"an architecture named {key!r} is already registered")

        @functools.wraps(fn)
        def builder(**kwargs) -> nn.Module:
            model = fn(**kwargs)
            model.stnviz_config = {"arch": key, "kwargs": dict(kwargs)}
            return model

        _ARCHITECTURES[key] = builder
        return builder

    return wrap


def list_architectures(pattern: str | None = None) -> list[str]:
    """Sorted names of registered architectures, optionally filtered by a glob ``pattern``.

    Example:
        >>> list_architectures("stn_*")
        ['stn_cifar', 'stn_cnn', 'stn_fcn', 'stn_fcn_tps', 'stn_gtsrb', 'stn_tutorial']
    """
    names = sorted(_ARCHITECTURES)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build an untrained model of architecture ``arch`` with the builder's keyword arguments.

    Example:
        >>> model = build_model("stn_cnn", family="projective")
        >>> model.transformer.family, model.stnviz_config
        ('projective', {'arch': 'stn_cnn', 'kwargs': {'family': 'projective'}})
    """
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {list_architectures()}")
    if "transform" in kwargs:  # the older name of family= (also in checkpoints written before)
        import warnings

        if "family" in kwargs:
            raise ValueError(f"pass family= only (transform= is its older name), got both for {arch!r}")
        warnings.warn("transform= is now called family=; transform= will be removed", DeprecationWarning, stacklevel=2)
        kwargs["family"] = kwargs.pop("transform")
    try:
        return _ARCHITECTURES[arch](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad arguments for architecture {arch!r}: {e}") from None
