"""Players that scrub in the browser: :class:`FramePlayer` (an ``anywidget`` that gets its frames
once and scrubs and plays them in the page, front end in ``web/player.js``) and
:class:`TrainingPlayer` (the frames of :func:`stnviz.animate.compose_frame`, one per recorded step)."""

from __future__ import annotations

import html
import math

import anywidget
import ipywidgets as W
import traitlets

from .. import render
from ._base import _Widget, web_source

__all__ = ["FramePlayer", "TrainingPlayer"]



class FramePlayer(anywidget.AnyWidget):
    """Frames sent once, scrubbed and played in the page: a slider, play / pause and a speed
    menu, one or more panels of pictures (each with a title saying what it shows), a caption per
    frame, and optionally a plot with a marker that moves with the frame. Scrubbing and playing
    never ask the kernel for a picture; ``frame`` is synced back (throttled to about 8 messages a
    second, the last position always sent), and setting it from Python moves the page.

    Traits (all synced):
        frames: per panel, the encoded pictures (``format``), one per frame; every panel has the
            same number of frames.
        titles: one title per panel; captions: one HTML caption per frame (or none).
        frame: the frame shown; label: what a frame is called ("frame", "snapshot").
        interval: milliseconds per frame when playing at 1x.
        plot, plot_format, plot_size, plot_title: an optional picture (``"png"`` or ``"svg+xml"``)
            shown under the panels at ``plot_size = [width, height]`` pixels;
        markers: per axes of the plot ``[xs, top, bottom]``: the x pixel of every frame and the
            rows the marker spans (from :func:`stnviz.widgets.stability_plots`); marker_color.

    Example:
        >>> import numpy as np
        >>> pictures = [render.encode(np.full((8, 8, 3), v, np.uint8)) for v in (0, 128, 255)]
        >>> player = FramePlayer(frames=[pictures], titles=["grey levels"], captions=["black", "grey", "white"])
        >>> player.count, player.frame
        (3, 0)
        >>> player.frame = 2; player.caption
        'white'
        >>> player.frame = 3
        Traceback (most recent call last):
        ...
        traitlets.traitlets.TraitError: frame must be in [0, 3), got 3
    """

    _esm = web_source("player.js")
    _css = web_source("player.css")

    frames = traitlets.List(traitlets.List(traitlets.Bytes())).tag(sync=True)
    format = traitlets.Unicode("png").tag(sync=True)
    titles = traitlets.List(traitlets.Unicode()).tag(sync=True)
    captions = traitlets.List(traitlets.Unicode()).tag(sync=True)
    frame = traitlets.Int(0).tag(sync=True)
    label = traitlets.Unicode("frame").tag(sync=True)
    interval = traitlets.Int(250).tag(sync=True)
    plot = traitlets.Bytes(b"").tag(sync=True)
    plot_format = traitlets.Unicode("png").tag(sync=True)
    plot_size = traitlets.List(traitlets.Int(), [0, 0]).tag(sync=True)
    plot_title = traitlets.Unicode("").tag(sync=True)
    markers = traitlets.List().tag(sync=True)
    marker_color = traitlets.Unicode(render.OUTLINE_COLOR).tag(sync=True)

    @property
    def count(self) -> int:
        """How many frames there are."""
        return len(self.frames[0]) if self.frames else 0

    @property
    def caption(self) -> str:
        """The caption of the frame shown ("" without captions)."""
        return self.captions[self.frame] if self.frame < len(self.captions) else ""

    @traitlets.validate("frames")
    def _check_frames(self, proposal):
        frames = proposal["value"]
        counts = {len(f) for f in frames}
        if len(counts) > 1 or 0 in counts:
            raise traitlets.TraitError(f"every panel needs the same number of frames (at least one), got {sorted(counts)}")
        return frames

    @traitlets.validate("frame")
    def _check_frame(self, proposal):
        t, n = proposal["value"], max(self.count, 1)
        if not 0 <= t < n:
            raise traitlets.TraitError(f"frame must be in [0, {n}), got {t}")
        return t

    def show_frames(self, frames, *, captions=(), frame: int = 0, **traits) -> None:
        """Send new ``frames`` (per panel, encoded pictures), their ``captions`` and any other
        traits (``plot``, ``markers`` ...) in one message, showing ``frame``."""
        with self.hold_sync():
            self.frame = 0  # valid for any frames
            self.set_trait("frames", [list(f) for f in frames])
            self.captions = list(captions)
            for name, value in traits.items():
                self.set_trait(name, value)
            self.frame = frame


class TrainingPlayer(_Widget):
    """Scrub through a training run: the recorded steps of a
    :class:`stnviz.animate.ProgressRecorder` (or a list of snapshots and the probe inputs) as one
    picture per step (:func:`stnviz.animate.compose_frame`), composed once, sent to the page once
    and scrubbed and played there (a :class:`FramePlayer`, ``player.view``).

    ``display``: how the pixels are shown (a :class:`stnviz.render.Display`); default the
    recorder's (:class:`stnviz.animate.ProgressRecorder`'s ``display``, or its model's), else
    out-of-range inputs stretched.

    Attributes: ``view`` (the :class:`FramePlayer`), ``frame`` (the step shown, read or set),
    ``caption`` (its text), ``frames_rendered`` (pictures composed in the kernel: one per step,
    never more however much the page scrubs).

    Example:
        >>> import stnviz, torch
        >>> from stnviz.animate import ProgressRecorder
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> recorder = ProgressRecorder(digits.images, digits.labels)
        >>> recorder.record(model, step=0); recorder.record(model, step=50)  # as fit would
        >>> player = TrainingPlayer(recorder, tile=32)
        >>> player.frame = 1
        >>> player.caption
        'step 50 · epoch 0.00 · probe accuracy 1.00'
    """

    def __init__(self, recorder=None, *, snapshots=None, inputs=None, columns: int = 4, tile: int = 112,
                 display: render.Display | None = None, interval: int = 250):
        from ..animate import compose_frame

        if recorder is not None:
            snapshots, inputs = recorder.snapshots, recorder.inputs
        if not snapshots:
            raise ValueError("TrainingPlayer needs recorded snapshots; the recorder holds none (did training run?)")
        if inputs is None:
            raise ValueError("TrainingPlayer needs the probe inputs (pass recorder= or inputs=)")
        n_out = snapshots[0].outputs.shape[0]
        if inputs.shape[0] != n_out:
            raise ValueError(f"TrainingPlayer got {inputs.shape[0]} probe inputs but the snapshots hold {n_out} outputs; "
                             "pass the recorder's own inputs (recorder=...)")
        self.snapshots, self.inputs = list(snapshots), inputs
        self.display = render.display_of(recorder, display=display)
        self.frames_rendered = 0
        self._init_common()
        pictures = []
        for s in self.snapshots:
            pictures.append(render.encode(compose_frame(self.inputs, s, columns=columns, tile=tile,
                                                        display=self.display), "png"))
            self.frames_rendered += 1
        self.view = FramePlayer(frames=[pictures], captions=[html.escape(_caption(s)) for s in self.snapshots],
                                titles=["each probe image: the input with the region the transformer samples (red) "
                                        "| what the transformer passes on"],
                                label="snapshot", interval=interval)
        self.view.add_class("stnviz-training-frames")
        self.root = W.VBox([self.view, self.message, self.log])
        self.root.add_class("stnviz-training-player")

    @property
    def frame(self) -> int:
        return self.view.frame

    @frame.setter
    def frame(self, i: int) -> None:
        self.view.frame = i

    @property
    def caption(self) -> str:
        return _caption(self.snapshots[self.view.frame])

    def _static_png(self) -> bytes:
        return self.view.frames[0][self.view.frame]


def _caption(s) -> str:
    return f"step {s.step} · epoch {s.epoch:.2f}" + (
        f" · probe accuracy {s.accuracy:.2f}" if not math.isnan(s.accuracy) else "")
