"""Animation and stability-analysis speed, and the cost of recording during training.

1. Export: a 100-snapshot, 8-image probe recording (``ProgressRecorder`` on ``stn_tutorial``),
   written as GIF and as MP4: frames per second of compose + encode + write.
2. Stability analysis: ``stnviz.analysis.run_sequence`` over the shipped GTSRB tracks with
   ``stn_gtsrb`` (the shipped checkpoint when present, else an untrained one): frames per second.
3. Recorder overhead: ``fit`` of ``stn_tutorial`` on the shipped 1,000 MNIST digits with and
   without a ``ProgressRecorder(every=50)``, interleaved A/B/A/B; goal <= 3% extra time.
All data are shipped with the package, so this benchmark needs no download.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

NAME = "animate"


def _recorder_with(n_snapshots: int, probe):
    from stnviz import get_model
    from stnviz.animate import ProgressRecorder

    model = get_model("stn_tutorial", device="cpu").eval()
    rec = ProgressRecorder(*probe, every=1, max_snapshots=n_snapshots + 1)
    gen = torch.Generator().manual_seed(0)
    for step in range(n_snapshots):  # a drifting transform, as during training
        theta = torch.tensor([1.0, 0, 0, 0, 1.0, 0]) + 0.02 * step * torch.randn(6, generator=gen) / 10
        model.transformers[0].set_constant_params(theta)
        rec.record(model, step, step / 10)
    return rec


def _fit_time(with_recorder: bool, data, probe, epochs: int) -> float:
    from stnviz import get_model
    from stnviz.animate import ProgressRecorder
    from stnviz.train import fit

    torch.manual_seed(0)
    model = get_model("stn_tutorial", device="cpu")
    callbacks = [ProgressRecorder(*probe, every=50)] if with_recorder else []
    t0 = time.perf_counter()
    fit(model, data, None, epochs=epochs, batch_size=64, lr=0.05, device="cpu", progress=False, callbacks=callbacks)
    return time.perf_counter() - t0


def run(quick: bool = False) -> dict:
    from stnviz.animate import save_gif, save_mp4
    from stnviz.data import sample, sample_tracks
    from stnviz.hub import get_model, list_models

    rows, goals = [], []
    mnist = sample("mnist")
    probe_batch = mnist.get(torch.arange(8))
    probe = (probe_batch.images, probe_batch.labels)

    # 1. exports
    n = 20 if quick else 100
    rec = _recorder_with(n, probe)
    with tempfile.TemporaryDirectory() as d:
        for fmt, fn in (("gif", save_gif), ("mp4", save_mp4)):
            times = []
            for _ in range(1 if quick else 3):
                t0 = time.perf_counter()
                fn(rec.frames(), Path(d) / f"p.{fmt}", fps=10)
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            size = (Path(d) / f"p.{fmt}").stat().st_size
            rows.append({"measure": f"{fmt.upper()} export ({n} snapshots x 8 images, compose + encode)",
                         "seconds": round(t, 3), "frames/s": round(n / t, 1), "file KiB": round(size / 1024)})

    # 2. stability analysis
    from stnviz.analysis import run_sequence

    name = "stn_gtsrb.gtsrb" if "stn_gtsrb.gtsrb" in list_models(pretrained=True) else "stn_gtsrb"
    model = get_model(name, device="cpu").eval()
    tracks = sample_tracks()[: 4 if quick else 20]
    run_sequence(model, tracks[0])  # warm-up
    t0 = time.perf_counter()
    frames = 0
    for tr in tracks:
        frames += len(run_sequence(model, tr).table)
    t = time.perf_counter() - t0
    rows.append({"measure": f"stability analysis ({name}, {len(tracks)} tracks)", "seconds": round(t, 3),
                 "frames/s": round(frames / t, 1), "file KiB": None})

    # 3. recorder overhead: interleaved pairs, the ratio of each pair, the median ratio
    epochs = 4 if quick else 40
    data = mnist
    pairs = 1 if quick else 5
    base, with_rec, ratios = [], [], []
    for _ in range(pairs):
        b = _fit_time(False, data, probe, epochs)
        w = _fit_time(True, data, probe, epochs)
        base.append(b)
        with_rec.append(w)
        ratios.append(w / b)
    steps = epochs * data.num_batches(64)
    overhead = statistics.median(ratios) - 1
    rows.append({"measure": f"fit without recorder ({steps} steps)", "seconds": round(statistics.median(base), 3),
                 "frames/s": None, "file KiB": None})
    rows.append({"measure": f"fit with ProgressRecorder(every=50), {steps // 50 + 1} snapshots",
                 "seconds": round(statistics.median(with_rec), 3), "frames/s": None, "file KiB": None})
    goals.append({"goal": f"recorder overhead on training time (median of {pairs} interleaved pairs)",
                  "value": round(100 * overhead, 2), "target": "<= 3 %", "met": overhead <= 0.03})
    return {"name": NAME, "table": rows, "goals": goals,
            "notes": (f"torch threads {torch.get_num_threads()}; exports: medians of {1 if quick else 3} runs; "
                      f"overhead: per-pair ratios {[round(r, 4) for r in ratios]}; CPU.")}
