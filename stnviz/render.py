"""Pure drawing: arrays in, matplotlib Axes out. Never sees an ``nn.Module`` or widget state.

Every function draws into the caller's ``ax`` when given (else a new one) and returns it, so a
figure can be built once and updated.
"""

from __future__ import annotations

import numpy as np

__all__ = ["draw_image", "draw_outline", "to_display"]


def to_display(image) -> np.ndarray:
    """An image ``(C, H, W)`` tensor or array in ``[0, 1]`` -> ``(H, W)`` (grey) or ``(H, W, 3)``."""
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 2:
        return np.clip(arr, 0, 1)
    if arr.ndim != 3:
        raise ValueError(f"image must be (C, H, W) or (H, W), got shape {arr.shape}")
    if arr.shape[0] == 1:
        return np.clip(arr[0], 0, 1)
    if arr.shape[0] >= 3:
        return np.clip(arr[:3].transpose(1, 2, 0), 0, 1)
    raise ValueError(f"image must have 1 or >= 3 channels, got {arr.shape[0]}")


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def draw_image(image, ax=None, title: str | None = None):
    """Show ``image`` (see :func:`to_display`) with pixel centres at integer coordinates."""
    ax = _axes(ax)
    disp = to_display(image)
    ax.imshow(disp, cmap="gray" if disp.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def draw_outline(outline, ax=None, color: str = "#ff3b30", linewidth: float = 1.5, corner_marker: bool = True,
                 fit: bool = True):
    """Draw a closed polygon ``(N, 2)`` of ``(x, y)`` pixel points (e.g. ``geometry.sampled_outline``).

    The first point (the output's top-left corner) gets a dot, so flips and rotations show.
    ``fit=True`` widens the view to show the whole region when it reaches outside the image;
    ``False`` keeps the current view.
    """
    ax = _axes(ax)
    pts = outline.detach().cpu().numpy() if hasattr(outline, "detach") else np.asarray(outline)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"outline must be (N, 2) with N >= 2, got shape {pts.shape}")
    closed = np.vstack([pts, pts[:1]])
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.plot(closed[:, 0], closed[:, 1], color=color, linewidth=linewidth)
    if corner_marker:
        ax.plot(pts[0, 0], pts[0, 1], "o", color=color, markersize=4)
    if fit:
        pad = 0.03 * max(abs(xlim[1] - xlim[0]), abs(ylim[1] - ylim[0]))
        x0, x1 = min(xlim), max(xlim)
        y0, y1 = min(ylim), max(ylim)
        x0, x1 = min(x0, pts[:, 0].min() - pad), max(x1, pts[:, 0].max() + pad)
        y0, y1 = min(y0, pts[:, 1].min() - pad), max(y1, pts[:, 1].max() + pad)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0) if ylim[0] > ylim[1] else ax.set_ylim(y0, y1)
    else:
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
    return ax
