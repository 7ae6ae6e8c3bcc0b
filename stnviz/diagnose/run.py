""":func:`diagnose`: run a model on a batch under capture, measure every record, run the checks,
and (with labels) the ``no_effect`` intervention: the same forward with one transformer's grid
swapped for the identity grid by a torch function mode, the user's code untouched."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..capture import CaptureError, collect_batch, model_device_dtype
from ..models.modes import eval_mode
from .checks import Subject, no_effect, run_checks
from .findings import Diagnosis
from .measures import measure

__all__ = ["diagnose", "identity_grid_swapped"]


def _default_forward(model, images):
    return model(images)


def _default_predict(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return output.argmax(1)
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    raise ValueError(f"diagnose with labels needs class scores (B, K) from the forward to take argmax of, got "
                     f"{shape}; pass predict=lambda output: ... returning the predicted labels (B,)")


class _SwapGrid(TorchFunctionMode):
    """Replace the grid of the ``index``-th ``F.grid_sample`` call (0-based, counted from entering)
    with the identity grid of the same shape and ``align_corners``."""

    def __init__(self, index: int):
        super().__init__()
        self.index, self.seen = index, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.grid_sample:
            if self.seen == self.index:
                args, kwargs = _with_identity_grid(args, kwargs)
            self.seen += 1
        return func(*args, **kwargs)


def _with_identity_grid(args, kwargs):
    args = list(args)
    inp = args[0] if args else kwargs["input"]
    grid = args[1] if len(args) > 1 else kwargs["grid"]
    ac = args[4] if len(args) > 4 else kwargs.get("align_corners")
    if grid.dim() != 4:  # a 3-D sampler: left as it is
        return tuple(args), kwargs
    b, h, w = grid.shape[:3]
    eye = torch.eye(2, 3, device=grid.device, dtype=torch.float32).expand(b, 2, 3)
    identity = F.affine_grid(eye, [b, inp.shape[1], h, w], align_corners=bool(ac)).to(grid.dtype)
    if len(args) > 1:
        args[1] = identity
    else:
        kwargs["grid"] = identity
    return tuple(args), kwargs


def identity_grid_swapped(model: nn.Module, images: torch.Tensor, call: int, *, forward: Callable | None = None):
    """``forward(model, images)`` in eval mode without gradients, with the grid of the model's
    ``call``-th ``grid_sample`` call (0-based, the capture's ``record.call`` in a one-forward
    capture) replaced by the identity grid: what the model does when that transformer does nothing.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> rts = stnviz.data.distorted_test_set(stnviz.data.sample("mnist"), "rts").get(torch.arange(64))
        >>> with_st = model.eval()(rts.images).argmax(1)
        >>> without = identity_grid_swapped(model, rts.images, 0).argmax(1)
        >>> bool((with_st == rts.labels).float().mean() > (without == rts.labels).float().mean())
        True
    """
    forward = forward or _default_forward
    device, dtype = model_device_dtype(model)
    images = images.to(device=device, dtype=dtype) if images.is_floating_point() else images.to(device)
    with torch.no_grad(), eval_mode(model), _SwapGrid(call):
        return forward(model, images)


def _check_inputs(images, labels) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be a batch (B, C, H, W), got shape {tuple(images.shape)}"
                         + (" (add the batch dimension: images[None])" if images.dim() == 3 else ""))
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a tensor (B,) of class indices, got {got}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have one entry per image: expected {images.shape[0]}, "
                             f"got {labels.shape[0]}")


def _measures(r):
    if r.spatial_dims != 2 or r.role != "image" or min(r.grid.shape[1:3]) < 2:
        return None
    return measure(r)


#: The health figures of a record, by name: median sampled area / input area, median share of grid
#: points outside the input, median distance of the grid from the identity and the grid's spread
#: across the batch (both in input pixels). What :class:`Diagnosis.figures`, the monitor's table and
#: :class:`stnviz.animate.ProgressRecorder`'s table report.
HEALTH = ("area", "outside", "identity_px", "spread_px")


def _figures(m) -> dict:
    def med(t):
        t = t[torch.isfinite(t)]
        return float(t.median()) if t.numel() else float("nan")
    return dict(zip(HEALTH, (med(m.area_ratio), med(m.outside_share), med(m.identity_px), m.grid_spread_px)))


def health(record) -> dict[str, float]:
    """The :data:`HEALTH` figures of one capture record; NaN where nothing is measured (a 3-D,
    non-image or 1-pixel sampling).

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> with stnviz.capture(model) as rec:
        ...     _ = model(stnviz.data.sample("mnist").get(torch.arange(8)).images)
        >>> sorted(health(rec.last()))
        ['area', 'identity_px', 'outside', 'spread_px']
    """
    m = _measures(record)
    return _figures(m) if m is not None else dict.fromkeys(HEALTH, float("nan"))


def diagnose(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
             forward: Callable | None = None, predict: Callable | None = None) -> Diagnosis:
    """Run ``model`` on ``images (B, C, H, W)`` under :func:`stnviz.capture.capture` and check
    every transformer it has (any sampler call: stnviz's, foreign code, several, TPS or dense).

    In eval mode without gradients on the model's device; every submodule's mode is restored.
    ``forward(model, images)`` replaces ``model(images)`` (two-input models, extra arguments).
    With ``labels (B,)`` each image transformer also gets the ``no_effect`` check: the batch's
    accuracy as is against the accuracy with that transformer's grid swapped for the identity
    (``predict(output)`` gives the predicted labels, default ``output.argmax(1)``).

    Returns a :class:`~stnviz.diagnose.Diagnosis`: every check's :class:`~stnviz.diagnose.Finding`
    for every record. A model that makes no sampler call, images that are not a batch and labels
    of another length are a ``ValueError`` naming what was expected and what came.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> rts = stnviz.data.distorted_test_set(stnviz.data.sample("mnist"), "rts").get(torch.arange(64))
        >>> d = diagnose(model, rts.images, rts.labels)
        >>> d.ok, d.worst, round(d.figures["transformer"]["area"], 2)
        (True, 'ok', 0.3)
    """
    _check_inputs(images, labels)
    try:
        output, rec = collect_batch(model, images, forward=forward, allow_empty=True)
    except CaptureError:
        raise
    except RuntimeError as e:  # torch's own shape errors, from code that does not check its input
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{type(model).__name__} could not run on images of shape {tuple(images.shape)}: {first}; "
                         "pass images of the shape the model expects (B, C, H, W)") from e
    if not len(rec):
        raise ValueError(f"diagnose needs a model that samples with grid_sample (a spatial transformer): expected "
                         f"at least one sampler call in {type(model).__name__}'s forward on images "
                         f"{tuple(images.shape)}, got none")
    records, subjects = {}, []
    for r in rec:
        if r.key in records:  # the model ran twice in forward: its first run is diagnosed
            continue
        subjects.append(Subject(r, _measures(r), tuple(images.shape[1:]), list(records.values())))
        records[r.key] = r
    findings, figures = [], {}
    for s in subjects:
        findings.extend(run_checks(s))
        if s.measures is not None:
            figures[s.record.key] = _figures(s.measures)
    if labels is not None:
        predict = predict or _default_predict
        labels = labels.cpu()
        accuracy = float((predict(output).cpu() == labels).double().mean())
        for s in subjects:
            if s.measures is None:
                continue
            swapped = identity_grid_swapped(model, images, s.record.call, forward=forward)
            without = float((predict(swapped).cpu() == labels).double().mean())
            findings.append(no_effect(s.record.key, accuracy, without, len(labels)))
            figures[s.record.key].update(accuracy=accuracy, accuracy_identity=without)
    return Diagnosis(findings, records=records, figures=figures, batch_size=images.shape[0])
