"""The state of one open capture (:class:`_Session`): which module made a sampler call, the
grids waiting for their sampler, the hooks, and turning a call into a :class:`TransformRecord`."""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
import warnings
import weakref

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from .. import geometry
from ..models import GridGenerator, SpatialTransformer
from . import roles
from ._mode import _Dispatcher, _dispatcher_join, _dispatcher_leave, _intercept
from .records import Capture, CaptureWarning, TransformRecord


def _arg(args, kwargs, i: int, name: str, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _is_scripted(m: nn.Module) -> bool:
    return isinstance(m, torch.jit.ScriptModule)


def _is_compiled(m: nn.Module) -> bool:
    return "_orig_mod" in m._modules  # torch.compile's wrapper holds the module under that name


def _wrapped_name(m: nn.Module) -> str | None:
    """The child name under which ``m`` wraps a model, for the wrappers that add a level and nothing
    else: ``torch.compile``'s ``_orig_mod``, (Distributed)DataParallel's ``module``; else ``None``."""
    if _is_compiled(m):
        return "_orig_mod"
    if isinstance(m, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return "module"
    return None


def _unwrapped(model: nn.Module) -> nn.Module:
    """``model`` without its wrappers (see :func:`_wrapped_name`)."""
    while (inner := _wrapped_name(model)) is not None:
        model = model._modules[inner]
    return model


def _modules_by_id(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    """``id(module) -> (module, qualified name)`` for ``model`` and every submodule, in the order of
    ``named_modules`` (a module reachable twice keeps its first name). A wrapper's model takes the
    wrapper's name, so the keys of a compiled or DDP model are those of the model ("transformer",
    not "module.transformer"). Walked by identity: torch's ``named_modules`` keeps a ``set`` of
    modules, which fails for a module class without ``__hash__``."""
    found: dict[int, tuple[nn.Module, str]] = {}
    todo = [(model, "")]
    while todo:
        m, name = todo.pop()
        if id(m) in found:
            continue
        found[id(m)] = (m, name)
        inner = _wrapped_name(m)
        children = [(c, name if n == inner else f"{name}.{n}" if name else n) for n, c in m._modules.items()
                    if c is not None]
        todo.extend(reversed(children))
    return found



#: the code names of a module's own forward (and of torch's call machinery around it)
_FORWARD_NAMES = frozenset({"forward", "_call_impl", "_wrapped_call_impl", "__call__"})


def _version(t: torch.Tensor) -> int | None:
    """``t``'s in-place version counter (``None`` for inference tensors, which keep none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _own_methods(model: nn.Module) -> list[str]:
    """The names of the methods ``model``'s own classes define (not torch's, not ``forward``, no
    dunders, not set on the instance): those a user may drive the model through."""
    names = []
    for cls in type(model).__mro__:
        if cls.__module__.startswith("torch.") or cls is object:
            continue
        for name, value in vars(cls).items():
            if (inspect.isfunction(value) and not inspect.isgeneratorfunction(value)
                    and not inspect.iscoroutinefunction(value) and name not in _FORWARD_NAMES
                    and not name.startswith("__") and name not in names and name not in model.__dict__):
                names.append(name)
    return names


class _Intercepting:
    """A method of the model, set on the instance while a capture is open: the interception is on
    while it runs. Deep-copied with the model it becomes the plain method of the copy again (an
    EMA copy made inside the context calls its own code)."""

    def __init__(self, session: "_Session", method):
        self.session, self.method = session, method
        functools.update_wrapper(self, method)

    def __call__(self, *args, **kwargs):
        self.session.enter()
        try:
            return self.method(*args, **kwargs)
        finally:
            self.session.leave()

    def __deepcopy__(self, memo):
        owner = self.method.__self__
        return getattr(memo.get(id(owner), owner), self.method.__name__)


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
    innermost frame whose ``self`` is a module of the model). Hooks: a global pair seeing every
    module call, switching the interception on and off around the model's modules (:meth:`open`); on the model itself (a new forward starts a
    capture pass); on stnviz's grid generators (their parameters). Nothing here raises
    into the model's forward: a failure is counted in ``rec.skipped`` and warned about once."""

    def __init__(self, model: nn.Module, rec: Capture, batch_slice: slice | None, to_cpu: bool):
        self.model, self.rec, self.batch_slice, self.to_cpu = model, rec, batch_slice, to_cpu
        self.thread = threading.get_ident()
        self.root_name = type(_unwrapped(model)).__name__
        self.modules = _modules_by_id(model)  # id -> (module, name): held, so no id is reused meanwhile
        self.running = 0  # depth of the model's own forward in this thread
        self.per_pass: dict[str, int] = {}  # key base -> sampler calls so far in this capture pass
        self.copies: dict[tuple, tuple] = {}  # tensor's (storage, view, version) -> weakrefs (tensor, its copy)
        self.copies_limit = 64
        self.model_inputs: list[torch.Tensor] = []
        self.generated: dict[int, tuple] = {}  # id(SpatialTransformer) -> its generator's last output
        self.parent = {id(m.grid_generator): m for m, _ in self.modules.values() if isinstance(m, SpatialTransformer)}
        self.grids: dict[int, tuple] = {}  # id(grid) -> (weakref(grid), provenance, grid._version)
        self.handles: list = []
        self.recorded: list = []  # geometry.theta_recorded() entered by a running grid generator
        self.wrapped: list[str] = []  # the model's methods wrapped on the instance
        self.active = 0  # how many of the model's modules or methods are running in this thread
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
        """Register the hooks, wrap the model's own methods and join this thread's dispatcher.

        Sampler calls are intercepted only while a module of the model runs: every module's
        forward (the model's, or a submodule called on its own) and every method of the model's
        own class other than ``forward`` (``guide()``, ``query_rgb()``; wrapped on the instance for
        the capture's life) switch the interception on and off again."""
        _dispatcher_join(self)
        self.handles.append(self.model.register_forward_pre_hook(self.root_pre))
        self.handles.append(self.model.register_forward_hook(self.root_post, always_call=True))
        if any(_is_compiled(m) for m, _ in self.modules.values()):  # torch.compile warns about global hooks
            for m, _ in self.modules.values():
                self.handles.append(m.register_forward_pre_hook(self.module_pre))
                self.handles.append(m.register_forward_hook(self.module_post, always_call=True))
        else:  # one pair of global hooks: two registrations, not two per module; a dict look-up per call
            self.handles.append(register_module_forward_pre_hook(self.module_pre))
            self.handles.append(register_module_forward_hook(self.module_post, always_call=True))
        for m, _ in self.modules.values():
            if isinstance(m, GridGenerator):
                self.handles.append(m.register_forward_pre_hook(self.generator_pre))
                self.handles.append(m.register_forward_hook(self.generator_post, with_kwargs=True))
                self.handles.append(m.register_forward_hook(self.generator_done, always_call=True))
        for name in _own_methods(self.model):
            self.model.__dict__[name] = self._intercepting(getattr(self.model, name))
            self.wrapped.append(name)

    def _intercepting(self, method):
        return _Intercepting(self, method)

    def enter(self) -> None:
        if self._mine():
            _intercept(self, True)

    def leave(self) -> None:
        if self._mine():
            _intercept(self, False)

    # hooks on the model itself, on every module and on stnviz's grid generators
    @_never_raises("the start of a module's forward")
    def module_pre(self, module, args):
        if self.name(module) is not None and self._mine():
            _intercept(self, True)

    @_never_raises("the end of a module's forward")
    def module_post(self, module, args, output):
        if self.name(module) is not None and self._mine():
            _intercept(self, False)

    @_never_raises("the start of the model's forward")
    def root_pre(self, module, args):
        if self._mine():
            if not self.running:  # a new forward of the model: a new capture pass
                self._new_pass()
                self.model_inputs = [a for a in args if isinstance(a, torch.Tensor)]
            self.running += 1

    @_never_raises("the end of the model's forward")
    def root_post(self, module, args, output):
        if self._mine() and self.running:
            self.running -= 1

    @_never_raises("the start of a grid generator")
    def generator_pre(self, module, args):
        # its hook records theta: its affine grid needn't go through F.affine_grid (the grid an
        # uncaptured forward builds, at a fraction of the cost)
        if self._mine():
            recorded = geometry.theta_recorded()
            recorded.__enter__()
            self.recorded.append(recorded)

    def generator_done(self, module, args, output):
        if self.recorded and threading.get_ident() == self.thread:  # closed meanwhile or not
            self.recorded.pop().__exit__(None, None, None)

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
        """The innermost module of the model whose code is running (from the call stack), the
        innermost stnviz SpatialTransformer among them (or ``None``), and the owner's method the
        call was reached through (its outermost one on the stack: ``"query_rgb"``, ``"guide"``),
        ``None`` when that is ``forward`` (a helper method called from ``forward``, or a free
        function called from a method, counts as the method it was called from)."""
        owner = st = method = None
        f = sys._getframe(1)
        while f is not None:
            obj = f.f_locals.get("self")
            if obj is not None and self.name(obj) is not None:
                if owner is None:
                    owner = obj
                if obj is owner:  # the outermost method of the owner: the one it was entered through
                    method = None if f.f_code.co_name in _FORWARD_NAMES else f.f_code.co_name
                if isinstance(obj, SpatialTransformer):
                    st = obj
                    break
            f = f.f_back
        return owner, st, method

    def _new_pass(self) -> None:
        """A capture pass starts (a forward of the model): call indices count from 0 again, and
        the copies of the last pass are no longer shared (the records keep them)."""
        self.per_pass.clear()
        self.copies.clear()

    def _remember(self, grid: torch.Tensor, prov: tuple) -> None:
        """Note where ``grid`` came from while it is alive: O(1), the entry leaves with the grid
        (the weak reference's callback; a dropped reference calls nothing, so closing is free)."""
        key, grids = id(grid), self.grids
        grids[key] = (weakref.ref(grid, lambda _, key=key: grids.pop(key, None)), prov, _version(grid))

    def _provenance(self, grid: torch.Tensor):
        """What made ``grid``, while it still describes it: ``None`` once the grid was changed in
        place after it was made (``grid += flow``: its version counter moved on)."""
        entry = self.grids.get(id(grid))
        if entry is not None and entry[0]() is grid and entry[2] == _version(grid):
            return entry[1]
        return None

    def on_call(self, kind: str, args, kwargs, out) -> None:
        """A call of the sampler ``kind`` (``"grid_sample"`` or ``"affine_grid"``) returned ``out``."""
        if not self._mine():
            return
        try:
            self._on_call(kind, args, kwargs, out)
        except Exception as e:
            where = ""
            with contextlib.suppress(Exception):
                owner = self._owner()[0]
                where = "" if owner is None else f" in {self.name(owner) or self.root_name!r}"
            self.failed(f"a {kind} call{where}", e)

    def _on_call(self, kind: str, args, kwargs, out) -> None:
        if kind == "affine_grid":
            theta = _arg(args, kwargs, 0, "theta", None)
            if isinstance(theta, torch.Tensor) and theta.dim() == 3 and theta.shape[1:] == (2, 3):
                ac = _arg(args, kwargs, 2, "align_corners", None)
                self._remember(out, ("affine", theta.detach(), None, bool(ac)))
            return
        owner, st, method = self._owner()
        if owner is not None:  # a sampler call of this model (not of other code in the context)
            self._record(args, kwargs, out, owner, st, method)

    def _sliced(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` cut to ``batch_slice`` of the model's images. A batch of ``B`` (the model's first
        input's batch, known while its forward runs) is cut as it is; a batch of ``k * B`` (pixels
        x images of a correlation look-up, heads x images) is taken as ``k`` consecutive entries
        per image, the layout ``reshape(B * k, ...)`` of a ``(B, k, ...)`` tensor gives, and the
        ``k`` entries of each kept image are kept; any other batch is cut as it is."""
        sl, n = self.batch_slice, t.shape[0] if t.dim() else 0
        b = next((x.shape[0] for x in self.model_inputs if x.dim()), 0) if self.running else 0
        if sl is None or not b or n == b or n % b:
            return t if sl is None else t[sl]
        k = n // b
        start, stop, step = sl.indices(b)
        if step == 1:
            return t[start * k: max(start, stop) * k]
        idx = torch.arange(n, device=t.device).view(b, k)[sl].reshape(-1)
        return t.index_select(0, idx)

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        """A detached copy of ``t`` (cut to ``batch_slice``): made once per tensor and version in a
        capture pass, and shared by every record that sampled the same tensor (copy once, refer many)."""
        orig, t = t, t.detach()
        try:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype,
                   t.device, _version(t))
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, a subclass): not shared
            cut = self._sliced(t)
            return cut.to("cpu", copy=True) if self.to_cpu else cut.clone()
        # a hit needs the tensor first copied still alive (else its memory, so its address, may
        # hold another tensor now) and the copy still kept by a record
        entry = self.copies.get(key)
        copy = entry[1]() if entry is not None and entry[0]() is not None else None
        if copy is None:
            cut = self._sliced(t)
            copy = cut.to("cpu", copy=True) if self.to_cpu else cut.clone()
            self.copies[key] = (weakref.ref(orig), weakref.ref(copy))
            if len(self.copies) > self.copies_limit:  # forget the dead entries: amortised O(1)
                self.copies = {k: e for k, e in self.copies.items() if e[0]() is not None and e[1]() is not None}
                self.copies_limit = max(64, 2 * len(self.copies))
        return copy

    def _record(self, args, kwargs, out, owner: nn.Module, st: nn.Module | None, method: str | None = None) -> None:
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
            name = self.name(owner) or self.root_name
            base = (name if method is None else f"{name}.{method}") + ":grid_sample"
        # counted per capture pass: one forward of the model; outside a forward (a method such
        # as ``guide()`` or a submodule called on its own) the calls go on counting until the next
        k = self.per_pass.get(base, 0)
        self.per_pass[base] = k + 1
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
        role, image_channels = ("image", None) if st is not None else self._role(inp, grid)
        self.rec._add(TransformRecord(
            key=key, module=self.name(owner) or self.root_name, call=next(self.rec._counter), family=family,
            input=self._copy(inp), params=None if params is None else self._copy(params),
            grid=self._copy(grid), output=self._copy(out), sampling=sampling, role=role,
            spatial_dims=dims, components=components, image_channels=image_channels,
        ))

    def _role(self, inp: torch.Tensor, grid: torch.Tensor) -> roles.Judgement:
        """What was sampled (:func:`stnviz.capture.roles.judge`), with the model's inputs as the
        lineage: while the model's own forward runs, its inputs give the image batch; outside it
        (a method other than ``forward``, a submodule on its own) the batch is unknown."""
        return roles.judge(inp, grid, self.model_inputs if self.running else ())

    def close(self) -> None:
        """Remove the hooks and leave the dispatcher; from any thread, more than once."""
        self.closed = True
        for h in self.handles:
            h.remove()
        self.handles.clear()
        while self.recorded and threading.get_ident() == self.thread:  # closed while a generator ran
            self.recorded.pop().__exit__(None, None, None)
        for name in self.wrapped:
            if isinstance(self.model.__dict__.get(name), _Intercepting):
                del self.model.__dict__[name]
        self.wrapped.clear()
        _dispatcher_leave(self)
        self.grids.clear()
        self.copies.clear()
        self.generated.clear()
        self.model_inputs = []
