"""The STN paper's fully connected baseline (FCN) and ST-FCN for distorted MNIST.

Jaderberg et al., "Spatial Transformer Networks" (NIPS 2015), Sec. 4.1 and appendix: the FCN
baseline is a stack of fully connected ReLU layers of 128 units; the ST-FCN puts a spatial
transformer in front whose localisation net is itself fully connected (layers of 32 units). The
paper gives the layer widths; the depth here (three hidden layers in each) is this package's
reading of it. Both take ``(B, 1, H, W)`` images in ``[0, 1]`` and normalise inside, after the
transformer, like the other builders (:mod:`stnviz.models.classifiers`).

A fully connected classifier has no translation or rotation tolerance of its own, so on the
rotated digits (R) the transformer is what has to undo the rotation: the experiment in which an
STN's uprighting is easiest to see.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from .classifiers import MNIST_MEAN, MNIST_STD, STNClassifier, _size, _transformer_kwargs
from .registry import register_model
from .transformer import Normalize, SpatialTransformer

__all__ = ["fcn", "stn_fcn", "stn_fcn_tps"]


def _mlp(features: int, widths: Sequence[int]) -> list[nn.Module]:
    """``Linear -> ReLU`` per width, starting from ``features`` inputs."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(features, int(w)), nn.ReLU(inplace=True)]
        features = int(w)
    return layers


def _fcn(stn: bool, num_classes, input_size, hidden, loc_hidden, family, components, control_points, output_size):
    c, h, w = _size(input_size)
    if not hidden or not loc_hidden:
        raise ValueError(f"hidden and loc_hidden need at least one width each, got {hidden!r} and {loc_hidden!r}")
    transformer = (
        SpatialTransformer(nn.Sequential(nn.Flatten(), *_mlp(c * h * w, loc_hidden)),
                           **_transformer_kwargs(family, components, control_points, output_size))
        if stn
        else nn.Identity()
    )
    oh, ow = (output_size if (stn and output_size) else (h, w))
    body = nn.Sequential(nn.Flatten(), *_mlp(c * int(oh) * int(ow), hidden))
    head = nn.Linear(int(hidden[-1]), num_classes)
    mean, std = (MNIST_MEAN * c)[:c], (MNIST_STD * c)[:c]
    return STNClassifier(transformer, Normalize(mean, std), body, head, (c, h, w))


@register_model()
def stn_fcn(*, num_classes: int = 10, input_size: Sequence[int] = (1, 28, 28), family: str = "affine",
            components: Sequence[str] | None = None, control_points: int = 16,
            output_size: Sequence[int] | None = None, hidden: Sequence[int] = (128, 128, 128),
            loc_hidden: Sequence[int] = (32, 32, 32)) -> STNClassifier:
    """The paper's ST-FCN (1x28x28): a fully connected localisation net (``loc_hidden`` ReLU
    layers, default 32-32-32) regressing the parameters of ``family`` (any family; e.g.
    ``family="restricted", components=["rotation"]`` for a rotation-only transformer), then the
    FCN classifier (``hidden``, default 128-128-128, and a linear layer to ``num_classes``).
    The transformer starts as the identity.

    Example:
        >>> import torch
        >>> model = stn_fcn(family="restricted", components=["rotation"])  # a rotation-only transformer
        >>> tuple(model(torch.zeros(2, 1, 28, 28)).shape), model.transformer.regressor.out_features
        ((2, 10), 1)
    """
    return _fcn(True, num_classes, input_size, hidden, loc_hidden, family, components, control_points, output_size)


@register_model()
def fcn(*, num_classes: int = 10, input_size: Sequence[int] = (1, 28, 28),
        hidden: Sequence[int] = (128, 128, 128)) -> STNClassifier:
    """:func:`stn_fcn` without its transformer (the paper's FCN baseline).

    Example:
        >>> import torch
        >>> model = fcn()
        >>> model.transformers, tuple(model(torch.zeros(2, 1, 28, 28)).shape)
        ([], (2, 10))
    """
    return _fcn(False, num_classes, input_size, hidden, (32,), "affine", None, 16, None)


@register_model()
def stn_fcn_tps(*, num_classes: int = 10, input_size: Sequence[int] = (1, 28, 28), control_points: int = 16,
                output_size: Sequence[int] | None = None, hidden: Sequence[int] = (128, 128, 128),
                loc_hidden: Sequence[int] = (32, 32, 32)) -> STNClassifier:
    """The paper's ST-FCN with a thin-plate-spline transformer (``control_points`` on a lattice,
    default 4x4): :func:`stn_fcn` with ``family="tps"``, its row for the elastic distortions (E).

    Example:
        >>> model = stn_fcn_tps()
        >>> model.transformer.family, model.transformer.grid_generator.num_params
        ('tps', 32)
    """
    return _fcn(True, num_classes, input_size, hidden, loc_hidden, "tps", None, control_points, output_size)

