"""Interactive explorers for JupyterLab: thin shells over :mod:`stnviz.geometry`,
:mod:`stnviz.capture` and :mod:`stnviz.render`.

The views are ``ipywidgets.Image`` PNGs drawn by :func:`stnviz.render.overlay_rgb`: a slider
change re-renders two small images in a few milliseconds and never creates a figure. An
exception in a callback is shown in the widget's output area, and a degenerate transform
(singular, non-finite, sampling only outside the image) shows a message; the widget stays live.

Display a widget by leaving it as a cell's last expression (or ``display(explorer)``).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import html
import math
import threading
import traceback
import typing
import warnings

import ipywidgets as W
import numpy as np
import torch

from . import geometry, render
from .analysis import theta_table
from .capture import CaptureError, collect
from .models.inputs import warn_if_not_unit_range

__all__ = ["ExplorerState", "ExplorerViews", "STNInspector", "StabilityViewer", "ThetaExplorer", "TrainingPlayer",
           "compose_parts", "render_explorer", "slider_value"]


def _as_images(images, *, where: str | None = "stnviz.widgets") -> torch.Tensor:
    """``(N, C, H, W)`` float on the CPU from a tensor or an ``ImageSet``; warns once (``where``)
    when float images look like [0, 255] data (``where=None``: the caller says how to display
    other ranges, e.g. the inspector's ``mean`` / ``std``)."""
    if hasattr(images, "images") and hasattr(images, "to_float"):  # an ImageSet
        images = images.to_float(images.images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a (N, C, H, W) tensor or an ImageSet, got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be (N, C, H, W) with N >= 1, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1] or uint8, got {images.dtype}")
    if where is not None:
        warn_if_not_unit_range(images, where=where)
    return images.detach().cpu().float()


def _views_row(input_view, output_view, *extra) -> W.HBox:
    """Input + sampled region | transformer output | extra widgets, side by side."""
    return W.HBox([W.VBox([W.HTML("<b>input + sampled region</b>"), input_view]),
                   W.VBox([W.HTML("<b>transformer output</b>"), output_view]), *extra])


def _image_format(images: torch.Tensor) -> str:
    """PNG for grey images (crisp, and quick to encode), JPEG for colour ones (PNG would take
    tens of milliseconds per update for a 224x224 photo)."""
    return "png" if images.shape[1] == 1 else "jpeg"


def _degenerate(params: torch.Tensor, family: str, grid: torch.Tensor, components) -> str | None:
    """A human message when the transform is degenerate, else None. ``grid`` may be a sparse
    subset of the sampling grid ``(..., 2)``."""
    if family in ("affine", "attention", "restricted", "translation", "projective"):
        m = geometry.to_matrix(params.double(), family, components=components)
        lin = m[0, :2, :2] if family != "projective" else m[0]
        det = float(torch.linalg.det(lin))
        if abs(det) < 1e-6:
            return f"singular transform (det = {det:.2g}): the output collapses onto a line or a point"
    inside = (grid.abs() <= 1).all(-1)
    if not bool(inside.any()):
        return "the sampled region lies entirely outside the input: the output is all padding"
    return None


_threads_state = threading.local()  # per thread: depth, and the count to restore (or None)


@contextlib.contextmanager
def _one_thread():
    """Run a widget's small tensor work on one intra-op thread. A 224x224 ``affine_grid`` takes
    about 1 ms on one thread, but 40-50 ms on two when the other core is busy (another process,
    a training run): the second thread waits for a core. Re-entrant.

    The count is kept per thread, as torch keeps it (OpenMP's thread count belongs to the calling
    thread): each thread sets its own and restores it when its outermost block ends. A count shared
    by threads had the last thread to leave "restore" the count in its own thread only, leaving the
    user's thread on one core. A thread already on one thread changes nothing (``set_num_threads``
    also sets the default new threads start with)."""
    state = _threads_state
    depth = getattr(state, "depth", 0)
    if depth == 0:
        before = torch.get_num_threads()
        state.restore = before if before != 1 else None
        if state.restore is not None:
            torch.set_num_threads(1)
    state.depth = depth + 1
    try:
        yield
    finally:
        state.depth -= 1
        if state.depth == 0 and state.restore is not None:
            torch.set_num_threads(state.restore)


_ERROR_PREFIX = "<span style='color:#c00'>error: "


class _Widget:
    """Shared plumbing: the root box, the message line and the output area for errors."""

    root: W.Widget

    def _init_common(self):
        self.message = W.HTML(layout=W.Layout(min_height="1.5em"))
        self.message.add_class("stnviz-message")
        self.log = W.Output(layout=W.Layout(max_height="12em", overflow="auto"))
        self.log.add_class("stnviz-log")

    def _safe(self, fn, *args):
        if self.message.value.startswith(_ERROR_PREFIX):
            self.message.value = ""  # a good selection after a failed one: the old error is gone
        try:
            fn(*args)
        except Exception as e:  # shown in the widget, never a dead widget
            self.message.value = f"{_ERROR_PREFIX}{html.escape(str(e))}</span>"
            # append_stderr works with or without a live frontend (a `with self.log:` block
            # only captures inside a kernel)
            self.log.append_stderr(traceback.format_exc())

    def _repr_mimebundle_(self, **kwargs):
        return self.root._repr_mimebundle_(**kwargs)

    def show(self):
        from IPython.display import display

        display(self.root)


# --------------------------------------------------------------------------- theta explorer
# Three parts: ExplorerState (the truth, no widgets), render_explorer (a pure function of the
# image and the parameters) and ThetaExplorer (sliders that only display the state and turn user
# edits into state changes).

EXPLORER_FAMILIES = ("affine", "projective", "tps")
AFFINE_PARTS = ("rotation", "scale_x", "scale_y", "shear", "tx", "ty")
_AFFINE_LIKE = geometry.MATRIX_FAMILIES  # shown as a full affine theta


def _affine_parts(params) -> dict | None:
    """Flat affine theta ``(6,)`` -> ``{rotation (degrees), scale_x, scale_y, shear, tx, ty}`` by
    :func:`stnviz.geometry.decompose_affine`; ``None`` for a singular or non-finite theta."""
    theta = torch.as_tensor(np.asarray(params, dtype=np.float64)).view(1, 2, 3)
    if not bool(torch.isfinite(theta).all()):
        return None
    try:
        p = geometry.decompose_affine(theta)
    except ValueError:
        return None
    parts = {n: float(getattr(p, n)) + 0.0 for n in AFFINE_PARTS}  # + 0.0: no -0.0
    parts["rotation"] = math.degrees(parts["rotation"]) + 0.0
    return parts


def compose_parts(parts: dict) -> np.ndarray:
    """``{rotation (degrees), scale_x, scale_y, shear, tx, ty}`` -> flat affine theta ``(6,)``
    (float64) by :func:`stnviz.geometry.compose_affine`.

    Example:
        >>> parts = {"rotation": 90.0, "scale_x": 0.5, "scale_y": 0.5, "shear": 0.0, "tx": 0.1, "ty": 0.0}
        >>> compose_parts(parts).round(3).tolist()  # [a11, a12, tx, a21, a22, ty]
        [0.0, -0.5, 0.1, 0.5, 0.0, 0.0]
    """
    v = {n: torch.tensor([float(parts[n])], dtype=torch.float64) for n in AFFINE_PARTS}
    v["rotation"] = torch.tensor([math.radians(float(parts["rotation"]))], dtype=torch.float64)
    return geometry.compose_affine(**v).reshape(-1).numpy().copy()


class ExplorerState:
    """What a :class:`ThetaExplorer` shows, free of widgets.

    Attributes:
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        params: the exact flat parameters, float64: affine ``[a11, a12, tx, a21, a22, ty]``
            (row-major theta ``(2, 3)``, output -> input, normalised, ``align_corners=False``);
            projective the first 8 entries of the homography (``h33 = 1``); TPS ``(x0, y0, x1, ...)``,
            where each control point samples in the input (normalised ``(x, y)``).
        parts: affine only, the decomposition the decomposed sliders show (rotation in degrees).
            Setting one part recomposes theta from the others *as they are*, so rotating out and
            back gives back the same theta. ``None`` until the parameters have a decomposition
            (a singular theta keeps the last one).
        index: the selected image; point: the selected TPS control point.
        identity, initial: the identity parameters and the ones the state opened with.

    Nothing here rounds: sliders snap what they *display*, never the state.

    Example:
        >>> state = ExplorerState("affine")
        >>> state.set_part("rotation", 30.0)  # degrees; the other parts stay as they are
        >>> state.params.round(3).tolist()
        [0.866, -0.5, 0.0, 0.5, 0.866, 0.0]
        >>> state.set_part("rotation", 0.0); np.allclose(state.params, state.identity)  # and back
        True
    """

    def __init__(self, family: str = "affine", params=None, *, control_points: int = 9, index: int = 0):
        if family not in EXPLORER_FAMILIES:
            raise ValueError(f"family must be 'affine', 'projective' or 'tps', got {family!r}")
        self.family = family
        self.identity = geometry.identity_params(family, control_points=control_points, dtype=torch.float64).numpy()
        self.index, self.point = index, 0
        self.parts: dict | None = None
        self.params = self.identity.copy()
        self.set_params(self.identity if params is None else params)
        self.initial = self.params.copy()

    @property
    def control_points(self) -> int:
        return self.identity.size // 2

    def set_params(self, params) -> None:
        """Set every parameter (affine 6, projective 8, TPS 2K values)."""
        p = np.array(params, dtype=np.float64).reshape(-1)
        if p.size != self.identity.size:
            raise ValueError(f"{self.family} explorer takes {self.identity.size} parameters, got {p.size}")
        self.params = p
        if self.family == "affine":
            self.parts = _affine_parts(p) or self.parts

    def set_entry(self, k: int, value: float) -> None:
        """Set raw entry ``k`` (affine / projective: index into ``params``; TPS: 0 = x, 1 = y of the
        selected control point)."""
        i = 2 * self.point + k if self.family == "tps" else k
        self.params[i] = float(value)
        if self.family == "affine":
            self.parts = _affine_parts(self.params) or self.parts

    def set_part(self, name: str, value: float) -> None:
        """Affine only: set one decomposed part (rotation in degrees), keep the others."""
        if self.family != "affine":
            raise ValueError(f"decomposed parts exist for the affine family only, this state is {self.family!r}")
        if name not in AFFINE_PARTS:
            raise ValueError(f"part must be one of {AFFINE_PARTS}, got {name!r}")
        parts = dict(self.parts or _affine_parts(self.identity))
        parts[name] = float(value)
        self.params = compose_parts(parts)
        self.parts = parts

    def set_point(self, i: int) -> None:
        if not 0 <= i < self.control_points:
            raise ValueError(f"control point must be in [0, {self.control_points}), got {i}")
        self.point = int(i)

    def use_learned(self, params) -> None:
        """Apply a model's parameters (see :meth:`ThetaExplorer.learned_params`)."""
        self.set_params(params)

    def to_identity(self) -> None:
        self.set_params(self.identity)

    def reset(self) -> None:
        """Back to the parameters the state opened with."""
        self.set_params(self.initial)

    def entry_values(self) -> list[float]:
        """What the raw entry sliders show (TPS: the selected point's x, y)."""
        if self.family == "tps":
            return [float(v) for v in self.params[2 * self.point: 2 * self.point + 2]]
        return [float(v) for v in self.params]


class ExplorerViews(typing.NamedTuple):
    """What :func:`render_explorer` returns: the two pictures, a message and the parameter text.

    Example:
        >>> views = render_explorer(torch.zeros(1, 28, 28), [0.0] * 6, "affine")  # theta = 0: singular
        >>> views._fields, views.output_rgb.dtype
        (('input_rgb', 'output_rgb', 'message', 'theta_text'), dtype('uint8'))
        >>> views.message
        'singular transform (det = 0): the output collapses onto a line or a point'
    """

    input_rgb: np.ndarray  # (H', W', 3) uint8: input, grey margin, sampled region (TPS: control points)
    output_rgb: np.ndarray  # (H'', W'', 3) uint8: the warped image
    message: str  # "" or why the transform is degenerate (plain text)
    theta_text: str  # fixed-width lines (every number the same width)


def _num(v: float, width: int = 7, digits: int = 3, sign: str = "+") -> str:
    return f"{round(float(v), digits) + 0.0:{sign}{width}.{digits}f}"  # + 0.0: never "-0.000"


def _theta_text(params: np.ndarray, family: str, point: int | None) -> str:
    if family == "affine":
        t = params.reshape(2, 3)
        lines = ["θ " + " ".join(_num(v) for v in t[0]), "  " + " ".join(_num(v) for v in t[1])]
        parts = _affine_parts(params)
        if parts is None:
            lines += ["no decomposition (singular)", "", "", ""]
        else:
            lines += [f"rotation {_num(parts['rotation'], 7, 1)}°",
                      f"scale    {_num(parts['scale_x'], sign='')} ×{_num(parts['scale_y'], sign='')}",
                      f"shear    {_num(parts['shear'])}",
                      f"shift    {_num(parts['tx'])}  {_num(parts['ty'])}"]
        return "\n".join(lines)
    if family == "projective":
        h = list(params) + [1.0]
        return "\n".join(("H " if r == 0 else "  ") + " ".join(_num(v) for v in h[3 * r: 3 * r + 3]) for r in range(3))
    k = params.size // 2
    p = 0 if point is None else point
    return f"point {p} of {k}\nx {_num(params[2 * p])}\ny {_num(params[2 * p + 1])}"


def _mark_points(rgb: np.ndarray, points, image_size, *, scale: int, margin: float, selected: int | None,
                 max_side: int = 320) -> np.ndarray:
    """Draw control points ``(K, 2)`` (input pixels) on an :func:`stnviz.render.overlay_rgb` canvas
    made with the same ``scale``, ``margin`` and ``max_side``; ``selected`` gets a larger ring."""
    from PIL import Image, ImageDraw

    h, w = image_size
    s = max(1, min(scale, max_side // max(h, w)))  # overlay_rgb's upscale factor
    mx, my = int(round(margin * w)) * s, int(round(margin * h)) * s
    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    r = max(2.0, s / 2.5)
    for i, (x, y) in enumerate(np.asarray(points, dtype=np.float64)):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        cx, cy = (x + 0.5) * s + mx, (y + 0.5) * s + my
        if i == selected:
            R = 2.2 * r
            draw.ellipse([cx - R, cy - R, cx + R, cy + R], outline="#ff2dd4", width=max(2, round(s / 4)))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="#ff2dd4")
        else:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill="#32d2ff", outline="#003a4d")
    return np.asarray(im)


def render_explorer(image: torch.Tensor, params, family: str, *, output_size=None, point: int | None = None,
                    scale: int = 8, margin: float = 0.25) -> ExplorerViews:
    """The explorer's pictures and text for one image and one set of parameters; no widgets.

    Args:
        image: ``(C, H, W)`` float in [0, 1].
        params: flat parameters of ``family`` (see :class:`ExplorerState`).
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        output_size: ``(H, W)`` of the output (default: the input size).
        point: TPS only, the control point to highlight.
        scale, margin: display magnification and grey margin (fraction of the image per side).

    Example:
        >>> views = render_explorer(torch.zeros(1, 28, 28), [0.5, 0, 0, 0, 0.5, 0], "affine", scale=4)
        >>> views.input_rgb.shape, views.output_rgb.shape, views.message  # input: 25% grey margin a side
        ((168, 168, 3), (112, 112, 3), '')
        >>> print(views.theta_text)
        θ  +0.500  +0.000  +0.000
           +0.000  +0.500  +0.000
        rotation    +0.0°
        scale      0.500 ×  0.500
        shear     +0.000
        shift     +0.000   +0.000
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    size = tuple(image.shape[-2:])
    out_size = tuple(output_size) if output_size is not None else size
    t = torch.tensor(p, dtype=torch.float32).unsqueeze(0)
    t = t.view(1, 2, 3) if family == "affine" else t.view(1, -1, 2) if family == "tps" else t
    text = _theta_text(p, family, point)
    try:
        grid = geometry.make_grid(t, family, out_size)
        out = geometry.warp(image.unsqueeze(0), grid)[0]
        outline = geometry.sampled_outline(t, family, size, points_per_side=8)[0]
    except ValueError as e:  # non-finite parameters, a point sent to infinity ...
        return ExplorerViews(render.overlay_rgb(image, scale=scale, margin=margin), np.zeros((8, 8, 3), np.uint8),
                             f"cannot sample: {e}", text)
    lattice = render.lattice_points(grid[0], size, 8)
    input_rgb = render.overlay_rgb(image, outline, lattice, scale=scale, margin=margin)
    if family == "tps":
        px = geometry.grid_to_pixels(torch.as_tensor(p, dtype=torch.float64).reshape(-1, 2), size).numpy()
        input_rgb = _mark_points(input_rgb, px, size, scale=scale, margin=margin, selected=point)
    output_rgb = render.overlay_rgb(out, scale=scale)
    message = _degenerate(t, family, grid[:, ::4, ::4], None) or ""
    return ExplorerViews(input_rgb, output_rgb, message, text)


def _js_round(x: float) -> float:
    """JavaScript's ``Math.round`` (halves go up), not Python's banker's rounding."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def slider_value(value: float, lo: float, hi: float, step: float) -> float:
    """The number a browser's ``FloatSlider`` holds after it is sent ``value``.

    ipywidgets draws the slider with noUiSlider, which snaps a value to its step through
    percentages (``min + round(pct / step_pct) * step_pct * (max - min) / 100``); when the result
    differs from the value sent, even by one ulp, the page sends it back as if the user had moved
    the slider. The same IEEE double arithmetic here gives the same number, so a value pushed
    through this function is one the page keeps as it is: no echo.

    Example:
        >>> slider_value(0.123, -2.0, 2.0, 0.01)  # what a browser slider with step 0.01 holds
        0.1200000000000001
        >>> slider_value(5.0, -2.0, 2.0, 0.01)  # clamped to the range
        2.0
    """
    v = min(max(float(value), lo), hi)
    if v >= hi:
        return float(hi)
    pct = 100 * (v - lo) / (hi - lo)
    n = 100 * step / (hi - lo)
    pct = min(max(0 + _js_round((pct - 0) / n) * n, 0.0), 100.0)
    if pct >= 100:
        return float(hi)
    return pct * (hi - lo) / 100 + lo


def _on_step(value: float, step: float) -> float:
    """A user's slider value as a clean multiple of the step (0.3, not 0.30000000000000004)."""
    digits = max(0, -math.floor(math.log10(step))) + 2
    return round(round(value / step) * step, digits) + 0.0


class ThetaExplorer(_Widget):
    """Slide a transform by hand and watch where it samples and what comes out.

    A thin shell over :class:`ExplorerState` (``explorer.state``) and :func:`render_explorer`:
    every slider shows the state, a user edit changes the state, and the pictures are rendered
    from the state. An incoming slider value is compared only with what that slider displays
    (equal: nothing to do), so no edit is ever dropped; values pushed to the page are the ones
    the browser's slider holds exactly (:func:`slider_value`), so they do not come back as edits.

    Args:
        images: ``(N, C, H, W)`` float in [0, 1] (or uint8, or an ``ImageSet``).
        model: optional. It is run once under :func:`stnviz.capture.capture`: the first recorded
            image transformer with known parameters gives the explorer's default family and the
            "learned" preset (its parameters for the selected image). Without such a record there
            is no "learned" button.
        family: ``"affine"`` (six entries *and* rotation / scale / shear / translation sliders),
            ``"projective"`` (eight entries) or ``"tps"`` (pick a control point, move it with two
            sliders). ``None``: the model's family, else affine.
        params: the parameters to open with (the "reset" button returns to them), or
            ``"learned"``; default the identity.
        output_size: ``(H, W)`` of the output (default: the input size).
        control_points: K for TPS (a square number; the model's K when it has a TPS transformer).
        scale: display magnification of small images.
        forward: how to run ``model`` on the images, ``forward(model, images)`` (default
            ``model(images)``), e.g. ``lambda m, x: m(x, fixed)`` for a model with two inputs; all
            images run as one batch, once.

    Attributes for scripting and tests: ``state``, ``params`` (the state's exact parameters),
    ``input_view`` / ``output_view`` (``ipywidgets.Image``), ``theta_view``, ``entries`` (the raw
    sliders), ``parts`` (the decomposed sliders, affine only), ``picker``, ``buttons``,
    ``message``, ``log``, ``edits`` (user edits received, per slider).

    Example:
        >>> from stnviz.data import draw_glyphs
        >>> explorer = ThetaExplorer(draw_glyphs(3))  # leave it last in a cell to display it
        >>> explorer.parts["rotation"].value = 30.0  # what dragging the rotation slider does
        >>> explorer.params.round(3).tolist(), dict(explorer.edits)
        ([0.866, -0.5, 0.0, 0.5, 0.866, 0.0], {'rotation °': 1})
        >>> [round(e.value, 3) for e in explorer.entries]  # the entry sliders follow, shown to their step
        [0.87, -0.5, 0.0, 0.5, 0.87, 0.0]
    """

    def __init__(self, images, model=None, *, family: str | None = None, params=None, output_size=None,
                 control_points: int = 9, scale: int = 8, forward=None):
        self.images = _as_images(images)
        self.model = model
        self.forward = forward
        self._collection = None
        self._learned_key = None
        self._learned_family = None
        if model is not None:
            rec = self._learned_record(0)
            if rec is not None:
                self._learned_key = getattr(rec, "key", rec.module)
                fam = "affine" if rec.family in _AFFINE_LIKE else rec.family
                self._learned_family = fam
                if fam == "tps":
                    control_points = int(rec.params.shape[1])
        if family is None:
            family = self._learned_family or "affine"
        if family not in EXPLORER_FAMILIES:
            raise ValueError(f"family must be 'affine', 'projective' or 'tps', got {family!r}")
        self.family = family
        self.has_learned = self._learned_family == family
        if isinstance(params, str):
            if params != "learned":
                raise ValueError(f"params must be flat parameters or 'learned', got {params!r}")
            params = self.learned_params(0)
        self.state = ExplorerState(family, params, control_points=control_points)
        self.control_points = self.state.control_points
        self.input_size = tuple(self.images.shape[-2:])
        self.output_size = tuple(output_size) if output_size is not None else self.input_size
        self.scale = scale
        self.format = _image_format(self.images)
        self.edits: collections.Counter = collections.Counter()
        self._pushing = False
        self._shown: dict = {}  # id(slider) -> the value the explorer made it display
        self._init_common()

        self.picker = W.IntSlider(0, 0, self.images.shape[0] - 1, description="image",
                                  disabled=self.images.shape[0] == 1, continuous_update=True)
        self.picker.add_class("stnviz-picker")
        self.entries: list[W.FloatSlider] = []
        self.parts: dict[str, W.FloatSlider] = {}
        controls = self._build_controls()

        buttons = [self._button("identity", "θ = identity: sample the whole image, unchanged", self.state.to_identity)]
        if not np.array_equal(self.state.initial, self.state.identity):
            buttons.append(self._button("reset", "back to the values the explorer opened with", self.state.reset))
        if self.has_learned:
            buttons.append(self._button("learned", f"the model's transform for this image (recorded from its "
                                        f"forward pass, transformer {self._learned_key!r})",
                                        lambda: self.state.use_learned(self.learned_params())))
        self.buttons = {b.description: b for b in buttons}

        self.input_view = W.Image(format=self.format)
        self.input_view.add_class("stnviz-input")
        self.output_view = W.Image(format=self.format)
        self.output_view.add_class("stnviz-output")
        # fixed width and no wrapping: the layout does not jump while a number changes
        self.theta_view = W.HTML(layout=W.Layout(width="17em", min_width="17em"))
        self.theta_view.add_class("stnviz-theta")
        self.picker.observe(lambda ch: self._safe(self._on_picker, ch), names="value")

        views = _views_row(self.input_view, self.output_view, self.theta_view)
        self.root = W.VBox([W.HBox([self.picker, *buttons]), views, self.message, controls, self.log])
        self.root.add_class("stnviz-theta-explorer")
        self._safe(self._show_state)

    # ------------------------------------------------------------------ controls
    def _button(self, name: str, tooltip: str, action) -> W.Button:
        b = W.Button(description=name, tooltip=tooltip, layout=W.Layout(width="auto"))
        b.add_class(f"stnviz-{name}")
        b.on_click(lambda _: self._safe(self._apply, action))
        return b

    def _slider(self, desc, lo, hi, step, fmt, cls, on_edit) -> W.FloatSlider:
        s = W.FloatSlider(value=slider_value(0.0, lo, hi, step), min=lo, max=hi, step=step, description=desc,
                          continuous_update=True, readout_format=fmt, layout=W.Layout(width="340px"))
        s.add_class(cls)
        s.observe(lambda ch: self._safe(self._on_slider, ch, on_edit), names="value")
        return s

    def _build_controls(self) -> W.Widget:
        if self.family == "affine":
            for i, n in enumerate(["a11", "a12", "tx", "a21", "a22", "ty"]):
                self.entries.append(self._slider(f"θ {n}", -2.0, 2.0, 0.01, ".2f", f"stnviz-theta-{i}",
                                                 lambda v, i=i: self.state.set_entry(i, v)))
            spec = {"rotation": (-180.0, 180.0, 0.1, ".1f"), "scale_x": (0.1, 3.0, 0.01, ".2f"),
                    "scale_y": (0.1, 3.0, 0.01, ".2f"), "shear": (-2.0, 2.0, 0.01, ".2f"),
                    "tx": (-2.0, 2.0, 0.01, ".2f"), "ty": (-2.0, 2.0, 0.01, ".2f")}
            for n, (lo, hi, step, fmt) in spec.items():
                desc = "rotation °" if n == "rotation" else n
                self.parts[n] = self._slider(desc, lo, hi, step, fmt, f"stnviz-part-{n}",
                                             lambda v, n=n: self.state.set_part(n, v))
            return W.HBox([W.VBox([W.HTML("<b>theta entries</b>"), *self.entries]),
                           W.VBox([W.HTML("<b>decomposed</b> (type a value into a readout for finer control)"),
                                   *self.parts.values()])])
        if self.family == "projective":
            for i, n in enumerate(["h11", "h12", "h13", "h21", "h22", "h23", "h31", "h32"]):
                lo, hi = (-1.0, 1.0) if n in ("h31", "h32") else (-2.0, 2.0)
                self.entries.append(self._slider(n, lo, hi, 0.01 if lo == -2.0 else 0.005,
                                                 ".2f" if lo == -2.0 else ".3f", f"stnviz-theta-{i}",
                                                 lambda v, i=i: self.state.set_entry(i, v)))
            return W.VBox([W.HTML("<b>homography (h33 = 1)</b>"), *self.entries])
        k = self.control_points
        self.point = W.Dropdown(options=list(range(k)), value=0, description="point")
        self.point.add_class("stnviz-tps-point")
        self.point.observe(lambda ch: self._safe(self._apply, lambda: self.state.set_point(ch["new"])), names="value")
        self.entries = [self._slider(a, -1.5, 1.5, 0.01, ".2f", f"stnviz-tps-{a}",
                                     lambda v, j=j: self.state.set_entry(j, v)) for j, a in enumerate("xy")]
        return W.VBox([W.HTML(f"<b>TPS: {k} control points</b> (blue; the selected one is pink; the others "
                              "stay where they are)"), self.point, *self.entries])

    # ------------------------------------------------------------------ events -> state
    def _on_slider(self, change, on_edit) -> None:
        if self._pushing:
            return  # the explorer itself is showing the state
        slider = change["owner"]
        shown = self._shown.get(id(slider))
        if shown is not None and abs(change["new"] - shown) <= slider.step * 1e-6:
            return  # the page reporting the value it already shows
        self.edits[slider.description] += 1
        on_edit(_on_step(change["new"], slider.step))
        self._show_state()

    def _on_picker(self, change) -> None:
        self.state.index = int(change["new"])
        self.update()

    def _apply(self, action) -> None:
        action()
        self._show_state()

    # ------------------------------------------------------------------ state -> views
    def _display(self, slider: W.FloatSlider, value: float) -> None:
        """Make ``slider`` show ``value`` (as the page's slider will hold it)."""
        if not math.isfinite(value):
            return  # reported by the message line; the slider keeps its place
        if value < slider.min or value > slider.max:  # widen rather than show a clamped lie
            lo, hi = min(slider.min, math.floor(value)), max(slider.max, math.ceil(value))
            self._pushing = True
            try:
                slider.min, slider.max = lo, hi
            finally:
                self._pushing = False
        v = slider_value(value, slider.min, slider.max, slider.step)
        self._shown[id(slider)] = v
        if slider.value != v:
            self._pushing = True
            try:
                slider.value = v
            finally:
                self._pushing = False

    def _show_state(self) -> None:
        """Every slider shows the state; then the pictures are re-rendered."""
        for sl, v in zip(self.entries, self.state.entry_values()):
            self._display(sl, v)
        if self.family == "affine" and self.state.parts is not None:
            for n, sl in self.parts.items():
                self._display(sl, self.state.parts[n])
        if self.family == "tps" and self.point.value != self.state.point:
            self._pushing = True
            try:
                self.point.value = self.state.point
            finally:
                self._pushing = False
        self.update()

    def update(self) -> None:
        """Re-render the views from the state."""
        st = self.state
        with _one_thread():
            v = render_explorer(self.images[st.index], st.params, st.family, output_size=self.output_size,
                                point=st.point if st.family == "tps" else None, scale=self.scale)
            inp, out = render.encode(v.input_rgb, self.format), render.encode(v.output_rgb, self.format)
        self.input_view.value, self.output_view.value = inp, out
        colour = "#c00" if v.message.startswith("cannot") else "#c60"
        self.message.value = f"<span style='color:{colour}'>{html.escape(v.message)}</span>" if v.message else ""
        self.theta_view.value = (f"<pre style='font-size:11px;line-height:1.35;white-space:pre;margin:0'>"
                                 f"{html.escape(v.theta_text)}</pre>")

    # ------------------------------------------------------------------ scripting
    @property
    def params(self) -> np.ndarray:
        """The exact current flat parameters (the state's)."""
        return self.state.params

    def set_params(self, params) -> None:
        """Set the flat parameters (affine 6, projective 8, TPS 2K) and re-render."""
        self._apply(lambda: self.state.set_params(params))

    def reset(self) -> None:
        """Back to the parameters the explorer opened with."""
        self._apply(self.state.reset)

    def use_learned(self) -> None:
        """Apply the model's learned transform for the selected image."""
        self._apply(lambda: self.state.use_learned(self.learned_params()))

    def _learned_record(self, index: int):
        """The first image transformer with known parameters in the capture of the model (run once
        on all images), sliced to image ``index``: the one chosen at construction (by key) once
        chosen; ``None`` if none."""
        if self._collection is None:  # the model runs once, on all images (collect: device, dtype, forward)
            with _one_thread():
                self._collection = collect(self.model, self.images, forward=self.forward,
                                           batch_size=None if self.forward is not None else 256)
        for key in self._collection.keys("image"):
            r = self._collection.records[key]
            if r.params is None or r.family not in geometry.FAMILIES or r.input.shape[0] != self.images.shape[0]:
                continue
            if self._learned_key is None or key == self._learned_key:
                return r.sample(index)
        return None

    def learned_params(self, index: int | None = None) -> np.ndarray:
        """The model's parameters for image ``index`` (default: the selected one), flat, in this
        explorer's family, from a capture of the model's forward pass."""
        if self.model is None:
            raise ValueError("no model was given; 'learned' needs one")
        if self._learned_family is None:
            raise ValueError("the model's forward pass recorded no image transformer with known parameters; "
                             "'learned' needs one")
        if self._learned_family != self.family:
            raise ValueError(f"the model's transformer is {self._learned_family!r}; this explorer is {self.family!r}")
        i = self.picker.value if index is None else index
        r = self._learned_record(i)
        if r is None:
            raise ValueError(f"the model's transformer {self._learned_key!r} was not recorded for image {i}")
        if self.family == "affine":
            return r.theta[0].reshape(-1).double().numpy().copy()
        if self.family == "projective":
            h = geometry.to_matrix(r.params[:1].double(), "projective")[0]
            return (h / h[2, 2]).reshape(-1)[:8].numpy().copy()
        return r.params[0].reshape(-1).double().numpy().copy()


def _default_predict(output) -> torch.Tensor | None:
    """Per-image labels from a model's output: argmax over the last dim of a ``(B, classes)``
    tensor (the first tensor of a tuple or list); ``None`` for anything else (images, sequences)."""
    if isinstance(output, (tuple, list)):
        output = next((o for o in output if isinstance(o, torch.Tensor)), None)
    if isinstance(output, torch.Tensor) and output.dim() == 2 and output.is_floating_point():
        return output.argmax(-1)
    return None


class STNInspector(_Widget):
    """Browse a batch through a model, stnviz's or anybody's: the sampled region on each input,
    the output, the prediction, and a theta table for every transformer in the model.

    Args:
        model: any ``nn.Module`` whose forward samples with ``grid_sample`` (stnviz transformers,
            the PyTorch tutorial, TPS rectifiers, registration nets, kornia warps ...).
        images: ``(N, C, H, W)`` in [0, 1] (or an ``ImageSet``); moved to the model's device and
            floating dtype (half, bfloat16) to run it.
        labels: optional true labels ``(N,)``; ``class_names``: optional names for predictions.
        boxes: optional annotated boxes ``(N, 4)`` in input pixel-edge coordinates.
        forward: ``forward(model, images) -> output`` (default ``model(images)``); e.g.
            ``lambda m, x: m(x, text)`` for a model with two inputs. With a custom ``forward`` the
            images run as one batch unless ``batch_size`` is given.
        predict: ``predict(output) -> (N,) labels or None``; default: argmax over the last dim of a
            ``(N, classes)`` output (the first tensor of a tuple); anything else shows no prediction.
        mean, std: per-channel values the model's data pipeline normalised with; the views undo
            them (display only). ``denormalize``: a callable doing the same, for other schemes.
            Without either, inputs outside [0, 1] are stretched to their own range for display.
        auxiliary: also list auxiliary samplings (masks, offset fields, flow steps) in the picker.

    Attributes for scripting and tests: ``records`` (key -> record over all images),
    ``predictions``, ``picker``, ``which`` (the transformer dropdown), ``input_view``,
    ``output_view``, ``info``, ``table``, ``message``, ``log``.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> inspector = STNInspector(model, stnviz.data.sample("mnist").subset(torch.arange(4)))
        >>> inspector.predictions.tolist(), inspector.which.value
        ([7, 2, 1, 0], 'transformer')
        >>> inspector.picker.value = 2  # show the third image
        >>> inspector.info.value.split("<br>")[:2]
        ['prediction: <b>1</b>', 'true: 1 ✓']
    """

    def __init__(self, model, images, labels=None, *, class_names=None, boxes=None, forward=None, predict=None,
                 mean=None, std=None, denormalize=None, auxiliary: bool = False, scale: int = 8,
                 batch_size: int | None = None):
        self.model = model
        display_range_given = mean is not None or denormalize is not None
        self.images = _as_images(images, where=None if display_range_given else "STNInspector")
        n = self.images.shape[0]
        if labels is None and hasattr(images, "labels"):
            labels = images.labels
        self.labels = None if labels is None else torch.as_tensor(labels).cpu().reshape(-1)
        if self.labels is not None and self.labels.numel() != n:
            raise ValueError(f"labels must have one entry per image ({n}), got {self.labels.numel()}")
        if boxes is not None:
            boxes = torch.as_tensor(boxes, dtype=torch.float32).cpu()
            if boxes.shape != (n, 4):
                raise ValueError(f"boxes must be (N, 4) = ({n}, 4) (x1, y1, x2, y2 in input pixels), got {tuple(boxes.shape)}")
        self.boxes = boxes
        if (mean is None) != (std is None):
            raise ValueError("pass both mean and std (the values the inputs were normalised with), or neither")
        if denormalize is not None and mean is not None:
            raise ValueError("pass mean/std or denormalize, not both")
        if mean is not None:
            m = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
            s = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
            denormalize = lambda x: x.float() * s.to(x.device) + m.to(x.device)  # noqa: E731
        self.denormalize = denormalize
        self.scale = scale
        self._init_common()
        if batch_size is None and forward is None:
            batch_size = 256
        self.collection = collect(model, self.images, forward=forward, batch_size=batch_size)
        self.records = self.collection.records
        if not self.records:
            raise CaptureError(f"the model's forward made no sampler call that could be shown; "
                               f"left out: {self.collection.skipped or 'none'}")
        predict = predict or _default_predict
        preds = [predict(o) for o in self.collection.outputs]
        self.predictions = None
        if all(p is not None for p in preds):
            p = torch.cat([torch.as_tensor(x).reshape(-1).cpu() for x in preds])
            self.predictions = p if p.numel() == n else None
        self._check_class_names(class_names)
        self.class_names = class_names

        self.picker = W.IntSlider(0, 0, n - 1, description="image", disabled=n == 1)
        self.picker.add_class("stnviz-picker")
        keys = self.collection.keys("image") + (self.collection.keys("auxiliary") if auxiliary else [])
        if not keys:  # every sampling is auxiliary: show them rather than nothing
            keys = self.collection.keys()
        self.which = W.Dropdown(options=[(self._label(k), k) for k in keys], value=keys[0], description="transformer")
        self.which.add_class("stnviz-which")
        self.format = _image_format(self.images)
        self.input_view = W.Image(format=self.format)
        self.input_view.add_class("stnviz-input")
        self.output_view = W.Image(format=self.format)
        self.output_view.add_class("stnviz-output")
        self.info = W.HTML()
        self.info.add_class("stnviz-info")
        self.table = W.HTML()
        self.table.add_class("stnviz-table")
        self._tables: dict[int, str] = {}
        self.picker.observe(lambda ch: self._safe(self.update), names="value")
        self.which.observe(lambda ch: self._safe(self.update), names="value")
        self.root = W.VBox([
            W.HBox([self.picker, self.which]),
            _views_row(self.input_view, self.output_view, self.info),
            self.table, self.message, self.log,
        ])
        self.root.add_class("stnviz-inspector")
        self._safe(self.update)

    def _check_class_names(self, class_names) -> None:
        if class_names is None:
            return
        used = [t for t in (self.predictions, self.labels) if t is not None and t.numel()]
        need = max(int(t.max()) for t in used) + 1 if used else 0
        if len(class_names) < need:
            raise ValueError(f"class_names must name every class up to {need - 1} ({need} names), got {len(class_names)}")

    def _label(self, key: str) -> str:
        r = self.records[key]
        return key if r.role == "image" else f"{key} (auxiliary)"

    def _record(self, key: str, index: int):
        """(record, sample index within it) for image ``index``."""
        r = self.records[key]
        b = r.input.shape[0]
        if b != self.images.shape[0]:
            raise ValueError(f"{key!r} sampled a batch of {b} per {self.images.shape[0]} images (not one per image); "
                             "pick another transformer")
        return r, index

    def theta_table(self, index: int):
        """Every transformer's theta (raw and decomposed) for image ``index``, one row each."""
        import pandas as pd

        frames = [theta_table([r], index) for r in self.records.values() if r.input.shape[0] == self.images.shape[0]]
        return pd.concat(frames, ignore_index=True)

    def _name(self, c: int) -> str:
        return str(self.class_names[c]) if self.class_names is not None else str(c)

    def _display(self, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """What to draw for ``x (C, H, W)`` (``ref``: the record's input, for the stretch range)."""
        x = x.float()
        if self.denormalize is not None:
            return self.denormalize(x.unsqueeze(0))[0].float(), False
        lo, hi = float(ref.min()), float(ref.max())
        if x.shape[0] in (1, 3) and (lo < -0.02 or hi > 1.02) and hi > lo:
            return (x - lo) / (hi - lo), True
        return x, False

    def update(self) -> None:
        i = self.picker.value
        key = self.which.value
        rec, j = self._record(key, i)
        rec.require_2d("STNInspector")
        outline = rec.sampled_outline(8)[j]
        lattice = render.lattice_points(rec.grid[j], rec.input_size, 8,
                                        align_corners=bool(rec.sampling.get("align_corners")))
        box = None
        if self.boxes is not None and rec.input_size == tuple(self.images.shape[-2:]) and key == self.which.options[0][1]:
            box = self.boxes[i]
        fmt = "png" if rec.input.shape[1] != 3 else self.format
        self.input_view.format = self.output_view.format = fmt
        shown_in, stretched = self._display(rec.input[j], rec.input[j])
        shown_out, _ = self._display(rec.output[j], rec.input[j])
        self.input_view.value = render.encode(render.overlay_rgb(shown_in, outline, lattice, box, scale=self.scale, margin=0.25), fmt)
        self.output_view.value = render.encode(render.overlay_rgb(shown_out, scale=self.scale), fmt)
        lines = []
        if self.predictions is not None:
            pred = int(self.predictions[i])
            lines.append(f"prediction: <b>{html.escape(self._name(pred))}</b>")
            if self.labels is not None:
                true = int(self.labels[i])
                lines.append(f"true: {html.escape(self._name(true))} {'✓' if true == pred else '✗'}")
        elif self.labels is not None:
            lines.append(f"true: {html.escape(self._name(int(self.labels[i])))}")
        s = rec.sampling
        lines.append(f"<span style='color:#666'>{html.escape(rec.family or 'grid only')} · {html.escape(s['mode'])}, "
                     f"{html.escape(s['padding_mode'])}, align_corners={s['align_corners']}</span>")
        self.info.value = "<br>".join(lines)
        if i not in self._tables:
            self._tables[i] = self.theta_table(i).to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                                          classes="stnviz-theta-table")
        self.table.value = self._tables[i]
        problems = []
        if not bool((rec.grid[j].abs() <= 1).all(-1).any()):
            problems.append("this transformer samples entirely outside its input")
        if stretched:
            problems.append("input outside [0, 1]: shown stretched to its own range (pass mean/std or denormalize)")
        self.message.value = f"<span style='color:#c60'>{html.escape('; '.join(problems))}</span>" if problems else ""


class TrainingPlayer(_Widget):
    """Scrub through a training run: a slider over the recorded steps of a
    :class:`stnviz.animate.ProgressRecorder` (or a list of snapshots and the probe inputs).

    Frames are composed once, on first view of each step, and cached.

    Example:
        >>> import stnviz
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

    def __init__(self, recorder=None, *, snapshots=None, inputs=None, columns: int = 4, tile: int = 112):
        from .animate import compose_frame

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
        self._compose = lambda s: compose_frame(self.inputs, s, columns=columns, tile=tile)
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
        class_names: optional names for the labels and predictions.
        prefetch: run the other tracks in a background thread after the first one is shown, so
            a track change finds its run ready (one run at a time, under a lock). The runs then use
            a private eval-mode copy of ``model`` made once, here (same device; it costs one more
            model in memory): the model you hold is never switched to eval mode, run or hooked by
            the background thread, so it can go on training meanwhile; the tracks show the model
            as it was when the viewer was made (make a new viewer to see later weights). Without
            prefetch, each track runs ``model`` itself when it is first picked.

    The plots are drawn once per track at the size they are shown (no browser rescaling); a
    scrub only draws the frame marker onto that raster and re-encodes it.

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

    def __init__(self, model, tracks, *, module: str | None = None, scale: int = 6, class_names=None,
                 prefetch: bool = True):
        from .analysis import run_sequence

        self.model, self.tracks = model, list(tracks)
        if not self.tracks:
            raise ValueError("StabilityViewer needs at least one track")
        self._run_sequence = run_sequence
        self.module, self.scale, self.class_names = module, scale, class_names
        self._tracks: dict = {}  # i -> (SequenceRun, plot raster, marker geometry)
        self._lock = threading.Lock()  # one run_sequence at a time (eval_mode is not re-entrant)
        self._futures: dict = {}
        self._pool = None
        # what the tracks run: a private copy when a background thread will run it
        self._runner = self._private_copy(model) if prefetch and len(self.tracks) > 1 else model
        prefetch = self._runner is not model
        self._init_common()
        labels = [f"{i}: track {getattr(t, 'track_id', i)} ({self._name(getattr(t, 'label', None))})"
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
        self.frame.observe(lambda ch: self._safe(self.update), names="value")
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

    def _name(self, c) -> str:
        if c is None:
            return "class ?"
        return str(self.class_names[int(c)]) if self.class_names is not None else f"class {int(c)}"

    def _compute(self, i: int):
        with self._lock, _one_thread():
            if i not in self._tracks:
                run = self._run_sequence(self._runner, self.tracks[i], module=self.module)
                rgb, markers = self._plot_raster(run.table)
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
        run = self.run(self.track.value)
        self.frame.max = run.frames.shape[0] - 1
        self.frame.value = min(self.frame.value, self.frame.max)
        self.update()

    @staticmethod
    def _plot_raster(table):
        """The track's plots as an RGB array at the size shown, and per axes the x pixel of every
        frame and the axes' pixel rows (for the frame marker)."""
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

    @staticmethod
    def _marker_svg(shape, markers, t: int) -> str:
        h, w = shape[:2]
        lines = "".join(f"<line x1='{xs[t]:.1f}' x2='{xs[t]:.1f}' y1='{y0}' y2='{y1}'/>" for xs, y0, y1 in markers)
        return (f"<svg class='stnviz-marker-svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' "
                f"stroke='{render.OUTLINE_COLOR}' stroke-width='2' stroke-opacity='0.85'>{lines}</svg>")

    def update(self) -> None:
        i, t = self.track.value, self.frame.value
        run, png, shape, markers = self._get(i)
        box = run.boxes[t] if run.boxes is not None else None
        with _one_thread():
            inp = render.encode(render.overlay_rgb(run.frames[t], run.outlines[t], box=box, scale=self.scale, margin=0.15))
            out = render.encode(render.overlay_rgb(run.outputs[t], scale=self.scale))
        self.input_view.value, self.output_view.value = inp, out
        if self.plots.value is not png:
            self.plots.value = png
            self.plots.layout.width = f"{shape[1]}px"  # shown at the size it was drawn, never rescaled
        self.marker.value = self._marker_svg(shape, markers, t)
        row = run.table.iloc[t]
        parts = [f"frame {t}: prediction <b>{html.escape(self._name(row['prediction']))}</b> ({row['confidence']:.2f})"]
        if "iou" in row:
            parts.append(f"IoU with box {row['iou']:.2f}")
        if "rotation_deg" in row:
            parts.append(f"rot {row['rotation_deg']:+.1f}° scale {row['scale_x']:.2f}×{row['scale_y']:.2f}")
        self.info.value = "<br>".join(parts)
