"""The settings a run stores in its checkpoints and a resume must repeat: the stored fields of a
:class:`~stnviz.train.config.TrainConfig` as the run resolved them, and what the data and the
model say (the processes, the training set's name and size, what is frozen)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .distributed import _amp_setting
from .surgery import frozen_parts

__all__ = ["RUN_SETTINGS", "check_same_settings", "run_settings"]

#: The settings that shape a run: stored in every trainer checkpoint, and a resume must repeat
#: them. The stored :class:`TrainConfig` fields (``amp`` as resolved for the device, ``augment``
#: by name, ``freeze`` read from the model: what has ``requires_grad`` off), then the number of
#: processes and the training set's name and size.
RUN_SETTINGS = TrainConfig(epochs=1).stored_names() + ("world_size", "train_data", "train_size")


def _augment_name(augment) -> str | None:
    """How the ``augment`` setting is stored: ``None``, ``"reframe"``, or the qualified name of
    the function (``"jitter"`` is :func:`stnviz.data.random_affine`)."""
    if augment is None or augment == "reframe":
        return augment
    if augment == "jitter":
        from ..data import random_affine as augment
    return f"{getattr(augment, '__module__', '')}.{getattr(augment, '__qualname__', type(augment).__qualname__)}"


def _data_name(data) -> str | None:
    name = getattr(data, "name", None)
    return name if isinstance(name, str) else None


def run_settings(config: TrainConfig, model: nn.Module, train, device: torch.device, world_size: int) -> dict:
    """The settings of a run, as plain values (see :data:`RUN_SETTINGS`).

    Example:
        >>> from stnviz import get_model
        >>> from stnviz.data import sample
        >>> s = run_settings(TrainConfig(epochs=2, augment="jitter"), get_model("stn_tutorial", device="cpu"),
        ...                  sample("mnist"), torch.device("cpu"), 1)
        >>> s["epochs"], s["amp"], s["augment"], s["freeze"], s["train_size"], tuple(s) == RUN_SETTINGS
        (2, False, 'stnviz.data.augment.random_affine', [], 1000, True)
    """
    settings = {name: getattr(config, name) for name in config.stored_names()}
    settings.update(
        amp=_amp_setting(config.amp, device), augment=_augment_name(config.augment), freeze=frozen_parts(model),
        init_params=None if config.init_params is None else list(config.init_params),
        world_size=world_size, train_data=_data_name(train), train_size=len(train) if hasattr(train, "__len__") else None,
    )
    return settings


def check_same_settings(path: Path, stored, now: dict) -> None:
    """A ``ValueError`` naming the first setting a resume would change, or the settings a
    checkpoint written by an older stnviz lacks (it cannot be resumed: its run is not known
    well enough to continue exactly)."""
    missing = [name for name in now if not isinstance(stored, dict) or name not in stored]
    if missing:
        raise ValueError(
            f"cannot resume {path}: it was written by an older stnviz and does not store the run settings "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; start a new run in another folder "
            f"(init={str(path)!r}, --init on the command line, starts one from its weights)"
        )
    for name, value in now.items():
        if stored[name] != value:
            raise ValueError(
                f"cannot resume {path}: it was a run with {name}={stored[name]!r}, got {name}={value!r}; "
                f"resume with the same settings (a changed {name} would silently change the run), "
                f"or start a new run in another folder"
            )
