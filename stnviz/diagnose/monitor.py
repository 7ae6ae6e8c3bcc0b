""":class:`DiagnoseCallback`: :func:`~stnviz.diagnose.diagnose` over training, on a fixed probe
batch, with the two checks only a history can make: ``exploding`` and ``collapsing``.

Every ``every`` steps the monitor diagnoses the probe batch (one forward in eval mode, no
gradients), keeps each transformer's headline figures (sampled area, share outside, distance from
the identity, spread, theta's norm) and, when the model holds gradients (right after
``backward``, as in :meth:`stnviz.train.Callback.on_step_end`), the gradient norm of the
parameters each transformer's grid depends on (its localisation net) against the rest (the
classifier). Each dynamic check warns once per transformer, at the first step it holds, with a
:class:`MonitorWarning` and a :class:`~stnviz.diagnose.Finding` kept in ``monitor.findings``::

    monitor = DiagnoseCallback(probe_images, every=20)
    stnviz.fit(model, train, callbacks=[monitor])      # or, in any loop: monitor.update(model, step)
    monitor.to_frame()                                 # the figures per step and transformer
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..capture import model_device_dtype
from ..models.modes import eval_mode
from ..train.loop import Callback
from .checks import ZOOM_OUT
from .findings import Diagnosis, Finding
from .run import diagnose

__all__ = ["COLLAPSING", "EXPLODING_GRAD", "EXPLODING_THETA", "DiagnoseCallback", "MonitorWarning", "localisation_params"]


class MonitorWarning(UserWarning):
    """A dynamic check of :class:`DiagnoseCallback` (``exploding``, ``collapsing``) found a problem."""


# exploding, by theta: its norm (median over the probe of the flat parameters' L2 norm) more than 3x
# its value at the first update. The identity affine has norm 1.41; the shipped models end at
# 0.6-1.6 (crops shrink it), the tutorial's zoom-out at 1.7 (1.2x); 3x (4.2, a region 3x the input's
# side) is reached only by a localisation net that runs away, and long before theta turns NaN.
EXPLODING_THETA = 3.0

# exploding, by gradients: the gradient norm of a transformer's localisation parameters more than
# 30x that of the rest of the model. Measured on healthy runs (fit's defaults, 64 steps: stn_tutorial
# on the shipped digits, stn_cnn on RTS digits) the ratio stays within 0.04-0.51: the localisation head
# starts at zero weights and gets gradient only through the sampler. A ratio 60x above that means a step
# moves theta far more than the classifier learns: the run-away, seen before theta grows.
EXPLODING_GRAD = 30.0

# collapsing: the sampled area (median over the probe, in units of the input's area) passed 1.05 and
# rose by more than 0.02 over the last 3 updates. 1.05 is a region that already reaches past the input
# (padding enters the output) well below the zoom_out warning (1.2): rising through it is the road to
# the known zoom-out collapse, reported while it can still be fixed. A healthy crop shrinks the area.
COLLAPSING = 1.05
COLLAPSING_RISE, COLLAPSING_WINDOW = 0.02, 3


class _GridsOf(TorchFunctionMode):
    """Keep the grid of every ``F.grid_sample`` call, in call order (with its autograd graph)."""

    def __init__(self):
        super().__init__()
        self.grids = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.grid_sample:
            self.grids.append(args[1] if len(args) > 1 else kwargs["grid"])
        return func(*args, **kwargs)


def localisation_params(model: nn.Module, images: torch.Tensor, *, forward: Callable | None = None) -> list[set]:
    """For each ``F.grid_sample`` call of ``forward(model, images)`` (default ``model(images)``), in
    call order: the names of the parameters its grid depends on (the transformer's localisation net,
    and any trunk before it). One forward in eval mode with gradients; the model is left unchanged.

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> [sorted(p)[:2] for p in localisation_params(model, torch.rand(2, 1, 28, 28))]
        [['transformer.localization.0.bias', 'transformer.localization.0.weight']]
    """
    device, dtype = model_device_dtype(model)
    images = images.to(device=device, dtype=dtype) if images.is_floating_point() else images.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grab = _GridsOf()
    with torch.enable_grad(), eval_mode(model), grab:
        (forward or (lambda m, x: m(x)))(model, images)
    out = []
    for grid in grab.grids:
        if not grid.requires_grad or not named:
            out.append(set())
            continue
        grads = torch.autograd.grad(grid.sum(), [p for _, p in named], allow_unused=True, retain_graph=True)
        out.append({n for (n, _), g in zip(named, grads) if g is not None})
    return out


def _norm(grads: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads)) if grads else float("nan")


def _theta_norm(record) -> float:
    if record.params is None:
        return float("nan")
    norms = record.params.detach().double().flatten(1).norm(dim=1)
    norms = norms[torch.isfinite(norms)]
    return float(norms.median()) if norms.numel() else float("nan")


class DiagnoseCallback(Callback):
    """:func:`~stnviz.diagnose.diagnose` on a fixed probe batch every ``every`` steps, a history of
    its figures (:meth:`to_frame`) and the dynamic checks ``exploding`` and ``collapsing``.

    Args:
        images: the probe batch ``(N, C, H, W)`` (e.g. 64 validation images, as the model takes them).
        every: diagnose every this many steps (and once when training begins).
        forward: ``forward(model, images)`` for models that take more than the images.
        warn: issue a :class:`MonitorWarning` on each new finding (they are kept in ``findings`` either way).

    With :func:`stnviz.fit` pass it in ``callbacks=[...]``; in any loop call
    :meth:`update` after ``optimizer.step()`` (gradients still present give the gradient check).
    ``diagnosis`` holds the latest full :class:`~stnviz.diagnose.Diagnosis`.

    Example (a transformer that zooms out a little more at every step):
        >>> import stnviz, warnings
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> monitor = DiagnoseCallback(stnviz.data.sample("mnist").get(torch.arange(16)).images, every=1)
        >>> with warnings.catch_warnings(record=True):
        ...     for step, scale in enumerate([1.0, 1.01, 1.02, 1.04, 1.06, 1.08]):
        ...         model.transformers[0].set_constant_params(torch.tensor([scale, 0, 0, 0, scale, 0]))
        ...         _ = monitor.update(model, step)
        >>> [(f.check, f.step, round(f.value, 2)) for f in monitor.findings]
        [('collapsing', 3, 1.08)]
    """

    def __init__(self, images: torch.Tensor, *, every: int = 50, forward: Callable | None = None, warn: bool = True):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"probe images must be a batch (N, C, H, W) with N >= 1, got {got}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.images = images.detach().cpu()
        self.every, self.forward, self.warn = every, forward, warn
        self.history: list[dict] = []
        self.findings: list[Finding] = []
        self.diagnosis: Diagnosis | None = None
        self._loc: list[set] | None = None
        self._first_theta: dict[str, float] = {}

    # ------------------------------------------------------------------ the work
    def update(self, model: nn.Module, step: int) -> list[Finding]:
        """Diagnose the probe batch at ``step``, add a row per transformer to the history, run the
        dynamic checks and return the findings new at this step (each also warned, once)."""
        d = diagnose(model, self.images, forward=self.forward)
        self.diagnosis = d
        grads = self._grad_norms(model, d)
        new = []
        for key, fig in d.figures.items():
            row = {"step": step, "key": key, **{k: fig[k] for k in ("area", "outside", "identity_px", "spread_px")},
                   "theta_norm": _theta_norm(d.records[key]), **grads.get(key, {}), "worst": _worst_of(d, key)}
            self.history.append(row)
            new.extend(f for f in (self._exploding(key), self._collapsing(key)) if f is not None)
        for f in new:
            self.findings.append(f)
            if self.warn:
                warnings.warn(f"step {f.step}: {f.check} on {f.key!r}: {f.message}; {f.fix}", MonitorWarning, stacklevel=2)
        return new

    def _grad_norms(self, model: nn.Module, d: Diagnosis) -> dict:
        params = dict(model.named_parameters())
        if not any(p.grad is not None for p in params.values()):
            return {}
        if self._loc is None:
            self._loc = localisation_params(model, self.images[:2], forward=self.forward)
        out = {}
        for key, r in d.records.items():
            if key not in d.figures or r.call >= len(self._loc) or not self._loc[r.call]:
                continue
            loc = [p.grad for n, p in params.items() if n in self._loc[r.call] and p.grad is not None]
            rest = [p.grad for n, p in params.items() if n not in self._loc[r.call] and p.grad is not None]
            out[key] = {"grad_loc": _norm(loc), "grad_rest": _norm(rest)}
        return out

    def _rows(self, key: str) -> list[dict]:
        return [r for r in self.history if r["key"] == key]

    def _found(self, check: str, key: str) -> bool:
        return any(f.check == check and f.key == key for f in self.findings)

    def _exploding(self, key: str) -> Finding | None:
        if self._found("exploding", key):
            return None
        row = self._rows(key)[-1]
        first = self._first_theta.setdefault(key, row["theta_norm"])
        growth = row["theta_norm"] / first if first and first == first else float("nan")
        ratio = row.get("grad_loc", float("nan")) / row.get("grad_rest", float("nan")) if row.get("grad_rest") else float("nan")
        fix = ("lower the localisation net's learning rate (fit(loc_lr=...), e.g. 10x below lr), clip gradients "
               "(torch.nn.utils.clip_grad_norm_), bound theta (tanh on the localisation output) and start its last "
               "layer at the identity (weight 0, bias [1, 0, 0, 0, 1, 0])")
        if growth > EXPLODING_THETA:
            return Finding("exploding", key, "error", growth, EXPLODING_THETA,
                            f"theta's norm grew {growth:.1f}x since the first update ({first:.2f} -> "
                            f"{row['theta_norm']:.2f}) by step {row['step']}: the localisation net runs away",
                            f"stop theta growing ({growth:.1f}x): " + fix, step=row["step"])
        if ratio > EXPLODING_GRAD:
            return Finding("exploding", key, "warning", ratio, EXPLODING_GRAD,
                            f"the localisation net's gradient norm is {ratio:.1f}x the rest of the model's "
                            f"({row['grad_loc']:.3g} vs {row['grad_rest']:.3g}) at step {row['step']}",
                            f"bring the gradient ratio ({ratio:.1f}x) under {EXPLODING_GRAD:g}x: " + fix, step=row["step"])
        return None

    def _collapsing(self, key: str) -> Finding | None:
        rows = self._rows(key)
        if self._found("collapsing", key) or len(rows) < COLLAPSING_WINDOW:
            return None
        areas = [r["area"] for r in rows[-COLLAPSING_WINDOW:]]
        area, rise = areas[-1], areas[-1] - areas[0]
        if not (area > COLLAPSING and rise > COLLAPSING_RISE):
            return None
        start = rows[-COLLAPSING_WINDOW]["step"]
        severity = "error" if area > ZOOM_OUT[1] else "warning"
        return Finding(
            "collapsing", key, severity, area, COLLAPSING,
            f"the sampled area rose from {areas[0]:.2f} to {area:.2f}x the input's (steps {start}-{rows[-1]['step']}), "
            f"past {COLLAPSING}: heading for the zoom-out collapse (zoom_out warns at {ZOOM_OUT[0]})",
            f"stop the area ({area:.2f}) growing: keep images in [0, 1] and normalise inside the model after "
            "grid_sample (normalising before it makes zero padding a grey frame), lower the localisation learning "
            "rate (fit(loc_lr=...)) or penalise regions leaving the input (fit(region_penalty=1.0))", step=rows[-1]["step"])

    # ------------------------------------------------------------------ views
    def to_frame(self):
        """The history as a pandas table, one row per update and transformer: ``step, key, area,
        outside, identity_px, spread_px, theta_norm, grad_loc, grad_rest, worst`` (the
        gradient columns NaN when no gradients were present; ``worst``: the static checks' worst
        severity at that step)."""
        import pandas as pd

        cols = ["step", "key", "area", "outside", "identity_px", "spread_px", "theta_norm", "grad_loc", "grad_rest", "worst"]
        return pd.DataFrame(self.history, columns=cols)

    # ------------------------------------------------------------------ Callback
    def on_train_begin(self, state) -> None:
        if state.rank == 0 and not any(r["step"] == state.step for r in self.history):
            self.update(state.model, state.step)

    def on_step_end(self, state) -> None:
        if state.rank == 0 and state.step % self.every == 0:
            self.update(state.model, state.step)


def _worst_of(d: Diagnosis, key: str) -> str:
    return max((f.severity for f in d.findings if f.key == key), key=("ok", "warning", "error").index, default="ok")
