"""Model surgery before training: start from trained weights, re-initialise transformers, freeze
a part. :func:`prepare_model` applies a :class:`~stnviz.train.config.TrainConfig`'s start
fields in the command line's order; ``fit`` calls it, so a notebook and ``python -m stnviz
train`` make the same starting weights from the same settings.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..models import localization_parameters
from .config import FROZEN_PARTS, ConfigError, TrainConfig

__all__ = ["FROZEN_PARTS", "ArchitectureMismatch", "freeze", "frozen_parts", "init_from", "load_matching",
           "prepare_model", "reinit_transformers"]


class ArchitectureMismatch(ValueError):
    """Trained weights that do not fit the model (another architecture or other sizes); the
    message names the first tensor that differs."""


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


def init_from(model: nn.Module, name_or_path: str | os.PathLike, matching: bool = False) -> tuple[list[str], list[str]]:
    """Start ``model`` from trained weights (a name such as ``"stn_cnn.mnist_rts"`` or a ``.pt``
    path): every tensor, or with ``matching`` only those whose name and shape fit
    (:func:`load_matching`). Returns ``(loaded, skipped)`` key lists; weights of another
    architecture without ``matching`` are :class:`ArchitectureMismatch` naming the first tensor
    that differs.

    Example:
        >>> from stnviz import get_model
        >>> model = get_model("stn_cnn", device="cpu", output_size=(14, 14))
        >>> init_from(model, "stn_cnn.mnist_rts")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stnviz.train.surgery.ArchitectureMismatch: stn_cnn.mnist_rts does not fit the model (size mismatch for head.0.weight: ...)
        >>> loaded, skipped = init_from(model, "stn_cnn.mnist_rts", matching=True)
        >>> len(loaded) > 0, skipped
        (True, ['head.0.weight'])
    """
    from ..hub import load_pretrained

    state = load_pretrained(name_or_path, device="cpu").state_dict()
    if matching:
        return load_matching(model, state)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()  # torch's first line is a header, the second the first mismatch
        first = lines[1].strip() if len(lines) > 1 else lines[0]
        raise ArchitectureMismatch(f"{name_or_path} does not fit the model ({first})") from None
    return list(state), []


def reinit_transformers(model: nn.Module, n: int, init_params=None) -> None:
    """Give the first ``n`` transformers of ``model`` fresh localisation nets, He-initialised
    (PyTorch's default init gives features that barely vary with the input, so the transform
    barely can), and the identity transform, or the flat parameters ``init_params`` (e.g. a crop
    ``[0.8, 0, 0, 0, 0.8, 0]``). Draws from torch's global random generator.

    Example:
        >>> import torch
        >>> from stnviz import get_model
        >>> _ = torch.manual_seed(0)
        >>> model = get_model("stn_tutorial", device="cpu")
        >>> reinit_transformers(model, 1, [0.8, 0, 0, 0, 0.8, 0])
        >>> model.transformer.regressor.bias.tolist(), bool(model.transformer.regressor.weight.any())
        ([0.800000011920929, 0.0, 0.0, 0.0, 0.800000011920929, 0.0], False)
        >>> reinit_transformers(model, 2)
        Traceback (most recent call last):
        ...
        ValueError: n must be an integer from 0 to 1 (the model's transformers), got 2
    """
    transformers = list(getattr(model, "transformers", []))
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(transformers):
        raise ValueError(f"n must be an integer from 0 to {len(transformers)} (the model's transformers), got {n!r}")
    for st in transformers[:n]:
        for m in st.localization.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        st.reset_to_identity()
        if init_params is not None:  # start from this transform instead of the identity
            st.set_constant_params(torch.tensor(list(init_params), dtype=torch.float32))


def prepare_model(model: nn.Module, config: TrainConfig) -> list[str]:
    """Apply ``config``'s start fields to ``model``, in order: ``init`` (with
    ``init_matching``), ``reinit_transformers`` (with ``init_params``), ``freeze``. Returns what
    was done worth telling (the tensors ``init_matching`` skipped). Errors name the fields.

    Example:
        >>> from stnviz import get_model
        >>> model = get_model("stn_tutorial", device="cpu")
        >>> prepare_model(model, TrainConfig(epochs=1, freeze=["classifier"])), frozen_parts(model)
        ([], ['classifier'])
        >>> prepare_model(model, TrainConfig(epochs=1, reinit_transformers=3))
        Traceback (most recent call last):
        ...
        stnviz.train.config.ConfigError: reinit_transformers must be an integer from 0 to 1 (the transformers of stn_tutorial), got 3
    """
    notes = []
    arch = getattr(model, "stnviz_config", {}).get("arch", type(model).__name__)
    n = len(getattr(model, "transformers", []))
    if config.reinit_transformers > n:  # before any work
        raise ConfigError(f"`reinit_transformers` must be an integer from 0 to {n} (the transformers of {arch}), "
                          f"got {config.reinit_transformers}")
    if config.init is not None:
        try:
            loaded, skipped = init_from(model, config.init, matching=config.init_matching)
        except ArchitectureMismatch as e:
            raise ConfigError(f"`init` {e} (another architecture, or {arch} built with other arguments); "
                              f"add `init_matching` to load only the tensors that fit") from None
        if config.init_matching:
            notes.append(f"init: {len(loaded)} tensors loaded, skipped (name or shape differs): {', '.join(skipped) or 'none'}")
    reinit_transformers(model, config.reinit_transformers, config.init_params)
    for part in config.freeze:
        freeze(model, part)
    return notes
