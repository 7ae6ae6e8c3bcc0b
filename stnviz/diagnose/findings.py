"""What a diagnosis says: :class:`Finding` (one check on one transformer) and :class:`Diagnosis`
(all of them, with a table, an HTML view for notebooks and a figure of the offending samples)."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field

__all__ = ["Diagnosis", "Finding", "SEVERITIES"]

#: the severities, mildest first
SEVERITIES = ("ok", "warning", "error")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_COLOURS = {"ok": "#2e7d32", "warning": "#b26a00", "error": "#c62828"}
FRAME_COLUMNS = ["check", "key", "severity", "value", "threshold", "message", "fix", "samples"]


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one transformer (one capture record).

    Attributes:
        check: the check's stable id (``"zoom_out"`` ...; see :data:`stnviz.diagnose.CHECKS`).
        key: the record's key (``"transformer"``, ``"stn:grid_sample"``).
        severity: ``"ok"``, ``"warning"`` or ``"error"``.
        value: the measured figure (``nan`` when the check does not apply).
        threshold: the figure ``value`` was held against (the error threshold for an error, else
            the warning one).
        message: what it means, one sentence with the numbers.
        fix: the usual remedy, concrete (which argument, which line of a typical STN).
        samples: indices of the offending samples in the batch (for :meth:`Diagnosis.plot`).
        step: the training step a dynamic check (:class:`~stnviz.diagnose.DiagnoseCallback`) found it at.

    Example:
        >>> f = Finding("identity", "stn", "warning", 0.01, 0.25, "the grid is 0.010 px from the identity")
        >>> f.rank, f.severity
        (1, 'warning')
    """

    check: str
    key: str
    severity: str
    value: float
    threshold: float
    message: str
    fix: str = ""
    samples: tuple = ()
    step: int | None = None

    def __post_init__(self):
        if self.severity not in _RANK:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        """0 for ok, 1 for a warning, 2 for an error."""
        return _RANK[self.severity]


@dataclass
class Diagnosis:
    """The findings of :func:`stnviz.diagnose.diagnose` on one batch, every check for every record.

    ``findings`` keep the order of the records and of the checks table; :attr:`problems` lists the
    warnings and errors worst first. ``figures`` hold the batch's headline numbers per key (the
    sampled area, the share outside, accuracies ...), which a healthy model's summary shows.

    Example:
        >>> d = Diagnosis([Finding("zoom_out", "stn", "warning", 1.44, 1.2, "the region is 1.44x the input")])
        >>> d.worst, d.ok, [f.check for f in d.problems]
        ('warning', False, ['zoom_out'])
        >>> d
        Diagnosis(1 warning: zoom_out on 'stn' (1.44))
    """

    findings: list[Finding]
    records: dict = field(default_factory=dict, repr=False)
    figures: dict = field(default_factory=dict)
    batch_size: int = 0

    @property
    def worst(self) -> str:
        """The worst severity found: ``"ok"``, ``"warning"`` or ``"error"``."""
        return max((f.severity for f in self.findings), key=_RANK.__getitem__, default="ok")

    @property
    def ok(self) -> bool:
        """No warning and no error."""
        return self.worst == "ok"

    @property
    def problems(self) -> list[Finding]:
        """The warnings and errors, worst first (ties in the order found)."""
        return sorted((f for f in self.findings if f.severity != "ok"), key=lambda f: -f.rank)

    def of(self, check: str, key: str | None = None) -> list[Finding]:
        """The findings of ``check`` (on ``key`` if given); a ``ValueError`` names the checks run."""
        out = [f for f in self.findings if f.check == check and (key is None or f.key == key)]
        if not out:
            raise ValueError(f"no finding for check {check!r}" + (f" on key {key!r}" if key else "")
                             + f"; checks run: {sorted({f.check for f in self.findings})}, "
                               f"keys: {sorted({f.key for f in self.findings})}")
        return out

    def to_frame(self):
        """A pandas table, one row per finding, worst first, with the columns
        ``check, key, severity, value, threshold, message, fix, samples`` (``samples``: how
        many samples offend)."""
        import pandas as pd

        ordered = sorted(self.findings, key=lambda f: -f.rank)
        rows = [{**dataclasses.asdict(f), "samples": len(f.samples)} for f in ordered]
        return pd.DataFrame(rows, columns=FRAME_COLUMNS)

    def summary(self) -> str:
        """One line: the problems (worst first), or "no problem found" with the headline figures."""
        problems = self.problems
        if not problems:
            return "no problem found: " + "; ".join(f"{k}: {_figures_text(v)}" for k, v in self.figures.items())
        counts = [f"{n} {s}{'s' if n > 1 else ''}" for s in ("error", "warning")
                  if (n := sum(f.severity == s for f in problems))]
        return ", ".join(counts) + ": " + "; ".join(f"{f.check} on {f.key!r} ({_number(f.value)})" for f in problems)

    def __repr__(self) -> str:
        return f"Diagnosis({self.summary()})"

    def _repr_html_(self) -> str:
        problems = self.problems
        healthy = [f for f in self.findings if f.severity == "ok"]
        head = (f"<b>stnviz.diagnose</b> on {self.batch_size} samples: "
                + (f"<span style='color:{_COLOURS['ok']}'>no problem found</span>" if not problems
                   else html.escape(self.summary().split(":")[0])))
        parts = [f"<div class='stnviz-diagnosis'><p>{head}</p>"]
        if not problems and self.figures:
            parts.append("<ul>" + "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(_figures_text(v))}</li>"
                                          for k, v in self.figures.items()) + "</ul>")
        if problems:
            parts.append(_table(problems, fix=True))
        if healthy:
            parts.append(f"<details><summary>{len(healthy)} healthy checks</summary>{_table(healthy, fix=False)}</details>")
        parts.append("</div>")
        return "".join(parts)

    def html_list(self, key: str | None = None) -> str:
        """A compact HTML list of the problems (on ``key`` if given), worst first, each with its
        figure and message; or one line saying no problem was found (the inspector's view).

        Example:
            >>> d = Diagnosis([Finding("zoom_out", "stn", "warning", 1.44, 1.2, "the region is 1.44x the input")])
            >>> d.html_list("stn").count("<li>"), "no problem" in d.html_list("other")
            (1, True)
        """
        problems = [f for f in self.problems if key is None or f.key == key]
        where = f" on <code>{html.escape(key)}</code>" if key is not None else ""
        if not problems:
            return f"<span style='color:{_COLOURS['ok']}'>stnviz.diagnose: no problem found{where}</span>"
        items = "".join(f"<li><b style='color:{_COLOURS[f.severity]}'>{f.severity}</b> <code>{f.check}</code> "
                        f"({_number(f.value)}): {html.escape(f.message)}</li>" for f in problems)
        return f"<b>stnviz.diagnose</b>{where}:<ul class='stnviz-findings'>{items}</ul>"

    def plot(self, check: str, key: str | None = None, n: int = 6):
        """A figure of up to ``n`` offending samples of ``check`` (on ``key``; default the worst
        such finding): each row the input with its sampled region | the output, titled with the
        finding's message. A ``ValueError`` when the check offends no sample."""
        from ..render import plot_batch

        found = sorted(self.of(check, key), key=lambda f: -f.rank)
        finding = next((f for f in found if f.samples and f.key in self.records), None)
        if finding is None:
            raise ValueError(f"check {check!r} found no offending sample to show "
                             f"(severities: {[f.severity for f in found]}); plot shows the samples a check flags")
        record = self.records[finding.key]
        pick = list(finding.samples[:n])
        sub = dataclasses.replace(record, input=record.input[pick], grid=record.grid[pick], output=record.output[pick],
                                  params=None if record.params is None else record.params[pick])
        title = f"{finding.severity} {finding.check} on {finding.key!r}: {finding.message}"
        return plot_batch(sub, n=len(pick), title="\n".join(_wrap(title, 100)))


def _number(v) -> str:
    if isinstance(v, float) and v != v:
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _figures_text(fig: dict) -> str:
    return ", ".join(f"{name} {_number(v)}" for name, v in fig.items())


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _table(findings: list[Finding], fix: bool) -> str:
    head = "<tr><th>severity</th><th>check</th><th>key</th><th>value</th><th>threshold</th><th>message</th>"
    head += "<th>fix</th></tr>" if fix else "</tr>"
    rows = []
    for f in findings:
        cells = [f"<td style='color:{_COLOURS[f.severity]}'><b>{f.severity}</b></td>", f"<td><code>{f.check}</code></td>",
                 f"<td><code>{html.escape(f.key)}</code></td>", f"<td>{_number(f.value)}</td>",
                 f"<td>{_number(f.threshold)}</td>", f"<td>{html.escape(f.message)}</td>"]
        if fix:
            cells.append(f"<td>{html.escape(f.fix)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"
