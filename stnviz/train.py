"""``fit``: train a classifier (with or without transformers) on tensor-backed data.

* Data are "batch sources" (:class:`stnviz.data.ImageSet`, :class:`stnviz.data.DistortedMNIST`):
  batches are made on the device, shuffled by ``(seed, epoch)``.
* The localisation nets get their own learning rate (:func:`stnviz.models.param_groups`).
* Periodic atomic checkpoints hold model, optimizer, scheduler, position, the running sums of the
  epoch and every setting that shapes the run; ``resume=`` continues mid-epoch from the exact
  batch (a killed run loses only the work since its last checkpoint, and its metrics come out as
  if it had never stopped) and refuses a resume that changes a setting.
* A non-finite loss or transform parameter stops training with :class:`TrainingDiverged` naming
  the step; no checkpoint is written unless the parameters and the optimizer state are finite and
  the loss of the weights being saved (their cross-entropy on the batch just trained on, i.e. the
  next step's forward) is finite and at most :data:`DIVERGED_LOSS_FACTOR` times the run's loss
  scale (the larger of ``ln(classes)``, a guessing classifier's loss, and the first step's loss), so
  the last checkpoint on disk is a good one, not merely a finite one.
* Numeric arguments are checked up front against :data:`OPTION_RANGES`, the one table the command
  line's options use too; a value out of range is a ``ValueError`` naming the argument.
* ``out_dir`` is locked while a run writes into it (:func:`run_lock`: a second run into the same
  folder is refused, naming the first) and probed with a write before the first step, so a
  read-only folder, a file in its place or a full disk stop the run at once with
  :class:`CannotWrite` naming the file, never after an epoch. Each run has an id, stored in its
  checkpoints; :func:`export_best` checks ``best.pt`` was written by the run it exports.
* Under ``torchrun`` the same call uses DistributedDataParallel (gloo on CPU, NCCL on CUDA), each
  rank taking its slice of the epoch's permutation; rank 0 writes files.
* Per-epoch metrics come back as a pandas DataFrame (and ``metrics.csv`` in ``out_dir``).

The loop, step by step: :func:`make_optimizer` and :func:`make_schedule` build the optimizer and
its schedule; ``_Run.resume`` checks and loads a checkpoint; ``_Run.train_epoch`` runs
``_Run.train_step`` over the epoch's batches; ``_Run.end_epoch`` evaluates and records the row;
``_Run.checkpoint`` checks the state is finite and writes it. :func:`export_best` is the last
step of a training command: reload ``best.pt``, evaluate, write ``NAME.pt`` with its metrics.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._io import TEMP_MARK, atomic_write
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .device import resolve_device
from .models import eval_mode, localization_parameters, model_device_dtype, param_groups

__all__ = [
    "DIVERGED_LOSS_FACTOR",
    "OPTION_RANGES",
    "RUN_NAME_FORM",
    "RUN_SETTINGS",
    "Callback",
    "CannotWrite",
    "OptionRange",
    "RunFolderBusy",
    "TrainState",
    "TrainingDiverged",
    "check_option",
    "check_run_name",
    "compare",
    "evaluate",
    "export_best",
    "fit",
    "freeze",
    "frozen_parts",
    "load_matching",
    "make_optimizer",
    "make_schedule",
    "run_lock",
]

#: The settings that shape a run: stored in every trainer checkpoint, and a resume must repeat them.
#: ``freeze`` is read from the model (which parts have ``requires_grad`` off); ``start`` is how the
#: caller made the starting weights (the CLI's --init, --init-matching, --reinit-transformers,
#: --init-params), compared entry by entry.
RUN_SETTINGS = ("epochs", "batch_size", "lr", "loc_lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "seed", "amp", "region_penalty", "augment", "channels_last", "world_size",
                "train_data", "train_size", "freeze", "start")

#: A checkpoint is written only if its weights' loss is at most this many times the run's loss
#: scale (the larger of ln(classes) and the first step's loss): far above anything a run that
#: still learns reaches, far below what a diverging one does (1e17 after two steps at lr 1e6).
DIVERGED_LOSS_FACTOR = 100.0

#: The largest seed: the data order and augmentation seeds are built as
#: ``((seed * 1_000_003 + epoch) * 1_000_003 + position) * 101`` and must stay below 2**64.
MAX_SEED = 99_999


@dataclass(frozen=True)
class OptionRange:
    """The values a numeric option may take: ``kind`` (``int`` or ``float``), at least ``low``
    (more than ``low`` when ``low_open``) and, if ``high`` is given, at most ``high`` (less when
    ``high_open``). Floats must be finite; ``bool`` is not a number here.

    Example:
        >>> spec = OptionRange(float, 0, low_open=True)
        >>> spec.describe(), spec.accepts(0.1), spec.accepts(-1), spec.accepts(float("nan"))
        ('a number > 0', True, False, False)
        >>> OptionRange(int, 1).describe(), OptionRange(float, 0, high=1, high_open=True).describe()
        ('a positive integer', 'a number >= 0 and < 1')
    """

    kind: type
    low: float
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def describe(self) -> str:
        if self.kind is int and self.low == 1 and not self.low_open and self.high is None:
            return "a positive integer"
        text = f"{'an integer' if self.kind is int else 'a number'} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            text += f" and {'<' if self.high_open else '<='} {self.high:g}"
        return text

    def accepts(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.kind is int else numbers.Real):
            return False
        if not math.isfinite(value) or value < self.low or (self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or (not self.high_open and value == self.high)


#: Every numeric argument of :func:`fit` and the CLI's options of the same names (``--loc-lr`` for
#: ``loc_lr``): one table, so the command line and the Python API accept exactly the same values.
OPTION_RANGES: dict[str, OptionRange] = {
    "epochs": OptionRange(int, 1),
    "batch_size": OptionRange(int, 1),
    "lr": OptionRange(float, 0, low_open=True),
    "loc_lr": OptionRange(float, 0),  # 0 keeps the transformers' weights still (weights/train.sh does)
    "momentum": OptionRange(float, 0, high=1, high_open=True),
    "weight_decay": OptionRange(float, 0),
    "label_smoothing": OptionRange(float, 0, high=1, high_open=True),
    "seed": OptionRange(int, 0, high=MAX_SEED),
    "region_penalty": OptionRange(float, 0),
    "checkpoint_every": OptionRange(int, 0),
    "reinit_transformers": OptionRange(int, 0),
}


def check_option(name: str, value):
    """``value`` if :data:`OPTION_RANGES` accepts it for ``name``, else a ``ValueError`` naming
    the argument, the range and the value.

    Example:
        >>> check_option("lr", 0.1)
        0.1
        >>> check_option("loc_lr", -1)
        Traceback (most recent call last):
        ...
        ValueError: loc_lr must be a number >= 0, got -1
    """
    spec = OPTION_RANGES[name]
    if not spec.accepts(value):
        raise ValueError(f"{name} must be {spec.describe()}, got {value!r}")
    return value


#: The form of a run's name (the file it exports is ``NAME.pt`` in its output folder).
RUN_NAME_FORM = "ARCH.TAG (letters, digits and _, also - in TAG, one dot between, e.g. stn_cnn.mnist_rts)"


def check_run_name(name, option: str = "name") -> str:
    """``name`` if it is a trained-weights name ``ARCH.TAG`` (the form :mod:`stnviz.hub` lists:
    letters, digits and ``_``, also ``-`` in the tag, one dot between), else a ``ValueError``
    naming ``option``. Such a name is one file name: it cannot point outside its folder.

    Example:
        >>> check_run_name("stn_cnn.mnist_rts-2")
        'stn_cnn.mnist_rts-2'
        >>> check_run_name("../../escaped", "--name")
        Traceback (most recent call last):
        ...
        ValueError: --name must be ARCH.TAG (letters, digits and _, also - in TAG, one dot between, e.g. stn_cnn.mnist_rts), got '../../escaped'
    """
    from .hub import WEIGHTS_FILE

    if not isinstance(name, str) or not WEIGHTS_FILE.fullmatch(f"{name}.pt"):
        raise ValueError(f"{option} must be {RUN_NAME_FORM}, got {name!r}")
    return name


class CannotWrite(OSError):
    """A file of a run could not be written (a read-only folder, a file where the folder should
    be, a full disk); the message names the file and the reason, ``errno`` is the system's."""


class RunFolderBusy(RuntimeError):
    """Another run holds the output folder's lock; the message names it and its lock file."""


class TrainingDiverged(RuntimeError):
    """Loss or transform parameters became NaN/inf; the message names the step.

    Example:
        >>> import stnviz
        >>> _ = torch.manual_seed(0)
        >>> model, digits = stnviz.get_model("stn_tutorial", device="cpu"), stnviz.data.sample("mnist")
        >>> fit(model, digits.subset(torch.arange(32)), epochs=1, batch_size=16, lr=1e30,  # doctest: +ELLIPSIS
        ...     device="cpu", progress=False)
        Traceback (most recent call last):
        ...
        stnviz.train.TrainingDiverged: training diverged at step ... (epoch 1): ...; no checkpoints are written ...
    """


class Callback:
    """Hooks called by :func:`fit`; override what you need. ``state`` is the live :class:`TrainState`.

    Example:
        >>> import stnviz
        >>> class LastStep(Callback):
        ...     def on_train_end(self, state):
        ...         self.step, self.epoch = state.step, state.epoch
        >>> cb, model = LastStep(), stnviz.get_model("stn_tutorial", device="cpu")
        >>> _ = fit(model, stnviz.data.sample("mnist").subset(torch.arange(32)), epochs=2, batch_size=16,
        ...         device="cpu", progress=False, callbacks=[cb])
        >>> cb.step, cb.epoch  # 2 epochs of 2 batches
        (4, 2)
    """

    def on_train_begin(self, state: "TrainState") -> None: ...

    def on_step_end(self, state: "TrainState") -> None: ...

    def on_epoch_end(self, state: "TrainState") -> None: ...

    def on_train_end(self, state: "TrainState") -> None: ...


@dataclass
class TrainState:
    """What callbacks see: the (unwrapped) model, position, last loss and the metrics so far.

    Example:
        >>> state = TrainState(model=torch.nn.Linear(2, 2), device=torch.device("cpu"))
        >>> state.epoch, state.step, state.history, state.world_size
        (0, 0, [], 1)
    """

    model: nn.Module
    device: torch.device
    epoch: int = 0
    step: int = 0  # optimizer steps taken in total
    batch_in_epoch: int = 0
    steps_per_epoch: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")
    history: list = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    run_id: str = ""  # stored in the run's checkpoints; a resumed run keeps its id


@dataclass
class _Tally:
    """Running sums of the current epoch; saved in checkpoints so a resumed epoch's row counts
    every batch, not only those after the resume."""

    seen: int = 0
    correct: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# The CUDA-only paths, each decided in one place from the device (a CPU test mocks the device):
# float16 autocast with a gradient scaler, the NCCL backend, and pinned, non-blocking host-to-GPU
# copies of every batch (stnviz.data.imageset.to_device).


def _amp_setting(amp: bool | None, device: torch.device) -> bool:
    """The ``amp`` run setting: ``None`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if amp is None else bool(amp)


def _uses_amp(amp: bool, device: torch.device) -> bool:
    """Whether mixed precision actually runs: float16 autocast and a gradient scaler exist for
    CUDA only, so ``amp=True`` on another device is recorded but trains in float32."""
    return bool(amp) and device.type == "cuda"


def _process_group_backend(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; return True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend=_process_group_backend(device))
    return True


def _check_batch_size(batch_size) -> None:
    check_option("batch_size", batch_size)


# ------------------------------------------------------------------ the output folder


@contextmanager
def _writing(path):
    """Turn an ``OSError`` raised inside into :class:`CannotWrite` naming ``path``."""
    try:
        yield
    except CannotWrite:
        raise
    except OSError as e:
        reason = e.strerror or str(e)
        err = CannotWrite(reason if reason.startswith("cannot write") else f"cannot write {path}: {reason}")
        err.errno = e.errno
        raise err from e


#: The lock file a run holds in its output folder (hidden; never a checkpoint name).
LOCK_FILE = ".stnviz-run.lock"
_held_locks: dict[str, tuple[int, int]] = {}  # resolved folder -> (thread id, depth) in this process


def _pid_is_dead(pid) -> bool:
    """True only when ``pid`` surely runs no process on this host (never guessed on Windows,
    where ``os.kill`` would end the process)."""
    if os.name == "nt" or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _take_lock(folder: Path) -> Path:
    """Create ``folder/LOCK_FILE`` with ``O_CREAT | O_EXCL`` holding this run's pid, host, start
    time and command; a lock left by a process that is gone from this host is taken over."""
    path = folder / LOCK_FILE
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    for attempt in range(2):
        try:
            with _writing(path):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except CannotWrite as e:
            if not isinstance(e.__cause__, FileExistsError):
                raise
            holder = _read_lock(path)
            if attempt == 0 and holder is not None and holder.get("host") == info["host"] and _pid_is_dead(holder.get("pid")):
                path.unlink(missing_ok=True)  # its run was killed before it could remove it
                continue
            who = ("a run whose lock cannot be read" if holder is None else
                   f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}")
            raise RunFolderBusy(
                f"{folder} is in use by another training run ({who}); wait for it to end or write to another folder. "
                f"If that run is no longer running, remove its lock file {path}"
            ) from None
        try:
            with _writing(path), os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def run_lock(folder: str | os.PathLike):
    """Hold the output folder of a run: ``folder/.stnviz-run.lock``, created exclusively and
    removed on leaving (also on an error). A second run into the same folder gets
    :class:`RunFolderBusy` naming the first (its pid, host, start and command) and the lock file
    to remove if that run is gone; a lock whose pid is dead on this host is taken over. The same
    thread may enter again (the CLI holds the folder around :func:`fit` and :func:`export_best`).
    Creates ``folder`` (removed again if it is left empty); a folder that cannot be written is
    :class:`CannotWrite`.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with run_lock(tmp) as lock:
        ...         held = lock.name, lock.exists()
        ...     held, lock.exists()
        (('.stnviz-run.lock', True), False)
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CannotWrite(f"cannot write to {folder}: expected a folder, got a file")
    created = not folder.exists()
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    key, me = str(folder.resolve()), threading.get_ident()
    thread, depth = _held_locks.get(key, (me, 0))
    if depth and thread == me:
        _held_locks[key] = (me, depth + 1)
        try:
            yield folder / LOCK_FILE
        finally:
            _held_locks[key] = (me, depth)
        return
    try:
        path = _take_lock(folder)
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise
    _held_locks[key] = (me, 1)
    try:
        yield path
    finally:
        del _held_locks[key]
        path.unlink(missing_ok=True)
        if created:
            _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # holds files: keep it
        pass


def _probe_write(folder: Path, nbytes: int) -> None:
    """Write and remove a temp file of ``nbytes`` (about one checkpoint) in ``folder``: a
    read-only folder or a full disk shows now, as :class:`CannotWrite`, not after an epoch."""
    with _writing(folder):
        fd, tmp = tempfile.mkstemp(prefix=".write-probe.", suffix=TEMP_MARK, dir=folder)
    try:
        with _writing(folder), os.fdopen(fd, "wb") as f:
            chunk = bytes(min(nbytes, 1 << 20))
            left = nbytes
            while left > 0:
                f.write(chunk[:left])
                left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
    finally:
        Path(tmp).unlink(missing_ok=True)


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _check_data(model: nn.Module, data, role: str) -> None:
    """Refuse an empty set, or images of another size than the model was built for, before any work."""
    n = len(data) if hasattr(data, "__len__") else None
    if n == 0:
        raise ValueError(f"the {role} set {data!r} is empty; expected at least one sample")
    expected = getattr(model, "input_size", None)
    got = getattr(data, "image_size", None)
    if expected is not None and got is not None and tuple(expected) != tuple(got):
        raise ValueError(
            f"the {role} set's images are {'x'.join(map(str, got))} (C x H x W), but the model was built for "
            f"{'x'.join(map(str, expected))}; use data of that size or build the model with input_size={list(got)}"
        )


@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 512, device=None) -> dict:
    """Loss and accuracy of ``model`` on a batch source: ``{"loss", "accuracy", "error", "n"}``.

    The batches go to the model's device and floating dtype (a half-precision model on a GPU
    gets half-precision images). ``device``: ``None`` evaluates where the model is; otherwise
    it is resolved with :func:`stnviz.device.resolve_device` and the model is moved there first, as
    :func:`fit` does.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
        >>> result = evaluate(model, stnviz.data.sample("mnist").subset(torch.arange(100)))
        >>> sorted(result), result["n"], result["accuracy"] > 0.9
        (['accuracy', 'error', 'loss', 'n'], 100, True)
    """
    _check_batch_size(batch_size)
    _check_data(model, data, "evaluation")
    if device is not None:
        model.to(resolve_device(device))
    dev, dtype = model_device_dtype(model)
    total, correct, loss_sum = 0, 0, 0.0
    with eval_mode(model):
        for batch in data.batches(batch_size, device=dev):
            logits = model(batch.images.to(dtype))
            loss_sum += float(F.cross_entropy(logits.float(), batch.labels, reduction="sum"))
            correct += int((logits.argmax(1) == batch.labels).sum())
            total += batch.labels.numel()
    if total == 0:
        raise ValueError(f"evaluate got an empty data set ({data!r})")
    return {"loss": loss_sum / total, "accuracy": correct / total, "error": 1 - correct / total, "n": total}


def _check_finite_params(model: nn.Module):
    """Forward hooks that raise if a transformer's parameters are NaN/inf (before sampling)."""
    from .models import GridGenerator

    def hook(module, inputs):
        if not bool(torch.isfinite(inputs[0]).all()):
            raise TrainingDiverged("non-finite transform parameters (theta)")

    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, GridGenerator)]


FROZEN_PARTS = ("classifier", "transformers")


def freeze(model: nn.Module, part: str) -> int:
    """Stop training one part of an STN; returns how many parameter tensors were frozen.

    ``part``: ``"transformers"`` (every localisation net and regressor, so each transform stays
    what it is) or ``"classifier"`` (everything else: e.g. a classifier trained on canonical
    digits that a transformer must then learn to serve, the curriculum in ``weights/train.sh``).
    Frozen parameters get no gradient, so optimizers skip them.

    Example:
        >>> from stnviz import get_model
        >>> m = get_model("stn_tutorial", device="cpu")
        >>> freeze(m, "classifier") > 0, all(p.requires_grad for p in localization_parameters(m))
        (True, True)
    """
    if part not in FROZEN_PARTS:
        raise ValueError(f"part must be one of {FROZEN_PARTS}, got {part!r}")
    loc = {id(p) for p in localization_parameters(model)}
    chosen = [p for p in model.parameters() if (id(p) in loc) == (part == "transformers")]
    for p in chosen:
        p.requires_grad_(False)
    return len(chosen)


def frozen_parts(model: nn.Module) -> list[str]:
    """What of ``model`` does not train: ``"classifier"`` / ``"transformers"`` when every
    parameter of that part has ``requires_grad`` off, then the names of other frozen parameter
    tensors. The ``freeze`` run setting: read from the model, so a resume cannot change it unseen.

    Example:
        >>> from stnviz import get_model
        >>> m = get_model("stn_tutorial", device="cpu")
        >>> frozen_parts(m), (freeze(m, "classifier") > 0 and frozen_parts(m))
        ([], ['classifier'])
    """
    loc = {id(p) for p in localization_parameters(model)}
    named = list(model.named_parameters())
    parts = {"transformers": [(n, p) for n, p in named if id(p) in loc],
             "classifier": [(n, p) for n, p in named if id(p) not in loc]}
    frozen, rest = [], []
    for part in FROZEN_PARTS:
        members = parts[part]
        if members and not any(p.requires_grad for _, p in members):
            frozen.append(part)
        else:
            rest += [n for n, p in members if not p.requires_grad]
    return frozen + sorted(rest)


def load_matching(model: nn.Module, state_dict: dict) -> tuple[list[str], list[str]]:
    """Copy the tensors of ``state_dict`` whose name and shape match ``model``'s; returns
    ``(loaded, skipped)`` key lists. For starting one architecture from another's weights (e.g. a
    classifier trained on 28x28 digits behind a transformer that reads a 42x42 canvas); raises
    when nothing matches, which means the two are not related at all.

    Example:
        >>> from stnviz import get_model
        >>> a = get_model("stn_cnn", device="cpu", output_size=(28, 28))
        >>> b = get_model("stn_cnn", device="cpu", input_size=(1, 28, 28), output_size=(28, 28))
        >>> loaded, skipped = load_matching(a, b.state_dict())
        >>> any(k.startswith("head") for k in loaded), skipped
        (True, ['transformer.localization.7.weight'])
    """
    own = model.state_dict()
    loaded = [k for k, v in state_dict.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    skipped = [k for k in state_dict if k not in loaded]
    if not loaded:
        raise ValueError(f"none of the {len(state_dict)} tensors given match this model's names and shapes "
                         f"(e.g. {next(iter(own), None)!r} here, {next(iter(state_dict), None)!r} given)")
    model.load_state_dict({k: state_dict[k] for k in loaded}, strict=False)
    return loaded, skipped


def make_optimizer(model: nn.Module, name: str = "sgd", *, lr: float, loc_lr: float | None = None,
                   momentum: float = 0.9, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``momentum > 0``) or AdamW over :func:`stnviz.models.param_groups`.

    Example:
        >>> import stnviz
        >>> opt = make_optimizer(stnviz.get_model("stn_tutorial", device="cpu"), lr=0.1)
        >>> type(opt).__name__, [g["lr"] for g in opt.param_groups]  # the localisation nets get lr / 10
        ('SGD', [0.1, 0.01])
    """
    groups = param_groups(model, lr, loc_lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {name!r}")


def make_schedule(opt: torch.optim.Optimizer, name: str, *, total_steps: int):
    """The learning-rate schedule, stepped once per optimizer step: ``"onecycle"`` (peak at 20%),
    ``"cosine"`` or ``"constant"``.

    Example:
        >>> import stnviz
        >>> opt = make_optimizer(stnviz.get_model("stn_tutorial", device="cpu"), lr=0.1)
        >>> schedule, lrs = make_schedule(opt, "cosine", total_steps=4), []
        >>> for _ in range(4):
        ...     opt.step(); schedule.step(); lrs.append(round(opt.param_groups[0]["lr"], 3))
        >>> lrs
        [0.085, 0.05, 0.015, 0.0]
    """
    if name == "onecycle":
        max_lrs = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=total_steps, pct_start=0.2)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {name!r}")


def _augment_name(augment) -> str | None:
    if augment is None:
        return None
    return f"{getattr(augment, '__module__', '')}.{getattr(augment, '__qualname__', type(augment).__qualname__)}"


def _data_name(data) -> str | None:
    name = getattr(data, "name", None)
    return name if isinstance(name, str) else None


def _first_non_finite(model: nn.Module, opt: torch.optim.Optimizer) -> str | None:
    """Name of the first parameter, buffer or optimizer state tensor holding NaN/inf, else None."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return f"parameter {name}"
    for i, st in enumerate(opt.state.values()):
        for key, t in st.items():
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"optimizer state {key!r} of parameter {i}"
    return None


class _Run:
    """One call of :func:`fit`: the model, optimizer, schedule, position and files, in named steps."""

    def __init__(self, model, train, val, *, settings: dict, dev, rank, world, out, checkpoint_every, keep_best,
                 callbacks, meta, progress, augment, layout):
        self.model, self.train_data, self.val = model, train, val
        self.settings = settings
        self.dev, self.rank, self.world = dev, rank, world
        self.out, self.checkpoint_every, self.keep_best = out, checkpoint_every, keep_best
        self.callbacks, self.meta, self.progress = list(callbacks), meta, progress
        self.augment, self.layout = augment, layout
        self.opt = make_optimizer(model, settings["optimizer"], lr=settings["lr"], loc_lr=settings["loc_lr"],
                                  momentum=settings["momentum"], weight_decay=settings["weight_decay"])
        self.steps_per_epoch = train.num_batches(settings["batch_size"], world)
        self.sched = make_schedule(self.opt, settings["schedule"], total_steps=settings["epochs"] * self.steps_per_epoch)
        self.amp = _uses_amp(settings["amp"], dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.state = TrainState(model=model, device=dev, rank=rank, world_size=world, steps_per_epoch=self.steps_per_epoch,
                                run_id=uuid.uuid4().hex[:12])
        self.tally = _Tally()
        self.best_acc = -1.0
        self.loss_scale: float | None = None  # max(ln(classes), first step's loss): the yardstick of divergence
        self.saved_step: int | None = None  # step of the last checkpoint written (or resumed from)
        self.last_batch: tuple | None = None  # (images, labels) of the last step, to test saved weights
        self.net = model
        if world > 1:
            self.net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.grids: list = []
        self.gen = torch.Generator(device="cpu")

    # ------------------------------------------------------------------ resume
    def resume(self, resume) -> None:
        """Load model, optimizer, schedule, position and running sums from a trainer checkpoint,
        after checking it holds trainer state for this architecture and these settings."""
        out = self.out
        path = (out / "last.pt") if resume is True and out is not None else Path(resume) if resume is not True else None
        if path is None or not path.is_file():
            if resume is not True:
                raise FileNotFoundError(f"resume checkpoint {resume} does not exist")
            return
        ckpt = load_checkpoint(path)
        extra = ckpt.get("extra") or {}
        if not all(k in extra for k in ("optimizer", "scheduler", "epoch", "batch_in_epoch", "step")):
            raise CheckpointError(
                f"cannot resume from {path}: it holds no trainer state (optimizer, schedule, position), "
                f"only a model; resume from the last.pt that fit writes in its out_dir"
            )
        self._check_same_settings(path, extra)
        config = getattr(self.model, "stnviz_config", None)
        if config is not None and (ckpt["arch"], ckpt["model_args"]) != (config["arch"], dict(config["kwargs"])):
            raise CheckpointError(
                f"cannot resume from {path}: it holds architecture {ckpt['arch']!r} with {ckpt['model_args']}, "
                f"expected {config['arch']!r} with {dict(config['kwargs'])} (the model being trained)"
            )
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(
                f"cannot resume from {path}: its weights do not fit the model being trained: {str(e).splitlines()[-1].strip()}"
            ) from None
        self.opt.load_state_dict(extra["optimizer"])
        self.sched.load_state_dict(extra["scheduler"])
        st = self.state
        st.epoch, st.batch_in_epoch, st.step = extra["epoch"], extra["batch_in_epoch"], extra["step"]
        st.history = list(extra.get("history", []))
        self.tally = _Tally(**extra["tally"]) if "tally" in extra else _Tally()
        self.best_acc = extra.get("best_accuracy", -1.0)
        self.loss_scale = extra.get("loss_scale")
        st.run_id = extra.get("run_id") or st.run_id  # the same run, continued
        self.saved_step = st.step
        if "rng" in extra:
            torch.set_rng_state(extra["rng"])

    def _check_same_settings(self, path: Path, extra: dict) -> None:
        stored = extra.get("settings")
        if stored is None:  # checkpoints written before settings were stored
            stored = {"epochs": extra.get("epochs_planned"), "schedule": extra.get("schedule")}
        for name in RUN_SETTINGS:
            if name not in stored:
                continue
            was, now = stored[name], self.settings[name]
            if isinstance(was, dict) or isinstance(now, dict):  # e.g. start: compared, and named, entry by entry
                was, now = was or {}, now or {}
                differences = [(key, was.get(key), now.get(key)) for key in dict.fromkeys([*was, *now])
                               if was.get(key) != now.get(key)]
            else:
                differences = [(name, was, now)] if was != now else []
            if differences:
                key, a, b = differences[0]
                raise ValueError(
                    f"cannot resume {path}: it was a run with {key}={a!r}, got {key}={b!r}; "
                    f"resume with the same settings (a changed {key} would silently change the run), "
                    f"or start a new run in another folder"
                )

    # ------------------------------------------------------------------ one step
    def train_step(self, batch) -> None:
        st, s = self.state, self.settings
        if self.augment is not None:
            # seeded by position, so a resumed run draws the same augmentations
            self.gen.manual_seed(((s["seed"] * 1_000_003 + st.epoch) * 1_000_003 + st.batch_in_epoch) * 101 + self.rank)
            images = self.augment(batch.images, batch.labels, self.gen)
        else:
            images = batch.images
        if images.dim() == 4:
            images = images.contiguous(memory_format=self.layout)
        self.grids.clear()
        try:
            with self._autocast():
                logits = self.net(images)
                loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=s["label_smoothing"])
                if s["region_penalty"] and self.grids:
                    outside = sum((g.float().abs() - 1).clamp(min=0).pow(2).mean() for g in self.grids)
                    loss = loss + s["region_penalty"] * outside
        except TrainingDiverged as e:
            self._diverged(str(e), images, batch)
        if not bool(torch.isfinite(loss)):
            self._diverged(f"loss is {float(loss.detach())}", images, batch)
        if self.loss_scale is None:
            self.loss_scale = max(math.log(max(logits.shape[-1], 2)), float(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        st.step += 1
        st.batch_in_epoch += 1
        n = batch.labels.numel()
        t = self.tally
        t.seen += n
        t.loss_sum += float(loss.detach()) * n
        t.correct += int((logits.argmax(1) == batch.labels).sum())
        st.loss, st.accuracy = float(loss.detach()), t.correct / max(t.seen, 1)
        self.last_batch = (images.detach(), batch.labels)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16) if self.amp else nullcontext()

    def _where(self) -> str:
        return f"step {self.state.step + 1} (epoch {self.state.epoch + 1})"

    def _kept(self) -> str:
        if self.out is None:
            return "no checkpoints are written without out_dir"
        if self.saved_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {self.saved_step}) is kept"

    def _diverged(self, what: str, images: torch.Tensor, batch):
        if images.is_floating_point() and not bool(torch.isfinite(images).all()):
            bad = (~torch.isfinite(images.flatten(1))).any(1).nonzero().flatten()
            positions = batch.index[bad.cpu()].tolist()[:8]
            raise ValueError(
                f"the training images of {self._where()} hold non-finite values (NaN or inf) in {len(bad)} of "
                f"{images.shape[0]} samples (data set positions {positions}); expected finite images in [0, 1]"
            ) from None
        raise TrainingDiverged(f"training diverged at {self._where()}: {what}; {self._kept()}") from None

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self) -> None:
        st, s = self.state, self.settings
        self.net.train()
        t0 = time.perf_counter()
        batches = self.train_data.batches(s["batch_size"], shuffle=True, seed=s["seed"], epoch=st.epoch, device=self.dev,
                                          rank=self.rank, world_size=self.world, start=st.batch_in_epoch)
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, initial=st.batch_in_epoch,
                       desc=f"epoch {st.epoch + 1}/{s['epochs']}", leave=False)
        try:
            for batch in batches:
                self.train_step(batch)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.tally.loss_sum / self.tally.seen:.4f}", acc=f"{st.accuracy:.4f}", refresh=False)
                for cb in self.callbacks:
                    cb.on_step_end(st)
                if (self.checkpoint_every and st.step % self.checkpoint_every == 0
                        and st.batch_in_epoch < self.steps_per_epoch):
                    self.tally.seconds += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.checkpoint("last.pt")
        finally:
            if bar is not None:
                bar.close()
        self.tally.seconds += time.perf_counter() - t0
        self.end_epoch()

    def end_epoch(self) -> None:
        """The epoch's row (train sums, learning rate, validation), best.pt, metrics.csv, last.pt."""
        st, s, t = self.state, self.settings, self.tally
        row: dict[str, Any] = {
            "epoch": st.epoch + 1,
            "step": st.step,
            "train_loss": t.loss_sum / max(t.seen, 1),
            "train_accuracy": t.correct / max(t.seen, 1),
            "lr": self.opt.param_groups[0]["lr"],
            "seconds": t.seconds,
            "images_per_s": t.seen * self.world / t.seconds if t.seconds > 0 else math.nan,
        }
        if self.val is not None and self.rank == 0:
            res = evaluate(self.model, self.val, batch_size=max(s["batch_size"], 256), device=self.dev)
            row.update(val_loss=res["loss"], val_accuracy=res["accuracy"])
        st.history.append(row)
        st.epoch += 1
        st.batch_in_epoch = 0
        self.tally = _Tally()
        if self.rank == 0 and self.progress:
            msg = f"epoch {row['epoch']}/{s['epochs']}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
            if "val_accuracy" in row:
                msg += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}"
            print(msg + f" | {row['images_per_s']:.0f} img/s", flush=True)
        improved = self.val is not None and self.keep_best and self.rank == 0 and row["val_accuracy"] > self.best_acc
        if improved:
            self.best_acc = row["val_accuracy"]
        self.write_metrics()
        self.checkpoint(*(["best.pt"] if improved else []), "last.pt")
        for cb in self.callbacks:
            cb.on_epoch_end(st)

    # ------------------------------------------------------------------ files
    def write_metrics(self) -> None:
        if self.out is not None and self.rank == 0:
            df = pd.DataFrame(self.state.history)
            with _writing(self.out / "metrics.csv"):
                atomic_write(self.out / "metrics.csv", lambda tmp: df.to_csv(tmp, index=False))

    def _saved_state_problem(self) -> str | None:
        """Why the current state must not be saved (non-finite numbers, or weights whose loss on
        the last batch is not finite), else None. Runs in eval mode without gradients, so it
        draws no random numbers and changes nothing."""
        bad = _first_non_finite(self.model, self.opt)
        if bad is not None:
            return f"{bad} holds NaN/inf"
        if self.last_batch is not None:
            images, labels = self.last_batch
            try:
                with torch.no_grad(), eval_mode(self.model), self._autocast():
                    loss = F.cross_entropy(self.model(images).float(), labels)
            except TrainingDiverged as e:
                return str(e)
            finally:
                self.grids.clear()
            if not bool(torch.isfinite(loss)):
                return f"the weights give a loss of {float(loss)} on the last batch"
            limit = DIVERGED_LOSS_FACTOR * self.loss_scale if self.loss_scale is not None else math.inf
            if float(loss) > limit:
                return (f"the weights give a loss of {float(loss):.3g} on the last batch, over {limit:.3g} "
                        f"({DIVERGED_LOSS_FACTOR:g} x the run's loss scale {self.loss_scale:.3g}, the larger of "
                        f"ln(classes) and the first step's loss)")
        return None

    def checkpoint(self, *names: str) -> None:
        """Write ``out/NAME`` for each name with the trainer state, after checking that state is
        finite. Every rank calls this at the same points (the check is collective)."""
        if self.out is None:
            return
        problem = self._saved_state_problem()
        if self.world > 1:  # every rank must stop together, or the others wait forever
            flag = torch.tensor([0.0 if problem is None else 1.0], device=self.dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if problem is None and flag.item() > 0:
                problem = "another rank found non-finite values"
        if problem is not None:
            st = self.state
            raise TrainingDiverged(
                f"training diverged by step {st.step} (epoch {st.epoch if st.batch_in_epoch == 0 else st.epoch + 1}): "
                f"{problem}; {' and '.join(names)} {'was' if len(names) == 1 else 'were'} not written, {self._kept()}"
            )
        if self.rank != 0:
            return
        st = self.state
        extra = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "epoch": st.epoch,
            "batch_in_epoch": st.batch_in_epoch,
            "step": st.step,
            "history": st.history,
            "tally": asdict(self.tally),
            "best_accuracy": self.best_acc,
            "loss_scale": self.loss_scale,
            "run_id": st.run_id,
            "rng": torch.get_rng_state(),
            "settings": dict(self.settings),
            "epochs_planned": self.settings["epochs"],
            "schedule": self.settings["schedule"],
        }
        info = {"epochs": st.epoch, "seed": self.settings["seed"], "step": st.step}
        info.update(self.meta or {})
        for name in names:
            with _writing(self.out / name):
                save_checkpoint(self.model, self.out / name, info, extra=extra)
        if "last.pt" in names:
            self.saved_step = st.step

    # ------------------------------------------------------------------ the whole run
    def run(self) -> pd.DataFrame:
        hooks = _check_finite_params(self.model)
        if self.settings["region_penalty"]:
            from .models import GridGenerator

            hooks += [m.register_forward_hook(lambda mod, inp, out: self.grids.append(out))
                      for m in self.model.modules() if isinstance(m, GridGenerator)]
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self.state)
            while self.state.epoch < self.settings["epochs"]:
                self.train_epoch()
            self.write_metrics()  # also when a resume found the run complete
            for cb in self.callbacks:
                cb.on_train_end(self.state)
        finally:
            for h in hooks:
                h.remove()
        return pd.DataFrame(self.state.history)


def fit(
    model: nn.Module,
    train,
    val=None,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.01,
    loc_lr: float | None = None,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    schedule: str = "onecycle",
    label_smoothing: float = 0.0,
    device=None,
    seed: int = 0,
    amp: bool | None = None,
    out_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = 500,
    keep_best: bool = True,
    resume: str | os.PathLike | bool | None = None,
    callbacks: Sequence[Callback] = (),
    meta: dict | None = None,
    progress: bool = True,
    augment=None,
    region_penalty: float = 0.0,
    channels_last: bool = True,
    start: dict | None = None,
) -> pd.DataFrame:
    """Train ``model`` on ``train`` and return per-epoch metrics as a DataFrame.

    Args:
        train, val: batch sources (``.batches(batch_size, shuffle=, seed=, epoch=, device=,
            rank=, world_size=, start=)``), e.g. :class:`stnviz.data.ImageSet`. Both are checked
            up front: not empty, and images of the model's ``input_size``.
        lr, loc_lr: learning rates of the classifier and of the localisation nets
            (``loc_lr`` defaults to ``lr / 10``).
        optimizer: ``"sgd"`` (with ``momentum``, Nesterov) or ``"adam"`` (AdamW).
        schedule: ``"onecycle"``, ``"cosine"`` or ``"constant"``.
        amp: mixed precision; defaults to on for CUDA, off elsewhere.
        out_dir: where ``last.pt`` (periodic + end of epoch), ``best.pt`` (best validation
            accuracy) and ``metrics.csv`` go. Needed for checkpoints and resume.
        checkpoint_every: also write ``last.pt`` every this many optimizer steps.
        resume: a checkpoint path, or ``True`` for ``out_dir/last.pt`` when it exists. The
            checkpoint must come from a run with the same :data:`RUN_SETTINGS` (epochs,
            batch size, learning rates, seed...); a changed one is refused by name.
        augment: optional ``f(images, labels, generator) -> images`` applied to training batches
            on the device.
        region_penalty: weight of a penalty on sampling outside the input
            (``mean(relu(|grid| - 1)^2)`` over every transformer's grid). On data with a black
            background an STN can zoom *out* at no cost and often collapses there; this keeps
            the sampled region on the image. 0 disables it.
        channels_last: train in the channels-last memory format; on this project's 2-core CPU it
            makes the tutorial network's step 1.7x faster (11.8 -> 7.0 ms at batch 64). Values
            are unchanged, only the layout.
        meta: extra checkpoint metadata (data set name, command...).
        start: how the starting weights were made, as a dict of plain values (the CLI passes
            ``init``, ``init_matching``, ``reinit_transformers`` and ``init_params``); stored with
            the run settings, so a resume that changes an entry is refused by its name. What is
            frozen (``requires_grad`` off, e.g. by :func:`freeze`) is read from the model and
            checked the same way.

    Numeric arguments must lie in :data:`OPTION_RANGES` (e.g. ``lr > 0``, ``loc_lr >= 0``,
    ``0 <= label_smoothing < 1``, ``0 <= seed <= 99999``), else ``ValueError`` names the argument.
    ``out_dir`` is held with :func:`run_lock` while the run writes into it, and probed with a
    write of about one checkpoint's size before the first step (:class:`CannotWrite`). A
    checkpoint is written only if its weights' loss on the batch just trained on is finite and
    at most :data:`DIVERGED_LOSS_FACTOR` times the larger of ``ln(classes)`` and the first
    step's loss; else :class:`TrainingDiverged` names the last good checkpoint kept. The
    returned table's ``attrs["run_id"]`` is the run's id, stored in its checkpoints (a resumed
    run keeps it): pass it to :func:`export_best`.

    ``seed`` fixes the data order, augmentation and dropout; the model's initial weights come
    from wherever it was built, so call ``torch.manual_seed`` before building it for a fully
    reproducible run (the CLI does).

    Example:
        >>> import stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> history = fit(model, train, val, epochs=2, batch_size=16, device="cpu", progress=False)
        >>> len(history), history["step"].tolist(), list(history.columns[:4])
        (2, [2, 4], ['epoch', 'step', 'train_loss', 'train_accuracy'])
    """
    for name, value in dict(epochs=epochs, batch_size=batch_size, lr=lr, loc_lr=loc_lr, momentum=momentum,
                            weight_decay=weight_decay, label_smoothing=label_smoothing, seed=seed,
                            region_penalty=region_penalty, checkpoint_every=checkpoint_every).items():
        if value is not None or name not in ("loc_lr", "checkpoint_every"):  # those two may be None
            check_option(name, value)
    if start is not None and not isinstance(start, dict):
        raise ValueError(f"start must be a dict of plain values or None, got {type(start).__name__}")
    _check_data(model, train, "training")
    if val is not None:
        _check_data(model, val, "validation")
    dev = resolve_device(device)
    created_group = _maybe_init_distributed(dev)
    try:
        rank, world = _dist_info()
        if dev.type == "cuda" and world > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
        if train.num_batches(batch_size, world) < 1:
            raise ValueError(f"the training set {train!r} gives no batches; expected at least one sample")
        settings = dict(epochs=epochs, batch_size=batch_size, lr=float(lr), loc_lr=None if loc_lr is None else float(loc_lr),
                        optimizer=optimizer, momentum=float(momentum), weight_decay=float(weight_decay), schedule=schedule,
                        label_smoothing=float(label_smoothing), seed=int(seed),
                        amp=_amp_setting(amp, dev), region_penalty=float(region_penalty),
                        augment=_augment_name(augment), channels_last=bool(channels_last), world_size=world,
                        train_data=_data_name(train), train_size=len(train) if hasattr(train, "__len__") else None,
                        freeze=frozen_parts(model), start=dict(start) if start else None)
        out = Path(out_dir) if out_dir is not None else None
        writes = out is not None and rank == 0
        with run_lock(out) if writes else nullcontext():
            if writes:
                _probe_write(out, _state_bytes(model))
            _seed_everything(seed)
            layout = torch.channels_last if channels_last else torch.contiguous_format
            model.to(dev)
            model.to(memory_format=layout)
            run = _Run(model, train, val, settings=settings, dev=dev, rank=rank, world=world, out=out,
                       checkpoint_every=checkpoint_every, keep_best=keep_best, callbacks=callbacks, meta=meta,
                       progress=progress, augment=augment, layout=layout)
            if resume:
                run.resume(resume)
            history = run.run()
        history.attrs["run_id"] = run.state.run_id
        return history
    finally:
        if created_group:
            dist.destroy_process_group()


def export_best(model: nn.Module, out_dir: str | os.PathLike, val, test=None, *, name: str, device=None,
                meta: dict | None = None, run_id: str | None = None) -> tuple[Path, dict]:
    """The last step of a training run: reload ``out_dir/best.pt`` (the model chosen on
    validation; ``last.pt`` when there is no ``best.pt``) into ``model``, evaluate it on ``val``
    (and ``test``), and write ``out_dir/NAME.pt`` with those metrics. Returns ``(path, metrics)``.

    The test score is reported for the model chosen on validation, never chosen by test.
    ``meta`` adds to / overrides the checkpoint's metadata (e.g. ``epochs``, ``seed``).
    ``name`` must be ``ARCH.TAG`` (:func:`check_run_name`). ``run_id`` (``fit(...).attrs["run_id"]``):
    the run that must have written the checkpoint; one written by another run into the same
    folder is refused (:class:`stnviz.checkpoints.CheckpointError`) rather than exported.

    Example:
        >>> import tempfile
        >>> import stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = fit(model, train, val, epochs=1, batch_size=16, device="cpu", progress=False, out_dir=tmp)
        ...     path, metrics = export_best(model, tmp, val, name="stn_tutorial.tiny", device="cpu")
        >>> path.name, sorted(metrics)
        ('stn_tutorial.tiny.pt', ['best_epoch', 'val_accuracy', 'val_error'])
    """
    check_run_name(name)
    out = Path(out_dir)
    best = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    payload = load_checkpoint(best)
    written_by = (payload.get("extra") or {}).get("run_id")
    if run_id is not None and written_by is not None and written_by != run_id:
        raise CheckpointError(
            f"{best} was written by run {written_by}, not by this run ({run_id}): another run wrote into {out}; "
            f"nothing was exported. Give each run its own output folder"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{best}: its weights do not fit the model given: {str(e).splitlines()[-1].strip()}") from None
    res_val = evaluate(model, val, device=device)
    metrics: dict[str, Any] = {"val_accuracy": res_val["accuracy"], "val_error": res_val["error"]}
    if test is not None:
        res_test = evaluate(model, test, device=device)
        metrics.update(test_accuracy=res_test["accuracy"], test_error=res_test["error"], test_n=res_test["n"])
    final = dict(payload["meta"])
    history = (payload.get("extra") or {}).get("history") or []
    if history and any("val_accuracy" in r for r in history):
        accs = [r.get("val_accuracy", -1.0) for r in history]
        metrics["best_epoch"] = accs.index(max(accs)) + 1
        final["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in history))
    metrics_file = out / "metrics.csv"
    if metrics_file.is_file():  # the whole run, not only up to the best epoch
        table = pd.read_csv(metrics_file)
        if "seconds" in table:
            final["train_seconds"] = float(table["seconds"].sum())
    final.update(meta or {})
    final["metrics"] = metrics
    final.pop("step", None)
    with _writing(out / f"{name}.pt"):
        path = save_checkpoint(model, out / f"{name}.pt", final)
    return path, metrics


def compare(make_st: callable, make_twin: callable, train, val, **fit_kwargs) -> pd.DataFrame:
    """Train an ST model and its no-ST twin on the same data; one table, a row per model.

    ``make_st`` / ``make_twin`` build fresh models (e.g. ``lambda: get_model("stn_cnn")``).
    Columns: model, parameters, final validation accuracy and error, best validation accuracy,
    training seconds.

    Example:
        >>> import stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> table = compare(lambda: stnviz.get_model("stn_tutorial", device="cpu"),
        ...                 lambda: stnviz.get_model("cnn_tutorial", device="cpu"),
        ...                 train, val, epochs=1, batch_size=16, device="cpu", progress=False)
        >>> table[["model", "transformer"]].values.tolist()
        [['stn_tutorial', True], ['cnn_tutorial', False]]
    """
    rows = []
    for label, make in (("st", make_st), ("no_st", make_twin)):
        model = make()
        hist = fit(model, train, val, **fit_kwargs)
        rows.append({
            "model": getattr(model, "stnviz_config", {}).get("arch", label),
            "transformer": label == "st",
            "parameters": sum(p.numel() for p in model.parameters()),
            "val_accuracy": float(hist["val_accuracy"].iloc[-1]),
            "val_error": 1 - float(hist["val_accuracy"].iloc[-1]),
            "best_val_accuracy": float(hist["val_accuracy"].max()),
            "train_seconds": float(hist["seconds"].sum()),
        })
    return pd.DataFrame(rows)
