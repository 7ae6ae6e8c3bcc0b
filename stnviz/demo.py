"""``make demo``: the headless main job, on the data shipped with the package, no download.

Writes to ``out/`` and prints each path:

* ``transforms.png``: every transform family applied to drawn glyphs, with its sampled region;
* ``overlays_mnist_rts.png`` / ``overlays_mnist_rts_upright.png`` / ``overlays_gtsrb.png``: the
  shipped ST models on real distorted digits (``stn_cnn.mnist_rts``, and
  ``stn_cnn.mnist_rts_upright`` whose transformer turns them upright) and on real traffic signs
  (``stn_gtsrb.gtsrb_loc``, whose transformer finds the sign): input with the sampled region |
  transformer output | theta;
* ``training_progress.gif`` / ``.mp4`` / ``training_contact_sheet.png``: a short live run
  (:data:`ATTENTION_RECIPE`, about 45 s on one CPU core): an attention transformer learning, from
  the labels alone, to close in on RTS digits; ``summary.md`` ends with :func:`stnviz.diagnose`'s
  verdict on it;
* ``stability_track.png`` and ``stability_track.gif``: one GTSRB track, theta and change per
  frame, and the side-by-side post-training view;
* ``stability_summary.png`` / ``.csv``: all shipped tracks, the ST model against the identity;
* ``summary.md``: the shipped checkpoints, their recorded test metrics and their scores here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from . import geometry
from ._io import atomic_write
from .data import draw_glyphs
from .device import resolve_device
from .models import SpatialTransformer
from .render import draw_image, draw_outline
from .train.config import TrainConfig

__all__ = ["ATTENTION_RECIPE", "TrainingRecipe", "demo_transforms", "families_figure", "region_figures", "run_demo"]


def demo_transforms() -> list[tuple[str, dict, torch.Tensor]]:
    """``(family, transformer kwargs, flat parameters)`` for a showcase of every family."""
    theta = geometry.compose_affine(
        rotation=torch.tensor([math.radians(25.0)]), scale_x=0.8, scale_y=0.7, shear=0.25, tx=0.1, ty=-0.05
    )
    tps = geometry.identity_params("tps", control_points=16).reshape(16, 2)
    tps[5] += torch.tensor([0.25, 0.2])  # pull two inner control points: a local, curved warp
    tps[10] += torch.tensor([-0.2, -0.25])
    return [
        ("affine", {}, theta.reshape(-1)),
        ("attention", {}, torch.tensor([0.55, -0.2, -0.2])),
        ("restricted", {"components": ("rotation", "scale", "translation")}, torch.tensor([-0.6, 0.9, 0.1, 0.0])),
        ("translation", {}, torch.tensor([0.3, 0.25])),
        ("projective", {}, torch.tensor([0.9, 0.1, 0.0, 0.0, 0.8, 0.0, 0.35, 0.2])),
        ("tps", {"control_points": 16}, tps.reshape(-1)),
    ]


class _TinyLocalization(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, 8), nn.ReLU())


def _savefig(fig, path: Path, dpi: int = 80) -> Path:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return path


def families_figure(device, size: int = 64):
    """Every transform family on three glyphs: input + sampled region | output."""
    import matplotlib.pyplot as plt

    images = draw_glyphs(3, (size, size), channels=3, device=device)
    rows = demo_transforms()
    fig, axes = plt.subplots(len(rows), 2 * len(images), figsize=(2.0 * 2 * len(images), 2.1 * len(rows)))
    for r, (family, kwargs, params) in enumerate(rows):
        st = SpatialTransformer(_TinyLocalization(3), family=family, output_size=(size, size), **kwargs).to(device)
        st.set_constant_params(params)
        with torch.no_grad():
            warped = st(images)
            flat = params.to(device).expand(len(images), -1)
            outline = geometry.sampled_outline(
                flat.reshape(len(images), 2, 3) if family == "affine" else flat, family, (size, size),
                components=kwargs.get("components"),
            )
        for i in range(len(images)):
            draw_image(images[i], axes[r, 2 * i], title=f"{family}: input" if i == 0 else None)
            draw_outline(outline[i], axes[r, 2 * i])
            draw_image(warped[i], axes[r, 2 * i + 1], title="output" if i == 0 else None)
    fig.suptitle("each transform family: sampled region (red, dot = output's top-left) and output", fontsize=11)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class TrainingRecipe:
    """A short training run in one place: the model, the data and every setting of ``fit``.

    ``model(device)`` builds the untrained model (its weights drawn from ``seed``, the caller's
    random state untouched), ``train_set()`` the training data (new distortions every epoch),
    ``probe(n)`` ``n`` fixed test images to watch, ``config`` what :func:`stnviz.fit` takes::

        recipe = ATTENTION_RECIPE
        model = recipe.model("cpu")
        fit(model, recipe.train_set(), None, recipe.config, device="cpu", callbacks=[recorder])

    Example:
        >>> recipe = TrainingRecipe(config=TrainConfig(epochs=1))
        >>> model = recipe.model("cpu")
        >>> probe = recipe.probe(2)
        >>> tuple(probe.images.shape), tuple(model(probe.images).shape), model.transformer.output_size
        ((2, 1, 42, 42), (2, 10), (14, 14))
    """

    config: TrainConfig
    arch: str = "stn_cnn"
    model_kwargs: dict = field(default_factory=lambda: {"family": "attention", "output_size": (14, 14)})
    distortion: str = "rts"
    seed: int = 0

    def model(self, device) -> nn.Module:
        from .hub import get_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return get_model(self.arch, input_size=self.train_set().image_size, device=device, **self.model_kwargs)

    def train_set(self):
        from .data import DistortedMNIST, sample

        return DistortedMNIST(sample("mnist"), self.distortion, seed=1, fresh=True)

    def probe(self, n: int = 8, device=None):
        from .data import distorted_test_set, sample

        return distorted_test_set(sample("mnist"), self.distortion).get(torch.arange(n), device)


#: The live run of ``make demo`` and notebook 03: the paper's ST-CNN with an attention transformer
#: (isotropic scale + translation) that *downsamples* the 42x42 RTS canvas to 14x14, trained on the
#: 1,000 shipped digits with fresh distortions every epoch (40 epochs, 640 steps; ~45 s of one CPU
#: core). Why each choice (measured on 256 test canvases; area: the sampled region's share of the
#: input, diagnose's figure):
#:
#: * the 14x14 output: the whole canvas at 14x14 leaves a digit 5-8 px tall, so framing it pays and
#:   the region closes in (mean area 0.40, probe accuracy ~90%). At the canvas's own size (the
#:   tutorial net at 42x42, the old demo) nothing pays for zooming in: its regions grew to 1.16-1.2x
#:   the canvas (DiagnoseCallback: ``collapsing`` at step 160-240) with their outlines past the edges;
#: * the attention family: three numbers to learn, no shear or flip; the region stays a square;
#: * ``region_penalty=100``: without it ~10% of the regions end 2-3 px past an edge; with it 2%,
#:   by at most 1.3 px;
#: * ``lr=0.02, loc_lr=0.01``: at 0.03 / 0.02 the localisation net settled on one crop for every
#:   input (diagnose: ``input_independent``).
ATTENTION_RECIPE = TrainingRecipe(
    config=TrainConfig(epochs=40, batch_size=64, lr=0.02, loc_lr=0.01, weight_decay=0.0, region_penalty=100.0),
)


def region_figures(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Where ``model``'s first transformer samples ``images (B, C, H, W)``: ``area`` (the mean
    sampled area, a share of the input's; :func:`stnviz.diagnose.measure`'s ``area_ratio``) and
    ``overshoot_px`` (how far the farthest sampled region reaches past the input's edge, in input
    pixels; 0 when every region lies inside).

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> model.transformers[0].set_constant_params(torch.tensor([0.5, 0, 0.25, 0, 0.5, 0]))
        >>> region_figures(model, torch.rand(2, 1, 28, 28))  # half the side: a quarter of the area
        {'area': 0.25, 'overshoot_px': 0.0}
    """
    from .capture import collect_batch
    from .diagnose import measure

    _, rec = collect_batch(model, images)
    record = rec.pick()
    h, w = record.input_size
    outline = record.sampled_outline()
    past = torch.cat([-0.5 - outline, outline - outline.new_tensor([w - 0.5, h - 0.5])], -1)  # > 0: past an edge
    return {"area": round(float(measure(record).area_ratio.mean()), 4),
            "overshoot_px": round(max(float(past.max()), 0.0), 4)}


def _overlays(model, images, labels, title: str, n: int = 6, boxes=None):
    from .capture import capture
    from .render import plot_batch

    with torch.no_grad(), capture(model, batch_slice=n) as rec:
        logits = model(images[:n])
    return plot_batch(rec[0], predictions=logits.argmax(1).cpu(), labels=labels[:n].cpu(), n=n, boxes=boxes, title=title)


def run_demo(out: str | Path = "out", *, device: str = "auto", quick: bool = False) -> list[Path]:
    """Write the demo files to ``out`` (see the module docstring) and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import render
    from .analysis import run_sequence, stability_per_model, stability_per_track
    from .animate import ProgressRecorder, save_gif, save_mp4, sequence_frames
    from .data import DistortedMNIST, sample, sample_tracks
    from .data.catalog import TEST_SEED
    from .diagnose import DiagnoseCallback, diagnose
    from .hub import list_models, load_pretrained
    from .train import evaluate, fit

    from .animate import check_output_folder

    out = check_output_folder(out, option="out")  # before any work: not after a minute of rendering
    dev = resolve_device(device)
    written: list[Path] = []
    shipped = set(list_models(pretrained=True))
    signs = "stn_gtsrb.gtsrb_loc"  # the GTSRB model whose first transformer finds the sign
    upright = "stn_cnn.mnist_rts_upright"  # the RTS model whose transformer turns digits upright
    needed = {"stn_tutorial.mnist", "stn_cnn.mnist_rts", "cnn.mnist_rts", upright, signs, "cnn_gtsrb.gtsrb"}
    missing = sorted(needed - shipped)
    if missing:
        print(f"note: shipped checkpoints missing, their parts are skipped: {missing}")

    written.append(_savefig(families_figure(dev), out / "transforms.png"))

    digits = sample("mnist")
    rts = DistortedMNIST(digits, "rts", seed=TEST_SEED)
    rts_batch = rts.get(torch.arange(0, 1000, 97), dev)
    if "stn_cnn.mnist_rts" in shipped:
        model = load_pretrained("stn_cnn.mnist_rts", device=dev)
        fig = _overlays(model, rts_batch.images, rts_batch.labels, "stn_cnn.mnist_rts on RTS-distorted MNIST test digits")
        written.append(_savefig(fig, out / "overlays_mnist_rts.png"))
    if upright in shipped:
        model = load_pretrained(upright, device=dev)
        fig = _overlays(model, rts_batch.images, rts_batch.labels, f"{upright}: the transformer turns the digits upright")
        written.append(_savefig(fig, out / "overlays_mnist_rts_upright.png"))

    tracks = sample_tracks()
    if signs in shipped:
        gtsrb_model = load_pretrained(signs, device=dev)
        frames = torch.stack([t.images[0] for t in tracks[:6]]).to(dev)  # the first, farthest frame of 6 tracks (most margin)
        labels = torch.tensor([t.label for t in tracks[:6]])
        boxes = [t.boxes[0] * 32 - 0.5 for t in tracks[:6]]
        fig = _overlays(gtsrb_model, frames, labels, f"{signs} on held-out GTSRB signs (green: annotated box)", boxes=boxes)
        written.append(_savefig(fig, out / "overlays_gtsrb.png"))

    # the short live run: an attention transformer learning to close in on the digits (ATTENTION_RECIPE)
    recipe = ATTENTION_RECIPE
    probe = recipe.probe(8)
    model = recipe.model(dev)
    rec = ProgressRecorder(probe.images, probe.labels, every=4 if quick else 20, max_snapshots=60)
    monitor = DiagnoseCallback(recipe.probe(64).images, every=80, warn=False)
    t0, threads = time.perf_counter(), torch.get_num_threads()
    if dev.type == "cpu":
        # a net this small gains little from a second thread, and loses 3-4x while another program
        # keeps a core busy (the thread waits for it): 46 s on one thread, 188 s on two, same machine
        torch.set_num_threads(1)
    try:
        fit(model, recipe.train_set(), None, recipe.config, epochs=2 if quick else recipe.config.epochs,
            device=dev, progress=False, callbacks=[rec, monitor])
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - t0
    check = recipe.probe(256, dev)
    verdict = diagnose(model, check.images, check.labels)
    regions = region_figures(model, check.images)
    run_text = _training_run_text(recipe, seconds, rec, regions, verdict, monitor)
    print(f"short training run: {seconds:.0f} s, {rec.snapshots[-1].step} steps, mean sampled area "
          f"{regions['area']:.2f} of the input; diagnose: {verdict.summary()}")
    frames = rec.frames(columns=4, tile=96)
    written.append(save_gif(frames, out / "training_progress.gif", fps=6))
    written.append(save_mp4(frames, out / "training_progress.mp4", fps=6))
    written.append(rec.save_contact_sheet(out / "training_contact_sheet.png", rows=6))

    if signs in shipped:
        track = max(tracks, key=lambda t: float((t.boxes[:, 2] - t.boxes[:, 0]).std()))  # a sign that grows a lot
        run = run_sequence(gtsrb_model, track)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        render.plot_theta_components(run.table, axes[0])
        render.plot_change_curves(run.table, axes[1])
        fig.suptitle(f"GTSRB track {track.track_id} (class {track.label}), {signs}", fontsize=10)
        fig.tight_layout()
        written.append(_savefig(fig, out / "stability_track.png"))
        written.append(save_gif(sequence_frames(run), out / "stability_track.gif", fps=6))
        summary = stability_per_track(gtsrb_model, tracks)
        written.append(atomic_write(out / "stability_summary.csv", lambda tmp: summary.to_csv(tmp, index=False)))
        fig, ax = plt.subplots(figsize=(4.2, 4))
        render.plot_stability_summary(summary, ax)
        fig.tight_layout()
        written.append(_savefig(fig, out / "stability_summary.png"))
        stab = stability_per_model(summary, signs)
    else:
        stab = None

    rows = []
    samples = {"mnist": lambda: digits, "mnist_rts": lambda: rts, "gtsrb": lambda: sample("gtsrb")}
    for name in sorted(needed & shipped):
        m = load_pretrained(name, device=dev)
        recorded = m.meta.get("metrics", {})
        here = evaluate(m, samples[m.meta["dataset"]](), device=dev)
        rows.append({"checkpoint": name, "data": m.meta["dataset"], "recorded test accuracy": recorded.get("test_accuracy"),
                     "test n": recorded.get("test_n"), "shipped-sample accuracy": here["accuracy"], "sample n": here["n"]})
    table = pd.DataFrame(rows)
    text = "# stnviz demo summary\n\n" + _markdown(table)
    if stab is not None:
        text += "\n\n## Stability over the shipped GTSRB tracks (ST model against the identity)\n\n" + _markdown(stab)
    text += "\n\n" + run_text
    written.append(atomic_write(out / "summary.md", lambda tmp: Path(tmp).write_text(text + "\n")))
    return written


def _training_run_text(recipe: TrainingRecipe, seconds: float, rec, regions: dict, verdict, monitor) -> str:
    """The summary's section on the live run: what was trained, how it ended, diagnose's verdict."""
    c, last = recipe.config, rec.snapshots[-1]
    kwargs = ", ".join(f"{k}={v}" for k, v in recipe.model_kwargs.items())
    lines = [
        "## The short training run (training_progress.gif)",
        "",
        f"{recipe.arch}({kwargs}) on {recipe.distortion} digits: {last.step} steps ({last.epoch:.0f} epochs of "
        f"{c.batch_size}) in {seconds:.0f} s; lr {c.lr}, loc_lr {c.loc_lr}, region_penalty {c.region_penalty}.",
        "",
        f"On 256 test canvases: mean sampled area {regions['area']:.2f} of the input, regions reaching at most "
        f"{regions['overshoot_px']:.1f} px past its edge; probe accuracy {last.accuracy:.2f}.",
        "",
        f"stnviz.diagnose on the trained model: {verdict.summary()}",
        "",
        "DiagnoseCallback during training: " + ("; ".join(f"step {f.step}: {f.check} ({f.severity}): {f.message}"
                                                         for f in monitor.findings) or "no warning"),
    ]
    return "\n".join(lines)


def _markdown(df: pd.DataFrame) -> str:
    """A markdown table (pandas' ``to_markdown`` needs the optional tabulate package)."""

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
