"""A Lightning callback recording the transformer on a probe batch and logging it to the Trainer's
loggers (``pip install 'stnviz[lightning]'``; imported only when this module is).

:class:`STNCallback` holds a :class:`stnviz.animate.ProgressRecorder`. On global rank 0 only it
runs the probe through the LightningModule (no gradients, eval mode, the module itself rather than
its DDP wrapper: no collective, so the other ranks wait for nothing but the probe forward) every
``every_n_steps`` optimizer steps, and writes to every logger of the Trainer
(:func:`lightning_logger`): the health and theta figures as scalars, the current sampled regions as
an image, the training as a video at the end (and every ``log_video_every_n_steps``), and the GIF
into the Trainer's log folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..animate import ProgressRecorder
from .loggers import MLflow, TensorBoard, Wandb, _write_gif, log_progress, log_progress_video, require

pl = require("lightning.pytorch", "lightning")

__all__ = ["STNCallback", "lightning_logger"]


class _MetricsOnly:
    """A Lightning logger without images (CSVLogger and others): the scalars through its
    ``log_metrics``; pictures and videos are not written."""

    def __init__(self, logger):
        self.logger = logger

    def log_scalars(self, scalars, step):
        self.logger.log_metrics(dict(scalars), step)

    def log_image(self, name, image, step):
        pass

    def log_video(self, name, video, fps, step):
        pass

    def close(self):
        pass


#: Lightning's logger class name -> the stnviz logger over its ``experiment``
_BY_CLASS = {
    "TensorBoardLogger": lambda lg: TensorBoard(writer=lg.experiment),
    "MLFlowLogger": lambda lg: MLflow(lg.run_id, client=lg.experiment),
    "WandbLogger": lambda lg: Wandb(lg.experiment, step_key="trainer/global_step"),
}


def lightning_logger(logger):
    """The stnviz :class:`~stnviz.integrations.loggers.Logger` writing to a Lightning logger's
    ``experiment``: TensorBoardLogger, MLFlowLogger, WandbLogger (and their subclasses); any other
    (CSVLogger...) gets the scalars through its ``log_metrics``. Call it on rank 0: elsewhere
    Lightning's experiments are stand-ins.

    Example:
        >>> import tempfile
        >>> from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
        >>> type(lightning_logger(TensorBoardLogger(tempfile.mkdtemp()))).__name__
        'TensorBoard'
        >>> type(lightning_logger(CSVLogger(tempfile.mkdtemp()))).__name__
        '_MetricsOnly'
    """
    for cls in type(logger).__mro__:
        if cls.__name__ in _BY_CLASS:
            return _BY_CLASS[cls.__name__](logger)
    return _MetricsOnly(logger)


def _loss_of(outputs) -> float:
    """The training loss in what ``training_step`` returned (a tensor or a dict with ``"loss"``)."""
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
        return float(outputs.detach())
    return math.nan


class STNCallback(pl.Callback):
    """Record the transformer of a LightningModule on a fixed probe batch and log it.

    Args:
        probe_images: ``(N, C, H, W)`` as the module takes them (e.g. 8 validation images);
            ``probe_labels (N,)`` optional (probe loss and accuracy).
        every_n_steps: record (and log the figures and the picture) every this many optimizer
            steps (``trainer.global_step``), once before training and once at its end.
        log_video_every_n_steps: also log the video so far every this many steps (default: at
            the end only).
        forward: ``forward(module, images) -> logits`` when the module's ``forward`` is not that.
        gif_name: the GIF written at the end into the Trainer's log folder (``None``: none).
        fps, frame: the video's frames per second and the pictures' options
            (:func:`stnviz.animate.compose_frame`'s; default ``{"tile": LOGGED_TILE}``, see
            :func:`~stnviz.integrations.loggers.log_progress`).
        key, max_snapshots, display: as :class:`~stnviz.animate.ProgressRecorder`'s.

    ``callback.recorder`` holds the snapshots (``.to_frame()``, ``.save_gif()``); ``gif_path``
    the GIF written. A resumed run (``ckpt_path=``) records from the step it resumes at.

    Example:
        >>> import lightning.pytorch as pl, stnviz, tempfile, torch
        >>> class Digits(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = stnviz.get_model("stn_tutorial", device="cpu")
        ...     def forward(self, x):
        ...         return self.net(x)
        ...     def training_step(self, batch, i):
        ...         return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.05)
        >>> digits = stnviz.data.sample("mnist")
        >>> train = digits.get(torch.arange(64))  # float images in [0, 1]
        >>> loader = torch.utils.data.DataLoader(list(zip(train.images, train.labels)), batch_size=16)
        >>> stn = STNCallback(train.images[:4], train.labels[:4], every_n_steps=2)
        >>> trainer = pl.Trainer(max_steps=4, callbacks=[stn], default_root_dir=tempfile.mkdtemp(), logger=False,
        ...                      accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
        ...                      enable_checkpointing=False)
        >>> trainer.fit(Digits(), loader)
        >>> stn.recorder.to_frame()["step"].tolist(), stn.gif_path.name
        ([0, 2, 4], 'stn_progress.gif')
    """

    def __init__(self, probe_images: torch.Tensor, probe_labels: torch.Tensor | None = None, *,
                 every_n_steps: int = 50, log_video_every_n_steps: int | None = None,
                 forward: Callable | None = None, gif_name: str | None = "stn_progress.gif", fps: float = 8,
                 frame: dict | None = None, key: str | None = None, max_snapshots: int = 200, display=None):
        for option, value in (("every_n_steps", every_n_steps), ("log_video_every_n_steps", log_video_every_n_steps)):
            if value is None and option != "every_n_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a whole number >= 1, got {value!r}")
        if gif_name is not None and not str(gif_name).lower().endswith(".gif"):
            raise ValueError(f"gif_name must end in .gif (or be None), got {gif_name!r}")
        self.recorder = ProgressRecorder(probe_images, probe_labels, every=every_n_steps, forward=forward,
                                         key=key, max_snapshots=max_snapshots, display=display)
        self.log_video_every_n_steps, self.gif_name = log_video_every_n_steps, gif_name
        self.fps, self.frame = fps, frame
        self.gif_path: Path | None = None
        self._loggers: list = []
        self._video_step: int | None = None  # the step of the last video logged, and its frames
        self._clip: np.ndarray | None = None

    def _record(self, trainer, pl_module, epoch: float, train_loss: float = math.nan) -> None:
        step = trainer.global_step
        if self.recorder.snapshots and self.recorder.snapshots[-1].step == step:
            return  # accumulating gradients: no optimizer step since the last record
        self.recorder.record(pl_module, step, epoch, train_loss)
        log_progress(self.recorder, self._loggers, step, frame=self.frame)

    def _video(self, trainer) -> np.ndarray:
        if self._video_step != trainer.global_step:
            self._video_step = trainer.global_step
            self._clip = log_progress_video(self.recorder, self._loggers, trainer.global_step, fps=self.fps,
                                            frame=self.frame)
        return self._clip

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self._loggers = [lightning_logger(lg) for lg in trainer.loggers]
        self._record(trainer, pl_module, float(trainer.current_epoch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:
            return
        step = trainer.global_step
        if step % self.recorder.every == 0:
            batches = trainer.num_training_batches
            part = (batch_idx + 1) / batches if isinstance(batches, int) and batches > 0 else 0.0
            self._record(trainer, pl_module, trainer.current_epoch + part, _loss_of(outputs))
        every = self.log_video_every_n_steps
        if every and step % every == 0 and step > 0:
            self._video(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.recorder.snapshots:
            return
        self._record(trainer, pl_module, float(trainer.current_epoch))  # the weights training ends with
        clip = self._video(trainer)
        for logger in self._loggers:
            logger.close()
        if self.gif_name is not None:
            self.gif_path = _write_gif(clip, self.fps, _log_folder(trainer) / self.gif_name)


def _log_folder(trainer) -> Path:
    """Where the Trainer's first logger writes (``trainer.log_dir`` without its broadcast, a
    collective the other ranks would not join), else its ``default_root_dir``."""
    for logger in trainer.loggers[:1]:
        folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if folder:
            return Path(folder)
    return Path(trainer.default_root_dir)
