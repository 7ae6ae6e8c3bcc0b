"""Widget responsiveness, in the kernel: the time from a control's value set to the views updated.

Observers run synchronously in the kernel when a widget's ``value`` is set, so the time of
``slider.value = v`` is the time until the views hold new encoded images; what remains is the
websocket hop to the browser (the explorer's page: ``bench_explorer_browser``).

* ``ThetaExplorer``: the kernel's cost of one drag step (the page warps the image itself and sends
  ``params``: the kernel's state takes them; with a model, also the model's top 3 for the region)
  and of a picker change (the new image sent as RGBA), at 1x28x28 (shipped MNIST digits) and
  3x224x224. The page's own latency is ``bench_explorer_browser``.
* ``STNInspector``: a picker change at 3x224x224 (``stn_gtsrb`` built for 3x224x224: an image
  transformer and a feature-map transformer, untrained).
* ``StabilityViewer``: a track change both cold (the track's sequence run, plots and 30 frames
  rendered and encoded on the spot: ``prefetch=False``) and as a user meets it (``prefetch=True``:
  the other tracks were prepared in the background while the first one was looked at). A scrub
  or play costs the kernel nothing: the page has every frame (``tests/test_browser_players.py``
  times the page and checks no frame is rendered in the kernel).

* ``STNInspector`` memory (issue 20 item 7): the peak RSS an inspector on 128 images at 3x224x224
  adds (``stn_gtsrb`` built for 224 px: a 224-px image transformer and a feature-map transformer),
  side by side with what the same records cost kept whole (one ``collect`` of the 128 images, as
  the inspector did before); each measured in a fresh Python process: peak RSS (``VmHWM``, reset
  just before) after building it and picking 10 images, less the RSS before (model and images made, and the
  same path run once on 2 images first, so the code it pages in is not counted).

Goals (issues 4 and 11): explorer update <= 10 ms at 1x28x28 and <= 30 ms at 3x224x224; picker
change <= 30 ms at 3x224x224 (explorer, inspector); track change <= 200 ms.
Issue 20: the inspector on 128 images at 224 px adds < 200 MB.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time

import torch

NAME = "widgets"


def _images(shape, n: int = 8):
    if shape == (1, 28, 28):
        from stnviz.data import sample

        return sample("mnist").get(torch.arange(n)).images
    # a smooth colour photo stand-in: gradients and rings, a different phase per image (random
    # noise would be unrepresentative for any encoder)
    c, h, w = shape
    y = torch.linspace(-1, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
    r = torch.sqrt(x * x + y * y)
    return torch.stack([torch.stack([0.5 + 0.5 * torch.sin(6 * r + k), 0.5 + 0.5 * x, 0.5 + 0.5 * y]) for k in range(n)])


def _time_sets(widget, view, values, warmup: int = 3) -> list[float]:
    """Set ``widget.value`` to each of ``values``; ms per set (after ``warmup``); each must change ``view``."""
    times = []
    for i, v in enumerate(values):
        before = view.value
        t0 = time.perf_counter()
        widget.value = v
        dt = time.perf_counter() - t0
        if view.value == before:
            raise RuntimeError(f"value {v} did not update the view")
        if i >= warmup:
            times.append(dt * 1000)
    return times


class _Trait:
    """An attribute as the ``value`` :func:`_time_sets` sets or watches (``params_list``: a
    :class:`~stnviz.widgets.ThetaExplorer`'s parameters as a list)."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    @property
    def value(self):
        return self.obj.params.tolist() if self.name == "params_list" else getattr(self.obj, self.name)

    @value.setter
    def value(self, v):
        setattr(self.obj, self.name, v)


class _DragAndStop(_Trait):
    """An explorer page's drag step followed by the hand stopping: ``params``, then ``settled``."""

    @_Trait.value.setter
    def value(self, v):
        self.obj.params = v
        self.obj.settled += 1


class _Sent:
    """What a :class:`stnviz.widgets.FramePlayer` was last sent (its frames), as the ``value``
    :func:`_time_sets` watches."""

    def __init__(self, player):
        self.player = player

    @property
    def value(self):
        return self.player.frames


def _row(rows, what, image, times, **extra):
    med = statistics.median(times)
    rows.append({"widget": what.split(":")[0], "event": what.split(": ", 1)[1], "image": image, **extra,
                 "median ms": round(med, 2), "p90 ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
                 "max ms": round(max(times), 2), "n": len(times)})
    return med


_MEMORY_PROBE = r"""
import json, sys, torch
sys.path.insert(0, {bench!r})
from _common import reset_peak_rss, status_kb
from bench_widgets import _images
from stnviz import get_model
from stnviz.capture import collect
from stnviz.widgets import STNInspector

torch.manual_seed(0)
model = get_model("stn_gtsrb", num_classes=43, input_size=(3, 224, 224)).eval()
images = _images((3, 224, 224), 128)
# the process's one-time costs (threads, code paged in from libtorch, ipywidgets, pandas, Pillow)
# are not the images': the same path runs once on 2 images first
STNInspector(model, images[:2]) if {how!r} == "inspector" else collect(model, images[:2])
reset = reset_peak_rss()
before = status_kb("VmRSS") / 1024
if {how!r} == "inspector":
    ins = STNInspector(model, images)
    for i in range(0, 128, 13):
        ins.picker.value = i
    kept = "shapes, parameters, each image's pictures as shown (uint8)"
else:
    col = collect(model, images, batch_size=256)
    kept = f"{{len(col.records)}} records of 128 images"
peak = status_kb("VmHWM") / 1024  # never ru_maxrss: it carries the parent's RSS at the fork
print(json.dumps({{"before": before, "peak": peak, "after": status_kb("VmRSS") / 1024, "kept": kept, "reset": reset}}))
"""


def _memory(how: str) -> dict:
    """Peak RSS added by ``how`` ("inspector" or "collect") on 128 images at 3x224x224, in a fresh process."""
    from pathlib import Path

    code = _MEMORY_PROBE.format(bench=str(Path(__file__).parent), how=how)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict:
    from stnviz import get_model
    from stnviz.data import sample_tracks
    from stnviz.widgets import STNInspector, StabilityViewer, ThetaExplorer

    n = 30 if quick else 120
    rows, goals = [], []

    def goal(text, value, target):
        goals.append({"goal": text, "value": round(value, 2), "target": f"<= {target}", "met": value <= target})

    for shape, target in (((1, 28, 28), 10.0), ((3, 224, 224), 30.0)):
        name = "x".join(map(str, shape))
        ex = ThetaExplorer(_images(shape))  # the page warps; the kernel hears params (bench_explorer_browser)
        steps = [[math.cos(math.radians(a)), -math.sin(math.radians(a)), 0.0, math.sin(math.radians(a)),
                  math.cos(math.radians(a)), 0.0] for a in (((i * 7) % 340) - 170 + 0.5 for i in range(n))]
        med = _row(rows, "ThetaExplorer: a drag step (params from the page)", name,
                   _time_sets(_Trait(ex.view, "params"), _Trait(ex, "params_list"), steps))
        goal(f"ThetaExplorer update, {name}, median ms", med, target)
        picks = [(i * 3 + 1) % 8 for i in range(n // 2)]
        picks = [p if p != q else (p + 1) % 8 for p, q in zip(picks, [0] + picks[:-1])]
        med = _row(rows, "ThetaExplorer: picker change (image sent)", name,
                   _time_sets(_Trait(ex.view, "index"), _Trait(ex.view, "image"), picks))
        if shape[1] == 224:
            goal("ThetaExplorer picker change, 3x224x224, median ms", med, 30.0)
            model = get_model("stn_gtsrb", num_classes=43, input_size=(3, 224, 224)).eval()
            ex = ThetaExplorer(_images(shape), model=model)
            _row(rows, "ThetaExplorer with a model: the hand stops (the model's top 3 for the region)", name,
                 _time_sets(_DragAndStop(ex.view, "params"), _Trait(ex, "prediction"), steps[: n // 4]))

    model = get_model("stn_gtsrb", num_classes=43, input_size=(3, 224, 224)).eval()
    ins = STNInspector(model, _images((3, 224, 224)))
    picks = [(i * 3 + 1) % 8 for i in range(n // 4)]
    picks = [p if p != q else (p + 1) % 8 for p, q in zip(picks, [0] + picks[:-1])]
    med = _row(rows, "STNInspector: picker change", "3x224x224", _time_sets(ins.picker, ins.input_view, picks))
    goal("STNInspector picker change, 3x224x224, median ms", med, 30.0)

    for how in ("collect", "inspector"):
        # the median of 3 fresh processes: one process's peak moves by +-10 MB
        runs = sorted((_memory(how) for _ in range(3)), key=lambda r: r["peak"] - r["before"])
        m = runs[1]
        added = m["peak"] - m["before"]
        rows.append({"widget": "STNInspector" if how == "inspector" else "collect (records kept whole)",
                     "event": "memory: 128 images, peak RSS added (MB)", "image": "3x224x224",
                     "median ms": None, "peak MB added": round(added, 1), "held after MB": round(m["after"] - m["before"], 1),
                     "kept": m["kept"] + f" (median of 3 processes: {', '.join(str(round(r['peak'] - r['before'])) for r in runs)} MB)"})
        if how == "inspector":
            goal("STNInspector on 128 images at 3x224x224, peak RSS added, MB", added, 200.0)

    gtsrb = get_model("stn_gtsrb").eval()
    tracks = sample_tracks()[: 6 if quick else 12]
    cold = StabilityViewer(gtsrb, tracks, prefetch=False)
    order = list(range(1, len(tracks)))
    med_cold = _row(rows, "StabilityViewer: track change, cold (run, plots and 30 frames on the spot)",
                    "3x32x32 frames", _time_sets(cold.track, _Sent(cold.view), order, warmup=1))
    warm = StabilityViewer(gtsrb, tracks, prefetch=True)
    for f in list(warm._futures.values()):  # the user looks at the first track meanwhile
        f.result()
    med = _row(rows, "StabilityViewer: track change, prefetched", "3x32x32 frames",
               _time_sets(warm.track, _Sent(warm.view), order, warmup=1))
    goal("StabilityViewer track change (prefetched), median ms", med, 200.0)
    goal("StabilityViewer track change (cold), median ms", med_cold, 200.0)
    return {
        "name": NAME,
        "table": rows,
        "goals": goals,
        "notes": (
            "In-kernel, no browser: each row times `widget.value = v` until the view's bytes changed. "
            f"torch threads: {torch.get_num_threads()}. Grey images are PNG-encoded, colour ones JPEG. "
            "A cold track change is dominated by `analysis.run_sequence` (the model over 30 frames plus "
            "the fixed-transform baseline) and one matplotlib draw of the plots; the viewer hides both "
            "by running the other tracks in a background thread while the first is shown."
        ),
    }
