"""What stnviz writes to experiment trackers: TensorBoard, MLflow, Weights & Biases.

A logger is any object with the three methods of :class:`Logger` (scalars, one image, one
video) and ``close()``. :class:`TensorBoard`, :class:`MLflow` and :class:`Wandb` are the real
ones; each imports its package (an optional extra: ``pip install 'stnviz[tensorboard]'``,
``[mlflow]``, ``[wandb]``) and opens its run on the first write, so a logger built on every rank
of a ``torchrun`` job opens nothing where nothing is written (stnviz records on rank 0).

Images are ``(3, H, W)`` uint8 and videos ``(T, 3, H, W)`` uint8, as
:meth:`stnviz.animate.ProgressRecorder.image` and ``.video`` give them. Videos are written as
animated GIFs (Pillow, through :func:`stnviz.animate.save_gif`): that is what TensorBoard's
``add_video`` writes too, but without needing moviepy; MLflow keeps the GIF as an artifact and
W&B as a ``wandb.Video``.

:func:`log_progress` writes a recorder's latest figures and picture to a list of loggers,
:func:`log_progress_video` its snapshots so far as a video, and :class:`LoggingCallback` does both
from :func:`stnviz.train.fit`.
"""

from __future__ import annotations

import importlib
import io
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..train import Callback

__all__ = ["LOGGED_TILE", "Logger", "LoggingCallback", "MLflow", "TensorBoard", "Wandb", "check_image", "check_video",
           "log_progress", "log_progress_video", "require", "scalars_of"]


def require(module: str, extra: str):
    """Import ``module`` or raise an ImportError naming the stnviz extra that installs it.

    Example:
        >>> require("numpy", "core").__name__
        'numpy'
        >>> require("no_such_tracker", "tracker")
        Traceback (most recent call last):
        ...
        ImportError: stnviz needs no_such_tracker here, which is not installed: pip install 'stnviz[tracker]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"stnviz needs {module} here, which is not installed: pip install 'stnviz[{extra}]'") from e


@runtime_checkable
class Logger(Protocol):
    """What stnviz writes through: scalars, one image, one video, at a training step."""

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None: ...

    def log_image(self, name: str, image: np.ndarray, step: int) -> None: ...

    def log_video(self, name: str, video: np.ndarray, fps: float, step: int) -> None: ...

    def close(self) -> None: ...


def check_image(image) -> np.ndarray:
    """``image`` as a ``(3, H, W)`` uint8 array, or a ValueError saying what came.

    Example:
        >>> check_image(np.zeros((3, 4, 5), np.uint8)).shape
        (3, 4, 5)
        >>> check_image(np.zeros((4, 5, 3), np.uint8))
        Traceback (most recent call last):
        ...
        ValueError: an image to log must be (3, H, W) uint8, got shape (4, 5, 3) uint8
    """
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[0] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"an image to log must be (3, H, W) uint8, got shape {a.shape} {a.dtype}")
    return a


def check_video(video) -> np.ndarray:
    """``video`` as a ``(T, 3, H, W)`` uint8 array with ``T >= 1``, or a ValueError saying what came.

    Example:
        >>> check_video(np.zeros((2, 3, 4, 5), np.uint8)).shape
        (2, 3, 4, 5)
        >>> check_video(np.zeros((3, 4, 5), np.uint8))
        Traceback (most recent call last):
        ...
        ValueError: a video to log must be (T, 3, H, W) uint8 with T >= 1, got shape (3, 4, 5) uint8
    """
    a = np.asarray(video)
    if a.ndim != 4 or a.shape[1] != 3 or a.dtype != np.uint8 or 0 in a.shape:
        raise ValueError(f"a video to log must be (T, 3, H, W) uint8 with T >= 1, got shape {a.shape} {a.dtype}")
    return a


def scalars_of(row: Mapping[str, float], prefix: str = "stn/") -> dict[str, float]:
    """The finite numbers of ``row`` (e.g. :meth:`ProgressRecorder.latest`) under ``prefix``,
    without the step (it is the x axis). NaN (a probe loss without labels) is left out.

    Example:
        >>> scalars_of({"step": 50, "area": 0.6, "loss": float("nan"), "theta_0": 0.8})
        {'stn/area': 0.6, 'stn/theta_0': 0.8}
    """
    out = {}
    for k, v in row.items():
        if k == "step" or isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            continue
        if math.isfinite(float(v)):
            out[f"{prefix}{k}"] = float(v)
    return out


def _write_gif(video: np.ndarray, fps: float, path: Path) -> Path:
    from ..animate import save_gif

    return save_gif(list(check_video(video).transpose(0, 2, 3, 1)), path, fps=fps)


def _png_bytes(image: np.ndarray) -> bytes:
    """``(3, H, W)`` uint8 as PNG (fast compression: these are logged during training)."""
    from PIL import Image

    out = io.BytesIO()
    pixels = np.ascontiguousarray(check_image(image).transpose(1, 2, 0))
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _gif_bytes(video: np.ndarray, fps: float) -> bytes:
    with tempfile.TemporaryDirectory(prefix="stnviz-gif-") as tmp:
        return _write_gif(video, fps, Path(tmp) / "video.gif").read_bytes()


class TensorBoard:
    """Writes to a TensorBoard event file: ``add_scalar``, and the image summaries of
    ``add_image`` (a PNG) and ``add_video`` (an animated GIF), encoded with Pillow (no moviepy).

    Args:
        log_dir: the run's folder (``SummaryWriter(log_dir)``, made on the first write), or
        writer: a ``torch.utils.tensorboard.SummaryWriter`` of yours (Lightning's
            ``TensorBoardLogger.experiment``); it is flushed, not closed, by :meth:`close`.

    Example:
        >>> import tempfile
        >>> tb = TensorBoard(tempfile.mkdtemp())
        >>> tb.log_scalars({"stn/area": 0.6}, step=50)
        >>> tb.log_image("stn/regions", np.zeros((3, 8, 8), np.uint8), step=50)
        >>> tb.log_video("stn/progress", np.zeros((2, 3, 8, 8), np.uint8), fps=4, step=50)
        >>> tb.close()
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer=None):
        if (log_dir is None) == (writer is None):
            raise ValueError("TensorBoard needs a log_dir or a writer (one of them), got "
                             f"log_dir={log_dir!r} and writer={writer!r}")
        self.log_dir, self._writer, self._owned = log_dir, writer, writer is None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = require("torch.utils.tensorboard", "tensorboard").SummaryWriter(str(self.log_dir))
        return self._writer

    def log_scalars(self, scalars, step):
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, step)

    def log_image(self, name, image, step):
        _, h, w = check_image(image).shape
        self._image_summary(name, _png_bytes(image), h, w, step)

    def log_video(self, name, video, fps, step):
        _, _, h, w = check_video(video).shape
        self._image_summary(name, _gif_bytes(video, fps), h, w, step)

    def _image_summary(self, name: str, encoded: bytes, height: int, width: int, step: int) -> None:
        """The image summary ``add_image`` and ``add_video`` write, of an encoded PNG or GIF: encoded
        here with Pillow, 5x faster than ``add_image``'s float round trip, and without moviepy."""
        writer = self.writer  # tensorboard imported (or its extra named) first
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=name, image=image)]), step)

    def close(self):
        if self._writer is None:
            return
        if self._owned:
            self._writer.close()
            self._writer = None
        else:
            self._writer.flush()


class MLflow:
    """Writes to an MLflow run: metrics (``log_batch``), images (``log_image`` with a step) and
    videos as GIF artifacts (``NAME/step_000050.gif``).

    Args:
        run_id: the run to write to (resume one, or Lightning's ``MLFlowLogger.run_id``); default
            a new run in ``experiment``, started on the first write and ended by :meth:`close`.
        tracking_uri: where runs are kept (``"file:./mlruns"``, ``"sqlite:///mlflow.db"``, a
            server); default MLflow's (``MLFLOW_TRACKING_URI``).
        client: an ``mlflow.MlflowClient`` of yours (Lightning's ``MLFlowLogger.experiment``).

    Example (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for a ``file:`` store):
        >>> import tempfile
        >>> os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        >>> ml = MLflow(tracking_uri="file:" + tempfile.mkdtemp())
        >>> ml.log_scalars({"stn/area": 0.6}, step=50)
        >>> ml.client.get_metric_history(ml.run_id, "stn/area")[0].value
        0.6
        >>> ml.close(); del os.environ["MLFLOW_ALLOW_FILE_STORE"]
    """

    def __init__(self, run_id: str | None = None, *, tracking_uri: str | None = None, experiment: str = "stnviz",
                 client=None):
        self._client, self._run_id = client, run_id
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self._owned = run_id is None

    @property
    def client(self):
        if self._client is None:
            self._client = require("mlflow", "mlflow").MlflowClient(self.tracking_uri)
        return self._client

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(self.experiment)
            self._run_id = self.client.create_run(experiment_id).info.run_id
        return self._run_id

    def log_scalars(self, scalars, step):
        client, run_id = self.client, self.run_id  # mlflow imported (or its extra named) first
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in scalars.items()])

    def log_image(self, name, image, step):
        self.client.log_image(self.run_id, check_image(image).transpose(1, 2, 0), key=name, step=step)

    def log_video(self, name, video, fps, step):
        with tempfile.TemporaryDirectory(prefix="stnviz-gif-") as tmp:
            path = _write_gif(video, fps, Path(tmp) / f"step_{step:06d}.gif")
            self.client.log_artifact(self.run_id, str(path), artifact_path=name)

    def close(self):
        if self._owned and self._run_id is not None:
            self.client.set_terminated(self._run_id)


class Wandb:
    """Writes to a Weights & Biases run: ``run.log`` of scalars, ``wandb.Image`` and
    ``wandb.Video`` (a GIF file), each with the training step under ``step_key`` (W&B's own
    step must only grow, so the step is a logged value that stnviz's keys are plotted against).

    Args:
        run: a ``wandb`` run of yours (Lightning's ``WandbLogger.experiment``); default
            ``wandb.init(**init)`` on the first write (``mode="offline"`` works without an
            account), finished by :meth:`close`.
        step_key: the x axis of the keys written here (Lightning's is ``"trainer/global_step"``).

    Example:
        >>> import tempfile
        >>> wb = Wandb(mode="offline", dir=tempfile.mkdtemp(), project="stnviz")
        >>> wb.log_scalars({"stn/area": 0.6}, step=50)
        >>> wb.run.settings.mode
        'offline'
        >>> wb.close()
    """

    def __init__(self, run=None, *, step_key: str = "global_step", **init):
        self._run, self.step_key, self.init = run, step_key, init
        self._owned = run is None
        self._defined: set[str] = set()

    @property
    def run(self):
        if self._run is None:
            self._run = require("wandb", "wandb").init(**self.init)
        return self._run

    def _log(self, data: dict, step: int) -> None:
        new = [k for k in data if k not in self._defined]
        if new:
            self.run.define_metric(self.step_key)
            for k in new:
                self.run.define_metric(k, step_metric=self.step_key)
            self._defined.update(new)
        self.run.log({**data, self.step_key: step})

    def log_scalars(self, scalars, step):
        self._log(dict(scalars), step)

    def log_image(self, name, image, step):
        wandb = require("wandb", "wandb")
        self._log({name: wandb.Image(check_image(image).transpose(1, 2, 0))}, step)

    def log_video(self, name, video, fps, step):
        wandb = require("wandb", "wandb")
        with tempfile.TemporaryDirectory(prefix="stnviz-gif-") as tmp:  # W&B copies the file as it logs
            path = _write_gif(video, fps, Path(tmp) / f"{name.replace('/', '_')}.gif")
            self._log({name: wandb.Video(str(path), format="gif")}, step)

    def close(self):
        if self._owned and self._run is not None:
            self._run.finish()
            self._run = None


def log_progress(recorder, loggers: Sequence[Logger], step: int, *, prefix: str = "stn/",
                 frame: dict | None = None) -> None:
    """Write ``recorder``'s latest snapshot to each logger: its figures
    (:meth:`ProgressRecorder.latest`, through :func:`scalars_of`) and its picture
    (``PREFIX + "regions"``: each probe image with its sampled region | the output). ``frame``:
    keyword arguments of the picture (:func:`stnviz.animate.compose_frame`: ``tile``, default
    :data:`LOGGED_TILE`, ``columns``).

    Example:
        >>> import stnviz, tempfile, torch
        >>> from stnviz.animate import ProgressRecorder
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> recorder = ProgressRecorder(digits.images, digits.labels)
        >>> recorder.record(model, step=0)
        >>> tb = TensorBoard(tempfile.mkdtemp())
        >>> log_progress(recorder, [tb], step=0, frame={"tile": 32})
        >>> log_progress_video(recorder, [tb], step=0, frame={"tile": 32}).shape  # (T, 3, H, W), also returned
        (1, 3, 64, 292)
        >>> tb.close()
    """
    _check_recorded(recorder)
    scalars = scalars_of(recorder.latest(), prefix)
    image = recorder.image(-1, **_frame(frame))
    for logger in loggers:
        logger.log_scalars(scalars, step)
        logger.log_image(f"{prefix}regions", image, step)


def log_progress_video(recorder, loggers: Sequence[Logger], step: int, *, prefix: str = "stn/", fps: float = 8,
                       frame: dict | None = None) -> np.ndarray:
    """Write every snapshot of ``recorder`` so far as one video, ``PREFIX + "progress"``, to each
    logger (the pictures of :func:`log_progress`, one frame per snapshot; see its example), and
    return it, ``(T, 3, H, W)`` uint8."""
    _check_recorded(recorder)
    clip = recorder.video(**_frame(frame))
    for logger in loggers:
        logger.log_video(f"{prefix}progress", clip, fps, step)
    return clip


#: The side of each picture in the logged pictures: 8 probe images make a 676 x 196 picture, cheap
#: to compose and encode during training (a record and its log cost about one training step of
#: the tutorial's net; bench/bench_lightning.py).
LOGGED_TILE = 80


def _frame(frame: dict | None) -> dict:
    return {"tile": LOGGED_TILE, **(frame or {})}


def _check_recorded(recorder) -> None:
    if not recorder.snapshots:
        raise ValueError("the recorder holds no snapshots to log; call recorder.record(model, step) first")


def _last_recorded(recorder) -> tuple[int, int | None]:
    """How many snapshots ``recorder`` holds and the step of the last one: changes when it records."""
    snaps = recorder.snapshots
    return len(snaps), snaps[-1].step if snaps else None


class LoggingCallback(Callback):
    """A :func:`stnviz.train.fit` callback that drives a :class:`~stnviz.animate.ProgressRecorder`
    and writes its snapshots to ``loggers``: the figures and the picture at every recorded step
    (:func:`log_progress`), the whole training as a video at the end, and every ``video_every``
    steps if given (:func:`log_progress_video`). Pass the recorder here only, not in
    ``callbacks`` too.

    Under ``torchrun`` the recorder records on rank 0 only, so only rank 0 writes (the loggers
    open their runs on the first write). The loggers are closed at the end of training.

    Example:
        >>> import stnviz, tempfile, torch
        >>> from stnviz.animate import ProgressRecorder
        >>> digits = stnviz.data.sample("mnist")
        >>> probe = digits.get(torch.arange(4))
        >>> recorder = ProgressRecorder(probe.images, probe.labels, every=2)
        >>> logging = LoggingCallback(recorder, [TensorBoard(tempfile.mkdtemp())])
        >>> _ = stnviz.fit(stnviz.get_model("stn_tutorial", device="cpu"), digits.subset(torch.arange(64)),
        ...                epochs=1, batch_size=16, device="cpu", progress=False, callbacks=[logging])
        >>> [s.step for s in recorder.snapshots]  # each one logged as it was recorded
        [0, 2, 4]
    """

    def __init__(self, recorder, loggers: Sequence[Logger], *, video_every: int | None = None, fps: float = 8,
                 prefix: str = "stn/", frame: dict | None = None):
        loggers = list(loggers)
        wrong = [type(lg).__name__ for lg in loggers if not isinstance(lg, Logger)]
        if wrong:
            raise TypeError("loggers must have log_scalars, log_image, log_video and close "
                            f"(stnviz.integrations.loggers.Logger), got {', '.join(wrong)}")
        if video_every is not None and (isinstance(video_every, bool) or not isinstance(video_every, int)
                                        or video_every < 1):
            raise ValueError(f"video_every must be a whole number >= 1 or None, got {video_every!r}")
        self.recorder, self.loggers = recorder, loggers
        self.video_every, self.fps, self.prefix, self.frame = video_every, fps, prefix, frame

    def _record(self, hook, state) -> None:
        before = _last_recorded(self.recorder)
        hook(state)
        if _last_recorded(self.recorder) != before:
            log_progress(self.recorder, self.loggers, state.step, prefix=self.prefix, frame=self.frame)

    def _video(self, state) -> None:
        log_progress_video(self.recorder, self.loggers, state.step, prefix=self.prefix, fps=self.fps,
                           frame=self.frame)

    def on_train_begin(self, state) -> None:
        self._record(self.recorder.on_train_begin, state)

    def on_step_end(self, state) -> None:
        self._record(self.recorder.on_step_end, state)
        if state.rank == 0 and self.video_every and state.step % self.video_every == 0:
            self._video(state)

    def on_train_end(self, state) -> None:
        if state.rank == 0 and self.recorder.snapshots:
            self._video(state)
        for logger in self.loggers:
            logger.close()
