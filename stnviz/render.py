"""Pure drawing: arrays in, matplotlib Axes (or RGB arrays) out. Never sees an ``nn.Module`` or
widget state.

Two back ends, same pictures:

* matplotlib (``draw_*``, :func:`plot_record`, :func:`plot_batch`) for figures in notebooks and
  files; every function draws into the caller's ``ax`` when given and returns it.
* a raster one (:func:`overlay_rgb`, :func:`to_png`) for widgets: drawing lines into a small RGB
  array with Pillow's ``ImageDraw`` and encoding a PNG takes about a millisecond, where a
  matplotlib redraw plus ``savefig`` takes tens. That is why the widgets do not use matplotlib.

Coordinates are input pixels with pixel centres at integers (``stnviz.geometry``'s convention).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from . import geometry

__all__ = [
    "OUTLINE_COLOR",
    "BOX_COLOR",
    "draw_box",
    "draw_image",
    "draw_lattice",
    "draw_outline",
    "encode",
    "format_theta",
    "lattice_points",
    "overlay_rgb",
    "plot_batch",
    "plot_canonical_means",
    "plot_change_curves",
    "plot_record",
    "plot_stability_summary",
    "plot_theta_components",
    "to_display",
    "to_png",
]

OUTLINE_COLOR = "#ff3b30"
LATTICE_COLOR = "#ffd60a"
BOX_COLOR = "#34c759"


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # half / bfloat16 records (numpy has no bfloat16)
        return x.cpu().numpy()
    return np.asarray(x)


def _require_2d(record) -> None:
    """A clear error for records of 3-D (volume) samplers, which these 2-D drawings can't show."""
    if getattr(record, "spatial_dims", 2) != 2:
        raise ValueError(f"stnviz.render draws 2-D samplers only; record {getattr(record, 'key', '?')!r} is a 3-D "
                         f"(volume) sampling with input shape {tuple(record.input.shape)}")


def _record_align_corners(record) -> bool:
    return bool(getattr(record, "sampling", {}).get("align_corners", geometry.ALIGN_CORNERS))


def to_display(image) -> np.ndarray:
    """An image ``(C, H, W)`` tensor or array in ``[0, 1]`` -> ``(H, W)`` (grey) or ``(H, W, 3)``.

    Feature maps with other channel counts show their mean over channels, rescaled to [0, 1].

    Example:
        >>> to_display(torch.zeros(1, 28, 28)).shape, to_display(torch.zeros(3, 32, 32)).shape  # grey, RGB
        ((28, 28), (32, 32, 3))
        >>> feature_map = to_display(torch.arange(256.0).view(16, 4, 4))  # 16 channels: their mean
        >>> feature_map.shape, float(feature_map.min()), float(feature_map.max())
        ((4, 4), 0.0, 1.0)
    """
    arr = _np(image).astype(np.float32)
    if arr.ndim == 2:
        return np.clip(arr, 0, 1)
    if arr.ndim != 3:
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {arr.shape}")
    if arr.shape[0] == 1:
        return np.clip(arr[0], 0, 1)
    if arr.shape[0] == 3:
        return np.clip(arr.transpose(1, 2, 0), 0, 1)
    m = arr.mean(0)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


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


def lattice_points(grid, input_size, n: int = 8, *, align_corners: bool = geometry.ALIGN_CORNERS) -> np.ndarray:
    """A sparse ``n x n`` subset of a sampling grid ``(H, W, 2)`` (normalised with
    ``align_corners``, as the sampler got it) in input pixels, ``(n * n, 2)``: the sample points
    the overlay marks.

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> pts = lattice_points(geometry.affine_grid(theta, (28, 28))[0], (28, 28), n=3)
        >>> pts.shape, pts[[0, -1]].round(2).tolist()  # the first and last of the 3 x 3, input pixels
        ((9, 2), [[6.75, 6.75], [20.25, 20.25]])
    """
    g = _np(grid)
    if g.ndim != 3 or g.shape[-1] != 2:
        raise ValueError(f"grid must be (H, W, 2), got shape {g.shape}")
    h, w = g.shape[:2]
    ys = np.unique(np.linspace(0, h - 1, min(n, h)).round().astype(int))
    xs = np.unique(np.linspace(0, w - 1, min(n, w)).round().astype(int))
    pts = torch.from_numpy(np.ascontiguousarray(g[np.ix_(ys, xs)].reshape(-1, 2), dtype=np.float64))
    return geometry.grid_to_pixels(pts, input_size, align_corners=align_corners).numpy()


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


def format_theta(theta, decomposed: bool = True) -> str:
    """Theta ``(2, 3)`` as text: the raw matrix and, if asked, rotation / scale / shear / translation.

    Example:
        >>> print(format_theta(torch.tensor([[0.0, -0.5, 0.1], [0.5, 0.0, 0.0]])))
        [+0.000 -0.500 +0.100]
        [+0.500 +0.000 +0.000]
        rot +90.0 deg  scale 0.500 x 0.500
        shear +0.000  t (+0.100, +0.000)
        >>> print(format_theta(torch.zeros(2, 3), decomposed=False))
        [+0.000 +0.000 +0.000]
        [+0.000 +0.000 +0.000]
    """
    t = _np(theta).reshape(2, 3).astype(np.float64)
    lines = [
        f"[{t[0, 0]:+.3f} {t[0, 1]:+.3f} {t[0, 2]:+.3f}]",
        f"[{t[1, 0]:+.3f} {t[1, 1]:+.3f} {t[1, 2]:+.3f}]",
    ]
    if decomposed:
        p = geometry.decompose_affine(torch.from_numpy(t).view(1, 2, 3), singular="nan")
        if not math.isfinite(float(p.scale_x[0])):
            lines.append("singular: no decomposition")
        else:
            lines.append(f"rot {math.degrees(float(p.rotation[0])):+.1f} deg  "
                         f"scale {float(p.scale_x[0]):.3f} x {float(p.scale_y[0]):.3f}")
            lines.append(f"shear {float(p.shear[0]):+.3f}  t ({t[0, 2]:+.3f}, {t[1, 2]:+.3f})")
    return "\n".join(lines)


def plot_record(record, index: int = 0, axes=None, *, prediction: str | None = None, box=None, lattice: int = 8):
    """Input with the sampled region (outline + lattice) | output, for sample ``index`` of a
    capture record (anything with ``input``, ``output``, ``grid`` and ``sampled_outline()``).

    ``box``: an annotated box in input pixel-edge coordinates, drawn beside the region.
    Returns the two axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> logits, rec = stnviz.capture.collect_batch(model, stnviz.data.sample("mnist").get(torch.arange(2)).images)
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
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> digits = stnviz.data.sample("mnist").get(torch.arange(2))
        >>> logits, rec = stnviz.capture.collect_batch(model, digits.images)
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


# --------------------------------------------------------------------------- raster back end


def overlay_rgb(image, outline=None, lattice=None, box=None, *, scale: int = 8, max_side: int = 320,
                margin: float = 0.0) -> np.ndarray:
    """Upscale ``image`` (nearest) and draw the sampled region on it: ``(H', W', 3)`` uint8.

    ``outline (N, 2)``, ``lattice (M, 2)`` and ``box (x1, y1, x2, y2)`` are in input pixels.
    The scale is reduced so the longer side stays within ``max_side``. ``margin`` (a fraction of
    the image size on each side, grey) leaves room to see a region reaching outside the image.

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> outline = geometry.sampled_outline(theta, "affine", (28, 28))[0]
        >>> rgb = overlay_rgb(torch.zeros(1, 28, 28), outline, scale=4, margin=0.25)
        >>> rgb.shape, rgb.dtype  # (28 + 2 * 7) * 4 pixels a side
        ((168, 168, 3), dtype('uint8'))
        >>> bool((rgb == (255, 59, 48)).all(-1).any())  # the region in OUTLINE_COLOR
        True
    """
    from PIL import Image, ImageDraw

    disp = to_display(image)
    rgb = np.repeat(disp[..., None], 3, axis=2) if disp.ndim == 2 else disp
    h, w = rgb.shape[:2]
    s = max(1, min(scale, max_side // max(h, w)))
    arr = (rgb * 255 + 0.5).astype(np.uint8)
    if s > 1:
        arr = arr.repeat(s, 0).repeat(s, 1)
    mx, my = int(round(margin * w)) * s, int(round(margin * h)) * s
    im = Image.new("RGB", (arr.shape[1] + 2 * mx, arr.shape[0] + 2 * my), (72, 72, 76))
    im.paste(Image.fromarray(arr), (mx, my))
    draw = ImageDraw.Draw(im)
    # at least 2 canvas pixels once the image is magnified, so outlines stay visible in small
    # tiles (animation frames, GIFs) and after a nearest-neighbour resize
    line = max(2 if s >= 2 else 1, round(s / 3))

    def px(p):  # pixel-centre coordinates -> upscaled canvas coordinates
        return ((float(p[0]) + 0.5) * s + mx, (float(p[1]) + 0.5) * s + my)

    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in _np(box))
        draw.rectangle([px((x1, y1)), px((x2, y2))], outline=BOX_COLOR, width=line)
    if lattice is not None:
        r = max(1.0, s / 6)
        for p in _np(lattice):
            if np.isfinite(p).all():
                cx, cy = px(p)
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=LATTICE_COLOR)
    if outline is not None:
        pts = _np(outline)
        if np.isfinite(pts).all():
            poly = [px(p) for p in pts] + [px(pts[0])]
            draw.line(poly, fill=OUTLINE_COLOR, width=line)
            cx, cy = poly[0]
            r = max(2.0, s / 3)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=OUTLINE_COLOR)
    return np.asarray(im)


def to_png(rgb: np.ndarray, *, compress_level: int = 1) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 (or ``(H, W)`` float in [0, 1]) array as PNG bytes.

    Example:
        >>> png = to_png(np.zeros((8, 8), np.float32))
        >>> png[1:4], len(png) < 100
        (b'PNG', True)
    """
    return encode(rgb, "png", compress_level=compress_level)


def encode(rgb: np.ndarray, fmt: str = "png", *, compress_level: int = 1, quality: int = 92) -> bytes:
    """Encode an image array as ``"png"`` (lossless; fast for flat, grey pictures) or ``"jpeg"``
    (about 20x faster than PNG for a colour photo of a few hundred pixels a side).

    Example:
        >>> rgb = np.zeros((16, 16, 3), np.uint8)
        >>> encode(rgb, "png")[1:4], encode(rgb, "jpeg")[6:10]  # the files' signatures
        (b'PNG', b'JFIF')
    """
    from PIL import Image

    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    elif fmt == "jpeg":
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"fmt must be 'png' or 'jpeg', got {fmt!r}")
    return buf.getvalue()


# --------------------------------------------------------------------------- sequence plots
# These take the per-frame / per-track tables of stnviz.analysis (anything with those columns).


def _split_axes(ax, n: int, figsize=(6.0, 5.0)):
    """``n`` stacked axes sharing x: new ones (``ax=None``), the caller's sequence of ``n``, or the
    area of one caller's subplot divided into ``n``."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(n, 1, figsize=figsize, sharex=True, layout="constrained")
        return list(axes)
    if isinstance(ax, (list, tuple, np.ndarray)):
        if len(ax) != n:
            raise ValueError(f"expected {n} axes, got {len(ax)}")
        return list(ax)
    fig = ax.figure
    spec = ax.get_subplotspec().subgridspec(n, 1, hspace=0.12)
    ax.remove()
    axes = [fig.add_subplot(spec[0])]
    axes += [fig.add_subplot(spec[i], sharex=axes[0]) for i in range(1, n)]
    return axes


def _legend_outside(ax, fontsize: float = 7) -> None:
    """Legend to the right of the axes: it never covers a line."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fontsize, frameon=False, borderaxespad=0.0,
              handlelength=1.6)


def plot_theta_components(table, ax=None, *, frame: int | None = None):
    """The learned transform against frame, one panel per kind, each with its own range:
    rotation (degrees), scale (x, y) and translation (x, y, normalised).

    ``ax``: one subplot (its area is split into the panels), a sequence of three axes, or ``None``
    (a new figure). ``frame``: a vertical marker at that frame. Returns the three axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> table = {"frame": [0, 1, 2], "rotation_deg": [5.0, 4.0, 6.0], "scale_x": [0.8, 0.8, 0.9],
        ...          "scale_y": [0.8, 0.9, 0.9], "tx": [0.0, 0.1, 0.1], "ty": [0.0, 0.0, 0.1]}  # run_sequence's
        >>> axes = plot_theta_components(table, frame=1)
        >>> [a.get_ylabel() for a in axes], [len(a.lines) for a in axes]  # curves + the frame marker
        (['rotation (deg)', 'scale', 'translation'], [2, 3, 3])
        >>> plt.close("all")
    """
    panels = [("rotation (deg)", [("rotation_deg", "rotation", "k")]),
              ("scale", [("scale_x", "scale x", "#0a84ff"), ("scale_y", "scale y", "#ff9f0a")]),
              ("translation", [("tx", "tx", "#30b0c7"), ("ty", "ty", "#af52de")])]
    axes = _split_axes(ax, len(panels))
    frames = np.asarray(table["frame"])
    for a, (ylabel, cols) in zip(axes, panels):
        drawn = False
        for col, label, colour in cols:
            if col in table:
                a.plot(frames, np.asarray(table[col], dtype=float), label=label, color=colour, linewidth=1.5)
                drawn = True
        if ylabel.startswith("rotation") and drawn:  # at least +-5 deg, so noise does not look like motion
            rot = np.asarray(table["rotation_deg"], dtype=float)
            if np.isfinite(rot).any():
                mid = float(np.nanmean(rot))
                half = max(5.0, float(np.nanmax(np.abs(rot - mid))) * 1.2)
                a.set_ylim(mid - half, mid + half)
        elif drawn:
            lo, hi = a.get_ylim()
            if hi - lo < 0.1:  # at least 0.1 wide, for the same reason
                c = (lo + hi) / 2
                a.set_ylim(c - 0.05, c + 0.05)
        a.set_ylabel(ylabel, fontsize=8)
        a.tick_params(labelsize=7)
        a.grid(alpha=0.3, linewidth=0.5)
        if drawn:
            _legend_outside(a)
        if frame is not None:
            a.axvline(frame, color=OUTLINE_COLOR, linewidth=1.0, alpha=0.8)
    for a in axes[:-1]:
        a.tick_params(labelbottom=False)
    axes[-1].set_xlabel("frame", fontsize=8)
    axes[0].set_title("learned transform per frame", fontsize=9)
    return axes


def plot_change_curves(table, ax=None, *, frame: int | None = None):
    """Frame-to-frame change of the transformer's output against the identity (resized input)
    and, if present, a fixed mean transform. Legend outside; ``frame``: a vertical marker.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> table = {"frame": [0, 1, 2], "output_change": [float("nan"), 0.02, 0.03],  # run_sequence's
        ...          "input_change": [float("nan"), 0.08, 0.06]}
        >>> ax = plot_change_curves(table, frame=1)
        >>> ax.lines[0].get_label(), len(ax.lines)  # output, identity, the frame marker
        ('ST output', 3)
        >>> plt.close("all")
    """
    ax = _axes(ax)
    frames = np.asarray(table["frame"])
    ax.plot(frames, np.asarray(table["output_change"]), label="ST output", color=OUTLINE_COLOR, linewidth=1.5)
    ax.plot(frames, np.asarray(table["input_change"]), label="identity\n(input resized)", color="0.4", linewidth=1.5)
    if "fixed_change" in table:
        ax.plot(frames, np.asarray(table["fixed_change"]), label="fixed mean\ntransform", color="#0a84ff",
                linewidth=1.2, linestyle="--")
    if frame is not None:
        ax.axvline(frame, color=OUTLINE_COLOR, linewidth=1.0, alpha=0.8)
    ax.set_xlabel("frame", fontsize=8)
    ax.set_ylabel("mean |change| from\nthe previous frame", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, linewidth=0.5)
    _legend_outside(ax)
    ax.set_title("frame-to-frame change", fontsize=9)
    return ax


def plot_stability_summary(summary, ax=None, title: str | None = None):
    """Per-track mean change: the ST output (y) against the identity (x) and, if the summary has
    it, against one fixed transform per track (x). Points under the diagonal are tracks the
    transformer steadied. The legend sits below the axes.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> summary = {"input_change": [0.10, 0.08, 0.05], "output_change": [0.04, 0.09, 0.02]}  # per track
        >>> plot_stability_summary(summary).get_title()
        '3 tracks, 67% steadier than identity'
        >>> plt.close("all")
    """
    ax = _axes(ax)
    x, y = np.asarray(summary["input_change"]), np.asarray(summary["output_change"])
    ax.scatter(x, y, s=14, color=OUTLINE_COLOR, alpha=0.8, label="against identity")
    allv = [x, y]
    if "fixed_change" in summary:
        xf = np.asarray(summary["fixed_change"])
        ax.scatter(xf, y, s=14, color="#0a84ff", marker="x", alpha=0.8, label="against fixed mean transform")
        allv.append(xf)
        # below the axes: never over a point
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    hi = float(np.nanmax(np.concatenate(allv))) * 1.05 if len(x) else 1.0
    ax.plot([0, hi], [0, hi], color="0.5", linestyle="--", linewidth=1)
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("baseline: mean change per frame")
    ax.set_ylabel("ST: mean change of the output")
    steadier = float(np.mean(y < x)) if len(x) else float("nan")
    default = f"{len(x)} tracks, {steadier:.0%} steadier than identity"
    if "fixed_change" in summary and len(x):
        default += f",\n{float(np.mean(y < np.asarray(summary['fixed_change']))):.0%} than a fixed transform"
    ax.set_title(title or default, fontsize=9)
    return ax


def _stretch(image, low: float = 1.0, high: float = 99.0):
    """Contrast stretch: the ``low`` / ``high`` percentiles (over all channels) to 0 / 1."""
    arr = _np(image).astype(np.float32)
    lo, hi = np.percentile(arr, [low, high])
    return np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else arr


def plot_canonical_means(means: dict, class_names=None, max_classes: int = 12, *, stretch: bool = False):
    """Two rows: the mean input and the mean transformer output of each class
    (from ``stnviz.analysis.canonical_means``). ``class_names``: a sequence or dict, class -> name.
    ``stretch``: stretch each mean's contrast (1st-99th percentile to black-white), for dark
    classes; say so in the caption.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> blank, ink = torch.zeros(1, 28, 28), torch.ones(1, 28, 28)
        >>> means = {0: (blank, ink), 1: (ink, blank)}  # class -> (mean input, mean output)
        >>> fig = plot_canonical_means(means, class_names=["zero", "one"])  # analysis.canonical_means's
        >>> len(fig.axes), fig.axes[0].get_title(), fig.axes[0].get_ylabel()
        (4, 'zero', 'mean input')
        >>> plt.close("all")
    """
    import textwrap

    import matplotlib.pyplot as plt

    keys = sorted(means)[:max_classes]
    fig, axes = plt.subplots(2, len(keys), figsize=(1.25 * len(keys) + 0.9, 3.2), squeeze=False)
    for j, k in enumerate(keys):
        mean_in, mean_out = means[k]
        if stretch:
            mean_in, mean_out = _stretch(mean_in), _stretch(mean_out)
        name = str(class_names[k]) if class_names is not None else str(k)
        draw_image(mean_in, axes[0, j])
        axes[0, j].set_title("\n".join(textwrap.wrap(name, 14)[:3]), fontsize=7)
        draw_image(mean_out, axes[1, j])
    axes[0, 0].set_ylabel("mean input", fontsize=8)
    axes[1, 0].set_ylabel("mean output", fontsize=8)
    fig.tight_layout()
    return fig
