"""Procedurally drawn images: asymmetric glyphs whose orientation is obvious at a glance.

Made with tensor ops on a coordinate grid, so they need no files, no fonts and no download; an
``F`` or an arrow shows at once whether a transform rotated, mirrored, sheared or zoomed.
"""

from __future__ import annotations

import torch

from .. import geometry

__all__ = ["GLYPHS", "draw_glyphs"]

GLYPHS = ("F", "arrow", "L", "notched_ring", "checker")


def _coords(h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres in [-1, 1] (align_corners=False), each ``(H, W)``: ``(y, x)``."""
    grid = geometry.pixel_centres((h, w), device=device, dtype=torch.float32)
    return grid[..., 1], grid[..., 0]


def _box(x, y, x0, x1, y0, y1, soft):
    """Soft-edged rectangle mask (anti-aliased over ``soft`` normalised units)."""
    fx = torch.clamp((x - x0) / soft + 0.5, 0, 1) * torch.clamp((x1 - x) / soft + 0.5, 0, 1)
    fy = torch.clamp((y - y0) / soft + 0.5, 0, 1) * torch.clamp((y1 - y) / soft + 0.5, 0, 1)
    return fx * fy


def _glyph(name: str, x: torch.Tensor, y: torch.Tensor, soft: float) -> torch.Tensor:
    if name == "F":
        m = _box(x, y, -0.45, -0.2, -0.6, 0.6, soft)
        m = torch.maximum(m, _box(x, y, -0.45, 0.45, -0.6, -0.38, soft))
        return torch.maximum(m, _box(x, y, -0.45, 0.25, -0.1, 0.12, soft))
    if name == "L":
        m = _box(x, y, -0.4, -0.15, -0.6, 0.6, soft)
        return torch.maximum(m, _box(x, y, -0.4, 0.45, 0.38, 0.6, soft))
    if name == "arrow":
        shaft = _box(x, y, -0.6, 0.15, -0.1, 0.1, soft)
        head = torch.clamp(((0.6 - x) - 1.6 * y.abs()) / soft + 0.5, 0, 1) * torch.clamp((x - 0.1) / soft + 0.5, 0, 1)
        return torch.maximum(shaft, head)
    if name == "notched_ring":
        r = torch.sqrt(x * x + y * y)
        ring = torch.clamp((0.6 - r) / soft + 0.5, 0, 1) * torch.clamp((r - 0.38) / soft + 0.5, 0, 1)
        notch = _box(x, y, 0.2, 1.0, -0.12, 0.12, soft)
        return ring * (1 - notch)
    if name == "checker":
        inside = _box(x, y, -0.6, 0.6, -0.6, 0.6, soft)
        cells = ((torch.floor((x + 0.6) / 0.3) + torch.floor((y + 0.6) / 0.3)) % 2 == 0).float()
        marker = _box(x, y, -0.3, 0.0, -0.6, -0.3, soft)  # one dim cell lit: breaks the symmetry
        return torch.maximum(inside * (0.35 + 0.65 * cells), marker)
    raise ValueError(f"glyph must be one of {GLYPHS}, got {name!r}")


def draw_glyphs(n: int | None = None, size=(28, 28), *, channels: int = 1, glyphs=GLYPHS, device=None) -> torch.Tensor:
    """Draw ``n`` glyphs (default: one of each) as images ``(n, channels, H, W)`` in ``[0, 1]``.

    Glyph ``i`` is ``glyphs[i % len(glyphs)]``; colour images give each glyph its own tint on a
    dark background. Deterministic: the same arguments always give the same pixels.

    Example:
        >>> glyphs = draw_glyphs()  # one of each: F, arrow, L, notched ring, checker
        >>> tuple(glyphs.shape), bool(glyphs.min() >= 0 and glyphs.max() <= 1)
        ((5, 1, 28, 28), True)
        >>> torch.equal(glyphs[0], glyphs[0].flip(-1))  # an F is not its mirror image
        False
        >>> tuple(draw_glyphs(2, (32, 32), channels=3).shape)
        (2, 3, 32, 32)
    """
    glyphs = tuple(glyphs)
    n = len(glyphs) if n is None else int(n)
    if n <= 0:
        raise ValueError(f"n must be a positive number of images, got {n}")
    h, w = (int(s) for s in size)
    if h < 4 or w < 4:
        raise ValueError(f"size must be at least (4, 4), got {tuple(size)}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    y, x = _coords(h, w, device)
    soft = 2.0 / min(h, w)
    masks = torch.stack([_glyph(glyphs[i % len(glyphs)], x, y, soft) for i in range(n)])  # (n, H, W)
    if channels == 1:
        return masks.unsqueeze(1)
    hues = torch.tensor([[1.0, 0.85, 0.2], [0.3, 0.8, 1.0], [1.0, 0.35, 0.35], [0.5, 1.0, 0.5], [0.9, 0.6, 1.0]], device=device)
    tint = hues[torch.arange(n, device=device) % len(hues)]  # (n, 3)
    tint = torch.cat([tint, tint.new_ones(n, max(0, channels - 3))], 1)[:, :channels]
    return (masks.unsqueeze(1) * tint.view(n, channels, 1, 1) + 0.08).clamp(0, 1)
