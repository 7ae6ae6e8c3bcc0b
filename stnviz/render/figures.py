"""The matplotlib back end: arrays or capture records in, Axes (or a Figure) out. Every function
draws into the caller's ``ax`` when given and returns it.

Coordinates are input pixels with pixel centres at integers (``stnviz.geometry``'s convention).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import geometry
from .display import Display, display_of
from .raster import BOX_COLOR, LATTICE_COLOR, OUTLINE_COLOR, _np, lattice_points, to_display

__all__ = ["draw_box", "draw_image", "draw_lattice", "draw_outline", "format_theta", "plot_batch", "plot_record"]


def _record_align_corners(record) -> bool:
    return bool(getattr(record, "sampling", {}).get("align_corners", geometry.ALIGN_CORNERS))



def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def draw_image(image, ax=None, title: str | None = None):
    """Show ``image`` (see :func:`to_display`) with pixel centres at integer coordinates.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> ax = draw_image(torch.zeros(1, 28, 28), title="a digit")
        >>> ax.get_title(), ax.images[0].get_array().shape
        ('a digit', (28, 28))
        >>> plt.close("all")
    """
    ax = _axes(ax)
    disp = to_display(image)
    ax.imshow(disp, cmap="gray" if disp.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _fit_view(ax, pts: np.ndarray) -> None:
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    pad = 0.03 * max(abs(xlim[1] - xlim[0]), abs(ylim[1] - ylim[0]))
    x0, x1 = min(min(xlim), pts[:, 0].min() - pad), max(max(xlim), pts[:, 0].max() + pad)
    y0, y1 = min(min(ylim), pts[:, 1].min() - pad), max(max(ylim), pts[:, 1].max() + pad)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0) if ylim[0] > ylim[1] else ax.set_ylim(y0, y1)


def draw_outline(outline, ax=None, color: str = OUTLINE_COLOR, linewidth: float = 1.5, corner_marker: bool = True,
                 fit: bool = True):
    """Draw a closed polygon ``(N, 2)`` of ``(x, y)`` pixel points (e.g. ``geometry.sampled_outline``).

    The first point (the output's top-left corner) gets a dot, so flips and rotations show.
    ``fit=True`` widens the view to show the whole region when it reaches outside the image.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> outline = geometry.sampled_outline(theta, "affine", (28, 28), points_per_side=4)[0]
        >>> ax = draw_outline(outline, draw_image(torch.zeros(1, 28, 28)))
        >>> len(ax.lines)  # the region and the dot on its first corner
        2
        >>> plt.close("all")
    """
    ax = _axes(ax)
    pts = _np(outline)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"outline must be (N, 2) with N >= 2, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError("outline has non-finite points (a degenerate transform?)")
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    closed = np.vstack([pts, pts[:1]])
    ax.plot(closed[:, 0], closed[:, 1], color=color, linewidth=linewidth)
    if corner_marker:
        ax.plot(pts[0, 0], pts[0, 1], "o", color=color, markersize=4)
    if fit:
        _fit_view(ax, pts)
    else:
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    return ax



def draw_lattice(points, ax=None, color: str = LATTICE_COLOR, size: float = 6.0):
    """Mark sample points ``(M, 2)`` (from :func:`lattice_points`).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> pts = lattice_points(geometry.affine_grid(theta, (28, 28))[0], (28, 28), n=3)
        >>> ax = draw_lattice(pts, draw_image(torch.zeros(1, 28, 28)))
        >>> len(ax.collections[0].get_offsets())
        9
        >>> plt.close("all")
    """
    ax = _axes(ax)
    pts = _np(points)
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.scatter(pts[:, 0], pts[:, 1], s=size, c=color, marker=".", linewidths=0)
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return ax


def draw_box(box, ax=None, color: str = BOX_COLOR, label: str | None = None, linewidth: float = 1.5):
    """Draw an axis-aligned box ``(x1, y1, x2, y2)`` in pixel-edge coordinates (e.g. a GTSRB ROI
    scaled to the image: ``roi * (W, H, W, H) - 0.5``).

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> ax = draw_box((3.5, 4.5, 20.5, 24.5), draw_image(torch.zeros(3, 32, 32)), label="annotated")
        >>> type(ax.patches[0]).__name__, ax.texts[0].get_text()
        ('Rectangle', 'annotated')
        >>> plt.close("all")
    """
    from matplotlib.patches import Rectangle

    ax = _axes(ax)
    x1, y1, x2, y2 = (float(v) for v in _np(box))
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth, linestyle="--"))
    if label:
        ax.text(x1, y1 - 0.5, label, color=color, fontsize=7, va="bottom")
    return ax


def _signed(v: float, digits: int = 3, width: int = 6) -> str:
    return f"{round(float(v), digits) + 0.0:+{width}.{digits}f}"  # + 0.0: never "-0.000"


def format_theta(theta, decomposed: bool = True, *, layout: str = "block") -> str:
    """Theta ``(2, 3)`` (or ``(6,)``) as text, the package's one way to write it: the raw matrix
    and, if asked, its decomposition by :func:`stnviz.geometry.decompose_affine` (rotation in
    degrees, scale x / y, shear, translation x / y; a singular theta, :func:`stnviz.geometry.is_singular`,
    has none). Every number is signed with fixed digits, so a column of them keeps its width.

    ``layout``: ``"block"``, one line per matrix row and per part (figures, the explorer), or
    ``"line"``, everything on one line (tables).

    Example:
        >>> print(format_theta(torch.tensor([[0.0, -0.5, 0.1], [0.5, 0.0, 0.0]])))
        [+0.000 -0.500 +0.100]
        [+0.500 +0.000 +0.000]
        rotation     +90.0°
        scale       +0.500 × +0.500
        shear       +0.000
        translation +0.100 +0.000
        >>> format_theta(torch.zeros(2, 3), layout="line")
        '[+0.000 +0.000 +0.000; +0.000 +0.000 +0.000]  singular: no decomposition'
        >>> format_theta(torch.eye(2, 3), layout="line")
        '[+1.000 +0.000 +0.000; +0.000 +1.000 +0.000]  rotation +0.0°, scale +1.000 × +1.000, shear +0.000, translation +0.000 +0.000'
        >>> format_theta(torch.eye(2, 3), decomposed=False, layout="line")
        '[+1.000 +0.000 +0.000; +0.000 +1.000 +0.000]'
    """
    if layout not in ("block", "line"):
        raise ValueError(f"layout must be 'block' or 'line', got {layout!r}")
    t = torch.as_tensor(_np(theta), dtype=torch.float64).reshape(1, 2, 3)
    rows = [" ".join(_signed(v) for v in t[0, r].tolist()) for r in range(2)]
    parts: list[tuple[str, str]] = []  # (name, value)
    note = ""
    if decomposed:
        if not bool(torch.isfinite(t).all()):
            note = "not finite: no decomposition"
        elif bool(geometry.is_singular(t)):
            note = "singular: no decomposition"
        else:
            p = geometry.decompose_affine(t)
            parts = [("rotation", f"{_signed(math.degrees(float(p.rotation)), 1)}°"),
                     ("scale", f"{_signed(p.scale_x)} × {_signed(p.scale_y)}"),
                     ("shear", _signed(p.shear)),
                     ("translation", f"{_signed(p.tx)} {_signed(p.ty)}")]
    if layout == "line":
        tail = ", ".join(f"{n} {v.strip()}" for n, v in parts) or note
        return "[" + "; ".join(rows) + "]" + (f"  {tail}" if tail else "")
    return "\n".join([f"[{r}]" for r in rows] + [f"{n:<12}{v}" for n, v in parts] + ([note] if note else []))


#: how each role of a record is drawn (:mod:`stnviz.capture.roles`); ``None``: refused by name
_DRAWN_AS = {"image": "region", "auxiliary": "region", "flow": "field", "points": "points", "lookup": None}
#: the roles plot_batch picks from a capture or a list unless ``auxiliary=True`` adds flow and masks
_PICKED = ("image", "points")


def _summary(record) -> str:
    """One line: what a record sampled, by shape."""
    b, c = record.input.shape[:2]
    out = " x ".join(map(str, record.grid.shape[1:-1]))
    return (f"{b} look-ups of {out} points each into a ({', '.join(map(str, record.input.shape))}) input "
            f"of {c} channel{'s' if c != 1 else ''}")


def _require_drawable(record, what: str) -> None:
    """A clear error for what the 2-D drawings can't show: 3-D (volume) samplers and look-ups."""
    key = getattr(record, "key", "?")
    if getattr(record, "spatial_dims", 2) != 2:
        raise ValueError(f"{what} draws 2-D samplers only; record {key!r} is a 3-D (volume) sampling with input "
                         f"shape {tuple(record.input.shape)} and grid {tuple(record.grid.shape)}")
    role = getattr(record, "role", "image")
    if role not in _DRAWN_AS:
        raise ValueError(f"{what} draws records of roles {sorted(_DRAWN_AS)}; record {key!r} has role {role!r}")
    if _DRAWN_AS[role] is None:
        raise ValueError(f"{what} does not draw record {key!r}: it is a {role} (a correlation or attention look-up "
                         f"whose batch is not the image batch): {_summary(record)}")


def _picture(record, t: torch.Tensor) -> torch.Tensor:
    """The channels of ``t (C, H, W)`` that are the picture (without a fill-mask channel)."""
    k = getattr(record, "image_channels", None)
    return t if k is None else t[:k]


def _draw_field(field, ax, title: str):
    """An offset / flow field ``(2, H, W)``: its magnitude (brighter: longer) and sparse arrows."""
    f = _np(field).astype(np.float32)
    mag = np.hypot(f[0], f[1])
    ax.imshow(mag / mag.max() if mag.max() > 0 else mag, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    h, w = mag.shape
    step = max(1, max(h, w) // 8)
    ys, xs = np.mgrid[step // 2 : h : step, step // 2 : w : step]
    ax.quiver(xs, ys, f[0][ys, xs], f[1][ys, xs], color="#9fd8ff", angles="xy", width=0.005)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return ax


def _points(record, index: int) -> np.ndarray:
    """Sample ``index``'s sampled points in input pixels, ``(P, 2)``."""
    pts = geometry.grid_to_pixels(record.grid[index].float(), record.input_size,
                                  align_corners=_record_align_corners(record))
    return _np(pts.reshape(-1, 2))


def plot_record(record, index: int = 0, axes=None, *, prediction: str | None = None, box=None, lattice: int = 8,
                display: Display | None = None):
    """Sample ``index`` of a capture record drawn as its role says (:mod:`stnviz.capture.roles`):

    * ``"image"`` (and ``"auxiliary"`` masks): input with the sampled region (outline + lattice) | output
      (of an image with a fill-mask channel, the image channels only);
    * ``"flow"``: the field sampled (magnitude and arrows) with the region | the warped field;
    * ``"points"``: the input with every sampled point; no output panel (that axes is turned off);
    * ``"lookup"`` and 3-D records: refused by name with a one-line summary (``ValueError``).

    ``record``: anything with ``input``, ``output``, ``grid``, ``role`` and ``sampled_outline()``.
    ``box``: an annotated box in input pixel-edge coordinates, drawn beside the region.
    ``display``: how the pixels are shown (:class:`stnviz.render.Display`: normalisation undone,
    channel order, contrast); default: the one remembered on the record (:func:`set_display`), else
    out-of-range inputs stretched to their own range. Returns the two axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> logits, rec = collect_batch(model, stnviz.data.sample("mnist").get(torch.arange(2)).images)
        >>> ax_in, ax_out = plot_record(rec.pick(), 0, prediction=str(int(logits[0].argmax())))
        >>> ax_in.get_title(), ax_out.get_title(), len(ax_in.lines)  # lines: the region and its corner dot
        ('input + sampled region', 'output: 7', 2)
        >>> plt.close("all")
    """
    _require_drawable(record, "plot_record")
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    ax_in, ax_out = axes
    how = _DRAWN_AS[getattr(record, "role", "image")]
    shown = display_of(record, display=display)
    reference = _picture(record, record.input[index])  # one range for both panels
    if how != "field":
        picture_in = shown.apply(reference, where="plot_record")
        picture_out = shown.apply(_picture(record, record.output[index]), reference, where="plot_record")
    if how == "points":
        draw_image(picture_in, ax_in, title="input + sampled points")
        pts = _points(record, index)
        ax_in.scatter(pts[:, 0], pts[:, 1], s=9, c=LATTICE_COLOR, edgecolors="black", linewidths=0.3)
        _fit_view(ax_in, pts[np.isfinite(pts).all(1)] if np.isfinite(pts).any() else np.zeros((1, 2)))
        ax_out.set_axis_off()
        return axes
    if how == "field":
        _draw_field(record.input[index], ax_in, "field + sampled region")
    else:
        draw_image(picture_in, ax_in, title="input + sampled region")
    if box is not None:
        draw_box(box, ax_in, label="annotated")
    draw_lattice(lattice_points(record.grid[index], record.input_size, lattice,
                                align_corners=_record_align_corners(record)), ax_in)
    draw_outline(record.sampled_outline()[index], ax_in)
    out_title = "output" + (f": {prediction}" if prediction else "")
    if how == "field":
        _draw_field(record.output[index], ax_out, "warped field" + (f": {prediction}" if prediction else ""))
    else:
        draw_image(picture_out, ax_out, title=out_title)
    theta = record.theta
    if theta is not None:
        ax_out.text(1.03, 0.5, format_theta(theta[index]), transform=ax_out.transAxes, fontsize=7,
                    family="monospace", va="center")
    return axes


def _records(records, auxiliary: bool) -> list:
    """What plot_batch draws: a record itself (whatever its role: asked for by name), else the
    drawable records of a list, a mapping (a collection's ``records``) or a capture (its latest
    record of each key), in order."""
    if hasattr(records, "input") and hasattr(records, "grid"):
        return [records]
    if hasattr(records, "keys") and hasattr(records, "pick"):  # a capture: the latest of each key
        given = [records.pick(k) for k in records.keys()]
    elif hasattr(records, "values"):
        given = list(records.values())
    else:
        given = list(records)
    roles = _PICKED + (("flow", "auxiliary") if auxiliary else ())
    picked = [r for r in given if getattr(r, "role", "image") in roles and getattr(r, "spatial_dims", 2) == 2]
    if not picked:
        seen = ", ".join(f"{getattr(r, 'key', '?')!r} ({getattr(r, 'role', '?')}, {getattr(r, 'spatial_dims', 2)}-D)"
                         for r in given) or "no records"
        raise ValueError(f"plot_batch found nothing it can draw: it draws 2-D records of roles {list(roles)}"
                         f"{'' if auxiliary else ' (flow and auxiliary with auxiliary=True)'}; got {seen}")
    return picked


def _square_view(ax, pts: np.ndarray, size) -> None:
    """A square view of the input with a grey margin (as in the widgets) and all of ``pts``, so the
    input panel has the output panel's size and no white strips."""
    h, w = size
    pts = pts[np.isfinite(pts).all(1)]
    x0, x1 = min(-0.5 - 0.15 * w, pts[:, 0].min() if len(pts) else 0), max(w - 0.5 + 0.15 * w, pts[:, 0].max() if len(pts) else 0)
    y0, y1 = min(-0.5 - 0.15 * h, pts[:, 1].min() if len(pts) else 0), max(h - 0.5 + 0.15 * h, pts[:, 1].max() if len(pts) else 0)
    side = max(x1 - x0, y1 - y0) * 1.03
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ax.set_xlim(cx - side / 2, cx + side / 2)
    ax.set_ylim(cy + side / 2, cy - side / 2)
    ax.set_facecolor("#48484c")


def plot_batch(records, *, predictions=None, labels=None, n: int = 8, boxes=None, title: str | None = None,
               auxiliary: bool = False, display: Display | None = None):
    """A figure of ``n`` samples of each record, one row each: input + region | output | theta,
    each record drawn as its role says (see :func:`plot_record`: points on the input and no output
    panel for ``"points"``, a field for ``"flow"``).

    ``records``: one record (drawn whatever its role; a ``"lookup"`` or 3-D record is refused by
    name), a list of records, a collection's ``records`` or a whole capture (its latest record of
    each key): of those, the ``"image"`` and ``"points"`` records (and with ``auxiliary=True``
    the ``"flow"`` and ``"auxiliary"`` ones); a ``ValueError`` names what came when none can be
    drawn. With several records each row's input title starts with the record's key.

    The input and output panels have the same size; around the input a grey margin (as in the
    widgets) shows where the sampled region leaves the image.

    ``display`` (a :class:`stnviz.render.Display`): how the pixels are shown (``mean`` / ``std``
    undone, BGR, contrast stretch for dark frames) and the class names of ``predictions`` /
    ``labels``; default: the one remembered on ``records`` (a capture, :func:`set_display`), else
    out-of-range inputs stretched to their own range with a one-time note.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(2))
        >>> logits, rec = collect_batch(model, digits.images)
        >>> fig = plot_batch(rec, predictions=logits.argmax(1), labels=digits.labels)  # the capture's image records
        >>> len(fig.axes), fig.axes[1].get_title()  # a row per image: input | output | theta
        (6, 'output: pred 7 (true 7)')
        >>> plt.close("all")
    """
    import matplotlib.pyplot as plt

    picked = _records(records, auxiliary)
    shown = display_of(records, display=display)
    for r in picked:
        _require_drawable(r, "plot_batch")
    rows = [(r, i) for r in picked for i in range(min(n, r.input.shape[0]))]
    # both panels of a row the same size; the theta text gets the last column
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.8, 2.4 * len(rows)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.9]})
    for (r, i), (ax_in, ax_out, ax_text) in zip(rows, axes):
        pred = None
        if predictions is not None:
            pred = f"pred {shown.name(predictions[i])}" + (f" (true {shown.name(labels[i])})" if labels is not None else "")
        plot_record(r, i, (ax_in, ax_out), prediction=pred, box=None if boxes is None else boxes[i], display=shown)
        ax_text.set_axis_off()
        if len(picked) > 1:
            ax_in.set_title(f"{r.key}\n{ax_in.get_title()}", fontsize=8)
        if r.role == "points":  # no output image: the summary takes the output's place
            _square_view(ax_in, _points(r, i), r.input_size)
            ax_text.remove()
            p = int(np.prod(r.grid.shape[1:-1]))
            ax_out.text(0.05, 0.5, f"{p} points sampled\n({' x '.join(map(str, r.grid.shape[1:-1]))} grid)"
                        + (f"\n{pred}" if pred else ""), transform=ax_out.transAxes, fontsize=8, va="center")
            continue
        _square_view(ax_in, _np(r.sampled_outline()[i]), r.input_size)
        for t in list(ax_out.texts):  # plot_record's theta text moves to its own column
            t.remove()
        theta = r.theta
        if theta is not None:
            ax_text.text(0.0, 0.5, format_theta(theta[i]), transform=ax_text.transAxes, fontsize=7.5,
                         family="monospace", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    # keep a fixed 0.4 inch band for the title: tight_layout alone lets it overlap the first row
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()) if title else None)
    return fig
