"""The stability viewer, in three parts: :class:`StabilityState` (which track, which frame; no
widgets), pure functions of a :class:`stnviz.analysis.SequenceRun` (:func:`render_stability`
for one frame, :func:`stability_plots` for the track's plots) and :class:`StabilityViewer` (a
track picker and a :class:`~stnviz.widgets.FramePlayer` that gets each track's frames once and
scrubs and plays them in the page; the runs of the tracks prefetched on a private copy of the
model)."""

from __future__ import annotations

import copy
import html
import io
import threading
import typing
import warnings

import ipywidgets as W
import numpy as np

from .. import render
from ._base import _one_thread, _stacked_png, _Widget

__all__ = ["StabilityState", "StabilityViews", "StabilityViewer", "render_stability", "stability_plots"]


class StabilityState:
    """What a :class:`StabilityViewer` shows, free of widgets: a track and one of its frames.

    Attributes:
        tracks: how many tracks there are; ``track``, ``frame``: the selection;
        frames: how many frames the selected track has (known once it has run).

    Picking another track keeps the frame where it was, clamped to that track's length.

    Example:
        >>> state = StabilityState(3)
        >>> state.set_track(0, frames=30); state.set_frame(25)
        >>> state.set_track(2, frames=12); state.track, state.frame  # a shorter track: the last frame
        (2, 11)
        >>> state.set_frame(12)
        Traceback (most recent call last):
        ...
        ValueError: frame must be in [0, 12) for track 2, got 12
    """

    def __init__(self, tracks: int):
        if tracks < 1:
            raise ValueError(f"a stability viewer needs at least one track, got {tracks}")
        self.tracks = int(tracks)
        self.track, self.frame, self.frames = 0, 0, 1

    def set_track(self, i: int, frames: int) -> None:
        """Select track ``i``, which has ``frames`` frames."""
        if not 0 <= int(i) < self.tracks:
            raise ValueError(f"track must be in [0, {self.tracks}), got {i}")
        if frames < 1:
            raise ValueError(f"track {i} has no frames; expected at least one")
        self.track, self.frames = int(i), int(frames)
        self.frame = min(self.frame, self.frames - 1)

    def set_frame(self, t: int) -> None:
        if not 0 <= int(t) < self.frames:
            raise ValueError(f"frame must be in [0, {self.frames}) for track {self.track}, got {t}")
        self.frame = int(t)


class StabilityViews(typing.NamedTuple):
    """What :func:`render_stability` returns."""

    input_rgb: np.ndarray  # (H', W', 3) uint8: the frame, grey margin, sampled region (and annotated box)
    output_rgb: np.ndarray  # (H'', W'', 3) uint8: the transformer's output
    info: str  # HTML: prediction and confidence, IoU with the box, the learned transform


def render_stability(run, t: int, *, class_names=None, scale: int = 6, margin: float = 0.15,
                     display: render.Display | None = None) -> StabilityViews:
    """Frame ``t`` of a :class:`stnviz.analysis.SequenceRun`: the pictures and the text; no widgets.

    ``display``: how the pixels are shown (a :class:`stnviz.render.Display`); default the run's
    (remembered from its model), else frames outside [0, 1] stretched. ``class_names``: names of
    the predictions (default the display's).

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> run = stnviz.analysis.run_sequence(model, stnviz.data.sample_tracks()[0])
        >>> views = render_stability(run, 10, class_names=stnviz.data.GTSRB_CLASS_NAMES)
        >>> views.input_rgb.shape, views.output_rgb.shape  # 32 x 32 frames, 6x; the input with 5-pixel margins
        ((252, 252, 3), (192, 192, 3))
        >>> views.info.split(" (")[0]
        'frame 10: prediction <b>speed limit 20</b>'
    """
    if not 0 <= t < run.frames.shape[0]:
        raise ValueError(f"frame must be in [0, {run.frames.shape[0]}), got {t}")
    box = run.boxes[t] if run.boxes is not None else None
    shown = render.display_of(run, display=display)
    frame = run.frames[t]
    input_rgb, output_rgb = render.region_panels(shown.apply(frame, where="StabilityViewer"),
                                                 shown.apply(run.outputs[t], frame, where="StabilityViewer"),
                                                 run.outlines[t], box=box, scale=scale, margin=margin)
    names = class_names if class_names is not None else shown.class_names
    row = run.table.iloc[t]
    parts = [f"frame {t}: prediction <b>{html.escape(render.class_name(row['prediction'], names))}</b> "
             f"({row['confidence']:.0%} sure)"]
    if "iou" in row:
        parts.append(f"overlap of the region with the marked sign (IoU): {row['iou']:.2f}")
    if "rotation_deg" in row:  # the table's decomposition, in words
        parts.append(f"the region: turned {row['rotation_deg']:+.1f}°, {row['scale_x']:.2f} × {row['scale_y']:.2f} "
                     f"of the frame, centre at ({row['tx']:+.2f}, {row['ty']:+.2f})")
    if "theta_00" in row:
        theta = row[[f"theta_{r}{c}" for r in range(2) for c in range(3)]].to_numpy(dtype=np.float64)
        parts.append(f"<span style='color:#666'>theta {html.escape(render.format_theta(theta, False, layout='line'))}"
                     "</span>")
    return StabilityViews(input_rgb, output_rgb, "<br>".join(parts))


def stability_plots(table) -> tuple[np.ndarray, list]:
    """A track's plots (the learned transform and the frame-to-frame change, from
    :func:`stnviz.render.plot_theta_components` and :func:`stnviz.render.plot_change_curves`)
    as an ``(H, W, 3)`` uint8 array at the size it is shown, and per axes the x pixel of every
    frame and the axes' top and bottom pixel rows (where the player draws its frame marker).

    Example:
        >>> table = {"frame": [0, 1, 2], "rotation_deg": [5.0, 4.0, 6.0], "scale_x": [0.8, 0.8, 0.9],
        ...          "scale_y": [0.8, 0.9, 0.9], "tx": [0.0, 0.1, 0.1], "ty": [0.0, 0.0, 0.1],
        ...          "output_change": [float("nan"), 0.02, 0.03], "input_change": [float("nan"), 0.08, 0.06]}
        >>> rgb, markers = stability_plots(table)  # run_sequence's columns
        >>> rgb.shape, len(markers), [len(xs) for xs, top, bottom in markers]  # 3 transform panels + change
        ((340, 960, 3), 4, [3, 3, 3, 3])
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # fixed margins (room for the legends on the right of each block): a constrained layout
    # would draw the figure several times
    fig = Figure(figsize=(9.6, 3.4), dpi=100)  # 340 px tall: the viewer fits a laptop screen
    canvas = FigureCanvasAgg(fig)
    left, right = fig.add_gridspec(1, 2, width_ratios=[1.15, 1], left=0.075, right=0.86, bottom=0.115,
                                   top=0.925, wspace=0.62).subplots()
    if "rotation_deg" in table:
        render.plot_theta_components(table, left)
    else:
        left.set_axis_off()
    render.plot_change_curves(table, right)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    h = rgb.shape[0]
    frames = np.asarray(table["frame"], dtype=float)
    markers = []
    for ax in fig.axes:
        if not ax.axison or not ax.lines:
            continue
        bbox = ax.get_window_extent()
        xs = ax.transData.transform(np.stack([frames, np.zeros_like(frames)], 1))[:, 0]
        markers.append((xs, int(round(h - bbox.y1)), int(round(h - bbox.y0))))
    return rgb, markers


def _track_label(i: int, track, class_names, count: int) -> str:
    """What the track picker calls track ``i``: its sign (or label) first, the data set's track
    number after it."""
    what = render.class_name(getattr(track, "label", None), class_names)
    number = getattr(track, "track_id", None)
    return f"{i + 1} of {count}: {what}" + (f" (track {number})" if number is not None else "")


def _with_markers(rgb: np.ndarray, markers, t: int) -> np.ndarray:
    """The plots' raster ``(H, W, 3)`` with a vertical line at frame ``t`` in each axes (as the page
    draws it), for the static picture."""
    out = rgb.copy()
    color = np.array([int(render.OUTLINE_COLOR[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)
    for xs, top, bottom in markers:
        x = int(round(float(xs[t])))
        out[top:bottom, max(0, x - 1):x + 1] = color
    return out


class StabilityViewer(_Widget):
    """Pick a track, scrub or play its frames: the frame with the sampled region (and annotated
    box) | the transformer's output, the prediction, and the learned transform and the
    frame-to-frame change of the whole track, a marker at the frame shown.

    Args:
        model: the model to analyse; ``tracks``: a list of :class:`stnviz.data.Track` (e.g.
        ``stnviz.data.sample_tracks()``) or other frame sources accepted by
        :func:`stnviz.analysis.run_sequence`.
        key: which transformer (its capture record's key); default the first image transformer.
        class_names: optional names for the labels and predictions (default the display's).
        display: how the pixels are shown (a :class:`stnviz.render.Display`); default the one
            remembered on ``model`` (:func:`stnviz.render.set_display`), else frames outside [0, 1]
            stretched to their own range.
        prefetch: prepare the other tracks in a background thread after the first one is shown, so
            a track change finds its frames ready (one run at a time, under a lock). The runs then
            use a private eval-mode copy of ``model`` made once, here (same device; it costs one
            more model in memory): the model you hold is never switched to eval mode, run or hooked
            by the background thread, so it can go on training meanwhile; the tracks show the model
            as it was when the viewer was made (make a new viewer to see later weights). Without
            prefetch, each track runs ``model`` itself when it is first picked.
        interval: milliseconds per frame when playing at 1x.

    A track's pictures (every frame, by :func:`render_stability`) and its plots
    (:func:`stability_plots`, drawn at the size they are shown) are made once, in the kernel, and
    sent to the page once (a :class:`FramePlayer`, ``viewer.view``); scrubbing and playing happen
    in the page, which moves the plots' marker itself.

    Attributes: ``state`` (a :class:`StabilityState`, following the page), ``track`` (the track
    picker), ``view``, ``frame`` (read or set), ``info`` (the shown frame's text),
    ``frames_rendered`` (frames rendered in the kernel: one per frame of each track prepared,
    never more however much the page scrubs or plays).

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> names = stnviz.data.GTSRB_CLASS_NAMES
        >>> viewer = StabilityViewer(model, stnviz.data.sample_tracks()[:1], class_names=names, prefetch=False)
        >>> viewer.view.count, viewer.track.options[0][0]  # 30 frames of one track
        (30, '1 of 1: speed limit 20 (track 4)')
        >>> viewer.frame = 10  # as the page's slider does
        >>> viewer.state.frame, viewer.info.split(" (")[0]
        (10, 'frame 10: prediction <b>speed limit 20</b>')
    """

    def __init__(self, model, tracks, *, key: str | None = None, scale: int = 6, class_names=None,
                 prefetch: bool = True, display: render.Display | None = None, interval: int = 200):
        from ..analysis import run_sequence
        from .player import FramePlayer

        self.model, self.tracks = model, list(tracks)
        if not self.tracks:
            raise ValueError("StabilityViewer needs at least one track")
        self._run_sequence = run_sequence
        self.display = render.display_of(model, display=display)
        if class_names is None:
            class_names = self.display.class_names
        self.key, self.scale, self.class_names = key, scale, class_names
        self.frames_rendered = 0
        self._tracks: dict = {}  # i -> _Track
        self._lock = threading.Lock()  # one run_sequence at a time (eval_mode is not re-entrant)
        self._futures: dict = {}
        self._pool = None
        # what the tracks run: a private copy when a background thread will run it
        self._runner = self._private_copy(model) if prefetch and len(self.tracks) > 1 else model
        prefetch = self._runner is not model
        self.state = StabilityState(len(self.tracks))
        self._init_common()
        labels = [_track_label(i, t, class_names, len(self.tracks)) for i, t in enumerate(self.tracks)]
        width = max(24, max(len(s) for s in labels) + 12)  # long sign names are never cut
        self.track = W.Dropdown(options=list(zip(labels, range(len(self.tracks)))), value=0, description="track",
                                layout=W.Layout(width=f"{width}ch"), style={"description_width": "initial"})
        self.track.add_class("stnviz-track")
        self.view = FramePlayer(titles=["the frame: where the transformer samples (red), the marked sign (green)",
                                        "what the transformer passes on to the classifier"],
                                label="frame", interval=interval,
                                plot_title="the whole track, frame by frame (red line: the frame shown)")
        self.view.add_class("stnviz-stability-frames")
        self.view.observe(lambda ch: self._safe(self.state.set_frame, ch["new"]), names="frame")
        self.track.observe(lambda ch: self._safe(self._on_track), names="value")
        self.root = W.VBox([self.track, self.view, self.message, self.log])
        self.root.add_class("stnviz-stability-viewer")
        self._safe(self._on_track)
        if prefetch and len(self.tracks) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="stnviz-prefetch")
            for i in range(1, len(self.tracks)):
                self._futures[i] = self._pool.submit(self._compute, i)

    @staticmethod
    def _private_copy(model):
        """An eval-mode copy of ``model`` for the background runs (parameters frozen, same device),
        or ``model`` itself with a warning when it can't be copied (then nothing is prefetched)."""
        try:
            runner = copy.deepcopy(model)
        except Exception as e:
            warnings.warn(f"StabilityViewer: prefetch=True needs a copy of the model, but copy.deepcopy failed "
                          f"({type(e).__name__}: {e}); the tracks are run when picked instead", RuntimeWarning,
                          stacklevel=3)
            return model
        return runner.eval().requires_grad_(False)

    def _compute(self, i: int) -> "_Track":
        with self._lock, _one_thread():
            if i not in self._tracks:
                run = self._run_sequence(self._runner, self.tracks[i], key=self.key)
                rgb, markers = stability_plots(run.table)
                inputs, outputs, captions = [], [], []
                for t in range(run.frames.shape[0]):
                    v = render_stability(run, t, class_names=self.class_names, scale=self.scale,
                                         display=self.display)
                    inputs.append(render.encode(v.input_rgb, "png"))
                    outputs.append(render.encode(v.output_rgb, "png"))
                    captions.append(v.info)
                    self.frames_rendered += 1
                self._tracks[i] = _Track(run, [inputs, outputs], captions, render.encode(rgb, "png"), rgb.shape,
                                         [[[round(float(x), 1) for x in xs], top, bottom] for xs, top, bottom in markers])
            return self._tracks[i]

    def _get(self, i: int) -> "_Track":
        if i in self._tracks:
            return self._tracks[i]
        fut = self._futures.pop(i, None)
        if fut is not None and not fut.cancel():  # running or done in the background: wait for it
            return fut.result()
        return self._compute(i)

    def run(self, i: int):
        """The :class:`stnviz.analysis.SequenceRun` of track ``i`` (computed once)."""
        return self._get(i).run

    def close(self) -> None:
        """Stop the background runs (they also stop with the kernel) and close the widget."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()

    def _on_track(self) -> None:
        i = self.track.value
        tr = self._get(i)
        self.state.set_track(i, tr.run.frames.shape[0])  # keeps the frame, clamped to this track
        self.view.show_frames(tr.frames, captions=tr.captions, frame=self.state.frame, plot=tr.plot,
                              plot_size=[int(tr.shape[1]), int(tr.shape[0])], markers=tr.markers)

    @property
    def frame(self) -> int:
        return self.state.frame

    @frame.setter
    def frame(self, t: int) -> None:
        self.state.set_frame(t)  # checked against the track's length first
        self.view.frame = int(t)

    @property
    def info(self) -> str:
        """The text of the frame shown (HTML): prediction, IoU with the box, the learned transform."""
        return self.view.caption

    def _static_png(self) -> bytes:
        tr, t = self._get(self.state.track), self.state.frame
        inp, out, plot = (_decoded(b) for b in (tr.frames[0][t], tr.frames[1][t], tr.plot))
        return _stacked_png([inp, out], [_with_markers(plot, tr.markers, t)])


class _Track(typing.NamedTuple):
    """What the viewer makes once per track."""

    run: object  # the SequenceRun
    frames: list  # [input pictures, output pictures], PNG bytes, one per frame
    captions: list  # HTML, one per frame
    plot: bytes  # PNG of stability_plots
    shape: tuple  # the plot's (H, W, 3)
    markers: list  # per axes [xs, top, bottom], JSON-ready


def _decoded(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
