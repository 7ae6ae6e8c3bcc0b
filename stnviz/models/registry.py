"""Architecture registry: builders by name, refusing duplicates (after torchvision's ``_api``).

Every registered builder is keyword-only and records how it was called on the model it returns
(``model.stnviz_config = {"arch": name, "kwargs": {...}}``), so a checkpoint can rebuild it.

Users reach it through :func:`stnviz.get_model` and :func:`stnviz.list_models`; the rest of the
package (:mod:`stnviz.hub`, :mod:`stnviz.checkpoints`) builds and lists through
:data:`ARCHITECTURES`. Names of *trained weights* (``arch.tag``) live in :mod:`stnviz.hub`.
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Callable

from torch import nn

__all__ = ["ARCHITECTURES", "register_model"]


class _Architectures:
    """The registered builders by name: :meth:`build` one, list their :meth:`names`."""

    def __init__(self) -> None:
        self._builders: dict[str, Callable[..., nn.Module]] = {}

    def __contains__(self, arch: object) -> bool:
        return arch in self._builders

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names of registered architectures, optionally filtered by a glob ``pattern``.

        Example:
            >>> ARCHITECTURES.names("stn_*")
            ['stn_cifar', 'stn_cnn', 'stn_fcn', 'stn_fcn_tps', 'stn_gtsrb', 'stn_tutorial']
        """
        return [n for n in sorted(self._builders) if pattern is None or fnmatch.fnmatch(n, pattern)]

    def build(self, arch: str, **kwargs) -> nn.Module:
        """An untrained model of architecture ``arch``, built with the builder's keyword arguments.

        Example:
            >>> model = ARCHITECTURES.build("stn_cnn", family="projective")
            >>> model.transformer.family, model.stnviz_config
            ('projective', {'arch': 'stn_cnn', 'kwargs': {'family': 'projective'}})
        """
        if arch not in self._builders:
            raise ValueError(f"unknown architecture {arch!r}; expected one of {self.names()}")
        try:
            return self._builders[arch](**kwargs)
        except TypeError as e:
            raise ValueError(f"bad arguments for architecture {arch!r}: {e}") from None


#: Every registered architecture; :func:`register_model` adds to it.
ARCHITECTURES = _Architectures()


def register_model(name: str | None = None):
    """Decorator: register a keyword-only builder under ``name`` (default: the function's name).

    Example:
        >>> from stnviz import get_model
        >>> @register_model()
        ... def tiny_mlp(*, num_classes: int = 10):
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))
        >>> get_model("tiny_mlp", num_classes=3, device="cpu").stnviz_config  # how to rebuild it (checkpoints)
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
        if key in ARCHITECTURES:
            raise ValueError(f"an architecture named {key!r} is already registered")

        @functools.wraps(fn)
        def builder(**kwargs) -> nn.Module:
            model = fn(**kwargs)
            model.stnviz_config = {"arch": key, "kwargs": dict(kwargs)}
            return model

        ARCHITECTURES._builders[key] = builder
        return builder

    return wrap
