"""The checks: one small function per check id, each with its thresholds and why they are there.

Each takes a :class:`Subject` (one record, its :class:`~stnviz.diagnose.measures.Measures`, the
batch's other records) and returns one :class:`~stnviz.diagnose.findings.Finding`. Per-sample
figures are judged on the batch's *median* sample (what the transformer typically does) unless a
check says otherwise; the samples beyond the warning threshold are the finding's ``samples``.

Calibration (``stnviz.load_pretrained`` on its own data, 256 samples; the zoo of broken STNs in
``tests/diagnose_zoo.py``): the shipped crops sample 0.33-0.93 of their input's area, the tutorial
network 1.44 (a mild zoom-out, reported); the shipped grids put at most 0.31 of their points outside
the input (the tutorial; a rotation-only model 0.13), move 0.09-5.6 input pixels between inputs,
skip at most 1.6 input pixels per output pixel and magnify at most 1.7x, with condition numbers
under 1.5, no mirroring and no folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: F401 (the examples)

from .. import geometry
from .findings import Finding
from .measures import Measures

__all__ = ["CHECKS", "Subject", "no_effect", "run_checks"]


@dataclass
class Subject:
    """What the checks look at: ``record`` (a 2-D or 3-D capture record), its ``measures``
    (``None`` where they can't be taken: 3-D, a grid under 2 x 2, a non-image role), the model's
    input batch shape ``image_shape (C, H, W)`` and ``earlier``: the records called before it."""

    record: object
    measures: Measures | None
    image_shape: tuple
    earlier: list = field(default_factory=list)


def _grade(value: float, warning: float, error: float, *, above: bool = True) -> tuple[str, float]:
    """``(severity, threshold)``: ``value`` beyond ``error`` is an error, beyond ``warning`` a
    warning (``above=False``: below them); NaN is ok."""
    if value != value:
        return "ok", warning
    worse = (lambda v, t: v > t) if above else (lambda v, t: v < t)
    if worse(value, error):
        return "error", error
    if worse(value, warning):
        return "warning", warning
    return "ok", warning


def _median(t: torch.Tensor) -> float:
    t = t[torch.isfinite(t)]
    return float(t.median()) if t.numel() else float("nan")


def _where(mask: torch.Tensor) -> tuple:
    return tuple(int(i) for i in torch.nonzero(mask).flatten())


def _not_measured(check: str, s: Subject, why: str) -> Finding:
    return Finding(check, s.record.key, "ok", float("nan"), float("nan"), f"not measured: {why}")


def _why_not_measured(s: Subject) -> str:
    r = s.record
    if r.spatial_dims != 2:
        return "a 3-D sampler"
    if r.role != "image":
        return f"a {r.role!r} record, not an image warp"
    return f"the output grid {tuple(r.grid.shape[1:3])} is smaller than 2 x 2"


# --------------------------------------------------------------------------- region size

# Warning above 1.2x the input's area: the content then fills under 83% of the output (the rest is
# padding), the start of the known zoom-out collapse; error above 2x: over half the output is padding.
ZOOM_OUT = (1.2, 2.0)


def _zoom_out(s: Subject) -> Finding:
    m = s.measures
    value = _median(m.area_ratio)
    severity, threshold = _grade(value, *ZOOM_OUT)
    side = math.sqrt(value) if value == value else float("nan")
    return Finding(
        "zoom_out", s.record.key, severity, value, threshold,
        f"the sampled region is {value:.2f}x the input's area ({side:.2f}x its side) in the median sample, "
        f"so the content shrinks to {min(1.0, 1 / value) if value else 0:.0%} of the output and padding fills the rest"
        if severity != "ok" else f"the sampled region is {value:.2f}x the input's area in the median sample",
        "bring the area ratio from {0:.2f} under {1}: start the localisation net's last layer at the identity "
        "(weight 0, bias [1, 0, 0, 0, 1, 0]), keep images in [0, 1] and normalise after grid_sample, lower the "
        "localisation learning rate (fit(loc_lr=...)) or penalise regions leaving the input (fit(region_penalty=1.0))"
        .format(value, ZOOM_OUT[0]),
        _where(m.area_ratio > ZOOM_OUT[0]))


# Warning when over half the grid samples padding (zero gradient from those points with zero padding);
# error above 90%: the output is nearly all padding, the sampler is dead. The shipped models stay under 31%.
OUTSIDE_IMAGE = (0.5, 0.9)


def _outside_image(s: Subject) -> Finding:
    m = s.measures
    value = _median(m.outside_share)
    severity, threshold = _grade(value, *OUTSIDE_IMAGE)
    return Finding(
        "outside_image", s.record.key, severity, value, threshold,
        f"{value:.0%} of the grid points fall outside the input in the median sample"
        + (" (they read padding and get no gradient with zero padding)" if severity != "ok" else ""),
        f"bring the share outside from {value:.0%} under {OUTSIDE_IMAGE[0]:.0%}: bound theta's translation "
        "and scale (e.g. tanh on the localisation output), start at the identity, or sample with "
        "grid_sample(..., padding_mode='border') so outside points still carry gradient",
        _where(m.outside_share > OUTSIDE_IMAGE[0]))


# Bilinear sampling reads 2 x 2 neighbours: a step of more than 2 input pixels per output pixel skips
# pixels (aliasing), more than 4 skips most of them. A magnification above 4x (each input pixel over
# 4 x 4 output pixels) blurs a tiny region; above 8x it is all interpolation. Shipped: step <= 1.6, zoom <= 1.7.
ALIASING = (2.0, 4.0)
MAGNIFICATION = (4.0, 8.0)


def _over_zoom(s: Subject) -> Finding:
    m = s.measures
    step, zoom = _median(m.step_max), _median(m.zoom)
    by_step, by_zoom = _grade(step, *ALIASING), _grade(zoom, *MAGNIFICATION)
    key = s.record.key
    if step / ALIASING[0] >= zoom / MAGNIFICATION[0]:
        severity, threshold = by_step
        return Finding(
            "over_zoom", key, severity, step, threshold,
            f"each output pixel steps {step:.2f} input pixels in the median sample"
            + (", so bilinear sampling skips pixels and aliases" if severity != "ok" else ""),
            f"bring the step from {step:.2f} under {ALIASING[0]}: make the output larger (the size passed to "
            "affine_grid), smooth or downsample the input before grid_sample (F.avg_pool2d, antialiased resize), "
            "or bound the scale the localisation net may predict",
            _where(m.step_max > ALIASING[0]))
    severity, threshold = by_zoom
    return Finding(
        "over_zoom", key, severity, zoom, threshold,
        f"the region is magnified {zoom:.2f}x in the median sample"
        + (", a tiny region blown up into a blur" if severity != "ok" else ""),
        f"bring the magnification from {zoom:.2f}x under {MAGNIFICATION[0]}x: bound the scale from below "
        "(e.g. scale = 0.25 + sigmoid(...) in a restricted transformer), or penalise small regions",
        _where(m.zoom > MAGNIFICATION[0]))


# --------------------------------------------------------------------------- does it do anything


# Warning when the grid moves under 0.25 input pixels between samples (sub-pixel: every input gets
# the same sampling) while the inputs differ (their spread above 1% of their range); error under 0.02.
# Shipped: stn_gtsrb.gtsrb's first transformer moves 0.09 px (a true finding: it crops every sign
# alike), the others 0.4-5.6 px.
INPUT_INDEPENDENT = (0.25, 0.02)
INPUTS_DIFFER = 0.01


def _input_independent(s: Subject) -> Finding:
    m = s.measures
    value = m.grid_spread_px
    key = s.record.key
    if value != value or m.input_spread <= INPUTS_DIFFER:
        why = "fewer than 2 samples" if value != value else f"the inputs barely differ (spread {m.input_spread:.3f})"
        return _not_measured("input_independent", s, why)
    severity, threshold = _grade(value, *INPUT_INDEPENDENT, above=False)
    return Finding(
        "input_independent", key, severity, value, threshold,
        f"the grid moves {value:.3f} input pixels between samples while the inputs differ by "
        f"{m.input_spread:.0%} of their range" + ("; the localisation net ignores its input" if severity != "ok" else ""),
        f"make the grid's spread ({value:.3f} px) exceed {INPUT_INDEPENDENT[0]} px: check that the localisation "
        "net is fed the image (not a constant or a detached copy), that its last Linear layer has trainable "
        "weights (not only the bias), lower its weight decay or raise its learning rate (fit(loc_lr=...))",
        _where(torch.ones_like(m.finite)) if severity != "ok" else ())


# Warning when the median sample's grid is within 0.25 input pixels of the identity grid: the
# transformer passes the image through. Shipped: 0.41 px and up.
IDENTITY = (0.25, 0.02)


def _identity(s: Subject) -> Finding:
    m = s.measures
    value = _median(m.identity_px)
    severity, threshold = _grade(value, *IDENTITY, above=False)
    severity = "warning" if severity == "error" else severity  # doing nothing is never broken in itself
    return Finding(
        "identity", s.record.key, severity, value, threshold,
        f"the grid is {value:.3f} input pixels from the identity in the median sample"
        + ("; the transformer passes its input through" if severity != "ok" else ""),
        f"move the grid further than {IDENTITY[0]} px from the identity (now {value:.3f} px): check that theta's "
        "Linear layer is trainable and in the optimizer (requires_grad, its parameters passed to the optimizer), "
        "raise the localisation learning rate, and train on data that needs a transform (e.g. RTS MNIST)",
        _where(m.identity_px < IDENTITY[0]))


# --------------------------------------------------------------------------- geometry gone wrong

# A sample is degenerate when its mean Jacobian mirrors (a reflection), or its condition number exceeds
# 4 (one axis squeezed 4x more than the other: extreme shear or aspect; shipped <= 1.5), or a projective
# denominator changes sign over the output (points at infinity). Warning when over 1% of the samples
# are, error over 25%.
CONDITION = 4.0
DEGENERATE = (0.01, 0.25)


def _projective_denominator_flips(record) -> torch.Tensor:
    """bool ``(B,)``: the projective denominator ``h31 x + h32 y + h33`` changes sign (or vanishes)
    over the output's pixel centres."""
    if record.family != "projective" or record.params is None:
        return torch.zeros(record.grid.shape[0], dtype=torch.bool)
    h = geometry.to_matrix(record.params.double(), "projective")
    pts = geometry.pixel_centres(record.output_size, dtype=torch.float64).reshape(-1, 2)
    den = pts @ h[:, 2, :2].transpose(0, 1) + h[:, 2, 2]  # (N, B)
    return (den.amin(0) * den.amax(0)) <= 0


def _degenerate(s: Subject) -> Finding:
    m = s.measures
    bad_cond = torch.nan_to_num(m.condition, nan=0.0, posinf=math.inf) > CONDITION
    flips = _projective_denominator_flips(s.record)
    bad = m.finite & (m.mirrored | bad_cond | flips)
    value = float(bad.double().mean())
    severity, threshold = _grade(value, *DEGENERATE)
    parts = [f"{int(m.mirrored.sum())} mirrored", f"{int((m.finite & bad_cond).sum())} with a condition number over {CONDITION:g}"]
    if s.record.family == "projective":
        parts.append(f"{int(flips.sum())} with points at infinity")
    return Finding(
        "degenerate", s.record.key, severity, value, threshold,
        f"{value:.0%} of the samples are degenerate ({', '.join(parts)}; median condition number "
        f"{_median(m.condition):.2f})",
        f"bring the degenerate share from {value:.0%} under {DEGENERATE[0]:.0%}: predict a restricted transform "
        "(rotation, scale, translation) instead of a free 2x3 theta, or bound the linear part (e.g. tanh on it, "
        "a positive scale); for a homography keep h31, h32 small",
        _where(bad))


# A sample folds when more than 1% of its grid cells have the opposite orientation to the sample's
# own (the grid crosses over itself: a TPS or flow turning the image inside out). Warning when over
# 1% of the samples fold, error over 25%. Affine grids never fold; the shipped TPS does not.
FOLD_CELLS = 0.01
FOLD = (0.01, 0.25)


def _fold(s: Subject) -> Finding:
    m = s.measures
    folds = m.finite & (torch.nan_to_num(m.folded_share) > FOLD_CELLS)
    value = float(folds.double().mean())
    severity, threshold = _grade(value, *FOLD)
    return Finding(
        "fold", s.record.key, severity, value, threshold,
        f"{value:.0%} of the samples fold over themselves (up to {float(torch.nan_to_num(m.folded_share).max()):.0%} "
        "of a grid's cells flipped)",
        f"bring the folding share from {value:.0%} under {FOLD[0]:.0%}: regularise the warp (a bending-energy or "
        "smoothness penalty on the TPS / flow), use fewer control points, or bound their offsets (tanh)",
        _where(folds))


# --------------------------------------------------------------------------- how it is wired

# A sampler input equal to an earlier sampler's output (Pearson correlation above 0.999 over the
# batch, so a normalisation in between still counts): the second warp resamples an already
# resampled image, and the boundary losses of both compound.
STACKED = 0.999


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else float(torch.equal(a, b))


def _stacked_warps(s: Subject) -> Finding:
    r = s.record
    best, source = 0.0, None
    for e in s.earlier:
        if e.output.shape == r.input.shape and e.role == "image":
            c = _correlation(e.output, r.input)
            if c > best:
                best, source = c, e.key
    severity = "warning" if best > STACKED else "ok"
    return Finding(
        "stacked_warps", r.key, severity, best, STACKED,
        f"its input matches the output of {source!r} (correlation {best:.4f}): a warp of a warp"
        if severity != "ok" else f"its input is no earlier sampler's output (best correlation {best:.4f})",
        f"compose the transforms and sample the original image once (correlation {best:.4f} with "
        f"{source!r}'s output): theta = theta_1 @ theta_2 in homogeneous form (stnviz.geometry.to_matrix), "
        "then one grid_sample",
        _where(torch.ones(r.grid.shape[0], dtype=torch.bool)) if severity != "ok" else ())


# The capture turns theta into stnviz's convention with affine_grid's align_corners; remade with that
# convention, its grid must land on the pixels grid_sample read (with grid_sample's align_corners).
# Equal settings agree to float rounding; different ones disagree by up to half a pixel at the border.
ALIGN_CORNERS_PX = 0.05


def _align_corners_mismatch(s: Subject) -> Finding:
    r = s.record
    if r.params is None or r.family is None or r.family == "tps":
        return _not_measured("align_corners_mismatch", s, "the grid was not made from affine or projective parameters")
    finite = s.measures.finite
    if not bool(finite.any()):
        return _not_measured("align_corners_mismatch", s, "no sample has finite parameters")
    made = geometry.make_grid(r.params[finite].double(), r.family, r.output_size, components=r.components)
    ours = geometry.grid_to_pixels(made, r.input_size)
    gap = torch.full(finite.shape, torch.nan, dtype=torch.float64)
    gap[finite] = (ours - r.pixel_grid()[finite].double()).norm(dim=-1).flatten(1).amax(1)
    value = _median(gap)
    severity = "error" if value > ALIGN_CORNERS_PX else "ok"
    return Finding(
        "align_corners_mismatch", r.key, severity, value, ALIGN_CORNERS_PX,
        f"affine_grid and grid_sample disagree on align_corners: the grid lands up to {value:.3f} input pixels "
        "away from where theta points" if severity != "ok"
        else f"affine_grid's and grid_sample's align_corners agree (largest gap {value:.3f} px)",
        f"pass the same align_corners to F.affine_grid and F.grid_sample (e.g. both align_corners=False); "
        f"now theta's points move by up to {value:.3f} px",
        _where(gap > ALIGN_CORNERS_PX))


# Zero padding is background when the image's border is zero. Warning when the median border pixel
# differs from the padding value by over 10% of the input's range and either the grid reaches
# outside (over 1% of its points) or the input holds negative values (normalised before the
# transformer: the frame shows as soon as the region grows, the known road to zoom-out).
PADDING = 0.1
PADDING_REACHED = 0.01


def _padding_not_background(s: Subject) -> Finding:
    r = s.record
    if r.input.shape[1:] != tuple(s.image_shape):
        return _not_measured("padding_not_background", s, "the sampled input is a feature map, not the model's image")
    mode = r.sampling.get("padding_mode", "zeros")
    if mode != "zeros":
        return Finding("padding_not_background", r.key, "ok", 0.0, PADDING,
                       f"padding_mode={mode!r} repeats the image, so padding is never a frame")
    x = r.input[s.measures.finite].double()
    channels = r.image_channels or x.shape[1]
    x = x[:, :channels]
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 0], x[..., -1]], dim=-1)
    background = float(border.median())
    span = float(x.max() - x.min()) or 1.0
    value = abs(background) / span
    reached = _median(s.measures.outside_share)
    normalised = float(x.min()) < 0
    severity = "warning" if value > PADDING and (reached > PADDING_REACHED or normalised) else "ok"
    why = "the input has negative values (normalised before the transformer)" if normalised else \
        f"{reached:.0%} of the grid reads padding"
    return Finding(
        "padding_not_background", r.key, severity, value, PADDING,
        f"zero padding differs from the image's background {background:.3f} by {value:.0%} of the input's range "
        f"and {why}, so the region's outside shows as a frame" if severity != "ok"
        else f"the background {background:.3f} is {value:.0%} of the range from the zero padding",
        f"make the padding the background (now {background:.3f}, {value:.0%} of the range away): keep images in "
        "[0, 1] and normalise inside the model after grid_sample (not in the data pipeline), or pass "
        "padding_mode='border'",
        _where(s.measures.outside_share > PADDING_REACHED) if severity != "ok" else ())


# --------------------------------------------------------------------------- numbers

# The worst rounding of a grid coordinate, in input pixels: half the dtype's spacing just below 1
# (eps / 4) times the pixels per normalised unit (side / 2). Warning above 0.1 px (visible in sharp
# edges), error above 0.5 px (the sampler reads a neighbouring pixel). float16: 0.1 px at 410 pixels;
# bfloat16: at 52.
LOW_PRECISION = (0.1, 0.5)


def _low_precision_grid(s: Subject) -> Finding:
    r = s.record
    dtype = r.grid.dtype
    side = max(r.input_size)
    value = torch.finfo(dtype).eps / 4 * side / 2 if dtype.is_floating_point else float("nan")
    severity, threshold = _grade(value, *LOW_PRECISION)
    name = str(dtype).replace("torch.", "")
    return Finding(
        "low_precision_grid", r.key, severity, value, threshold,
        f"a {name} grid on a {side}-pixel input rounds coordinates by up to {value:.3f} input pixels",
        f"build the grid in float32 (grid.float(), or run affine_grid and grid_sample under "
        f"torch.autocast(..., enabled=False)); now {name} rounds by {value:.3f} px",
        _where(torch.ones(r.grid.shape[0], dtype=torch.bool)) if severity != "ok" else ())


def _non_finite(s: Subject) -> Finding:
    r = s.record
    rows = []
    for name in ("params", "grid", "output"):
        t = getattr(r, name)
        if t is not None and t.is_floating_point():
            rows.append((name, ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)))
    bad = torch.stack([b for _, b in rows]).any(0)
    value = float(bad.double().mean())
    where = [n if n != "params" else "theta" for n, b in rows if bool(b.any())]
    severity = "error" if value > 0 else "ok"
    return Finding(
        "non_finite", r.key, severity, value, 0.0,
        f"{value:.0%} of the samples have NaN or Inf in their {', '.join(where)}" if severity != "ok"
        else "theta, grid and output are finite in every sample",
        f"find why {value:.0%} of the samples blow up: lower the learning rate of the localisation net, clip "
        "gradients (torch.nn.utils.clip_grad_norm_), bound its output (tanh), and avoid dividing by a projective "
        "denominator near zero",
        _where(bad))


# --------------------------------------------------------------------------- the table

#: check id -> function, in the order the findings are listed; ``no_effect`` needs the model and
#: labels and is run by :func:`stnviz.diagnose.diagnose` itself (:func:`no_effect`).
CHECKS = {
    "zoom_out": _zoom_out,
    "outside_image": _outside_image,
    "over_zoom": _over_zoom,
    "input_independent": _input_independent,
    "identity": _identity,
    "degenerate": _degenerate,
    "fold": _fold,
    "stacked_warps": _stacked_warps,
    "align_corners_mismatch": _align_corners_mismatch,
    "padding_not_background": _padding_not_background,
    "low_precision_grid": _low_precision_grid,
    "non_finite": _non_finite,
    "no_effect": None,
}
#: the checks that need the grid's measures (a 2-D image warp of at least 2 x 2 output pixels)
_MEASURED = ("zoom_out", "outside_image", "over_zoom", "input_independent", "identity", "degenerate", "fold",
             "stacked_warps", "align_corners_mismatch", "padding_not_background")


def run_checks(s: Subject) -> list[Finding]:
    """Every check of :data:`CHECKS` but ``no_effect`` on one subject, in the table's order.

    Example (a capture record of a 1.8x zoom-out, judged on its own):
        >>> from stnviz.capture import collect_batch
        >>> from stnviz.diagnose import measure
        >>> class ZoomOut(torch.nn.Module):
        ...     def forward(self, x):
        ...         theta = 1.8 * torch.eye(2, 3).expand(len(x), 2, 3)
        ...         return F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        >>> _, rec = collect_batch(ZoomOut(), torch.rand(4, 1, 28, 28))
        >>> [(f.check, f.severity) for f in run_checks(Subject(rec[0], measure(rec[0]), (1, 28, 28)))][:2]
        [('zoom_out', 'error'), ('outside_image', 'warning')]
    """
    out = []
    for check, fn in CHECKS.items():
        if fn is None:
            continue
        if check in _MEASURED and s.measures is None:
            out.append(_not_measured(check, s, _why_not_measured(s)))
        else:
            out.append(fn(s))
    return out


# With labels: the transformer is not needed when swapping its grid for the identity grid costs
# under 1 percentage point of accuracy on the batch (2.5 samples of 256).
NO_EFFECT = 0.01


def no_effect(key: str, accuracy: float, without: float, n: int) -> Finding:
    """The ``no_effect`` finding of ``key``: ``accuracy`` as is, ``without`` with its grid replaced by
    the identity, on ``n`` labelled samples; ``value`` is the drop (``accuracy - without``).

    Example:
        >>> f = no_effect("stn", 0.99, 0.985, 256)
        >>> f.severity, round(f.value, 3), f.threshold
        ('warning', 0.005, 0.01)
    """
    drop = accuracy - without
    severity = "warning" if drop < NO_EFFECT else "ok"
    return Finding(
        "no_effect", key, severity, drop, NO_EFFECT,
        f"accuracy is {accuracy:.1%} with the transformer and {without:.1%} with its grid replaced by the identity "
        f"(a drop of {drop * 100:.1f} points on {n} samples)" + ("; the task does not need it" if severity != "ok" else ""),
        f"the transformer adds {drop * 100:.1f} accuracy points: train on data that needs it (rotated, scaled, "
        "translated or cluttered inputs, e.g. stnviz.data.DistortedMNIST(..., 'rts')) or drop the transformer",
    )
