"""Recording the transformer on a probe batch during training (:class:`ProgressRecorder`, from any
loop or as a :class:`stnviz.train.Callback`), and the same from saved checkpoints."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import render
from ..capture import collect_batch
from ..diagnose.run import HEALTH, health
from ..train import Callback
from .files import _check_fps, check_output_path, save_gif, save_mp4
from .frames import compose_frame, save_contact_sheet

__all__ = ["THETA_COLUMNS", "ProgressRecorder", "Snapshot", "probe_snapshot", "snapshots_from_checkpoints"]


#: A snapshot's figures are :data:`stnviz.diagnose.HEALTH` (as :func:`stnviz.diagnose.diagnose`
#: measures them, the median over the probe) and, for affine families, theta's entries averaged
#: over the probe, row-major: ``theta_0 .. theta_5`` = ``a11 a12 tx a21 a22 ty`` (stnviz's convention).
THETA_COLUMNS = tuple(f"theta_{i}" for i in range(6))


@dataclass
class Snapshot:
    """The probe batch through the model at one training step.

    ``inputs (N, C, H, W)`` is the probe (shared by all snapshots of a run); ``outputs`` the first
    transformer's output; ``outlines (N, P, 2)`` its sampled region in input pixels; ``params``
    its parameters; ``loss`` / ``accuracy`` on the probe (``labels`` given) and, if known, the
    training loss of the step; ``figures``: the health figures (:data:`stnviz.diagnose.HEALTH`) and theta's mean
    entries (:data:`THETA_COLUMNS`, affine families only), measured when recorded.

    Example:
        >>> from stnviz import geometry
        >>> theta = torch.eye(2, 3).expand(4, 2, 3)  # the identity for 4 probe images
        >>> snap = Snapshot(step=100, epoch=0.5, params=theta, outputs=torch.zeros(4, 1, 28, 28),
        ...                 outlines=geometry.sampled_outline(theta, "affine", (28, 28)), loss=0.3, accuracy=0.75)
        >>> snap.step, tuple(snap.outlines.shape), snap.train_loss  # train_loss: NaN when not known
        (100, (4, 64, 2), nan)
    """

    step: int
    epoch: float
    params: torch.Tensor
    outputs: torch.Tensor
    outlines: torch.Tensor
    loss: float
    accuracy: float
    train_loss: float = math.nan
    figures: dict = field(default_factory=dict)


def _snapshot_figures(record) -> dict[str, float]:
    """:data:`stnviz.diagnose.HEALTH` (by :mod:`stnviz.diagnose`'s measures; NaN where it measures nothing: 3-D,
    a 1-pixel grid) and, for affine families, :data:`THETA_COLUMNS` of one capture record."""
    out = health(record)
    theta = record.theta
    if theta is not None:
        theta = theta.detach().double().flatten(1)
        theta = theta[torch.isfinite(theta).all(1)]
        means = theta.mean(0).tolist() if theta.shape[0] else [math.nan] * 6
        out.update(zip(THETA_COLUMNS, means))
    return out


@torch.no_grad()
def probe_snapshot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, *, step: int = 0,
                   epoch: float = 0.0, train_loss: float = math.nan, key: str | None = None,
                   forward: Callable | None = None) -> Snapshot:
    """Run ``model`` on the probe ``images (N, C, H, W)`` (moved to the model's device and floating
    dtype; ``labels (N,)`` too) and return a :class:`Snapshot` of CPU tensors. One forward under
    capture: ``forward(model, images)`` (default ``model(images)``, the logits) for models that take
    more than the images.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> snap = probe_snapshot(model, digits.images, digits.labels, step=500)
        >>> snap.step, snap.accuracy, tuple(snap.params.shape), tuple(snap.outlines.shape)
        (500, 1.0, (4, 2, 3), (4, 32, 2))
        >>> round(snap.figures["area"], 1), round(snap.figures["theta_0"], 1)  # the tutorial's zoom-out
        (1.4, 1.2)
    """
    logits, rec = collect_batch(model, images, forward=forward)
    r = rec.pick(key)
    loss = acc = math.nan
    if labels is not None:
        labels = torch.as_tensor(labels).to(logits.device)
        loss = float(F.cross_entropy(logits.float(), labels))
        acc = float((logits.argmax(1) == labels).float().mean())
    params = r.params.detach().cpu() if r.params is not None else torch.empty(0)
    return Snapshot(step=step, epoch=epoch, params=params, outputs=r.output.detach().cpu(),
                    outlines=r.sampled_outline(8).cpu(), loss=loss, accuracy=acc, train_loss=train_loss,
                    figures=_snapshot_figures(r))


class ProgressRecorder(Callback):
    """The transformer on a fixed probe batch over training, from any loop.

    In a plain PyTorch loop call :meth:`record` (one probe forward under capture, eval mode, no
    grad; the model's modes are restored); with :func:`stnviz.fit` pass it in ``callbacks=[...]``
    and it records every ``every`` optimizer steps (and once before training).

    Args:
        images: probe ``(N, C, H, W)``, as the model takes them (e.g. 8 validation images);
            ``labels (N,)`` optional (probe loss and accuracy).
        every: record every this many optimizer steps (and once before training), under ``fit``.
        max_snapshots: memory bound; when exceeded, every other snapshot is dropped and the
            recording interval doubles, keeping the history evenly spaced.
        key: which transformer (its capture record's key); default the first one that runs.
        forward: ``forward(model, images) -> logits`` for models that take more than the images
            (two inputs, keyword arguments); default ``model(images)``.
        display: how the frames show the pixels (a :class:`stnviz.render.Display`: normalisation
            undone, channel order, contrast); or its ``mean`` / ``std`` (the values a pipeline
            normalised the probe with) or ``denormalize``. Default: the one remembered on the
            recorded model (:func:`stnviz.render.set_display`), else out-of-range inputs stretched.

    Exports: :meth:`frames` / :meth:`save_gif` / :meth:`save_mp4` / :meth:`save_contact_sheet`;
    for loggers :meth:`video` ``(T, 3, H, W)`` uint8, :meth:`image` ``(3, H, W)`` uint8,
    :meth:`to_frame` (pandas) and :meth:`latest` (floats).

    Example (a plain loop recording at steps 0 and 50):
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> rec = ProgressRecorder(digits.images, digits.labels)
        >>> rec.record(model, step=0); rec.record(model, step=50, train_loss=0.2)
        >>> [s.step for s in rec.snapshots], rec.frames(tile=32)[0].shape  # one frame per snapshot
        ([0, 50], (64, 292, 3))
        >>> rec.video(tile=32).shape, rec.image(tile=32).dtype  # (T, 3, H, W) and (3, H, W) uint8
        ((2, 3, 64, 292), dtype('uint8'))
        >>> list(rec.to_frame().columns[:9])
        ['step', 'epoch', 'train_loss', 'loss', 'accuracy', 'area', 'outside', 'identity_px', 'spread_px']
        >>> last = rec.latest()  # the last row as floats
        >>> last["step"], last["train_loss"], round(last["area"], 1)  # the tutorial net's zoom-out
        (50.0, 0.2, 1.4)
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, every: int = 50,
                 max_snapshots: int = 200, key: str | None = None, forward: Callable | None = None,
                 display: render.Display | None = None, mean=None, std=None, denormalize: Callable | None = None):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"probe images must be (N, C, H, W) with N >= 1, got shape {got}")
        if labels is not None and torch.as_tensor(labels).reshape(-1).shape[0] != images.shape[0]:
            raise ValueError(f"probe labels must be (N,) with N={images.shape[0]}, "
                             f"got shape {tuple(torch.as_tensor(labels).shape)}")
        if every < 1 or max_snapshots < 2:
            raise ValueError(f"every must be >= 1 and max_snapshots >= 2, got {every} and {max_snapshots}")
        if forward is not None and not callable(forward):
            raise ValueError(f"forward must be callable forward(model, images) -> logits, got {type(forward).__name__}")
        if mean is not None or std is not None or denormalize is not None:
            if display is not None:
                raise ValueError("pass display or its mean/std/denormalize, not both")
            display = render.Display(mean=mean, std=std, denormalize=denormalize)
        self.inputs = images.detach().cpu().float()
        self.labels = None if labels is None else torch.as_tensor(labels).cpu().long().reshape(-1)
        self.every = every
        self.max_snapshots = max_snapshots
        self.key = key
        self.forward = forward
        self.snapshots: list[Snapshot] = []
        self._composed: dict[int, tuple[Snapshot, np.ndarray]] = {}  # id(snapshot) -> its frame (see _frame)
        self._composed_how = ""  # the compose_frame arguments of those frames
        render.set_display(self, display)

    def record(self, model: nn.Module, step: int, epoch: float = 0.0, train_loss: float = math.nan) -> None:
        """Record ``model`` on the probe at ``step`` (from any loop: after ``optimizer.step()``,
        every few steps). One forward under capture; the model's train/eval modes are restored and
        no gradient is touched. ``train_loss``: the step's training loss, if known (a float)."""
        if self.stnviz_display is None:  # the model's own, once known
            render.set_display(self, getattr(model, "stnviz_display", None))
        snap = probe_snapshot(model, self.inputs, self.labels, step=step, epoch=epoch,
                              train_loss=float(train_loss), key=self.key, forward=self.forward)
        self.snapshots.append(snap)
        if len(self.snapshots) > self.max_snapshots:
            self.snapshots = self.snapshots[::2]
            self.every *= 2

    def on_train_begin(self, state) -> None:
        if state.rank == 0 and not any(s.step == state.step for s in self.snapshots):
            self.record(state.model, state.step, state.epoch)

    def on_step_end(self, state) -> None:
        if state.rank == 0 and state.step % self.every == 0:
            epoch = state.epoch + state.batch_in_epoch / max(1, state.steps_per_epoch)
            self.record(state.model, state.step, epoch, state.loss)

    # exports
    def _frame(self, snap: Snapshot, kwargs: dict) -> np.ndarray:
        """``snap``'s frame (:func:`compose_frame` with ``kwargs``), composed once: a logger that
        pictures each record and then the whole run (the video at the end) composes each frame once.
        Only the frames of the latest ``kwargs`` and of snapshots still held are kept."""
        kwargs.setdefault("display", render.display_of(self))
        how = repr(sorted(kwargs.items()))
        if self._composed_how != how:
            self._composed, self._composed_how = {}, how
        hit = self._composed.get(id(snap))  # (snapshot, frame): the entry holds its snapshot, so no id is reused
        if hit is None or hit[0] is not snap:
            held = {id(s) for s in self.snapshots}
            self._composed = {k: v for k, v in self._composed.items() if k in held}  # not thinned ones
            hit = self._composed[id(snap)] = (snap, compose_frame(self.inputs, snap, **kwargs))
        return hit[1]

    def frames(self, **kwargs) -> list[np.ndarray]:
        """One RGB frame ``(H, W, 3)`` uint8 per snapshot (see :func:`compose_frame`, which takes
        ``kwargs``), shown by the recorder's display."""
        return [self._frame(s, dict(kwargs)).copy() for s in self.snapshots]

    def video(self, **kwargs) -> np.ndarray:
        """``(T, 3, H, W)`` uint8: :meth:`frames` stacked, one per snapshot (the GIF's pictures),
        channels first as video loggers take them (TensorBoard's ``add_video`` after ``[None]``)."""
        _require_snapshots(self.snapshots)
        return np.stack(self.frames(**kwargs)).transpose(0, 3, 1, 2).copy()

    def image(self, index: int = -1, **kwargs) -> np.ndarray:
        """``(3, H, W)`` uint8: snapshot ``index``'s frame (default the latest), channels first as
        image loggers take it (TensorBoard's ``add_image``)."""
        _require_snapshots(self.snapshots)
        n = len(self.snapshots)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise ValueError(f"index must be a whole number in [{-n}, {n - 1}] (the recorder holds {n} snapshots), "
                             f"got {index!r}")
        return self._frame(self.snapshots[index], kwargs).transpose(2, 0, 1).copy()

    def to_frame(self):
        """A pandas table, one row per snapshot: ``step, epoch, train_loss, loss, accuracy`` (NaN
        where not known), the health figures ``area, outside, identity_px, spread_px``
        (:data:`stnviz.diagnose.HEALTH`) and, for affine families, ``theta_0 .. theta_5`` (:data:`THETA_COLUMNS`)."""
        import pandas as pd

        rows = [{"step": s.step, "epoch": s.epoch, "train_loss": s.train_loss, "loss": s.loss,
                 "accuracy": s.accuracy, **{k: math.nan for k in HEALTH}, **s.figures} for s in self.snapshots]
        columns = ["step", "epoch", "train_loss", "loss", "accuracy", *HEALTH]
        if any(c in row for row in rows for c in THETA_COLUMNS):
            columns += THETA_COLUMNS
        return pd.DataFrame(rows, columns=columns)

    def latest(self) -> dict[str, float]:
        """The last row of :meth:`to_frame` as ``{column: float}`` (``step`` included), what a
        logger's ``log_metrics`` takes."""
        _require_snapshots(self.snapshots)
        return {k: float(v) for k, v in self.to_frame().iloc[-1].items()}

    # the path and fps are checked before any frame is composed
    def save_gif(self, path, fps: float = 8, **kwargs) -> Path:
        _check_fps(fps, "GIF")
        check_output_path(path, (".gif",), option="GIF path")
        return save_gif(self.frames(**kwargs), path, fps=fps)

    def save_mp4(self, path, fps: float = 8, **kwargs) -> Path:
        _check_fps(fps, "MP4")
        check_output_path(path, (".mp4",), option="MP4 path")
        return save_mp4(self.frames(**kwargs), path, fps=fps)

    def save_contact_sheet(self, path, rows: int = 8, **kwargs) -> Path:
        kwargs.setdefault("display", render.display_of(self))
        return save_contact_sheet(self.inputs, self.snapshots, path, rows=rows, **kwargs)


def snapshots_from_checkpoints(paths: Sequence[str | os.PathLike], images: torch.Tensor,
                               labels: torch.Tensor | None = None, *, key: str | None = None,
                               device="cpu") -> list[Snapshot]:
    """A snapshot per checkpoint file (e.g. one per epoch), in the given order.

    Example:
        >>> import stnviz
        >>> name = "stn_tutorial.mnist.pt"  # a shipped checkpoint, trained for 12 epochs
        >>> path = next(d / name for d in stnviz.hub.checkpoint_dirs() if (d / name).is_file())
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> snaps = snapshots_from_checkpoints([path], digits.images, digits.labels)
        >>> len(snaps), snaps[0].epoch, snaps[0].accuracy
        (1, 12.0, 1.0)
    """
    from ..checkpoints import load_model

    if not paths:
        raise ValueError("snapshots_from_checkpoints needs at least one checkpoint path, got none")
    out = []
    for i, p in enumerate(paths):
        model = load_model(p, device=device)
        meta = model.meta
        step = int(meta.get("step") or i)
        out.append(probe_snapshot(model, images, labels, step=step, epoch=float(meta.get("epochs") or i), key=key))
    return out


def _require_snapshots(snapshots) -> None:
    if not snapshots:
        raise ValueError("the recorder holds no snapshots: call recorder.record(model, step) (or train with it "
                         "in fit's callbacks) first")
