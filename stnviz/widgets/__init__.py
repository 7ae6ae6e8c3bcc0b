"""Interactive explorers for JupyterLab: thin shells over :mod:`stnviz.geometry`,
:mod:`stnviz.capture` and :mod:`stnviz.render`.

One file per widget, each split the same way: a plain state object (no widgets), a pure render
function (arrays in, arrays and text out) and the widget that shows the state and turns what a
hand does into state changes:

* :mod:`~stnviz.widgets.explorer_state`: :class:`ExplorerState`, :func:`render_explorer`;
  :mod:`~stnviz.widgets.explorer`: :class:`ThetaExplorer` (an ``anywidget``: the page warps the image itself)
* :mod:`~stnviz.widgets.inspector`: :class:`InspectorState`, :func:`render_inspector`, :class:`STNInspector`
* :mod:`~stnviz.widgets.stability`: :class:`StabilityState`, :func:`render_stability`, :class:`StabilityViewer`
* :mod:`~stnviz.widgets.player`: :class:`FramePlayer` (frames sent once, scrubbed and played in the page), :class:`TrainingPlayer`; :mod:`~stnviz.widgets.sliders`: :func:`slider_value`

The explorer's page warps the image itself, exactly as ``grid_sample`` does, on every drag or
slider step (the kernel hears the parameters); the inspector's views are ``ipywidgets.Image`` PNGs
of :func:`stnviz.render.region_panels` (the two panels of the "input + sampled region | output"
tile), re-rendered in a few milliseconds without a figure; the players send their frames once. An exception in a callback is shown in the widget's
output area, and a degenerate transform (singular, non-finite, sampling only outside the image)
shows a message; the widget stays live.

Display a widget by leaving it as a cell's last expression (or ``display(explorer)``).
"""

from .explorer import ExplorerView, ThetaExplorer, affine_as
from .explorer_state import ExplorerState, ExplorerViews, compose_parts, render_explorer
from .inspector import InspectorState, InspectorViews, STNInspector, render_inspector
from .player import FramePlayer, TrainingPlayer
from .sliders import slider_value
from .stability import StabilityState, StabilityViewer, StabilityViews, render_stability, stability_plots

__all__ = ["ExplorerState", "ExplorerView", "ExplorerViews", "FramePlayer", "InspectorState", "InspectorViews", "STNInspector",
           "StabilityState", "StabilityViewer", "StabilityViews", "ThetaExplorer", "TrainingPlayer", "affine_as", "compose_parts",
           "render_explorer", "render_inspector", "render_stability", "slider_value", "stability_plots"]
