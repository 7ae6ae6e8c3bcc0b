"""The torch function mode that hands sampler calls to the open captures of its thread, and its
place on the (per-thread) torch function mode stack."""

from __future__ import annotations

import inspect
import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode, _push_mode

try:
    from torch.utils._device import DeviceContext as _DeviceContext  # torch keeps it at the stack's bottom
except ImportError:  # pragma: no cover - older torch
    _DeviceContext = ()

if TYPE_CHECKING:
    from ._session import _Session


# The torch function mode stack is per thread. A capture's mode goes *under* the modes already
# entered (above torch's own DeviceContext, which keeps the bottom), so a user's mode entered before
# the capture and exited inside it pops itself, not the capture's mode (a mode's ``__exit__`` pops
# whatever is on top); and the capture takes out only its own mode, wherever it is. Being under the
# user's modes, it records the sampler calls as they finally run (after those modes had their say).


def _insert_mode(mode: TorchFunctionMode) -> None:
    """Put ``mode`` on this thread's stack under every mode but torch's ``DeviceContext``."""
    stack = [_pop_mode() for _ in range(torch._C._len_torch_function_stack())][::-1]  # bottom first
    bottom = 0
    while bottom < len(stack) and isinstance(stack[bottom], _DeviceContext):
        bottom += 1
    for m in [*stack[:bottom], mode, *stack[bottom:]]:
        _push_mode(m)


def _remove_mode(mode: TorchFunctionMode) -> bool:
    """Take ``mode`` off this thread's stack wherever it is, the others staying in order; ``False``
    when it is not there (popped by someone else, or set aside while it is dispatching a call)."""
    above = []
    found = False
    while torch._C._len_torch_function_stack():
        m = _pop_mode()
        if m is mode:
            found = True
            break
        above.append(m)
    for m in reversed(above):
        _push_mode(m)
    return found


def _on_stack(mode: TorchFunctionMode) -> bool:
    return any(m is mode for m in _get_current_function_mode_stack())


#: the samplers, by what they are: a function is one of them when it is, or wraps (``__wrapped__``,
#: as ``functools.wraps`` leaves it), ``torch.nn.functional``'s function of that name, or carries
#: its module and qualified name; so a tool that wrapped torch's functions before (or while) a
#: capture runs doesn't hide the calls.
_SAMPLERS = {"grid_sample": F.grid_sample, "affine_grid": F.affine_grid}
_ALIGN_CORNERS_AT = {"grid_sample": 4, "affine_grid": 2}  # its position among the arguments
_kinds: dict = {}  # func -> "grid_sample" | "affine_grid" | None, judged once per function
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _judge_kind(func) -> str | None:
    with_unwrapped = [func]
    try:
        with_unwrapped.append(inspect.unwrap(func))
    except Exception:  # a cycle of __wrapped__, an odd object
        pass
    for f in with_unwrapped:
        for kind, original in _SAMPLERS.items():
            if f is original or f is getattr(F, kind, None):
                return kind
            if getattr(f, "__module__", None) == "torch.nn.functional" and getattr(f, "__qualname__", None) == kind:
                return kind
    return None


def sampler_kind(func) -> str | None:
    """``"grid_sample"``, ``"affine_grid"`` or ``None``: which sampler function ``func`` is."""
    try:
        return _kinds[func]
    except KeyError:
        kind = _kinds[func] = _judge_kind(func)
        return kind
    except TypeError:  # an unhashable callable
        return _judge_kind(func)


def _caller(func):
    """The frame that called ``func`` (the user's line, where torch's own ``stacklevel=2``
    warnings point without a mode), or ``None``."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    f = sys._getframe(2)
    first_outside = None  # else the first frame in neither torch nor this file (a wrapper's caller)
    while f is not None:
        if f.f_code is code:
            return f.f_back
        if first_outside is None and not f.f_code.co_filename.startswith((_TORCH_DIR, __file__)):
            first_outside = f
        f = f.f_back
    return first_outside


def _run_keeping_warning_origins(func, args, kwargs):
    """``func(*args, **kwargs)``; the warnings it gives that would point at this file (torch warns
    at its caller's line, which under a mode is this dispatcher) are given again at the line that
    called ``func``, so filters and the reported file/line are those of the user's code."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = func(*args, **kwargs)
    if caught:
        frame = _caller(func)
        for w in caught:
            if frame is not None and w.filename == __file__:
                registry = frame.f_globals.setdefault("__warningregistry__", {})
                warnings.warn_explicit(w.message, w.category, frame.f_code.co_filename, frame.f_lineno,
                                       module=frame.f_globals.get("__name__"), registry=registry,
                                       module_globals=frame.f_globals)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return out


class _Dispatcher(TorchFunctionMode):
    """One per thread while any capture is open there: hands sampler calls to each open capture.
    With no capture left it only passes calls on (until its thread's next capture removes it)."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()
        self.sessions: list[_Session] = []  # replaced, never mutated: a GC in another thread may drop one
        self.active = 0  # how many model modules or methods of its captures are running in its thread

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sampler_kind(func)
        if kind is None:
            return func(*args, **kwargs)
        i = _ALIGN_CORNERS_AT[kind]
        if (args[i] if len(args) > i else kwargs.get("align_corners")) is None:  # torch warns only then
            out = _run_keeping_warning_origins(func, args, kwargs)
        else:
            out = func(*args, **kwargs)
        for s in self.sessions:
            s.on_call(kind, args, kwargs, out)
        return out


_local = threading.local()


def _dispatcher_join(session: "_Session") -> None:
    d = getattr(_local, "dispatcher", None)
    for m in _get_current_function_mode_stack():  # left behind by a capture closed while it dispatched
        if isinstance(m, _Dispatcher) and m is not d and not m.sessions:
            _remove_mode(m)
    if d is None:
        d = _local.dispatcher = _Dispatcher()
    d.sessions = [*d.sessions, session]
    session.dispatcher = d


def _intercept(session: "_Session", on: bool) -> None:
    """A module or method of ``session``'s model starts (``on``) or ends running in this thread:
    the dispatcher is on the torch function mode stack only while one of its captures' models
    runs, so torch calls made elsewhere (an optimizer's ``.grad`` reads, a loss, data loading)
    never go through Python."""
    d = session.dispatcher
    if d is None:
        return
    if on:
        session.active += 1
        d.active += 1
        if d.active == 1 and not _on_stack(d):  # the first to start (a nested one finds it there)
            _insert_mode(d)
    elif session.active:
        session.active -= 1
        d.active -= 1
        if not d.active:
            _remove_mode(d)


def _dispatcher_leave(session: "_Session") -> None:
    """Detach ``session`` from its thread's dispatcher, and take the dispatcher off the stack when
    it was the last one. Safe from any thread (a garbage-collected capture is closed in whichever
    thread collects it): only the owning thread's stack can be changed, so elsewhere the
    dispatcher just passes calls on until its own thread's next capture removes it."""
    d, session.dispatcher = session.dispatcher, None
    if d is None:
        return
    d.sessions = [s for s in d.sessions if s is not session]
    d.active -= session.active  # closed while its model ran (an exception, a dropped context)
    session.active = 0
    if (d.sessions and d.active) or threading.get_ident() != d.thread:
        return
    if d.sessions:  # others stay open, none of their models running: off the stack until one runs
        _remove_mode(d)
        return
    if _remove_mode(d) and getattr(_local, "dispatcher", None) is d:
        _local.dispatcher = None
