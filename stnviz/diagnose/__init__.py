"""Tell what is wrong with a spatial transformer, and how to fix it: ``stnviz.diagnose(model, images)``.

One forward pass under :func:`stnviz.capture.capture` records every sampler call of any model
(stnviz's or foreign code, several transformers, TPS or dense grids; two-input models through
``forward=``); each record is measured once in input pixels (:mod:`stnviz.diagnose.measures`) and
judged by one small function per check (:mod:`stnviz.diagnose.checks`, thresholds and their
reasoning beside each). The result is a :class:`Diagnosis`: a :class:`Finding` per check and record
with a ``severity`` (``"ok"``, ``"warning"``, ``"error"``), the measured ``value``, the
``threshold``, a ``message`` with the numbers and a concrete ``fix``; ``to_frame()`` for pandas,
an HTML view in notebooks (worst first, healthy checks folded away) and ``plot(check)`` for the
offending samples::

    d = stnviz.diagnose(model, images, labels)   # labels add the no_effect check
    d                                            # Diagnosis(1 warning: zoom_out on 'stn' (1.44))
    d.plot("zoom_out")                           # the samples whose region outgrew the input

The checks (stable ids): ``zoom_out``, ``outside_image``, ``over_zoom``, ``input_independent``,
``identity``, ``degenerate``, ``fold``, ``stacked_warps``, ``align_corners_mismatch``,
``padding_not_background``, ``low_precision_grid``, ``non_finite`` and, with labels,
``no_effect`` (the accuracy with one transformer's grid swapped for the identity inside the
forward, by a torch function mode: no change to the user's code).

Over training, :class:`DiagnoseCallback` (a :class:`stnviz.train.Callback`, or
``monitor.update(model, step)`` in any loop) tracks the same figures on a probe batch and adds
``exploding`` and ``collapsing``, each warned once with the step (:mod:`stnviz.diagnose.monitor`).
"""

from .checks import CHECKS, Subject, no_effect, run_checks
from .findings import SEVERITIES, Diagnosis, Finding
from .measures import Measures, measure
from .report import diagnosis_json, diagnosis_table, named_batch
from .run import HEALTH, diagnose, health, identity_grid_swapped

__all__ = [
    "CHECKS",
    "COLLAPSING",
    "DiagnoseCallback",
    "Diagnosis",
    "EXPLODING_GRAD",
    "EXPLODING_THETA",
    "Finding",
    "HEALTH",
    "Measures",
    "MonitorWarning",
    "SEVERITIES",
    "Subject",
    "diagnose",
    "diagnosis_json",
    "diagnosis_table",
    "health",
    "identity_grid_swapped",
    "localisation_params",
    "measure",
    "named_batch",
    "no_effect",
    "run_checks",
]

# The monitor loads on first use: it is a stnviz.train.Callback, and stnviz.train brings pandas,
# which ``import stnviz`` (that imports this package) does not need.
_MONITOR = ("COLLAPSING", "EXPLODING_GRAD", "EXPLODING_THETA", "DiagnoseCallback", "MonitorWarning",
            "localisation_params")


def __getattr__(name):
    if name in _MONITOR:
        from . import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
