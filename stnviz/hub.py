"""Models by name: architectures (``stn_cnn``) and trained weights (``stn_cnn.mnist_rts``).

Trained weights are ``NAME.pt`` files, searched in this order:

1. the folders in ``$STNVIZ_CHECKPOINTS`` (``os.pathsep``-separated);
2. the weights shipped with the package (the repository's ``weights/``, installed as
   ``stnviz.weights`` in a wheel and found there from an editable install too).

This is the one place that turns a name into a file; :func:`stnviz.checkpoints.load_model`
loads a file, and :func:`load_pretrained` takes either.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from pathlib import Path

from torch import nn

from .checkpoints import load_model
from .models.registry import ARCHITECTURES

__all__ = ["checkpoint_dirs", "get_model", "list_models", "load_pretrained", "pretrained_table"]

_REPO_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def checkpoint_dirs() -> list[Path]:
    """Folders searched for ``NAME.pt``, first match wins.

    Example (the shipped weights are among them):
        >>> any((d / "stn_cnn.mnist_rts.pt").is_file() for d in checkpoint_dirs())
        True
    """
    dirs = [Path(p) for p in os.environ.get("STNVIZ_CHECKPOINTS", "").split(os.pathsep) if p]
    try:
        from importlib.resources import files

        dirs.append(Path(str(files("stnviz.weights"))))
    except (ModuleNotFoundError, TypeError):
        pass
    dirs.append(_REPO_WEIGHTS)
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


#: ``ARCH.TAG.pt``: an architecture name (letters, digits, ``_``), one dot, a tag (also ``-``).
#: Hidden files and temp files (``.NAME.XXXX.stnviz-tmp.pt`` from a killed save) never match.
WEIGHTS_FILE = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_-]+\.pt$")


def _pretrained() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in checkpoint_dirs():
        for f in sorted(d.glob("*.*.pt")):
            if WEIGHTS_FILE.match(f.name) and f.is_file():
                found.setdefault(f.name[: -len(".pt")], f)
    return found


def list_models(pattern: str | None = None, *, pretrained: bool | None = None) -> list[str]:
    """Sorted model names: architectures (``pretrained=False``), trained weights ``arch.tag``
    (``pretrained=True``), or both (``None``); ``pattern`` is a glob such as ``"stn_*"``.

    Example:
        >>> list_models("stn_*", pretrained=False)
        ['stn_cifar', 'stn_cnn', 'stn_fcn', 'stn_fcn_tps', 'stn_gtsrb', 'stn_tutorial']
        >>> "stn_cnn.mnist_rts" in list_models(pretrained=True)
        True
    """
    names: list[str] = []
    if pretrained is not True:
        names += ARCHITECTURES.names()
    if pretrained is not False:
        names += list(_pretrained())
    return sorted(n for n in names if pattern is None or fnmatch.fnmatch(n, pattern))


def load_pretrained(name_or_path: str | os.PathLike, device=None) -> nn.Module:
    """Load trained weights by name (``"stn_cnn.mnist_rts"``) or by path, in eval mode.

    The model carries its checkpoint metadata as ``model.meta`` (data set, metrics, the command
    that trained it...). ``device``: ``None`` / ``"auto"`` picks CUDA, MPS, then CPU.

    Example:
        >>> import torch
        >>> model = load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> model.meta["dataset"], model.input_size, model.training
        ('mnist_rts', (1, 42, 42), False)
        >>> model(torch.rand(2, *model.input_size)).shape
        torch.Size([2, 10])
    """
    as_path = Path(name_or_path)
    if as_path.suffix == ".pt" or as_path.is_file():
        return load_model(as_path, device=device)
    name = str(name_or_path)
    available = _pretrained()
    if name not in available:
        hint = f"; {name!r} is an architecture: use stnviz.get_model({name!r}) for an untrained one" if name in ARCHITECTURES else ""
        raise ValueError(f"no trained weights named {name!r}; expected one of {sorted(available) or '(none found)'}{hint}")
    return load_model(available[name], device=device, arch=name.split(".")[0])


def get_model(name: str, *, device=None, **kwargs) -> nn.Module:
    """An untrained architecture (``get_model("stn_cnn", family="tps")``) or, for an ``arch.tag``
    name, the trained weights (same as :func:`load_pretrained`).

    Example:
        >>> get_model("stn_cnn", family="tps", device="cpu").transformer.family
        'tps'
        >>> get_model("stn_cnn.mnist_rts", device="cpu").meta["arch"]
        'stn_cnn'
    """
    if "." in name:
        if kwargs:
            raise ValueError(f"{name!r} names trained weights; their arguments are fixed, got {sorted(kwargs)}")
        return load_pretrained(name, device=device)
    from .device import resolve_device

    return ARCHITECTURES.build(name, **kwargs).to(resolve_device(device))


def pretrained_table():
    """A pandas DataFrame of the trained weights found: name, data set, input size, recorded
    validation and test metrics, epochs, size on disk and the command that trained them.

    Files that cannot be read are left out and reported: a warning per file, and
    ``table.attrs["skipped"]`` lists ``(path, reason)``.

    Example:
        >>> table = pretrained_table()
        >>> list(table.columns[:4])
        ['name', 'dataset', 'input_size', 'val_accuracy']
        >>> table.set_index("name").loc["stn_cnn.mnist_rts", ["dataset", "input_size"]].tolist()
        ['mnist_rts', '1x42x42']
    """
    import pandas as pd

    from .checkpoints import CheckpointError, load_checkpoint

    rows = []
    skipped: list[tuple[str, str]] = []
    for name, path in sorted(_pretrained().items()):
        try:
            meta = load_checkpoint(path)["meta"]
        except (CheckpointError, OSError) as e:
            skipped.append((str(path), str(e)))
            warnings.warn(f"pretrained_table skipped {path}: {e}", stacklevel=2)
            continue
        m = meta.get("metrics") or {}
        rows.append({
            "name": name, "dataset": meta.get("dataset"), "input_size": "x".join(map(str, meta.get("input_size") or [])),
            "val_accuracy": m.get("val_accuracy"), "test_accuracy": m.get("test_accuracy"), "test_error": m.get("test_error"),
            "test_n": m.get("test_n"), "epochs": meta.get("epochs"), "MB": round(path.stat().st_size / 2**20, 2),
            "train_minutes": round(meta["train_seconds"] / 60, 1) if meta.get("train_seconds") else None,
            "command": meta.get("command"),
        })
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table
