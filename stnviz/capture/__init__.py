"""Record what every spatial transformer in a model did: ``with stnviz.capture(model) as rec: model(x)``.

Every sampler call is seen, however the code reaches it: ``F.grid_sample``, a name bound at import
(``from torch.nn.functional import grid_sample``), kornia's warps, stnviz's own
:class:`~stnviz.models.SpatialTransformer`. Interception is a :class:`torch.overrides.TorchFunctionMode`
(nothing in ``torch.nn.functional`` is patched), so

* a capture records only the calls of its own thread, made while a module of *its* model runs;
  several threads, nested or overlapping captures each keep their own records; the mode is on the
  stack only then (switched by global forward hooks around the model's modules, and by the model's
  own methods such as ``guide()``, wrapped on the instance while the context is open), so the
  loss, backward and the optimizer's ``.grad`` reads never go through Python;
* everything is restored on exit, also on an exception (the hooks and method wrappers are removed
  in ``finally``; which module made a call is read from the call stack); a capture entered and
  never exited is closed when it is garbage-collected;
* it never breaks a forward that works without it: only its own mode is taken off the torch
  function mode stack (the user's modes stay, in any order of entering and exiting), objects are
  looked up by identity (an unhashable helper calling ``grid_sample`` is fine), and a call that
  can't be recorded is left out, counted in ``Capture.skipped`` and named in one
  :class:`CaptureWarning`; the forward's own result is returned unchanged;
* memory is bounded in records and bytes: records are detached copies (on the CPU by default), at
  most ``keep_last`` of them holding at most ``max_bytes`` (256 MB by default; the oldest go first,
  counted in ``Capture.dropped``), each cut to ``batch_slice``; a tensor sampled by several calls
  in one forward is copied once and shared; the thetas waiting for their ``grid_sample`` are held
  only as long as the grid they made is alive and unchanged (a grid changed in place, ``grid +=
  flow``, loses its theta);
* warnings raised by the samplers (torch's ``align_corners`` notes) point at the user's line, and
  a sampler wrapped by another tool (``functools.wraps``, ``__wrapped__``) is still recognised.

Each :class:`TransformRecord` says how it was sampled (``sampling``: ``mode``, ``padding_mode``,
``align_corners``, so ``geometry.warp(r.input, r.grid, **r.sampling)`` reproduces ``r.output``),
gives its theta in stnviz's convention (``align_corners=False``, converted when the code used
``True``), has a stable ``key`` (the module's name, plus ``.method`` when the module was driven through
a method other than ``forward`` (``"LIIF.query_rgb:grid_sample"``), plus ``#k`` for its k-th
sampler call in one capture pass: one forward of the model, or, outside a forward, the calls
until the next forward) and a ``role`` saying what was sampled, judged from shapes and lineage by
:mod:`stnviz.capture.roles` (one rule per role there): ``"image"`` for a warp of images or feature
maps of the model's batch (an image with a fill-mask channel included: ``image_channels`` says
which channels are the picture), ``"points"`` for point or query look-ups (``(N, P, 1, 2)`` or
``(B, 1, Q, 2)`` grids), ``"flow"`` for offset or flow fields, ``"auxiliary"`` for binary masks and
``"lookup"`` for correlation or attention look-ups whose batch is not the image batch. The
drawing functions draw each role its own way and refuse ``"lookup"`` by name.

Limits, each ending in a clear :class:`CaptureError`: TorchScript (scripted or traced) models can't
be seen into; ``torch.compile``\\ d models run eagerly inside the context (that is how their
transformers are seen), and an error raised by the compiler says to pass the uncompiled module.
3-D samplers (volumes) are recorded, marked ``spatial_dims=3``; the 2-D drawing functions refuse
them by name.
"""


from ..models.modes import model_device_dtype  # re-exported: defined with the models
from .collection import Collection, collect, collect_batch
from .context import capture
from .records import Capture, CaptureError, CaptureWarning, TransformRecord
from .roles import ROLES, Judgement, judge, judge_role

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureWarning",
    "Collection",
    "Judgement",
    "ROLES",
    "TransformRecord",
    "capture",
    "collect",
    "collect_batch",
    "judge",
    "judge_role",
    "model_device_dtype",
]
