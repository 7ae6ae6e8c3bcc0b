"""Small helpers about a model's state: its mode, and the device and dtype its inputs must have."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "model_device_dtype"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its previous mode after, also on an
    exception (inspection must never leave a model that was training in eval mode).

    Example:
        >>> model = nn.Dropout()
        >>> with eval_mode(model):
        ...     print(model.training)
        False
        >>> model.training  # back to training
        True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of ``model``'s first floating parameter or buffer
    (CPU / float32 for a model that has none): where, and in which dtype, its inputs must be.

    >>> model_device_dtype(nn.Linear(2, 1).double())
    (device(type='cpu'), torch.float64)
    """
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32
