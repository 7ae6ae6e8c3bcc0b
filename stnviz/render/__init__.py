"""Pure drawing: arrays in, matplotlib Axes (or RGB arrays) out. Never sees an ``nn.Module`` or
widget state.

Two back ends, same pictures:

* matplotlib (:mod:`stnviz.render.figures`: ``draw_*``, :func:`plot_record`, :func:`plot_batch`;
  :mod:`stnviz.render.sequences`: the plots of tracks and sequences) for figures in notebooks and
  files; every function draws into the caller's ``ax`` when given and returns it.
* one display pipeline (:mod:`stnviz.render.display`: :class:`Display`, :func:`set_display`)
  that every picture goes through: normalisation undone, channel order, contrast, class names.
* a raster one (:mod:`stnviz.render.raster`: :func:`overlay_rgb`, :func:`region_tile`,
  :func:`encode`) for widgets and animation frames: drawing lines into a small RGB array with
  Pillow's ``ImageDraw`` and encoding a PNG takes about a millisecond, where a matplotlib redraw
  plus ``savefig`` takes tens. That is why the widgets do not use matplotlib.

Coordinates are input pixels with pixel centres at integers (``stnviz.geometry``'s convention).
"""

from .display import Display, class_name, display_of, set_display, stretch_contrast
from .figures import draw_box, draw_image, draw_lattice, draw_outline, format_theta, plot_batch, plot_record
from .raster import (
    BOX_COLOR, FRAME_BACKGROUND, LATTICE_COLOR, OUTLINE_COLOR, encode, lattice_points, overlay_rgb, overlay_square,
    region_panels, region_tile, to_display,
)
from .sequences import plot_canonical_means, plot_change_curves, plot_stability_summary, plot_theta_components

__all__ = [
    "Display",
    "class_name",
    "display_of",
    "set_display",
    "stretch_contrast",
    "OUTLINE_COLOR",
    "BOX_COLOR",
    "FRAME_BACKGROUND",
    "LATTICE_COLOR",
    "draw_box",
    "draw_image",
    "draw_lattice",
    "draw_outline",
    "encode",
    "format_theta",
    "lattice_points",
    "overlay_rgb",
    "overlay_square",
    "plot_batch",
    "plot_canonical_means",
    "plot_change_curves",
    "plot_record",
    "plot_stability_summary",
    "plot_theta_components",
    "region_panels",
    "region_tile",
    "to_display",
]
