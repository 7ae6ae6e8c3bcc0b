"""The ``capture`` context: ``with capture(model) as rec: model(x)`` records every sampler call."""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..models import SpatialTransformer
from ._session import _Session, _is_compiled, _is_scripted
from .records import _MAX_BYTES, Capture, CaptureError

__all__ = ["capture"]


def _compiler_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor"))


@contextmanager
def capture(
    model: nn.Module,
    *,
    keep_last: int | None = 64,
    max_bytes: int | None = _MAX_BYTES,
    batch_slice: slice | int | None = None,
    to_cpu: bool = True,
    foreign: bool = True,
    allow_empty: bool = False,
) -> Iterator[Capture]:
    """Record every sampler call made by ``model`` while the context is open.

    Args:
        model: any ``nn.Module`` (stnviz's or not; a ``torch.compile``\\ d one runs eagerly inside).
        keep_last: keep only the latest N records (bounded memory); ``None`` keeps all.
        max_bytes: keep the latest records holding at most this many bytes together (default
            256 MB, ``None``: no limit); the oldest are dropped first (``rec.dropped``), the newest
            is always kept.
        batch_slice: keep only these images of each batch (``slice(0, 8)``, or an int ``n`` for
            the first ``n``). A sampler whose batch is a multiple ``k * B`` of the model's batch
            ``B`` (pixels x images of a correlation look-up, heads x images) is taken as ``k``
            consecutive entries per image, and the entries of the kept images are kept.
        to_cpu: move the copies to the CPU (default) or keep them on the model's device.
        foreign: also record sampler calls outside stnviz transformers (``False``: stnviz's only).
        allow_empty: don't raise :class:`CaptureError` when nothing was captured.

    What is kept: for each sampler call a :class:`TransformRecord` holding detached copies (on the
    CPU unless ``to_cpu=False``) of its input, grid, output and parameters, cut to
    ``batch_slice``. Copies are made once per tensor in a capture pass (one forward of the model;
    outside a forward, until the next): records that sample the same tensor (a correlation
    pyramid looked up 12 times, a feature map queried in chunks), or the output of one warp that
    is the input of the next, share one copy. Nothing else outlives the records: the thetas
    waiting for their ``grid_sample`` go with their grid.

    Example:
        >>> import torch, stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> with torch.no_grad(), stnviz.capture(model) as rec:
        ...     _ = model(torch.rand(2, 1, 28, 28))
        >>> rec.keys(), tuple(rec.last().theta.shape)
        (['transformer'], (2, 2, 3))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"capture needs an nn.Module, got {type(model).__name__}")
    if _is_scripted(model):
        raise CaptureError(
            f"capture can't see inside a TorchScript model ({type(model).__name__}): scripted and traced "
            "code runs without Python, so its sampler calls can't be intercepted; pass the original "
            "(unscripted) nn.Module")
    if isinstance(batch_slice, int):
        batch_slice = slice(0, batch_slice)
    rec = Capture(keep_last, max_bytes)
    rec.stnviz_display = getattr(model, "stnviz_display", None)  # the model's display travels (stnviz.render.set_display)
    session = _Session(model, rec, batch_slice, to_cpu)
    if not foreign:
        session_record = session._record

        def stnviz_only(args, kwargs, out, owner, st, method=None):
            if st is not None:
                session_record(args, kwargs, out, owner, st, method)

        session._record = stnviz_only
    modules = [m for m, _ in session.modules.values()]
    scripted = [n or session.root_name for m, n in session.modules.values() if _is_scripted(m)]
    compiled = any(_is_compiled(m) for m in modules)
    with contextlib.ExitStack() as stack:
        try:
            # A capture entered and never exited (``c.__enter__()`` then dropped, an abandoned
            # generator) is closed by this ``finally`` when Python finalizes the context.
            session.open()
            if compiled:
                if not hasattr(torch.compiler, "set_stance"):
                    raise CaptureError("capture runs a torch.compile'd model eagerly, which needs torch >= 2.6; "
                                       "pass the uncompiled module (compiled._orig_mod)")
                stack.enter_context(torch.compiler.set_stance("force_eager"))
            yield rec
        except Exception as e:
            if _compiler_error(e):
                raise CaptureError(
                    f"torch.compile failed inside capture ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                    "pass the uncompiled module (compiled._orig_mod) to capture and run that") from e
            raise
        finally:
            session.close()
    if not len(rec) and not allow_empty:
        n_st = sum(isinstance(m, SpatialTransformer) for m in modules)
        if n_st:
            why = f"the model has {n_st} SpatialTransformer module(s) but none ran inside the context"
        else:
            why = "the model has no stnviz SpatialTransformer and made no grid_sample call inside the context"
            if not foreign:
                why += " (foreign=False: only stnviz SpatialTransformer modules are recorded)"
        if scripted:
            why += f"; TorchScript submodules can't be seen into: {scripted}"
        if rec.skipped:
            why += f"; {rec.skipped} call(s) could not be recorded (see the CaptureWarning)"
        raise CaptureError(f"nothing captured: {why}; run the model inside `with capture(model) as rec:`")
