"""Recording and logging where users already train: Lightning, TensorBoard, MLflow, W&B.

* :mod:`~stnviz.integrations.loggers`: :class:`TensorBoard`, :class:`MLflow`, :class:`Wandb`
  (each a :class:`Logger`: scalars, an image, a video), and :class:`LoggingCallback`, which writes
  a :class:`~stnviz.animate.ProgressRecorder`'s snapshots to them from :func:`stnviz.train.fit`
  (``fit(..., callbacks=[LoggingCallback(recorder, [TensorBoard("runs/a")])])``).
* :mod:`~stnviz.integrations.lightning`: :class:`STNCallback`, the same for a Lightning Trainer,
  written to whatever loggers the Trainer has.

Each framework is an optional extra (``pip install 'stnviz[lightning]'``, ``[tensorboard]``,
``[mlflow]``, ``[wandb]``) imported only when used: the names below load their module on first
access, so ``import stnviz.integrations`` imports none of them.
"""

import importlib

_LAZY = {
    **dict.fromkeys(["LOGGED_TILE", "Logger", "LoggingCallback", "MLflow", "TensorBoard", "Wandb", "check_image",
                     "check_video", "log_progress", "log_progress_video", "require", "scalars_of"], "loggers"),
    **dict.fromkeys(["STNCallback", "lightning_logger"], "lightning"),
}
_SUBMODULES = ("lightning", "loggers")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'stnviz.integrations' has no attribute {name!r}")


__all__ = sorted(_LAZY)
