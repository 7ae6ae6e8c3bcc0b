"""The cost of stnviz's Lightning callback on a training run.

A Lightning Trainer trains the PyTorch tutorial's STN classifier (``stn_tutorial``) on the shipped
1,000 MNIST digits (batch 64, SGD, CPU, a TensorBoardLogger) with and without
``STNCallback(probe of 8 images, every_n_steps=50)``, interleaved A/B pairs; the time counted runs
from ``on_train_start`` to the end of ``trainer.fit`` (so it holds the callback's first record and
its end: last record, video and GIF file), not the Trainer's setup. Goal (issue 23): <= 3 % extra
time per training step, in CPU time of the process with one torch thread (wall time on a shared
2-core machine varies by more than the effect; both are reported). One record (probe forward
under capture, the figures, the picture, the scalars and the image written to TensorBoard) and the
end (video summary + GIF file) are also timed alone: what the run should show, whatever the load.
All data are shipped with the package: no download.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

NAME = "lightning"
EVERY = 50


def _module():
    import lightning.pytorch as pl

    from stnviz import get_model

    class Digits(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = get_model("stn_tutorial", device="cpu")

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    return Digits()


def _clock():
    import lightning.pytorch as pl

    class Clock(pl.Callback):
        wall = cpu = 0.0

        def on_train_start(self, trainer, pl_module):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

    return Clock()


def _train_seconds(with_callback: bool, loader, probe, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all its threads) from ``on_train_start`` to the end of
    ``trainer.fit``."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from stnviz.integrations.lightning import STNCallback

    torch.manual_seed(0)
    clock = _clock()  # first: its on_train_start runs before the callback's first record
    callbacks = [clock] + ([STNCallback(*probe, every_n_steps=EVERY)] if with_callback else [])
    with tempfile.TemporaryDirectory() as logs:
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=TensorBoardLogger(logs),
                             callbacks=callbacks, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, log_every_n_steps=EVERY)
        trainer.fit(_module(), loader)
        return time.perf_counter() - clock.wall, time.process_time() - clock.cpu


def _parts_ms(probe, records: int) -> tuple[float, float]:
    """Median CPU ms of one record + log to TensorBoard, and of the end (the video summary and
    the GIF file from the same frames), for a recorder holding ``records`` snapshots."""
    from stnviz import get_model
    from stnviz.animate import ProgressRecorder, save_gif
    from stnviz.integrations.loggers import TensorBoard, log_progress, log_progress_video

    model = get_model("stn_tutorial", device="cpu")
    rec = ProgressRecorder(*probe, every=EVERY)
    record, end = [], []
    with tempfile.TemporaryDirectory() as logs:
        tb = TensorBoard(logs)
        for step in range(records):
            t0 = time.process_time()
            rec.record(model, step * EVERY)
            log_progress(rec, [tb], step * EVERY)
            record.append(time.process_time() - t0)
        for _ in range(3):
            t0 = time.process_time()
            clip = log_progress_video(rec, [tb], records * EVERY)
            save_gif(list(clip.transpose(0, 2, 3, 1)), f"{logs}/progress.gif")
            end.append(time.process_time() - t0)
        tb.close()
    return 1000 * statistics.median(record[1:]), 1000 * statistics.median(end)


def run(quick: bool = False) -> dict:
    from stnviz.data import sample

    torch.set_num_threads(1)  # CPU time then measures the work, not threads waiting for a shared core
    digits = sample("mnist").get(torch.arange(1000))
    probe = (digits.images[:8], digits.labels[:8])
    loader = torch.utils.data.DataLoader(list(zip(digits.images, digits.labels)), batch_size=64, shuffle=True)
    steps = 200 if quick else 800
    pairs = 1 if quick else 5
    records = steps // EVERY + 1  # at step 0 and every EVERY steps (the end is one of them)

    _train_seconds(False, loader, probe, 20)  # warm-up: imports, first kernels
    _train_seconds(True, loader, probe, 20)
    runs = {False: [], True: []}
    for _ in range(pairs):
        for with_callback in (False, True):
            runs[with_callback].append(_train_seconds(with_callback, loader, probe, steps))
    cpu_ratios = [w[1] / b[1] for b, w in zip(runs[False], runs[True])]
    wall_ratios = [w[0] / b[0] for b, w in zip(runs[False], runs[True])]
    overhead = statistics.median(cpu_ratios) - 1
    record_ms, end_ms = _parts_ms(probe, records)
    step_ms = 1000 * statistics.median(r[1] for r in runs[False]) / steps
    expected = (records * record_ms + end_ms) / (steps * step_ms)

    def row(measure, times):
        wall, cpu = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
        return {"measure": measure, "wall s": round(wall, 3), "CPU s": round(cpu, 3),
                "CPU ms/step": round(1000 * cpu / steps, 3)}

    rows = [
        row(f"Lightning fit, {steps} steps of 64, TensorBoardLogger", runs[False]),
        row(f"+ STNCallback(8 images, every_n_steps={EVERY}): {records} records, video and GIF", runs[True]),
        {"measure": "one record + its log to TensorBoard, alone", "CPU s": round(record_ms / 1000, 4)},
        {"measure": f"the end alone: video summary + GIF file of {records} snapshots", "CPU s": round(end_ms / 1000, 4)},
    ]
    goals = [{"goal": f"STNCallback's overhead on Lightning training CPU time (median of {pairs} interleaved pairs)",
              "value": round(100 * overhead, 2), "target": "<= 3 %", "met": overhead <= 0.03}]
    warnings = []
    if abs(overhead - expected) > 0.02:
        warnings.append(f"measured overhead {100 * overhead:.1f} % is far from the {100 * expected:.1f} % its timed "
                        "parts add up to: the run was probably disturbed by other load")
    return {"name": NAME, "table": rows, "goals": goals, "warnings": warnings,
            "notes": (f"torch threads 1; CPU; overhead from CPU time (this process, all threads) because the "
                      f"machine is shared: per-pair CPU ratios {[round(r, 4) for r in cpu_ratios]}, wall ratios "
                      f"{[round(r, 4) for r in wall_ratios]}; the parts timed alone add up to {100 * expected:.2f} % "
                      f"({records} records of {record_ms:.1f} ms and an end of {end_ms:.0f} ms over {steps} steps "
                      f"of {step_ms:.2f} ms).")}
