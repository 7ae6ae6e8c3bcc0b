"""The matplotlib back end: arrays or capture records in, Axes (or a Figure) out. Every function
draws into the caller's ``ax`` when given and returns it.

Coordinates are input pixels with pixel centres at integers (``stnviz.geometry``'s convention).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import geometry
from .raster import BOX_COLOR, LATTICE_COLOR, OUTLINE_COLOR, _np, lattice_points, to_display

__all__ = ["draw_box", "draw_image", "draw_lattice", "draw_outline", "format_theta", "plot_batch", "plot_record"]


def _require_2d(record) -> None:
    """A clear error for records of 3-D (volume) samplers, which these 2-D drawings can't show."""
    if getattr(record, "spatial_dims", 2) != 2:
        raise ValueError(f"stnviz.render draws 2-D samplers only; record {getattr(record, 'key', '?')!r} is a 3-D "
                         f"(volume) sampling with input shape {tuple(record.input.shape)}")


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


def plot_record(record, index: int = 0, axes=None, *, prediction: str | None = None, box=None, lattice: int = 8):
    """Input with the sampled region (outline + lattice) | output, for sample ``index`` of a
    capture record (anything with ``input``, ``output``, ``grid`` and ``sampled_outline()``).

    ``box``: an annotated box in input pixel-edge coordinates, drawn beside the region.
    Returns the two axes.

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
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    _require_2d(record)
    ax_in, ax_out = axes
    draw_image(record.input[index], ax_in, title="input + sampled region")
    if box is not None:
        draw_box(box, ax_in, label="annotated")
    draw_lattice(lattice_points(record.grid[index], record.input_size, lattice,
                                align_corners=_record_align_corners(record)), ax_in)
    draw_outline(record.sampled_outline()[index], ax_in)
    draw_image(record.output[index], ax_out, title="output" + (f": {prediction}" if prediction else ""))
    theta = record.theta
    if theta is not None:
        ax_out.text(1.03, 0.5, format_theta(theta[index]), transform=ax_out.transAxes, fontsize=7,
                    family="monospace", va="center")
    return axes


def plot_batch(record, *, predictions=None, labels=None, n: int = 8, boxes=None, title: str | None = None):
    """A figure of ``n`` samples of a record: input + region | output | theta, one row each.

    The input and output panels have the same size; around the input a grey margin (as in the
    widgets) shows where the sampled region leaves the image.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(2))
        >>> logits, rec = collect_batch(model, digits.images)
        >>> fig = plot_batch(rec.pick(), predictions=logits.argmax(1), labels=digits.labels)
        >>> len(fig.axes), fig.axes[1].get_title()  # a row per image: input | output | theta
        (6, 'output: pred 7 (true 7)')
        >>> plt.close("all")
    """
    import matplotlib.pyplot as plt

    n = min(n, record.input.shape[0])
    # both panels of a row the same size; the theta text gets the last column
    fig, axes = plt.subplots(n, 3, figsize=(7.8, 2.4 * n), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 0.9]})
    h, w = record.input_size
    for i in range(n):
        pred = None
        if predictions is not None:
            pred = f"pred {int(predictions[i])}" + (f" (true {int(labels[i])})" if labels is not None else "")
        ax_in, ax_out, ax_text = axes[i]
        plot_record(record, i, (ax_in, ax_out), prediction=pred, box=None if boxes is None else boxes[i])
        # The input panel: the image with a grey margin (as in the widgets) and the whole region,
        # in a square view, so it has the output panel's size and no white strips.
        pts = _np(record.sampled_outline()[i])
        pts = pts[np.isfinite(pts).all(1)]
        x0, x1 = min(-0.5 - 0.15 * w, pts[:, 0].min() if len(pts) else 0), max(w - 0.5 + 0.15 * w, pts[:, 0].max() if len(pts) else 0)
        y0, y1 = min(-0.5 - 0.15 * h, pts[:, 1].min() if len(pts) else 0), max(h - 0.5 + 0.15 * h, pts[:, 1].max() if len(pts) else 0)
        side = max(x1 - x0, y1 - y0) * 1.03
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ax_in.set_xlim(cx - side / 2, cx + side / 2)
        ax_in.set_ylim(cy + side / 2, cy - side / 2)
        ax_in.set_facecolor("#48484c")
        for t in list(ax_out.texts):  # plot_record's theta text moves to its own column
            t.remove()
        ax_text.set_axis_off()
        theta = record.theta
        if theta is not None:
            ax_text.text(0.0, 0.5, format_theta(theta[i]), transform=ax_text.transAxes, fontsize=7.5,
                         family="monospace", va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    # keep a fixed 0.4 inch band for the title: tight_layout alone lets it overlap the first row
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()) if title else None)
    return fig
