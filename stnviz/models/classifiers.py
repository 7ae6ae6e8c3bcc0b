"""Classifiers with and without spatial transformers, built by keyword-only, registered builders.

Every ``stn_*`` builder has a twin (``cnn_tutorial``, ``cnn``, ``cnn_gtsrb``, ``cnn_cifar``) with the
identical classifier and ``nn.Identity`` where the transformers were, so the two can be trained on
the same data and compared layer for layer. All take float images in ``[0, 1]`` shaped
``(B, C, H, W)`` and normalise inside, after the input transformer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .inputs import as_image_batch
from .registry import register_model
from .transformer import Normalize, SpatialTransformer

__all__ = [
    "STNClassifier",
    "cnn",
    "cnn_cifar",
    "cnn_gtsrb",
    "cnn_tutorial",
    "stn_cifar",
    "stn_cnn",
    "stn_gtsrb",
    "stn_tutorial",
]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
# Channel statistics of the GTSRB training images (rounded); the same for CIFAR-10 from its paper set.
GTSRB_MEAN, GTSRB_STD = (0.34, 0.31, 0.32), (0.27, 0.26, 0.27)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class STNClassifier(nn.Module):
    """``x in [0, 1]`` -> ``transformer`` -> ``normalize`` -> ``body`` -> ``head`` -> logits.

    ``transformer`` is a :class:`SpatialTransformer` or ``nn.Identity`` (the no-ST twin); ``body``
    may hold further transformers acting on feature maps. ``input_size`` is ``(C, H, W)``.

    Example:
        >>> model = STNClassifier(nn.Identity(), Normalize((0.5,), (0.5,)), nn.Flatten(), nn.Linear(16, 3),
        ...                       input_size=(1, 4, 4))
        >>> tuple(model(torch.zeros(2, 1, 4, 4)).shape), model.transformers
        ((2, 3), [])
        >>> model(torch.zeros(2, 1, 5, 5))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: STNClassifier was built for 4x4 images, got 5x5 (shape (2, 1, 5, 5)); ...
    """

    def __init__(self, transformer: nn.Module, normalize: Normalize, body: nn.Sequential, head: nn.Module, input_size):
        super().__init__()
        self.transformer = transformer
        self.normalize = normalize
        self.body = body
        self.head = head
        self.input_size = tuple(int(s) for s in input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)`` float in [0, 1] (uint8 is scaled, float64 cast) of the built
        ``input_size`` -> logits ``(B, num_classes)``. Warns once if ``x`` looks like [0, 255]."""
        where = getattr(self, "stnviz_config", {}).get("arch", type(self).__name__)
        x = as_image_batch(x, channels_height_width=self.input_size, dtype=self.normalize.mean.dtype, where=where)
        return self.head(self.body(self.normalize(self.transformer(x))))

    @property
    def transformers(self) -> list[SpatialTransformer]:
        """Every spatial transformer in the model, in forward order."""
        return [m for m in self.modules() if isinstance(m, SpatialTransformer)]


def _runs_on(module: nn.Module, shape: Sequence[int]) -> int | None:
    """Features per sample of ``module`` for an input of ``shape = (C, H, W)``, None if too small."""
    with torch.no_grad():
        training = module.training
        module.eval()
        try:
            return module(torch.zeros(1, *shape)).flatten(1).shape[1]
        except RuntimeError:  # "output size is too small" and kin from conv / pool layers
            return None
        finally:
            module.train(training)


def _flat_size(module: nn.Module, shape: Sequence[int], what: str = "input") -> int:
    """Features per sample that ``module`` produces for an input of ``shape = (C, H, W)``; a
    clear error naming the smallest size that works when ``shape`` is too small."""
    c, h, w = (int(s) for s in shape)
    if min(c, h, w) < 1:
        raise ValueError(f"the {what} size must be positive (C, H, W), got {(c, h, w)}")
    n = _runs_on(module, (c, h, w))
    if n is not None and n > 0:
        return n
    side = next((s for s in range(max(h, w), 1025) if _runs_on(module, (c, max(h, s), max(w, s)))), None)
    need = f"at least {side}x{side}" if side is not None else "a larger size"
    raise ValueError(f"this network cannot be built for a {what} of {h}x{w}: its layers need {need}")


def _loc_net(convs: Sequence[tuple[int, int]], in_shape: Sequence[int], hidden: int) -> nn.Sequential:
    """Localisation net: (conv k x k -> max-pool 2 -> ReLU) per ``(channels, k)``, then FC ``hidden``."""
    layers: list[nn.Module] = []
    c = in_shape[0]
    for out, k in convs:
        layers += [nn.Conv2d(c, out, k), nn.MaxPool2d(2), nn.ReLU(inplace=True)]
        c = out
    conv = nn.Sequential(*layers)
    flat = _flat_size(conv, in_shape, "localisation input")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(inplace=True))


def _size(input_size) -> tuple[int, int, int]:
    c, h, w = (int(s) for s in input_size)
    return c, h, w


def _transformer_kwargs(family: str, components, control_points: int, output_size) -> dict:
    return dict(family=family, components=components, control_points=control_points, output_size=output_size)


# --------------------------------------------------------------------------- PyTorch tutorial net


def _tutorial(stn: bool, num_classes: int, input_size, family: str, components, control_points: int):
    c, h, w = _size(input_size)
    transformer = (
        SpatialTransformer(_loc_net([(8, 7), (10, 5)], (c, h, w), 32), **_transformer_kwargs(family, components, control_points, None))
        if stn
        else nn.Identity()
    )
    body = nn.Sequential(
        nn.Conv2d(c, 10, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Conv2d(10, 20, 5), nn.Dropout2d(), nn.MaxPool2d(2), nn.ReLU(inplace=True),
        nn.Flatten(),
    )
    flat = _flat_size(body, (c, h, w))
    head = nn.Sequential(nn.Linear(flat, 50), nn.ReLU(inplace=True), nn.Dropout(), nn.Linear(50, num_classes))
    mean, std = (MNIST_MEAN * c)[:c], (MNIST_STD * c)[:c]
    return STNClassifier(transformer, Normalize(mean, std), body, head, (c, h, w))


@register_model()
def stn_tutorial(*, num_classes: int = 10, input_size: Sequence[int] = (1, 28, 28), family: str = "affine",
                 components: Sequence[str] | None = None, control_points: int = 16) -> STNClassifier:
    """The PyTorch STN tutorial's MNIST network (1x28x28): affine transformer + two-conv classifier.

    Example:
        >>> model = stn_tutorial()
        >>> tuple(model(torch.zeros(2, 1, 28, 28)).shape), model.transformer.family
        ((2, 10), 'affine')
        >>> import stnviz  # shipped weights: this network trained on MNIST
        >>> trained = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu").eval()
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(100))
        >>> bool((trained(digits.images).argmax(1) == digits.labels).float().mean() > 0.95)
        True
    """
    return _tutorial(True, num_classes, input_size, family, components, control_points)


@register_model()
def cnn_tutorial(*, num_classes: int = 10, input_size: Sequence[int] = (1, 28, 28)) -> STNClassifier:
    """:func:`stn_tutorial` without its transformer.

    Example:
        >>> twin = cnn_tutorial()
        >>> type(twin.transformer).__name__, tuple(twin(torch.zeros(2, 1, 28, 28)).shape)
        ('Identity', (2, 10))
        >>> layers = lambda m: [tuple(p.shape) for n, p in m.named_parameters() if not n.startswith("transformer")]
        >>> layers(twin) == layers(stn_tutorial())  # the same classifier, layer for layer
        True
    """
    return _tutorial(False, num_classes, input_size, "affine", None, 16)


# --------------------------------------------------------------------------- the paper's ST-CNN


def _paper_cnn(stn: bool, num_classes, input_size, family, components, control_points, output_size):
    c, h, w = _size(input_size)
    transformer = (
        SpatialTransformer(_loc_net([(20, 5), (20, 5)], (c, h, w), 50), **_transformer_kwargs(family, components, control_points, output_size))
        if stn
        else nn.Identity()
    )
    seen = (c, *output_size) if (stn and output_size) else (c, h, w)
    body = nn.Sequential(
        nn.Conv2d(c, 32, 9, padding=4), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(),
    )
    flat = _flat_size(body, seen, "transformer output_size" if (stn and output_size) else "input")
    head = nn.Sequential(nn.Linear(flat, 128), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, num_classes))
    mean, std = (MNIST_MEAN * c)[:c], (MNIST_STD * c)[:c]
    return STNClassifier(transformer, Normalize(mean, std), body, head, (c, h, w))


@register_model()
def stn_cnn(*, num_classes: int = 10, input_size: Sequence[int] = (1, 42, 42), family: str = "affine",
            components: Sequence[str] | None = None, control_points: int = 16,
            output_size: Sequence[int] | None = None) -> STNClassifier:
    """The paper's ST-CNN for distorted MNIST (1x42x42): a conv localisation net (two 5x5 conv
    layers of 20 filters, FC 50) in front of a two-conv classifier (9x9-32, max-pool, 5x5-64,
    max-pool, FC 128). The paper's classifier shape; the second kernel is 5x5 rather than larger
    so it trains in minutes on a CPU.
    ``family`` may be any transform family (the paper: affine, projective, tps).

    Example:
        >>> model = stn_cnn()
        >>> tuple(model(torch.zeros(2, 1, 42, 42)).shape), model.transformer.family
        ((2, 10), 'affine')
        >>> stn_cnn(family="tps", control_points=9).transformer.regressor.out_features  # (x, y) per point
        18
    """
    return _paper_cnn(True, num_classes, input_size, family, components, control_points, output_size)


@register_model()
def cnn(*, num_classes: int = 10, input_size: Sequence[int] = (1, 42, 42)) -> STNClassifier:
    """:func:`stn_cnn` without its transformer (the paper's CNN baseline).

    Example:
        >>> model = cnn()
        >>> model.transformers, tuple(model(torch.zeros(2, 1, 42, 42)).shape)
        ([], (2, 10))
    """
    return _paper_cnn(False, num_classes, input_size, "affine", None, 16, None)


# --------------------------------------------------------------------------- colour 32x32 nets


def _colour_net(stn: bool, feature_stn: bool, num_classes, input_size, family, components, control_points, mean, std):
    """3x3 conv blocks 32-32 | [ST on features] | 64 | 128, FC 256: shared by GTSRB and CIFAR.

    Sized to train on a CPU in minutes (about 20 M multiply-adds per 32x32 image)."""
    c, h, w = _size(input_size)
    kw = _transformer_kwargs(family, components, control_points, None)

    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    transformer = SpatialTransformer(_loc_net([(16, 5), (32, 5)], (c, h, w), 64), **kw) if stn else nn.Identity()
    block1 = nn.Sequential(*block(c, 32), *block(32, 32), nn.MaxPool2d(2))
    mid = (32, h // 2, w // 2)
    feature_transformer = (
        SpatialTransformer(_loc_net([(32, 3), (32, 3)], mid, 64), **kw) if (stn and feature_stn) else nn.Identity()
    )
    body = nn.Sequential(
        block1,
        feature_transformer,
        nn.Sequential(*block(32, 64), nn.MaxPool2d(2)),
        nn.Sequential(*block(64, 128), nn.MaxPool2d(2)),
        nn.Flatten(),
    )
    flat = _flat_size(body, (c, h, w))
    head = nn.Sequential(nn.Dropout(0.3), nn.Linear(flat, 256), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(256, num_classes))
    return STNClassifier(transformer, Normalize(mean, std), body, head, (c, h, w))


@register_model()
def stn_gtsrb(*, num_classes: int = 43, input_size: Sequence[int] = (3, 32, 32), family: str = "affine",
              components: Sequence[str] | None = None, control_points: int = 16) -> STNClassifier:
    """GTSRB network (3x32x32, 43 classes) with two transformers, as in the Moodstocks work: one on
    the input image and one on the 32-channel feature maps after the first conv block.

    Example:
        >>> model = stn_gtsrb()
        >>> len(model.transformers), tuple(model(torch.zeros(2, 3, 32, 32)).shape)
        (2, (2, 43))
        >>> model.transformers[1] is model.body[1]  # the one on the feature maps
        True
    """
    return _colour_net(True, True, num_classes, input_size, family, components, control_points, GTSRB_MEAN, GTSRB_STD)


@register_model()
def cnn_gtsrb(*, num_classes: int = 43, input_size: Sequence[int] = (3, 32, 32)) -> STNClassifier:
    """:func:`stn_gtsrb` without its two transformers.

    Example:
        >>> model = cnn_gtsrb()
        >>> model.transformers, tuple(model(torch.zeros(2, 3, 32, 32)).shape)
        ([], (2, 43))
    """
    return _colour_net(False, False, num_classes, input_size, "affine", None, 16, GTSRB_MEAN, GTSRB_STD)


@register_model()
def stn_cifar(*, num_classes: int = 10, input_size: Sequence[int] = (3, 32, 32), family: str = "affine",
              components: Sequence[str] | None = None, control_points: int = 16) -> STNClassifier:
    """CIFAR-10 network (3x32x32): one transformer on the input, then the colour conv classifier.

    Example:
        >>> model = stn_cifar()
        >>> len(model.transformers), tuple(model(torch.zeros(2, 3, 32, 32)).shape)
        (1, (2, 10))
    """
    return _colour_net(True, False, num_classes, input_size, family, components, control_points, CIFAR_MEAN, CIFAR_STD)


@register_model()
def cnn_cifar(*, num_classes: int = 10, input_size: Sequence[int] = (3, 32, 32)) -> STNClassifier:
    """:func:`stn_cifar` without its transformer.

    Example:
        >>> model = cnn_cifar()
        >>> model.transformers, tuple(model(torch.zeros(2, 3, 32, 32)).shape)
        ([], (2, 10))
    """
    return _colour_net(False, False, num_classes, input_size, "affine", None, 16, CIFAR_MEAN, CIFAR_STD)
