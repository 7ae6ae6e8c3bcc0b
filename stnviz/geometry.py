"""Pure, batched, differentiable geometry of spatial transformers.

Everything here is a function of tensors: device and dtype come from the inputs, nothing holds
state except a small cache of solved thin-plate-spline systems.

Conventions (the one place they are stated; the rest of the package follows them)
--------------------------------------------------------------------------------
* **Normalised coordinates.** A point is ``(x, y)`` with ``x`` left -> right and ``y`` top ->
  bottom, both in ``[-1, 1]`` across the image.
* **align_corners=False, package-wide** (:data:`ALIGN_CORNERS`). ``-1`` and ``+1`` are the *outer
  edges* of the border pixels, not their centres, exactly as in ``torch.nn.functional.affine_grid``
  / ``grid_sample`` with ``align_corners=False`` (PyTorch's default). So a transform means the same
  thing whatever the resolution, and an ``output_size`` that differs from the input size crops or
  zooms without a half-pixel shift. :func:`theta_to_pixel` converts to pixel matrices for either
  setting.
* **Direction: output -> input.** Parameters map a point of the *output* image to the point of the
  *input* image it is sampled from (the "inverse map" of the STN paper's grid generator). A theta
  of ``[[0.5, 0, 0], [0, 0.5, 0]]`` therefore *zooms in* 2x on the centre.
* **Pixel coordinates** (only in :func:`theta_to_pixel`, :func:`pixel_to_theta` and
  :func:`sampled_corners`): pixel ``i`` has its centre at ``i``, so an image of width ``W`` spans
  ``[-0.5, W - 0.5]``; this is OpenCV's and matplotlib ``imshow``'s convention.
* **Angles** are in radians here (and in the parameters a transformer regresses), and in degrees
  everywhere else in the package, under a name that says so (``rotation_deg`` in the analysis
  tables, the explorer's parts, augmentation and distortion ground truth).
* **Singular** means one rule, :func:`is_singular`, for decompositions, inverses and messages.

Shapes: images ``(B, C, H, W)``; affine theta ``(B, 2, 3)``; homography ``(B, 3, 3)``; TPS
control points ``(B, K, 2)``; grids ``(B, H, W, 2)`` holding normalised ``(x, y)``.

Transform families and their parameters (``family=`` in :func:`make_grid`):

=============  ==========================  ===================================================
family         parameters                  meaning
=============  ==========================  ===================================================
affine         ``(B, 2, 3)`` or ``(B, 6)``  full affine theta
attention      ``(B, 3)``                   ``(s, tx, ty)``: isotropic scale + translation
                                           (the paper's attention / crop transform)
restricted     ``(B, P)``                   the named ``components`` you chose, see
                                           :func:`restricted_to_theta`
translation    ``(B, 2)``                   ``(tx, ty)``
projective     ``(B, 3, 3)``, ``(B, 9)`` or  homography; 8 values means ``h33 = 1``
               ``(B, 8)``
tps            ``(B, K, 2)`` or ``(B, 2K)``  where the K control points (a regular
                                           ``n x n`` lattice of the output) land in the input
=============  ==========================  ===================================================
"""

from __future__ import annotations

import contextlib
import math
import threading
from functools import lru_cache
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "AFFINE_FAMILIES",
    "ALIGN_CORNERS",
    "FAMILIES",
    "FAMILY_TABLE",
    "MAX_TPS_CONTROL_POINTS",
    "RESTRICTED_COMPONENTS",
    "AffineComponents",
    "Family",
    "affine_grid",
    "attention_grid",
    "attention_to_theta",
    "compose_affine",
    "convert_align_corners",
    "decompose_affine",
    "family_info",
    "identity_params",
    "invert",
    "is_singular",
    "make_grid",
    "num_params",
    "pixel_centres",
    "pixel_to_theta",
    "projective_grid",
    "restricted_grid",
    "restricted_to_theta",
    "sampled_corners",
    "sampled_outline",
    "shape_params",
    "theta_recorded",
    "grid_to_pixels",
    "theta_to_pixel",
    "to_matrix",
    "tps_control_points",
    "tps_grid",
    "tps_solve",
    "translation_grid",
    "translation_to_theta",
    "warp",
]

#: The package-wide ``align_corners`` setting for ``affine_grid`` / ``grid_sample``.
ALIGN_CORNERS = False

#: Names a restricted transform can be built from; ``"translation"`` is short for ``tx, ty``.
RESTRICTED_COMPONENTS = ("rotation", "scale", "aspect", "shear", "tx", "ty")

_WARP_MODES = ("bilinear", "nearest", "bicubic")
_PADDINGS = ("zeros", "border", "reflection")


# --------------------------------------------------------------------------- validation helpers


def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_params(p: torch.Tensor, name: str, expected: str, ok: bool) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}, got shape {_shape(p)}")
    if p.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {_shape(p)}); expected at least one item")
    if not p.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {p.dtype}")
    # Any NaN or inf makes the sum non-finite, so the exact (slower) test only runs when the sum
    # is not finite: one reduction on the common path.
    if not math.isfinite(float(p.detach().sum())) and not bool(torch.isfinite(p).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf in a tensor of shape {_shape(p)}")


def _check_size(size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be two positive integers (H, W), got {size!r}")
    return h, w


#: The most grid points (batch x H x W) one call may make: 2**26 points are 512 MiB in float32.
#: A larger request is almost always a mistake (say 1e5 x 1e5); refuse it before allocating.
MAX_GRID_POINTS = 2**26


def _check_grid_size(size, batch: int = 1) -> tuple[int, int]:
    h, w = _check_size(size)
    points = max(int(batch), 1) * h * w
    if points > MAX_GRID_POINTS:
        raise ValueError(
            f"a grid of batch {batch} x {h} x {w} has {points:,} points, more than the limit of {MAX_GRID_POINTS:,} "
            f"({points * 8 / 2**30:.1f} GiB in float32); expected an output size of at most {MAX_GRID_POINTS:,} "
            f"points per call (e.g. 8192 x 8192)"
        )
    return h, w


def _check_theta(theta: torch.Tensor, name: str = "theta") -> torch.Tensor:
    """Accept ``(B, 2, 3)`` or ``(B, 6)``; return ``(B, 2, 3)``."""
    _check_tensor(theta, name)
    if theta.dim() == 2 and theta.shape[1] == 6:
        theta = theta.reshape(-1, 2, 3)
    _check_params(theta, name, "(B, 2, 3) or (B, 6)", theta.dim() == 3 and theta.shape[1:] == (2, 3))
    return theta


def _check_tps_points(points: torch.Tensor) -> torch.Tensor:
    """Accept ``(B, K, 2)`` or ``(B, 2K)``; return ``(B, K, 2)``."""
    _check_tensor(points, "TPS points")
    if points.dim() == 2 and points.shape[1] % 2 == 0:
        points = points.reshape(points.shape[0], points.shape[1] // 2, 2)  # not -1: B = 0 must reach the check
    _check_params(points, "TPS points", "(B, K, 2) or (B, 2K)", points.dim() == 3 and points.shape[2] == 2)
    return points


def _check_homography(h: torch.Tensor, name: str = "homography") -> torch.Tensor:
    """Accept ``(B, 3, 3)``, ``(B, 9)`` or ``(B, 8)`` (``h33 = 1``); return ``(B, 3, 3)``."""
    _check_tensor(h, name)
    if h.dim() == 2 and h.shape[1] == 8:
        h = torch.cat([h, h.new_ones(h.shape[0], 1)], dim=1)
    if h.dim() == 2 and h.shape[1] == 9:
        h = h.reshape(-1, 3, 3)
    _check_params(h, name, "(B, 3, 3), (B, 9) or (B, 8)", h.dim() == 3 and h.shape[1:] == (3, 3))
    return h


# --------------------------------------------------------------------------- parameter -> matrix


def attention_to_theta(params: torch.Tensor) -> torch.Tensor:
    """Attention parameters ``(B, 3)`` = ``(s, tx, ty)`` -> theta ``(B, 2, 3)``.

    ``theta = [[s, 0, tx], [0, s, ty]]``: the output shows a square window of half-size ``s``
    centred on ``(tx, ty)`` of the input (normalised coordinates). Identity: ``(1, 0, 0)``.

    Example:
        >>> attention_to_theta(torch.tensor([[0.5, 0.2, -0.1]]))  # half-size window at (0.2, -0.1)
        tensor([[[ 0.5000,  0.0000,  0.2000],
                 [ 0.0000,  0.5000, -0.1000]]])
    """
    _check_tensor(params, "attention params")
    _check_params(params, "attention params", "(B, 3) = (scale, tx, ty)", params.dim() == 2 and params.shape[1] == 3)
    s, tx, ty = params.unbind(1)
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s, zero, tx], 1), torch.stack([zero, s, ty], 1)], 1)


def translation_to_theta(params: torch.Tensor) -> torch.Tensor:
    """Translation ``(B, 2)`` = ``(tx, ty)`` -> theta ``(B, 2, 3)``. Identity: ``(0, 0)``.

    Example:
        >>> translation_to_theta(torch.tensor([[0.5, -0.25]]))
        tensor([[[ 1.0000,  0.0000,  0.5000],
                 [ 0.0000,  1.0000, -0.2500]]])
    """
    _check_tensor(params, "translation params")
    _check_params(params, "translation params", "(B, 2) = (tx, ty)", params.dim() == 2 and params.shape[1] == 2)
    eye = torch.eye(2, dtype=params.dtype, device=params.device).expand(params.shape[0], 2, 2)
    return torch.cat([eye, params.unsqueeze(-1)], dim=2)


def _expand_components(components: Sequence[str]) -> tuple[str, ...]:
    if isinstance(components, str):
        components = (components,)
    out: list[str] = []
    for c in components:
        names = ("tx", "ty") if c == "translation" else (c,)
        for n in names:
            if n not in RESTRICTED_COMPONENTS:
                raise ValueError(
                    f"restricted component must be one of {RESTRICTED_COMPONENTS + ('translation',)}, got {c!r}"
                )
            if n in out:
                raise ValueError(f"restricted component {n!r} given twice in {tuple(components)}")
            out.append(n)
    if not out:
        raise ValueError("a restricted transform needs at least one component, got none")
    return tuple(out)


_RESTRICTED_IDENTITY = {"rotation": 0.0, "scale": 1.0, "aspect": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0}


def restricted_to_theta(params: torch.Tensor, components: Sequence[str]) -> torch.Tensor:
    """Restricted affine parameters ``(B, P)`` -> theta ``(B, 2, 3)``.

    ``components`` names the columns of ``params`` in order, any subset of
    ``rotation`` (radians), ``scale`` (isotropic), ``aspect``, ``shear``, ``tx``, ``ty``
    (``translation`` is short for ``tx, ty``). Components left out stay at identity
    (rotation 0, scale 1, aspect 1, shear 0, translation 0). The matrix is
    :func:`compose_affine` with ``scale_x = scale * aspect`` and ``scale_y = scale / aspect``.

    Example (the rotation-scale-translation transform: ``p`` is ``(B, 4)``):
        >>> p = torch.tensor([[0.3, 0.5, 0.1, -0.2]])  # rotation (rad), scale, tx, ty
        >>> theta = restricted_to_theta(p, ("rotation", "scale", "translation"))
        >>> [round(float(v), 3) for v in decompose_affine(theta)]  # rotation, scale_x, scale_y, shear, tx, ty
        [0.3, 0.5, 0.5, 0.0, 0.1, -0.2]
    """
    names = _expand_components(components)
    _check_tensor(params, "restricted params")
    _check_params(
        params,
        "restricted params",
        f"(B, {len(names)}) for components {names}",
        params.dim() == 2 and params.shape[1] == len(names),
    )
    cols = dict(zip(names, params.unbind(1)))

    def get(n):
        return cols[n] if n in cols else torch.full_like(params[:, 0], _RESTRICTED_IDENTITY[n])

    scale, aspect = get("scale"), get("aspect")
    return compose_affine(
        rotation=get("rotation"),
        scale_x=scale * aspect,
        scale_y=scale / aspect,
        shear=get("shear"),
        tx=get("tx"),
        ty=get("ty"),
    )


def to_matrix(params: torch.Tensor, family: str, *, components: Sequence[str] | None = None) -> torch.Tensor:
    """Parameters of a matrix family -> homogeneous matrix ``(B, 3, 3)`` (output -> input).

    Works for ``affine``, ``attention``, ``restricted`` (needs ``components``), ``translation``
    and ``projective``. TPS has no matrix: use :func:`make_grid`.

    Example:
        >>> to_matrix(torch.tensor([[0.5, 0.2, -0.1]]), "attention")  # (s, tx, ty)
        tensor([[[ 0.5000,  0.0000,  0.2000],
                 [ 0.0000,  0.5000, -0.1000],
                 [ 0.0000,  0.0000,  1.0000]]])
    """
    f = family_info(family)
    if f.matrix is None:
        others = ", ".join(n for n, g in FAMILY_TABLE.items() if g.matrix is not None)
        raise ValueError(f"family {family!r} has no matrix; expected one of {others}")
    return f.matrix(params, components)


def _homogeneous(theta: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` -> ``(B, 3, 3)`` with last row ``[0, 0, 1]``."""
    row = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, row], dim=1)


# --------------------------------------------------------------------------- compose / decompose


class AffineComponents(NamedTuple):
    """The decomposition ``A = R(rotation) @ [[1, shear], [0, 1]] @ diag(scale_x, scale_y)``.

    Each field is a ``(B,)`` tensor; ``(tx, ty)`` is the translation column. ``rotation`` is in
    radians, counter-clockwise in the ``(x right, y down)`` frame as drawn on screen is *clockwise*.
    A reflection shows as a negative ``scale_y``.

    Example:
        >>> c = decompose_affine(compose_affine(scale_x=torch.tensor([2.0]), shear=0.5, ty=0.1))
        >>> c._fields
        ('rotation', 'scale_x', 'scale_y', 'shear', 'tx', 'ty')
        >>> float(c.scale_x), float(c.scale_y), float(c.shear), round(float(c.ty), 3)
        (2.0, 1.0, 0.5, 0.1)
    """

    rotation: torch.Tensor
    scale_x: torch.Tensor
    scale_y: torch.Tensor
    shear: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor


def compose_affine(
    rotation=0.0, scale_x=1.0, scale_y=1.0, shear=0.0, tx=0.0, ty=0.0
) -> torch.Tensor:
    """Build theta ``(B, 2, 3)`` from components (inverse of :func:`decompose_affine`).

    ``theta[:, :, :2] = R(rotation) @ [[1, shear], [0, 1]] @ diag(scale_x, scale_y)`` and
    ``theta[:, :, 2] = (tx, ty)``. Each argument is a ``(B,)`` tensor or a number; at least one
    must be a tensor (it sets batch, device and dtype). Round trip:
    ``compose_affine(*decompose_affine(theta))`` equals ``theta``.

    Example:
        >>> theta = compose_affine(scale_x=torch.tensor([2.0]), shear=0.5, ty=0.1)
        >>> theta
        tensor([[[2.0000, 0.5000, 0.0000],
                 [0.0000, 1.0000, 0.1000]]])
        >>> torch.allclose(compose_affine(*decompose_affine(theta)), theta)
        True
    """
    args = dict(rotation=rotation, scale_x=scale_x, scale_y=scale_y, shear=shear, tx=tx, ty=ty)
    ref = next((v for v in args.values() if isinstance(v, torch.Tensor)), None)
    if ref is None:
        raise ValueError("compose_affine needs at least one (B,) tensor argument, got only numbers")
    if ref.dim() != 1 or ref.shape[0] == 0:
        raise ValueError(f"compose_affine arguments must be (B,) tensors with B >= 1, got shape {_shape(ref)}")
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    vals = {}
    for k, v in args.items():
        v = torch.as_tensor(v, dtype=dtype, device=ref.device)
        if v.dim() == 0:
            v = v.expand(ref.shape[0])
        if v.shape != ref.shape:
            raise ValueError(f"compose_affine: {k} must have shape {_shape(ref)}, got {_shape(v)}")
        vals[k] = v
    stacked = torch.stack(list(vals.values()))
    if not math.isfinite(float(stacked.detach().sum())) and not bool(torch.isfinite(stacked).all()):
        bad = [k for k, v in vals.items() if not bool(torch.isfinite(v).all())]
        raise ValueError(f"compose_affine: {', '.join(bad)} must be finite, got NaN or inf")
    c, s = torch.cos(vals["rotation"]), torch.sin(vals["rotation"])
    sx, sy, sh = vals["scale_x"], vals["scale_y"], vals["shear"]
    # R @ Shear @ S, written out so autograd sees a handful of elementwise ops.
    a11 = c * sx
    a12 = (c * sh - s) * sy
    a21 = s * sx
    a22 = (s * sh + c) * sy
    row0 = torch.stack([a11, a12, vals["tx"]], dim=1)
    row1 = torch.stack([a21, a22, vals["ty"]], dim=1)
    return torch.stack([row0, row1], dim=1)


def is_singular(params: torch.Tensor) -> torch.Tensor:
    """Whether each transform is singular, i.e. collapses the plane onto a line or a point: bool ``(B,)``.

    The package's one rule (decompositions, inverses, theta text and the widgets' messages use it),
    with ``tol`` 1e-12 in float64 and 1e-6 otherwise:

    * an affine theta ``(B, 2, 3)`` (or ``(B, 6)``) is singular when its linear part ``A`` has
      ``|det A| <= tol * max(1, max |A_ij|) ** 2`` (the translation plays no part);
    * a matrix ``(B, 3, 3)`` (a homography, or :func:`to_matrix` of any family) is singular when
      ``|det H| <= tol * max |H_ij| ** 3``: relative to its own size, since ``c * H`` is the same
      homography for any ``c != 0``.

    Rows with NaN or inf entries are not called singular: they are not transforms at all
    (``torch.isfinite`` tells them).

    Example:
        >>> is_singular(torch.tensor([[[1.0, 0, 0.5], [0, 1, 0]], [[1.0, 2, 0], [0.5, 1, 0]]]))  # det 1, det 0
        tensor([False,  True])
        >>> is_singular(to_matrix(torch.tensor([[0.0, 0.3, 0.1]]), "attention"))  # scale 0: one point
        tensor([True])
    """
    _check_tensor(params, "params")
    if params.dim() == 3 and params.shape[1:] == (3, 3):
        m, n = params, 3
        size = m.abs().flatten(1).amax(1)
    elif (params.dim() == 3 and params.shape[1:] == (2, 3)) or (params.dim() == 2 and params.shape[1] == 6):
        m, n = params.reshape(-1, 2, 3)[:, :, :2], 2
        size = m.abs().flatten(1).amax(1).clamp_min(1.0)
    else:
        raise ValueError(f"is_singular expects an affine theta (B, 2, 3) or (B, 6) or a matrix (B, 3, 3), "
                         f"got shape {_shape(params)}")
    tol = 1e-12 if m.dtype == torch.float64 else 1e-6
    return torch.linalg.det(m).abs() <= tol * size**n


def decompose_affine(theta: torch.Tensor, *, singular: str = "raise") -> AffineComponents:
    """Split theta ``(B, 2, 3)`` (or ``(B, 6)``) into :class:`AffineComponents`.

    QR-style: ``rotation = atan2(a21, a11)``, ``scale_x = |first column|``,
    ``scale_y = det / scale_x``, ``shear`` from the remaining upper-triangular entry.

    For a *singular* theta (:func:`is_singular`) the decomposition is not unique. Then
    ``singular="raise"`` (default) raises ``ValueError`` naming the first such row, and
    ``singular="nan"`` returns NaN rotation, scales and shear for those rows (the translation
    is still given). This is the package's one decomposition: tables and theta text use it.

    Example:
        >>> theta = compose_affine(rotation=torch.tensor([0.3]), scale_x=0.5, scale_y=0.5, tx=0.1)
        >>> p = decompose_affine(theta)
        >>> round(float(p.rotation), 4), round(float(p.scale_x), 4), round(float(p.tx), 4)
        (0.3, 0.5, 0.1)
        >>> decompose_affine(torch.zeros(1, 2, 3), singular="nan").scale_x
        tensor([nan])
    """
    if singular not in ("raise", "nan"):
        raise ValueError(f"singular must be 'raise' or 'nan', got {singular!r}")
    theta = _check_theta(theta)
    a11, a12, tx = theta[:, 0].unbind(1)
    a21, a22, ty = theta[:, 1].unbind(1)
    scale_x = torch.sqrt(a11 * a11 + a21 * a21)
    det = a11 * a22 - a12 * a21
    bad = is_singular(theta)
    if singular == "raise" and bool(bad.any()):
        idx = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"decompose_affine expects a non-singular linear part, got det={float(det[idx]):.3g} at batch index {idx}"
        )
    safe_sx = torch.where(bad, torch.ones_like(scale_x), scale_x)
    rotation = torch.atan2(a21, a11)
    c, s = a11 / safe_sx, a21 / safe_sx
    scale_y = torch.where(bad, torch.ones_like(det), det / safe_sx)
    shear = (c * a12 + s * a22) / scale_y
    if bool(bad.any()):
        nan = torch.full_like(scale_x, math.nan)
        rotation, scale_x, scale_y, shear = (torch.where(bad, nan, v) for v in (rotation, scale_x, scale_y, shear))
    return AffineComponents(rotation, scale_x, scale_y, shear, tx, ty)


def invert(params: torch.Tensor) -> torch.Tensor:
    """Inverse of an affine theta ``(B, 2, 3)`` or a homography ``(B, 3, 3)``; same shape out.

    Warping by ``T`` and then by ``invert(T)`` gives back the image wherever both samplings stayed
    inside it. Raises ``ValueError`` for a singular one (:func:`is_singular`), naming the batch index.

    Example (a theta composed with its inverse is the identity):
        >>> theta = torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.8, 0.0]]])
        >>> both = to_matrix(invert(theta), "affine") @ to_matrix(theta, "affine")
        >>> torch.allclose(both, torch.eye(3), atol=1e-6)
        True
    """
    _check_tensor(params, "params")
    if params.dim() == 3 and params.shape[1:] == (2, 3):
        m = _homogeneous(_check_theta(params))
        affine = True
    elif params.dim() == 3 and params.shape[1:] == (3, 3):
        m = _check_homography(params)
        affine = False
    else:
        raise ValueError(f"invert expects an affine theta (B, 2, 3) or a homography (B, 3, 3), got shape {_shape(params)}")
    bad = is_singular(params)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0, 0])
        det = float(torch.linalg.det(m[idx]))
        raise ValueError(f"cannot invert a singular matrix: det={det:.3g} at batch index {idx}")
    inv = torch.linalg.inv(m)
    return inv[:, :2] if affine else inv


# --------------------------------------------------------------------------- grids


def affine_grid(theta: torch.Tensor, size) -> torch.Tensor:
    """Sampling grid ``(B, H, W, 2)`` for theta ``(B, 2, 3)`` (or ``(B, 6)``), output ``size = (H, W)``.

    The grid of ``torch.nn.functional.affine_grid`` with the package's ``align_corners`` (see module
    docstring). Run eagerly, it is built by broadcasting: grid[b, i, j] = A_b (x_j, y_i) + t_b as an
    outer sum of a row term and a column term, which costs a fraction of ``F.affine_grid``'s batched
    matrix product on the CPU and agrees with it to float rounding (~2e-7). Under tracing,
    scripting, ``torch.compile`` / export, ONNX export or an active torch function mode (such as
    :func:`stnviz.capture`, which records theta from the ``F.affine_grid`` call) it calls
    ``F.affine_grid`` itself.

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> affine_grid(theta, (4, 4))[0, 0, 0]  # output pixel (0, 0) samples this input point
        tensor([-0.3750, -0.3750])
    """
    theta = _check_theta(theta)
    h, w = _check_grid_size(size, theta.shape[0])
    if not _eager():
        return F.affine_grid(theta, [theta.shape[0], 1, h, w], align_corners=ALIGN_CORNERS)
    xs = _axis_centres(w, theta.device, theta.dtype)  # (W,)
    ys = _axis_centres(h, theta.device, theta.dtype)  # (H,)
    across = xs[None, :, None] * theta[:, None, :, 0]  # (B, W, 2): A[:, 0] * x
    down = ys[None, :, None] * theta[:, None, :, 1] + theta[:, None, :, 2]  # (B, H, 2): A[:, 1] * y + t
    return across[:, None, :, :] + down[:, :, None, :]


def _axis_centres(n: int, device, dtype) -> torch.Tensor:
    """Normalised coordinates ``(n,)`` of the centres of ``n`` pixels along one axis
    (align_corners=False): ``(2 i + 1) / n - 1``."""
    return (torch.arange(n, device=device, dtype=dtype) * 2 + 1) / n - 1


def _eager() -> bool:
    """Whether grids may be built by plain broadcasting: not traced, scripted, compiled or exported,
    and no torch function mode active (a capture must see ``F.affine_grid`` to record theta)
    unless inside :func:`theta_recorded`."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling() \
            or torch.onnx.is_in_onnx_export():
        return False
    return not torch._C._is_torch_function_mode_enabled() or getattr(_recorded, "depth", 0) > 0


_recorded = threading.local()


@contextlib.contextmanager
def theta_recorded():
    """Inside this context (in this thread) :func:`affine_grid` broadcasts even under a torch
    function mode: the caller records theta itself, so no mode needs to see ``F.affine_grid``.
    :func:`stnviz.capture` enters it while a stnviz grid generator runs (its hook records the
    parameters): a captured forward then builds the same grid as an uncaptured one, at a fraction
    of ``F.affine_grid``'s cost on the CPU. Tracing, compiling and export still use ``F.affine_grid``.

    Example:
        >>> from torch.overrides import TorchFunctionMode
        >>> class PassOn(TorchFunctionMode):  # a mode that sees every torch call and runs it
        ...     def __torch_function__(self, func, types, args=(), kwargs=None):
        ...         return func(*args, **(kwargs or {}))
        >>> theta = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0]]])
        >>> with PassOn(), theta_recorded():
        ...     inside = affine_grid(theta, (4, 4))
        >>> torch.equal(inside, affine_grid(theta, (4, 4)))  # the grid built without any mode
        True
    """
    _recorded.depth = getattr(_recorded, "depth", 0) + 1
    try:
        yield
    finally:
        _recorded.depth -= 1


def attention_grid(params: torch.Tensor, size) -> torch.Tensor:
    """Grid ``(B, H, W, 2)`` for attention parameters ``(B, 3)`` = ``(s, tx, ty)``.

    Example:
        >>> grid = attention_grid(torch.tensor([[0.5, 0.0, 0.0]]), (2, 2))  # zoom in 2x on the centre
        >>> grid.shape, grid[0, 0, 0]  # output pixel (0, 0) samples this input point
        (torch.Size([1, 2, 2, 2]), tensor([-0.2500, -0.2500]))
    """
    return affine_grid(attention_to_theta(params), size)


def translation_grid(params: torch.Tensor, size) -> torch.Tensor:
    """Grid ``(B, H, W, 2)`` for a translation ``(B, 2)`` = ``(tx, ty)``.

    Example (the two output pixels of a 1 x 2 image, centred at x = -0.5 and 0.5, shifted by 0.5):
        >>> translation_grid(torch.tensor([[0.5, 0.0]]), (1, 2))
        tensor([[[[0., 0.],
                  [1., 0.]]]])
    """
    return affine_grid(translation_to_theta(params), size)


def restricted_grid(params: torch.Tensor, size, components: Sequence[str]) -> torch.Tensor:
    """Grid ``(B, H, W, 2)`` for restricted parameters ``(B, P)``; see :func:`restricted_to_theta`.

    Example (scale + translation is the attention transform):
        >>> p = torch.tensor([[0.5, 0.2, -0.1]])  # scale, tx, ty
        >>> torch.allclose(restricted_grid(p, (4, 4), ("scale", "translation")), attention_grid(p, (4, 4)))
        True
    """
    return affine_grid(restricted_to_theta(params, components), size)


def pixel_centres(size, *, device=None, dtype=None) -> torch.Tensor:
    """The centres of an ``(H, W)`` image's pixels in normalised coordinates, ``(H, W, 2)`` as
    ``(x, y)`` (align_corners=False): the identity sampling grid, and the one pixel-centre grid of
    the package (procedural images draw on it too).

    Example:
        >>> pixel_centres((2, 2))
        tensor([[[-0.5000, -0.5000],
                 [ 0.5000, -0.5000]],
        <BLANKLINE>
                [[-0.5000,  0.5000],
                 [ 0.5000,  0.5000]]])
    """
    h, w = _check_size(size)
    dtype = dtype or torch.get_default_dtype()
    ys, xs = _axis_centres(h, device, dtype), _axis_centres(w, device, dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    return pixel_centres((h, w), device=device, dtype=dtype)


def _apply_homography(m: torch.Tensor, pts: torch.Tensor, name: str = "homography") -> torch.Tensor:
    """Map points ``(B, N, 2)`` through ``(B, 3, 3)``; raise if a point goes to infinity."""
    ones = torch.ones_like(pts[..., :1])
    hp = torch.cat([pts, ones], dim=-1) @ m.transpose(1, 2)
    w = hp[..., 2:]
    tol = 1e-12 if m.dtype == torch.float64 else 1e-7
    if bool((w.abs() <= tol).any()):
        raise ValueError(f"{name} sends a point to infinity (w = 0); expected w != 0 over the whole output")
    return hp[..., :2] / w


def projective_grid(homography: torch.Tensor, size) -> torch.Tensor:
    """Grid ``(B, H, W, 2)`` for a homography ``(B, 3, 3)`` (or ``(B, 9)``, or ``(B, 8)`` with ``h33=1``).

    Output pixel ``p`` (normalised, homogeneous) samples the input at ``H p`` divided by its third
    coordinate. Raises ``ValueError`` when that coordinate is zero somewhere on the grid.

    Example:
        >>> identity = torch.tensor([[1.0, 0, 0, 0, 1, 0, 0, 0]])  # (B, 8): h33 = 1
        >>> torch.allclose(projective_grid(identity, (4, 4)), affine_grid(torch.eye(2, 3).unsqueeze(0), (4, 4)))
        True
        >>> projective_grid(torch.tensor([[1.0, 0, 0, 0, 1, 0, 0.5, 0]]), (2, 2))[0, 0]  # h31 = 0.5: perspective
        tensor([[-0.6667, -0.6667],
                [ 0.4000, -0.4000]])
    """
    m = _check_homography(homography)
    h, w = _check_grid_size(size, m.shape[0])
    # planar layout (B, 3, H, W), built like affine_grid's broadcast: each homogeneous coordinate is
    # an outer sum of a column term and a row term (no matrix product with a base grid, half the
    # time of one on the CPU); x / w and y / w over contiguous planes (a divide over an interleaved
    # last dimension of 2 is several times slower); the grid is a permuted view of that buffer,
    # which grid_sample reads as fast as a contiguous one
    xs = _axis_centres(w, m.device, m.dtype)  # (W,)
    ys = _axis_centres(h, m.device, m.dtype)  # (H,)
    across = m[:, :, 0, None, None] * xs[None, None, None, :]  # (B, 3, 1, W): H[:, 0] * x
    down = m[:, :, 1, None, None] * ys[None, None, :, None] + m[:, :, 2, None, None]  # (B, 3, H, 1)
    planes = across + down  # (B, 3, H, W)
    wz = planes[:, 2:]
    tol = 1e-12 if m.dtype == torch.float64 else 1e-7
    if float(wz.detach().abs().amin()) <= tol:
        raise ValueError("homography sends a point to infinity (w = 0); expected w != 0 over the whole output")
    return (planes[:, :2] / wz).permute(0, 2, 3, 1)


#: The most TPS control points a transformer may have (a 32 x 32 lattice): solving the
#: ``(K + 3) x (K + 3)`` system takes 0.2 s at this K, K = 10,000 took 133 s and 3.8 GB.
MAX_TPS_CONTROL_POINTS = 1024


def tps_control_points(k: int, *, device=None, dtype=None) -> torch.Tensor:
    """The ``K = n * n`` rest positions ``(K, 2)`` of TPS control points: a regular lattice over
    ``[-1, 1]^2`` (x varies fastest). ``K`` must be a square number, 4 <= K <= :data:`MAX_TPS_CONTROL_POINTS`.

    Example:
        >>> tps_control_points(4)
        tensor([[-1., -1.],
                [ 1., -1.],
                [-1.,  1.],
                [ 1.,  1.]])
    """
    n = math.isqrt(int(k))
    if n * n != k or n < 2:
        raise ValueError(f"TPS needs a square number of control points K = n*n >= 4, got K={k}")
    if k > MAX_TPS_CONTROL_POINTS:
        raise ValueError(f"TPS takes at most MAX_TPS_CONTROL_POINTS = {MAX_TPS_CONTROL_POINTS} control points, got K={k}")
    dtype = dtype or torch.get_default_dtype()
    lin = torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def _tps_radial(d2: torch.Tensor) -> torch.Tensor:
    """``U(r) = r^2 log r^2`` as a function of ``r^2``, with ``U(0) = 0``."""
    return d2 * torch.log(d2.clamp_min(1e-20))


def _tps_weights(source: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` weights so that ``weights @ targets`` is the TPS image of ``points (N, 2)``.

    Folds the kernel row of every point against the inverse of the ``(K + 3) x (K + 3)`` TPS
    system ``[[U(P), P1], [P1^T, 0]]`` built on ``source (K, 2)``. Float64 throughout.
    """
    p = source.detach().to(torch.float64)
    k = p.shape[0]
    p1 = torch.cat([torch.ones(k, 1, dtype=p.dtype, device=p.device), p], dim=1)  # (K, 3)
    system = torch.zeros(k + 3, k + 3, dtype=p.dtype, device=p.device)
    system[:k, :k] = _tps_radial(torch.cdist(p, p) ** 2)
    system[:k, k:] = p1
    system[k:, :k] = p1.T
    try:
        system_inv = torch.linalg.inv(system)
    except RuntimeError:
        raise ValueError("TPS source points are degenerate (collinear or repeated); expected points spanning the plane") from None
    x = points.detach().to(device=p.device, dtype=torch.float64)
    ones = torch.ones(len(x), 1, dtype=p.dtype, device=p.device)
    basis = torch.cat([_tps_radial(torch.cdist(x, p) ** 2), ones, x], dim=1)
    return basis @ system_inv[:, :k]


def tps_solve(source: torch.Tensor, size) -> torch.Tensor:
    """Solve the TPS system for rest points ``source (K, 2)`` once: returns ``(H * W, K)``.

    The returned matrix ``M`` maps target control points ``(B, K, 2)`` straight to a grid:
    ``grid = M @ targets``, so each forward pass is one matmul. Solved in float64 for accuracy,
    returned in ``source``'s dtype.

    Example (control points at rest give the identity grid):
        >>> rest = tps_control_points(9)
        >>> solved = tps_solve(rest, (8, 8))
        >>> solved.shape
        torch.Size([64, 9])
        >>> torch.allclose((solved @ rest).reshape(1, 8, 8, 2), pixel_centres((8, 8)).unsqueeze(0), atol=1e-5)
        True
    """
    _check_tensor(source, "TPS source points")
    if source.dim() != 2 or source.shape[1] != 2 or source.shape[0] < 3:
        raise ValueError(f"TPS source points must be (K, 2) with K >= 3, got shape {_shape(source)}")
    h, w = _check_grid_size(size, source.shape[0])  # the solved matrix is (H * W, K)
    base = _base_grid(h, w, source.device, torch.float64).reshape(-1, 2)
    return _tps_weights(source, base).to(source.dtype)


@lru_cache(maxsize=32)
def _regular_tps_matrix(k: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return tps_solve(tps_control_points(k, device=device, dtype=torch.float64), (h, w)).to(dtype)


def tps_grid(points: torch.Tensor, size, *, source: torch.Tensor | None = None, solved: torch.Tensor | None = None) -> torch.Tensor:
    """Thin-plate-spline grid ``(B, H, W, 2)``.

    ``points (B, K, 2)`` (or ``(B, 2K)``) are where the control points land in the input; at rest
    (``points == source``) the grid is the identity. ``source (K, 2)`` defaults to
    :func:`tps_control_points` (a regular lattice), whose solved system is cached per
    ``(K, size, device, dtype)``. Pass ``solved`` (from :func:`tps_solve`) to reuse your own.

    Example (moving every control point by the same shift is that translation):
        >>> rest = tps_control_points(16).unsqueeze(0)  # (1, 16, 2)
        >>> grid = tps_grid(rest + torch.tensor([0.2, 0.0]), (8, 8))
        >>> torch.allclose(grid, translation_grid(torch.tensor([[0.2, 0.0]]), (8, 8)), atol=1e-5)
        True
    """
    points = _check_tps_points(points)
    h, w = _check_grid_size(size, points.shape[0])
    k = points.shape[1]
    if solved is None:
        if source is None:
            solved = _regular_tps_matrix(k, h, w, points.device, points.dtype)
        else:
            solved = tps_solve(source.to(points), (h, w))
    if solved.shape != (h * w, k):
        raise ValueError(f"solved TPS matrix must be (H*W, K) = ({h * w}, {k}), got {_shape(solved)}")
    return (solved.to(points) @ points).reshape(points.shape[0], h, w, 2)


def _need_components(components):
    if components is None:
        raise ValueError("family 'restricted' needs components=..., got None")
    return _expand_components(components)


def _tps_count(control_points: int) -> int:
    tps_control_points(control_points)  # validates K
    return 2 * control_points


def _tps_shaped(params: torch.Tensor) -> torch.Tensor:
    return params.reshape(params.shape[0], -1, 2) if params.dim() == 2 else params


class Family(NamedTuple):
    """One row of :data:`FAMILY_TABLE`: everything the package knows about a transform family.

    Attributes:
        name: the family's name (``family=`` everywhere).
        display: a short human name for menus and captions.
        is_affine: whether the parameters give an affine theta ``(B, 2, 3)`` (``to_matrix(...)[:, :2]``);
            ``projective`` has a matrix too (``to_matrix`` gives its ``(B, 3, 3)``), but not an affine one.
        param_shape: the canonical parameter shape, for docs and error messages.
        count: ``(components, control_points) -> P``, the number of flat parameters.
        identity: ``(components, control_points, dtype, device) -> (P,)`` flat identity.
        shaped: flat ``(B, P)`` -> canonical parameters (``(B, 2, 3)``, ``(B, K, 2)``, ...).
        matrix: canonical parameters, components -> ``(B, 3, 3)``, or ``None`` (TPS).
        grid: ``(params, size, components, **kwargs) -> (B, H, W, 2)``.

    Example:
        >>> f = FAMILY_TABLE["attention"]
        >>> f.name, f.is_affine, f.param_shape, f.count(None, 16)
        ('attention', True, '(B, 3)', 3)
    """

    name: str
    display: str
    is_affine: bool
    param_shape: str
    count: object
    identity: object
    shaped: object
    matrix: object
    grid: object


def _const(values):
    return lambda components, k, dtype, device: torch.tensor(values, dtype=dtype, device=device)


#: The per-family table: the one place a family's facts live (used by to_matrix, make_grid,
#: num_params, identity_params, shape_params, the transformer module, capture and the widgets).
FAMILY_TABLE: dict[str, Family] = {f.name: f for f in (
    Family("affine", "affine (6)", True, "(B, 2, 3) or (B, 6)", lambda c, k: 6,
           _const([1.0, 0, 0, 0, 1, 0]), lambda p: p.reshape(-1, 2, 3),
           lambda p, c: _homogeneous(_check_theta(p)), lambda p, size, c, **kw: affine_grid(p, size)),
    Family("attention", "attention (s, tx, ty)", True, "(B, 3)", lambda c, k: 3,
           _const([1.0, 0, 0]), lambda p: p,
           lambda p, c: _homogeneous(attention_to_theta(p)), lambda p, size, c, **kw: attention_grid(p, size)),
    Family("restricted", "restricted (named components)", True, "(B, P)", lambda c, k: len(_need_components(c)),
           lambda c, k, dtype, device: torch.tensor([_RESTRICTED_IDENTITY[n] for n in _need_components(c)],
                                                    dtype=dtype, device=device),
           lambda p: p,
           lambda p, c: _homogeneous(restricted_to_theta(p, _need_components(c))),
           lambda p, size, c, **kw: restricted_grid(p, size, _need_components(c))),
    Family("translation", "translation (tx, ty)", True, "(B, 2)", lambda c, k: 2,
           _const([0.0, 0.0]), lambda p: p,
           lambda p, c: _homogeneous(translation_to_theta(p)), lambda p, size, c, **kw: translation_grid(p, size)),
    Family("projective", "projective (homography)", False, "(B, 3, 3), (B, 9) or (B, 8)", lambda c, k: 8,
           _const([1.0, 0, 0, 0, 1, 0, 0, 0]), lambda p: p,
           lambda p, c: _check_homography(p), lambda p, size, c, **kw: projective_grid(p, size)),
    Family("tps", "thin-plate spline", False, "(B, K, 2) or (B, 2K)", lambda c, k: _tps_count(k),
           lambda c, k, dtype, device: tps_control_points(k, dtype=dtype, device=device).reshape(-1),
           _tps_shaped, None, lambda p, size, c, **kw: tps_grid(p, size, **kw)),
)}

#: Every family, in the table's order.
FAMILIES = tuple(FAMILY_TABLE)

#: Families whose parameters give an affine theta ``(B, 2, 3)`` (``Family.is_affine``).
AFFINE_FAMILIES = tuple(n for n, f in FAMILY_TABLE.items() if f.is_affine)


def family_info(family: str) -> Family:
    """The :class:`Family` row of ``family``; ``ValueError`` naming the known ones otherwise.

    Example:
        >>> family_info("tps").is_affine, family_info("tps").display
        (False, 'thin-plate spline')
        >>> family_info("similarity")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: family must be one of ('affine', 'attention', ...), got 'similarity'
    """
    try:
        return FAMILY_TABLE[family]
    except (KeyError, TypeError):
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}") from None


def shape_params(params: torch.Tensor, family: str) -> torch.Tensor:
    """Flat parameters ``(B, P)`` (what a localisation net regresses) -> the family's canonical
    shape (affine ``(B, 2, 3)``, TPS ``(B, K, 2)``, others unchanged). Already-shaped input passes.

    Example:
        >>> shape_params(torch.zeros(4, 6), "affine").shape, shape_params(torch.zeros(4, 18), "tps").shape
        (torch.Size([4, 2, 3]), torch.Size([4, 9, 2]))
    """
    return family_info(family).shaped(params)


def make_grid(params: torch.Tensor, family: str, size, *, components: Sequence[str] | None = None, **kwargs) -> torch.Tensor:
    """Sampling grid ``(B, H, W, 2)`` for any family (see the table in the module docstring).

    ``components`` is needed for ``restricted``; ``source`` / ``solved`` may be passed for ``tps``.
    
    Example:
        >>> make_grid(torch.tensor([[0.5, 0.2, 0.0]]), "attention", (3, 3)).shape  # (s, tx, ty)
        torch.Size([1, 3, 3, 2])
    """
    return family_info(family).grid(params, size, components, **kwargs)


def num_params(family: str, *, components: Sequence[str] | None = None, control_points: int = 16) -> int:
    """How many numbers a localisation net regresses for ``family``.

    Example:
        >>> num_params("affine"), num_params("tps", control_points=9)
        (6, 18)
        >>> num_params("restricted", components=("rotation", "translation"))
        3
    """
    return family_info(family).count(components, control_points)


def identity_params(
    family: str, *, components: Sequence[str] | None = None, control_points: int = 16, dtype=None, device=None
) -> torch.Tensor:
    """The flat identity parameter vector ``(P,)`` of ``family`` (the bias an STN starts from).

    Flat layouts: affine row-major theta (6); attention ``(s, tx, ty)``; translation ``(tx, ty)``;
    projective the first 8 entries of ``I`` (``h33 = 1``); restricted the identity value of each
    component; tps the lattice of :func:`tps_control_points` flattened ``(x0, y0, x1, y1, ...)``.

    Example:
        >>> identity_params("attention"), identity_params("restricted", components=("rotation", "scale"))
        (tensor([1., 0., 0.]), tensor([0., 1.]))
    """
    return family_info(family).identity(components, control_points, dtype or torch.get_default_dtype(), device)


# --------------------------------------------------------------------------- sampling


def warp(image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros", *,
         align_corners: bool = ALIGN_CORNERS) -> torch.Tensor:
    """Sample ``image (B, C, H_in, W_in)`` at ``grid (B, H, W, 2)`` -> ``(B, C, H, W)``.

    Any number of channels in one call. ``mode``: ``bilinear``, ``nearest`` or ``bicubic``;
    ``padding_mode``: ``zeros``, ``border`` or ``reflection`` (what out-of-image samples read).
    Uses ``torch.nn.functional.grid_sample``
    with the package's ``align_corners`` unless told otherwise: a capture record's ``sampling``
    holds the code's own settings, so ``warp(r.input, r.grid, **r.sampling)`` reproduces
    ``r.output``.
    Images must be floating point (``[0, 1]`` for pictures; feature maps may hold any value).
    
    Example:
        >>> img = torch.arange(16.0).view(1, 1, 4, 4)
        >>> identity = affine_grid(torch.eye(2, 3).unsqueeze(0), (4, 4))
        >>> torch.equal(warp(img, identity), img)
        True
    """
    _check_tensor(image, "image")
    _check_tensor(grid, "grid")
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {_shape(image)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point (e.g. in [0, 1]), got {image.dtype}; convert with image.float() / 255")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0 or image.shape[3] == 0:
        raise ValueError(f"image must be non-empty (B, C, H, W), got shape {_shape(image)}")
    if grid.dim() != 4 or grid.shape[-1] != 2:
        raise ValueError(f"grid must be (B, H, W, 2), got shape {_shape(grid)}")
    if grid.shape[0] != image.shape[0]:
        raise ValueError(f"grid batch {grid.shape[0]} must match image batch {image.shape[0]}")
    if mode not in _WARP_MODES:
        raise ValueError(f"mode must be one of {_WARP_MODES}, got {mode!r}")
    if padding_mode not in _PADDINGS:
        raise ValueError(f"padding_mode must be one of {_PADDINGS}, got {padding_mode!r}")
    if grid.dtype != image.dtype:
        grid = grid.to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=bool(align_corners))


# --------------------------------------------------------------------------- pixel conventions


def _in_float64(m: torch.Tensor) -> torch.Tensor:
    """``m`` in float64 for the pixel / normalised conversions, which are exact in theory: in
    float32 their last bits differ between CPU kernels (``0.0000`` on one machine, ``-5.96e-08`` on
    another). MPS has no float64, so there the sums run on the CPU."""
    return m.to(device="cpu" if m.device.type == "mps" else m.device, dtype=torch.float64)


def _like(out: torch.Tensor, ref: torch.Tensor, affine: bool) -> torch.Tensor:
    """A float64 result back in ``ref``'s dtype and device; an affine ``(B, 3, 3)`` keeps an exact
    last row ``[0, 0, 1]``."""
    # float64 rounding noise (|x| ~ 1e-16 of the matrix's scale) is an exact zero in theory
    scale = out.abs().flatten(1).amax(1).clamp_min(1.0).view(-1, 1, 1)
    out = torch.where(out.abs() <= 64 * torch.finfo(torch.float64).eps * scale, torch.zeros_like(out), out)
    if affine and out.shape[1] == 3:
        out[:, 2] = out.new_tensor([0.0, 0.0, 1.0])
    return out.to(device=ref.device, dtype=ref.dtype)


def _normaliser(h: int, w: int, align_corners: bool, ref: torch.Tensor) -> torch.Tensor:
    """``(3, 3)`` matrix taking pixel coordinates (centre of pixel i at i) to normalised ones."""
    if align_corners:
        if h < 2 or w < 2:
            raise ValueError(f"align_corners=True needs H, W >= 2, got ({h}, {w})")
        sx, sy, ox, oy = 2.0 / (w - 1), 2.0 / (h - 1), -1.0, -1.0
    else:
        sx, sy, ox, oy = 2.0 / w, 2.0 / h, 1.0 / w - 1.0, 1.0 / h - 1.0
    return ref.new_tensor([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])


def theta_to_pixel(
    params: torch.Tensor, input_size, output_size=None, *, align_corners: bool = ALIGN_CORNERS, inverse_map: bool = False
) -> torch.Tensor:
    """Normalised theta ``(B, 2, 3)`` or homography ``(B, 3, 3)`` -> pixel matrix ``(B, 3, 3)``.

    By default the result is OpenCV's ``warpAffine`` / ``warpPerspective`` matrix ``M``: it maps
    *input* pixel coordinates to *output* pixel coordinates, so
    ``cv2.warpAffine(img, M[:2], (W_out, H_out))`` reproduces the STN's output (up to
    interpolation). With ``inverse_map=True`` it returns the output -> input map (OpenCV's
    ``WARP_INVERSE_MAP``). ``align_corners`` says which normalisation ``params`` was made with
    (the package uses ``False``; pass ``True`` for theta from code that used ``align_corners=True``).
    Sizes are ``(H, W)``; ``output_size`` defaults to ``input_size``.
    
    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> theta_to_pixel(theta, (28, 28))[0]  # OpenCV's warpAffine matrix: input -> output pixels
        tensor([[  2.0000,   0.0000, -13.5000],
                [  0.0000,   2.0000, -13.5000],
                [  0.0000,   0.0000,   1.0000]])
    """
    _check_tensor(params, "params")
    affine = params.shape[1:] in ((2, 3), (6,))
    ref = _homogeneous(_check_theta(params)) if affine else _check_homography(params)
    hi, wi = _check_size(input_size)
    ho, wo = _check_size(output_size if output_size is not None else input_size)
    m = _in_float64(ref)
    n_in = _normaliser(hi, wi, align_corners, m)
    n_out = _normaliser(ho, wo, align_corners, m)
    sample_map = torch.linalg.inv(n_in) @ m @ n_out  # output pixel -> input pixel
    return _like(sample_map if inverse_map else invert(sample_map), ref, affine)


def pixel_to_theta(
    matrix: torch.Tensor, input_size, output_size=None, *, align_corners: bool = ALIGN_CORNERS, inverse_map: bool = False
) -> torch.Tensor:
    """Inverse of :func:`theta_to_pixel`: pixel matrix ``(B, 3, 3)`` or ``(B, 2, 3)`` -> normalised.

    Returns theta ``(B, 2, 3)`` when the matrix is affine (last row ``[0, 0, 1]``), else a
    homography ``(B, 3, 3)``.

    Example (an OpenCV matrix moving the content 7 pixels right on a 28-pixel-wide image samples
    the input a quarter of its width, -0.5 in normalised units, to the left):
        >>> m = torch.tensor([[[1.0, 0.0, 7.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> pixel_to_theta(m, (28, 28))
        tensor([[[ 1.0000,  0.0000, -0.5000],
                 [ 0.0000,  1.0000,  0.0000]]])
    """
    _check_tensor(matrix, "matrix")
    if matrix.dim() == 3 and matrix.shape[1:] == (2, 3):
        ref = _homogeneous(_check_theta(matrix, "matrix"))
    else:
        ref = _check_homography(matrix, "matrix")
    affine = bool(torch.all(ref[:, 2, :2] == 0)) and bool(torch.all(ref[:, 2, 2] == 1))
    m = _in_float64(ref)
    sample_map = m if inverse_map else invert(m)
    hi, wi = _check_size(input_size)
    ho, wo = _check_size(output_size if output_size is not None else input_size)
    n_in = _normaliser(hi, wi, align_corners, m)
    n_out = _normaliser(ho, wo, align_corners, m)
    out = _like(n_in @ sample_map @ torch.linalg.inv(n_out), ref, affine)
    return out[:, :2] if affine else out


# --------------------------------------------------------------------------- sampled region


def _outline_points(n: int, ref: torch.Tensor) -> torch.Tensor:
    """``(4 * n, 2)`` points around the output border, clockwise on screen from the top-left."""
    t = torch.linspace(-1.0, 1.0, n + 1, dtype=ref.dtype, device=ref.device)[:-1]
    one = torch.ones_like(t)
    top = torch.stack([t, -one], 1)
    right = torch.stack([one, t], 1)
    bottom = torch.stack([-t, one], 1)
    left = torch.stack([-one, -t], 1)
    return torch.cat([top, right, bottom, left], 0)


def _map_points(params: torch.Tensor, family: str, pts: torch.Tensor, components) -> torch.Tensor:
    """Map normalised output points ``(N, 2)`` to normalised input points ``(B, N, 2)``."""
    if family == "tps":
        params = _check_tps_points(params)
        src = tps_control_points(params.shape[1], device=params.device, dtype=torch.float64)
        return _tps_weights(src, pts).to(params.dtype) @ params
    m = to_matrix(params, family, components=components)
    return _apply_homography(m, pts.to(m.dtype).expand(m.shape[0], -1, -1), family)


def grid_to_pixels(grid: torch.Tensor, input_size, *, align_corners: bool = ALIGN_CORNERS) -> torch.Tensor:
    """Normalised points ``(..., 2)`` (e.g. a grid ``(B, H, W, 2)``) -> input pixel coordinates
    (pixel centres at integers), same shape. ``align_corners`` is the normalisation the points
    were made in (the package's ``False``: -1 and 1 are the outer pixel edges; ``True``: they are
    the centres of the border pixels).

    Example (the left edge, the centre and the right edge of a 28-pixel-wide image):
        >>> grid_to_pixels(torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0]]), (28, 28))
        tensor([[-0.5000, -0.5000],
                [13.5000, 13.5000],
                [27.5000, 27.5000]])
    """
    _check_tensor(grid, "grid")
    if grid.shape[-1] != 2:
        raise ValueError(f"grid must end in a (x, y) dimension of 2, got shape {_shape(grid)}")
    h, w = _check_size(input_size)
    g = _in_float64(grid)
    if align_corners:
        pixels = torch.stack([(g[..., 0] + 1) * (w - 1) / 2, (g[..., 1] + 1) * (h - 1) / 2], dim=-1)
    else:
        pixels = torch.stack([(g[..., 0] + 1) * w / 2 - 0.5, (g[..., 1] + 1) * h / 2 - 0.5], dim=-1)
    return pixels.to(device=grid.device, dtype=grid.dtype if grid.is_floating_point() else torch.get_default_dtype())


def convert_align_corners(params: torch.Tensor, input_size, output_size=None, *, source: bool,
                          target: bool = ALIGN_CORNERS) -> torch.Tensor:
    """Theta ``(B, 2, 3)`` or homography ``(B, 3, 3)`` made for ``align_corners=source`` -> the
    same pixel mapping for ``align_corners=target`` (default: the package's), same shape.

    Sizes are ``(H, W)`` of the sampled input and of the output grid (default: the input's).
    Example: ``convert_align_corners(theta_from_kornia, (H, W), source=True)`` is the theta that
    ``affine_grid(..., align_corners=False)`` needs to sample the same points.
    

    Example (a shift of half the image, made with ``align_corners=True``, is 1.75 pixels on an
    8-pixel-wide input, which is 0.4375 in stnviz's normalisation):
        >>> theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]])
        >>> [round(v, 4) for v in convert_align_corners(theta, (8, 8), source=True)[0, 0].tolist()]
        [1.0, 0.0, 0.4375]
    """
    _check_tensor(params, "params")
    affine = params.dim() == 3 and params.shape[1:] == (2, 3)
    ref = _homogeneous(_check_theta(params)) if affine else _check_homography(params)
    if source == target:
        return params.clone()
    hi, wi = _check_size(input_size)
    ho, wo = _check_size(output_size if output_size is not None else input_size)
    m = _in_float64(ref)
    # pixel -> normalised matrices of each convention; theta maps output to input coordinates
    to_target_in = _normaliser(hi, wi, target, m) @ torch.linalg.inv(_normaliser(hi, wi, source, m))
    from_target_out = _normaliser(ho, wo, source, m) @ torch.linalg.inv(_normaliser(ho, wo, target, m))
    out = _like(to_target_in @ m @ from_target_out, ref, affine)
    return out[:, :2] if affine else out



def sampled_corners(
    params: torch.Tensor, family: str, input_size, *, components: Sequence[str] | None = None
) -> torch.Tensor:
    """Corners of the sampled region in input pixel coordinates, ``(B, 4, 2)`` as ``(x, y)``.

    The output image's outer corners (normalised ``(-1,-1), (1,-1), (1,1), (-1,1)``: top-left,
    top-right, bottom-right, bottom-left) mapped into the input and converted to pixels with
    pixel centres at integers (the image spans ``[-0.5, W - 0.5]``). ``input_size = (H, W)``.
    For TPS the region is curved between corners: use :func:`sampled_outline` to draw it.
    
    Example:
        >>> sampled_corners(torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]]), "affine", (28, 28))
        tensor([[[ 6.5000,  6.5000],
                 [20.5000,  6.5000],
                 [20.5000, 20.5000],
                 [ 6.5000, 20.5000]]])
    """
    ref = params if isinstance(params, torch.Tensor) and params.is_floating_point() else torch.zeros(1)
    corners = ref.new_tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    return grid_to_pixels(_map_points(params, family, corners, components), input_size)


def sampled_outline(
    params: torch.Tensor, family: str, input_size, *, components: Sequence[str] | None = None, points_per_side: int = 16
) -> torch.Tensor:
    """Outline of the sampled region in input pixels, ``(B, 4 * points_per_side, 2)``.

    The output border traced clockwise (on screen) from the top-left corner, mapped into the input;
    straight for matrix families, curved for TPS. Same pixel convention as :func:`sampled_corners`.

    Example:
        >>> theta = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])  # zoom in 2x on the centre
        >>> sampled_outline(theta, "affine", (28, 28)).shape
        torch.Size([1, 64, 2])
        >>> sampled_outline(theta, "affine", (28, 28), points_per_side=2)[0, :3]  # the top side, left to right
        tensor([[ 6.5000,  6.5000],
                [13.5000,  6.5000],
                [20.5000,  6.5000]])
    """
    if points_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    ref = params if isinstance(params, torch.Tensor) and params.is_floating_point() else torch.zeros(1)
    pts = _outline_points(points_per_side, ref)
    return grid_to_pixels(_map_points(params, family, pts, components), input_size)
