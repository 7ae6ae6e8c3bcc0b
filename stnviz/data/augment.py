"""Batched, on-device augmentation built on :mod:`stnviz.geometry` (no per-sample PIL)."""

from __future__ import annotations

import math

import torch

from .. import geometry

__all__ = ["random_affine"]


def random_affine(
    images: torch.Tensor,
    labels: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    *,
    rotation_deg: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    translate: float = 0.1,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> torch.Tensor:
    """Jitter a batch ``(B, C, H, W)`` in [0, 1]: rotation, scale, translation (normalised units),
    brightness and contrast, each uniform in its range; border padding (no black frame to learn).

    Draws come from ``generator`` (CPU), so a seeded generator gives the same batch on any device.
    Matches :func:`stnviz.train.fit`'s ``augment(images, labels, generator)`` signature.
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    u = torch.rand(b, 6, generator=generator).to(images.device, images.dtype)
    rot = (u[:, 0] * 2 - 1) * math.radians(rotation_deg)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    theta = geometry.compose_affine(rotation=rot, scale_x=s, scale_y=s, tx=(u[:, 2] * 2 - 1) * translate,
                                    ty=(u[:, 3] * 2 - 1) * translate)
    out = geometry.warp(images, geometry.affine_grid(theta, images.shape[-2:]), padding="border")
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c = (1 + (u[:, 4] * 2 - 1) * contrast).view(b, 1, 1, 1)
    br = ((u[:, 5] * 2 - 1) * brightness).view(b, 1, 1, 1)
    return ((out - mean) * c + mean + br).clamp_(0, 1)
