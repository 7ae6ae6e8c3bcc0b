"""What a sampler call sampled: its ``role``, judged from the shapes of its input and grid and
from the lineage of its input (is it a model input, or does it share the model's image batch?).

A record's role says how it can be drawn. The rules, in the order they are tried:

* ``"lookup"``: the sampler's batch is not an image batch of the model (neither the batch of a
  model input ``B`` nor, for a 5-D input ``(B, T, ...)``, ``B * T`` frames). Correlation
  look-ups (batch = pixels x images, ``7 x 7`` or ``9 x 9`` windows), deformable attention
  (``(N * heads, Lq, points, 2)`` grids) and other per-pixel or per-head look-ups: listed and
  summarised, never drawn as a region (a polygon through their grid means nothing).
* ``"points"``: the grid samples few output pixels along one axis (``(N, P, 1, 2)`` columns of
  points, ``(B, 1, Q, 2)`` rows of queries: the short side at most :data:`POINTS_MAX_SIDE` and
  at most a quarter of the long one, or one point). Point heads (PointRend) and implicit
  functions (LIIF): drawn as points on the input, with no "output image".
* ``"image"`` for a model input itself (a view of one included), whatever its channels.
* ``"image"`` with a fill mask: the last channel holds only 0 and 1 (some 1) and the channels
  before it do not (an augmentation layer's image concatenated with a ones channel, warped, then
  split, as torchvision does). The image part, ``image_channels = C - 1``, is what is drawn.
* ``"flow"``: as many channels as grid coordinates (2 in 2-D, 3 in 3-D): an offset or flow field
  (a flow integration step, a warped disparity); drawn as a field when asked.
* ``"auxiliary"``: one channel of only 0 and 1: a binary mask; drawn when asked.
* ``"image"`` otherwise: a warp of images or feature maps with the model's batch (region,
  lattice, output).

When the model's batch is unknown (a model driven through a method other than ``forward``, a
submodule called on its own) the batch rule is skipped and the others decide.

Example:
    >>> judge_role((4, 3, 32, 32), (4, 32, 32, 2), image_batches=(4,))
    'image'
    >>> judge_role((4 * 32 * 32, 1, 32, 32), (4 * 32 * 32, 9, 9, 2), image_batches=(4,))  # a correlation look-up
    'lookup'
    >>> judge_role((2, 64, 8, 8), (2, 196, 1, 2), image_batches=(2,))  # PointRend's points
    'points'
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

__all__ = ["POINTS_MAX_SIDE", "ROLES", "Judgement", "judge", "judge_role"]

#: every role a record can have, the one image role first
ROLES = ("image", "points", "flow", "auxiliary", "lookup")
#: a grid with at most this many output pixels along one axis (and four times as many along the
#: other) samples points, not an image
POINTS_MAX_SIDE = 4


class Judgement(NamedTuple):
    """A role and how many leading input channels are the picture (``None``: all of them)."""

    role: str
    image_channels: int | None = None


def _image_batches(model_inputs: Sequence[torch.Tensor]) -> tuple[int, ...]:
    """The batch sizes of images in the model: ``B`` of each model input, and ``B * T`` of a
    5-D input ``(B, T, C, H, W)`` (video frames folded into the batch).

    Example:
        >>> _image_batches([torch.zeros(2, 3, 8, 8), torch.zeros(2, 5, 3, 8, 8)])
        (2, 10)
    """
    found: list[int] = []
    for t in model_inputs:
        if t.dim() == 0:
            continue
        sizes = [t.shape[0], t.shape[0] * t.shape[1]] if t.dim() == 5 else [t.shape[0]]
        found += [s for s in sizes if s not in found]
    return tuple(found)


def _binary(t: torch.Tensor) -> bool:
    return t.numel() > 0 and bool(((t == 0) | (t == 1)).all())


def _fill_mask_channel(inp: torch.Tensor) -> bool:
    """Whether the last channel of ``inp (B, C, ...)`` is a fill mask travelling with an image:
    only 0 and 1 (some 1) there, not only 0 and 1 in the channels before it.

    Example:
        >>> image = torch.rand(1, 3, 4, 4)
        >>> _fill_mask_channel(torch.cat([image, torch.ones(1, 1, 4, 4)], 1)), _fill_mask_channel(image)
        (True, False)
    """
    if inp.dim() < 3 or inp.shape[1] < 2:
        return False
    last = inp[:, -1]
    return _binary(last) and bool((last == 1).any()) and not _binary(inp[:, :-1])


def _points_shape(out_sides: Sequence[int]) -> bool:
    if len(out_sides) != 2:
        return False
    short, long = sorted(out_sides)
    return long == 1 or (short <= POINTS_MAX_SIDE and long >= 4 * short)


def judge_role(input_shape, grid_shape, *, image_batches: Sequence[int] = (), model_input: bool = False,
               fill_mask: bool = False, binary: bool = False) -> str:
    """The role of a sampling of ``input (N, C, *in)`` at ``grid (N, *out, dims)``, from shapes
    and lineage (the rules in this module's docstring).

    Args:
        image_batches: the model's image batch sizes (``B`` of each model input, ``B * T`` of a 5-D one); empty when unknown.
        model_input: the input is a model input (or a view of one).
        fill_mask: its last channel is a fill mask (only 0 and 1 there, some 1; not only 0 and 1 before it).
        binary: it holds only 0 and 1.

    Example:
        >>> judge_role((8, 32, 16, 16), (8, 100, 4, 2), image_batches=(1,))  # deformable attention, 8 heads
        'lookup'
        >>> judge_role((2, 2, 28, 28), (2, 28, 28, 2), image_batches=(2,))  # a flow field
        'flow'
        >>> judge_role((2, 1, 28, 28), (2, 28, 28, 2), image_batches=(2,), binary=True)
        'auxiliary'
    """
    batch, channels, dims = input_shape[0], input_shape[1], grid_shape[-1]
    if image_batches and batch not in image_batches:
        return "lookup"
    if _points_shape(grid_shape[1:-1]):
        return "points"
    if model_input or fill_mask:
        return "image"
    if channels == dims:
        return "flow"
    if channels == 1 and binary:
        return "auxiliary"
    return "image"


def judge(inp: torch.Tensor, grid: torch.Tensor, model_inputs: Sequence[torch.Tensor] = ()) -> Judgement:
    """:func:`judge_role` of one sampler call, with its lineage read from the model's inputs.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> judge(torch.cat([x, torch.ones(2, 1, 8, 8)], 1), torch.zeros(2, 8, 8, 2), [x])
        Judgement(role='image', image_channels=3)
    """
    is_input = any(inp is t or (inp.shape == t.shape and inp.data_ptr() == t.data_ptr()) for t in model_inputs)
    channels = inp.shape[1] if inp.dim() > 1 else 1
    fill = not is_input and _fill_mask_channel(inp)
    role = judge_role(tuple(inp.shape), tuple(grid.shape), image_batches=_image_batches(model_inputs),
                      model_input=is_input, fill_mask=fill,
                      binary=channels == 1 and not is_input and _binary(inp))
    return Judgement(role, channels - 1 if role == "image" and fill else None)
