"""Frames of a training run and of a sequence, composed with the raster back end of
:mod:`stnviz.render` (Pillow): one :func:`stnviz.render.region_tile` per probe image (input with
its sampled region | output) under a caption; a contact sheet of the outputs over training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .. import render
from .._io import atomic_write
from .files import _positive_int, check_output_path

if TYPE_CHECKING:
    from .recorder import Snapshot

__all__ = ["compose_frame", "save_contact_sheet", "sequence_frames"]


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
        >>> from stnviz.animate import probe_snapshot
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
        >>> from stnviz.animate import probe_snapshot
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
