"""The figures the checks judge, measured once per record from its grid (:class:`Measures`).

Everything is in *input pixels* (pixel centres at integers, the record's own ``align_corners``),
so non-square images and any output size are judged alike, and in float64.

* the grid's local Jacobian: for each cell of four neighbouring output pixels, how far the sampled
  point moves in the input per output pixel right (``du``) and down (``dv``); its determinant is
  the input area one output pixel covers (negative: mirrored);
* per sample: the sampled area against the input's (``area_ratio``), the mean Jacobian's singular
  values (``step_max``: input pixels skipped per output pixel, ``step_min``), its determinant sign
  (mirrored), the share of cells folded against the sample's own orientation, the share of grid
  points outside the input, and the mean distance from the identity grid;
* over the batch: how much the grid moves between samples (``grid_spread_px``) against how much the
  inputs differ (``input_spread``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import geometry

__all__ = ["Measures", "measure"]


@dataclass
class Measures:
    """Per-sample figures ``(B,)`` of one 2-D record (NaN where a sample's grid is not finite),
    plus batch figures. See the module docstring for each one's meaning."""

    finite: torch.Tensor  # bool (B,): theta, grid and output finite
    area_ratio: torch.Tensor  # sampled area / input area
    step_max: torch.Tensor  # input pixels per output pixel, the larger singular value of the mean Jacobian
    step_min: torch.Tensor  # the smaller one
    mirrored: torch.Tensor  # bool: the mean Jacobian's determinant is negative
    folded_share: torch.Tensor  # share of cells whose Jacobian determinant has the other sign
    outside_share: torch.Tensor  # share of grid points outside the input
    identity_px: torch.Tensor  # mean distance of the grid from the identity grid, in input pixels
    grid_spread_px: float  # mean over grid points of the std across the batch, input pixels (NaN for B < 2)
    input_spread: float  # mean over pixels of the std across the batch, as a share of the input's range

    @property
    def zoom(self) -> torch.Tensor:
        """Output pixels per input pixel (``> 1``: the region is magnified), from the mean Jacobian."""
        return 1.0 / (self.step_max * self.step_min).sqrt()

    @property
    def condition(self) -> torch.Tensor:
        """``step_max / step_min``: 1 for rotation and uniform scale, large for extreme shear or aspect."""
        return self.step_max / self.step_min


def _finite_rows(*tensors) -> torch.Tensor:
    rows = None
    for t in tensors:
        if t is None:
            continue
        ok = torch.isfinite(t.reshape(t.shape[0], -1).double()).all(1)
        rows = ok if rows is None else rows & ok
    return rows


def _jacobian_cells(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels (B, H, W, 2)`` -> the steps ``(du, dv)``, each ``(B, H - 1, W - 1, 2)``: the input
    pixel offset of one output pixel right and one down (forward differences)."""
    du = pixels[:, :-1, 1:] - pixels[:, :-1, :-1]
    dv = pixels[:, 1:, :-1] - pixels[:, :-1, :-1]
    return du, dv


def _spread(x: torch.Tensor) -> float:
    """Mean over positions of the std across the batch (dim 0), ``nan`` for fewer than 2 rows."""
    if x.shape[0] < 2:
        return float("nan")
    return float(x.reshape(x.shape[0], -1).std(0).mean())


def measure(record) -> Measures:
    """The :class:`Measures` of one 2-D record with a grid of at least 2 x 2 output pixels.

    Example (stnviz's tutorial network, untrained: its transformer starts at the identity):
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> m = measure(collect_batch(model, torch.rand(4, 1, 28, 28))[1].pick())
        >>> [round(float(v), 3) for v in (m.area_ratio[0], m.outside_share[0], m.identity_px[0])]
        [1.0, 0.0, 0.0]
    """
    b = record.grid.shape[0]
    h, w = record.input_size
    finite = _finite_rows(record.params, record.grid, record.output)
    pixels = record.pixel_grid().double()
    pixels = torch.where(finite[:, None, None, None], pixels, torch.nan)
    du, dv = _jacobian_cells(pixels)
    det = du[..., 0] * dv[..., 1] - du[..., 1] * dv[..., 0]  # (B, H-1, W-1)
    ho, wo = record.grid.shape[1:3]
    area_ratio = det.abs().flatten(1).mean(1) * ho * wo / (h * w)
    mean_j = torch.stack([du.flatten(1, 2).mean(1), dv.flatten(1, 2).mean(1)], dim=-1)  # (B, 2, 2): columns du, dv
    sv = torch.linalg.svdvals(torch.nan_to_num(mean_j))
    sv = torch.where(finite[:, None], sv, torch.nan)
    mean_det = torch.linalg.det(torch.nan_to_num(mean_j))
    folded = ((det * mean_det[:, None, None]) < 0).flatten(1).double().mean(1)
    x, y = pixels[..., 0], pixels[..., 1]
    outside = ((x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)).flatten(1).double().mean(1)
    identity = geometry.grid_to_pixels(geometry.pixel_centres((ho, wo), dtype=torch.float64), (h, w))
    identity_px = (pixels - identity).norm(dim=-1).flatten(1).mean(1)
    nan = torch.full((b,), torch.nan, dtype=torch.float64)
    kept = pixels[finite]
    image = record.input[finite].double()
    span = float(image.max() - image.min()) if image.numel() else 0.0
    return Measures(
        finite=finite,
        area_ratio=torch.where(finite, area_ratio, nan),
        step_max=sv[:, 0], step_min=sv[:, 1],
        mirrored=finite & (mean_det < 0),
        folded_share=torch.where(finite, folded, nan),
        outside_share=torch.where(finite, outside, nan),
        identity_px=torch.where(finite, identity_px, nan),
        grid_spread_px=_spread(kept),
        input_spread=_spread(image) / span if span > 0 else 0.0,
    )
