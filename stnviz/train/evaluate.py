"""Loss and accuracy of a model on a batch source, and the checks of a data set against a model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..device import resolve_device
from ..models import eval_mode, model_device_dtype
from .config import check_option

__all__ = ["evaluate"]


def _check_data(model: nn.Module, data, role: str) -> None:
    """Refuse an empty set, or images of another size than the model was built for, before any work."""
    n = len(data) if hasattr(data, "__len__") else None
    if n == 0:
        raise ValueError(f"the {role} set {data!r} is empty; expected at least one sample")
    expected = getattr(model, "input_size", None)
    got = getattr(data, "image_size", None)
    if expected is not None and got is not None and tuple(expected) != tuple(got):
        raise ValueError(
            f"the {role} set's images are {'x'.join(map(str, got))} (C x H x W), but the model was built for "
            f"{'x'.join(map(str, expected))}; use data of that size or build the model with input_size={list(got)}"
        )


@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 512, device=None) -> dict:
    """Loss and accuracy of ``model`` on a batch source: ``{"loss", "accuracy", "error", "n"}``.

    The batches go to the model's device and floating dtype (a half-precision model on a GPU
    gets half-precision images). ``device``: ``None`` evaluates where the model is; otherwise
    it is resolved with :func:`stnviz.device.resolve_device` and the model is moved there first, as
    :func:`fit` does.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> result = evaluate(model, stnviz.data.sample("mnist").subset(torch.arange(100)))
        >>> sorted(result), result["n"], result["accuracy"] > 0.9
        (['accuracy', 'error', 'loss', 'n'], 100, True)
    """
    check_option("batch_size", batch_size)
    _check_data(model, data, "evaluation")
    if device is not None:
        model.to(resolve_device(device))
    dev, dtype = model_device_dtype(model)
    total, correct, loss_sum = 0, 0, 0.0
    with eval_mode(model):
        for batch in data.batches(batch_size, device=dev):
            logits = model(batch.images.to(dtype))
            loss_sum += float(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
            correct += int((logits.argmax(1) == batch.labels).sum())
            total += batch.labels.numel()
    if total == 0:
        raise ValueError(f"evaluate got an empty data set ({data!r})")
    return {"loss": loss_sum / total, "accuracy": correct / total, "error": 1 - correct / total, "n": total}

