"""The stability viewer, in three parts: :class:`StabilityState` (which track, which frame; no
widgets), pure functions of a :class:`stnviz.analysis.SequenceRun` (:func:`render_stability`
for one frame, :func:`stability_plots` and :func:`marker_svg` for the track's plots) and
:class:`StabilityViewer` (a dropdown and a slider that only change the state, views rendered
from it, and the runs of the tracks, prefetched on a private copy of the model)."""

from __future__ import annotations

import copy
import html
import threading
import typing
import warnings

import ipywidgets as W
import numpy as np

from .. import render
from ._base import _one_thread, _show_pair, _views_row, _Widget

__all__ = ["StabilityState", "StabilityViews", "StabilityViewer", "marker_svg", "render_stability", "stability_plots"]


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
             f"({row['confidence']:.2f})"]
    if "iou" in row:
        parts.append(f"IoU with box {row['iou']:.2f}")
    if "theta_00" in row:
        theta = row[[f"theta_{r}{c}" for r in range(2) for c in range(3)]].to_numpy(dtype=np.float64)
        parts.append(html.escape(render.format_theta(theta, layout="line")))
    return StabilityViews(input_rgb, output_rgb, "<br>".join(parts))


def stability_plots(table) -> tuple[np.ndarray, list]:
    """A track's plots (the learned transform and the frame-to-frame change, from
    :func:`stnviz.render.plot_theta_components` and :func:`stnviz.render.plot_change_curves`)
    as an ``(H, W, 3)`` uint8 array at the size it is shown, and per axes the x pixel of every
    frame and the axes' top and bottom pixel rows (for :func:`marker_svg`).

    Example:
        >>> table = {"frame": [0, 1, 2], "rotation_deg": [5.0, 4.0, 6.0], "scale_x": [0.8, 0.8, 0.9],
        ...          "scale_y": [0.8, 0.9, 0.9], "tx": [0.0, 0.1, 0.1], "ty": [0.0, 0.0, 0.1],
        ...          "output_change": [float("nan"), 0.02, 0.03], "input_change": [float("nan"), 0.08, 0.06]}
        >>> rgb, markers = stability_plots(table)  # run_sequence's columns
        >>> rgb.shape, len(markers), [len(xs) for xs, top, bottom in markers]  # 3 transform panels + change
        ((390, 960, 3), 4, [3, 3, 3, 3])
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # fixed margins (room for the legends on the right of each block): a constrained layout
    # would draw the figure several times
    fig = Figure(figsize=(9.6, 3.9), dpi=100)
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


def marker_svg(shape, markers, t: int) -> str:
    """An SVG of ``shape[:2]`` (the plots' raster) with a vertical line at frame ``t`` in each of
    ``markers`` (from :func:`stability_plots`), laid over the plots: a scrub sends this, a few
    hundred bytes, instead of a re-encoded raster.

    Example:
        >>> svg = marker_svg((100, 200, 3), [(np.array([10.0, 20.0]), 5, 95)], 1)
        >>> svg.split(">")[1]
        "<line x1='20.0' x2='20.0' y1='5' y2='95'/"
    """
    h, w = shape[:2]
    lines = "".join(f"<line x1='{xs[t]:.1f}' x2='{xs[t]:.1f}' y1='{y0}' y2='{y1}'/>" for xs, y0, y1 in markers)
    return (f"<svg class='stnviz-marker-svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' "
            f"stroke='{render.OUTLINE_COLOR}' stroke-width='2' stroke-opacity='0.85'>{lines}</svg>")


_MARKER_CSS = ("<style>.stnviz-plots-box{position:relative;align-self:flex-start}"
               ".stnviz-plots-box>.stnviz-marker{position:absolute;left:0;top:0;pointer-events:none}"
               ".stnviz-marker svg{display:block}</style>")


class StabilityViewer(_Widget):
    """Pick a track, scrub its frames: input with the sampled region (and annotated box) | the
    transformer's output, with the learned transform and the frame-to-frame change of the
    track, a marker at the current frame.

    Args:
        model: the model to analyse; ``tracks``: a list of :class:`stnviz.data.Track` (e.g.
        ``stnviz.data.sample_tracks()``) or other frame sources accepted by
        :func:`stnviz.analysis.run_sequence`.
        key: which transformer (its capture record's key); default the first image transformer.
        class_names: optional names for the labels and predictions (default the display's).
        display: how the pixels are shown (a :class:`stnviz.render.Display`); default the one
            remembered on ``model`` (:func:`stnviz.render.set_display`), else frames outside [0, 1]
            stretched to their own range.
        prefetch: run the other tracks in a background thread after the first one is shown, so
            a track change finds its run ready (one run at a time, under a lock). The runs then use
            a private eval-mode copy of ``model`` made once, here (same device; it costs one more
            model in memory): the model you hold is never switched to eval mode, run or hooked by
            the background thread, so it can go on training meanwhile; the tracks show the model
            as it was when the viewer was made (make a new viewer to see later weights). Without
            prefetch, each track runs ``model`` itself when it is first picked.

    A thin shell over :class:`StabilityState` (``viewer.state``), :func:`render_stability`,
    :func:`stability_plots` and :func:`marker_svg`. The plots are drawn once per track at the size
    they are shown (no browser rescaling); a scrub only moves the frame marker, an SVG laid over
    them.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> names = stnviz.data.GTSRB_CLASS_NAMES
        >>> viewer = StabilityViewer(model, stnviz.data.sample_tracks()[:1], class_names=names, prefetch=False)
        >>> viewer.frame.max, viewer.track.options[0][0]  # 30 frames of one track
        (29, '0: track 4 (speed limit 20)')
        >>> viewer.frame.value = 10  # scrub
        >>> viewer.info.value.split(" (")[0]
        'frame 10: prediction <b>speed limit 20</b>'
    """

    def __init__(self, model, tracks, *, key: str | None = None, scale: int = 6, class_names=None,
                 prefetch: bool = True, display: render.Display | None = None):
        from ..analysis import run_sequence

        self.model, self.tracks = model, list(tracks)
        if not self.tracks:
            raise ValueError("StabilityViewer needs at least one track")
        self._run_sequence = run_sequence
        self.display = render.display_of(model, display=display)
        if class_names is None:
            class_names = self.display.class_names
        self.key, self.scale, self.class_names = key, scale, class_names
        self._tracks: dict = {}  # i -> (SequenceRun, plot raster, marker geometry)
        self._lock = threading.Lock()  # one run_sequence at a time (eval_mode is not re-entrant)
        self._futures: dict = {}
        self._pool = None
        # what the tracks run: a private copy when a background thread will run it
        self._runner = self._private_copy(model) if prefetch and len(self.tracks) > 1 else model
        prefetch = self._runner is not model
        self.state = StabilityState(len(self.tracks))
        self._init_common()
        labels = [f"{i}: track {getattr(t, 'track_id', i)} ({render.class_name(getattr(t, 'label', None), class_names)})"
                  for i, t in enumerate(self.tracks)]
        self.track = W.Dropdown(options=list(zip(labels, range(len(self.tracks)))), value=0, description="track",
                                layout=W.Layout(width="30em"))
        self.track.add_class("stnviz-track")
        self.frame = W.IntSlider(0, 0, 1, description="frame")
        self.frame.add_class("stnviz-frame-slider")
        self.input_view = W.Image(format="png")
        self.input_view.add_class("stnviz-input")
        self.output_view = W.Image(format="png")
        self.output_view.add_class("stnviz-output")
        self.plots = W.Image(format="png", layout=W.Layout(margin="0"))
        self.plots.add_class("stnviz-plots")
        # the current-frame marker: an SVG laid over the plots (a scrub sends a few hundred bytes
        # instead of re-encoding the plots)
        self.marker = W.HTML(layout=W.Layout(margin="0"))
        self.marker.add_class("stnviz-marker")
        plots = W.Box([self.plots, self.marker, W.HTML(_MARKER_CSS, layout=W.Layout(display="none"))])
        plots.add_class("stnviz-plots-box")
        self.info = W.HTML()
        self.info.add_class("stnviz-info")
        self.track.observe(lambda ch: self._safe(self._on_track), names="value")
        self.frame.observe(lambda ch: self._safe(self._on_frame, ch["new"]), names="value")
        self.root = W.VBox([
            W.HBox([self.track, self.frame]),
            _views_row(self.input_view, self.output_view, self.info),
            plots, self.message, self.log,
        ])
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

    def _compute(self, i: int):
        with self._lock, _one_thread():
            if i not in self._tracks:
                run = self._run_sequence(self._runner, self.tracks[i], key=self.key)
                rgb, markers = stability_plots(run.table)
                self._tracks[i] = (run, render.encode(rgb, "png"), rgb.shape, markers)
            return self._tracks[i]

    def _get(self, i: int):
        if i in self._tracks:
            return self._tracks[i]
        fut = self._futures.pop(i, None)
        if fut is not None and not fut.cancel():  # running or done in the background: wait for it
            return fut.result()
        return self._compute(i)

    def run(self, i: int):
        """The :class:`stnviz.analysis.SequenceRun` of track ``i`` (computed once)."""
        return self._get(i)[0]

    def close(self) -> None:
        """Stop the background runs (they also stop with the kernel)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _on_track(self) -> None:
        i = self.track.value
        run = self.run(i)
        self.state.set_track(i, run.frames.shape[0])
        self.frame.max = self.state.frames - 1  # may clamp the slider, which reports it (_on_frame)
        self.frame.value = self.state.frame
        self.update()

    def _on_frame(self, t: int) -> None:
        self.state.set_frame(t)
        self.update()

    def update(self) -> None:
        """Re-render the views from the state."""
        i, t = self.state.track, self.state.frame
        run, png, shape, markers = self._get(i)
        with _one_thread():
            v = render_stability(run, t, class_names=self.class_names, scale=self.scale, display=self.display)
        _show_pair(self.input_view, self.output_view, v.input_rgb, v.output_rgb, "png")
        if self.plots.value is not png:
            self.plots.value = png
            self.plots.layout.width = f"{shape[1]}px"  # shown at the size it was drawn, never rescaled
        self.marker.value = marker_svg(shape, markers, t)
        self.info.value = v.info
