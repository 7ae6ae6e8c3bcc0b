"""Record what every spatial transformer in a model did: ``with stnviz.capture(model) as rec: model(x)``.

Every sampler call is seen, however the code reaches it: ``F.grid_sample``, a name bound at import
(``from torch.nn.functional import grid_sample``), kornia's warps, stnviz's own
:class:`~stnviz.models.SpatialTransformer`. Interception is a :class:`torch.overrides.TorchFunctionMode`
(nothing in ``torch.nn.functional`` is patched), so

* a capture records only the calls of its own thread, made while a module of *its* model runs;
  several threads, nested or overlapping captures each keep their own records;
* everything is restored on exit, also on an exception (the few hooks, on the model itself and on
  stnviz's grid generators, are removed in ``finally``; which module made a call is read from the
  call stack, so no hook runs on every module call); a capture entered and never exited is closed
  when it is garbage-collected;
* it never breaks a forward that works without it: only its own mode is taken off the torch
  function mode stack (the user's modes stay, in any order of entering and exiting), objects are
  looked up by identity (an unhashable helper calling ``grid_sample`` is fine), and a call that
  can't be recorded is left out, counted in ``Capture.skipped`` and named in one
  :class:`CaptureWarning`; the forward's own result is returned unchanged;
* memory is bounded: records are detached copies (on the CPU by default), at most ``keep_last`` of
  them, each cut to ``batch_slice``; the thetas waiting for their ``grid_sample`` are held only as
  long as the grid they made is alive.

Each :class:`TransformRecord` says how it was sampled (``sampling``: ``mode``, ``padding_mode``,
``align_corners``, so ``geometry.warp(r.input, r.grid, **r.sampling)`` reproduces ``r.output``),
gives its theta in stnviz's convention (``align_corners=False``, converted when the code used
``True``), has a stable ``key`` (the module's name, plus ``#k`` for its k-th sampler call in one
forward of the model) and a ``role`` (``"image"`` for a warp of the image or a feature map,
``"auxiliary"`` for masks, offset fields and flow integration steps).

Limits, each ending in a clear :class:`CaptureError`: TorchScript (scripted or traced) models can't
be seen into; ``torch.compile``\\ d models run eagerly inside the context (that is how their
transformers are seen), and an error raised by the compiler says to pass the uncompiled module.
3-D samplers (volumes) are recorded, marked ``spatial_dims=3``; the 2-D drawing functions refuse
them by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import sys
import threading
import types
import warnings
import weakref
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack, _pop_mode, _push_mode

try:
    from torch.utils._device import DeviceContext as _DeviceContext  # torch keeps it at the stack's bottom
except ImportError:  # pragma: no cover - older torch
    _DeviceContext = ()

from . import geometry
from .models import GridGenerator, SpatialTransformer
from .models.modes import eval_mode, model_device_dtype  # re-exported: defined with the models

__all__ = [
    "Capture",
    "CaptureError",
    "CaptureWarning",
    "Collection",
    "TransformRecord",
    "capture",
    "collect",
    "collect_batch",
    "model_device_dtype",
]

class CaptureError(RuntimeError):
    """Nothing was captured, a record was asked for that does not exist, or the model can't be
    seen into (TorchScript, a compiler error).

    Example:
        >>> layer = torch.nn.Linear(4, 2)  # samples nothing
        >>> with capture(layer):  # doctest: +ELLIPSIS
        ...     _ = layer(torch.rand(1, 4))
        Traceback (most recent call last):
        ...
        stnviz.capture.CaptureError: nothing captured: the model has no stnviz SpatialTransformer and made no ...
    """


class CaptureWarning(RuntimeWarning):
    """A sampler call (or a capture hook) could not be recorded; the forward ran unchanged and the
    capture goes on with one record less (``Capture.skipped`` counts them). Given once per capture."""


@dataclass
class TransformRecord:
    """One sampler call (``grid_sample``) of one transformer.

    Attributes:
        key: stable name to pick the record by: the transformer's module name for stnviz
            transformers (``"transformer"``), else the module running the call plus
            ``":grid_sample"`` (``"stn:grid_sample"``); the k-th call of the same module in one
            forward of the model gets ``"#k"`` (``"stn:grid_sample#1"``).
        module: qualified name of that module in the model (``""`` names the model itself shown
            as its class name); ``_orig_mod.`` of compiled models is dropped.
        call: order of this call among all records of the capture (0, 1, ...).
        family: transform family (``"affine"``, ``"tps"`` ...), or ``None`` when the grid was not
            made from known parameters (a TPS rectifier's own grid, a flow field).
        input: ``(B, C, H, W)`` the sampled image or feature map (``(B, C, D, H, W)`` in 3-D).
        params: the family's parameters (affine ``(B, 2, 3)``, TPS ``(B, K, 2)``, ...) in stnviz's
            convention (``align_corners=False``), or ``None``.
        grid: ``(B, H_out, W_out, 2)`` the sampling grid exactly as the sampler got it (its
            normalisation is ``sampling["align_corners"]``).
        output: ``(B, C, H_out, W_out)``.
        sampling: ``{"mode", "padding_mode", "align_corners"}`` as the code called the sampler.
        role: ``"image"`` (a warp of the image or a feature map) or ``"auxiliary"`` (a mask, an
            offset field, a flow integration step).
        spatial_dims: 2, or 3 for volumes.
        components: for the ``restricted`` family, its component names.

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> r = collect_batch(model, torch.rand(2, 1, 28, 28))[1].pick()
        >>> r.key, r.family, tuple(r.theta.shape), r.input_size
        ('transformer', 'affine', (2, 2, 3), (28, 28))
        >>> torch.allclose(r.reproduce(), r.output)  # the sampling is recorded, so the output can be remade
        True
    """

    key: str
    module: str
    call: int
    family: str | None
    input: torch.Tensor
    params: torch.Tensor | None
    grid: torch.Tensor
    output: torch.Tensor
    sampling: dict = field(default_factory=lambda: {"mode": "bilinear", "padding_mode": "zeros",
                                                    "align_corners": geometry.ALIGN_CORNERS})
    role: str = "image"
    spatial_dims: int = 2
    components: tuple | None = None

    @property
    def theta(self) -> torch.Tensor | None:
        """``(B, 2, 3)`` in stnviz's convention for matrix families (``None`` for projective, TPS,
        unknown)."""
        if self.params is None or self.family not in geometry.MATRIX_FAMILIES:
            return None
        return geometry.to_matrix(self.params, self.family, components=self.components)[:, :2]

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.input.shape[2:])

    @property
    def output_size(self) -> tuple[int, ...]:
        return tuple(self.output.shape[2:])

    def require_2d(self, what: str = "drawing") -> None:
        """Raise a clear ``ValueError`` for a 3-D (volume) record."""
        if self.spatial_dims != 2:
            raise ValueError(f"{what} handles 2-D samplers only; record {self.key!r} is a 3-D (volume) sampling "
                             f"with input shape {tuple(self.input.shape)} and grid {tuple(self.grid.shape)}")

    def pixel_grid(self) -> torch.Tensor:
        """The grid in input pixel coordinates (pixel centres at integers), ``(B, H_out, W_out, 2)``,
        using the record's own ``align_corners``."""
        self.require_2d("pixel_grid")
        return geometry.grid_to_pixels(self.grid.float(), self.input_size,
                                       align_corners=bool(self.sampling.get("align_corners")))

    def sampled_outline(self, points_per_side: int = 16) -> torch.Tensor:
        """The sampled region's outline in input pixels ``(B, 4 * points_per_side, 2)``.

        From the parameters when the family is known; otherwise traced along the border of the
        recorded grid (the output's edge pixel centres), in the record's own normalisation."""
        self.require_2d("sampled_outline")
        if self.params is not None and self.family is not None:
            return geometry.sampled_outline(self.params.float(), self.family, self.input_size,
                                            components=self.components, points_per_side=points_per_side)
        g = self.pixel_grid()
        return torch.cat([g[:, 0, :], g[:, :, -1], g[:, -1, :].flip(1), g[:, :, 0].flip(1)], dim=1)

    def reproduce(self) -> torch.Tensor:
        """``geometry.warp(input, grid, **sampling)``: the output again, from what was recorded."""
        self.require_2d("reproduce")
        return geometry.warp(self.input, self.grid, **self.sampling)

    def sample(self, index: int) -> "TransformRecord":
        """The record of one sample: every batched field cut to ``[index : index + 1]``."""
        cut = slice(index, index + 1)
        return dataclasses.replace(self, input=self.input[cut], grid=self.grid[cut], output=self.output[cut],
                                   params=None if self.params is None else self.params[cut])

    @staticmethod
    def cat(records: list["TransformRecord"]) -> "TransformRecord":
        """Join records of one key made on consecutive batches into one (batch dims concatenated)."""
        first = records[0]
        if len(records) == 1:
            return first
        def cat(name):
            values = [getattr(r, name) for r in records]
            return None if any(v is None for v in values) else torch.cat(values)
        return TransformRecord(key=first.key, module=first.module, call=first.call, family=first.family,
                               input=cat("input"), params=cat("params"), grid=cat("grid"), output=cat("output"),
                               sampling=dict(first.sampling), role=first.role, spatial_dims=first.spatial_dims,
                               components=first.components)

    def __repr__(self) -> str:
        return (f"TransformRecord(key={self.key!r}, family={self.family!r}, role={self.role!r}, "
                f"input={tuple(self.input.shape)}, output={tuple(self.output.shape)}, sampling={self.sampling})")


class Capture:
    """The records of one ``capture`` context: a sequence in call order, addressable by key.

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> with torch.no_grad(), capture(model) as rec:
        ...     _ = model(torch.rand(2, 1, 28, 28))
        >>> rec, rec.pick().key, len(rec.of("transformer"))
        (Capture(1 records, keys=['transformer'], dropped=0), 'transformer', 1)
    """

    def __init__(self, keep_last: int | None):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be a positive number of records or None, got {keep_last}")
        self._records: deque = deque(maxlen=keep_last)
        self._counter = itertools.count()
        self.dropped = 0
        #: how many times recording failed (a sampler call left out, a hook that could not note its
        #: state); the forwards themselves ran unchanged, see the :class:`CaptureWarning`
        self.skipped = 0

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

    def keys(self, role: str | None = None) -> list[str]:
        """Keys of the kept records in first-call order (only those of ``role`` if given)."""
        return list(dict.fromkeys(r.key for r in self._records if role is None or r.role == role))

    @property
    def modules(self) -> list[str]:
        """The keys, image warps first (the name older code used)."""
        return self.keys("image") + self.keys("auxiliary")

    def of(self, key: str) -> list[TransformRecord]:
        """All kept records of ``key``, in call order."""
        out = [r for r in self._records if r.key == key]
        if not out:
            raise CaptureError(f"no records for {key!r}; captured keys: {self.keys()}")
        return out

    def pick(self, key: str | None = None) -> TransformRecord:
        """The record to show: the latest of ``key`` if given, else the first image warp (the
        first record when every sampling is auxiliary)."""
        if key is not None:
            return self.of(key)[-1]
        for r in self._records:
            if r.role == "image":
                return r
        return self.last()

    def last(self, key: str | None = None) -> TransformRecord:
        """The latest record (of ``key`` if given)."""
        if key is not None:
            return self.of(key)[-1]
        if not self._records:
            raise CaptureError("the capture holds no records")
        return self._records[-1]

    def __repr__(self) -> str:
        skipped = f", skipped={self.skipped}" if self.skipped else ""
        return f"Capture({len(self)} records, keys={self.keys()}, dropped={self.dropped}{skipped})"


# --------------------------------------------------------------------------- interception


def _arg(args, kwargs, i: int, name: str, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _is_scripted(m: nn.Module) -> bool:
    return isinstance(m, torch.jit.ScriptModule)


def _is_compiled(m: nn.Module) -> bool:
    return "_orig_mod" in m._modules  # torch.compile's wrapper holds the module under that name


def _clean_name(name: str) -> str:
    """Drop the ``_orig_mod`` level that ``torch.compile`` adds."""
    if "_orig_mod" not in name:
        return name
    return ".".join(p for p in name.split(".") if p != "_orig_mod")


def _modules_by_id(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(module) -> (module, qualified name)`` for ``model`` and every submodule, in the order of
    ``named_modules`` (a module reachable twice keeps its first name). Walked by identity: torch's
    ``named_modules`` keeps a ``set`` of modules, which fails for a module class without ``__hash__``."""
    found: dict[int, tuple[nn.Module, str]] = {}
    todo = [(model, "")]
    while todo:
        m, name = todo.pop()
        if id(m) in found:
            continue
        found[id(m)] = (m, _clean_name(name))
        children = [(c, f"{name}.{n}" if name else n) for n, c in m._modules.items() if c is not None]
        todo.extend(reversed(children))
    return found


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


class _Dispatcher(TorchFunctionMode):
    """One per thread while any capture is open there: hands sampler calls to each open capture.
    With no capture left it only passes calls on (until its thread's next capture removes it)."""

    def __init__(self):
        super().__init__()
        self.thread = threading.get_ident()
        self.sessions: list[_Session] = []  # replaced, never mutated: a GC in another thread may drop one

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.grid_sample or func is F.affine_grid:
            for s in self.sessions:
                s.on_call(func, args, kwargs, out)
        return out


_local = threading.local()


def _dispatcher_join(session: "_Session") -> None:
    d = getattr(_local, "dispatcher", None)
    for m in _get_current_function_mode_stack():  # left behind by a capture closed while it dispatched
        if isinstance(m, _Dispatcher) and m is not d and not m.sessions:
            _remove_mode(m)
    if d is None:
        d = _local.dispatcher = _Dispatcher()
    if not _on_stack(d):  # new, or taken off the stack by someone else: (re)inserted
        _insert_mode(d)
    d.sessions = [*d.sessions, session]
    session.dispatcher = d


def _dispatcher_leave(session: "_Session") -> None:
    """Detach ``session`` from its thread's dispatcher, and take the dispatcher off the stack when
    it was the last one. Safe from any thread (a garbage-collected capture is closed in whichever
    thread collects it): only the owning thread's stack can be changed, so elsewhere the
    dispatcher just passes calls on until its own thread's next capture removes it."""
    d, session.dispatcher = session.dispatcher, None
    if d is None:
        return
    d.sessions = [s for s in d.sessions if s is not session]
    if d.sessions or threading.get_ident() != d.thread:
        return
    if _remove_mode(d) and getattr(_local, "dispatcher", None) is d:
        _local.dispatcher = None


def _never_raises(what: str):
    """For a capture hook: an exception is counted and warned about, never raised into the forward."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args):
            try:
                return method(self, *args)
            except Exception as e:
                self.failed(what, e)
                return None
        return run
    return wrap


class _Session:
    """The state of one open capture: its model's modules (by identity), whether the model is
    running in this capture's thread, the grids waiting for a sampler call, and the records.

    Which module made a sampler call is read from the Python call stack at that call (the
    innermost frame whose ``self`` is a module of the model), so no hook runs on every module
    call: only the model's own forward hooks (a new forward starts the per-forward call indices)
    and those of stnviz's grid generators (their parameters) are registered. Nothing here raises
    into the model's forward: a failure is counted in ``rec.skipped`` and warned about once."""

    def __init__(self, model: nn.Module, rec: Capture, batch_slice, to_cpu: bool):
        self.model, self.rec, self.batch_slice, self.to_cpu = model, rec, batch_slice, to_cpu
        self.thread = threading.get_ident()
        self.root_name = type(model._orig_mod if _is_compiled(model) else model).__name__
        self.modules = _modules_by_id(model)  # id -> (module, name): held, so no id is reused meanwhile
        self.running = 0  # depth of the model's own forward in this thread
        self.per_forward: dict[str, int] = {}
        self.model_inputs: list[torch.Tensor] = []
        self.generated: dict[int, tuple] = {}  # id(SpatialTransformer) -> its generator's last output
        self.parent = {id(m.grid_generator): m for m, _ in self.modules.values() if isinstance(m, SpatialTransformer)}
        self.grids: dict[int, tuple] = {}  # id(grid) -> (weakref(grid), provenance)
        self.finalizers: list[weakref.finalize] = []
        self.handles: list = []
        self.dispatcher: _Dispatcher | None = None
        self.warned = False
        self.closed = False

    def name(self, obj) -> str | None:
        """The qualified name of ``obj`` if it is a module of the model (by identity), else ``None``."""
        entry = self.modules.get(id(obj))
        return entry[1] if entry is not None and entry[0] is obj else None

    def _mine(self) -> bool:
        return not self.closed and threading.get_ident() == self.thread

    def failed(self, what: str, e: Exception) -> None:
        self.rec.skipped += 1
        if not self.warned:
            self.warned = True
            reason = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"stnviz.capture could not record {what} ({type(e).__name__}: {reason}); the forward "
                          "ran unchanged, the capture goes on and counts what it leaves out in rec.skipped",
                          CaptureWarning, stacklevel=2)

    def open(self) -> None:
        """Register the hooks and join this thread's dispatcher."""
        self.handles.append(self.model.register_forward_pre_hook(self.root_pre))
        self.handles.append(self.model.register_forward_hook(self.root_post, always_call=True))
        for m, _ in self.modules.values():
            if isinstance(m, GridGenerator):
                self.handles.append(m.register_forward_hook(self.generator_post, with_kwargs=True))
        _dispatcher_join(self)

    # hooks on the model itself and on stnviz's grid generators
    @_never_raises("the start of the model's forward")
    def root_pre(self, module, args):
        if self._mine():
            if not self.running:  # a new forward of the model: per-forward call indices start again
                self.per_forward.clear()
                self.model_inputs = [a for a in args if isinstance(a, torch.Tensor)]
            self.running += 1

    @_never_raises("the end of the model's forward")
    def root_post(self, module, args, output):
        if self._mine() and self.running:
            self.running -= 1

    @_never_raises("a grid generator's parameters")
    def generator_post(self, module, args, kwargs, output):
        if self._mine() and isinstance(output, torch.Tensor):
            params = args[0] if args else kwargs["params"]
            prov = (module.family, geometry.shape_params(params.detach(), module.family), module.components, False)
            self._remember(output, prov)
            st = self.parent.get(id(module))
            if st is not None:
                self.generated[id(st)] = prov

    def _owner(self):
        """The innermost module of the model whose code is running (from the call stack), and
        the innermost stnviz SpatialTransformer among them (or ``None``)."""
        owner = st = None
        f = sys._getframe(1)
        while f is not None:
            obj = f.f_locals.get("self")
            if obj is not None and self.name(obj) is not None:
                if owner is None:
                    owner = obj
                if isinstance(obj, SpatialTransformer):
                    st = obj
                    break
            f = f.f_back
        return owner, st

    def _remember(self, grid: torch.Tensor, prov: tuple) -> None:
        key = id(grid)
        self.grids[key] = (weakref.ref(grid), prov)
        self.finalizers.append(weakref.finalize(grid, self.grids.pop, key, None))
        if len(self.finalizers) > 256:  # forget finalizers of grids already gone
            self.finalizers = [f for f in self.finalizers if f.alive]

    def _provenance(self, grid: torch.Tensor):
        entry = self.grids.get(id(grid))
        if entry is not None and entry[0]() is grid:
            return entry[1]
        return None

    def on_call(self, func, args, kwargs, out) -> None:
        if not self._mine():
            return
        try:
            self._on_call(func, args, kwargs, out)
        except Exception as e:
            where = ""
            with contextlib.suppress(Exception):
                owner = self._owner()[0]
                where = "" if owner is None else f" in {self.name(owner) or self.root_name!r}"
            self.failed(f"a {func.__name__} call{where}", e)

    def _on_call(self, func, args, kwargs, out) -> None:
        if func is F.affine_grid:
            theta = _arg(args, kwargs, 0, "theta", None)
            if isinstance(theta, torch.Tensor) and theta.dim() == 3 and theta.shape[1:] == (2, 3):
                ac = _arg(args, kwargs, 2, "align_corners", None)
                self._remember(out, ("affine", theta.detach(), None, bool(ac)))
            return
        owner, st = self._owner()
        if owner is not None:  # a sampler call of this model (not of other code in the context)
            self._record(args, kwargs, out, owner, st)

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if self.batch_slice is not None:
            t = t[self.batch_slice]
        return t.to("cpu", copy=True) if self.to_cpu else t.clone()

    def _record(self, args, kwargs, out, owner: nn.Module, st: nn.Module | None) -> None:
        inp = _arg(args, kwargs, 0, "input", None)
        grid = _arg(args, kwargs, 1, "grid", None)
        if not isinstance(inp, torch.Tensor) or not isinstance(grid, torch.Tensor):
            return
        sampling = {"mode": _arg(args, kwargs, 2, "mode", "bilinear"),
                    "padding_mode": _arg(args, kwargs, 3, "padding_mode", "zeros"),
                    "align_corners": bool(_arg(args, kwargs, 4, "align_corners", None))}
        if st is not None:
            owner = st
            base = self.name(st) or self.root_name
        else:
            base = (self.name(owner) or self.root_name) + ":grid_sample"
        if not self.running:
            self.per_forward.clear()  # a submodule called on its own: each call is its own forward
        k = self.per_forward.get(base, 0)
        self.per_forward[base] = k + 1
        key = base if k == 0 else f"{base}#{k}"
        dims = grid.dim() - 2
        prov = self._provenance(grid)
        if prov is None and st is not None and dims == 2:
            prov = self.generated.get(id(st))
        family = params = components = None
        if prov is not None and dims == 2:
            family, params, components, ac = prov
            if params.shape[0] != grid.shape[0]:
                family = params = components = None
            elif ac and family == "affine":
                params = geometry.convert_align_corners(params.double(), inp.shape[-2:], grid.shape[1:3],
                                                        source=True).to(params.dtype)
        role = "image" if st is not None else self._role(inp, grid, sampling)
        self.rec._add(TransformRecord(
            key=key, module=self.name(owner) or self.root_name, call=next(self.rec._counter), family=family,
            input=self._copy(inp), params=None if params is None else self._copy(params),
            grid=self._copy(grid), output=self._copy(out), sampling=sampling, role=role,
            spatial_dims=dims, components=components,
        ))

    def _role(self, inp: torch.Tensor, grid: torch.Tensor, sampling: dict) -> str:
        """``"image"`` unless what is sampled looks like a coordinate field or a mask."""
        for t in self.model_inputs:
            if inp is t or (inp.shape == t.shape and inp.data_ptr() == t.data_ptr()):
                return "image"
        if inp.shape[1] == grid.shape[-1]:  # as many channels as coordinates: an offset / flow field
            return "auxiliary"
        if inp.shape[1] == 1 and inp.numel() and bool(((inp == 0) | (inp == 1)).all()):
            return "auxiliary"  # a binary mask
        return "image"

    def close(self) -> None:
        """Remove the hooks and leave the dispatcher; from any thread, more than once."""
        self.closed = True
        for h in self.handles:
            h.remove()
        self.handles.clear()
        _dispatcher_leave(self)
        for f in self.finalizers:
            f.detach()
        self.finalizers.clear()
        self.grids.clear()
        self.generated.clear()
        self.model_inputs = []


def _compiler_error(e: BaseException) -> bool:
    mod = type(e).__module__ or ""
    return mod.startswith(("torch._dynamo", "torch._inductor"))


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
    """Record every sampler call made by ``model`` while the context is open.

    Args:
        model: any ``nn.Module`` (stnviz's or not; a ``torch.compile``\\ d one runs eagerly inside).
        keep_last: keep only the latest N records (bounded memory); ``None`` keeps all.
        batch_slice: keep only these samples of each batch (``slice(0, 8)``, or an int ``n`` for
            the first ``n``).
        to_cpu: move the copies to the CPU (default) or keep them on the model's device.
        foreign: also record sampler calls outside stnviz transformers (``False``: stnviz's only).
        allow_empty: don't raise :class:`CaptureError` when nothing was captured.

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
    rec = Capture(keep_last)
    session = _Session(model, rec, batch_slice, to_cpu)
    if not foreign:
        session_record = session._record

        def stnviz_only(args, kwargs, out, owner, st):
            if st is not None:
                session_record(args, kwargs, out, owner, st)

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


# --------------------------------------------------------------------------- running a model


def _default_forward(model, images):
    return model(images)


def collect_batch(model: nn.Module, images: torch.Tensor, *, forward: Callable | None = None,
                  keep_last: int | None = None, batch_slice=None, allow_empty: bool = False) -> tuple[Any, Capture]:
    """Run ``forward(model, images)`` (default ``model(images)``) once, in eval mode without
    gradients, and return ``(output, capture)``.

    ``images (B, C, H, W)`` go to the model's device and floating dtype first (half, bf16), so
    a CPU float batch works with any model. The one "run a model on a batch and collect records"
    loop of the package: the widgets, :mod:`stnviz.analysis` and :mod:`stnviz.animate` use it.

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> logits, rec = collect_batch(model, torch.rand(4, 1, 28, 28))
        >>> logits.shape, rec.keys(), model.training  # the model's own mode is restored
        (torch.Size([4, 10]), ['transformer'], True)
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor (B, C, H, W), got {type(images).__name__}")
    device, dtype = model_device_dtype(model)
    if images.is_floating_point():
        images = images.to(device=device, dtype=dtype)
    else:
        images = images.to(device)
    forward = forward or _default_forward
    with torch.no_grad(), eval_mode(model), capture(model, keep_last=keep_last, batch_slice=batch_slice,
                                                     allow_empty=allow_empty) as rec:
        output = forward(model, images)
    return output, rec


@dataclass
class Collection:
    """What :func:`collect` gathered: one record per key with the batches joined, and the model's
    outputs per batch (detached).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> col = collect(model, torch.rand(5, 1, 28, 28), batch_size=2)  # 3 batches, joined per key
        >>> col.keys(), col.records["transformer"].output.shape, len(col.outputs), col.skipped
        (['transformer'], torch.Size([5, 1, 28, 28]), 3, {})
    """

    records: dict[str, TransformRecord]
    outputs: list
    skipped: dict[str, str] = field(default_factory=dict)

    def keys(self, role: str | None = None) -> list[str]:
        """Keys in first-call order, image warps first (only ``role`` if given)."""
        keys = list(self.records)
        if role is not None:
            return [k for k in keys if self.records[k].role == role]
        return [k for k in keys if self.records[k].role == "image"] + [k for k in keys if self.records[k].role != "image"]


def _detach(out):
    """Detached tensors in the same nesting of tuples, lists and dicts."""
    if isinstance(out, torch.Tensor):
        return out.detach()
    if isinstance(out, (tuple, list)) and type(out) in (tuple, list):
        return type(out)(_detach(o) for o in out)
    if isinstance(out, dict):
        return {k: _detach(v) for k, v in out.items()}
    return out


def collect(model: nn.Module, images: torch.Tensor, *, forward: Callable | None = None,
            batch_size: int | None = None) -> Collection:
    """Run ``images (N, C, H, W)`` through ``model`` in batches (all at once when ``batch_size``
    is ``None``) and join each key's records over the batches.

    A key that is missing from some batch, or whose shapes differ between batches, can't be joined:
    it is left out and listed in ``skipped`` with the reason. A model that samples nothing gives an
    empty collection (callers decide whether that is an error).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_gtsrb", device="cpu")
        >>> col = collect(model, torch.rand(5, 3, 32, 32), batch_size=2)
        >>> col.keys(), tuple(col.records["transformer"].theta.shape)
        (['transformer', 'body.1'], (5, 2, 3))
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    n = images.shape[0]
    step = n if batch_size is None else batch_size
    per_key: dict[str, list] = {}
    outputs = []
    batches = 0
    for i in range(0, n, step):
        out, rec = collect_batch(model, images[i : i + step], forward=forward, allow_empty=True)
        outputs.append(_detach(out))
        batches += 1
        seen = set()
        for r in rec:
            if r.key in seen:
                continue  # one record per key and batch (a key repeats only if the model ran twice)
            seen.add(r.key)
            per_key.setdefault(r.key, []).append(r)
    records, skipped = {}, {}
    for key, recs in per_key.items():
        if len(recs) != batches:
            skipped[key] = f"sampled in {len(recs)} of {batches} batches"
            continue
        shapes = {(r.input.shape[1:], r.output.shape[1:], r.grid.shape[1:]) for r in recs}
        if len(shapes) > 1:
            skipped[key] = "its shapes differ between batches"
            continue
        records[key] = TransformRecord.cat(recs)
    return Collection(records, outputs, skipped)


# ``stnviz.capture(model)`` and ``from stnviz.capture import capture`` both work: the module is
# callable and calls :func:`capture`.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
