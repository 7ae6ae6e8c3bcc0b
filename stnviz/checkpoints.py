"""Save and load models as one file of plain types, written atomically, read with ``weights_only``.

A checkpoint is a ``torch.save`` of a dict holding only ``str``, ``int``, ``float``, ``bool``,
``None``, lists, tuples, string-keyed dicts and tensors::

    {"format": "stnviz-checkpoint", "version": 1,
     "arch": "stn_cnn", "model_args": {...},           # rebuilds the model via the registry
     "state_dict": {...},                              # tensors
     "meta": {"dataset", "family", "input_size", "metrics", "epochs", "seed",
              "versions", "created", "command", ...},
     "extra": {...}}                                   # optional: optimizer state, trainer state

It is read with ``torch.load(weights_only=True)``, which refuses any pickled object that is not one
of those types, so a file crafted to run code when unpickled is rejected before anything runs.

The file also carries ``"weights_sha256"``, a SHA-256 of the weights (names, dtypes, shapes and
bytes), and loading checks it and the zip archive's CRCs: torch itself does not, so a flipped
byte in a weight would otherwise load silently. Any unusable file raises :class:`CheckpointError`
naming the file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import pickle
import platform
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write
from .models import SpatialTransformer, build_model

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "weights_digest"]

FORMAT = "stnviz-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used; the message names the file and the problem.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "other.pt")
        ...     torch.save({"weights": torch.zeros(1)}, path)
        ...     load_checkpoint(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        stnviz.checkpoints.CheckpointError: ...other.pt is not a stnviz checkpoint (expected a dict with format=...)
    """


def _check_plain(obj: Any, where: str) -> None:
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise ValueError(f"{where} keys must be str or int, got {type(k).__name__} ({k!r})")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise ValueError(
        f"{where} must hold only plain types (str, int, float, bool, None, list, tuple, dict, Tensor), "
        f"got {type(obj).__name__}"
    )


def weights_digest(state_dict: dict) -> str:
    """SHA-256 (hex) of a state dict: every entry's name, dtype, shape and bytes, in key order.

    Example:
        >>> digest = weights_digest({"w": torch.zeros(2, 2)})
        >>> len(digest), digest == weights_digest({"w": torch.zeros(2, 2)})
        (64, True)
        >>> digest == weights_digest({"w": torch.ones(2, 2)})  # any change in the weights shows
        False
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(t).__name__}")
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state_dict[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _versions() -> dict:
    from . import __version__

    # str(): torch.__version__ is a str subclass that weights_only loading refuses
    out = {"stnviz": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    try:
        import torchvision

        out["torchvision"] = str(torchvision.__version__)
    except Exception:  # torchvision is optional for loading; record its absence
        out["torchvision"] = None
    return out


def _default_meta(model: nn.Module) -> dict:
    families = [m.family for m in model.modules() if isinstance(m, SpatialTransformer)]
    input_size = getattr(model, "input_size", None)
    return {
        "dataset": None,
        "family": families[0] if len(set(families)) == 1 else (families or None),
        "input_size": list(input_size) if input_size is not None else None,
        "metrics": {},
        "epochs": None,
        "seed": None,
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
    }


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, *, extra: dict | None = None) -> Path:
    """Write ``model`` (built by a registered builder) to ``path`` atomically; return the path.

    ``meta`` overrides / adds to the defaults (transform family, input size, library versions,
    creation time, the command line). Everything must be plain types; ``extra`` may carry
    trainer state such as an optimizer's ``state_dict()``.

    Example:
        >>> import os, tempfile
        >>> from stnviz import get_model
        >>> model = get_model("stn_tutorial", device="cpu")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_checkpoint(model, os.path.join(tmp, "stn.pt"), {"dataset": "mnist"})
        ...     ckpt = load_checkpoint(path)
        >>> path.name, ckpt["arch"], ckpt["meta"]["dataset"], ckpt["meta"]["family"]
        ('stn.pt', 'stn_tutorial', 'mnist', 'affine')
    """
    config = getattr(model, "stnviz_config", None)
    if config is None:
        raise ValueError(
            "save_checkpoint needs a model built by a registered builder (it records model.stnviz_config); "
            f"got a {type(model).__name__} without one"
        )
    full_meta = _default_meta(model)
    full_meta.update(meta or {})
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "arch": config["arch"],
        "model_args": dict(config["kwargs"]),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": full_meta,
        "extra": extra or {},
    }
    payload["weights_sha256"] = weights_digest(payload["state_dict"])
    _check_plain(payload["model_args"], "model_args")
    _check_plain(payload["meta"], "meta")
    _check_plain(payload["extra"], "extra")
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _forbidden_global(e: pickle.UnpicklingError) -> str | None:
    """The global that torch's weights-only unpickler refused, if that is what happened."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return m.group(1) if m else None


def _unpickling_detail(e: pickle.UnpicklingError) -> str:
    """torch's reason without its advice to load unsafely (``weights_only=False``)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = text.split(" Please use", 1)[0]
    elif "Weights only load failed" in text:
        text = ""
    return " ".join(text.split())[:200] or type(e).__name__


def _check_zip(path: Path) -> None:
    """Verify every member's CRC (torch.load does not), so corrupted bytes are caught."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile:
        return  # not a zip at all: torch.load reports it (or reads a legacy file)
    except Exception as e:  # noqa: BLE001 - a fuzzed header can fail in many ways
        raise CheckpointError(f"cannot read {path}: its zip structure is damaged ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupted: the CRC of its member {bad!r} does not match its data")


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu") -> dict:
    """Read and validate a checkpoint dict (see module docstring) with ``weights_only=True``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a file that
    is truncated, corrupt (CRC or weights digest mismatch), not a stnviz checkpoint, or holds
    objects other than plain types (such a file is refused before any of its code can run).

    Example (the dict holds what rebuilds the model):
        >>> import os, tempfile
        >>> from stnviz import get_model
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_checkpoint(get_model("stn_tutorial", device="cpu"), os.path.join(tmp, "stn.pt"))
        ...     ckpt = load_checkpoint(path)
        >>> sorted(ckpt)
        ['arch', 'extra', 'format', 'meta', 'model_args', 'state_dict', 'version', 'weights_sha256']
        >>> get_model(ckpt["arch"], device="cpu", **ckpt["model_args"]).load_state_dict(ckpt["state_dict"])
        <All keys matched successfully>
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    _check_zip(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = _forbidden_global(e)
        if culprit is None:
            raise CheckpointError(
                f"cannot read {path}: malformed or not a torch checkpoint (unpickling failed: {_unpickling_detail(e)})"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than plain types and tensors, which could run "
            f"code when unpickled (forbidden global {culprit})"
        ) from None
    except Exception as e:  # noqa: BLE001 - fuzzed files raise KeyError, IndexError, struct.error, ...
        detail = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"cannot read {path}: truncated, corrupt or not a torch checkpoint ({type(e).__name__}: {detail})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a stnviz checkpoint (expected a dict with format={FORMAT!r})")
    version = payload.get("version", 0)
    if type(version) is not int or version > VERSION:
        raise CheckpointError(f"{path} has checkpoint version {version!r}; this stnviz reads integer versions up to {VERSION}")
    for key, kind in (("arch", str), ("model_args", dict), ("state_dict", dict), ("meta", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path} is missing {key!r} (expected {kind.__name__}, got {type(payload.get(key)).__name__})")
    if not isinstance(payload.get("extra", {}), dict):
        raise CheckpointError(f"{path}: 'extra' must be a dict, got {type(payload['extra']).__name__}")
    for k, v in payload["state_dict"].items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entries must be str -> tensor, got {k!r} -> {type(v).__name__}")
    if any(not isinstance(k, str) for k in payload["model_args"]):
        raise CheckpointError(f"{path}: model_args keys must be strings, got {sorted(map(repr, payload['model_args']))}")
    expected = payload.get("weights_sha256")
    if expected is not None:  # files written before digests were stored have none; their CRCs were checked
        got = weights_digest(payload["state_dict"])
        if got != expected:
            raise CheckpointError(
                f"{path} is corrupted: its weights' SHA-256 is {got[:16]}..., the file records {str(expected)[:16]}..."
            )
    # files written before the transform family was called "family" everywhere say "transform"
    for part in (payload["model_args"], payload["meta"]):
        if "transform" in part and "family" not in part:
            part["family"] = part.pop("transform")
    return payload


def _load_model(path: str | os.PathLike, *, device=None, arch: str | None = None) -> nn.Module:
    """Rebuild the model in ``path`` with its weights, in eval mode, with ``model.meta`` set.

    ``arch``: if given, the checkpoint must be of that architecture (else :class:`CheckpointError`).
    ``device`` is resolved with :func:`stnviz.device.resolve_device` (``None`` means ``"auto"``).
    """
    from .device import resolve_device

    payload = load_checkpoint(path)
    if arch is not None and payload["arch"] != arch:
        raise CheckpointError(f"{path} holds architecture {payload['arch']!r}, expected {arch!r}")
    try:
        model = build_model(payload["arch"], **payload["model_args"])
    except Exception as e:  # noqa: BLE001 - crafted arguments (negative sizes...) fail in many ways
        raise CheckpointError(
            f"{path}: cannot rebuild its model {payload['arch']!r} with {payload['model_args']}: "
            f"{' '.join(str(e).split())[:300]}"
        ) from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(
            f"{path}: its weights do not fit architecture {payload['arch']!r} with {payload['model_args']}: "
            + str(e).splitlines()[0]
            + " ..."
        ) from None
    model.meta = dict(payload["meta"], arch=payload["arch"], model_args=payload["model_args"], path=str(path))
    return model.to(resolve_device(device)).eval()
