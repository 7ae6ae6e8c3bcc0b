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
"""

from .checks import CHECKS, Subject, no_effect, run_checks
from .findings import SEVERITIES, Diagnosis, Finding
from .measures import Measures, measure
from .run import diagnose, identity_grid_swapped

__all__ = [
    "CHECKS",
    "Diagnosis",
    "Finding",
    "Measures",
    "SEVERITIES",
    "Subject",
    "diagnose",
    "identity_grid_swapped",
    "measure",
    "no_effect",
    "run_checks",
]
