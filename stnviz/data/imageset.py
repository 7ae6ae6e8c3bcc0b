"""An image set held in memory as one uint8 tensor, batched straight onto the training device.

Epochs never decode images one by one: a batch is an index into the tensor, moved to the device
and scaled to ``[0, 1]`` there. Wherever a user meets images (``ImageSet.images``, a
:class:`Batch`) they are float in ``[0, 1]``; the stored uint8 pixels are ``ImageSet.pixels``. Shuffling is a permutation from ``(seed, epoch)``, so a run that
resumes mid-epoch sees exactly the batches it would have seen, and distributed ranks take
disjoint slices of the same permutation (distributed sampling without a DataLoader).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch

__all__ = ["Batch", "ImageSet", "epoch_order", "to_device"]


@dataclass
class Batch:
    """``images (B, C, H, W)`` float in [0, 1] on the device, ``labels (B,)`` int64, ``index (B,)``
    (positions in the source set) and ``extras``: per-sample tensors such as ground-truth theta.

    A batch unpacks as ``images, labels``, as a DataLoader's batches do, so a plain PyTorch loop
    takes it as it is: ``for images, labels in train.batches(64): ...``.

    Example:
        >>> from stnviz.data import sample
        >>> batch = sample("mnist").get(torch.tensor([0, 1, 2]))
        >>> tuple(batch.images.shape), batch.images.dtype, batch.labels.tolist(), batch.index.tolist()
        ((3, 1, 28, 28), torch.float32, [7, 2, 1], [0, 1, 2])
        >>> images, labels = batch
        >>> images is batch.images, labels.tolist()
        (True, [7, 2, 1])
    """

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    extras: dict = field(default_factory=dict)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """``images, labels``: what a training loop unpacks (``index`` and ``extras`` stay attributes)."""
        return iter((self.images, self.labels))


def epoch_order(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The sample order of one epoch for one rank: a ``(seed, epoch)`` permutation (or ``arange``),
    padded by wrapping so every rank gets the same count, then ``rank::world_size``.

    Example:
        >>> epoch_order(5, shuffle=False, seed=0, epoch=0, rank=1, world_size=2).tolist()  # 0 wraps round
        [1, 3, 0]
        >>> torch.equal(epoch_order(5, shuffle=True, seed=1, epoch=2), epoch_order(5, shuffle=True, seed=1, epoch=2))
        True
    """
    if shuffle:
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    if world_size > 1:
        per_rank = -(-n // world_size)
        pad = per_rank * world_size - n
        if pad:
            order = torch.cat([order, order[:pad]])
        order = order[rank::world_size]
    return order


def to_device(t: torch.Tensor, device=None) -> torch.Tensor:
    """``t`` on ``device`` (``None``: where it is). A CPU -> CUDA copy goes through pinned
    (page-locked) memory and does not block, so the next batch's copy overlaps the current step's
    compute; anything else is a plain ``.to``.

    Example:
        >>> to_device(torch.ones(2), "cpu").device, to_device(torch.ones(2)).device  # None: where it is
        (device(type='cpu'), device(type='cpu'))
    """
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


class ImageSet:
    """Images ``(N, C, H, W)`` with labels ``(N,)`` and optional per-sample columns (``extras``:
    tensors with first dimension N, e.g. GTSRB track ids).

    ``pixels`` holds the images as given: uint8 0-255 (a quarter of float's memory: the data sets
    and shipped samples) or float in [0, 1]. ``images`` is always float in [0, 1], as in every
    :class:`Batch`: a converted copy of all of them (for a few samples of a large set, :meth:`get`).

    Example:
        >>> ds = ImageSet(torch.full((6, 1, 28, 28), 255, dtype=torch.uint8), torch.arange(6) % 3, name="toy")
        >>> len(ds), ds.image_size, ds.pixels.dtype, ds.images.dtype, ds.images.max().item()
        (6, (1, 28, 28), torch.uint8, torch.float32, 1.0)
        >>> [tuple(images.shape) for images, labels in ds.batches(4)]  # float in [0, 1], on the device
        [(4, 1, 28, 28), (2, 1, 28, 28)]
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, name: str = "images", classes=None, **extras):
        for what, v in (("images", images), ("labels", labels), *((f"extra column {k!r}", v) for k, v in extras.items())):
            if not isinstance(v, torch.Tensor):
                raise ValueError(f"{name}: {what} must be a torch.Tensor, got {type(v).__name__} (wrap it in torch.as_tensor)")
        if images.dim() != 4:
            raise ValueError(f"{name}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{name}: labels must be (N,) with N={images.shape[0]}, got shape {tuple(labels.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"{name}: images must be uint8 or float in [0, 1], got {images.dtype}")
        if labels.is_floating_point() and not bool((labels == labels.round()).all()):
            raise ValueError(f"{name}: labels must be whole class numbers, got fractional values such as {labels[labels != labels.round()][0].item()}")
        for k, v in extras.items():
            if v.dim() == 0 or v.shape[0] != images.shape[0]:
                raise ValueError(f"{name}: extra column {k!r} must have {images.shape[0]} rows, got shape {tuple(v.shape)}")
        self.pixels = images
        self.labels = labels.long()
        self.extras = extras
        self.name = name
        self.classes = classes

    def __len__(self) -> int:
        return self.pixels.shape[0]

    @property
    def images(self) -> torch.Tensor:
        """``(N, C, H, W)`` float in [0, 1]: every image, converted from :attr:`pixels` (a new tensor)."""
        return self.to_float(self.pixels)

    @property
    def image_size(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])

    def subset(self, index: torch.Tensor, name: str | None = None) -> "ImageSet":
        """The samples at ``index`` (a LongTensor or bool mask), as a new set sharing no storage."""
        return ImageSet(
            self.pixels[index], self.labels[index], name=name or self.name, classes=self.classes,
            **{k: v[index] for k, v in self.extras.items()},
        )

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (pixels of this set: uint8 0-255, or float) as float in [0, 1]."""
        return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()

    def get(self, index: torch.Tensor, device=None) -> Batch:
        """One batch of the samples at ``index`` on ``device``."""
        index = torch.as_tensor(index, dtype=torch.long)
        images = self.to_float(to_device(self.pixels[index], device))
        extras = {k: to_device(v[index], device) for k, v in self.extras.items()}
        return Batch(images, to_device(self.labels[index], device), index, extras)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, device=None,
        rank: int = 0, world_size: int = 1, start: int = 0,
    ) -> Iterator[Batch]:
        """Yield batches of one epoch; ``start`` skips the first batches (for resuming)."""
        _check_batch_size(batch_size)
        order = epoch_order(len(self), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        for i in range(start * batch_size, len(order), batch_size):
            yield self.get(order[i : i + batch_size], device)

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        _check_batch_size(batch_size)
        per_rank = -(-len(self) // world_size)
        return -(-per_rank // batch_size)

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, n={len(self)}, image_size={self.image_size}, extras={sorted(self.extras)})"
