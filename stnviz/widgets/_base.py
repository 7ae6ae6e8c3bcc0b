"""What every widget shares: the images it takes, the row of views, the error line, and a
re-entrant, per-thread "one intra-op thread" block for small tensor work."""

from __future__ import annotations

import base64
import contextlib
import html
import threading
import traceback
import weakref
from pathlib import Path

import ipywidgets as W
import numpy as np
import torch

from .. import render
from ..models.inputs import warn_if_not_unit_range


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


def _views_row(input_view, output_view, *extra, titles=("input + sampled region", "transformer output")) -> W.HBox:
    """Input + sampled region | transformer output | extra widgets, side by side, each picture
    under its title (plain text)."""
    return W.HBox([W.VBox([_compact(W.HTML(f"<b>{html.escape(t)}</b>", layout=W.Layout(max_width="24em"))), view])
                   for t, view in zip(titles, (input_view, output_view))] + list(extra))


def _compact(widget: W.HTML) -> W.HTML:
    """``widget``'s text at text line height (with :func:`_compact_style` in the same root): an
    ``ipywidgets.HTML`` gives every line the height of a slider row (28 px), which makes a
    wrapped title, table or list several times taller."""
    widget.add_class("stnviz-compact")
    return widget


def _compact_style() -> W.HTML:
    """The style :func:`_compact` needs: put it once in a widget's root (it shows nothing)."""
    return W.HTML("<style>.jupyter-widgets.stnviz-compact > .widget-html-content"
                  "{line-height:1.35 !important}</style>", layout=W.Layout(display="none"))


#: What each transform family does, in words for people who don't read code (menus, captions).
FAMILY_WORDS = {"affine": "turns, scales, shears and moves", "attention": "scales and moves",
                "restricted": "a few chosen movements", "translation": "moves only",
                "projective": "changes the perspective", "tps": "bends smoothly (thin-plate spline)",
                None: "samples along a free grid"}
#: What the sampler does between pixels and outside the input, in words (``grid_sample``'s
#: ``mode`` and ``padding_mode``).
SAMPLING_WORDS = {"bilinear": "blends the 4 nearest pixels", "nearest": "takes the nearest pixel",
                  "bicubic": "blends the 16 nearest pixels", "zeros": "black outside the input",
                  "border": "the edge repeated outside the input", "reflection": "the input mirrored outside it"}


def _image_format(images: torch.Tensor) -> str:
    """PNG for grey images (crisp, and quick to encode), JPEG for colour ones (PNG would take
    tens of milliseconds per update for a 224x224 photo)."""
    return "png" if images.shape[1] == 1 else "jpeg"


def _samples_only_outside(grid: torch.Tensor) -> bool:
    """True when no point of a sampling grid ``(..., 2)`` (normalised ``(x, y)``; a sparse subset
    will do) lies inside the input: the output is all padding."""
    return not bool((grid.abs() <= 1).all(-1).any())


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


def web_source(name: str) -> str:
    """The text of ``web/<name>``, a page's JavaScript or CSS, as an anywidget's ``_esm`` / ``_css``.

    Text, never a path: anywidget ties every widget of a class whose ``_esm`` is a file to that
    file's change signal (its hot reload), which keeps each one alive for good, closed or not."""
    return (Path(__file__).parent / "web" / name).read_text(encoding="utf-8")


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

    def _static_png(self) -> bytes | None:
        """A PNG of what the widget shows now, for pages without a live kernel (a notebook saved
        with outputs and converted to HTML); ``None``: none."""
        return None

    def _repr_mimebundle_(self, **kwargs):
        return _with_picture(self.root._repr_mimebundle_(**kwargs), self._static_png())

    def _ipython_display_(self):
        """Shown with a display id: after each cell a person runs, the output's picture is brought
        up to what the widget shows (a notebook saved afterwards exports its last state)."""
        from IPython import get_ipython
        from IPython.display import display

        data = _bundle_data(self._repr_mimebundle_())
        self._exported = data.get("image/png")
        self._export_handle = display(data, raw=True, display_id=True)
        ip = get_ipython()
        if ip is not None:
            _shown.add(self)
            if _refresh_shown not in ip.events.callbacks.get("post_run_cell", []):
                ip.events.register("post_run_cell", _refresh_shown)

    def refresh_export(self) -> None:
        """Bring the displayed output's picture (what a static export shows) up to what the
        widget shows now; run after each cell a person runs. The page's live view is drawn
        again from the same widget."""
        handle = getattr(self, "_export_handle", None)
        if handle is None:
            return
        data = _bundle_data(self._repr_mimebundle_())
        if data.get("image/png") != self._exported:
            self._exported = data.get("image/png")
            handle.update(data, raw=True)

    def show(self):
        from IPython.display import display

        display(self)

    def close(self) -> None:
        """Close the widget: its controls leave the page, and the kernel lets go of what it held
        (pictures, records, the model) once your last name for it goes. ipywidgets keeps every
        widget alive until it is closed, so a cell run again leaves the old one behind until then."""
        for w in _widget_tree(self.root, *(v for v in vars(self).values() if isinstance(v, W.Widget))):
            w.close()
        _shown.discard(self)


def _widget_tree(*roots: W.Widget):
    """Every widget in ``roots`` and their boxes' children, each once."""
    seen: dict[int, W.Widget] = {}
    todo = list(roots)
    while todo:
        w = todo.pop()
        if id(w) not in seen:
            seen[id(w)] = w
            todo.extend(c for c in getattr(w, "children", ()) if isinstance(c, W.Widget))
    return list(seen.values())


_shown: weakref.WeakSet = weakref.WeakSet()  # widgets displayed with a display id


def _refresh_shown(result=None) -> None:
    """IPython's post_run_cell: refresh the export of every displayed widget after a person's cell
    (not after a silent request, e.g. a front end's or a test's probe)."""
    info = getattr(result, "info", None)
    if info is not None and (getattr(info, "silent", False) or not getattr(info, "store_history", True)):
        return
    for widget in list(_shown):
        try:
            widget.refresh_export()
        except Exception:  # an export is a convenience: never break the user's cell
            pass


def _bundle_data(bundle) -> dict:
    return dict(bundle[0] if isinstance(bundle, tuple) else bundle)


def _with_picture(bundle, png: bytes | None):
    """A widget's mimebundle with ``png`` added as ``image/png``: a live page shows the widget, a
    static export (nbconvert to HTML, GitHub) that has no widget state shows the picture."""
    if png is None:
        return bundle
    data, metadata = bundle if isinstance(bundle, tuple) else (bundle, None)
    data = {**data, "image/png": base64.b64encode(png).decode("ascii")}
    return data if metadata is None else (data, metadata)


def _stacked_png(*rows, gap: int = 8) -> bytes:
    """One PNG of pictures ``(H, W, 3)`` uint8: each row a list of pictures side by side (tops
    aligned), the rows under each other, on white with ``gap`` pixels between them."""
    rows = [[np.asarray(p, dtype=np.uint8) for p in row] for row in rows if len(row)]
    heights = [max(p.shape[0] for p in row) for row in rows]
    widths = [sum(p.shape[1] for p in row) + gap * (len(row) - 1) for row in rows]
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), max(widths), 3), 255, np.uint8)
    y = 0
    for row, h in zip(rows, heights):
        x = 0
        for p in row:
            canvas[y:y + p.shape[0], x:x + p.shape[1]] = p[..., :3]
            x += p.shape[1] + gap
        y += h + gap
    return render.encode(canvas, "png")


def _show_pair(input_view: W.Image, output_view: W.Image, input_rgb, output_rgb, fmt: str) -> None:
    """Show the two panels of :func:`stnviz.render.region_panels` (input + region, output), encoded
    as ``fmt`` ("png" or "jpeg")."""
    with _one_thread():
        inp, out = render.encode(input_rgb, fmt), render.encode(output_rgb, fmt)
    input_view.format = output_view.format = fmt
    input_view.value, output_view.value = inp, out
