"""How the transformer learns: record a probe batch during training, export GIF / MP4 / PNG.

:class:`ProgressRecorder` is a :class:`stnviz.train.Callback`: every ``every`` steps it runs the
model (eval mode, no grad) on a fixed probe batch and keeps a :class:`Snapshot` (step, the first
transformer's parameters, outputs and sampled region, loss, accuracy). Memory is bounded: past
``max_snapshots`` it drops every other snapshot, so the kept ones stay evenly spread over the
run. :func:`snapshots_from_checkpoints` builds the same from saved checkpoints (epoch evolution).

Frames are composed with the raster back end of :mod:`stnviz.render` (Pillow), one
:func:`stnviz.render.region_tile` per probe image (input with its sampled region | output) and a
caption; :func:`save_gif`,
:func:`save_mp4` (imageio with imageio-ffmpeg's bundled ffmpeg) and :func:`save_contact_sheet`
write through a temp file and a rename, so a failure never leaves a half-written file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import render
from ._io import atomic_write
from .capture import collect_batch
from .train import Callback

__all__ = [
    "ProgressRecorder",
    "Snapshot",
    "check_output_folder",
    "check_output_path",
    "compose_frame",
    "probe_snapshot",
    "save_contact_sheet",
    "save_gif",
    "save_mp4",
    "sequence_frames",
    "snapshots_from_checkpoints",
    "write_animation",
]


@dataclass
class Snapshot:
    """The probe batch through the model at one training step.

    ``inputs (N, C, H, W)`` is the probe (shared by all snapshots of a run); ``outputs`` the first
    transformer's output; ``outlines (N, P, 2)`` its sampled region in input pixels; ``params``
    its parameters; ``loss`` / ``accuracy`` on the probe (``labels`` given) and, if known, the
    training loss of the step.

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


@torch.no_grad()
def probe_snapshot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, *, step: int = 0,
                   epoch: float = 0.0, train_loss: float = math.nan, key: str | None = None) -> Snapshot:
    """Run ``model`` on the probe ``images (N, C, H, W)`` (moved to the model's device and floating
    dtype; ``labels (N,)`` too) and return a :class:`Snapshot` of CPU tensors.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> snap = probe_snapshot(model, digits.images, digits.labels, step=500)
        >>> snap.step, snap.accuracy, tuple(snap.params.shape), tuple(snap.outlines.shape)
        (500, 1.0, (4, 2, 3), (4, 32, 2))
    """
    logits, rec = collect_batch(model, images)
    r = rec.pick(key)
    loss = acc = math.nan
    if labels is not None:
        labels = torch.as_tensor(labels).to(logits.device)
        loss = float(F.cross_entropy(logits.float(), labels))
        acc = float((logits.argmax(1) == labels).float().mean())
    params = r.params.detach().cpu() if r.params is not None else torch.empty(0)
    return Snapshot(step=step, epoch=epoch, params=params, outputs=r.output.detach().cpu(),
                    outlines=r.sampled_outline(8).cpu(), loss=loss, accuracy=acc, train_loss=train_loss)


class ProgressRecorder(Callback):
    """Trainer callback recording the transformer on a fixed probe batch every ``every`` steps.

    Args:
        images: probe ``(N, C, H, W)`` in [0, 1] (e.g. 8 validation images); ``labels`` optional.
        every: record every this many optimizer steps (and once before training).
        max_snapshots: memory bound; when exceeded, every other snapshot is dropped and the
            recording interval doubles, keeping the history evenly spaced.
        key: which transformer (its capture record's key); default the first one that runs.
        display: how the frames show the pixels (a :class:`stnviz.render.Display`: normalisation
            undone, channel order, contrast); default the one remembered on the recorded model
            (:func:`stnviz.render.set_display`), else out-of-range inputs stretched.

    Use: ``rec = ProgressRecorder(probe, labels, every=50); fit(..., callbacks=[rec]);
    rec.save_gif("progress.gif")``.

    Example (recording by hand what ``fit`` would record at steps 0 and 50):
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> rec = ProgressRecorder(digits.images, digits.labels, every=50)
        >>> rec.record(model, step=0); rec.record(model, step=50)
        >>> [s.step for s in rec.snapshots], rec.frames(tile=32)[0].shape  # one frame per snapshot
        ([0, 50], (64, 292, 3))
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, *, every: int = 50,
                 max_snapshots: int = 200, key: str | None = None, display: render.Display | None = None):
        if images.dim() != 4 or images.shape[0] == 0:
            raise ValueError(f"probe images must be (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
        if every < 1 or max_snapshots < 2:
            raise ValueError(f"every must be >= 1 and max_snapshots >= 2, got {every} and {max_snapshots}")
        self.inputs = images.detach().cpu().float()
        self.labels = None if labels is None else torch.as_tensor(labels).cpu().long()
        self.every = every
        self.max_snapshots = max_snapshots
        self.key = key
        self.snapshots: list[Snapshot] = []
        render.set_display(self, display)

    def record(self, model: nn.Module, step: int, epoch: float = 0.0, train_loss: float = math.nan) -> None:
        if self.stnviz_display is None:  # the model's own, once known
            render.set_display(self, getattr(model, "stnviz_display", None))
        snap = probe_snapshot(model, self.inputs, self.labels, step=step, epoch=epoch,
                              train_loss=train_loss, key=self.key)
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
    def frames(self, **kwargs) -> list[np.ndarray]:
        """One RGB frame per snapshot (see :func:`compose_frame`), shown by the recorder's display."""
        kwargs.setdefault("display", render.display_of(self))
        return [compose_frame(self.inputs, s, **kwargs) for s in self.snapshots]

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
    from .checkpoints import load_model

    if not paths:
        raise ValueError("snapshots_from_checkpoints needs at least one checkpoint path, got none")
    out = []
    for i, p in enumerate(paths):
        model = load_model(p, device=device)
        meta = model.meta
        step = int(meta.get("step") or i)
        out.append(probe_snapshot(model, images, labels, step=step, epoch=float(meta.get("epochs") or i), key=key))
    return out


# --------------------------------------------------------------------------- frames


def _caption(draw, xy, text: str) -> None:
    from PIL import ImageFont

    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text(xy, text, fill=(235, 235, 235), font=font)


def compose_frame(inputs: torch.Tensor, snap: Snapshot, *, columns: int = 4, tile: int = 112,
                  caption: str | None = None, display: render.Display | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8: for each probe image, input + sampled region | output, in a grid of
    ``columns`` pairs, with a caption (step, epoch, probe loss and accuracy). ``display``: how the
    pixels are shown (:class:`stnviz.render.Display`; default: out-of-range inputs stretched).

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> snap = probe_snapshot(model, digits.images, digits.labels, step=500)
        >>> frame = compose_frame(digits.images, snap, columns=2, tile=64)  # 2 x 2 pairs under a caption
        >>> frame.shape, frame.dtype
        ((164, 276, 3), dtype('uint8'))
    """
    from PIL import Image, ImageDraw

    columns, tile = _positive_int(columns, "columns"), _positive_int(tile, "tile")
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be (N, C, H, W) with N >= 1, got shape {tuple(inputs.shape)}")
    n = inputs.shape[0]
    if snap.outputs.shape[0] != n or snap.outlines.shape[0] != n:
        raise ValueError(
            f"the snapshot holds {snap.outputs.shape[0]} outputs and {snap.outlines.shape[0]} regions; "
            f"expected one per input image ({n})"
        )
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    head = 24
    pad = 4
    pair_w = 2 * tile + pad
    canvas = Image.new("RGB", (cols * pair_w + (cols + 1) * pad, head + rows * (tile + pad) + pad),
                       render.FRAME_BACKGROUND)
    shown = render.display_of(display=display)
    inputs_shown = shown.apply(inputs, where="stnviz.animate")
    outputs_shown = shown.apply(snap.outputs, inputs, where="stnviz.animate")
    for i in range(n):
        pair = render.region_tile(inputs_shown[i], outputs_shown[i], snap.outlines[i], margin=0.15, size=tile, gap=pad)
        r, c = divmod(i, cols)
        canvas.paste(Image.fromarray(pair), (pad + c * (pair_w + pad), head + pad + r * (tile + pad)))
    text = caption if caption is not None else (
        f"step {snap.step}  epoch {snap.epoch:.2f}"
        + (f"  probe loss {snap.loss:.3f}  acc {snap.accuracy:.2f}" if not math.isnan(snap.loss) else "")
    )
    _caption(ImageDraw.Draw(canvas), (pad + 2, 4), text)
    return np.asarray(canvas)


# --------------------------------------------------------------------------- checks before any work


def _positive_int(value, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{option} must be a whole number >= 1, got {value!r}")
    return int(value)


def _folder_problem(folder: Path) -> str | None:
    """Why no file can be written into ``folder`` (made if missing), or ``None``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "is a file; expected a folder" if existing == folder else f"cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is read-only; expected a folder you can write into" if existing == folder else (
            f"cannot be made: {existing} is read-only")
    return None


def check_output_folder(folder, *, option: str = "folder") -> Path:
    """``folder`` as a Path, when files can be written into it: it is a folder, or it can be made
    (its nearest existing parent is a writable folder). Otherwise one ValueError naming ``option``.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> check_output_folder(tmp / "new" / "out").name  # missing: made when written to
        'out'
        >>> _ = (tmp / "notes.txt").write_text("a file")
        >>> check_output_folder(tmp / "notes.txt", option="out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: out .../notes.txt is a file; expected a folder
        >>> import shutil; shutil.rmtree(tmp)
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"{option} must be a folder path, got {type(folder).__name__}")
    folder = Path(folder)
    problem = _folder_problem(folder)
    if problem:
        raise ValueError(f"{option} {folder} {problem}")
    return folder


def check_output_path(path, suffixes: Sequence[str], *, option: str = "path") -> Path:
    """``path`` as a Path, checked before any work is done: it ends in one of ``suffixes``, is not
    an existing folder, and its folder can be written (see :func:`check_output_folder`).
    Otherwise one ValueError naming ``option``, what was expected and what came.

    Example:
        >>> check_output_path("out/progress.gif", (".gif",)).name
        'progress.gif'
        >>> check_output_path("progress.webm", (".gif", ".mp4"), option="animation path")
        Traceback (most recent call last):
        ...
        ValueError: animation path must end in .gif or .mp4, got 'progress.webm'
    """
    wanted = " or ".join(suffixes)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{option} must be a file path ending in {wanted}, got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {wanted}, got {str(path)!r}")
    if p.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; expected a file path ending in {wanted}")
    problem = _folder_problem(p.parent)
    if problem:
        raise ValueError(f"{option} {str(path)!r} cannot be written: its folder {p.parent} {problem}")
    return p


def _check_frames(frames) -> list[np.ndarray]:
    """``frames`` as a list of ``(H, W, 3)`` uint8 arrays of one size (RGBA ``(H, W, 4)`` passes too)."""
    try:
        frames = [np.asarray(f) for f in frames]
    except TypeError as e:
        raise ValueError(f"frames must be a sequence of (H, W, 3) uint8 arrays, got {type(frames).__name__} ({e})") from None
    if not frames:
        raise ValueError("no frames to write: the recorder holds no snapshots (did training run?)")
    for i, f in enumerate(frames):
        if f.ndim != 3 or f.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3) RGB; frame {i} has shape {f.shape}")
        if f.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (0 to 255); frame {i} is {f.dtype} (scale floats in [0, 1] by 255 and round)")
        if f.shape[0] < 1 or f.shape[1] < 1:
            raise ValueError(f"frames must be at least 1 x 1 pixels; frame {i} has shape {f.shape}")
        if f.shape != frames[0].shape:
            raise ValueError(f"frames must all be one size; frame 0 is {frames[0].shape}, frame {i} is {f.shape}")
    return frames


#: GIF frame delays are whole hundredths of a second and players raise delays under 20 ms, so a
#: GIF plays at most 50 frames per second.
GIF_MAX_FPS = 50


def _check_fps(fps, fmt: str) -> float:
    """``fps`` as a float, or a ValueError saying what is expected."""
    limit = GIF_MAX_FPS if fmt == "GIF" else 1000
    if isinstance(fps, bool):
        raise ValueError(f"fps must be a number, got {fps!r}")
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0 or value > limit:
        raise ValueError(f"fps of a {fmt} must be a number in (0, {limit}], got {fps!r}")
    return value


def save_gif(frames, path, *, fps: float = 8, loop: int = 0) -> Path:
    """Write frames as an animated GIF (atomically).

    Written with Pillow directly rather than through imageio's GIF plugin (which is Pillow
    underneath): this way each frame is quantised with the fast octree method, about 20x faster
    than the default median cut and indistinguishable on these flat renderings.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> frames = [np.full((32, 48, 3), v, np.uint8) for v in (0, 128, 255)]  # (H, W, 3) uint8
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_gif(frames, Path(tmp) / "fade.gif", fps=10)
        ...     with Image.open(path) as gif:
        ...         print(path.name, gif.n_frames, gif.size)
        fade.gif 3 (48, 32)
    """
    from PIL import Image

    fps = _check_fps(fps, "GIF")
    if isinstance(loop, bool) or not isinstance(loop, (int, np.integer)) or not 0 <= loop <= 65535:
        raise ValueError(f"loop must be a whole number in [0, 65535] (0: forever), got {loop!r}")
    path = check_output_path(path, (".gif",), option="GIF path")
    frames = _check_frames(frames)
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
              for f in frames]
    duration = max(20, int(round(1000 / fps)))

    def write(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=loop,
                       optimize=False, disposal=1)

    return atomic_write(path, write)


def save_mp4(frames, path, *, fps: float = 8, quality: int = 8) -> Path:
    """Write frames as an H.264 MP4 (yuv420p, plays everywhere), atomically. Frame sides are
    padded to even numbers, which H.264 needs.

    Example:
        >>> import tempfile
        >>> frames = [np.full((31, 47, 3), v, np.uint8) for v in (0, 128, 255)]  # odd sides: padded
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_mp4(frames, Path(tmp) / "fade.mp4", fps=10)
        ...     print(path.name, path.stat().st_size > 0)
        fade.mp4 True
    """
    import imageio.v2 as imageio

    fps = _check_fps(fps, "MP4")
    if isinstance(quality, bool) or not isinstance(quality, (int, float, np.number)) or not 1 <= quality <= 10:
        raise ValueError(f"quality of an MP4 must be a number in [1, 10], got {quality!r}")
    path = check_output_path(path, (".mp4",), option="MP4 path")
    frames = _check_frames(frames)
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = [np.pad(f, ((0, ph - h), (0, pw - w), (0, 0))) for f in frames]

    def write(tmp):
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
                                pixelformat="yuv420p", macro_block_size=1) as w_:
            for f in frames:
                w_.append_data(f)

    return atomic_write(path, write)


def write_animation(frames, path, *, fps: float = 8) -> Path:
    """GIF or MP4 by the file's suffix.

    Example:
        >>> import tempfile
        >>> frames = [np.full((32, 32, 3), v, np.uint8) for v in (0, 255)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(write_animation(frames, Path(tmp) / "blink.gif").name)
        blink.gif
        >>> write_animation(frames, "blink.webm")
        Traceback (most recent call last):
        ...
        ValueError: animation path must end in .gif or .mp4, got 'blink.webm'
    """
    suffix = check_output_path(path, (".gif", ".mp4"), option="animation path").suffix.lower()
    return save_gif(frames, path, fps=fps) if suffix == ".gif" else save_mp4(frames, path, fps=fps)


def save_contact_sheet(inputs: torch.Tensor, snapshots: Sequence[Snapshot], path, *, rows: int = 8,
                       images: int | None = None, tile: int = 64, display: render.Display | None = None) -> Path:
    """A PNG grid: one row per snapshot (``rows`` evenly spaced), one column per probe image,
    each cell that image's transformer output at that step, shown by ``display``
    (:class:`stnviz.render.Display`; default: out-of-range inputs stretched).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> snaps = [probe_snapshot(model, digits.images, None, step=s) for s in (0, 100)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with Image.open(save_contact_sheet(digits.images, snaps, Path(tmp) / "sheet.png", tile=32)) as im:
        ...         print(im.size)  # a 120-pixel label column, then 4 tiles of 32 (+2); 2 rows
        (256, 70)
    """
    from PIL import Image, ImageDraw

    rows, tile = _positive_int(rows, "rows"), _positive_int(tile, "tile")
    if images is not None:
        images = _positive_int(images, "images")
    path = check_output_path(path, (".png",), option="contact sheet path")
    if not snapshots:
        raise ValueError("no snapshots for a contact sheet")
    n = min(images or inputs.shape[0], inputs.shape[0])
    for k, s in enumerate(snapshots):
        if s.outputs.shape[0] < n:
            raise ValueError(f"snapshot {k} holds {s.outputs.shape[0]} outputs; expected one per probe image ({n})")
    idx = np.unique(np.linspace(0, len(snapshots) - 1, min(rows, len(snapshots))).round().astype(int))
    label_w, pad = 120, 2
    sheet = Image.new("RGB", (label_w + n * (tile + pad), len(idx) * (tile + pad) + pad), render.FRAME_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    shown = render.display_of(display=display)
    for r, k in enumerate(idx):
        s = snapshots[k]
        _caption(draw, (4, r * (tile + pad) + tile // 2 - 8), f"step {s.step}")
        outputs = shown.apply(s.outputs[:n], inputs[:n], where="stnviz.animate")
        for c in range(n):
            img = render.overlay_square(outputs[c], tile)
            sheet.paste(Image.fromarray(img), (label_w + c * (tile + pad), r * (tile + pad) + pad))
    arr = np.asarray(sheet)
    return atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))


def sequence_frames(run, *, tile: int = 160, caption: bool = True,
                    display: render.Display | None = None) -> list[np.ndarray]:
    """Side-by-side frames of a :class:`stnviz.analysis.SequenceRun`: the input with its sampled
    region (and the annotated box) | the transformer's output: the Moodstocks post-training view.

    ``display``: how the pixels are shown and the predictions named (a
    :class:`stnviz.render.Display`); default: the run's (remembered from its model by
    :func:`stnviz.render.set_display`), else out-of-range inputs stretched.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> sequence = stnviz.data.sample("mnist").images[:8]  # (T, C, H, W); or a Track, a video file
        >>> frames = sequence_frames(stnviz.analysis.run_sequence(model, sequence), tile=64)
        >>> len(frames), frames[0].shape  # e.g. for write_animation(frames, "sequence.gif")
        (8, (90, 140, 3))
    """
    from PIL import Image, ImageDraw

    tile = _positive_int(tile, "tile")
    out = []
    t_total = run.frames.shape[0]
    head = 22 if caption else 0
    shown = render.display_of(run, display=display)
    frames = shown.apply(run.frames, where="stnviz.animate")
    outputs = shown.apply(run.outputs, run.frames, where="stnviz.animate")
    for t in range(t_total):
        box = run.boxes[t] if run.boxes is not None else None
        pair = render.region_tile(frames[t], outputs[t], run.outlines[t], box=box, margin=0.15, size=tile, gap=4)
        canvas = Image.new("RGB", (2 * tile + 12, tile + head + 4), render.FRAME_BACKGROUND)
        canvas.paste(Image.fromarray(pair), (4, head))
        if caption:
            row = run.table.iloc[t]
            text = f"frame {t + 1}/{t_total}  pred {shown.name(row['prediction'])} ({row['confidence']:.2f})"
            if "iou" in row:
                text += f"  IoU {row['iou']:.2f}"
            _caption(ImageDraw.Draw(canvas), (4, 3), text)
        out.append(np.asarray(canvas))
    return out
