"""The inspector, in three parts: :class:`InspectorState` (which image, which transformer; no
widgets), :func:`render_inspector` (a pure function of one capture record and one image) and
:class:`STNInspector` (a picker and a dropdown that only change the state, and views rendered from
it)."""

from __future__ import annotations

import dataclasses
import html
import typing

import ipywidgets as W
import numpy as np
import torch

from .. import render
from ..analysis import theta_table
from ..capture import CaptureError, collect
from ._base import (FAMILY_WORDS, SAMPLING_WORDS, _as_images, _compact, _compact_style, _image_format,
                    _samples_only_outside, _show_pair, _stacked_png, _views_row, _Widget)

__all__ = ["InspectorState", "InspectorViews", "STNInspector", "render_inspector"]


class InspectorState:
    """What an :class:`STNInspector` shows, free of widgets: one image and one transformer.

    Attributes:
        keys: the transformers offered (capture keys), the first one the model's first image
            transformer; ``count``: the number of images.
        batches: key -> how many samples the record holds (one per image, or not: a transformer
            that sampled a batch of another size can be listed but not shown per image).
        index, key: the selection.

    Example:
        >>> state = InspectorState(["transformer", "body.1"], 4, batches={"transformer": 4, "body.1": 8})
        >>> state.select(index=2, key="body.1"); state.index, state.key, state.shows_box
        (2, 'body.1', False)
        >>> state.require_one_per_image()
        Traceback (most recent call last):
        ...
        ValueError: 'body.1' sampled a batch of 8 per 4 images (not one per image); pick another transformer
    """

    def __init__(self, keys, count: int, *, batches: dict | None = None):
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("an inspector needs at least one recorded transformer, got none")
        if count < 1:
            raise ValueError(f"an inspector needs at least one image, got {count}")
        self.count = int(count)
        self.batches = dict(batches) if batches is not None else {k: self.count for k in self.keys}
        self.index, self.key = 0, self.keys[0]

    @classmethod
    def for_collection(cls, collection, count: int, *, auxiliary: bool = False) -> "InspectorState":
        """What the inspector can show of a :class:`stnviz.capture.Collection`: its 2-D image
        warps with one sample per image (and, with ``auxiliary``, the flow fields and masks; those
        alone when there is no image warp). Points, look-ups, 3-D samplings and batches of another
        size are not listed (``stnviz.render.plot_batch`` draws points); a ``ValueError`` names
        what came when nothing can be shown."""
        records = collection.records

        def showable(roles) -> list[str]:
            return [k for k in collection.keys() if records[k].role in roles and records[k].spatial_dims == 2
                    and records[k].input.shape[0] == count]

        images, others = showable(("image",)), showable(("flow", "auxiliary"))
        keys = images + others if auxiliary else images or others
        if not keys:
            seen = ", ".join(f"{k!r} ({r.role}, {r.spatial_dims}-D, batch {r.input.shape[0]})" for k, r in records.items())
            raise ValueError(f"the inspector shows 2-D image warps with one sample per image ({count}); the model "
                             f"recorded none: {seen or 'no records'} (stnviz.render.plot_batch draws points)")
        return cls(keys, count, batches={k: records[k].input.shape[0] for k in keys})

    def select(self, *, index: int | None = None, key: str | None = None) -> None:
        """Pick image ``index`` and / or transformer ``key``."""
        if index is not None:
            if not 0 <= int(index) < self.count:
                raise ValueError(f"image index must be in [0, {self.count}), got {index}")
            self.index = int(index)
        if key is not None:
            if key not in self.keys:
                raise ValueError(f"transformer must be one of {list(self.keys)}, got {key!r}")
            self.key = key

    @property
    def shows_box(self) -> bool:
        """Annotated boxes belong to the input of the first transformer only."""
        return self.key == self.keys[0]

    def require_one_per_image(self) -> None:
        b = self.batches[self.key]
        if b != self.count:
            raise ValueError(f"{self.key!r} sampled a batch of {b} per {self.count} images (not one per image); "
                             "pick another transformer")


class InspectorViews(typing.NamedTuple):
    """What :func:`render_inspector` returns."""

    input_rgb: np.ndarray  # (H', W', 3) uint8: input, grey margin, sampled region, lattice (and box)
    output_rgb: np.ndarray  # (H'', W'', 3) uint8: the transformer's output
    info: str  # HTML: prediction, true label, sampling settings
    message: str  # "" or what is wrong with the picture (plain text)


def render_inspector(record, index: int, *, box=None, prediction: int | None = None, label: int | None = None,
                     class_names=None, display: render.Display | None = None, scale: int = 8,
                     margin: float = 0.25) -> InspectorViews:
    """The inspector's pictures and text for sample ``index`` of one capture record; no widgets.

    Args:
        record: a :class:`stnviz.capture` record (``input (B, C, H, W)``, ``output``, ``grid``,
            ``sampling``, ``sampled_outline()``), 2-D.
        box: an annotated box ``(x1, y1, x2, y2)`` in input pixel-edge coordinates, or ``None``.
        prediction, label: the model's and the true class, shown by ``class_names`` (default the
            display's) if given.
        display: how the pixels are shown (a :class:`stnviz.render.Display`: ``mean`` / ``std``
            or ``denormalize`` undone, BGR, contrast); default: the record's
            (:func:`stnviz.render.set_display`), else an input outside [0, 1] stretched to its own
            range (and the message says so).
        scale, margin: display magnification and grey margin (see :func:`stnviz.render.region_panels`).

    Example:
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(2))
        >>> logits, rec = collect_batch(model, digits.images)
        >>> views = render_inspector(rec.pick(), 1, prediction=int(logits[1].argmax()), label=2, scale=4)
        >>> views.input_rgb.shape, views.output_rgb.shape, views.message  # input: 25% grey margin a side
        ((168, 168, 3), (112, 112, 3), '')
        >>> views.info.split("<br>")[:2]
        ['prediction: <b>2</b>', 'true: 2 ✓']
    """
    shown = render.display_of(record, display=display)
    names = class_names if class_names is not None else shown.class_names
    return _views(_display_size(record, index, shown), record, box=box, prediction=prediction, label=label,
                  class_names=names, scale=scale, margin=margin)


class _Shown(typing.NamedTuple):
    """What the inspector keeps of one image for one transformer: the pictures as shown (uint8,
    ``(C, H, W)``, C 1 or 3: a feature map as its channel mean) and the marks, in input pixels."""

    input: np.ndarray
    output: np.ndarray
    outline: np.ndarray  # (P, 2)
    lattice: np.ndarray  # (64, 2)
    outside: bool  # samples entirely outside its input
    stretched: bool  # shown stretched to its own range


def _as_uint8(picture: torch.Tensor) -> np.ndarray:
    """A picture ``(C, H, W)`` in [0, 1] -> ``(C', H, W)`` uint8, C' 1 or 3 (feature maps by
    :func:`stnviz.render.to_display`'s channel mean)."""
    arr = render.to_display(picture)  # (H, W) or (H, W, 3) in [0, 1]
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray((arr * 255 + 0.5).astype(np.uint8))


def _display_size(record, index: int, display: render.Display) -> _Shown:
    """Sample ``index`` of a full record, as the inspector shows it (see :class:`_Shown`)."""
    record.require_2d("STNInspector")
    align = bool(record.sampling.get("align_corners"))
    picture = slice(None, record.image_channels)  # without a fill-mask channel
    ref = record.input[index, picture]
    return _Shown(_as_uint8(display.apply(ref, where="STNInspector")),
                  _as_uint8(display.apply(record.output[index, picture], ref, where="STNInspector")),
                  record.sampled_outline(8)[index].cpu().numpy(),
                  render.lattice_points(record.grid[index], record.input_size, 8, align_corners=align),
                  _samples_only_outside(record.grid[index]), bool(display.stretches(ref)[0]))


def _sampling_text(record) -> str:
    """What a transformer does and how it samples, in words (no parameter names)."""
    s = record.sampling
    words = [FAMILY_WORDS.get(record.family, FAMILY_WORDS[None]).capitalize(),
             SAMPLING_WORDS.get(s["mode"], s["mode"]), SAMPLING_WORDS.get(s["padding_mode"], s["padding_mode"])]
    return "; ".join(words)


def _views(shown: _Shown, record, *, box, prediction, label, class_names, scale, margin) -> InspectorViews:
    """The inspector's pictures and text from what it keeps of one image (``record``: its
    sampling and family)."""
    input_rgb, output_rgb = render.region_panels(torch.from_numpy(shown.input).float() / 255,
                                                 torch.from_numpy(shown.output).float() / 255,
                                                 shown.outline, shown.lattice, box, scale=scale, margin=margin)
    names = class_names

    def name(c: int) -> str:
        return html.escape(render.class_name(c, names))

    lines = []
    if prediction is not None:
        lines.append(f"prediction: <b>{name(prediction)}</b>")
        if label is not None:
            lines.append(f"true: {name(label)} {'✓' if label == prediction else '✗'}")
    elif label is not None:
        lines.append(f"true: {name(label)}")
    lines.append(f"<span style='color:#666'>{html.escape(_sampling_text(record))}</span>")
    problems = []
    if shown.outside:
        problems.append("this transformer samples entirely outside its input")
    if shown.stretched:
        problems.append("input outside [0, 1]: shown stretched to its own range (pass mean/std, denormalize or "
                        "display)")
    return InspectorViews(input_rgb, output_rgb, "<br>".join(lines), "; ".join(problems))


#: what records other than image warps are, in words (``record.role``)
_ROLE_WORDS = {"flow": "an offset field", "auxiliary": "a mask or extra map sampled with the same grid",
               "points": "points looked up", "lookup": "a look-up"}
#: the theta table's columns as the widget heads them (:func:`stnviz.analysis.theta_table`'s names)
_TABLE_HEADINGS = {"rotation (deg)": "turned (degrees)", "scale x": "region width", "scale y": "region height",
                   "shear": "shear", "translation x": "region centre x", "translation y": "region centre y",
                   "theta": "theta (the numbers the network gave)"}
#: the tallest the input picture (with its margins) is drawn by default, in pixels
_PICTURE_PX = 336


def _fitting_scale(size) -> int:
    """The magnification (1 to 8) that draws an input of ``size = (H, W)`` with its 25% margins
    at most :data:`_PICTURE_PX` pixels tall and wide."""
    return max(1, min(8, _PICTURE_PX // round(1.5 * max(size))))


#: the inspector runs the images in chunks of about this many input bytes (at least one image):
#: each chunk's full records exist only while it runs
_CHUNK_BYTES = 2 * 2**20


def _shape_only(record):
    """``record`` without its pixels: input, grid and output become shape-only ("meta") tensors;
    the parameters (copied into their own small storage: a long-lived view would pin the
    allocator's pages of the batch it came from), sampling and role stay. What the inspector
    keeps of every image."""
    return dataclasses.replace(record, input=record.input.to("meta"), grid=record.grid.to("meta"),
                               output=record.output.to("meta"),
                               params=None if record.params is None else record.params.clone())


def _release_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the system (glibc's ``malloc_trim``; nothing
    elsewhere): glibc keeps freed batch-sized blocks in its heap, and with a few small tensors
    kept per chunk the process grows by a chunk's worth each time."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


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
        mean, std, denormalize: short for ``display=stnviz.render.Display(mean=..., std=...)``
            (or ``denormalize=``): the values the model's data pipeline normalised with; the views
            undo them (display only).
        display: how the pixels are shown (a :class:`stnviz.render.Display`: normalisation
            undone, BGR, contrast, class names); default the one remembered on ``model``
            (:func:`stnviz.render.set_display`), else inputs outside [0, 1] stretched to their own
            range.
        scale: how many screen pixels per input pixel; default the largest (at most 8) that draws
            the input with its margins at most 336 pixels tall (so the widget fits a laptop screen).
        auxiliary: also list flow fields and masks (roles ``"flow"``, ``"auxiliary"``) in the picker.
            Points and look-ups are never listed (see :mod:`stnviz.capture.roles`).

    A thin shell over :class:`InspectorState` (``inspector.state``) and :func:`render_inspector`.

    Memory: the images run in chunks (``batch_size``, default about 2 MB of input each; with a
    custom ``forward`` and no ``batch_size``, one batch). Of every record only shapes and
    parameters are kept (``records``), and of every image what the views show (the pictures as
    uint8 at their size, the region and lattice); an image's full record is made again when asked
    for (:meth:`record`: that image runs once more; with a custom ``forward``, its batch).
    128 images of 3 x 224 x 224 hold well under 200 MB (``bench/bench_widgets.py``).

    Attributes for scripting and tests: ``state``, ``records`` (key -> record over all images,
    its ``input``, ``grid`` and ``output`` shape-only; :meth:`record` gives one image's full one),
    ``display``, ``predictions``, ``picker``, ``which`` (the transformer dropdown), ``input_view``,
    ``output_view``, ``info``, ``table``, ``message``, ``log``; ``diagnosis`` (:meth:`diagnose`, run when
    the widget is first shown, never per slider move) and ``diagnosis_view`` (its problems for the
    picked transformer).

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
                 mean=None, std=None, denormalize=None, auxiliary: bool = False, scale: int | None = None,
                 batch_size: int | None = None, display: render.Display | None = None):
        self.model = model
        if mean is not None or std is not None or denormalize is not None:
            if display is not None:
                raise ValueError("pass display or its mean/std/denormalize, not both")
            display = render.Display(mean=mean, std=std, denormalize=denormalize)
        self.display = render.display_of(model, display=display)
        self.images = _as_images(images, where=None if self.display.knows_range else "STNInspector")
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
        self.scale = scale
        self._init_common()
        if batch_size is None and forward is None:
            per_image = self.images[0].numel() * self.images.element_size()
            batch_size = max(1, min(256, _CHUNK_BYTES // per_image))
        self.forward, self.batch_size = forward, batch_size or n
        predict = predict or _default_predict
        run = forward or (lambda m, x: m(x))

        chunk = [0]  # the size of the chunk running
        self._shown: dict[str, list[_Shown]] = {}  # key -> what is shown of each image

        def predicted(m, x):  # only the labels outlive a chunk, not the model's output
            _release_freed_memory()  # the last chunk's
            chunk[0] = x.shape[0]
            p = predict(run(m, x))
            return None if p is None else torch.as_tensor(p).reshape(-1).cpu().clone()

        def keep(record):  # what is shown of each image, and the record without pixels
            if record.spatial_dims == 2 and record.role in ("image", "flow", "auxiliary") \
                    and record.input.shape[0] == chunk[0]:
                self._shown.setdefault(record.key, []).extend(
                    _display_size(record, i, self.display) for i in range(chunk[0]))
            return _shape_only(record)

        self.collection = collect(model, self.images, forward=predicted, batch_size=batch_size, keep=keep)
        self.records = self.collection.records
        self._chunk: tuple[int, dict] | None = None  # (first image, key -> full record) of the last run
        if not self.records:
            raise CaptureError(f"the model's forward made no sampler call that could be shown; "
                               f"left out: {self.collection.skipped or 'none'}")
        preds = self.collection.outputs  # the labels per chunk (predicted)
        self.predictions = None
        if all(p is not None for p in preds):
            p = torch.cat([torch.as_tensor(x).reshape(-1).cpu() for x in preds])
            self.predictions = p if p.numel() == n else None
        if class_names is None:
            class_names = self.display.class_names
        self._check_class_names(class_names)
        self.class_names = class_names
        self.state = InspectorState.for_collection(self.collection, n, auxiliary=auxiliary)
        self.picker = W.IntSlider(0, 0, n - 1, description="image", disabled=n == 1)
        self.picker.add_class("stnviz-picker")
        keys = list(self.state.keys)
        labels = [self._label(k) for k in keys]
        self.which = W.Dropdown(options=list(zip(labels, keys)), value=keys[0], description="transformer",
                                style={"description_width": "initial"},
                                layout=W.Layout(width=f"{max(len(t) for t in labels) + 16}ch"))  # never cut
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
        self.diagnosis, self._predict = None, predict  # diagnosed once, when the widget is first shown
        self.diagnosis_view = W.HTML()
        self.diagnosis_view.add_class("stnviz-diagnosis")
        self.picker.observe(lambda ch: self._safe(self._select, {"index": ch["new"]}), names="value")
        self.which.observe(lambda ch: self._safe(self._select, {"key": ch["new"]}), names="value")
        self._shown_views: InspectorViews | None = None  # the last views shown (the static picture)
        self.root = W.VBox([
            W.HBox([self.picker, self.which], layout=W.Layout(flex_flow="row wrap")),
            _views_row(self.input_view, self.output_view, self.info,
                       titles=("the input, with the region the transformer samples (red) and its sample points",
                               "what the transformer passes on")),
            self.table, self.diagnosis_view, self.message, self.log, _compact_style(),
        ])
        for text in (self.info, self.table, self.diagnosis_view):
            _compact(text)
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
        """What the picker and the table call a record, in words: which transformer (in the order
        the model runs them) or what else was sampled, and on what."""
        r = self.records[key]
        c, (h, w) = r.image_channels or r.input.shape[1], r.input_size
        on_input = (c, h, w) == tuple(self.images.shape[1:])
        where = "on the input image" if on_input else f"on feature maps ({c} × {h} × {w})"
        word = "transformer" if r.role == "image" else _ROLE_WORDS.get(r.role, r.role)
        same = [k for k, rec in self.records.items() if rec.role == r.role]  # in the order the model ran them
        if len(same) == 1:
            return f"the {word}, {where}" if r.role == "image" else f"{word}, {where}"
        k = f"{same.index(key) + 1} of {len(same)}"  # never two entries alike
        return f"{word} {k}, {where}" if r.role == "image" else f"{word} ({k}), {where}"

    def _people_table(self, index: int) -> str:
        """The theta table of image ``index`` as HTML for people: readable names and headings."""
        df = self.theta_table(index)
        df.insert(1, "what it does", [FAMILY_WORDS.get(None if f == "grid only" else f, FAMILY_WORDS[None])
                                      for f in df["family"]])
        df["transformer"] = [self._label(k) for k in df["transformer"]]
        df = df.drop(columns=["family", "role"])
        if "theta" in df.columns:  # the raw numbers last
            df = df[[c for c in df.columns if c != "theta"] + ["theta"]]
        df = df.rename(columns=_TABLE_HEADINGS)
        table = df.to_html(index=False, float_format=lambda v: f"{v:.3f}", classes="stnviz-theta-table", na_rep="")
        return ("<b>What every transformer does to this image</b> (the region's size and place are in units of the "
                f"input: width 1 is the whole input, centre -1 / +1 its left or top / right or bottom edge){table}")

    def theta_table(self, index: int):
        """Every transformer's theta (raw and decomposed) for image ``index``, one row each."""
        import pandas as pd

        frames = [theta_table([r], index) for r in self.records.values() if r.input.shape[0] == self.images.shape[0]]
        return pd.concat(frames, ignore_index=True)

    def record(self, index: int, key: str | None = None):
        """The full record of image ``index`` (one sample: input, grid, output) for transformer
        ``key`` (default the selected one), made when asked: the image runs through the model
        again (alone; with a custom ``forward``, in its batch as it was collected), and its records
        are kept until another image is asked for."""
        key = self.state.key if key is None else key
        start = index if self.forward is None else index // self.batch_size * self.batch_size
        if self._chunk is None or self._chunk[0] != start:
            self._chunk = None  # the old records go before the new ones are made
            _release_freed_memory()
            stop = index + 1 if self.forward is None else start + self.batch_size
            self._chunk = (start, collect(self.model, self.images[start:stop], forward=self.forward).records)
        full = self._chunk[1].get(key)
        if full is None:
            raise ValueError(f"transformer {key!r} was not recorded when image {index}'s batch ran again")
        return full.sample(index - start)

    def diagnose(self):
        """:func:`stnviz.diagnose.diagnose` of the first chunk of images (``batch_size``, with the
        labels when there are predictions), run once (the first time the widget is shown) and kept."""
        if self.diagnosis is None:
            from ..diagnose import diagnose

            n = self.batch_size
            labels = self.labels[:n] if self.labels is not None and self.predictions is not None else None
            self.diagnosis = diagnose(self.model, self.images[:n], labels, forward=self.forward, predict=self._predict)
            self.update()
        return self.diagnosis

    def _repr_mimebundle_(self, **kwargs):
        self._safe(self.diagnose)
        return super()._repr_mimebundle_(**kwargs)

    def show(self):
        self._safe(self.diagnose)
        super().show()

    def _static_png(self) -> bytes | None:
        v = self._shown_views
        return None if v is None else _stacked_png([v.input_rgb, v.output_rgb])

    def _select(self, selection: dict) -> None:
        self.state.select(**selection)
        self.update()

    def update(self) -> None:
        """Re-render the views from the state."""
        st = self.state
        st.require_one_per_image()
        i, rec = st.index, self.records[st.key]
        box = None
        if self.boxes is not None and st.shows_box and rec.input_size == tuple(self.images.shape[-2:]):
            box = self.boxes[i]
        v = _views(self._shown[st.key][i], rec, box=box, label=None if self.labels is None else int(self.labels[i]),
                   prediction=None if self.predictions is None else int(self.predictions[i]),
                   class_names=self.class_names, scale=self.scale or _fitting_scale(rec.input_size), margin=0.25)
        self._shown_views = v
        _show_pair(self.input_view, self.output_view, v.input_rgb, v.output_rgb,
                   "png" if rec.input.shape[1] != 3 else self.format)
        self.info.value = v.info
        if i not in self._tables:
            self._tables[i] = self._people_table(i)
        self.table.value = self._tables[i]
        if self.diagnosis is not None:
            self.diagnosis_view.value = self.diagnosis.html_list(st.key).replace(
                f"<code>{html.escape(st.key)}</code>", html.escape(self._label(st.key)))
        self.message.value = f"<span style='color:#c60'>{html.escape(v.message)}</span>" if v.message else ""
