"""Command line: ``python -m stnviz train|eval|demo|models``."""

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


def _init_params(text: str | None) -> list | None:
    """``--init-params`` as a list of numbers; a clear error for anything else."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--init-params must be a JSON list of numbers such as '[0.8, 0, 0, 0, 0.8, 0]', got {text!r} ({e})") from None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError(f"--init-params must be a JSON list of numbers such as '[0.8, 0, 0, 0, 0.8, 0]', got {text!r}")
    return value


def _train(args) -> int:
    """Hold ``--out`` (its lock: one run at a time) from before the data load to the export."""
    from .train import run_lock

    if set(args.freeze) >= {"classifier", "transformers"}:
        raise ValueError(f"--freeze {' '.join(args.freeze)} leaves nothing to train; freeze one part at most")
    if args.init_params is not None and not args.reinit_transformers:
        raise ValueError("--init-params sets the starting transform of the transformers that --reinit-transformers "
                         "re-initialises; add --reinit-transformers N (N >= 1), or leave --init-params out")
    writes = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the files
    with run_lock(args.out) if writes else nullcontext():
        return _train_in(args)


def _train_in(args) -> int:
    import torch

    from .data import load_splits, random_affine
    from .hub import get_model
    from .train import check_run_name, export_best, fit, freeze, load_matching

    init_params = _init_params(args.init_params)
    kwargs = _model_args(args.model_args)
    splits = load_splits(args.data, root=args.data_root, download=args.download, seed=args.seed)
    name = args.name or check_run_name(f"{args.model}.{splits.name}", "the default --name MODEL.DATA")
    kwargs.setdefault("input_size", list(splits.image_size))
    kwargs.setdefault("num_classes", splits.num_classes)
    torch.manual_seed(args.seed)  # the initial weights too, not just the data order
    model = get_model(args.model, device="cpu", **kwargs)
    if args.init:  # fine-tune: start from trained weights of the same architecture
        from .hub import load_pretrained

        state = load_pretrained(args.init, device="cpu").state_dict()
        if args.init_matching:  # a related architecture: take what fits, say what did not
            loaded, skipped = load_matching(model, state)
            print(f"--init: {len(loaded)} tensors loaded, skipped (name or shape differs): {', '.join(skipped) or 'none'}")
        else:
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                lines = str(e).strip().splitlines()  # torch's first line is a header, the second the first mismatch
                first = lines[1].strip() if len(lines) > 1 else lines[0]
                raise ValueError(f"--init {args.init} is another architecture than --model {args.model} with these "
                                 f"--model-args ({first}); add --init-matching to load only the tensors that fit") from None
    if args.reinit_transformers > len(model.transformers):
        raise ValueError(f"--reinit-transformers must be an integer from 0 to {len(model.transformers)} (the transformers "
                         f"of --model {args.model}), got {args.reinit_transformers}")
    for st in model.transformers[: args.reinit_transformers]:
        # fresh localisation nets (He init: PyTorch's default gives features that barely vary
        # with the input, so the transform barely can), identity transform
        for m in st.localization.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
        st.reset_to_identity()
        if init_params is not None:  # start from this transform instead of the identity
            st.set_constant_params(torch.tensor(init_params, dtype=torch.float32))
    for part in args.freeze:
        freeze(model, part)
    if args.augment == "reframe":  # the sign re-framed around its ROI (needs the batches' boxes)
        from .data.augment import Reframed

        splits.train = Reframed(splits.train)
    command = "python -m stnviz " + " ".join(shlex.quote(a) for a in args.argv)
    meta = {"dataset": splits.name, "command": command}
    # what made the starting weights: stored with the run's settings, so a resume must repeat it
    start = {"init": args.init, "init_matching": args.init_matching, "reinit_transformers": args.reinit_transformers,
             "init_params": init_params}
    out = Path(args.out)
    history = fit(
        model, splits.train, splits.val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        loc_lr=args.loc_lr, optimizer=args.optimizer, weight_decay=args.weight_decay, schedule=args.schedule,
        label_smoothing=args.label_smoothing, device=args.device, seed=args.seed, out_dir=out,
        checkpoint_every=args.checkpoint_every, resume=args.resume or None, meta=meta,
        augment=random_affine if args.augment == "jitter" else None, region_penalty=args.region_penalty, start=start,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 alone evaluates and writes the final checkpoint
    path, metrics = export_best(model, out, splits.val, splits.test, name=name, device=args.device,
                                meta={"epochs": args.epochs, "seed": args.seed}, run_id=history.attrs.get("run_id"))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stnviz", description="Spatial Transformer Networks: train, load, inspect, animate")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model; writes last.pt, best.pt, metrics.csv and NAME.pt to --out")
    p.add_argument("--model", required=True, help="architecture, e.g. stn_cnn")
    p.add_argument("--model-args", default=None, help='JSON of builder arguments, e.g. \'{"family": "tps"}\'')
    _data_args(p)
    p.add_argument("--epochs", type=_option("epochs"), required=True)
    p.add_argument("--out", required=True, help="output folder (one run at a time: a second run into it is refused)")
    p.add_argument("--name", type=_run_name, default=None, help="checkpoint name ARCH.TAG (default MODEL.DATA)")
    p.add_argument("--batch-size", type=_option("batch_size"), default=128)
    p.add_argument("--lr", type=_option("lr"), default=0.05)
    p.add_argument("--loc-lr", type=_option("loc_lr"), default=None,
                   help="localisation nets' learning rate (default lr/10; 0 keeps them as they are)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.add_argument("--weight-decay", type=_option("weight_decay"), default=5e-4)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default="onecycle")
    p.add_argument("--label-smoothing", type=_option("label_smoothing"), default=0.0)
    p.add_argument("--augment", nargs="?", const="jitter", default=None, choices=["jitter", "reframe"],
                   help="on-device augmentation: jitter (the default when given alone: small rotation/scale/shift, "
                        "brightness) or reframe (GTSRB: the sign at random sizes, places and small rotations, from its ROI)")
    p.add_argument("--init", default=None, help="start from these trained weights (name or .pt path) to fine-tune")
    p.add_argument("--init-matching", action="store_true",
                   help="with --init: load only the tensors whose names and shapes match (a related architecture, "
                        "e.g. the same classifier behind a transformer with another input size)")
    p.add_argument("--freeze", nargs="+", default=[], choices=["classifier", "transformers"],
                   help="train only the rest: e.g. --freeze classifier to teach a transformer to serve a "
                        "classifier trained on canonical images")
    p.add_argument("--reinit-transformers", type=_option("reinit_transformers"), default=0,
                   help="give the first N transformers fresh He-initialised localisation nets and the identity "
                        "transform (after --init, if given)")
    p.add_argument("--init-params", default=None,
                   help="with --reinit-transformers: their starting transform as a JSON list of flat parameters, "
                        "e.g. an affine crop '[0.8, 0, 0, 0, 0.8, 0]' (default: the identity)")
    p.add_argument("--region-penalty", type=_option("region_penalty"), default=0.0,
                   help="penalise sampling outside the input (keeps STNs from collapsing to zoom-out)")
    p.add_argument("--seed", type=_option("seed"), default=0)
    p.add_argument("--checkpoint-every", type=_option("checkpoint_every"), default=200,
                   help="optimizer steps between last.pt writes (0: only at the end of each epoch)")
    p.add_argument("--resume", default=None, help="checkpoint to resume from (e.g. OUT/last.pt)")
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a trained model (name or path) on a data set")
    p.add_argument("--model", required=True, help="trained weights name (stn_cnn.mnist_rts) or a .pt path")
    _data_args(p)
    p.add_argument("--splits", nargs="+", default=["test"], choices=["train", "val", "test"])
    p.set_defaults(func=_eval)

    p = sub.add_parser("demo", help="headless showcase on built-in data; writes PNGs, GIFs, MP4s and tables")
    p.add_argument("--out", default="out", help="output folder (default: out)")
    p.add_argument("--quick", action="store_true", help="a shorter training run (for tests)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda[:N] or mps")
    p.set_defaults(func=_demo)

    p = sub.add_parser("models", help="list architectures and trained weights")
    p.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'stn_*'")
    p.add_argument("--pretrained", action="store_true", help="only trained weights")
    p.set_defaults(func=_models)

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
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
    return " ".join(str(e).split()) or type(e).__name__


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
