"""``fit``: train a classifier (with or without transformers) on tensor-backed data.

* Every setting of a run is a field of one :class:`TrainConfig` (its default, range and help):
  ``fit(model, train, val, config)`` or ``fit(model, train, val, epochs=10, lr=0.02)``; the
  command line's ``train`` options are generated from its fields, so a notebook and the shell
  train the same weights from the same settings.
* Model surgery before training (:mod:`stnviz.train.surgery`): :func:`init_from` trained
  weights, :func:`reinit_transformers`, :func:`freeze` a part; ``fit`` applies a config's
  ``init``, ``reinit_transformers``, ``init_params`` and ``freeze`` with them.
* Data are "batch sources" (:class:`stnviz.data.ImageSet`, :class:`stnviz.data.DistortedMNIST`):
  batches are made on the device, shuffled by ``(seed, epoch)``.
* The localisation nets get their own learning rate (:func:`stnviz.models.param_groups`).
* Periodic atomic checkpoints hold model, optimizer, scheduler, position, the running sums of the
  epoch and every setting that shapes the run (:data:`RUN_SETTINGS`); ``resume=`` continues
  mid-epoch from the exact batch (a killed run loses only the work since its last checkpoint, and
  its metrics come out as if it had never stopped) and refuses a resume that changes a setting.
* A non-finite loss or transform parameter stops training with :class:`TrainingDiverged` naming
  the step; no checkpoint is written unless the parameters and the optimizer state are finite and
  the loss of the weights being saved is finite and at most :data:`DIVERGED_LOSS_FACTOR` times
  the run's loss scale, so the last checkpoint on disk is a good one, not merely a finite one.
* ``out_dir`` is locked while a run writes into it (:func:`run_lock`) and probed with a write
  before the first step (:class:`CannotWrite` naming the file, never after an epoch). Each run
  has an id, stored in its checkpoints; :func:`export_best` checks ``best.pt`` was written by the
  run it exports.
* Under ``torchrun`` the same call uses DistributedDataParallel (gloo on CPU, NCCL on CUDA), each
  rank taking its slice of the epoch's permutation; rank 0 writes files.
* Per-epoch metrics come back as a pandas DataFrame (and ``metrics.csv`` in ``out_dir``).

Modules: :mod:`~stnviz.train.config` (``TrainConfig``, ranges, names), :mod:`~stnviz.train.surgery`,
:mod:`~stnviz.train.loop` (``fit`` and its run state), :mod:`~stnviz.train.settings` (what a
checkpoint stores and a resume checks), :mod:`~stnviz.train.optim`, :mod:`~stnviz.train.folder`
(lock, probe write), :mod:`~stnviz.train.evaluate`, :mod:`~stnviz.train.export`
(``export_best``, ``compare``), :mod:`~stnviz.train.distributed`.
"""

from .config import (
    MAX_SEED,
    OPTION_RANGES,
    RUN_NAME_FORM,
    ConfigError,
    OptionRange,
    TrainConfig,
    check_option,
    check_run_name,
    option_flag,
)
from .evaluate import evaluate
from .export import compare, export_best
from .folder import CannotWrite, RunFolderBusy, run_lock
from .callbacks import Callback, TrainState
from .loop import DIVERGED_LOSS_FACTOR, TrainingDiverged, fit
from .optim import make_optimizer, make_schedule
from .settings import RUN_SETTINGS, check_same_settings, run_settings
from .surgery import ArchitectureMismatch, freeze, frozen_parts, init_from, load_matching, prepare_model, reinit_transformers

__all__ = [
    "DIVERGED_LOSS_FACTOR",
    "MAX_SEED",
    "OPTION_RANGES",
    "RUN_NAME_FORM",
    "RUN_SETTINGS",
    "ArchitectureMismatch",
    "Callback",
    "CannotWrite",
    "ConfigError",
    "OptionRange",
    "RunFolderBusy",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "check_option",
    "check_same_settings",
    "check_run_name",
    "compare",
    "evaluate",
    "export_best",
    "fit",
    "freeze",
    "frozen_parts",
    "init_from",
    "load_matching",
    "make_optimizer",
    "make_schedule",
    "option_flag",
    "prepare_model",
    "reinit_transformers",
    "run_lock",
    "run_settings",
]
