"""The browser's slider, emulated: the exact number an ipywidgets ``FloatSlider`` on the page holds
after it is sent a value, so a value the Python side pushes never comes back as a user's edit."""

from __future__ import annotations

import math

__all__ = ["slider_value"]


def _js_round(x: float) -> float:
    """JavaScript's ``Math.round`` (halves go up), not Python's banker's rounding."""
    r = math.floor(x)
    return r + 1 if x - r >= 0.5 else r


def slider_value(value: float, lo: float, hi: float, step: float) -> float:
    """The number a browser's ``FloatSlider`` holds after it is sent ``value``.

    ipywidgets draws the slider with noUiSlider, which snaps a value to its step through
    percentages (``min + round(pct / step_pct) * step_pct * (max - min) / 100``); when the result
    differs from the value sent, even by one ulp, the page sends it back as if the user had moved
    the slider. The same IEEE double arithmetic here gives the same number, so a value pushed
    through this function is one the page keeps as it is: no echo.

    Example:
        >>> slider_value(0.123, -2.0, 2.0, 0.01)  # what a browser slider with step 0.01 holds
        0.1200000000000001
        >>> slider_value(5.0, -2.0, 2.0, 0.01)  # clamped to the range
        2.0
    """
    v = min(max(float(value), lo), hi)
    if v >= hi:
        return float(hi)
    pct = 100 * (v - lo) / (hi - lo)
    n = 100 * step / (hi - lo)
    pct = min(max(0 + _js_round((pct - 0) / n) * n, 0.0), 100.0)
    if pct >= 100:
        return float(hi)
    return pct * (hi - lo) / 100 + lo


def _on_step(value: float, step: float) -> float:
    """A user's slider value as a clean multiple of the step (0.3, not 0.30000000000000004)."""
    digits = max(0, -math.floor(math.log10(step))) + 2
    return round(round(value / step) * step, digits) + 0.0
