"""Running a model and collecting its records: :func:`collect_batch` (one batch), :func:`collect`
(batches joined per key, a :class:`Collection`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..models.modes import eval_mode, model_device_dtype
from .context import capture
from .records import Capture, TransformRecord, _first_call_order

__all__ = ["Collection", "collect", "collect_batch"]


def _default_forward(model, images):
    return model(images)


def collect_batch(model: nn.Module, images: torch.Tensor, *, forward: Callable | None = None,
                  keep_last: int | None = None, batch_slice=None, allow_empty: bool = False) -> tuple[Any, Capture]:
    """Run ``forward(model, images)`` (default ``model(images)``) once, in eval mode without
    gradients, and return ``(output, capture)``.

    ``images (B, C, H, W)`` go to the model's device and floating dtype first (half, bf16), so
    a CPU float batch works with any model. The one "run a model on a batch and collect records"
    loop of the package: the widgets, :mod:`stnviz.analysis` and :mod:`stnviz.animate` use it.
    A ``DistributedDataParallel`` (or ``DataParallel``) model runs its wrapped module: DDP's own
    forward would sync buffers with ranks that are not running this batch (one rank records).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> logits, rec = collect_batch(model, torch.rand(4, 1, 28, 28))
        >>> logits.shape, rec.keys(), model.training  # the model's own mode is restored
        (torch.Size([4, 10]), ['transformer'], True)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (B, C, H, W), got {type(images).__name__}")
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    device, dtype = model_device_dtype(model)
    if images.is_floating_point():
        images = images.to(device=device, dtype=dtype)
    else:
        images = images.to(device)
    forward = forward or _default_forward
    with torch.no_grad(), eval_mode(model), capture(model, keep_last=keep_last, batch_slice=batch_slice,
                                                     allow_empty=allow_empty) as rec:
        output = forward(model, images)
    return output, rec


@dataclass
class Collection:
    """What :func:`collect` gathered: one record per key with the batches joined, and the model's
    outputs per batch (detached).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> col = collect(model, torch.rand(5, 1, 28, 28), batch_size=2)  # 3 batches, joined per key
        >>> col.keys(), col.records["transformer"].output.shape, len(col.outputs), col.skipped
        (['transformer'], torch.Size([5, 1, 28, 28]), 3, {})
    """

    records: dict[str, TransformRecord]
    outputs: list
    skipped: dict[str, str] = field(default_factory=dict)

    def keys(self, role: str | None = None) -> list[str]:
        """Keys in first-call order within a forward, as :meth:`Capture.keys` (only ``role`` if given)."""
        return _first_call_order(self.records.values(), role)


def _detach(out):
    """Detached tensors in the same nesting of tuples, lists and dicts."""
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)) and type(out) in (tuple, list):
        return type(out)(_detach(o) for o in out)
    if isinstance(out, dict):
        return {k: _detach(v) for k, v in out.items()}
    return out


def collect(model: nn.Module, images: torch.Tensor, *, forward: Callable | None = None,
            batch_size: int | None = None, keep: Callable | None = None) -> Collection:
    """Run ``images (N, C, H, W)`` through ``model`` in batches (all at once when ``batch_size``
    is ``None``) and join each key's records over the batches.

    ``keep(record) -> record``: what is kept of each batch's records before they are joined (e.g.
    the inspector keeps shapes and parameters only, so memory grows with the batch, not the images).

    A key that is missing from some batch, or whose shapes differ between batches, can't be joined:
    it is left out and listed in ``skipped`` with the reason. A model that samples nothing gives an
    empty collection (callers decide whether that is an error).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_gtsrb", device="cpu")
        >>> col = collect(model, torch.rand(5, 3, 32, 32), batch_size=2)
        >>> col.keys(), tuple(col.records["transformer"].theta.shape)
        (['transformer', 'body.1'], (5, 2, 3))
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    n = images.shape[0]
    step = n if batch_size is None else batch_size
    per_key: dict[str, list] = {}
    outputs = []
    batches = 0
    for i in range(0, n, step):
        out, rec = collect_batch(model, images[i : i + step], forward=forward, allow_empty=True)
        outputs.append(_detach(out))
        batches += 1
        seen = set()
        for r in rec:
            if r.key in seen:
                continue  # one record per key and batch (a key repeats only if the model ran twice)
            seen.add(r.key)
            per_key.setdefault(r.key, []).append(r if keep is None else keep(r))
    records, skipped = {}, {}
    for key, recs in per_key.items():
        if len(recs) != batches:
            skipped[key] = f"sampled in {len(recs)} of {batches} batches"
            continue
        shapes = {(r.input.shape[1:], r.output.shape[1:], r.grid.shape[1:]) for r in recs}
        if len(shapes) > 1:
            skipped[key] = "its shapes differ between batches"
            continue
        records[key] = TransformRecord.cat(recs)
    return Collection(records, outputs, skipped)
