"""The raster back end: arrays in, ``(H, W, 3)`` uint8 arrays (or PNG / JPEG bytes) out.

Drawing lines into a small RGB array with Pillow's ``ImageDraw`` and encoding a PNG takes about a
millisecond, where a matplotlib redraw plus ``savefig`` takes tens: the widgets and the animation
frames are drawn here. :func:`region_tile` (and its two panels, :func:`region_panels`) is the
one "input with its sampled region | output" picture every widget and animation shows.

Coordinates are input pixels with pixel centres at integers (``stnviz.geometry``'s convention).
"""

from __future__ import annotations

import io

import numpy as np
import torch

from .. import geometry

__all__ = ["BOX_COLOR", "FRAME_BACKGROUND", "LATTICE_COLOR", "OUTLINE_COLOR", "encode", "lattice_points",
           "overlay_rgb", "overlay_square", "region_panels", "region_tile", "to_display"]

OUTLINE_COLOR = "#ff3b30"
LATTICE_COLOR = "#ffd60a"
BOX_COLOR = "#34c759"
POINT_COLOR, POINT_EDGE, SELECTED_COLOR = "#32d2ff", "#003a4d", "#ff2dd4"  # TPS control points
#: behind and between the tiles of animation frames
FRAME_BACKGROUND = (24, 24, 28)
_MARGIN_GREY = (72, 72, 76)


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # half / bfloat16 records (numpy has no bfloat16)
        return x.cpu().numpy()
    return np.asarray(x)



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



def overlay_rgb(image, outline=None, lattice=None, box=None, *, scale: int = 8, max_side: int = 320,
                margin: float = 0.0, points=None, selected: int | None = None) -> np.ndarray:
    """Upscale ``image`` (nearest) and draw the sampled region on it: ``(H', W', 3)`` uint8.

    ``outline (N, 2)``, ``lattice (M, 2)``, ``box (x1, y1, x2, y2)`` and control ``points (K, 2)``
    (blue dots; the ``selected`` one a pink ring) are in input pixels.
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
    im = Image.new("RGB", (arr.shape[1] + 2 * mx, arr.shape[0] + 2 * my), _MARGIN_GREY)
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
    if points is not None:
        r = max(2.0, s / 2.5)
        for i, p in enumerate(np.asarray(_np(points), dtype=np.float64)):
            if not np.isfinite(p).all():
                continue
            cx, cy = px(p)
            if i == selected:
                R = 2.2 * r
                draw.ellipse([cx - R, cy - R, cx + R, cy + R], outline=SELECTED_COLOR, width=max(2, round(s / 4)))
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=SELECTED_COLOR)
            else:
                draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=POINT_COLOR, outline=POINT_EDGE)
    return np.asarray(im)


def region_panels(image, output, outline=None, lattice=None, box=None, *, scale: int = 8, margin: float = 0.25,
                  size: int | None = None, max_side: int = 320, points=None,
                  selected: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two panels of :func:`region_tile`: the input with its sampled region, and the output,
    each an ``(H, W, 3)`` uint8 array (the widgets show them as two images).

    Args:
        image: the input ``(C, H, W)`` in [0, 1] (tensor or array).
        output: what the transformer made of it, ``(C, H', W')`` in [0, 1].
        outline, lattice, box, points, selected: drawn on the input, in input pixels (see
            :func:`overlay_rgb`).
        scale: magnification (nearest), reduced so a side stays within ``max_side``.
        margin: grey border around the input, a fraction of its size per side.
        size: ``None``: each panel at its magnified size, the input
            ``((H + 2 round(margin H)) s, (W + 2 round(margin W)) s)``, the output ``(H' s', W' s')``.
            An int: both panels ``(size, size)``, each magnified by a whole factor that fits and
            then resized (nearest) to ``size`` (animation frames; ``scale`` is not used).

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> outline = geometry.sampled_outline(theta, "affine", (28, 28))[0]
        >>> a, b = region_panels(torch.zeros(1, 28, 28), torch.zeros(1, 28, 28), outline, scale=4)
        >>> a.shape, b.shape  # input: (28 + 2 * 7) * 4 a side; output: 28 * 4
        ((168, 168, 3), (112, 112, 3))
        >>> [p.shape for p in region_panels(torch.zeros(1, 28, 28), torch.zeros(1, 14, 14), outline, size=64)]
        [(64, 64, 3), (64, 64, 3)]
    """
    marks = dict(outline=outline, lattice=lattice, box=box, points=points, selected=selected)
    if size is None:
        return (overlay_rgb(image, **marks, scale=scale, margin=margin, max_side=max_side),
                overlay_rgb(output, scale=scale, max_side=max_side))
    return (overlay_square(image, size, **marks, margin=margin, max_side=max_side),
            overlay_square(output, size, max_side=max_side))


def overlay_square(image, size: int, outline=None, lattice=None, box=None, *, margin: float = 0.0,
                   max_side: int = 320, points=None, selected: int | None = None) -> np.ndarray:
    """:func:`overlay_rgb` at a fixed size, ``(size, size, 3)`` uint8: magnified by the largest
    whole factor that fits (at least 1), then resized (nearest) to ``size``, so lines drawn at
    one magnification stay crisp. For animation frames and contact sheets.

    Example:
        >>> overlay_square(torch.zeros(1, 28, 28), 64, margin=0.15).shape  # 2x (36 pixels a side), then resized
        (64, 64, 3)
    """
    from PIL import Image

    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a whole number of pixels >= 1, got {size!r}")
    s = max(1, int(size // (max(image.shape[-2:]) * (1 + 2 * margin))))
    rgb = overlay_rgb(image, outline, lattice, box, scale=s, margin=margin, max_side=max_side, points=points,
                      selected=selected)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))


def region_tile(image, output, outline=None, lattice=None, box=None, *, scale: int = 8, margin: float = 0.25,
                size: int | None = None, max_side: int = 320, points=None, selected: int | None = None,
                gap: int = 4, background=FRAME_BACKGROUND) -> np.ndarray:
    """"Input with its sampled region | output", side by side: an ``(H, W, 3)`` uint8 array.

    The panels are :func:`region_panels` (same arguments), top-aligned, ``gap`` pixels apart on
    ``background``; ``H`` is the taller panel's height and ``W`` the two widths plus ``gap``.

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> image = torch.rand(1, 28, 28)
        >>> outline = geometry.sampled_outline(theta, "affine", (28, 28))[0]
        >>> output = geometry.warp(image[None], geometry.affine_grid(theta, (28, 28)))[0]
        >>> tile = region_tile(image, output, outline, size=64)  # two 64 x 64 panels, 4 pixels apart
        >>> tile.shape, tile.dtype
        ((64, 132, 3), dtype('uint8'))
        >>> bool((tile[:, :64] == (255, 59, 48)).all(-1).any()), bool((tile[:, 64:68] == FRAME_BACKGROUND).all())
        (True, True)
    """
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be a whole number of pixels >= 0, got {gap!r}")
    a, b = region_panels(image, output, outline, lattice, box, scale=scale, margin=margin, size=size,
                         max_side=max_side, points=points, selected=selected)
    tile = np.empty((max(a.shape[0], b.shape[0]), a.shape[1] + gap + b.shape[1], 3), np.uint8)
    tile[:] = np.asarray(background, dtype=np.uint8)
    tile[:a.shape[0], :a.shape[1]] = a
    tile[:b.shape[0], a.shape[1] + gap:] = b
    return tile


def encode(rgb: np.ndarray, fmt: str = "png", *, compress_level: int = 1, quality: int = 92) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 (or ``(H, W)`` float in [0, 1]) array as ``"png"`` bytes
    (lossless; fast for flat, grey pictures) or ``"jpeg"`` (about 20x faster than PNG for a colour
    photo of a few hundred pixels a side).

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

