"""Diagnose: one ``stnviz.diagnose`` call on a batch of 256 for the shipped tutorial network.

``stnviz.diagnose(model, images, labels)`` with ``stn_tutorial.mnist`` on the first 256 shipped
MNIST digits, on the CPU with torch's threads: the capture forward, the measures and the twelve
record checks, and the ``no_effect`` ablation (a second forward with the transformer's grid swapped
for the identity). Each round times one whole call; the call without labels (no ablation) runs
in the same rounds, in a shuffled order, so background load hits both alike. The table gives the
median, p25-p75 and fastest call in seconds. Goal (issue 21): under 2 s including the ablation.
The gtsrb row is the heaviest shipped case (two transformers, 3 x 32 x 32, 300 frames) for scale.
"""

from __future__ import annotations

import random
import statistics
import time

import torch

import stnviz
from stnviz.data import sample

NAME = "diagnose"
GOAL_S = 2.0


def _time(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _row(name: str, times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"case": name, "median s": round(statistics.median(times), 3), "p25 s": round(q[0], 3),
            "p75 s": round(q[2], 3), "min s": round(min(times), 3), "calls": len(times)}


def run(quick: bool) -> dict:
    rounds = 5 if quick else 20
    model = stnviz.load_pretrained("stn_tutorial.mnist", device="cpu")
    digits = sample("mnist").get(torch.arange(256))
    signs = sample("gtsrb").get(torch.arange(0, 600, 2))
    gtsrb = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
    cases = {
        "stn_tutorial.mnist, 256, with labels (incl. no_effect)": lambda: stnviz.diagnose(model, digits.images, digits.labels),
        "stn_tutorial.mnist, 256, no labels": lambda: stnviz.diagnose(model, digits.images),
        "stn_gtsrb.gtsrb, 300, with labels": lambda: stnviz.diagnose(gtsrb, signs.images, signs.labels),
    }
    for fn in cases.values():  # warm up
        fn()
    times = {k: [] for k in cases}
    rng = random.Random(0)
    for _ in range(rounds):
        order = list(cases)
        rng.shuffle(order)
        for k in order:
            times[k] += _time(cases[k], 1)
    table = [_row(k, v) for k, v in times.items()]
    goal_key = next(iter(cases))
    value = statistics.median(times[goal_key])
    goals = [{"goal": f"diagnose on 256 tutorial digits incl. the no_effect ablation < {GOAL_S} s (median)",
              "value": value, "target": f"< {GOAL_S} s", "met": value < GOAL_S}]
    notes = __doc__.split("\n\n", 1)[1].strip() + (" QUICK: 5 rounds." if quick else "")
    return {"name": NAME, "table": table, "goals": goals, "notes": notes}
