"""The last steps of a training run: :func:`export_best` (reload ``best.pt``, evaluate, write
``NAME.pt`` with its metrics) and :func:`compare` (an ST model against its no-ST twin)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ..checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .config import check_run_name
from .evaluate import evaluate
from .folder import _writing
from .loop import fit

__all__ = ["compare", "export_best"]


def export_best(model: nn.Module, out_dir: str | os.PathLike, val, test=None, *, name: str, device=None,
                meta: dict | None = None, run_id: str | None = None) -> tuple[Path, dict]:
    """The last step of a training run: reload ``out_dir/best.pt`` (the model chosen on
    validation; ``last.pt`` when there is no ``best.pt``) into ``model``, evaluate it on ``val``
    (and ``test``), and write ``out_dir/NAME.pt`` with those metrics. Returns ``(path, metrics)``.

    The test score is reported for the model chosen on validation, never chosen by test.
    ``meta`` adds to / overrides the checkpoint's metadata (e.g. ``epochs``, ``seed``).
    ``name`` must be ``ARCH.TAG`` (:func:`check_run_name`). ``run_id`` (``fit(...).attrs["run_id"]``):
    the run that must have written the checkpoint; one written by another run into the same
    folder is refused (:class:`stnviz.checkpoints.CheckpointError`) rather than exported.

    Example:
        >>> import tempfile
        >>> import torch, stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     _ = fit(model, train, val, epochs=1, batch_size=16, device="cpu", progress=False, out_dir=tmp)
        ...     path, metrics = export_best(model, tmp, val, name="stn_tutorial.tiny", device="cpu")
        >>> path.name, sorted(metrics)
        ('stn_tutorial.tiny.pt', ['best_epoch', 'val_accuracy', 'val_error'])
    """
    check_run_name(name)
    out = Path(out_dir)
    best = out / "best.pt" if (out / "best.pt").is_file() else out / "last.pt"
    payload = load_checkpoint(best)
    written_by = (payload.get("extra") or {}).get("run_id")
    if run_id is not None and written_by is not None and written_by != run_id:
        raise CheckpointError(
            f"{best} was written by run {written_by}, not by this run ({run_id}): another run wrote into {out}; "
            f"nothing was exported. Give each run its own output folder"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{best}: its weights do not fit the model given: {str(e).splitlines()[-1].strip()}") from None
    res_val = evaluate(model, val, device=device)
    metrics: dict[str, Any] = {"val_accuracy": res_val["accuracy"], "val_error": res_val["error"]}
    if test is not None:
        res_test = evaluate(model, test, device=device)
        metrics.update(test_accuracy=res_test["accuracy"], test_error=res_test["error"], test_n=res_test["n"])
    final = dict(payload["meta"])
    history = (payload.get("extra") or {}).get("history") or []
    if history and any("val_accuracy" in r for r in history):
        accs = [r.get("val_accuracy", -1.0) for r in history]
        metrics["best_epoch"] = accs.index(max(accs)) + 1
        final["train_seconds"] = float(sum(r.get("seconds", 0.0) for r in history))
    metrics_file = out / "metrics.csv"
    if metrics_file.is_file():  # the whole run, not only up to the best epoch
        table = pd.read_csv(metrics_file)
        if "seconds" in table:
            final["train_seconds"] = float(table["seconds"].sum())
    final.update(meta or {})
    final["metrics"] = metrics
    final.pop("step", None)
    with _writing(out / f"{name}.pt"):
        path = save_checkpoint(model, out / f"{name}.pt", final)
    return path, metrics


def compare(make_st: callable, make_twin: callable, train, val, **fit_kwargs) -> pd.DataFrame:
    """Train an ST model and its no-ST twin on the same data; one table, a row per model.

    ``make_st`` / ``make_twin`` build fresh models (e.g. ``lambda: get_model("stn_cnn")``).
    Columns: model, parameters, final validation accuracy and error, best validation accuracy,
    training seconds.

    Example:
        >>> import torch, stnviz
        >>> digits = stnviz.data.sample("mnist")
        >>> train, val = digits.subset(torch.arange(32)), digits.subset(torch.arange(32, 64))
        >>> table = compare(lambda: stnviz.get_model("stn_tutorial", device="cpu"),
        ...                 lambda: stnviz.get_model("cnn_tutorial", device="cpu"),
        ...                 train, val, epochs=1, batch_size=16, device="cpu", progress=False)
        >>> table[["model", "transformer"]].values.tolist()
        [['stn_tutorial', True], ['cnn_tutorial', False]]
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
