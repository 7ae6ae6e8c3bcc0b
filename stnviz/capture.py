"""Record what every spatial transformer in a model did: ``with capture(model) as rec: model(x)``.

Two sources, one record type:

* **stnviz transformers** (:class:`stnviz.models.SpatialTransformer`): forward hooks on the module
  and its ``grid_generator`` give the input, the parameters, the grid and the output.
* **Foreign STN code** that never imported stnviz: inside the context,
  ``torch.nn.functional.affine_grid`` and ``grid_sample`` are wrapped; each sampler call is paired
  with the theta whose ``affine_grid`` made its grid (by tensor identity), and named after the
  innermost module running at the time. This catches the PyTorch tutorial's ``Net`` and anything
  calling ``F.grid_sample`` (kornia's warps do). Code that bound the functions to other names
  before the context (``from torch.nn.functional import grid_sample``) is not seen.

Records are detached copies (moved to the CPU by default), bounded in number (``keep_last``) and
in batch (``batch_slice``). Hooks and patches are removed on exit, also on an exception.
Capturing nothing is an error (:class:`CaptureError`) that says why.
"""

from __future__ import annotations

import itertools
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import geometry
from .models import GridGenerator, SpatialTransformer

__all__ = ["Capture", "CaptureError", "TransformRecord", "capture"]


class CaptureError(RuntimeError):
    """Nothing was captured, or a record was asked for that does not exist."""


@dataclass
class TransformRecord:
    """One forward call of one transformer.

    Attributes:
        module: the transformer's qualified name in the model (``"transformer"``,
            ``"body.1"``); for foreign code the innermost running module plus ``":grid_sample"``.
        call: order of this call among all records of the capture (0, 1, ...).
        family: transform family (``"affine"``, ``"tps"`` ...), or ``None`` if unknown.
        input: ``(B, C, H, W)`` the sampled image or feature map.
        params: the family's parameters as the grid generator got them (affine ``(B, 2, 3)``,
            TPS ``(B, K, 2)``, ...), or ``None`` when a foreign grid has no known theta.
        grid: ``(B, H_out, W_out, 2)`` normalised sampling grid.
        output: ``(B, C, H_out, W_out)``.
        components: for the ``restricted`` family, its component names.
    """

    module: str
    call: int
    family: str | None
    input: torch.Tensor
    params: torch.Tensor | None
    grid: torch.Tensor
    output: torch.Tensor
    components: tuple | None = None

    @property
    def theta(self) -> torch.Tensor | None:
        """``(B, 2, 3)`` for affine-type families (``None`` for projective, TPS, unknown)."""
        if self.params is None or self.family in (None, "projective", "tps"):
            return None
        return geometry.to_matrix(self.params, self.family, components=self.components)[:, :2]

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.input.shape[-2:])

    @property
    def output_size(self) -> tuple[int, int]:
        return tuple(self.output.shape[-2:])

    def sampled_outline(self, points_per_side: int = 16) -> torch.Tensor:
        """The sampled region's outline in input pixels ``(B, 4 * points_per_side, 2)``.

        From the parameters when the family is known; otherwise traced along the border of the
        recorded grid (pixel centres of the output's edge)."""
        if self.params is not None and self.family is not None:
            return geometry.sampled_outline(self.params, self.family, self.input_size,
                                            components=self.components, points_per_side=points_per_side)
        g = self.grid
        h, w = g.shape[1:3]
        border = torch.cat([g[:, 0, :], g[:, :, -1], g[:, -1, :].flip(1), g[:, :, 0].flip(1)], dim=1)
        x = (border[..., 0] + 1) * self.input_size[1] / 2 - 0.5
        y = (border[..., 1] + 1) * self.input_size[0] / 2 - 0.5
        return torch.stack([x, y], -1)


class Capture:
    """The records of one ``capture`` context: a sequence in call order, addressable by module."""

    def __init__(self, keep_last: int | None):
        self._records: deque = deque(maxlen=keep_last)
        self._counter = itertools.count()
        self.dropped = 0

    def _add(self, rec: TransformRecord) -> None:
        if self._records.maxlen is not None and len(self._records) == self._records.maxlen:
            self.dropped += 1
        self._records.append(rec)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TransformRecord]:
        return iter(self._records)

    def __getitem__(self, i: int) -> TransformRecord:
        return list(self._records)[i]

    @property
    def modules(self) -> list[str]:
        """Names of the transformers seen, in first-call order."""
        return list(dict.fromkeys(r.module for r in self._records))

    def of(self, module: str) -> list[TransformRecord]:
        """All kept records of ``module``, in call order."""
        out = [r for r in self._records if r.module == module]
        if not out:
            raise CaptureError(f"no records for module {module!r}; captured modules: {self.modules}")
        return out

    def last(self, module: str | None = None) -> TransformRecord:
        """The latest record (of ``module`` if given)."""
        if module is not None:
            return self.of(module)[-1]
        if not self._records:
            raise CaptureError("the capture holds no records")
        return self._records[-1]

    def __repr__(self) -> str:
        return f"Capture({len(self)} records, modules={self.modules}, dropped={self.dropped})"


def _copy(t: torch.Tensor, batch_slice, to_cpu: bool) -> torch.Tensor:
    t = t.detach()
    if batch_slice is not None:
        t = t[batch_slice]
    return t.to("cpu", copy=True) if to_cpu else t.clone()


@contextmanager
def capture(
    model: nn.Module,
    *,
    keep_last: int | None = 64,
    batch_slice: slice | int | None = None,
    to_cpu: bool = True,
    foreign: bool = True,
    allow_empty: bool = False,
) -> Iterator[Capture]:
    """Record every transformer call in ``model`` while the context is open.

    Args:
        keep_last: keep only the latest N records (bounded memory); ``None`` keeps all.
        batch_slice: keep only these samples of each batch (``slice(0, 8)``, or an int ``n`` for
            the first ``n``).
        to_cpu: move the copies to the CPU (default) or keep them on the model's device.
        foreign: also intercept ``F.affine_grid`` / ``F.grid_sample`` calls made outside stnviz
            transformers.
        allow_empty: don't raise :class:`CaptureError` when nothing was captured.
    """
    if isinstance(batch_slice, int):
        batch_slice = slice(0, batch_slice)
    rec = Capture(keep_last)
    names = {m: n for n, m in model.named_modules()}
    handles = []
    pending: dict = {}  # SpatialTransformer -> partial record fields
    stack: list[nn.Module] = []  # modules currently running, for naming foreign calls
    inside_stnviz = [0]

    def st_pre(module, inputs):
        inside_stnviz[0] += 1
        pending[module] = {"input": inputs[0]}

    def gen_hook(module, inputs, output):
        parent = gen_parent.get(module)
        if parent is not None and parent in pending:
            params = inputs[0]
            if module.family == "affine":
                params = params.reshape(-1, 2, 3)
            elif module.family == "tps":
                params = params.reshape(params.shape[0], -1, 2)
            pending[parent].update(params=params, grid=output)

    def st_post(module, inputs, output):
        inside_stnviz[0] -= 1
        p = pending.pop(module, {})
        if "grid" not in p:
            return
        g = module.grid_generator
        rec._add(TransformRecord(
            module=names.get(module, type(module).__name__),
            call=next(rec._counter),
            family=g.family,
            input=_copy(p["input"], batch_slice, to_cpu),
            params=_copy(p["params"], batch_slice, to_cpu),
            grid=_copy(p["grid"], batch_slice, to_cpu),
            output=_copy(output, batch_slice, to_cpu),
            components=g.components,
        ))

    gen_parent: dict = {}
    for m in model.modules():
        if isinstance(m, SpatialTransformer):
            gen_parent[m.grid_generator] = m
            handles.append(m.register_forward_pre_hook(st_pre))
            handles.append(m.register_forward_hook(st_post))
            handles.append(m.grid_generator.register_forward_hook(gen_hook))

    originals = (F.affine_grid, F.grid_sample)
    if foreign:
        thetas: dict = {}  # id(grid) -> (grid, theta); the grid is kept so its id stays unique

        def push(module, inputs):
            stack.append(module)

        def pop(module, inputs, output):
            if stack and stack[-1] is module:
                stack.pop()

        for m in model.modules():
            handles.append(m.register_forward_pre_hook(push))
            handles.append(m.register_forward_hook(pop))

        def affine_grid(theta, size, *args, **kwargs):
            grid = originals[0](theta, size, *args, **kwargs)
            if not inside_stnviz[0] and theta.dim() == 3 and theta.shape[1:] == (2, 3):
                thetas[id(grid)] = (grid, theta)
            return grid

        def grid_sample(input, grid, *args, **kwargs):
            out = originals[1](input, grid, *args, **kwargs)
            if not inside_stnviz[0]:
                theta = thetas.get(id(grid), (None, None))[1]
                owner = names.get(stack[-1], "") if stack else ""
                rec._add(TransformRecord(
                    module=(owner or type(model).__name__) + ":grid_sample",
                    call=next(rec._counter),
                    family="affine" if theta is not None else None,
                    input=_copy(input, batch_slice, to_cpu),
                    params=_copy(theta, batch_slice, to_cpu) if theta is not None else None,
                    grid=_copy(grid, batch_slice, to_cpu),
                    output=_copy(out, batch_slice, to_cpu),
                ))
            return out

        F.affine_grid, F.grid_sample = affine_grid, grid_sample
    try:
        yield rec
    finally:
        if foreign:
            F.affine_grid, F.grid_sample = originals
        for h in handles:
            h.remove()
    if not len(rec) and not allow_empty:
        n_st = len(gen_parent)
        why = (
            f"the model has {n_st} SpatialTransformer module(s) but none ran inside the context"
            if n_st
            else "the model has no stnviz SpatialTransformer and made no F.grid_sample call inside the context"
            + ("" if foreign else " (foreign=False, so F.grid_sample calls were not watched)")
        )
        raise CaptureError(f"nothing captured: {why}; run the model inside `with capture(model) as rec:`")
