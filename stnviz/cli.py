"""Command line: ``python -m stnviz train|eval|diagnose|demo|models``."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path

__all__ = ["main"]


def _demo(args) -> int:
    from .demo import run_demo

    for path in run_demo(args.out, device=args.device, quick=args.quick):
        print(f"wrote {path}")
    return 0


def _models(args) -> int:
    from .hub import list_models

    for name in list_models(args.pattern, pretrained=args.pretrained or None):
        print(name)
    return 0


def _model_args(text: str | None) -> dict:
    """``--model-args`` as a dict; a clear error for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-args must be a JSON object such as '{{\"family\": \"tps\"}}', got {text!r} ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(
            f"--model-args must be a JSON object such as '{{\"family\": \"tps\"}}', got {text!r} (a {type(value).__name__})"
        )
    return value


def _json_numbers(text: str) -> list:
    """``type=`` of ``--init-params``: a JSON list of numbers."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON list of numbers such as '[0.8, 0, 0, 0, 0.8, 0]', got {text!r} ({e})") from None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise argparse.ArgumentTypeError(f"expected a JSON list of numbers such as '[0.8, 0, 0, 0, 0.8, 0]', got {text!r}")
    return value


#: The ``train`` options that are not :class:`stnviz.train.TrainConfig` fields: what to train on
#: what, where it runs and writes, and what it resumes.
RUN_OPTIONS = ("model", "model_args", "data", "data_root", "download", "device", "out", "name", "resume")


def _add_config_options(p) -> None:
    """One option per :class:`stnviz.train.TrainConfig` field (``--loc-lr`` for ``loc_lr``): its
    default, its help, its range (:func:`_option`) or its choices, all read from the field."""
    from dataclasses import MISSING, fields

    from .train import TrainConfig

    for f in fields(TrainConfig):
        meta, kwargs = f.metadata, dict(f.metadata["cli"])
        if f.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        if meta["range"] is not None:
            kwargs["type"] = _option(f.name)
        elif f.name == "init_params":
            kwargs["type"] = _json_numbers
        elif f.type in ("bool", "bool | None"):
            kwargs["action"] = argparse.BooleanOptionalAction
        if meta["choices"] is not None:
            kwargs["choices"] = list(meta["choices"])
        default = kwargs.get("default")
        if isinstance(default, bool):
            shown = f" (default {'on' if default else 'off'})"
        else:
            shown = "" if default is None or default == [] or "required" in kwargs else f" (default {default})"
        p.add_argument(_flag(f.name), dest=f.name, help=meta["help"] + shown, **kwargs)


def _flag(name: str) -> str:
    from .train.config import option_flag

    return option_flag(name)


def _config(args):
    """The :class:`stnviz.train.TrainConfig` of parsed ``train`` options."""
    from .train import TrainConfig

    return TrainConfig(**{name: getattr(args, name) for name in TrainConfig.names()})


def _train(args) -> int:
    """Hold ``--out`` (its lock: one run at a time) from before the data load to the export."""
    from .train import run_lock

    config = _config(args)  # every setting checked before any work
    writes = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the files
    with run_lock(args.out) if writes else nullcontext():
        return _train_in(args, config)


def _train_in(args, config) -> int:
    import torch

    from .data import load_splits
    from .hub import get_model
    from .train import check_run_name, export_best, fit

    kwargs = _model_args(args.model_args)
    splits = load_splits(args.data, root=args.data_root, download=args.download, seed=config.seed)
    name = args.name or check_run_name(f"{args.model}.{splits.name}", "the default --name MODEL.DATA")
    kwargs.setdefault("input_size", list(splits.image_size))
    kwargs.setdefault("num_classes", splits.num_classes)
    torch.manual_seed(config.seed)  # the initial weights too, not just the data order
    model = get_model(args.model, device="cpu", **kwargs)
    command = "python -m stnviz " + " ".join(shlex.quote(a) for a in args.argv)
    meta = {"dataset": splits.name, "command": command}
    out = Path(args.out)
    history = fit(model, splits.train, splits.val, config, device=args.device, out_dir=out,
                  resume=args.resume or None, meta=meta)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 alone evaluates and writes the final checkpoint
    path, metrics = export_best(model, out, splits.val, splits.test, name=name, device=args.device,
                                meta={"epochs": config.epochs, "seed": config.seed}, run_id=history.attrs.get("run_id"))
    print(json.dumps({"checkpoint": str(path), **metrics}, indent=2))
    return 0


def _eval(args) -> int:
    from .data import load_splits
    from .hub import load_pretrained
    from .train import evaluate

    model = load_pretrained(args.model, device=args.device)
    splits = load_splits(args.data, root=args.data_root, download=args.download)
    res = {split: evaluate(model, getattr(splits, split), device=args.device) for split in args.splits}
    print(json.dumps({"model": args.model, "data": splits.name, **res}, indent=2))
    return 0


def _diagnose(args) -> int:
    """Exit status 1 when a finding is an error, so CI fails on a broken transformer."""
    from .diagnose import diagnose
    from .diagnose.report import diagnosis_json, diagnosis_table, named_batch
    from .hub import load_pretrained

    model = load_pretrained(args.model, device=args.device)
    batch = named_batch(args.data, args.n, root=args.data_root, download=args.download)
    d = diagnose(model, batch.images, batch.labels)
    if args.json:
        print(json.dumps(diagnosis_json(d, model=args.model, data=args.data), indent=2))
    else:
        print(diagnosis_table(d))
    return 1 if d.worst == "error" else 0


def _option(name: str):
    """``type=`` of the numeric option ``--NAME``: parsed and checked against
    :data:`stnviz.train.OPTION_RANGES`, the table ``fit`` checks its arguments with, so argparse
    says e.g. ``argument --loc-lr: expected a number >= 0, got -1``."""

    def parse(text: str):
        from .train import OPTION_RANGES

        spec = OPTION_RANGES[name]
        try:
            value = spec.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {spec.describe()}, got {text!r}") from None
        if not spec.accepts(value):
            raise argparse.ArgumentTypeError(f"expected {spec.describe()}, got {text}")
        return value

    return parse


def _run_name(text: str) -> str:
    """``type=`` of ``--name``: ``ARCH.TAG``, one file name inside ``--out``."""
    from .train import RUN_NAME_FORM, check_run_name

    try:
        return check_run_name(text, "--name")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {RUN_NAME_FORM}, got {text!r}") from None


def _data_args(p) -> None:
    p.add_argument("--data", required=True, help="data set name, e.g. mnist, mnist_rts, gtsrb")
    p.add_argument("--data-root", default=None, help="folder with torchvision's files (default $STNVIZ_DATA or ~/.cache/stnviz/data)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stnviz", description="Spatial Transformer Networks: train, load, inspect, animate")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model; writes last.pt, best.pt, metrics.csv and NAME.pt to --out")
    p.add_argument("--model", required=True, help="architecture, e.g. stn_cnn")
    p.add_argument("--model-args", default=None, help='JSON of builder arguments, e.g. \'{"family": "tps"}\'')
    _data_args(p)
    p.add_argument("--out", required=True, help="output folder (one run at a time: a second run into it is refused)")
    p.add_argument("--name", type=_run_name, default=None, help="checkpoint name ARCH.TAG (default MODEL.DATA)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (e.g. OUT/last.pt)")
    _add_config_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a trained model (name or path) on a data set")
    p.add_argument("--model", required=True, help="trained weights name (stn_cnn.mnist_rts) or a .pt path")
    _data_args(p)
    p.add_argument("--splits", nargs="+", default=["test"], choices=["train", "val", "test"])
    p.set_defaults(func=_eval)

    p = sub.add_parser("diagnose", help="check a trained model's transformers on a data set (stnviz.diagnose); "
                                        "exit status 1 on an error-level finding")
    p.add_argument("--model", required=True, help="trained weights name (stn_cnn.mnist_rts) or a .pt path")
    p.add_argument("--data", required=True, help="data set name: mnist, mnist_<kind> (e.g. mnist_rts) or gtsrb from the "
                                                 "samples shipped with stnviz; any other needs --data-root")
    p.add_argument("--data-root", default=None, help="folder with torchvision's files: diagnose its test split "
                                                     "(default: the shipped samples, offline)")
    p.add_argument("--download", action="store_true", help="let torchvision download missing files (the test split)")
    p.add_argument("--n", type=int, default=256, help="images to diagnose, spread over the set (default 256)")
    p.add_argument("--json", action="store_true", help="print the findings as JSON (for CI) instead of a table")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.set_defaults(func=_diagnose)

    p = sub.add_parser("demo", help="headless showcase on built-in data; writes PNGs, GIFs, MP4s and tables")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--quick", action="store_true", help="a shorter training run (for tests)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.set_defaults(func=_demo)

    p = sub.add_parser("models", help="list architectures and trained weights")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'stn_*'")
    p.add_argument("--pretrained", action="store_true", help="only trained weights")
    p.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    args.argv = argv  # recorded in checkpoints: the exact command that trained them
    try:
        return args.func(args)
    except Exception as e:
        code = _user_error_status(e)
        if code is None:
            raise  # a bug in stnviz: keep the traceback
        print(f"stnviz: error: {_one_line(e)}", file=sys.stderr)
        return code


def _one_line(e: BaseException) -> str:
    """The error as one line, naming settings as the command line's options (``--loc-lr``)."""
    from .train import ConfigError

    text = e.for_cli() if isinstance(e, ConfigError) else str(e)
    return " ".join(text.split()) or type(e).__name__


def _user_error_status(e: BaseException) -> int | None:
    """Exit status for an error the user can fix (2), a diverged training run (1), else None.

    Every ``OSError`` is the user's to fix (a file that cannot be read or written, a full disk):
    ``fit`` and ``export_best`` say ``cannot write PATH: REASON`` for the files of a run."""
    from .train import RunFolderBusy, TrainingDiverged

    if isinstance(e, TrainingDiverged):
        return 1
    try:
        from .capture import CaptureError
    except ImportError:  # pragma: no cover
        CaptureError = ()  # noqa: N806
    if isinstance(e, (ValueError, OSError, RunFolderBusy)):
        return 2
    if CaptureError and isinstance(e, CaptureError):
        return 2
    return None
