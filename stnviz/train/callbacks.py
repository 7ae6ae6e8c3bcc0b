"""What :func:`~stnviz.train.fit` calls and shows: :class:`Callback` hooks and the live :class:`TrainState`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Callback", "TrainState"]


class Callback:
    """Hooks called by :func:`~stnviz.train.fit`; override what you need. ``state`` is the live :class:`TrainState`.

    Example:
        >>> import stnviz
        >>> class LastStep(Callback):
        ...     def on_train_end(self, state):
        ...         self.step, self.epoch = state.step, state.epoch
        >>> cb, model = LastStep(), stnviz.get_model("stn_tutorial", device="cpu")
        >>> _ = stnviz.fit(model, stnviz.data.sample("mnist").subset(torch.arange(32)), epochs=2, batch_size=16,
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
