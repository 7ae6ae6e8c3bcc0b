"""A zoo of deliberately broken spatial transformers, one per ``stnviz.diagnose`` check id, written
the way STN code is written elsewhere (plain torch, ``F.affine_grid`` + ``F.grid_sample``; nothing
here imports stnviz), plus a healthy one. Each model is fixed (no training): its localisation net
is a ``nn.Linear`` on a few image statistics whose weights are set so the failure is there on any
batch of 28 x 28 digits in [0, 1].

``ZOO[check_id](device)`` builds the model broken for that check; ``healthy(device)`` one that is not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _stats(x: torch.Tensor) -> torch.Tensor:
    """(B, 3): the image's centre of mass (x, y) in [-1, 1] and its mean brightness."""
    b, _, h, w = x.shape
    m = x.mean(1)
    m = m - m.flatten(1).amin(1)[:, None, None]  # normalised images too: the background weighs nothing
    mass = m.flatten(1).sum(1).clamp_min(1e-6)
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    cx = (m.sum(1) * xs).sum(1) / mass
    cy = (m.sum(2) * ys).sum(1) / mass
    return torch.stack([cx, cy, m.flatten(1).mean(1)], dim=1)


class Localiser(nn.Linear):
    """theta = linear part ``a`` (2 x 2) with the translation following the digit's centre of mass
    (``follow`` times it) plus ``shift``; ``follow=0`` makes theta the same for every input."""

    def __init__(self, a=((0.8, 0.0), (0.0, 0.8)), follow: float = 0.5, shift=(0.0, 0.0)):
        super().__init__(3, 6)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[2, 0] = follow
            self.weight[5, 1] = follow
            self.bias.copy_(torch.tensor([a[0][0], a[0][1], shift[0], a[1][0], a[1][1], shift[1]]))

    def forward(self, x):
        return super().forward(_stats(x)).view(-1, 2, 3)


class Head(nn.Module):
    """A fixed random classifier on the 28 x 28 image (the zoo checks the transformer, not the head)."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(28 * 28, 10)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(10, 28 * 28, generator=gen) * 0.05)

    def forward(self, x):
        return self.fc(F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).flatten(1))


class AffineSTN(nn.Module):
    """The usual tutorial STN: theta from the localisation net, affine_grid, grid_sample, classifier."""

    def __init__(self, loc: Localiser, align_grid: bool = False, align_sample: bool = False, normalise: bool = False):
        super().__init__()
        self.loc, self.head = loc, Head()
        self.align_grid, self.align_sample, self.normalise = align_grid, align_sample, normalise

    def forward(self, x):
        if self.normalise:  # the tutorial's data pipeline, moved in: normalised *before* the sampler
            x = (x - 0.1307) / 0.3081
        theta = self.loc(x)
        grid = F.affine_grid(theta, x.size(), align_corners=self.align_grid)
        return self.head(F.grid_sample(x, grid, align_corners=self.align_sample))


class FoldingWarp(nn.Module):
    """A dense warp: the identity grid plus a strong sine displacement, which folds the grid."""

    def __init__(self, amplitude: float = 0.15, waves: float = 4.0):
        super().__init__()
        self.amplitude = nn.Parameter(torch.tensor(amplitude))
        self.waves, self.head = waves, Head()

    def forward(self, x):
        b, _, h, w = x.shape
        eye = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(b, 2, 3)
        base = F.affine_grid(eye, x.size(), align_corners=False)
        bump = self.amplitude * torch.sin(self.waves * math.pi * base[..., :1]) * (1 + _stats(x)[:, :1, None, None])
        grid = base + torch.cat([bump, torch.zeros_like(bump)], dim=-1)
        return self.head(F.grid_sample(x, grid, align_corners=False))


class TwoWarps(nn.Module):
    """Two transformers in a row: the second samples the first one's output."""

    def __init__(self):
        super().__init__()
        self.first, self.second, self.head = Localiser(follow=0.3), Localiser(a=((0.9, 0.1), (-0.1, 0.9))), Head()

    def forward(self, x):
        x = F.grid_sample(x, F.affine_grid(self.first(x), x.size(), align_corners=False), align_corners=False)
        x = F.grid_sample(x, F.affine_grid(self.second(x), x.size(), align_corners=False), align_corners=False)
        return self.head(x)


class BFloat16Grid(nn.Module):
    """A large image (the digit upsampled to 256 x 256) sampled with a bfloat16 grid."""

    def __init__(self):
        super().__init__()
        self.loc, self.head = Localiser(), Head()

    def forward(self, x):
        big = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        grid = F.affine_grid(self.loc(big), big.size(), align_corners=False).to(torch.bfloat16)
        return self.head(F.grid_sample(big.to(torch.bfloat16), grid, align_corners=False).float())


class Exploding(AffineSTN):
    """The localisation net blew up: every other sample's theta is infinite."""

    def forward(self, x):
        theta = self.loc(x)
        blown = torch.zeros_like(theta[:, :1, :1])
        blown[::2] = math.inf
        grid = F.affine_grid(theta + blown, x.size(), align_corners=False)
        return self.head(F.grid_sample(x, grid, align_corners=False))


class Unused(AffineSTN):
    """The transformer runs, but the classifier reads the input itself: the task does not need it."""

    def forward(self, x):
        warped = F.grid_sample(x, F.affine_grid(self.loc(x), x.size(), align_corners=False), align_corners=False)
        return self.head(x) + 0.0 * warped.mean()


def _to(model: nn.Module, device) -> nn.Module:
    return model.to(device).eval()


#: check id -> builder(device) of a model broken for that check
ZOO = {
    "zoom_out": lambda device: _to(AffineSTN(Localiser(a=((1.8, 0.0), (0.0, 1.8)))), device),
    "outside_image": lambda device: _to(AffineSTN(Localiser(a=((1.0, 0.0), (0.0, 1.0)), shift=(1.4, 0.0))), device),
    "over_zoom": lambda device: _to(AffineSTN(Localiser(a=((0.1, 0.0), (0.0, 0.1)), follow=0.2)), device),
    "input_independent": lambda device: _to(AffineSTN(Localiser(a=((0.8, 0.1), (-0.1, 0.8)), follow=0.0)), device),
    "identity": lambda device: _to(AffineSTN(Localiser(a=((1.0, 0.0), (0.0, 1.0)), follow=0.0)), device),
    "degenerate": lambda device: _to(AffineSTN(Localiser(a=((-0.9, 0.0), (0.0, 0.9)))), device),
    "fold": lambda device: _to(FoldingWarp(), device),
    "stacked_warps": lambda device: _to(TwoWarps(), device),
    "align_corners_mismatch": lambda device: _to(AffineSTN(Localiser(), align_grid=True, align_sample=False), device),
    "padding_not_background": lambda device: _to(AffineSTN(Localiser(a=((1.1, 0.0), (0.0, 1.1))), normalise=True), device),
    "low_precision_grid": lambda device: _to(BFloat16Grid(), device),
    "non_finite": lambda device: _to(Exploding(Localiser()), device),
    "no_effect": lambda device: _to(Unused(Localiser()), device),
}


def healthy(device) -> nn.Module:
    """A tutorial-style STN that does its job: a 0.8x crop following the digit."""
    return _to(AffineSTN(Localiser(follow=4.0)), device)
