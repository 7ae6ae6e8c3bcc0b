"""The theta explorer's kernel side, free of widgets: :class:`ExplorerState` (the truth: family,
exact parameters, selected image) and :func:`render_explorer` (a pure function of the image and the
parameters: the pictures of a static export). :class:`~stnviz.widgets.ThetaExplorer` shows the
state in the browser."""

from __future__ import annotations

import typing

import numpy as np
import torch

from .. import geometry, render
from ._base import _samples_only_outside

__all__ = ["ExplorerState", "ExplorerViews", "compose_parts", "render_explorer"]


#: Families the explorer edits: every affine family as a full affine theta, and each other family.
EXPLORER_FAMILIES = ("affine",) + tuple(n for n, f in geometry.FAMILY_TABLE.items() if not f.is_affine)
#: The decomposed parts of an affine theta the sliders show (rotation in degrees, like analysis' columns).
AFFINE_PARTS = ("rotation_deg", "scale_x", "scale_y", "shear", "tx", "ty")
#: Slider labels of the parts.
_PART_LABELS = {"rotation_deg": "rotation °", "scale_x": "scale x", "scale_y": "scale y", "shear": "shear",
                "tx": "translation x", "ty": "translation y"}


def _affine_parts(params) -> dict | None:
    """Flat affine theta ``(6,)`` -> ``{rotation_deg, scale_x, scale_y, shear, tx, ty}`` by
    :func:`stnviz.geometry.decompose_affine`; ``None`` for a singular or non-finite theta."""
    theta = torch.as_tensor(np.asarray(params, dtype=np.float64)).view(1, 2, 3)
    if not bool(torch.isfinite(theta).all()) or bool(geometry.is_singular(theta)):
        return None
    p = geometry.decompose_affine(theta)._asdict()
    p["rotation_deg"] = torch.rad2deg(p.pop("rotation"))
    return {n: float(p[n]) + 0.0 for n in AFFINE_PARTS}  # + 0.0: no -0.0


def compose_parts(parts: dict) -> np.ndarray:
    """``{rotation_deg, scale_x, scale_y, shear, tx, ty}`` -> flat affine theta ``(6,)``
    (float64) by :func:`stnviz.geometry.compose_affine`.

    Example:
        >>> parts = {"rotation_deg": 90.0, "scale_x": 0.5, "scale_y": 0.5, "shear": 0.0, "tx": 0.1, "ty": 0.0}
        >>> compose_parts(parts).round(3).tolist()  # [a11, a12, tx, a21, a22, ty]
        [0.0, -0.5, 0.1, 0.5, 0.0, 0.0]
    """
    v = {n: torch.tensor([float(parts[n])], dtype=torch.float64) for n in AFFINE_PARTS}
    v["rotation"] = torch.deg2rad(v.pop("rotation_deg"))
    return geometry.compose_affine(**v).reshape(-1).numpy().copy()


def _check_family(family) -> None:
    if family not in EXPLORER_FAMILIES:
        raise ValueError(f"family must be one of {EXPLORER_FAMILIES}, got {family!r}")


class ExplorerState:
    """What a :class:`ThetaExplorer` shows, free of widgets.

    Attributes:
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        params: the exact flat parameters, float64: affine ``[a11, a12, tx, a21, a22, ty]``
            (row-major theta ``(2, 3)``, output -> input, normalised, ``align_corners=False``);
            projective the first 8 entries of the homography (``h33 = 1``); TPS ``(x0, y0, x1, ...)``,
            where each control point samples in the input (normalised ``(x, y)``).
        parts: affine only, the decomposition the decomposed sliders show (:data:`AFFINE_PARTS`;
            ``rotation_deg`` in degrees).
            Setting one part recomposes theta from the others *as they are*, so rotating out and
            back gives back the same theta. ``None`` until the parameters have a decomposition
            (a singular theta keeps the last one).
        index: the selected image; point: the selected TPS control point.
        identity, initial: the identity parameters and the ones the state opened with.

    Nothing here rounds: sliders snap what they *display*, never the state.

    Example:
        >>> state = ExplorerState("affine")
        >>> state.set_part("rotation_deg", 30.0)  # the other parts stay as they are
        >>> state.params.round(3).tolist()
        [0.866, -0.5, 0.0, 0.5, 0.866, 0.0]
        >>> state.set_part("rotation_deg", 0.0); np.allclose(state.params, state.identity)  # and back
        True
    """

    def __init__(self, family: str = "affine", params=None, *, control_points: int = 9, index: int = 0):
        _check_family(family)
        self.family = family
        self.identity = geometry.identity_params(family, control_points=control_points, dtype=torch.float64).numpy()
        self.index, self.point = index, 0
        self.parts: dict | None = None
        self.params = self.identity.copy()
        self.set_params(self.identity if params is None else params)
        self.initial = self.params.copy()

    @property
    def control_points(self) -> int:
        return self.identity.size // 2

    def set_params(self, params) -> None:
        """Set every parameter (affine 6, projective 8, TPS 2K values)."""
        p = np.array(params, dtype=np.float64).reshape(-1)
        if p.size != self.identity.size:
            raise ValueError(f"{self.family} explorer takes {self.identity.size} parameters, got {p.size}")
        self.params = p
        if self.family == "affine":
            self.parts = _affine_parts(p) or self.parts

    def set_entry(self, k: int, value: float) -> None:
        """Set raw entry ``k`` (affine / projective: index into ``params``; TPS: 0 = x, 1 = y of the
        selected control point)."""
        i = 2 * self.point + k if self.family == "tps" else k
        self.params[i] = float(value)
        if self.family == "affine":
            self.parts = _affine_parts(self.params) or self.parts

    def set_part(self, name: str, value: float) -> None:
        """Affine only: set one decomposed part (:data:`AFFINE_PARTS`), keep the others."""
        if self.family != "affine":
            raise ValueError(f"decomposed parts exist for the affine family only, this state is {self.family!r}")
        if name not in AFFINE_PARTS:
            raise ValueError(f"part must be one of {AFFINE_PARTS}, got {name!r}")
        parts = dict(self.parts or _affine_parts(self.identity))
        parts[name] = float(value)
        self.params = compose_parts(parts)
        self.parts = parts

    def set_point(self, i: int) -> None:
        if not 0 <= i < self.control_points:
            raise ValueError(f"control point must be in [0, {self.control_points}), got {i}")
        self.point = int(i)

    def use_learned(self, params) -> None:
        """Apply a model's parameters (see :meth:`ThetaExplorer.learned_params`)."""
        self.set_params(params)

    def to_identity(self) -> None:
        self.set_params(self.identity)

    def reset(self) -> None:
        """Back to the parameters the state opened with."""
        self.set_params(self.initial)

    def entry_values(self) -> list[float]:
        """What the raw entry sliders show (TPS: the selected point's x, y)."""
        if self.family == "tps":
            return [float(v) for v in self.params[2 * self.point: 2 * self.point + 2]]
        return [float(v) for v in self.params]


class ExplorerViews(typing.NamedTuple):
    """What :func:`render_explorer` returns: the two pictures, a message and the parameter text.

    Example:
        >>> views = render_explorer(torch.zeros(1, 28, 28), [0.0] * 6, "affine")  # theta = 0: singular
        >>> views._fields, views.output_rgb.dtype
        (('input_rgb', 'output_rgb', 'message', 'theta_text'), dtype('uint8'))
        >>> views.message
        'singular transform (det = 0): the output collapses onto a line or a point'
        >>> print(views.theta_text)
        [+0.000 +0.000 +0.000]
        [+0.000 +0.000 +0.000]
        singular: no decomposition
        <BLANKLINE>
        <BLANKLINE>
        <BLANKLINE>
    """

    input_rgb: np.ndarray  # (H', W', 3) uint8: input, grey margin, sampled region (TPS: control points)
    output_rgb: np.ndarray  # (H'', W'', 3) uint8: the warped image
    message: str  # "" or why the transform is degenerate (plain text)
    theta_text: str  # fixed-width lines (every number the same width)


def _num(v: float, width: int = 7, digits: int = 3, sign: str = "+") -> str:
    return f"{round(float(v), digits) + 0.0:{sign}{width}.{digits}f}"  # + 0.0: never "-0.000"


def _theta_text(params: np.ndarray, family: str, point: int | None) -> str:
    if family == "affine":  # always six lines: the layout does not jump when the decomposition goes
        lines = render.format_theta(params).split("\n")
        return "\n".join(lines + [""] * (6 - len(lines)))
    if family == "projective":
        h = list(params) + [1.0]
        return "\n".join(("H " if r == 0 else "  ") + " ".join(_num(v) for v in h[3 * r: 3 * r + 3]) for r in range(3))
    k = params.size // 2
    p = 0 if point is None else point
    return f"point {p} of {k}\nx {_num(params[2 * p])}\ny {_num(params[2 * p + 1])}"


#: What the explorer says (in the kernel and in the page) about a homography whose w changes sign.
HORIZON_MESSAGE = ("this homography sends part of the output to infinity (its horizon crosses the output): "
                   "lower the perspective entries h31, h32")


def _horizon_crosses(h8, out_size) -> bool:
    """True when ``w = h31 x + h32 y + 1`` of a homography (flat, ``h33 = 1``) is 0 or changes sign
    over the output's pixel centres ``out_size = (H, W)``: part of the output samples "behind the
    camera", a folded picture. ``w`` is affine in ``(x, y)``: its corners decide."""
    h, w = out_size
    ex, ey = 1 - 1 / w, 1 - 1 / h
    ws = [float(h8[6]) * x + float(h8[7]) * y + 1 for x in (-ex, ex) for y in (-ey, ey)]
    return min(abs(v) for v in ws) <= 1e-7 or (min(ws) < 0 < max(ws))


def _degenerate(params: torch.Tensor, family: str, grid: torch.Tensor, components, out_size=None) -> str | None:
    """A human message when the transform is degenerate, else None. ``grid`` may be a sparse
    subset of the sampling grid ``(..., 2)``."""
    if geometry.family_info(family).matrix is not None:
        m = geometry.to_matrix(params, family, components=components)
        m = m[:, :2] if geometry.family_info(family).is_affine else m  # judged as a theta, or as a homography
        if bool(geometry.is_singular(m)[0]):
            det = float(torch.linalg.det(m[0, :, :2] if m.shape[1] == 2 else m[0]))
            return f"singular transform (det = {det:.2g}): the output collapses onto a line or a point"
    if family == "projective" and _horizon_crosses(params.reshape(-1)[:8], tuple(grid.shape[1:3]) if out_size is None else out_size):
        return HORIZON_MESSAGE
    if _samples_only_outside(grid):
        return "the sampled region lies entirely outside the input: the output is all padding"
    return None


def render_explorer(image: torch.Tensor, params, family: str, *, output_size=None, point: int | None = None,
                    scale: int = 8, margin: float = 0.25, display: render.Display | None = None) -> ExplorerViews:
    """The explorer's pictures and text for one image and one set of parameters; no widgets.

    Args:
        image: ``(C, H, W)`` float, as the model sees it (warped as it is, shown by ``display``).
        params: flat parameters of ``family`` (see :class:`ExplorerState`).
        family: ``"affine"``, ``"projective"`` or ``"tps"``.
        output_size: ``(H, W)`` of the output (default: the input size).
        point: TPS only, the control point to highlight.
        scale, margin: display magnification and grey margin (fraction of the image per side).
        display: how the pixels are shown (:class:`stnviz.render.Display`); default: an image
            outside [0, 1] stretched to its own range.

    Example:
        >>> views = render_explorer(torch.zeros(1, 28, 28), [0.5, 0, 0, 0, 0.5, 0], "affine", scale=4)
        >>> views.input_rgb.shape, views.output_rgb.shape, views.message  # input: 25% grey margin a side
        ((168, 168, 3), (112, 112, 3), '')
        >>> print(views.theta_text)
        [+0.500 +0.000 +0.000]
        [+0.000 +0.500 +0.000]
        rotation      +0.0°
        scale       +0.500 × +0.500
        shear       +0.000
        translation +0.000 +0.000
    """
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    size = tuple(image.shape[-2:])
    out_size = tuple(output_size) if output_size is not None else size
    t = torch.tensor(p, dtype=torch.float32).unsqueeze(0)
    t = t.view(1, 2, 3) if family == "affine" else t.view(1, -1, 2) if family == "tps" else t
    text = _theta_text(p, family, point)
    shown = render.display_of(display=display)
    try:
        grid = geometry.make_grid(t, family, out_size)
        out = geometry.warp(image.unsqueeze(0), grid)[0]
        outline = geometry.sampled_outline(t, family, size, points_per_side=8)[0]
    except ValueError as e:  # non-finite parameters, a point sent to infinity ...
        return ExplorerViews(render.overlay_rgb(shown.apply(image, where="ThetaExplorer"), scale=scale, margin=margin),
                             np.zeros((8, 8, 3), np.uint8),
                             f"cannot sample: {e}", text)
    lattice = render.lattice_points(grid[0], size, 8)
    points = None
    if family == "tps":
        points = geometry.grid_to_pixels(torch.as_tensor(p, dtype=torch.float64).reshape(-1, 2), size).numpy()
    input_rgb, output_rgb = render.region_panels(shown.apply(image, where="ThetaExplorer"),
                                                 shown.apply(out, image, where="ThetaExplorer"), outline, lattice,
                                                 scale=scale, margin=margin,
                                                 points=points, selected=point)
    message = _degenerate(t, family, grid[:, ::4, ::4], None, out_size) or ""
    return ExplorerViews(input_rgb, output_rgb, message, text)
