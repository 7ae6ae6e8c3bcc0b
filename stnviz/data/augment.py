"""Batched, on-device augmentation built on :mod:`stnviz.geometry` (no per-sample PIL).

* :func:`random_affine`: small jitter of the whole frame (``fit``'s ``augment=`` signature).
* :func:`place_object`: re-frame each image around its annotated box (GTSRB's ROI) at a random
  scale, position and small rotation, the geometric augmentation that makes a transformer's
  *localisation* pay: a classifier that sees the sign at one size and place is helped by a
  transformer that finds it.
* :class:`Reframed`: a batch source whose training batches go through :func:`place_object`
  (the boxes travel with the batch, so the augmentation needs no change to ``fit``).
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from .. import geometry
from .imageset import Batch

__all__ = ["Reframed", "place_object", "random_affine"]


def _photometric(out: torch.Tensor, u: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Contrast about the per-image mean, then brightness; ``u (B, 2)`` uniforms."""
    b = out.shape[0]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    c = (1 + (u[:, 0] * 2 - 1) * contrast).view(b, 1, 1, 1)
    br = ((u[:, 1] * 2 - 1) * brightness).view(b, 1, 1, 1)
    return ((out - mean) * c + mean + br).clamp_(0, 1)


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

    Example:
        >>> from stnviz.data import draw_glyphs
        >>> glyphs = draw_glyphs(4)
        >>> jittered = random_affine(glyphs, generator=torch.Generator().manual_seed(0))
        >>> tuple(jittered.shape), bool(jittered.min() >= 0 and jittered.max() <= 1)
        ((4, 1, 28, 28), True)
        >>> torch.equal(jittered, random_affine(glyphs, generator=torch.Generator().manual_seed(0)))  # seeded
        True
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    u = torch.rand(b, 6, generator=generator).to(images.device, images.dtype)
    rot = (u[:, 0] * 2 - 1) * math.radians(rotation_deg)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    theta = geometry.compose_affine(rotation=rot, scale_x=s, scale_y=s, tx=(u[:, 2] * 2 - 1) * translate,
                                    ty=(u[:, 3] * 2 - 1) * translate)
    out = geometry.warp(images, geometry.affine_grid(theta, images.shape[-2:]), padding_mode="border")
    return _photometric(out, u[:, 4:6], brightness, contrast)


def place_object(
    images: torch.Tensor,
    boxes: torch.Tensor,
    generator: torch.Generator | None = None,
    *,
    size: tuple[float, float] = (0.5, 1.0),
    rotation_deg: float = 10.0,
    brightness: float = 0.2,
    contrast: float = 0.2,
    padding: str = "border",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-frame each image so its object lands at a random size, place and small rotation.

    Args:
        images: ``(B, C, H, W)`` float in [0, 1].
        boxes: ``(B, 4)`` the object's box ``(x1, y1, x2, y2)`` as fractions of the frame (pixel
            edges: 0 is the left edge of the first pixel, 1 the right edge of the last), e.g.
            GTSRB's ``roi`` column.
        size: range of the object's longer side as a fraction of the output frame, drawn
            uniformly (0.5: half the frame; 1.0: the box fills the frame).
        rotation_deg: the object is rotated uniformly in ``+-rotation_deg`` about its centre.
        padding: what samples outside the source frame read (:func:`stnviz.geometry.warp`);
            ``border`` repeats the edge (background), never a black frame to key on.

    The position is uniform over the places where the rotated box stays inside the output frame
    (an object too large to fit once rotated is shrunk until it does).
    Returns ``(images, boxes)``: the re-framed images and the axis-aligned boxes of the rotated
    object in them, same conventions. Draws come from ``generator`` (CPU), so a seeded generator
    gives the same batch on any device.

    Example:
        >>> images = torch.zeros(2, 3, 32, 32)
        >>> boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.1, 0.2, 0.5, 0.4]])
        >>> g = torch.Generator().manual_seed(0)
        >>> out, placed = place_object(images, boxes, g, size=(0.5, 0.5), rotation_deg=0)
        >>> tuple(out.shape), [round(w, 3) for w in (placed[:, 2] - placed[:, 0]).tolist()]  # box widths now
        ((2, 3, 32, 32), [0.5, 0.5])
    """
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if boxes.shape != (images.shape[0], 4):
        raise ValueError(f"boxes must be ({images.shape[0]}, 4), got shape {tuple(boxes.shape)}")
    if not 0 < size[0] <= size[1]:
        raise ValueError(f"size must be a range 0 < lo <= hi, got {size}")
    b, dev, dt = images.shape[0], images.device, images.dtype
    u = torch.rand(b, 6, generator=generator).to(dev, dt)
    boxes = boxes.to(dev, dt)
    # normalised coordinates (align_corners=False: -1 and 1 are the frame's outer edges)
    centre_in = torch.stack([boxes[:, 0] + boxes[:, 2] - 1, boxes[:, 1] + boxes[:, 3] - 1], 1)
    half_in = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1).clamp_min(1e-3)
    frac = size[0] + (size[1] - size[0]) * u[:, 0]
    k = half_in.max(1).values / frac  # input units per output unit
    angle = (u[:, 1] * 2 - 1) * math.radians(rotation_deg)
    cos, sin = torch.cos(angle), torch.sin(angle)
    half_out = half_in / k.unsqueeze(1)
    # half extent of the rotated box, per axis
    extent = torch.stack([half_out[:, 0] * cos.abs() + half_out[:, 1] * sin.abs(),
                          half_out[:, 0] * sin.abs() + half_out[:, 1] * cos.abs()], 1)
    # a large, rotated object would poke out at the corners: shrink it until it fits
    fit = extent.max(1).values.clamp_min(1)
    k, extent = k * fit, extent / fit.unsqueeze(1)
    room = (1 - extent).clamp_min(0)
    centre_out = (u[:, 2:4] * 2 - 1) * room
    # output u -> input v = centre_in + k R (u - centre_out)
    a = torch.stack([torch.stack([k * cos, -k * sin], 1), torch.stack([k * sin, k * cos], 1)], 1)
    t = centre_in - (a @ centre_out.unsqueeze(-1)).squeeze(-1)
    theta = torch.cat([a, t.unsqueeze(-1)], 2)
    out = geometry.warp(images, geometry.affine_grid(theta, images.shape[-2:]), padding_mode=padding)
    lo, hi = centre_out - extent, centre_out + extent
    new_boxes = (torch.cat([lo, hi], 1) + 1) / 2
    return _photometric(out, u[:, 4:6], brightness, contrast), new_boxes


class Reframed:
    """A batch source (e.g. a GTSRB :class:`~stnviz.data.ImageSet`) whose batches pass through
    :func:`place_object` using their ``box_column`` (``roi``), with the boxes updated.

    Draws are seeded by ``(seed, epoch, batch position, rank)``, so a resumed run sees the same
    batches. Use it for *training* data only: evaluation should see the frames as they are.
    Keyword arguments go to :func:`place_object`.

    Example:
        >>> from stnviz.data import sample
        >>> signs = Reframed(sample("gtsrb"), size=(0.4, 0.6))
        >>> batch = next(signs.batches(8, shuffle=True, seed=0))
        >>> signs.name, tuple(batch.images.shape), tuple(batch.extras["roi"].shape)
        ('sample-gtsrb-reframed', (8, 3, 32, 32), (8, 4))
    """

    def __init__(self, source, *, box_column: str = "roi", **kwargs):
        self.source, self.box_column, self.kwargs = source, box_column, kwargs
        extras = getattr(source, "extras", {})
        if box_column not in extras:
            raise ValueError(f"{getattr(source, 'name', source)!r} has no {box_column!r} column; expected boxes to place")
        self.name = f"{source.name}-reframed"

    def __len__(self) -> int:
        return len(self.source)

    @property
    def image_size(self):
        return self.source.image_size

    @property
    def labels(self) -> torch.Tensor:
        return self.source.labels

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        return self.source.num_batches(batch_size, world_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, device=None,
                rank: int = 0, world_size: int = 1, start: int = 0) -> Iterator[Batch]:
        gen = torch.Generator(device="cpu")
        it = self.source.batches(batch_size, shuffle=shuffle, seed=seed, epoch=epoch, device=device,
                                 rank=rank, world_size=world_size, start=start)
        for position, batch in enumerate(it, start=start):
            gen.manual_seed(((int(seed) * 1_000_003 + int(epoch)) * 1_000_003 + position) * 101 + int(rank) + 7)
            images, boxes = place_object(batch.images, batch.extras[self.box_column], gen, **self.kwargs)
            yield Batch(images, batch.labels, batch.index, {**batch.extras, self.box_column: boxes})

    def __repr__(self) -> str:
        return f"Reframed({self.source!r}, {self.kwargs})"
