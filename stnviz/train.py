"""``fit``: train a classifier (with or without transformers) on tensor-backed data.

* Data are "batch sources" (:class:`stnviz.data.ImageSet`, :class:`stnviz.data.DistortedMNIST`):
  batches are made on the device, shuffled by ``(seed, epoch)``.
* The localisation nets get their own learning rate (:func:`stnviz.models.param_groups`).
* Periodic atomic checkpoints hold model, optimizer, scheduler, position, the running sums of the
  epoch and every setting that shapes the run; ``resume=`` continues mid-epoch from the exact
  batch (a killed run loses only the work since its last checkpoint, and its metrics come out as
  if it had never stopped) and refuses a resume that changes a setting.
* A non-finite loss or transform parameter stops training with :class:`TrainingDiverged` naming
  the step; no checkpoint is written unless the parameters, the optimizer state and the loss of
  the weights being saved are finite, so the last checkpoint on disk is a good one.
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

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .device import resolve_device
from .models import eval_mode, localization_parameters, model_device_dtype, param_groups

__all__ = [
    "RUN_SETTINGS",
    "Callback",
    "TrainState",
    "TrainingDiverged",
    "compare",
    "evaluate",
    "export_best",
    "fit",
    "freeze",
    "load_matching",
    "make_optimizer",
    "make_schedule",
]

#: The settings that shape a run: stored in every trainer checkpoint, and a resume must repeat them.
RUN_SETTINGS = ("epochs", "batch_size", "lr", "loc_lr", "optimizer", "momentum", "weight_decay", "schedule",
                "label_smoothing", "seed", "amp", "region_penalty", "augment", "channels_last", "world_size",
                "train_data", "train_size")


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


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
        self.state = TrainState(model=model, device=dev, rank=rank, world_size=world, steps_per_epoch=self.steps_per_epoch)
        self.tally = _Tally()
        self.best_acc = -1.0
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
        self.saved_step = st.step
        if "rng" in extra:
            torch.set_rng_state(extra["rng"])

    def _check_same_settings(self, path: Path, extra: dict) -> None:
        stored = extra.get("settings")
        if stored is None:  # checkpoints written before settings were stored
            stored = {"epochs": extra.get("epochs_planned"), "schedule": extra.get("schedule")}
        for name in RUN_SETTINGS:
            if name in stored and stored[name] != self.settings[name]:
                raise ValueError(
                    f"cannot resume {path}: it was a run with {name}={stored[name]!r}, got {name}={self.settings[name]!r}; "
                    f"resume with the same settings (a changed {name} would silently change the run), "
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
            "rng": torch.get_rng_state(),
            "settings": dict(self.settings),
            "epochs_planned": self.settings["epochs"],
            "schedule": self.settings["schedule"],
        }
        info = {"epochs": st.epoch, "seed": self.settings["seed"], "step": st.step}
        info.update(self.meta or {})
        for name in names:
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
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    _check_batch_size(batch_size)
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
                        train_data=_data_name(train), train_size=len(train) if hasattr(train, "__len__") else None)
        _seed_everything(seed)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        model.to(dev)
        model.to(memory_format=layout)
        run = _Run(model, train, val, settings=settings, dev=dev, rank=rank, world=world,
                   out=Path(out_dir) if out_dir is not None else None, checkpoint_every=checkpoint_every,
                   keep_best=keep_best, callbacks=callbacks, meta=meta, progress=progress, augment=augment, layout=layout)
        if resume:
            run.resume(resume)
        return run.run()
    finally:
        if created_group:
            dist.destroy_process_group()


def export_best(model: nn.Module, out_dir: str | os.PathLike, val, test=None, *, name: str, device=None,
                meta: dict | None = None) -> tuple[Path, dict]:
    """The last step of a training run: reload ``out_dir/best.pt`` (the model chosen on
    validation; ``last.pt`` when there is no ``best.pt``) into ``model``, evaluate it on ``val``
    (and ``test``), and write ``out_dir/NAME.pt`` with those metrics. Returns ``(path, metrics)``.

    The test score is reported for the model chosen on validation, never chosen by test.
    ``meta`` adds to / overrides the checkpoint's metadata (e.g. ``epochs``, ``seed``).

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
    out = Path(out_dir)
    best = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    payload = load_checkpoint(best)
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
