"""What ``python -m stnviz diagnose`` prints: a labelled batch of a data set by name (the shipped
samples when no data folder is given), a diagnosis as a terminal table, and as JSON for CI."""

from __future__ import annotations

import math

import torch

from .findings import Diagnosis

__all__ = ["diagnosis_json", "diagnosis_table", "named_batch"]


def _spread(n: int, total: int) -> torch.Tensor:
    """``n`` indices evenly spread over ``total`` (every class and GTSRB track gets its share)."""
    return torch.linspace(0, total - 1, min(n, total)).round().long().unique()


def named_batch(data: str, n: int = 256, *, root=None, download: bool = False):
    """``n`` labelled images (an :class:`~stnviz.data.ImageSet` batch) of data set ``data``.

    Without ``root`` (and ``download``) they come from the samples shipped with stnviz, offline:
    ``mnist`` and ``mnist_<kind>`` (the 1,000 digits, distorted as the shipped models were tested),
    ``gtsrb`` (600 frames of 20 tracks). With ``root`` or ``download``: the data set's test split
    (:func:`stnviz.data.load_splits`). Either way the ``n`` are spread evenly over the set.

    Example:
        >>> batch = named_batch("mnist_rts", 8)
        >>> tuple(batch.images.shape), len(batch.labels)
        ((8, 1, 42, 42), 8)
    """
    from ..data import DATASETS, distorted_test_set, load_splits, sample

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of images must be an int >= 1, got {n!r}")
    if root is not None or download:
        test = load_splits(data, root=root, download=download).test
    elif data == "gtsrb":
        test = sample("gtsrb")
    elif data == "mnist":
        test = sample("mnist")
    elif isinstance(data, str) and data.startswith("mnist_") and data in DATASETS:
        test = distorted_test_set(sample("mnist"), data[len("mnist_"):])
    else:
        raise ValueError(f"the shipped samples hold mnist, mnist_<kind> and gtsrb, got {data!r}; for another data "
                         f"set ({', '.join(DATASETS)}) pass its folder (--data-root) or --download")
    return test.get(_spread(n, len(test)))


def _number(v) -> str:
    if isinstance(v, float) and v != v:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def diagnosis_table(d: Diagnosis, width: int = 100) -> str:
    """The diagnosis as terminal text: the summary, a table of every finding worst first
    (severity, check, key, value, threshold) and, under it, each problem's message and fix.

    Example:
        >>> from stnviz.diagnose import Finding
        >>> print(diagnosis_table(Diagnosis([Finding("zoom_out", "stn", "warning", 1.44, 1.2, "too large", "shrink it")],
        ...                                 batch_size=8)))  # doctest: +NORMALIZE_WHITESPACE
        stnviz diagnose on 8 samples: 1 warning: zoom_out on 'stn' (1.44)
        severity  check     key  value  threshold
        warning   zoom_out  stn  1.44   1.2
        <BLANKLINE>
        warning zoom_out on 'stn': too large
          fix: shrink it
    """
    import textwrap

    ordered = sorted(d.findings, key=lambda f: -f.rank)
    rows = [("severity", "check", "key", "value", "threshold")]
    rows += [(f.severity, f.check, f.key, _number(f.value), _number(f.threshold)) for f in ordered]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"stnviz diagnose on {d.batch_size} samples: {d.summary()}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    for f in d.problems:
        lines.append("")
        lines += textwrap.wrap(f"{f.severity} {f.check} on {f.key!r}: {f.message}", width)
        lines += textwrap.wrap(f"fix: {f.fix}", width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


def _plain(v):
    """JSON has no NaN: ``None`` for a figure that was not measured."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def diagnosis_json(d: Diagnosis, **head) -> dict:
    """The diagnosis as plain JSON types: ``head`` (e.g. model and data names), ``worst``,
    ``summary``, the ``figures`` per key and every finding (``samples``: how many offend;
    ``null`` for a figure not measured).

    Example:
        >>> from stnviz.diagnose import Finding
        >>> out = diagnosis_json(Diagnosis([Finding("fold", "stn", "ok", float("nan"), 0.01, "not measured")]), model="m")
        >>> out["model"], out["worst"], out["findings"][0]["value"]
        ('m', 'ok', None)
    """
    findings = [{"check": f.check, "key": f.key, "severity": f.severity, "value": _plain(f.value),
                 "threshold": _plain(f.threshold), "message": f.message, "fix": f.fix, "samples": len(f.samples)}
                for f in sorted(d.findings, key=lambda f: -f.rank)]
    return {**head, "samples": d.batch_size, "worst": d.worst, "summary": d.summary(),
            "figures": _plain(d.figures), "findings": findings}
