"""One :class:`TrainConfig`: every setting of a training run, its default, its range and its help.

``fit`` takes it (or keyword overrides of its fields), the command line's ``train`` options are
generated from its fields (``--loc-lr`` for ``loc_lr``, the help and the range from the field's
metadata), and the settings a checkpoint stores and a resume checks are read from it. The
defaults are the ones the shipped recipes in ``weights/train.sh`` were trained with.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Callable

__all__ = [
    "MAX_SEED",
    "OPTION_RANGES",
    "RUN_NAME_FORM",
    "ConfigError",
    "OptionRange",
    "TrainConfig",
    "check_option",
    "check_run_name",
    "option_flag",
]

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


def option_flag(name: str) -> str:
    """The command line's option for the field ``name``.

    Example:
        >>> option_flag("reinit_transformers")
        '--reinit-transformers'
    """
    return "--" + name.replace("_", "-")


class ConfigError(ValueError):
    """A setting that cannot be: the message names the fields in backticks, rendered as the
    Python name (``str(e)``) or as the command line's option (:meth:`for_cli`), so each caller
    reads the name it wrote.

    Example:
        >>> e = ConfigError("`init_params` needs `reinit_transformers` >= 1, got 0")
        >>> str(e), e.for_cli()
        ('init_params needs reinit_transformers >= 1, got 0', '--init-params needs --reinit-transformers >= 1, got 0')
    """

    _FIELD = re.compile(r"`(\w+)`")

    def __init__(self, template: str):
        self.template = template
        super().__init__(self._FIELD.sub(r"\1", template))

    def for_cli(self) -> str:
        return self._FIELD.sub(lambda m: option_flag(m.group(1)), self.template)


def _choices_text(choices) -> str:
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _setting(default: Any = MISSING, *, help: str, range: OptionRange | None = None, choices: tuple | None = None,
             stored: bool = True, cli: dict | None = None):
    """A :class:`TrainConfig` field: ``help`` (the CLI's help), ``range`` (numeric values
    allowed), ``choices`` (the names allowed), ``stored`` (saved in checkpoints and checked on
    resume: the settings that shape the weights), ``cli`` (extra ``argparse`` arguments)."""
    metadata = {"help": help, "range": range, "choices": choices, "stored": stored, "cli": cli or {}}
    return field(metadata=metadata) if default is MISSING else field(default=default, metadata=metadata)


FROZEN_PARTS = ("classifier", "transformers")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run, in one place (like timm's ``PretrainedCfg``).

    Only ``epochs`` has no default. Numeric fields are checked against their range on
    construction (a ``ValueError`` naming the field); ``fit(model, train, val, config)`` trains
    with it, ``fit(model, train, val, epochs=3, lr=0.1)`` builds one from keywords, and
    ``fit(..., config, lr=0.1)`` overrides fields of a given one. The command line's ``train``
    options are these fields (``--batch-size`` for ``batch_size``), with these defaults.

    The start fields (``init``, ``init_matching``, ``reinit_transformers``, ``init_params``,
    ``freeze``) say how the starting weights are made from the model given to ``fit``, in that
    order (:func:`stnviz.train.surgery.prepare_model`).

    Example:
        >>> config = TrainConfig(epochs=3)
        >>> config.lr, config.weight_decay, config.checkpoint_every, config.batch_size
        (0.05, 0.0005, 200, 128)
        >>> config.replace(lr=0.1).lr
        0.1
        >>> TrainConfig(epochs=3, lr=-1)
        Traceback (most recent call last):
        ...
        stnviz.train.config.ConfigError: lr must be a number > 0, got -1
        >>> config.replace(lr_typo=0.1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: unknown setting 'lr_typo'; expected one of the TrainConfig fields: epochs, batch_size, lr, loc_lr, ...
    """

    epochs: int = _setting(help="passes over the training set", range=OptionRange(int, 1))
    batch_size: int = _setting(128, help="images per optimizer step (over all processes under torchrun)",
                               range=OptionRange(int, 1))
    lr: float = _setting(0.05, help="learning rate of the classifier (the schedule's peak)",
                         range=OptionRange(float, 0, low_open=True))
    loc_lr: float | None = _setting(None, help="localisation nets' learning rate (default lr/10; 0 keeps them as they are)",
                                    range=OptionRange(float, 0))
    optimizer: str = _setting("sgd", help="sgd (with momentum, Nesterov) or adam (AdamW)", choices=("sgd", "adam"))
    momentum: float = _setting(0.9, help="SGD momentum (Nesterov when > 0)",
                               range=OptionRange(float, 0, high=1, high_open=True))
    weight_decay: float = _setting(5e-4, help="weight decay", range=OptionRange(float, 0))
    schedule: str = _setting("onecycle", help="learning-rate schedule, stepped every optimizer step",
                             choices=("onecycle", "cosine", "constant"))
    label_smoothing: float = _setting(0.0, help="label smoothing of the cross-entropy",
                                      range=OptionRange(float, 0, high=1, high_open=True))
    seed: int = _setting(0, help="fixes the data order, augmentation and dropout (the CLI: the initial weights too)",
                         range=OptionRange(int, 0, high=MAX_SEED))
    amp: bool | None = _setting(None, help="mixed precision (float16 autocast); default on for CUDA, off elsewhere")
    augment: str | Callable | None = _setting(
        None, choices=("jitter", "reframe"), cli={"nargs": "?", "const": "jitter"},
        help="on-device augmentation: jitter (the default when given alone: small rotation/scale/shift, brightness) "
             "or reframe (GTSRB: the sign at random sizes, places and small rotations, from its ROI); in Python also "
             "a function f(images, labels, generator) -> images")
    region_penalty: float = _setting(0.0, help="penalise sampling outside the input (keeps STNs from collapsing to zoom-out)",
                                     range=OptionRange(float, 0))
    channels_last: bool = _setting(True, help="train in the channels-last memory format (the same values, a faster layout)")
    init: str | None = _setting(None, help="start from these trained weights (name or .pt path) to fine-tune")
    init_matching: bool = _setting(False, help="with --init: load only the tensors whose names and shapes match "
                                               "(a related architecture, e.g. the same classifier behind a "
                                               "transformer with another input size)")
    reinit_transformers: int = _setting(0, range=OptionRange(int, 0),
                                        help="give the first N transformers fresh He-initialised localisation nets "
                                             "and the identity transform (after --init, if given)")
    init_params: tuple[float, ...] | None = _setting(
        None, help="with --reinit-transformers: their starting transform as a JSON list of flat parameters, e.g. an "
                   "affine crop '[0.8, 0, 0, 0, 0.8, 0]' (default: the identity)")
    freeze: tuple[str, ...] = _setting((), choices=FROZEN_PARTS, cli={"nargs": "+"},
                                       help="train only the rest: e.g. --freeze classifier to teach a transformer to "
                                            "serve a classifier trained on canonical images")
    checkpoint_every: int = _setting(200, stored=False, range=OptionRange(int, 0),
                                     help="optimizer steps between last.pt writes (0: only at the end of each epoch)")
    keep_best: bool = _setting(True, stored=False, help="write best.pt at each epoch of best validation accuracy")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            spec, choices = f.metadata["range"], f.metadata["choices"]
            if f.name == "checkpoint_every" and value is None:  # older calls' "no periodic checkpoints"
                value = 0
            if spec is not None and not (value is None and f.default is None):
                check_option(f.name, value, spec)
                value = spec.kind(value)
            object.__setattr__(self, f.name, value)
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"`optimizer` must be {_choices_text(('sgd', 'adam'))}, got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ConfigError(f"`schedule` must be {_choices_text(('onecycle', 'cosine', 'constant'))}, got {self.schedule!r}")
        if isinstance(self.augment, str) and self.augment not in ("jitter", "reframe"):
            raise ConfigError(f"`augment` must be 'jitter', 'reframe', None or a function f(images, labels, generator), "
                              f"got {self.augment!r}")
        if not (self.augment is None or isinstance(self.augment, str) or callable(self.augment)):
            raise ConfigError(f"`augment` must be 'jitter', 'reframe', None or a function f(images, labels, generator), "
                              f"got a {type(self.augment).__name__}")
        if self.amp is not None and not isinstance(self.amp, bool):
            raise ConfigError(f"`amp` must be True, False or None (on for CUDA), got {self.amp!r}")
        for name in ("channels_last", "init_matching", "keep_best"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"`{name}` must be True or False, got {getattr(self, name)!r}")
        self._check_start()

    def _check_start(self) -> None:
        freeze = (self.freeze,) if isinstance(self.freeze, str) else self.freeze
        if not isinstance(freeze, (tuple, list)) or any(p not in FROZEN_PARTS for p in freeze):
            raise ConfigError(f"`freeze` must hold parts from {FROZEN_PARTS}, got {self.freeze!r}")
        object.__setattr__(self, "freeze", tuple(dict.fromkeys(freeze)))
        if set(self.freeze) >= set(FROZEN_PARTS):
            raise ConfigError(f"`freeze` {' '.join(self.freeze)} leaves nothing to train; freeze one part at most")
        if self.init is not None and not isinstance(self.init, str):
            if not hasattr(self.init, "__fspath__"):
                raise ConfigError(f"`init` must be trained weights' name or a .pt path, got {self.init!r}")
            object.__setattr__(self, "init", str(self.init))  # a path is stored as text
        if self.init_matching and self.init is None:
            raise ConfigError("`init_matching` loads the tensors of `init` that fit; give `init` too, or leave it out")
        if self.init_params is not None:
            params = self.init_params
            if not isinstance(params, (list, tuple)) or not params or not all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in params):
                raise ConfigError(f"`init_params` must be a list of finite numbers such as [0.8, 0, 0, 0, 0.8, 0], "
                                  f"got {params!r}")
            object.__setattr__(self, "init_params", tuple(float(v) for v in params))
            if not self.reinit_transformers:
                raise ConfigError("`init_params` sets the starting transform of the transformers that "
                                  "`reinit_transformers` re-initialises; set `reinit_transformers` to N >= 1, "
                                  "or leave `init_params` out")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The field names, in order.

        Example:
            >>> TrainConfig.names()[:4]
            ('epochs', 'batch_size', 'lr', 'loc_lr')
        """
        return tuple(f.name for f in fields(cls))

    @classmethod
    def check_names(cls, names, also: tuple[str, ...] = ()) -> None:
        """A ``TypeError`` naming the first of ``names`` that is no field (nor in ``also``), and
        the valid names."""
        valid = cls.names()
        unknown = [n for n in names if n not in valid and n not in also]
        if unknown:
            others = f"; or one of {', '.join(also)}" if also else ""
            raise TypeError(f"unknown setting {unknown[0]!r}; expected one of the TrainConfig fields: "
                            f"{', '.join(valid)}{others}")

    @classmethod
    def build(cls, **settings) -> "TrainConfig":
        """``TrainConfig(**settings)`` with an unknown or missing name said clearly."""
        cls.check_names(settings)
        if "epochs" not in settings:
            raise TypeError("a training run needs epochs: pass epochs=N (or a TrainConfig(epochs=N))")
        return cls(**settings)

    def replace(self, **overrides) -> "TrainConfig":
        """A copy with ``overrides`` (field names, checked) applied."""
        self.check_names(overrides)
        return replace(self, **overrides) if overrides else self

    def stored_names(self) -> tuple[str, ...]:
        """The fields saved in checkpoints and checked on resume (all but ``checkpoint_every``
        and ``keep_best``, which do not change the weights)."""
        return tuple(f.name for f in fields(self) if f.metadata["stored"])


#: Every numeric field of :class:`TrainConfig` and its range (the fields' own metadata, gathered):
#: the command line's options of the same names (``--loc-lr`` for ``loc_lr``) use the same table.
OPTION_RANGES: dict[str, OptionRange] = {f.name: f.metadata["range"] for f in fields(TrainConfig)
                                         if f.metadata["range"] is not None}


def check_option(name: str, value, spec: OptionRange | None = None):
    """``value`` if :data:`OPTION_RANGES` accepts it for ``name``, else a ``ValueError`` naming
    the argument, the range and the value.

    Example:
        >>> check_option("lr", 0.1)
        0.1
        >>> check_option("loc_lr", -1)
        Traceback (most recent call last):
        ...
        stnviz.train.config.ConfigError: loc_lr must be a number >= 0, got -1
    """
    spec = spec or OPTION_RANGES[name]
    if not spec.accepts(value):
        raise ConfigError(f"`{name}` must be {spec.describe()}, got {value!r}")
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
    from ..hub import WEIGHTS_FILE

    if not isinstance(name, str) or not WEIGHTS_FILE.fullmatch(f"{name}.pt"):
        raise ValueError(f"{option} must be {RUN_NAME_FORM}, got {name!r}")
    return name
