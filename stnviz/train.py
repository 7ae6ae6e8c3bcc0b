"""``fit``: train a classifier (with or without transformers) on tensor-backed data.

* Data are "batch sources" (:class:`stnviz.data.ImageSet`, :class:`stnviz.data.DistortedMNIST`):
  batches are made on the device, shuffled by ``(seed, epoch)``.
* The localisation nets get their own learning rate (:func:`stnviz.models.param_groups`).
* Periodic atomic checkpoints hold model, optimizer, scheduler and position; ``resume=`` continues
  mid-epoch from the exact batch, so a killed run loses only the work since its last checkpoint.
* A non-finite loss or transform parameter stops training with :class:`TrainingDiverged` naming
  the step; the last good checkpoint stays on disk.
* Under ``torchrun`` the same call uses DistributedDataParallel (gloo on CPU, NCCL on CUDA), each
  rank taking its slice of the epoch's permutation; rank 0 writes files.
* Per-epoch metrics come back as a pandas DataFrame (and ``metrics.csv`` in ``out_dir``).
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write
from .checkpoints import load_checkpoint, save_checkpoint
from .device import resolve_device
from .models import eval_mode, param_groups

__all__ = ["Callback", "TrainState", "TrainingDiverged", "compare", "evaluate", "fit"]


class TrainingDiverged(RuntimeError):
    """Loss or transform parameters became NaN/inf; the message names the step."""


class Callback:
    """Hooks called by :func:`fit`; override what you need. ``state`` is the live :class:`TrainState`."""

    def on_train_begin(self, state: "TrainState") -> None: ...

    def on_step_end(self, state: "TrainState") -> None: ...

    def on_epoch_end(self, state: "TrainState") -> None: ...

    def on_train_end(self, state: "TrainState") -> None: ...


@dataclass
class TrainState:
    """What callbacks see: the (unwrapped) model, position, last loss and the metrics so far."""

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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; return True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


@torch.no_grad()
def evaluate(model: nn.Module, data, *, batch_size: int = 512, device=None) -> dict:
    """Loss and accuracy of ``model`` on a batch source: ``{"loss", "accuracy", "error", "n"}``."""
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    total, correct, loss_sum = 0, 0, 0.0
    with eval_mode(model):
        for batch in data.batches(batch_size, device=dev):
            logits = model(batch.images)
            loss_sum += float(F.cross_entropy(logits, batch.labels, reduction="sum"))
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
            rank=, world_size=, start=)``), e.g. :class:`stnviz.data.ImageSet`.
        lr, loc_lr: learning rates of the classifier and of the localisation nets
            (``loc_lr`` defaults to ``lr / 10``).
        optimizer: ``"sgd"`` (with ``momentum``, Nesterov) or ``"adam"`` (AdamW).
        schedule: ``"onecycle"``, ``"cosine"`` or ``"constant"``.
        amp: mixed precision; defaults to on for CUDA, off elsewhere.
        out_dir: where ``last.pt`` (periodic + end of epoch), ``best.pt`` (best validation
            accuracy) and ``metrics.csv`` go. Needed for checkpoints and resume.
        checkpoint_every: also write ``last.pt`` every this many optimizer steps.
        resume: a checkpoint path, or ``True`` for ``out_dir/last.pt`` when it exists.
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
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    dev = resolve_device(device)
    created_group = _maybe_init_distributed(dev)
    rank, world = _dist_info()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    amp = (dev.type == "cuda") if amp is None else amp
    _seed_everything(seed)
    model.to(dev)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    groups = param_groups(model, lr, loc_lr)
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    steps_per_epoch = train.num_batches(batch_size, world)
    total_steps = epochs * steps_per_epoch
    max_lrs = [g["lr"] for g in groups]
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=total_steps, pct_start=0.2)
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    elif schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {schedule!r}")
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dev.type == "cuda")

    out = Path(out_dir) if out_dir is not None else None
    state = TrainState(model=model, device=dev, rank=rank, world_size=world, steps_per_epoch=steps_per_epoch)
    best_acc = -1.0
    if resume:
        path = (out / "last.pt") if resume is True and out is not None else Path(resume) if resume is not True else None
        if path is not None and path.is_file():
            ckpt = load_checkpoint(path)
            model.load_state_dict(ckpt["state_dict"])
            extra = ckpt["extra"]
            planned = (extra.get("epochs_planned"), extra.get("schedule"))
            if planned != (epochs, schedule):
                raise ValueError(
                    f"cannot resume {path}: it was a run of {planned[0]} epochs with schedule {planned[1]!r}, "
                    f"got epochs={epochs}, schedule={schedule!r}; resume with the same settings"
                )
            opt.load_state_dict(extra["optimizer"])
            sched.load_state_dict(extra["scheduler"])
            state.epoch, state.batch_in_epoch, state.step = extra["epoch"], extra["batch_in_epoch"], extra["step"]
            state.history = list(extra.get("history", []))
            best_acc = extra.get("best_accuracy", -1.0)
            if "rng" in extra:
                torch.set_rng_state(extra["rng"])
        elif resume is not True:
            raise FileNotFoundError(f"resume checkpoint {resume} does not exist")

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def write_checkpoint(name: str) -> None:
        if out is None or rank != 0:
            return
        extra = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "epoch": state.epoch,
            "batch_in_epoch": state.batch_in_epoch,
            "step": state.step,
            "history": state.history,
            "best_accuracy": best_acc,
            "rng": torch.get_rng_state(),
            "epochs_planned": epochs,
            "schedule": schedule,
        }
        info = {"epochs": state.epoch, "seed": seed, "step": state.step}
        info.update(meta or {})
        save_checkpoint(model, out / name, info, extra=extra)

    hooks = _check_finite_params(model)
    grids: list = []
    if region_penalty:
        from .models import GridGenerator

        hooks += [m.register_forward_hook(lambda mod, inp, out: grids.append(out))
                  for m in model.modules() if isinstance(m, GridGenerator)]
    gen = torch.Generator(device="cpu")
    try:
        for cb in callbacks:
            cb.on_train_begin(state)
        while state.epoch < epochs:
            net.train()
            t0 = time.perf_counter()
            seen, correct, loss_sum = 0, 0, 0.0
            batches = train.batches(batch_size, shuffle=True, seed=seed, epoch=state.epoch, device=dev,
                                    rank=rank, world_size=world, start=state.batch_in_epoch)
            bar = None
            if progress and rank == 0:
                from tqdm.auto import tqdm

                bar = tqdm(total=steps_per_epoch, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{epochs}", leave=False)
            for batch in batches:
                if augment is not None:
                    # seeded by position, so a resumed run draws the same augmentations
                    gen.manual_seed(((seed * 1_000_003 + state.epoch) * 1_000_003 + state.batch_in_epoch) * 101 + rank)
                    images = augment(batch.images, batch.labels, gen)
                else:
                    images = batch.images
                if images.dim() == 4:
                    images = images.contiguous(memory_format=layout)
                ctx = torch.autocast(dev.type, dtype=torch.float16) if amp and dev.type == "cuda" else nullcontext()
                grids.clear()
                try:
                    with ctx:
                        logits = net(images)
                        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=label_smoothing)
                        if region_penalty and grids:
                            outside = sum((g.float().abs() - 1).clamp(min=0).pow(2).mean() for g in grids)
                            loss = loss + region_penalty * outside
                except TrainingDiverged as e:
                    raise TrainingDiverged(f"training diverged at step {state.step + 1} (epoch {state.epoch + 1}): {e}; "
                                           f"the last good checkpoint is kept") from None
                if not bool(torch.isfinite(loss)):
                    raise TrainingDiverged(f"training diverged at step {state.step + 1} (epoch {state.epoch + 1}): "
                                           f"loss is {float(loss.detach())}; the last good checkpoint is kept")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                state.step += 1
                state.batch_in_epoch += 1
                n = batch.labels.numel()
                seen += n
                loss_sum += float(loss.detach()) * n
                correct += int((logits.argmax(1) == batch.labels).sum())
                state.loss, state.accuracy = float(loss.detach()), correct / max(seen, 1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{state.accuracy:.4f}", refresh=False)
                for cb in callbacks:
                    cb.on_step_end(state)
                if checkpoint_every and state.step % checkpoint_every == 0 and state.batch_in_epoch < steps_per_epoch:
                    write_checkpoint("last.pt")
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - t0
            row: dict[str, Any] = {
                "epoch": state.epoch + 1,
                "step": state.step,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "lr": opt.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_s": seen * world / seconds if seconds > 0 else math.nan,
            }
            if val is not None and rank == 0:
                res = evaluate(model, val, batch_size=max(batch_size, 256), device=dev)
                row.update(val_loss=res["loss"], val_accuracy=res["accuracy"])
            state.history.append(row)
            state.epoch += 1
            state.batch_in_epoch = 0
            if rank == 0 and progress:
                msg = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.4f}"
                if "val_accuracy" in row:
                    msg += f" | val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.4f}"
                print(msg + f" | {row['images_per_s']:.0f} img/s", flush=True)
            if val is not None and keep_best and rank == 0 and row["val_accuracy"] > best_acc:
                best_acc = row["val_accuracy"]
                if out is not None:
                    write_checkpoint("best.pt")
            write_checkpoint("last.pt")
            if out is not None and rank == 0:
                df = pd.DataFrame(state.history)
                atomic_write(out / "metrics.csv", lambda tmp: df.to_csv(tmp, index=False))
            for cb in callbacks:
                cb.on_epoch_end(state)
        for cb in callbacks:
            cb.on_train_end(state)
    finally:
        for h in hooks:
            h.remove()
        if created_group:
            dist.destroy_process_group()
    return pd.DataFrame(state.history)


def compare(make_st: callable, make_twin: callable, train, val, **fit_kwargs) -> pd.DataFrame:
    """Train an ST model and its no-ST twin on the same data; one table, a row per model.

    ``make_st`` / ``make_twin`` build fresh models (e.g. ``lambda: get_model("stn_cnn")``).
    Columns: model, parameters, final validation accuracy and error, best validation accuracy,
    training seconds.
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
