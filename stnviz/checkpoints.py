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
byte in a weight would otherwise load silently. A file without a digest is refused. Any unusable
file raises :class:`CheckpointError` naming the file.

:func:`load_model` rebuilds the model a file holds; :func:`stnviz.load_pretrained` finds a file
by name (``"stn_cnn.mnist_rts"``) in :mod:`stnviz.hub` and loads it with it.

A file cannot cost more memory than it stores: before anything is decompressed or unpickled the
zip directory is checked (``torch.save`` writes stored, uncompressed members; a compressed member,
a member that declares more bytes than it holds, or more than :data:`MAX_CHECKPOINT_BYTES` in all
is refused), and a model is rebuilt under a memory budget set by the weights the file stores (a
larger tensor is refused before it is allocated), then its every parameter and buffer shape is
compared with the stored weights. Non-finite weights are refused on save (unless
``allow_nonfinite=True``) and warned about on load.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import pickle
import platform
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._io import atomic_write
from .models import SpatialTransformer
from .models.registry import ARCHITECTURES

__all__ = ["MAX_CHECKPOINT_BYTES", "CheckpointError", "CheckpointWarning", "load_checkpoint", "load_model",
           "save_checkpoint", "weights_digest"]

FORMAT = "stnviz-checkpoint"
VERSION = 1

#: The most bytes a checkpoint may hold (its file, and its zip members uncompressed, in all):
#: 1 GiB, some 250 M float32 weights; the shipped files are under 4 MB. Pass ``max_bytes=`` to
#: :func:`load_checkpoint` for a larger file you trust (or raise this, read at each load, for
#: :func:`stnviz.load_pretrained`).
MAX_CHECKPOINT_BYTES = 2**30


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


class CheckpointWarning(UserWarning):
    """A checkpoint loads but something is off (non-finite weights); the message names the file."""


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


def _non_finite(state_dict: dict) -> list[str]:
    """Names of the floating-point (or complex) tensors in ``state_dict`` holding NaN or inf.

    Example:
        >>> _non_finite({"w": torch.zeros(2), "b": torch.tensor([float("nan")]), "n": torch.tensor([3])})
        ['b']
    """
    return [k for k, t in state_dict.items()
            if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]


def _name_list(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


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


def save_checkpoint(model: nn.Module, path: str | os.PathLike, meta: dict | None = None, *, extra: dict | None = None,
                    allow_nonfinite: bool = False) -> Path:
    """Write ``model`` (built by a registered builder) to ``path`` atomically; return the path.

    ``meta`` overrides / adds to the defaults (``family``, input size, library versions,
    creation time, the command line). Everything must be plain types; ``extra`` may carry
    trainer state such as an optimizer's ``state_dict()``. Weights holding NaN or inf are
    refused (``ValueError`` naming them, nothing written) unless ``allow_nonfinite=True``.

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
    bad = _non_finite(payload["state_dict"])
    if bad and not allow_nonfinite:
        raise ValueError(
            f"refusing to save {path}: weights {_name_list(bad)} hold NaN or inf (expected finite weights); "
            "pass allow_nonfinite=True to save them anyway"
        )
    payload["weights_sha256"] = weights_digest(payload["state_dict"])
    _check_plain(payload["model_args"], "model_args")
    _check_plain(payload["meta"], "meta")
    _check_plain(payload["extra"], "extra")
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _pickle_globals(data: bytes) -> list[str]:
    """``module.name`` of every global that the pickle(s) in ``data`` import, in order, read with
    :mod:`pickletools` (nothing is imported or run). ``STACK_GLOBAL`` names are read from the
    strings pushed just before it (directly or from the memo); unknown ones are left out.

    Example:
        >>> import os
        >>> _pickle_globals(pickle.dumps(os.getcwd, protocol=2)), _pickle_globals(pickle.dumps(os.getcwd, protocol=4))
        (['posix.getcwd'], ['posix.getcwd'])
    """
    import pickletools

    found: list[str] = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data) and len(found) < 1000:  # torch's legacy format: a few pickles in a row
        recent: list[Any] = [None, None]  # the last two values pushed (strings, else None)
        memo: dict[Any, Any] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                    recent.append(None)
                elif name == "STACK_GLOBAL":
                    if isinstance(recent[-2], str) and isinstance(recent[-1], str):
                        found.append(f"{recent[-2]}.{recent[-1]}")
                    recent.append(None)
                elif name in _STRING_OPS:
                    recent.append(arg if isinstance(arg, str) else None)
                elif name == "MEMOIZE":
                    memo[len(memo)] = recent[-1]
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = recent[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    recent.append(memo.get(arg))
                elif name not in ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK"):
                    recent.append(None)
        except Exception:  # noqa: BLE001 - a damaged pickle: report what was read before the damage
            break
    return found


def _is_torch_global(name: str) -> bool:
    """Globals that ``torch.save`` writes for tensors and state dicts."""
    return name == "collections.OrderedDict" or name.startswith("torch.") or name.startswith("torch._utils.")


def _forbidden_global(e: pickle.UnpicklingError, path: Path) -> str | None:
    """The global that torch's weights-only unpickler refused, if that is what happened.

    torch words its refusal differently from version to version ("Unsupported global: GLOBAL
    io.open was not an allowed global", "unsupported GLOBAL posix.system whose module posix is
    blocked"), so when its text names none, the file's own pickle is read for a global outside
    the ones torch writes."""
    m = re.search(r"GLOBAL ([\w.]+)", str(e))
    if m:
        return m.group(1)
    odd = [g for g in _pickle_globals(_pickle_bytes(path)) if not _is_torch_global(g)]
    return odd[0] if odd else None


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of a checkpoint: the zip's ``data.pkl`` member (checked by :func:`_check_zip`
    first), or the whole file in torch's legacy, non-zip format."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            return zf.read(name) if name is not None else b""
    except zipfile.BadZipFile:
        return path.read_bytes()
    except Exception:  # noqa: BLE001 - only used to name a culprit; torch's error is reported regardless
        return b""


def _unpickling_detail(e: pickle.UnpicklingError) -> str:
    """torch's reason without its advice to load unsafely (``weights_only=False``)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
        text = text.split(" Please use", 1)[0]
    elif "Weights only load failed" in text:
        text = ""
    return " ".join(text.split())[:200] or type(e).__name__


def _check_members(path: Path, members: list[zipfile.ZipInfo], max_bytes: int) -> None:
    """Refuse, from the zip directory alone, what would unpack to more than the file holds.

    ``torch.save`` writes every member stored (uncompressed), so its size in the directory is the
    size of its bytes in the file. A compressed member may unpack to a thousand times its size
    (a 3 MB file held a 3 GiB weight), so it is refused before anything is decompressed.
    """
    for info in members:
        if info.compress_type != zipfile.ZIP_STORED:
            method = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}.get(
                info.compress_type, f"method {info.compress_type}")
            raise CheckpointError(
                f"refused to load {path}: its member {info.filename!r} is compressed ({method}, {info.compress_size:,} "
                f"bytes that unpack to {info.file_size:,}); torch.save writes stored, uncompressed members, and a "
                "compressed one can unpack to far more than the file (nothing was decompressed)"
            )
        if info.file_size != info.compress_size:
            raise CheckpointError(
                f"refused to load {path}: its stored member {info.filename!r} declares {info.file_size:,} bytes "
                f"but holds {info.compress_size:,}; expected the same size (the zip directory is damaged or crafted)"
            )
    total = sum(i.file_size for i in members)
    if total > max_bytes:
        raise CheckpointError(
            f"refused to load {path}: its members hold {total:,} bytes in all, above the bound of {max_bytes:,} "
            "(MAX_CHECKPOINT_BYTES); pass max_bytes= to load_checkpoint for a larger file you trust"
        )


def _check_zip(path: Path, max_bytes: int | None = None) -> None:
    """Check the zip directory (:func:`_check_members`), then every member's CRC (torch.load does
    not), so corrupted bytes are caught. A file that is no zip at all is bounded by its size."""
    max_bytes = MAX_CHECKPOINT_BYTES if max_bytes is None else max_bytes
    size = path.stat().st_size
    if size > max_bytes:
        raise CheckpointError(
            f"refused to load {path}: it is {size:,} bytes, above the bound of {max_bytes:,} (MAX_CHECKPOINT_BYTES); "
            "pass max_bytes= to load_checkpoint for a larger file you trust"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            _check_members(path, zf.infolist(), max_bytes)
            bad = zf.testzip()
    except zipfile.BadZipFile:
        return  # not a zip at all: torch.load reports it (or reads a legacy file)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - a fuzzed header can fail in many ways
        raise CheckpointError(f"cannot read {path}: its zip structure is damaged ({type(e).__name__}: {e})") from None
    if bad is not None:
        raise CheckpointError(f"{path} is corrupted: the CRC of its member {bad!r} does not match its data")


def load_checkpoint(path: str | os.PathLike, *, map_location="cpu", max_bytes: int | None = None) -> dict:
    """Read and validate a checkpoint dict (see module docstring) with ``weights_only=True``.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` for a file that
    is truncated, corrupt (CRC or weights digest mismatch), carries no weights digest, is not a
    stnviz checkpoint, is larger than
    ``max_bytes`` (default :data:`MAX_CHECKPOINT_BYTES`) or compressed (both refused from the zip
    directory, before anything is unpacked), or holds code or objects other than plain types
    (refused for safety before any of it can run).
    Warns (:class:`CheckpointWarning`, naming the file) when its weights hold NaN or inf.

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
    _check_zip(path, max_bytes)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = _forbidden_global(e, path)
        if culprit is None:
            raise CheckpointError(
                f"cannot read {path}: malformed or not a torch checkpoint (unpickling failed: {_unpickling_detail(e)})"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds code or objects other than plain types and tensors (forbidden global "
            f"{culprit}), which are refused for safety; nothing in the file was run"
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
    if not isinstance(expected, str):
        raise CheckpointError(
            f"{path} carries no weights digest (expected a 'weights_sha256' string, got {type(expected).__name__}); "
            "re-save it with stnviz.checkpoints.save_checkpoint to add one"
        )
    got = weights_digest(payload["state_dict"])
    if got != expected:
        raise CheckpointError(
            f"{path} is corrupted: its weights' SHA-256 is {got[:16]}..., the file records {expected[:16]}..."
        )
    bad = _non_finite(payload["state_dict"])
    if bad:
        warnings.warn(f"{path} holds non-finite weights (NaN or inf) in {_name_list(bad)}; the model's outputs will "
                      "not be numbers", CheckpointWarning, stacklevel=2)
    return payload


class _OverBudget(Exception):
    """A model being rebuilt asked for more memory than its file justifies (see :class:`_BuildBudget`)."""


class _BuildBudget(TorchFunctionMode):
    """While a model is built, refuse the tensor factory call (``torch.empty``, ``zeros`` ...: how
    layers make their weights) that takes the bytes asked for in all above ``budget``.

    Each call's size is read on the ``meta`` device first (a factory there allocates nothing and
    loads no kernels), so a too-large tensor is never allocated.
    """

    FACTORIES = {
        torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
        torch.empty_strided, torch.eye, torch.arange, torch.linspace, torch.logspace,
        torch.empty_like, torch.zeros_like, torch.ones_like, torch.full_like, torch.rand_like, torch.randn_like,
        torch.Tensor.new_empty, torch.Tensor.new_zeros, torch.Tensor.new_ones, torch.Tensor.new_full,
    }

    def __init__(self, budget: int):
        super().__init__()
        self.budget = budget
        self.asked = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.FACTORIES and "out" not in kwargs:
            try:
                shape = func(*args, **{**kwargs, "device": "meta"})
            except Exception:  # noqa: BLE001 - bad arguments: the real call below says what is wrong
                return func(*args, **kwargs)
            self.asked += shape.numel() * shape.element_size()
            if self.asked > self.budget:
                raise _OverBudget(f"{tuple(shape.shape)}")
        return func(*args, **kwargs)


def _build_from_file(path, payload: dict) -> nn.Module:
    """Rebuild the file's model, refusing ``model_args`` that ask for more memory than the file
    stores (``num_classes=10**8`` would allocate 20 GB for a 113 KB file) before it is allocated,
    then compare every parameter and buffer shape with the stored weights (one clear error)."""
    arch, args = payload["arch"], payload["model_args"]
    stored_bytes = sum(t.numel() * t.element_size() for t in payload["state_dict"].values())
    budget = _BuildBudget(2 * stored_bytes + 64 * 2**20)  # the weights, the builders' trial inputs, slack
    try:
        with budget:
            model = ARCHITECTURES.build(arch, **args)
    except _OverBudget as e:
        raise CheckpointError(
            f"{path}: its model_args {args} ask for a larger {arch!r} than the weights it stores: building it "
            f"asked for {budget.asked:,} bytes (a {e} tensor last) where the file holds {stored_bytes:,}; "
            "refused before allocating"
        ) from None
    except Exception as e:  # noqa: BLE001 - crafted arguments (negative sizes...) fail in many ways
        raise CheckpointError(f"{path}: cannot rebuild its model {arch!r} with {args}: {' '.join(str(e).split())[:300]}") from None
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in payload["state_dict"].items()}
    problems = [f"missing {k}" for k in wanted if k not in stored]
    problems += [f"unexpected {k}" for k in stored if k not in wanted]
    problems += [f"{k} is {wanted[k]} in the model, {stored[k]} in the file"
                 for k in wanted if k in stored and wanted[k] != stored[k]]
    if problems:
        raise CheckpointError(f"{path}: its weights do not fit architecture {arch!r} with {args}: {_name_list(problems, 3)}")
    return model


def load_model(path: str | os.PathLike, *, device=None, arch: str | None = None) -> nn.Module:
    """Rebuild the model in the checkpoint file ``path`` with its weights, in eval mode, with
    ``model.meta`` set (the file's metadata plus ``arch``, ``model_args`` and ``path``).

    ``arch``: if given, the checkpoint must be of that architecture (else :class:`CheckpointError`).
    ``device`` is resolved with :func:`stnviz.device.resolve_device` (``None`` means ``"auto"``).
    The file is checked as by :func:`load_checkpoint`. To load trained weights by name
    (``"stn_cnn.mnist_rts"``) use :func:`stnviz.load_pretrained`, which finds the file.

    Example (not run here: it writes a file)::

        from stnviz import get_model
        from stnviz.checkpoints import load_model, save_checkpoint

        save_checkpoint(get_model("stn_tutorial"), "runs/stn.pt", {"dataset": "mnist"})
        model = load_model("runs/stn.pt", device="cpu")   # eval mode, on the CPU
        model.meta["dataset"], model.meta["arch"]          # ('mnist', 'stn_tutorial')
    """
    from .device import resolve_device

    payload = load_checkpoint(path)
    if arch is not None and payload["arch"] != arch:
        raise CheckpointError(f"{path} holds architecture {payload['arch']!r}, expected {arch!r}")
    model = _build_from_file(path, payload)
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
