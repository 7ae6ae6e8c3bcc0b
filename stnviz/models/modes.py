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
    """Put ``model`` in eval mode for the block and restore every submodule's own mode after, also
    on an exception (inspection must never leave a model that was training in eval mode, nor a
    BatchNorm the user froze in eval mode inside a training model switched back to training).

    Example:
        >>> model = nn.Sequential(nn.BatchNorm1d(2), nn.Dropout())
        >>> _ = model[0].eval()  # a frozen BatchNorm inside a training model
        >>> with eval_mode(model):
        ...     print(model.training, model[1].training)
        False False
        >>> model.training, model[0].training, model[1].training  # each as it was
        (True, False, True)
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


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
