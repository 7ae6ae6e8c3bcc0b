"""The optimizer and its learning-rate schedule, built from a run's settings."""

from __future__ import annotations

import torch
from torch import nn

from ..models import param_groups

__all__ = ["make_optimizer", "make_schedule"]


def make_optimizer(model: nn.Module, name: str = "sgd", *, lr: float, loc_lr: float | None = None,
                   momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``momentum > 0``) or AdamW over :func:`stnviz.models.param_groups`.

    Example:
        >>> import stnviz
        >>> opt = make_optimizer(stnviz.get_model("stn_tutorial", device="cpu"), lr=0.1)
        >>> type(opt).__name__, [g["lr"] for g in opt.param_groups]  # the localisation nets get lr / 10
        ('SGD', [0.1, 0.01])
    """
    groups = param_groups(model, lr, loc_lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def make_schedule(opt: torch.optim.Optimizer, name: str, *, total_steps: int):
    """The learning-rate schedule, stepped once per optimizer step: ``"onecycle"`` (peak at 20%),
    ``"cosine"`` or ``"constant"``.

    Example:
        >>> import stnviz
        >>> opt = make_optimizer(stnviz.get_model("stn_tutorial", device="cpu"), lr=0.1)
        >>> schedule, lrs = make_schedule(opt, "cosine", total_steps=4), []
        >>> for _ in range(4):
        ...     opt.step(); schedule.step(); lrs.append(round(opt.param_groups[0]["lr"], 3))
        >>> lrs
        [0.085, 0.05, 0.015, 0.0]
    """
    if name == "onecycle":
        max_lrs = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=total_steps, pct_start=0.2)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {name!r}")
