"""Scrub through a training run: the frames of :func:`stnviz.animate.compose_frame`, one per
recorded step."""

from __future__ import annotations

import math

import ipywidgets as W

from .. import render
from ._base import _Widget

__all__ = ["TrainingPlayer"]


class TrainingPlayer(_Widget):
    """Scrub through a training run: a slider over the recorded steps of a
    :class:`stnviz.animate.ProgressRecorder` (or a list of snapshots and the probe inputs).

    Frames are composed once, on first view of each step, and cached. ``display``: how the pixels
    are shown (a :class:`stnviz.render.Display`); default the recorder's
    (:class:`stnviz.animate.ProgressRecorder`'s ``display``, or its model's), else out-of-range
    inputs stretched.

    Example:
        >>> import stnviz, torch
        >>> from stnviz.animate import ProgressRecorder
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(4))
        >>> recorder = ProgressRecorder(digits.images, digits.labels)
        >>> recorder.record(model, step=0); recorder.record(model, step=50)  # as fit would
        >>> player = TrainingPlayer(recorder, tile=32)
        >>> player.slider.value = 1
        >>> player.caption.value
        'step 50 · epoch 0.00 · probe acc 1.00'
    """

    def __init__(self, recorder=None, *, snapshots=None, inputs=None, columns: int = 4, tile: int = 112,
                 display: render.Display | None = None):
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
        self._compose = lambda s: compose_frame(self.inputs, s, columns=columns, tile=tile, display=self.display)
        self._cache: dict = {}
        self._init_common()
        self.slider = W.IntSlider(0, 0, len(self.snapshots) - 1, description="snapshot", continuous_update=True)
        self.slider.add_class("stnviz-step")
        self.play = W.Play(value=0, min=0, max=len(self.snapshots) - 1, interval=250)
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.view = W.Image(format="png")
        self.view.add_class("stnviz-frame")
        self.caption = W.HTML()
        self.slider.observe(lambda ch: self._safe(self.update), names="value")
        self.root = W.VBox([W.HBox([self.play, self.slider, self.caption]), self.view, self.message, self.log])
        self.root.add_class("stnviz-training-player")
        self._safe(self.update)

    def update(self) -> None:
        i = self.slider.value
        if i not in self._cache:
            self._cache[i] = render.encode(self._compose(self.snapshots[i]), "png")
        self.view.value = self._cache[i]
        s = self.snapshots[i]
        self.caption.value = f"step {s.step} · epoch {s.epoch:.2f}" + (
            f" · probe acc {s.accuracy:.2f}" if not math.isnan(s.accuracy) else "")
