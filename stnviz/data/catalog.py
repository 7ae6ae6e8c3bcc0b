"""Data sets by name, split into train / validation / test for training and evaluation.

Validation is always held out from the *training* data (whole tracks for GTSRB), so a model is
chosen without looking at its test set. Names:

==================  =====================================================================
name                train / val / test
==================  =====================================================================
mnist               MNIST train minus 5,000 (or 10% if smaller) / those / MNIST test
mnist_<kind>        the same digits distorted on the device (``rotated``/``r``, ``rts``,
                    ``projective``/``p``, ``elastic``/``e``, ``translated_cluttered``/``tc``):
                    fresh distortions every training epoch, fixed ones for val and test
fashion_mnist       as mnist
cifar10, svhn       train minus 5,000 / those 5,000 / test
gtsrb               GTSRB training tracks: 80% / 10% / 10% of the tracks of every class
==================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import datasets
from .distortions import _ALIASES, DISTORTIONS, DistortedMNIST
from .imageset import ImageSet

__all__ = ["DATASETS", "Splits", "distorted_test_set", "load_splits"]

DATASETS = ("mnist", "fashion_mnist", "cifar10", "svhn", "gtsrb") + tuple(f"mnist_{k}" for k in DISTORTIONS) + tuple(
    f"mnist_{a}" for a in _ALIASES
)
#: Seeds of the fixed validation / test distortions (training draws use the run's seed).
VAL_SEED, TEST_SEED = 1_000_001, 2_000_003


def distorted_test_set(source, kind: str) -> DistortedMNIST:
    """``source`` (e.g. ``stnviz.data.sample("mnist")``) with the fixed ``kind`` distortions the
    shipped models were tested on: the same digits always get the same rotation, scale and place.

    Example:
        >>> from stnviz.data import sample
        >>> rts = distorted_test_set(sample("mnist"), "rts")
        >>> tuple(rts.get(torch.arange(2)).images.shape)
        (2, 1, 42, 42)
    """
    return DistortedMNIST(source, _ALIASES.get(kind, kind), seed=TEST_SEED)


@dataclass
class Splits:
    """Train / val / test batch sources of one data set, its class count and ``image_size (C, H, W)``.

    Example:
        >>> from stnviz.data import sample
        >>> digits = sample("mnist")
        >>> parts = [digits.subset(torch.arange(a, b)) for a, b in ((0, 800), (800, 900), (900, 1000))]
        >>> s = Splits("mnist-sample", *parts, num_classes=10, image_size=digits.image_size)
        >>> len(s.train), len(s.val), len(s.test), s.image_size
        (800, 100, 100, (1, 28, 28))
    """

    name: str
    train: object
    val: object
    test: object
    num_classes: int
    image_size: tuple


def _holdout(ds: ImageSet, n: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    n = min(n, len(ds) // 10)  # small local copies (tests, samples) keep 90% for training
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))
    return ds.subset(order[n:], f"{ds.name}-train"), ds.subset(order[:n], f"{ds.name}-val")


def load_splits(name: str, *, root=None, download: bool = False, seed: int = 0) -> Splits:
    """Train / val / test batch sources for data set ``name`` (see the module table).

    The files come from ``root`` (see :func:`stnviz.data.data_root`); an empty folder gives a
    clear error rather than a download:

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     load_splits("mnist_rts", root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MNIST not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    if not isinstance(name, str):
        raise ValueError(f"data set name must be a string, one of {DATASETS}, got {type(name).__name__} {name!r}")
    if name.startswith("mnist_"):
        kind = _ALIASES.get(name[6:], name[6:])
        if kind not in DISTORTIONS:
            raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
        train, val = _holdout(datasets.mnist(train=True, root=root, download=download), 5000)
        test = datasets.mnist(train=False, root=root, download=download)
        return Splits(
            f"mnist_{kind}",
            DistortedMNIST(train, kind, seed=seed, fresh=True),
            DistortedMNIST(val, kind, seed=VAL_SEED),
            distorted_test_set(test, kind),
            10,
            (1, DISTORTIONS[kind], DISTORTIONS[kind]),
        )
    if name in ("mnist", "fashion_mnist", "cifar10"):
        fn = getattr(datasets, name)
        train, val = _holdout(fn(train=True, root=root, download=download), 5000)
        test = fn(train=False, root=root, download=download)
        return Splits(name, train, val, test, 10, train.image_size)
    if name == "svhn":
        train, val = _holdout(datasets.svhn(split="train", root=root, download=download), 5000)
        test = datasets.svhn(split="test", root=root, download=download)
        return Splits(name, train, val, test, 10, train.image_size)
    if name == "gtsrb":
        full = datasets.gtsrb(split="train", root=root, download=download)
        rest, test = datasets.split_tracks(full, 0.1, seed=0)
        train, val = datasets.split_tracks(rest, 1 / 9, seed=1)
        return Splits(name, train, val, test, datasets.GTSRB_NUM_CLASSES, train.image_size)
    raise ValueError(f"unknown data set {name!r}; expected one of {DATASETS}")
