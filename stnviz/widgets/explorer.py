"""The theta explorer in the browser: :class:`ThetaExplorer`, a thin shell over
:class:`~stnviz.widgets.explorer_state.ExplorerState` (the kernel's truth) and
:class:`ExplorerView`, an ``anywidget`` whose front end (``web/explorer.js``) warps the image in the
page exactly as ``torch.nn.functional.grid_sample`` does (bilinear, ``align_corners=False``, zero
padding) on every slider step or drag, and sends the parameters back to the kernel, throttled.

The image is sent once per selected image (RGBA bytes); a hand's move costs the kernel one small
``params`` message, never a picture. The kernel answers with what only it can compute: the model's
prediction for the region on screen and the model's own ("learned") transform for each image."""

from __future__ import annotations

import traceback

import anywidget
import ipywidgets as W
import numpy as np
import torch
import torch.nn.functional as F
import traitlets as T
from torch.overrides import TorchFunctionMode

from .. import geometry, render
from ..capture import collect, model_device_dtype
from ..models.modes import eval_mode
from ._base import _as_images, _bundle_data, _one_thread, _stacked_png, _Widget, web_source
from .explorer_state import EXPLORER_FAMILIES, ExplorerState, compose_parts, render_explorer

__all__ = ["ExplorerView", "ThetaExplorer", "affine_as"]

#: What the family switch says.
FAMILY_LABELS = {"affine": "affine (move, turn, scale, shear)", "projective": "projective (four free corners)",
                 "tps": "thin-plate spline (bend with control points)"}
#: Side of the input and output views in the page, CSS pixels (the widget stays under ~800 px tall).
VIEW_SIZE = 260


class ExplorerView(anywidget.AnyWidget):
    """The explorer's page: synced traits and the front end ``web/explorer.js`` (+ ``.css``).

    ``image`` is the selected image as shown, RGBA uint8 bytes ``(H, W, 4)``; ``pad`` the colour
    of a zero pixel (zero padding, as shown); ``params`` the flat parameters of ``family`` (the
    page sends them while a hand moves, the kernel sends them when a script sets them).

    Example:
        >>> view = ExplorerView(image_shape=[2, 2], output_shape=[2, 2], image=bytes(16))
        >>> view.family, view.params
        ('affine', [1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    """

    _esm = web_source("explorer.js")
    _css = web_source("explorer.css")
    image = T.Bytes(b"").tag(sync=True)
    image_shape = T.List(T.Int(), [1, 1]).tag(sync=True)
    output_shape = T.List(T.Int(), [1, 1]).tag(sync=True)
    pad = T.List(T.Int(), [0, 0, 0]).tag(sync=True)
    family = T.Unicode("affine").tag(sync=True)
    families = T.List([[f, FAMILY_LABELS[f]] for f in EXPLORER_FAMILIES]).tag(sync=True)
    control_points = T.Int(9).tag(sync=True)
    params = T.List(T.Float(), [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).tag(sync=True)
    learned = T.List(T.Float(), []).tag(sync=True)
    presets = T.List([]).tag(sync=True)
    index = T.Int(0).tag(sync=True)
    count = T.Int(1).tag(sync=True)
    prediction = T.List([]).tag(sync=True)
    settled = T.Int(0).tag(sync=True)  # counted up by the page when the hand stops (80 ms still, or let go)
    message = T.Unicode("").tag(sync=True)
    view_size = T.Int(VIEW_SIZE).tag(sync=True)


def _rgba(shown: torch.Tensor) -> bytes:
    """``(C, H, W)`` float in [0, 1] (C = 1 or 3) -> RGBA uint8 bytes ``(H, W, 4)``."""
    with _one_thread():
        u8 = (shown[:3].clamp(0, 1) * 255).round_().to(torch.uint8).numpy()
    rgba = np.empty(u8.shape[1:] + (4,), np.uint8)
    rgba[..., :3] = u8.transpose(1, 2, 0)  # a grey image (C = 1) fills R, G and B
    rgba[..., 3] = 255
    return rgba.tobytes()


def affine_as(family: str, theta, control_points: int = 9) -> np.ndarray:
    """A flat affine theta ``(6,)`` as the flat parameters of ``family``: itself (affine), the
    homography ``[a11, a12, tx, a21, a22, ty, 0, 0]`` (projective), or the TPS rest lattice of
    ``control_points`` moved by it (TPS, the same sampling).

    Example:
        >>> affine_as("tps", [0.5, 0, 0, 0, 0.5, 0], 4).tolist()  # a 2x zoom: the lattice at half size
        [-0.5, -0.5, 0.5, -0.5, -0.5, 0.5, 0.5, 0.5]
    """
    t = np.asarray(theta, dtype=np.float64).reshape(2, 3)
    if family == "affine":
        return t.reshape(-1).copy()
    if family == "projective":
        return np.concatenate([t.reshape(-1), [0.0, 0.0]])
    rest = geometry.tps_control_points(control_points, dtype=torch.float64).numpy()
    return (rest @ t[:, :2].T + t[:, 2]).reshape(-1)


class _GridSwap(TorchFunctionMode):
    """Replace the grid of the ``call``-th ``F.grid_sample`` call (0-based) with ``make(shape)``, a
    grid of the package's convention (``align_corners=False``)."""

    def __init__(self, call: int, make):
        super().__init__()
        self.call, self.make, self.seen = call, make, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is F.grid_sample:
            if self.seen == self.call:
                args = list(args)
                grid = args[1] if len(args) > 1 else kwargs["grid"]
                new = self.make(tuple(grid.shape[1:3])).to(grid).expand(grid.shape[0], -1, -1, -1)
                if len(args) > 1:
                    args[1] = new
                else:
                    kwargs["grid"] = new
                if len(args) > 4:
                    args[4] = False
                else:
                    kwargs["align_corners"] = False
            self.seen += 1
        return func(*args, **kwargs)


class ThetaExplorer(_Widget):
    """Move a transform by hand and watch where it samples and what comes out, in the browser.

    The page warps the image itself on every slider step or drag, exactly as PyTorch samples
    (bilinear, ``align_corners=False``, zero padding); the kernel keeps the truth
    (``explorer.state``, an :class:`~stnviz.widgets.ExplorerState`): ``explorer.params`` is what
    the page shows, and setting it moves the page. On the input view, drag inside the sampled
    region to move it, a corner to scale it, the round handle to turn it (affine); each corner
    freely (projective); each control point (TPS). A family switch changes the kind of transform.

    Args:
        images: ``(N, C, H, W)`` float in [0, 1] (or uint8, or an ``ImageSet``).
        model: optional. It is run once under :func:`stnviz.capture.capture`: the first recorded
            image transformer with known parameters gives the default family, the "learned" preset
            and ghost outline (its own transform for each image), "model's mean", and the prediction
            panel: the model's top 3 for the region on screen (its transformer's grid replaced by
            the explorer's), updated when the hand stops.
        family: ``"affine"``, ``"projective"`` or ``"tps"``; ``None``: the model's family, else affine.
        params: the parameters to open with ("reset" returns to them), or ``"learned"`` (each image
            its own learned transform); default the identity.
        output_size: ``(H, W)`` of the output (default: the input size).
        control_points: K for TPS (a square number; the model's K when it has a TPS transformer).
        forward: how to run ``model``, ``forward(model, images)`` (default ``model(images)``); it is
            given the whole batch of ``images`` (one image's answer is read from its row).
        display: how the pixels are shown (:class:`stnviz.render.Display`); default the one
            remembered on ``model``, else images outside [0, 1] stretched to their range.
        view_size: side of the input and output views in the page, CSS pixels.

    Attributes: ``state``, ``params``, ``family``, ``index``, ``view`` (the :class:`ExplorerView`),
    ``prediction`` (``[(label, probability)]``), ``log`` (tracebacks of failed callbacks). Displayed,
    its output carries a PNG of the state for static exports, kept up to date after each cell.

    Example:
        >>> from stnviz.data import draw_glyphs
        >>> explorer = ThetaExplorer(draw_glyphs(3))  # leave it last in a cell to display it
        >>> explorer.view.params = [0.5, 0.0, 0.1, 0.0, 0.5, 0.0]  # what a drag in the page sends
        >>> explorer.params.tolist(), explorer.state.parts["scale_x"]
        ([0.5, 0.0, 0.1, 0.0, 0.5, 0.0], 0.5)
        >>> explorer.family = "projective"; explorer.view.params  # the family switch: the identity
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    """

    def __init__(self, images, model=None, *, family: str | None = None, params=None, output_size=None,
                 control_points: int = 9, forward=None, display: render.Display | None = None,
                 view_size: int = VIEW_SIZE):
        self.display = render.display_of(model, display=display)
        self.images = _as_images(images, where=None if self.display.knows_range else "stnviz.widgets")
        self.model, self.forward = model, forward
        self._collection = self._learned_key = self._learned_family = self._call = None
        if model is not None:
            rec = self._learned_record(0)
            if rec is not None:
                self._learned_key, self._call = rec.key, rec.call
                self._learned_family = "affine" if geometry.family_info(rec.family).is_affine else rec.family
                if self._learned_family == "tps":
                    control_points = int(rec.params.shape[1])
        family = family or self._learned_family or "affine"
        _check_family(family)
        if isinstance(params, str) and params != "learned":
            raise ValueError(f"params must be flat parameters or 'learned', got {params!r}")
        self._opened_with = params
        self.input_size = tuple(self.images.shape[-2:])
        self.output_size = tuple(output_size) if output_size is not None else self.input_size
        self.prediction: list = []
        self.log = W.Output(layout=W.Layout(max_height="12em", overflow="auto"))
        self.log.add_class("stnviz-log")
        self.control_points = int(control_points)
        self.state = ExplorerState(family, None, control_points=self.control_points)
        self.view = ExplorerView(count=int(self.images.shape[0]), output_shape=list(self.output_size),
                                 control_points=self.control_points, view_size=int(view_size))
        self.root = W.VBox([self.view, self.log])
        self.root.add_class("stnviz-theta-explorer")
        self._open(family, 0)
        self.view.observe(lambda ch: self._safe(self._on_page_params, ch["new"]), names="params")
        self.view.observe(lambda ch: self._safe(self._on_page_family, ch["new"]), names="family")
        self.view.observe(lambda ch: self._safe(self._select, ch["new"]), names="index")
        self.view.observe(lambda ch: self._safe(self._on_settled), names="settled")

    # ------------------------------------------------------------------ state -> page
    def _open(self, family: str, index: int) -> None:
        """(Re)build the state for ``family`` on image ``index`` and show it: the opened-with
        parameters (``"learned"``: this image's), image, ghost and presets."""
        opened = self._opened_with
        params = self._learned_as(family, index) if opened == "learned" else opened
        if params is not None and np.asarray(params).size != geometry.num_params(family, control_points=self.control_points):
            params = None  # parameters given for another family
        self.state = ExplorerState(family, params, control_points=self.control_points, index=index)
        with self.view.hold_sync():
            self.view.family = family
            self._show_image()
            self._show_extras()
            self.view.params = self.state.params.tolist()
        self._predict()

    def _show_image(self) -> None:
        image = self.images[self.state.index]
        with _one_thread():
            shown = self.display.apply(image, where="ThetaExplorer")
            zero = self.display.apply(torch.zeros_like(image), image, where="ThetaExplorer")
        self.view.image_shape = list(self.input_size)
        self.view.pad = [int(round(float(v) * 255)) for v in zero.expand(3, -1, -1)[:3, 0, 0].clamp(0, 1)]
        self.view.image = _rgba(shown)
        self.view.index = self.state.index

    def _show_extras(self) -> None:
        """The ghost outline (this image's learned transform) and the presets of this family."""
        st = self.state
        learned = self._learned_as(st.family, st.index)
        self.view.learned = [] if learned is None else learned.tolist()
        presets = [("identity", "the whole image, unchanged", st.identity)]
        if not np.array_equal(st.initial, st.identity) and (learned is None or not np.allclose(st.initial, learned)):
            presets.append(("reset", "back to the values the explorer opened with", st.initial))
        if learned is not None:
            presets.append(("snap to learned", "the model's own transform for this image (dashed blue)", learned))
        k = self.control_points
        presets.append(("zoom 2x", "the middle half of the image, twice as large", affine_as(st.family, [0.5, 0, 0, 0, 0.5, 0], k)))
        rot = compose_parts({"rotation_deg": 30.0, "scale_x": 1.0, "scale_y": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0})
        presets.append(("rotate 30°", "the whole image turned by 30 degrees", affine_as(st.family, rot, k)))
        mean = self._learned_mean(st.family)
        if mean is not None:
            presets.append(("model's mean", "the model's transform averaged over all the images", mean))
        self.view.presets = [{"name": n, "title": t, "params": [float(v) for v in p]} for n, t, p in presets]

    def _push(self) -> None:
        """The page shows the state's parameters."""
        self.view.params = self.state.params.tolist()
        self._predict()

    # ------------------------------------------------------------------ page -> state
    def _on_page_params(self, params) -> None:
        if len(params) != self.state.identity.size:
            return  # the family switch's parameters arrive with the new family
        if not np.array_equal(np.asarray(params, dtype=np.float64), self.state.params):
            self.state.set_params(params)

    def _on_settled(self) -> None:
        """The hand stopped: the model's answer for the region on screen (the model runs once per
        pause, not once per step of a drag)."""
        self._on_page_params(self.view.params)
        self._predict()

    def _on_page_family(self, family) -> None:
        if family != self.state.family:
            _check_family(family)
            self._open(family, self.state.index)

    def _select(self, index) -> None:
        """Image ``index`` selected: its own learned transform follows when the explorer shows the
        previous image's (or opened on "learned")."""
        index = int(index)
        if index == self.state.index:
            return
        if not 0 <= index < self.images.shape[0]:
            raise ValueError(f"image index must be in [0, {self.images.shape[0]}), got {index}")
        before = self._learned_as(self.state.family, self.state.index)
        follow = before is not None and np.allclose(self.state.params, before)
        self.state.index = index
        if self._opened_with == "learned":
            self.state.initial = self._learned_as(self.state.family, index)
        with self.view.hold_sync():
            self._show_image()
            self._show_extras()
            if follow:
                self.state.set_params(self._learned_as(self.state.family, index))
            self.view.params = self.state.params.tolist()
        self._predict()

    def _safe(self, fn, *args) -> None:
        try:
            if self.view.message.startswith("error"):
                self.view.message = ""
            fn(*args)
        except Exception as e:  # shown in the widget, never a dead widget
            self.view.message = f"error: {e}"
            self.log.append_stderr(traceback.format_exc())

    # ------------------------------------------------------------------ what the model thinks
    def _predict(self) -> None:
        """The model's top 3 with its transformer's grid replaced by the explorer's sampling."""
        if self._call is None:
            return
        st = self.state
        t = torch.as_tensor(st.params, dtype=torch.float64).unsqueeze(0)
        t = t.view(1, 2, 3) if st.family == "affine" else t.view(1, -1, 2) if st.family == "tps" else t
        try:
            with _one_thread():
                geometry.make_grid(t, st.family, (2, 2))  # raises for a homography that sends a point to infinity
                logits = self._run_swapped(lambda size: geometry.make_grid(t.float(), st.family, size))
        except ValueError:
            self.prediction = []
            self.view.prediction = []
            return
        if not (isinstance(logits, torch.Tensor) and logits.dim() == 2):
            return
        p = logits[self._row].float().softmax(0)
        top = p.topk(min(3, p.numel()))
        names = self.display.class_names
        self.prediction = [(render.class_name(int(i), names), float(v)) for v, i in zip(top.values, top.indices)]
        self.view.prediction = [[n, v] for n, v in self.prediction]

    @property
    def _row(self) -> int:
        """The image's row in what :meth:`_run_swapped` runs: a ``forward=`` gets the whole batch
        (it may hold tensors of that batch, a registration net's fixed images), as in ``collect``."""
        return self.state.index if self.forward is not None else 0

    def _run_swapped(self, make):
        device, dtype = model_device_dtype(self.model)
        i = self.state.index
        x = self.images if self.forward is not None else self.images[i: i + 1]
        x = x.to(device=device, dtype=dtype)
        with torch.no_grad(), eval_mode(self.model), _GridSwap(self._call, lambda size: make(size).to(device)):
            return self.forward(self.model, x) if self.forward is not None else self.model(x)

    # ------------------------------------------------------------------ scripting
    @property
    def params(self) -> np.ndarray:
        """The exact current flat parameters (the state's, what the page shows)."""
        return self.state.params

    @params.setter
    def params(self, value) -> None:
        self.set_params(value)

    def set_params(self, params) -> None:
        """Set the flat parameters (affine 6, projective 8, TPS 2K); the page follows."""
        self.state.set_params(params)
        self._push()

    @property
    def family(self) -> str:
        return self.state.family

    @family.setter
    def family(self, family: str) -> None:
        _check_family(family)
        if family != self.state.family:
            self._open(family, self.state.index)

    @property
    def index(self) -> int:
        """The selected image."""
        return self.state.index

    @index.setter
    def index(self, i: int) -> None:
        self._select(i)

    def reset(self) -> None:
        """Back to the parameters the explorer opened with (for ``"learned"``: this image's)."""
        self.state.reset()
        self._push()

    def use_learned(self) -> None:
        """Apply the model's learned transform for the selected image."""
        self.state.use_learned(self.learned_params())
        self._push()

    def _learned_record(self, index: int):
        """The first image transformer with known parameters in the capture of the model (run once
        on all images), sliced to image ``index``; ``None`` if none."""
        if self._collection is None:
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

    def _learned_as(self, family: str, index: int) -> np.ndarray | None:
        """The model's transform for image ``index`` as ``family``'s parameters, ``None`` when the
        model has none or it has no exact form in ``family`` (a homography as an affine theta)."""
        if self._learned_family is None:
            return None
        p = self.learned_params(index, family=self._learned_family)
        if self._learned_family == family:
            return p
        if self._learned_family == "affine":
            return affine_as(family, p, self.control_points)
        return None

    def _learned_mean(self, family: str) -> np.ndarray | None:
        if self._learned_family is None or self._learned_as(family, 0) is None:
            return None
        return np.mean([self._learned_as(family, i) for i in range(self.images.shape[0])], axis=0)

    def learned_params(self, index: int | None = None, *, family: str | None = None) -> np.ndarray:
        """The model's parameters for image ``index`` (default: the selected one), flat, in the
        model's family (affine-like families as an affine theta), from a capture of its forward."""
        if self.model is None:
            raise ValueError("no model was given; 'learned' needs one")
        if self._learned_family is None:
            raise ValueError("the model's forward pass recorded no image transformer with known parameters; "
                             "'learned' needs one")
        family = family or self.state.family
        if family != self._learned_family:
            p = self._learned_as(family, self.state.index if index is None else index)
            if p is None:
                raise ValueError(f"the model's transformer is {self._learned_family!r}; this explorer is {family!r}")
            return p
        i = self.state.index if index is None else index
        r = self._learned_record(i)
        if r is None:
            raise ValueError(f"the model's transformer {self._learned_key!r} was not recorded for image {i}")
        if family == "affine":
            return r.theta[0].reshape(-1).double().numpy().copy()
        if family == "projective":
            h = geometry.to_matrix(r.params[:1].double(), "projective")[0]
            return (h / h[2, 2]).reshape(-1)[:8].numpy().copy()
        return r.params[0].reshape(-1).double().numpy().copy()

    # ------------------------------------------------------------------ export
    def _static_png(self) -> bytes:
        """The state as one PNG, the input with its sampled region beside the output
        (:func:`~stnviz.widgets.render_explorer`): what a static export shows (kept up to date
        after each cell a person runs, :meth:`refresh_export`)."""
        st = self.state
        with _one_thread():
            v = render_explorer(self.images[st.index], st.params, st.family, output_size=self.output_size,
                                display=self.display, scale=max(1, 224 // max(self.input_size)))
        return _stacked_png([v.input_rgb, v.output_rgb])

    def _repr_mimebundle_(self, **kwargs):
        data = _bundle_data(super()._repr_mimebundle_(**kwargs))
        data["text/plain"] = f"ThetaExplorer({self.state.family}, params={np.round(self.params, 3).tolist()})"
        return data


def _check_family(family) -> None:
    if family not in EXPLORER_FAMILIES:
        raise ValueError(f"family must be one of {EXPLORER_FAMILIES}, got {family!r}")
