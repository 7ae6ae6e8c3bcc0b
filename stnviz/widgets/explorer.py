"""The theta explorer, in three parts: :class:`ExplorerState` (the truth, no widgets),
:func:`render_explorer` (a pure function of the image and the parameters) and
:class:`ThetaExplorer` (sliders that only display the state and turn user edits into state
changes)."""

from __future__ import annotations

import collections
import html
import math
import typing

import ipywidgets as W
import numpy as np
import torch

from .. import geometry, render
from ..capture import collect
from ._base import _as_images, _image_format, _one_thread, _samples_only_outside, _show_pair, _views_row, _Widget
from .sliders import _on_step, slider_value

__all__ = ["ExplorerState", "ExplorerViews", "ThetaExplorer", "compose_parts", "render_explorer"]


#: Families the explorer edits: every affine family as a full affine theta, and each other family.
EXPLORER_FAMILIES = ("affine",) + tuple(n for n, f in geometry.FAMILY_TABLE.items() if not f.is_affine)
#: The decomposed parts of an affine theta the sliders show (rotation in degrees, like analysis' columns).
AFFINE_PARTS = ("rotation_deg", "scale_x", "scale_y", "shear", "tx", "ty")
#: Slider labels of the parts.
_PART_LABELS = {"rotation_deg": "rotation °", "scale_x": "scale x", "scale_y": "scale y", "shear": "shear",
                "tx": "translation x", "ty": "translation y"}


def _affine_parts(params) -> dict | None:
    """Flat affine theta ``(6,)`` -> ``{rotation_deg, scale_x, scale_y, shear, tx, ty}`` by
    :func:`stnviz.geometry.decompose_affine`; ``None`` for a singular or non-finite theta."""
    theta = torch.as_tensor(np.asarray(params, dtype=np.float64)).view(1, 2, 3)
    if not bool(torch.isfinite(theta).all()) or bool(geometry.is_singular(theta)):
        return None
    p = geometry.decompose_affine(theta)._asdict()
    p["rotation_deg"] = torch.rad2deg(p.pop("rotation"))
    return {n: float(p[n]) + 0.0 for n in AFFINE_PARTS}  # + 0.0: no -0.0


def compose_parts(parts: dict) -> np.ndarray:
    """``{rotation_deg, scale_x, scale_y, shear, tx, ty}`` -> flat affine theta ``(6,)``
    (float64) by :func:`stnviz.geometry.compose_affine`.

    Example:
        >>> parts = {"rotation_deg": 90.0, "scale_x": 0.5, "scale_y": 0.5, "shear": 0.0, "tx": 0.1, "ty": 0.0}
        >>> compose_parts(parts).round(3).tolist()  # [a11, a12, tx, a21, a22, ty]
        [0.0, -0.5, 0.1, 0.5, 0.0, 0.0]
    """
    v = {n: torch.tensor([float(parts[n])], dtype=torch.float64) for n in AFFINE_PARTS}
    v["rotation"] = torch.deg2rad(v.pop("rotation_deg"))
    return geometry.compose_affine(**v).reshape(-1).numpy().copy()


def _check_family(family) -> None:
    if family not in EXPLORER_FAMILIES:
        raise ValueError(f"family must be one of {EXPLORER_FAMILIES}, got {family!r}")


class ExplorerState:
    """What a :class:`ThetaExplorer` shows, free of widgets.

    Attributes:
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        params: the exact flat parameters, float64: affine ``[a11, a12, tx, a21, a22, ty]``
            (row-major theta ``(2, 3)``, output -> input, normalised, ``align_corners=False``);
            projective the first 8 entries of the homography (``h33 = 1``); TPS ``(x0, y0, x1, ...)``,
            where each control point samples in the input (normalised ``(x, y)``).
        parts: affine only, the decomposition the decomposed sliders show (:data:`AFFINE_PARTS`;
            ``rotation_deg`` in degrees).
            Setting one part recomposes theta from the others *as they are*, so rotating out and
            back gives back the same theta. ``None`` until the parameters have a decomposition
            (a singular theta keeps the last one).
        index: the selected image; point: the selected TPS control point.
        identity, initial: the identity parameters and the ones the state opened with.

    Nothing here rounds: sliders snap what they *display*, never the state.

    Example:
        >>> state = ExplorerState("affine")
        >>> state.set_part("rotation_deg", 30.0)  # the other parts stay as they are
        >>> state.params.round(3).tolist()
        [0.866, -0.5, 0.0, 0.5, 0.866, 0.0]
        >>> state.set_part("rotation_deg", 0.0); np.allclose(state.params, state.identity)  # and back
        True
    """

    def __init__(self, family: str = "affine", params=None, *, control_points: int = 9, index: int = 0):
        _check_family(family)
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
        """Affine only: set one decomposed part (:data:`AFFINE_PARTS`), keep the others."""
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
        >>> print(views.theta_text)
        [+0.000 +0.000 +0.000]
        [+0.000 +0.000 +0.000]
        singular: no decomposition
        <BLANKLINE>
        <BLANKLINE>
        <BLANKLINE>
    """

    input_rgb: np.ndarray  # (H', W', 3) uint8: input, grey margin, sampled region (TPS: control points)
    output_rgb: np.ndarray  # (H'', W'', 3) uint8: the warped image
    message: str  # "" or why the transform is degenerate (plain text)
    theta_text: str  # fixed-width lines (every number the same width)


def _num(v: float, width: int = 7, digits: int = 3, sign: str = "+") -> str:
    return f"{round(float(v), digits) + 0.0:{sign}{width}.{digits}f}"  # + 0.0: never "-0.000"


def _theta_text(params: np.ndarray, family: str, point: int | None) -> str:
    if family == "affine":  # always six lines: the layout does not jump when the decomposition goes
        lines = render.format_theta(params).split("\n")
        return "\n".join(lines + [""] * (6 - len(lines)))
    if family == "projective":
        h = list(params) + [1.0]
        return "\n".join(("H " if r == 0 else "  ") + " ".join(_num(v) for v in h[3 * r: 3 * r + 3]) for r in range(3))
    k = params.size // 2
    p = 0 if point is None else point
    return f"point {p} of {k}\nx {_num(params[2 * p])}\ny {_num(params[2 * p + 1])}"


def _degenerate(params: torch.Tensor, family: str, grid: torch.Tensor, components) -> str | None:
    """A human message when the transform is degenerate, else None. ``grid`` may be a sparse
    subset of the sampling grid ``(..., 2)``."""
    if geometry.family_info(family).matrix is not None:
        m = geometry.to_matrix(params, family, components=components)
        m = m[:, :2] if geometry.family_info(family).is_affine else m  # judged as a theta, or as a homography
        if bool(geometry.is_singular(m)[0]):
            det = float(torch.linalg.det(m[0, :, :2] if m.shape[1] == 2 else m[0]))
            return f"singular transform (det = {det:.2g}): the output collapses onto a line or a point"
    if _samples_only_outside(grid):
        return "the sampled region lies entirely outside the input: the output is all padding"
    return None


def render_explorer(image: torch.Tensor, params, family: str, *, output_size=None, point: int | None = None,
                    scale: int = 8, margin: float = 0.25, display: render.Display | None = None) -> ExplorerViews:
    """The explorer's pictures and text for one image and one set of parameters; no widgets.

    Args:
        image: ``(C, H, W)`` float, as the model sees it (warped as it is, shown by ``display``).
        params: flat parameters of ``family`` (see :class:`ExplorerState`).
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        output_size: ``(H, W)`` of the output (default: the input size).
        point: TPS only, the control point to highlight.
        scale, margin: display magnification and grey margin (fraction of the image per side).
        display: how the pixels are shown (:class:`stnviz.render.Display`); default: an image
            outside [0, 1] stretched to its own range.

    Example:
        >>> views = render_explorer(torch.zeros(1, 28, 28), [0.5, 0, 0, 0, 0.5, 0], "affine", scale=4)
        >>> views.input_rgb.shape, views.output_rgb.shape, views.message  # input: 25% grey margin a side
        ((168, 168, 3), (112, 112, 3), '')
        >>> print(views.theta_text)
        [+0.500 +0.000 +0.000]
        [+0.000 +0.500 +0.000]
        rotation      +0.0°
        scale       +0.500 × +0.500
        shear       +0.000
        translation +0.000 +0.000
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    size = tuple(image.shape[-2:])
    out_size = tuple(output_size) if output_size is not None else size
    t = torch.tensor(p, dtype=torch.float32).unsqueeze(0)
    t = t.view(1, 2, 3) if family == "affine" else t.view(1, -1, 2) if family == "tps" else t
    text = _theta_text(p, family, point)
    shown = render.display_of(display=display)
    try:
        grid = geometry.make_grid(t, family, out_size)
        out = geometry.warp(image.unsqueeze(0), grid)[0]
        outline = geometry.sampled_outline(t, family, size, points_per_side=8)[0]
    except ValueError as e:  # non-finite parameters, a point sent to infinity ...
        return ExplorerViews(render.overlay_rgb(shown.apply(image, where="ThetaExplorer"), scale=scale, margin=margin),
                             np.zeros((8, 8, 3), np.uint8),
                             f"cannot sample: {e}", text)
    lattice = render.lattice_points(grid[0], size, 8)
    points = None
    if family == "tps":
        points = geometry.grid_to_pixels(torch.as_tensor(p, dtype=torch.float64).reshape(-1, 2), size).numpy()
    input_rgb, output_rgb = render.region_panels(shown.apply(image, where="ThetaExplorer"),
                                                 shown.apply(out, image, where="ThetaExplorer"), outline, lattice,
                                                 scale=scale, margin=margin,
                                                 points=points, selected=point)
    message = _degenerate(t, family, grid[:, ::4, ::4], None) or ""
    return ExplorerViews(input_rgb, output_rgb, message, text)


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
        display: how the pixels are shown (a :class:`stnviz.render.Display`: ``mean`` / ``std``
            undone, BGR, contrast); default the one remembered on ``model``
            (:func:`stnviz.render.set_display`), else images outside [0, 1] stretched to their range.

    Attributes for scripting and tests: ``state``, ``params`` (the state's exact parameters),
    ``input_view`` / ``output_view`` (``ipywidgets.Image``), ``theta_view``, ``entries`` (the raw
    sliders), ``parts`` (the decomposed sliders, affine only), ``picker``, ``buttons``,
    ``message``, ``log``, ``edits`` (user edits received, per slider).

    Example:
        >>> from stnviz.data import draw_glyphs
        >>> explorer = ThetaExplorer(draw_glyphs(3))  # leave it last in a cell to display it
        >>> explorer.parts["rotation_deg"].value = 30.0  # what dragging the rotation slider does
        >>> explorer.params.round(3).tolist(), dict(explorer.edits)
        ([0.866, -0.5, 0.0, 0.5, 0.866, 0.0], {'rotation °': 1})
        >>> [round(e.value, 3) for e in explorer.entries]  # the entry sliders follow, shown to their step
        [0.87, -0.5, 0.0, 0.5, 0.87, 0.0]
    """

    def __init__(self, images, model=None, *, family: str | None = None, params=None, output_size=None,
                 control_points: int = 9, scale: int = 8, forward=None, display: render.Display | None = None):
        self.display = render.display_of(model, display=display)
        self.images = _as_images(images, where=None if self.display.knows_range else "stnviz.widgets")
        self.model = model
        self.forward = forward
        self._collection = None
        self._learned_key = None
        self._learned_family = None
        if model is not None:
            rec = self._learned_record(0)
            if rec is not None:
                self._learned_key = rec.key
                fam = "affine" if geometry.family_info(rec.family).is_affine else rec.family
                self._learned_family = fam
                if fam == "tps":
                    control_points = int(rec.params.shape[1])
        if family is None:
            family = self._learned_family or "affine"
        _check_family(family)
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
                          continuous_update=True, readout_format=fmt, layout=W.Layout(width="340px"),
                          style={"description_width": "7em"})  # room for "translation x"
        s.add_class(cls)
        s.observe(lambda ch: self._safe(self._on_slider, ch, on_edit), names="value")
        return s

    def _build_controls(self) -> W.Widget:
        if self.family == "affine":
            for i, n in enumerate(["a11", "a12", "tx", "a21", "a22", "ty"]):
                self.entries.append(self._slider(f"θ {n}", -2.0, 2.0, 0.01, ".2f", f"stnviz-theta-{i}",
                                                 lambda v, i=i: self.state.set_entry(i, v)))
            spec = {"rotation_deg": (-180.0, 180.0, 0.1, ".1f"), "scale_x": (0.1, 3.0, 0.01, ".2f"),
                    "scale_y": (0.1, 3.0, 0.01, ".2f"), "shear": (-2.0, 2.0, 0.01, ".2f"),
                    "tx": (-2.0, 2.0, 0.01, ".2f"), "ty": (-2.0, 2.0, 0.01, ".2f")}
            for n, (lo, hi, step, fmt) in spec.items():
                self.parts[n] = self._slider(_PART_LABELS[n], lo, hi, step, fmt, f"stnviz-part-{n}",
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
                                point=st.point if st.family == "tps" else None, scale=self.scale, display=self.display)
            _show_pair(self.input_view, self.output_view, v.input_rgb, v.output_rgb, self.format)
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
