"""``fit`` and its run state: the loop, step by step.

``fit`` resolves a :class:`~stnviz.train.config.TrainConfig` (or keyword overrides of its
fields), prepares the model (:func:`~stnviz.train.surgery.prepare_model`), and hands a ``_Run``
the model, optimizer, schedule, position and files: ``_Run.resume`` checks and loads a
checkpoint; ``_Run.train_epoch`` runs ``_Run.train_step`` over the epoch's batches;
``_Run.end_epoch`` evaluates and records the row; ``_Run.checkpoint`` checks the state is finite
and writes it.
"""

from __future__ import annotations

import math
import os
import random
import time
import uuid
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._io import atomic_write
from ..checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from ..device import resolve_device
from ..models import eval_mode
from .callbacks import Callback, TrainState
from .config import TrainConfig
from .distributed import _dist_info, _maybe_init_distributed, _uses_amp
from .evaluate import _check_data, evaluate
from .folder import _probe_write, _state_bytes, _writing, run_lock
from .optim import make_optimizer, make_schedule
from .settings import check_same_settings, run_settings
from .surgery import prepare_model

__all__ = ["DIVERGED_LOSS_FACTOR", "TrainingDiverged", "fit"]


#: A checkpoint is written only if its weights' loss is at most this many times the run's loss
#: scale (the larger of ln(classes) and the first step's loss): far above anything a run that
#: still learns reaches, far below what a diverging one does (1e17 after two steps at lr 1e6).
DIVERGED_LOSS_FACTOR = 100.0


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
        stnviz.train.loop.TrainingDiverged: training diverged at step ... (epoch 1): ...; no checkpoints are written ...
    """


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



def _check_finite_params(model: nn.Module):
    """Forward hooks that raise if a transformer's parameters are NaN/inf (before sampling)."""
    from ..models import GridGenerator

    def hook(module, inputs):
        if not bool(torch.isfinite(inputs[0]).all()):
            raise TrainingDiverged("non-finite transform parameters (theta)")

    return [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, GridGenerator)]



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

    def __init__(self, model, train, val, *, config: TrainConfig, settings: dict, dev, rank, world, out, callbacks,
                 meta, progress, augment, layout):
        self.model, self.train_data, self.val = model, train, val
        self.config, self.settings = config, settings
        self.dev, self.rank, self.world = dev, rank, world
        self.out = out
        self.callbacks, self.meta, self.progress = list(callbacks), meta, progress
        self.augment, self.layout = augment, layout
        self.opt = make_optimizer(model, config.optimizer, lr=config.lr, loc_lr=config.loc_lr,
                                  momentum=config.momentum, weight_decay=config.weight_decay)
        self.steps_per_epoch = train.num_batches(config.batch_size, world)
        self.sched = make_schedule(self.opt, config.schedule, total_steps=config.epochs * self.steps_per_epoch)
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
        check_same_settings(path, extra.get("settings"), self.settings)
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

    # ------------------------------------------------------------------ one step
    def train_step(self, batch) -> None:
        st, s = self.state, self.config
        if self.augment is not None:
            # seeded by position, so a resumed run draws the same augmentations
            self.gen.manual_seed(((s.seed * 1_000_003 + st.epoch) * 1_000_003 + st.batch_in_epoch) * 101 + self.rank)
            images = self.augment(batch.images, batch.labels, self.gen)
        else:
            images = batch.images
        if images.dim() == 4:
            images = images.contiguous(memory_format=self.layout)
        self.grids.clear()
        try:
            with self._autocast():
                logits = self.net(images)
                loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=s.label_smoothing)
                if s.region_penalty and self.grids:
                    outside = sum((g.float().abs() - 1).clamp(min=0).pow(2).mean() for g in self.grids)
                    loss = loss + s.region_penalty * outside
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
        raise TrainingDiverged(f"training diverged at {self._where()}: {what}; {self._kept()}; "
                               "stnviz.diagnose.DiagnoseCallback(probe_images) in callbacks= warns, with the step, "
                               "when theta starts to explode or the region to collapse, before a run diverges") from None

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self) -> None:
        st, s = self.state, self.config
        self.net.train()
        t0 = time.perf_counter()
        batches = self.train_data.batches(s.batch_size, shuffle=True, seed=s.seed, epoch=st.epoch, device=self.dev,
                                          rank=self.rank, world_size=self.world, start=st.batch_in_epoch)
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, initial=st.batch_in_epoch,
                       desc=f"epoch {st.epoch + 1}/{s.epochs}", leave=False)
        try:
            for batch in batches:
                self.train_step(batch)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.tally.loss_sum / self.tally.seen:.4f}", acc=f"{st.accuracy:.4f}", refresh=False)
                for cb in self.callbacks:
                    cb.on_step_end(st)
                if (s.checkpoint_every and st.step % s.checkpoint_every == 0
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
        st, s, t = self.state, self.config, self.tally
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
            res = evaluate(self.model, self.val, batch_size=max(s.batch_size, 256), device=self.dev)
            row.update(val_loss=res["loss"], val_accuracy=res["accuracy"])
        st.history.append(row)
        st.epoch += 1
        st.batch_in_epoch = 0
        self.tally = _Tally()
        if self.rank == 0 and self.progress:
            msg = f"epoch {row['epoch']}/{s.epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
            if "val_accuracy" in row:
                msg += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}"
            print(msg + f" | {row['images_per_s']:.0f} img/s", flush=True)
        improved = self.val is not None and s.keep_best and self.rank == 0 and row["val_accuracy"] > self.best_acc
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
        }
        info = {"epochs": st.epoch, "seed": self.config.seed, "step": st.step}
        info.update(self.meta or {})
        for name in names:
            with _writing(self.out / name):
                save_checkpoint(self.model, self.out / name, info, extra=extra)
        if "last.pt" in names:
            self.saved_step = st.step

    # ------------------------------------------------------------------ the whole run
    def run(self) -> pd.DataFrame:
        hooks = _check_finite_params(self.model)
        if self.config.region_penalty:
            from ..models import GridGenerator

            hooks += [m.register_forward_hook(lambda mod, inp, out: self.grids.append(out))
                      for m in self.model.modules() if isinstance(m, GridGenerator)]
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self.state)
            while self.state.epoch < self.config.epochs:
                self.train_epoch()
            self.write_metrics()  # also when a resume found the run complete
            for cb in self.callbacks:
                cb.on_train_end(self.state)
        finally:
            for h in hooks:
                h.remove()
        return pd.DataFrame(self.state.history)


def _layout_that_runs(model: nn.Module, train, layout, dev, *, note: bool):
    """``layout``, or the contiguous one when the model's forward fails on a ``.view`` in the
    channels-last layout (a view needs contiguous memory; the PyTorch STN tutorial's
    ``x.view(-1, 320)``): tried once on two training images, in eval mode without gradients, before
    any callback or step runs. The model is then switched back, with a note."""
    if layout != torch.channels_last:
        return layout
    images = next(iter(train.batches(2, device=dev))).images
    try:
        with torch.no_grad(), eval_mode(model):
            model(images.contiguous(memory_format=layout))
    except RuntimeError as e:  # any other failure shows, with its own message, in the first step
        if "view size is not compatible" not in str(e):
            return layout
        model.to(memory_format=torch.contiguous_format)
        if note:
            print(f"note: {type(model).__name__} calls .view on a tensor that the channels-last layout makes "
                  "non-contiguous; training in the contiguous layout (channels_last=False skips this try; "
                  ".reshape or .flatten in the model allow the faster layout)", flush=True)
        return torch.contiguous_format
    return layout


#: The arguments of :func:`fit` that are not run settings: where it runs, where it writes, what it
#: resumes, what it calls and tells.
FIT_ARGUMENTS = ("device", "out_dir", "resume", "callbacks", "meta", "progress")


def _resolve_config(config, overrides: dict) -> TrainConfig:
    """``config`` with ``overrides`` applied, or a config built from ``overrides`` alone."""
    TrainConfig.check_names(overrides, also=FIT_ARGUMENTS)
    if config is None:
        return TrainConfig.build(**overrides)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit's fourth argument is a TrainConfig (or leave it out and pass settings as keywords, "
                        f"e.g. epochs=10), got a {type(config).__name__}")
    return config.replace(**overrides)


def _augmentation(config: TrainConfig, train):
    """``(train, augment)``: ``"reframe"`` wraps the training set (its batches' boxes), ``"jitter"``
    is :func:`stnviz.data.random_affine`, a function is used as it is."""
    if config.augment == "reframe":
        from ..data.augment import Reframed

        return Reframed(train), None
    if config.augment == "jitter":
        from ..data import random_affine

        return train, random_affine
    return train, config.augment


def fit(
    model: nn.Module,
    train,
    val=None,
    config: TrainConfig | None = None,
    *,
    device=None,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | bool | None = None,
    callbacks: Sequence[Callback] = (),
    meta: dict | None = None,
    progress: bool = True,
    **overrides,
) -> pd.DataFrame:
    """Train ``model`` on ``train`` with the settings of ``config`` (a :class:`TrainConfig`) and
    ``overrides`` of its fields, and return per-epoch metrics as a DataFrame.

    ``fit(model, train, val, epochs=10, lr=0.02)`` and ``fit(model, train, val, config, lr=0.02)``
    both work; an unknown name is a ``TypeError`` listing the valid ones. The defaults are
    :class:`TrainConfig`'s, which are the command line's (``python -m stnviz train`` calls this
    function with the config its options make), so the same settings train the same weights from
    a notebook and from the shell.

    Args:
        train, val: batch sources (``.batches(batch_size, shuffle=, seed=, epoch=, device=,
            rank=, world_size=, start=)``), e.g. :class:`stnviz.data.ImageSet`. Both are checked
            up front: not empty, and images of the model's ``input_size``.
        config: the run's settings (learning rates, optimizer, schedule, augmentation, the
            starting weights: ``init``, ``reinit_transformers``, ``freeze``...); see
            :class:`TrainConfig` for each field, its default and its range.
        device: where to train (:func:`stnviz.device.resolve_device`); the model is moved there.
        out_dir: where ``last.pt`` (periodic + end of epoch), ``best.pt`` (best validation
            accuracy) and ``metrics.csv`` go. Needed for checkpoints and resume.
        resume: a checkpoint path, or ``True`` for ``out_dir/last.pt`` when it exists. The
            checkpoint must come from a run with the same :data:`RUN_SETTINGS` (epochs,
            batch size, learning rates, seed, starting weights...); a changed one is refused by name.
        callbacks: :class:`Callback` objects called at each step, epoch, start and end.
        meta: extra checkpoint metadata (data set name, command...).
        progress: progress bars and a line per epoch.

    Before training, the config's start fields are applied to ``model``
    (:func:`stnviz.train.surgery.prepare_model`: ``init``, then ``reinit_transformers`` with
    ``init_params``, then ``freeze``). What is frozen (``requires_grad`` off, also by the
    caller) is read from the model and stored with the run settings, so a resume cannot change
    it unseen.

    ``out_dir`` is held with :func:`run_lock` while the run writes into it, and probed with a
    write of about one checkpoint's size before the first step (:class:`CannotWrite`). A
    checkpoint is written only if its weights' loss on the batch just trained on is finite and
    at most :data:`DIVERGED_LOSS_FACTOR` times the larger of ``ln(classes)`` and the first
    step's loss; else :class:`TrainingDiverged` names the last good checkpoint kept. The
    returned table's ``attrs["run_id"]`` is the run's id, stored in its checkpoints (a resumed
    run keeps it): pass it to :func:`export_best`.

    ``channels_last`` (the default) is tried first; a model whose forward fails on a ``.view`` in that
    layout (the PyTorch STN tutorial's ``x.view(-1, 320)``) is trained contiguous, with a note.

    ``seed`` fixes the data order, augmentation and dropout; the model's initial weights come
    from wherever it was built, so call ``torch.manual_seed(seed)`` before building it for a fully
    reproducible run (the CLI does, then builds the model, then calls this function).

    Example:
        >>> import stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> history = fit(model, train, val, epochs=2, batch_size=16, device="cpu", progress=False)
        >>> len(history), history["step"].tolist(), list(history.columns[:4])
        (2, [2, 4], ['epoch', 'step', 'train_loss', 'train_accuracy'])
        >>> fit(model, train, val, epoch=2)
        Traceback (most recent call last):
        ...
        TypeError: unknown setting 'epoch'; expected one of the TrainConfig fields: epochs, batch_size, lr, loc_lr, optimizer, momentum, weight_decay, schedule, label_smoothing, seed, amp, augment, region_penalty, channels_last, init, init_matching, reinit_transformers, init_params, freeze, checkpoint_every, keep_best; or one of device, out_dir, resume, callbacks, meta, progress
    """
    config = _resolve_config(config, overrides)
    _check_data(model, train, "training")
    if val is not None:
        _check_data(model, val, "validation")
    train, augment = _augmentation(config, train)
    dev = resolve_device(device)
    created_group = _maybe_init_distributed(dev)
    try:
        rank, world = _dist_info()
        if dev.type == "cuda" and world > 1:
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
        if train.num_batches(config.batch_size, world) < 1:
            raise ValueError(f"the training set {train!r} gives no batches; expected at least one sample")
        out = Path(out_dir) if out_dir is not None else None
        writes = out is not None and rank == 0
        with run_lock(out) if writes else nullcontext():
            for note in prepare_model(model, config):
                if progress and rank == 0:
                    print(note, flush=True)
            settings = run_settings(config, model, train, dev, world)
            if writes:
                _probe_write(out, _state_bytes(model))
            _seed_everything(config.seed)
            layout = torch.channels_last if config.channels_last else torch.contiguous_format
            model.to(dev)
            model.to(memory_format=layout)
            layout = _layout_that_runs(model, train, layout, dev, note=progress and rank == 0)
            run = _Run(model, train, val, config=config, settings=settings, dev=dev, rank=rank, world=world, out=out,
                       callbacks=callbacks, meta=meta, progress=progress, augment=augment, layout=layout)
            if resume:
                run.resume(resume)
            history = run.run()
        history.attrs["run_id"] = run.state.run_id
        if created_group:
            dist.barrier()  # every rank done before any tears the group down (a rank leaving early can abort)
        return history
    finally:
        if created_group:
            dist.destroy_process_group()
