"""Widget responsiveness: in-kernel time from a slider value set to the image bytes updated.

``ThetaExplorer`` observers run synchronously in the kernel when a slider's ``value`` is set, so
the time of ``slider.value = v`` is the time until both views (input with the sampled region,
output) hold new encoded images; what remains is the websocket hop to the browser. Measured for
the decomposed rotation slider (compose -> six entry sliders synced -> grid -> warp -> overlay ->
encode) and for a raw theta entry, on 1x28x28 (shipped MNIST digits) and 3x224x224 images.
Goals (issue 4): median <= 10 ms at 1x28x28 and <= 30 ms at 3x224x224, this 2-core CPU.
"""

from __future__ import annotations

import statistics
import time

import torch

NAME = "widgets"
GOALS = {(1, 28, 28): 10.0, (3, 224, 224): 30.0}


def _images(shape):
    if shape == (1, 28, 28):
        from stnviz.data import sample

        return sample("mnist").get(torch.arange(8)).images
    # a smooth colour photo stand-in: gradients and rings (random noise would be unrepresentative
    # for any encoder)
    c, h, w = shape
    y = torch.linspace(-1, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
    r = torch.sqrt(x * x + y * y)
    base = torch.stack([0.5 + 0.5 * torch.sin(6 * r), 0.5 + 0.5 * x, 0.5 + 0.5 * y])
    return base.unsqueeze(0).expand(4, c, h, w).contiguous()


def _measure(explorer, slider, values, warmup: int):
    times = []
    for i, v in enumerate(values):
        before = explorer.output_view.value
        t0 = time.perf_counter()
        slider.value = v
        dt = time.perf_counter() - t0
        if explorer.output_view.value == before:
            raise RuntimeError(f"slider value {v} did not update the output image")
        if i >= warmup:
            times.append(dt * 1000)
    return times


def run(quick: bool = False) -> dict:
    from stnviz.widgets import ThetaExplorer

    n = 30 if quick else 200
    rows, goals = [], []
    for shape, target in GOALS.items():
        ex = ThetaExplorer(_images(shape))
        rot = [((i * 7) % 340) - 170 + 0.5 for i in range(n)]
        entry = [0.5 + 0.5 * ((i * 13) % 97) / 97 for i in range(n)]
        for label, slider, values in (("rotation (decomposed)", ex.parts["rotation"], rot),
                                      ("theta a11 (entry)", ex.entries[0], entry)):
            t = _measure(ex, slider, values, warmup=5)
            med = statistics.median(t)
            rows.append({"image": "x".join(map(str, shape)), "slider": label, "format": ex.format,
                         "median ms": round(med, 2), "p90 ms": round(sorted(t)[int(0.9 * len(t))], 2),
                         "max ms": round(max(t), 2), "updates": len(t)})
            if label.startswith("rotation"):
                goals.append({"goal": f"ThetaExplorer update, {'x'.join(map(str, shape))}, median ms",
                              "value": round(med, 2), "target": f"<= {target}", "met": med <= target})
    return {
        "name": NAME,
        "table": rows,
        "goals": goals,
        "notes": (
            "In-kernel, no browser: each row times `slider.value = v` until the output view's bytes changed. "
            f"torch threads: {torch.get_num_threads()}. Grey images are PNG-encoded, colour ones JPEG "
            "(PNG of a 336x336 colour canvas costs 10-25 ms alone)."
        ),
    }
