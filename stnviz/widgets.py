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
import html
import math
import traceback

import ipywidgets as W
import numpy as np
import torch

from . import geometry, render
from .analysis import theta_table
from .capture import capture
from .models import eval_mode

__all__ = ["STNInspector", "StabilityViewer", "ThetaExplorer", "TrainingPlayer"]


def _as_images(images) -> torch.Tensor:
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


class _Widget:
    """Shared plumbing: the root box, the message line and the output area for errors."""

    root: W.Widget

    def _init_common(self):
        self.message = W.HTML(layout=W.Layout(min_height="1.5em"))
        self.message.add_class("stnviz-message")
        self.log = W.Output(layout=W.Layout(max_height="12em", overflow="auto"))
        self.log.add_class("stnviz-log")

    def _safe(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # shown in the widget, never a dead widget
            self.message.value = f"<span style='color:#c00'>error: {html.escape(str(e))}</span>"
            # append_stderr works with or without a live frontend (a `with self.log:` block
            # only captures inside a kernel)
            self.log.append_stderr(traceback.format_exc())

    def _repr_mimebundle_(self, **kwargs):
        return self.root._repr_mimebundle_(**kwargs)

    def show(self):
        from IPython.display import display

        display(self.root)


class ThetaExplorer(_Widget):
    """Slide a transform by hand and watch where it samples and what comes out.

    Args:
        images: ``(N, C, H, W)`` float in [0, 1] (or uint8, or an ``ImageSet``).
        model: optional; its first transformer's learned parameters for the selected image become
            the "learned" preset, and its family the explorer's default.
        family: ``"affine"`` (six entries *and* rotation / scale / shear / translation sliders,
            kept in sync both ways), ``"projective"`` (eight entries) or ``"tps"`` (pick a control
            point, move it with two sliders). ``None``: the model's family, else affine.
        output_size: ``(H, W)`` of the output (default: the input size).
        control_points: K for TPS (a square number).
        scale: display magnification of small images.

    Attributes for scripting and tests: ``params`` (the current flat parameters), ``input_view`` /
    ``output_view`` (``ipywidgets.Image``), ``entries`` (the raw sliders), ``parts`` (the
    decomposed sliders, affine only), ``picker``, ``message``, ``log``.
    """

    def __init__(self, images, model=None, *, family: str | None = None, output_size=None,
                 control_points: int = 9, scale: int = 8):
        self.images = _as_images(images)
        self.model = model
        self.transformer = None
        if model is not None:
            sts = [m for m in model.modules() if m.__class__.__name__ == "SpatialTransformer"]
            if sts:
                self.transformer = sts[0]
        if family is None:
            family = self.transformer.transform if self.transformer is not None else "affine"
            if family not in ("affine", "projective", "tps"):
                family = "affine"  # attention / restricted / translation are affine special cases
        if family not in ("affine", "projective", "tps"):
            raise ValueError(f"family must be 'affine', 'projective' or 'tps', got {family!r}")
        self.family = family
        self.control_points = control_points
        self.input_size = tuple(self.images.shape[-2:])
        self.output_size = tuple(output_size) if output_size is not None else self.input_size
        self.scale = scale
        self._syncing = False
        self._pushed: dict = {}
        self._init_common()

        self.picker = W.IntSlider(0, 0, self.images.shape[0] - 1, description="image",
                                  disabled=self.images.shape[0] == 1, continuous_update=True)
        self.picker.add_class("stnviz-picker")
        self.entries: list[W.FloatSlider] = []
        self.parts: dict[str, W.FloatSlider] = {}
        identity = geometry.identity_params(family, control_points=control_points, dtype=torch.float64)
        self._identity = identity.numpy().copy()
        self.params = self._identity.copy()
        controls = self._build_controls()

        buttons = [W.Button(description="identity"), W.Button(description="reset")]
        buttons[0].on_click(lambda _: self._safe(self.set_params, self._identity))
        buttons[1].on_click(lambda _: self._safe(self.reset))
        if model is not None:
            learned = W.Button(description="learned", tooltip="the model's theta for this image")
            learned.on_click(lambda _: self._safe(self.use_learned))
            buttons.append(learned)
        for b in buttons:
            b.layout = W.Layout(width="auto")
            b.add_class(f"stnviz-{b.description}")
        self.buttons = {b.description: b for b in buttons}

        self.format = _image_format(self.images)
        self.input_view = W.Image(format=self.format)
        self.input_view.add_class("stnviz-input")
        self.output_view = W.Image(format=self.format)
        self.output_view.add_class("stnviz-output")
        self.theta_view = W.HTML()
        self.theta_view.add_class("stnviz-theta")
        self.picker.observe(lambda ch: self._safe(self._on_picker), names="value")

        views = _views_row(self.input_view, self.output_view, self.theta_view)
        self.root = W.VBox([W.HBox([self.picker, *buttons]), views, self.message, controls, self.log])
        self.root.add_class("stnviz-theta-explorer")
        self._initial = self.params.copy()
        self._safe(self.update)

    # ------------------------------------------------------------------ controls
    def _slider(self, desc, lo, hi, value, step=0.01, cls=None):
        s = W.FloatSlider(value=value, min=lo, max=hi, step=step, description=desc, continuous_update=True,
                          readout_format=".2f", layout=W.Layout(width="320px"))
        if cls:
            s.add_class(cls)
        return s

    def _build_controls(self) -> W.Widget:
        if self.family == "affine":
            names = ["a11", "a12", "tx", "a21", "a22", "ty"]
            for i, n in enumerate(names):
                s = self._slider(f"θ {n}", -2.0, 2.0, float(self.params[i]), cls=f"stnviz-theta-{i}")
                s.observe(lambda ch: self._safe(self._on_entry, ch), names="value")
                self.entries.append(s)
            spec = {"rotation": (-180, 180, 0.0, 1.0), "scale_x": (0.1, 3.0, 1.0, 0.01), "scale_y": (0.1, 3.0, 1.0, 0.01),
                    "shear": (-2.0, 2.0, 0.0, 0.01), "tx": (-2.0, 2.0, 0.0, 0.01), "ty": (-2.0, 2.0, 0.0, 0.01)}
            for n, (lo, hi, v, step) in spec.items():
                desc = "rotation °" if n == "rotation" else n
                s = self._slider(desc, lo, hi, v, step=step, cls=f"stnviz-part-{n}")
                s.observe(lambda ch, n=n: self._safe(self._on_part, n, ch), names="value")
                self.parts[n] = s
            return W.HBox([W.VBox([W.HTML("<b>theta entries</b>"), *self.entries]),
                           W.VBox([W.HTML("<b>decomposed</b>"), *self.parts.values()])])
        if self.family == "projective":
            names = ["h11", "h12", "h13", "h21", "h22", "h23", "h31", "h32"]
            for i, n in enumerate(names):
                lo, hi = (-1.0, 1.0) if n in ("h31", "h32") else (-2.0, 2.0)
                s = self._slider(n, lo, hi, float(self.params[i]), cls=f"stnviz-theta-{i}")
                s.observe(lambda ch: self._safe(self._on_entry, ch), names="value")
                self.entries.append(s)
            return W.VBox([W.HTML("<b>homography (h33 = 1)</b>"), *self.entries])
        # tps
        k = self.control_points
        self.point = W.Dropdown(options=list(range(k)), value=0, description="point")
        self.point.add_class("stnviz-tps-point")
        self.entries = [self._slider("x", -1.5, 1.5, float(self.params[0]), cls="stnviz-tps-x"),
                        self._slider("y", -1.5, 1.5, float(self.params[1]), cls="stnviz-tps-y")]
        self.point.observe(lambda ch: self._safe(self._on_point), names="value")
        for s in self.entries:
            s.observe(lambda ch: self._safe(self._on_entry, ch), names="value")
        return W.VBox([W.HTML(f"<b>TPS: {k} control points</b> (rest: a regular grid)"), self.point, *self.entries])

    # ------------------------------------------------------------------ state changes
    # The parameters live in ``self.params``, exactly; sliders only display them. The browser
    # snaps whatever value it is sent to the slider's step and echoes it back, sometimes late,
    # after newer pushes. Taken for user edits, those echoes fed back through the other sliders
    # and theta drifted. So: pushed values are snapped first, the last few pushed values of each
    # slider are remembered and their echoes ignored, and a user edit changes only its own
    # component of the exact parameters, never re-reading the other (rounded) sliders.
    @staticmethod
    def _snap(slider: W.FloatSlider, value: float) -> float:
        if not math.isfinite(value):
            return slider.value  # a non-finite parameter is reported by update(); the slider stays
        v = round(round(value / slider.step) * slider.step, 10)  # 0.3, not 0.30000000000000004
        return float(min(max(v, slider.min), slider.max))

    def _push(self, slider: W.FloatSlider, value: float) -> None:
        v = self._snap(slider, value)
        self._pushed.setdefault(id(slider), collections.deque(maxlen=16)).append(v)
        self._syncing = True
        try:
            slider.value = v
        finally:
            self._syncing = False

    def _is_echo(self, change) -> bool:
        """A value this explorer pushed into the slider coming back from the browser (whose own
        step arithmetic may return -0.09000000000000008 for a pushed -0.09)."""
        if self._syncing:
            return True
        tol = change["owner"].step * 1e-3
        return any(abs(change["new"] - v) <= tol for v in self._pushed.get(id(change["owner"]), ()))

    def _sync_sliders(self) -> None:
        """Show ``self.params`` in every slider (without triggering their callbacks)."""
        if self.family == "tps":
            i = self.point.value
            self._push(self.entries[0], float(self.params[2 * i]))
            self._push(self.entries[1], float(self.params[2 * i + 1]))
            return
        for sl, v in zip(self.entries, self.params):
            self._push(sl, float(v))
        if self.family == "affine":
            self._sync_parts()

    def _parts_of(self, params) -> dict | None:
        theta = torch.tensor(params, dtype=torch.float64).view(1, 2, 3)
        try:
            p = geometry.decompose_affine(theta)
        except ValueError:
            return None  # singular: no decomposition
        return {"rotation": math.degrees(float(p.rotation)), "scale_x": float(p.scale_x), "scale_y": float(p.scale_y),
                "shear": float(p.shear), "tx": float(p.tx), "ty": float(p.ty)}

    def _sync_parts(self) -> None:
        vals = self._parts_of(self.params)
        if vals is None:
            return  # the decomposed sliders keep their last values
        for n, v in vals.items():
            self._push(self.parts[n], v)

    def _on_entry(self, change) -> None:
        if self._is_echo(change):
            return
        k = self.entries.index(change["owner"])
        if self.family == "tps":
            self.params[2 * self.point.value + k] = change["new"]
        else:
            self.params[k] = change["new"]
            if self.family == "affine":
                self._sync_parts()
        self.update()

    def _on_part(self, name: str, change) -> None:
        if self._is_echo(change):
            return
        vals = self._parts_of(self.params) or {n: sl.value for n, sl in self.parts.items()}
        vals[name] = change["new"]
        v = {n: torch.tensor([x], dtype=torch.float64) for n, x in vals.items()}
        v["rotation"] = torch.deg2rad(v["rotation"])
        self.params = geometry.compose_affine(**v).reshape(-1).numpy().copy()
        for sl, val in zip(self.entries, self.params):
            self._push(sl, float(val))
        self.update()

    def _on_point(self) -> None:
        self._sync_sliders()

    def _on_picker(self) -> None:
        self.update()

    def set_params(self, params) -> None:
        """Set the flat parameters (affine 6, projective 8, TPS 2K) and re-render."""
        p = np.asarray(params, dtype=np.float64).reshape(-1)
        if p.size != self._identity.size:
            raise ValueError(f"{self.family} explorer takes {self._identity.size} parameters, got {p.size}")
        self.params = p.copy()
        self._sync_sliders()
        self.update()

    def reset(self) -> None:
        """Back to the parameters the explorer started with."""
        self.set_params(self._initial)

    def learned_params(self, index: int | None = None) -> np.ndarray:
        """The model's first transformer's parameters for image ``index`` (default: the selected one)."""
        if self.model is None or self.transformer is None:
            raise ValueError("no model with a SpatialTransformer was given; 'learned' needs one")
        if self.transformer.transform != self.family and not (
            self.family == "affine" and self.transformer.transform in ("attention", "restricted", "translation")
        ):
            raise ValueError(f"the model's transformer is {self.transformer.transform!r}; this explorer is {self.family!r}")
        i = self.picker.value if index is None else index
        dev = next(self.model.parameters()).device
        with torch.no_grad(), eval_mode(self.model), capture(self.model) as rec:
            self.model(self.images[i : i + 1].to(dev))
        r = rec.of(rec.modules[0])[-1]
        if self.family == "affine":
            return r.theta[0].reshape(-1).double().numpy()
        return r.params[0].reshape(-1).double().numpy()

    def use_learned(self) -> None:
        """Apply the model's learned transform for the selected image."""
        self.set_params(self.learned_params())

    # ------------------------------------------------------------------ rendering
    def _params_tensor(self) -> torch.Tensor:
        p = torch.tensor(self.params, dtype=torch.float32).unsqueeze(0)
        if self.family == "affine":
            return p.view(1, 2, 3)
        if self.family == "tps":
            return p.view(1, -1, 2)
        return p

    def update(self) -> None:
        """Re-render both views from the current parameters (called by every control)."""
        img = self.images[self.picker.value]
        params = self._params_tensor()
        try:
            grid = geometry.make_grid(params, self.family, self.output_size)
            out = geometry.warp(img.unsqueeze(0), grid)[0]
            outline = geometry.sampled_outline(params, self.family, self.input_size, points_per_side=8)[0]
        except ValueError as e:  # non-finite parameters, a point sent to infinity ...
            self.input_view.value = render.encode(render.overlay_rgb(img, scale=self.scale, margin=0.25), self.format)
            self.output_view.value = render.encode(np.zeros((8, 8, 3), np.uint8), self.format)
            self.message.value = f"<span style='color:#c00'>cannot sample: {html.escape(str(e))}</span>"
            return
        lattice = render.lattice_points(grid[0], self.input_size, 8)
        self.input_view.value = render.encode(render.overlay_rgb(img, outline, lattice, scale=self.scale, margin=0.25), self.format)
        self.output_view.value = render.encode(render.overlay_rgb(out, scale=self.scale), self.format)
        problem = _degenerate(params, self.family, grid[:, ::4, ::4], None)
        self.message.value = f"<span style='color:#c60'>{html.escape(problem)}</span>" if problem else ""
        if self.family == "affine":
            text = render.format_theta(params[0])
        elif self.family == "projective":
            h = geometry.to_matrix(params, "projective")[0]
            text = "\n".join("[" + " ".join(f"{float(v):+.3f}" for v in row) + "]" for row in h)
        else:
            i = self.point.value
            text = f"point {i}: ({self.params[2 * i]:+.3f}, {self.params[2 * i + 1]:+.3f})"
        self.theta_view.value = f"<pre style='font-size:11px'>{html.escape(text)}</pre>"


class STNInspector(_Widget):
    """Browse a batch through a trained model: the sampled region on each input, the output, the
    prediction, and a theta table for every transformer in the model.

    Args:
        model: any model with stnviz transformers or foreign ``F.grid_sample`` STN code.
        images: ``(N, C, H, W)`` in [0, 1] (or an ``ImageSet``).
        labels: optional true labels ``(N,)``; ``class_names``: optional names for predictions.
        boxes: optional annotated boxes ``(N, 4)`` in input pixel-edge coordinates.
    """

    def __init__(self, model, images, labels=None, *, class_names=None, boxes=None, scale: int = 8, batch_size: int = 256):
        self.model = model
        self.images = _as_images(images)
        if labels is None and hasattr(images, "labels"):
            labels = images.labels
        self.labels = None if labels is None else torch.as_tensor(labels).cpu()
        self.class_names = class_names
        self.boxes = boxes
        self.scale = scale
        self._init_common()
        self.records, self.predictions = self._run(batch_size)

        self.picker = W.IntSlider(0, 0, self.images.shape[0] - 1, description="image", disabled=self.images.shape[0] == 1)
        self.picker.add_class("stnviz-picker")
        self.which = W.Dropdown(options=list(self.records), description="transformer")
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
        self.picker.observe(lambda ch: self._safe(self.update), names="value")
        self.which.observe(lambda ch: self._safe(self.update), names="value")
        self.root = W.VBox([
            W.HBox([self.picker, self.which]),
            _views_row(self.input_view, self.output_view, self.info),
            self.table, self.message, self.log,
        ])
        self.root.add_class("stnviz-inspector")
        self._safe(self.update)

    def _run(self, batch_size: int):
        """Run the model once over all images, keeping every transformer's record per image."""
        dev = next(self.model.parameters()).device
        per_module: dict = {}
        preds = []
        with eval_mode(self.model):
            for i in range(0, self.images.shape[0], batch_size):
                with torch.no_grad(), capture(self.model, keep_last=None) as rec:
                    logits = self.model(self.images[i : i + batch_size].to(dev))
                preds.append(logits.argmax(1).cpu())
                for r in rec:
                    per_module.setdefault(r.module, []).append(r)
        return per_module, torch.cat(preds)

    def _record(self, module: str, index: int):
        """(record, index within it) holding image ``index`` for ``module``."""
        offset = 0
        for r in self.records[module]:
            n = r.input.shape[0]
            if index < offset + n:
                return r, index - offset
            offset += n
        raise IndexError(f"image {index} out of range")

    def theta_table(self, index: int):
        """Every transformer's theta (raw and decomposed) for image ``index``, one row each."""
        import pandas as pd

        frames = []
        for m in self.records:
            r, j = self._record(m, index)
            frames.append(theta_table([r], j))
        return pd.concat(frames, ignore_index=True)

    def _name(self, c: int) -> str:
        return str(self.class_names[c]) if self.class_names is not None else str(c)

    def update(self) -> None:
        i = self.picker.value
        rec, j = self._record(self.which.value, i)
        outline = rec.sampled_outline(8)[j]
        lattice = render.lattice_points(rec.grid[j], rec.input_size, 8)
        box = None
        if self.boxes is not None and rec.input_size == tuple(self.images.shape[-2:]) and self.which.value == next(iter(self.records)):
            box = self.boxes[i]
        fmt = "png" if rec.input.shape[1] != 3 else self.format
        self.input_view.format = self.output_view.format = fmt
        self.input_view.value = render.encode(render.overlay_rgb(rec.input[j], outline, lattice, box, scale=self.scale, margin=0.25), fmt)
        self.output_view.value = render.encode(render.overlay_rgb(rec.output[j], scale=self.scale), fmt)
        pred = int(self.predictions[i])
        text = f"prediction: <b>{html.escape(self._name(pred))}</b>"
        if self.labels is not None:
            true = int(self.labels[i])
            ok = "✓" if true == pred else "✗"
            text += f"<br>true: {html.escape(self._name(true))} {ok}"
        self.info.value = text
        self.table.value = self.theta_table(i).to_html(index=False, float_format=lambda v: f"{v:.3f}",
                                                        classes="stnviz-theta-table")
        problem = None
        if not bool((rec.grid[j].abs() <= 1).all(-1).any()):
            problem = "this transformer samples entirely outside its input"
        self.message.value = f"<span style='color:#c60'>{problem}</span>" if problem else ""



class TrainingPlayer(_Widget):
    """Scrub through a training run: a slider over the recorded steps of a
    :class:`stnviz.animate.ProgressRecorder` (or a list of snapshots and the probe inputs).

    Frames are composed once, on first view of each step, and cached.
    """

    def __init__(self, recorder=None, *, snapshots=None, inputs=None, columns: int = 4, tile: int = 96):
        from .animate import compose_frame

        if recorder is not None:
            snapshots, inputs = recorder.snapshots, recorder.inputs
        if not snapshots:
            raise ValueError("TrainingPlayer needs recorded snapshots; the recorder holds none (did training run?)")
        if inputs is None:
            raise ValueError("TrainingPlayer needs the probe inputs (pass recorder= or inputs=)")
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


class StabilityViewer(_Widget):
    """Pick a track, scrub its frames: input with the sampled region (and annotated box) | the
    transformer's output, with the theta-per-frame and change plots of the track.

    Args:
        model: the model to analyse; ``tracks``: a list of :class:`stnviz.data.Track` (e.g.
        ``stnviz.data.sample_tracks()``) or other frame sources accepted by
        :func:`stnviz.analysis.run_sequence`.
    """

    def __init__(self, model, tracks, *, module: str | None = None, scale: int = 6):
        from .analysis import run_sequence

        self.model, self.tracks = model, list(tracks)
        if not self.tracks:
            raise ValueError("StabilityViewer needs at least one track")
        self._run_sequence = run_sequence
        self.module, self.scale = module, scale
        self._runs: dict = {}
        self._init_common()
        labels = [f"{i}: track {getattr(t, 'track_id', i)} (class {getattr(t, 'label', '?')})" for i, t in enumerate(self.tracks)]
        self.track = W.Dropdown(options=list(zip(labels, range(len(self.tracks)))), value=0, description="track")
        self.track.add_class("stnviz-track")
        self.frame = W.IntSlider(0, 0, 1, description="frame")
        self.frame.add_class("stnviz-frame-slider")
        self.input_view = W.Image(format="png")
        self.output_view = W.Image(format="png")
        self.plots = W.Image(format="png")
        self.info = W.HTML()
        self.track.observe(lambda ch: self._safe(self._on_track), names="value")
        self.frame.observe(lambda ch: self._safe(self.update), names="value")
        self.root = W.VBox([
            W.HBox([self.track, self.frame]),
            _views_row(self.input_view, self.output_view, self.info),
            self.plots, self.message, self.log,
        ])
        self.root.add_class("stnviz-stability-viewer")
        self._safe(self._on_track)

    def run(self, i: int):
        """The :class:`stnviz.analysis.SequenceRun` of track ``i`` (computed once)."""
        if i not in self._runs:
            self._runs[i] = self._run_sequence(self.model, self.tracks[i], module=self.module)
        return self._runs[i]

    def _on_track(self) -> None:
        run = self.run(self.track.value)
        self.frame.max = run.frames.shape[0] - 1
        self.frame.value = min(self.frame.value, self.frame.max)
        self.plots.value = self._plot_png(run.table)
        self.update()

    def _plot_png(self, table) -> bytes:
        import io

        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 2.6), dpi=80)
        ax1, ax2 = fig.subplots(1, 2)
        if "rotation_deg" in table:
            render.plot_theta_components(table, ax1)
        render.plot_change_curves(table, ax2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    def update(self) -> None:
        run = self.run(self.track.value)
        t = self.frame.value
        box = run.boxes[t] if run.boxes is not None else None
        self.input_view.value = render.encode(render.overlay_rgb(run.frames[t], run.outlines[t], box=box, scale=self.scale, margin=0.15))
        self.output_view.value = render.encode(render.overlay_rgb(run.outputs[t], scale=self.scale))
        row = run.table.iloc[t]
        parts = [f"prediction <b>{int(row['prediction'])}</b> ({row['confidence']:.2f})"]
        if "iou" in row:
            parts.append(f"IoU with box {row['iou']:.2f}")
        if "rotation_deg" in row:
            parts.append(f"rot {row['rotation_deg']:+.1f}° scale {row['scale_x']:.2f}×{row['scale_y']:.2f}")
        self.info.value = "<br>".join(parts)
