"""Plots of a sequence or a set of tracks: they take the per-frame / per-track tables of
:mod:`stnviz.analysis` (anything with those columns) and draw into the caller's axes."""

from __future__ import annotations

import numpy as np

from .display import class_name, stretch_contrast
from .figures import _axes, draw_image
from .raster import OUTLINE_COLOR, _np

__all__ = ["plot_canonical_means", "plot_change_curves", "plot_stability_summary", "plot_theta_components"]


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
              ("translation", [("tx", "translation x", "#30b0c7"), ("ty", "translation y", "#af52de")])]
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


def plot_canonical_means(means: dict, class_names=None, max_classes: int = 12, *, stretch: bool = False):
    """Two rows: the mean input and the mean transformer output of each class
    (from ``stnviz.analysis.canonical_means``). ``class_names``: a sequence or dict, class -> name.
    ``stretch``: stretch each mean's contrast (1st-99th percentile to black-white), for dark
    classes; say so in the caption.

    Example:
        >>> import matplotlib; matplotlib.use("Agg")
        >>> import matplotlib.pyplot as plt
        >>> import torch
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
            mean_in, mean_out = stretch_contrast(_np(mean_in)), stretch_contrast(_np(mean_out))
        name = class_name(k, class_names)
        draw_image(mean_in, axes[0, j])
        axes[0, j].set_title("\n".join(textwrap.wrap(name, 14)[:3]), fontsize=7)
        draw_image(mean_out, axes[1, j])
    axes[0, 0].set_ylabel("mean input", fontsize=8)
    axes[1, 0].set_ylabel("mean output", fontsize=8)
    fig.tight_layout()
    return fig
