"""pandas tables and metrics from what transformers did (records, sequences, data sets).

* Theta tables: :func:`decomposed_theta`, :func:`theta_table`.
* Video stability (the Moodstocks "post-training" view, measured): :func:`run_sequence` /
  :func:`stability_per_frame` give one row per frame (decomposed theta, sampled region, IoU with an
  annotated box, frame-to-frame change of the transformer's output against the change of the
  input resized to the same size, i.e. against the identity transform); :func:`stability_per_track`
  gives one row per track and :func:`stability_per_model` one row per model.
* Data-set tables: :func:`class_transform_stats`, :func:`canonical_means`,
  :func:`accuracy_with_without`, :func:`distortion_residuals`.

Functions that run a model take ``key=``: which transformer, by its capture record's key
(``record.key``); default the first image transformer that runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import geometry
from .capture import collect_batch, model_device_dtype
from .device import resolve_device
from .render.figures import format_theta

__all__ = [
    "SequenceRun",
    "accuracy_with_without",
    "canonical_means",
    "class_transform_stats",
    "decomposed_theta",
    "distortion_residuals",
    "polygon_box_iou",
    "run_sequence",
    "stability_per_frame",
    "stability_per_model",
    "stability_per_track",
    "THETA_TABLE_COLUMNS",
    "theta_table",
]

_PARTS = ("rotation_deg", "scale_x", "scale_y", "shear", "tx", "ty")
_ENTRIES = tuple(f"theta_{r}{c}" for r in range(2) for c in range(3))


def decomposed_theta(theta: torch.Tensor) -> pd.DataFrame:
    """One row per sample of theta ``(B, 2, 3)``: the six entries and their decomposition by
    :func:`stnviz.geometry.decompose_affine` (rotation in degrees, scale x / y, shear,
    translation). Singular rows get NaN components.

    Example:
        >>> t = geometry.compose_affine(rotation=torch.tensor([math.radians(30)]), scale_x=0.8, scale_y=0.8)
        >>> decomposed_theta(t)[["rotation_deg", "scale_x", "scale_y"]].round(3).values.tolist()
        [[30.0, 0.8, 0.8]]
    """
    theta = theta.detach().to("cpu", torch.float64).reshape(-1, 2, 3)
    cols = {name: theta.reshape(-1, 6)[:, i].numpy() for i, name in enumerate(_ENTRIES)}
    p = geometry.decompose_affine(theta, singular="nan")
    cols.update(rotation_deg=torch.rad2deg(p.rotation).numpy(), scale_x=p.scale_x.numpy(), scale_y=p.scale_y.numpy(),
                shear=p.shear.numpy(), tx=p.tx.numpy(), ty=p.ty.numpy())
    return pd.DataFrame(cols)


#: Readable column names of :func:`theta_table` for the decomposition's columns.
THETA_TABLE_COLUMNS = {"rotation_deg": "rotation (deg)", "scale_x": "scale x", "scale_y": "scale y", "shear": "shear",
                       "tx": "translation x", "ty": "translation y"}


def theta_table(records, index: int = 0) -> pd.DataFrame:
    """A table to read, one row per capture record for sample ``index``: the transformer (the
    record's key), its family and role, theta in stnviz's convention as text (``"[a b tx; c d ty]"``,
    by :func:`stnviz.render.format_theta`) and its decomposition (``rotation (deg)``, ``scale x`` /
    ``y``, ``shear``, ``translation x`` / ``y``, in normalised units). Families without a matrix show their parameters as text instead.
    For numbers to compute with, use :func:`decomposed_theta` on ``record.theta``.

    Example:
        >>> import stnviz
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")  # untrained: starts at the identity
        >>> _, rec = collect_batch(model, torch.rand(2, 1, 28, 28))
        >>> theta_table(rec)[["transformer", "family", "theta", "scale x"]].values.tolist()
        [['transformer', 'affine', '[+1.000 +0.000 +0.000; +0.000 +1.000 +0.000]', 1.0]]
    """
    rows = []
    for r in records:
        row = {"transformer": r.key, "family": r.family or "grid only", "role": r.role}
        theta = r.theta
        if theta is not None:
            row["theta"] = format_theta(theta[index].detach().double().cpu(), decomposed=False, layout="line")
            parts = decomposed_theta(theta[index : index + 1]).iloc[0]
            row.update({name: float(parts[col]) for col, name in THETA_TABLE_COLUMNS.items()})
        elif r.params is not None:
            row["theta"] = "params [" + " ".join(f"{float(v):+.3f}" for v in r.params[index].flatten()) + "]"
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- regions


def _area(poly: np.ndarray) -> float:
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _clip(poly: np.ndarray, axis: int, value: float, keep_greater: bool) -> np.ndarray:
    """Sutherland-Hodgman against one half-plane (``coord[axis] >= value`` or ``<=``)."""
    if len(poly) == 0:
        return poly
    out = []
    inside = (poly[:, axis] >= value) if keep_greater else (poly[:, axis] <= value)
    for i in range(len(poly)):
        cur, prev = poly[i], poly[i - 1]
        cin, pin = inside[i], inside[i - 1]
        if cin != pin:
            t = (value - prev[axis]) / (cur[axis] - prev[axis])
            out.append(prev + t * (cur - prev))
        if cin:
            out.append(cur)
    return np.array(out).reshape(-1, 2)


def polygon_box_iou(polygon, box) -> float:
    """IoU of a simple polygon ``(N, 2)`` (a sampled region) and an axis-aligned box
    ``(x1, y1, x2, y2)``, same coordinates. Exact: the polygon is clipped to the box.

    Example (a 2 x 2 square and a box covering its right half and as much again: 2 / 6):
        >>> round(polygon_box_iou([(0, 0), (2, 0), (2, 2), (0, 2)], (1, 0, 3, 2)), 3)
        0.333
    """
    poly = np.asarray(polygon, dtype=np.float64)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64))
    if not np.isfinite(poly).all():
        return math.nan
    inter = poly
    for axis, value, greater in ((0, x1, True), (0, x2, False), (1, y1, True), (1, y2, False)):
        inter = _clip(inter, axis, value, greater)
    a_inter = _area(inter)
    union = _area(poly) + (x2 - x1) * (y2 - y1) - a_inter
    return a_inter / union if union > 0 else math.nan


# --------------------------------------------------------------------------- sequences


@dataclass
class SequenceRun:
    """A frame sequence through a model: ``frames (T, C, H, W)``, the chosen transformer's
    ``outputs``, ``outlines (T, P, 2)`` (input pixels), ``boxes`` in input pixel-edge coordinates
    (or ``None``), ``predictions (T,)`` and the per-frame ``table``.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> run = run_sequence(model, stnviz.data.sample_tracks()[0])  # a SequenceRun
        >>> run.frames.shape, run.outlines.shape, run.boxes.shape, run.key
        (torch.Size([30, 3, 32, 32]), torch.Size([30, 32, 2]), torch.Size([30, 4]), 'transformer')
    """

    frames: torch.Tensor
    outputs: torch.Tensor
    outlines: torch.Tensor
    boxes: torch.Tensor | None
    predictions: torch.Tensor
    table: pd.DataFrame
    key: str


def _on_device(model, device) -> torch.device:
    """Where ``model`` runs: moved to ``device`` first when one is given (resolved once, as
    :func:`stnviz.train.evaluate` does), else where it already is."""
    if device is not None:
        model.to(resolve_device(device))
    return model_device_dtype(model)[0]


def _cpu(t: torch.Tensor | None) -> torch.Tensor | None:
    """A record's tensor as a CPU float copy for tables and plots (records stay on the model's
    device and in its dtype, which numpy may not have: bfloat16)."""
    return None if t is None else t.detach().float().cpu()


def _check_finite_batch(images: torch.Tensor, index: torch.Tensor, data) -> None:
    """Bad input said as such: a batch image with NaN / inf pixels is a ValueError naming the data
    set and the image, not a NaN theta further on."""
    bad = ~torch.isfinite(images.flatten(1)).all(1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"{getattr(data, 'name', type(data).__name__)}: image {int(index[i])} holds NaN or inf pixels; expected finite "
            f"pixel values in [0, 1] (bad input, not a transform problem: repair or drop the image)"
        )


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _change(x: torch.Tensor) -> np.ndarray:
    """Mean absolute change from each frame to the previous one; NaN for the first."""
    d = (x[1:] - x[:-1]).abs().flatten(1).mean(1).numpy()
    return np.concatenate([[math.nan], d])


@torch.no_grad()
def run_sequence(model, source, *, key: str | None = None, device=None, batch_size: int = 64,
                 label: int | None = None) -> SequenceRun:
    """Run a frame sequence (Track, tensor, video file or folder) through ``model``.

    Columns of ``table``: ``frame``; theta's entries ``theta_00`` ... ``theta_12`` and their
    decomposition (affine-type families, as in :func:`decomposed_theta`); ``region_x*``
    / ``region_y*`` (the four corners of the sampled region, input pixels); ``iou`` with the
    annotated box (when the source has boxes); ``output_change``, ``input_change`` and
    ``fixed_change``: the mean absolute frame-to-frame change of the transformer's output, of the
    input resized to the output size (the identity transform), and of every frame warped by the
    track's *mean* transform (a fixed transform: resampling alone blurs and crops, so this is the
    fair baseline for "does the transformer follow the object"); ``prediction``, ``confidence``
    and ``correct`` (when ``label`` is known, e.g. from a Track).

    Frames go to the model's device and floating dtype (``device``, when given, moves the model
    there first); everything returned is on the CPU, in float32.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> table = run_sequence(model, stnviz.data.sample_tracks()[0]).table
        >>> len(table), {"iou", "output_change", "input_change", "fixed_change"} <= set(table.columns)
        (30, True)
    """
    from .data.sequences import read_frames

    _check_batch_size(batch_size)  # frames with NaN / inf pixels: refused by read_frames, naming the frame
    size = getattr(model, "input_size", None)
    frames, boxes = read_frames(source, size=size[1:] if size else None, channels=size[0] if size else None)
    if label is None and hasattr(source, "label"):
        label = int(source.label)
    _on_device(model, device)
    recs, logits = [], []
    for i in range(0, frames.shape[0], batch_size):
        out, rec = collect_batch(model, frames[i : i + batch_size])
        logits.append(out.float().cpu())
        recs.append(rec.pick(key))
    name = key or recs[0].key
    logits = torch.cat(logits)
    outputs = torch.cat([_cpu(r.output) for r in recs])
    inputs = torch.cat([_cpu(r.input) for r in recs])
    outlines = torch.cat([_cpu(r.sampled_outline(8)) for r in recs])
    corners = outlines[:, ::8]  # the outline starts at each corner every 8 points
    h, w = inputs.shape[-2:]
    table = pd.DataFrame({"frame": np.arange(frames.shape[0])})
    thetas = [r.theta for r in recs]
    if all(t is not None for t in thetas):
        table = pd.concat([table, decomposed_theta(torch.cat(thetas))[list(_ENTRIES + _PARTS)]], axis=1)
    for k, nm in enumerate(("tl", "tr", "br", "bl")):
        table[f"region_x_{nm}"] = corners[:, k, 0].numpy()
        table[f"region_y_{nm}"] = corners[:, k, 1].numpy()
    box_px = None
    if boxes is not None and inputs.shape[1] == frames.shape[1]:
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        box_px = boxes * scale - 0.5
        table["iou"] = [polygon_box_iou(outlines[t].numpy(), box_px[t].numpy()) for t in range(frames.shape[0])]
    resized = F.interpolate(inputs, size=outputs.shape[-2:], mode="bilinear", align_corners=False, antialias=True)
    table["output_change"] = _change(outputs)
    table["input_change"] = _change(resized)
    fam, comps = recs[0].family, recs[0].components
    if fam is not None and all(r.params is not None for r in recs):
        # The fairer baseline: the track's mean transform applied to every frame. Any resampling
        # blurs and crops, so a constant transform already changes less than the raw input; only
        # output_change < fixed_change shows the transformer *following* the object.
        params = torch.cat([_cpu(r.params) for r in recs])
        mean = params.mean(0, keepdim=True).expand_as(params).contiguous()
        fixed = geometry.warp(inputs, geometry.make_grid(mean, fam, outputs.shape[-2:], components=comps))
        table["fixed_change"] = _change(fixed)
    prob = logits.softmax(1)
    table["prediction"] = logits.argmax(1).numpy()
    table["confidence"] = prob.max(1).values.numpy()
    if label is not None:
        table["correct"] = table["prediction"] == label
    run = SequenceRun(frames, outputs, outlines, box_px, logits.argmax(1), table, name)
    run.stnviz_display = getattr(model, "stnviz_display", None)  # how the model's pictures are shown (stnviz.render.set_display)
    return run


def stability_per_frame(model, source, **kwargs) -> pd.DataFrame:
    """The per-frame table of :func:`run_sequence`.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> table = stability_per_frame(model, stnviz.data.sample_tracks()[0])
        >>> len(table), bool(table["iou"].min() > 0.5)  # the sampled region stays on the annotated sign
        (30, True)
    """
    return run_sequence(model, source, **kwargs).table


def stability_per_track(model, tracks: Iterable, *, key: str | None = None, device=None) -> pd.DataFrame:
    """One row per track: frames, accuracy, mean IoU, mean output change against mean input change
    (``change_ratio`` < 1: the transformer's output is steadier than the identity) and against
    the fixed mean transform (``change_ratio_fixed`` < 1: steadier than *any* constant transform,
    i.e. the transformer follows the sign), and the mean absolute frame-to-frame change (jitter)
    of each theta component.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_gtsrb.gtsrb", device="cpu")
        >>> summary = stability_per_track(model, stnviz.data.sample_tracks()[:1])
        >>> summary[["track", "label", "frames"]].values.tolist(), bool(summary["change_ratio"].item() < 1)
        ([[4, 0, 30]], True)
    """
    rows = []
    for tr in tracks:
        t = run_sequence(model, tr, key=key, device=device).table
        row = {"track": getattr(tr, "track_id", len(rows)), "label": getattr(tr, "label", None), "frames": len(t),
               "output_change": t["output_change"].mean(), "input_change": t["input_change"].mean()}
        row["change_ratio"] = row["output_change"] / row["input_change"] if row["input_change"] > 0 else math.nan
        if "fixed_change" in t:
            row["fixed_change"] = t["fixed_change"].mean()
            row["change_ratio_fixed"] = row["output_change"] / row["fixed_change"] if row["fixed_change"] > 0 else math.nan
        if "correct" in t:
            row["accuracy"] = float(t["correct"].mean())
        if "iou" in t:
            row["iou"] = float(t["iou"].mean())
        for c in ("rotation_deg", "scale_x", "tx", "ty"):
            if c in t:
                row[f"{c}_jitter"] = float(t[c].diff().abs().mean())
        rows.append(row)
    if not rows:
        raise ValueError("stability_per_track got no tracks; expected at least one sequence")
    return pd.DataFrame(rows)


def stability_per_model(summary: pd.DataFrame, name: str = "model") -> pd.DataFrame:
    """One row for a model from :func:`stability_per_track`: means over tracks, with the identity
    transform's change (the resized input) beside the model's.

    Example (two tracks, as :func:`stability_per_track` gives them; one is steadier than the identity):
        >>> summary = pd.DataFrame({"frames": [30, 30], "output_change": [0.06, 0.09],
        ...                         "input_change": [0.08, 0.08], "change_ratio": [0.75, 1.125]})
        >>> row = stability_per_model(summary, "stn_gtsrb")
        >>> row[["model", "frames", "tracks_steadier_than_identity"]].values.tolist()
        [['stn_gtsrb', 60, 0.5]]
    """
    row = {"model": name, "tracks": len(summary), "frames": int(summary["frames"].sum()),
           "output_change": summary["output_change"].mean(), "identity_change": summary["input_change"].mean(),
           "change_ratio": summary["change_ratio"].mean(),
           "tracks_steadier_than_identity": float((summary["change_ratio"] < 1).mean())}
    if "fixed_change" in summary:
        row.update(fixed_change=summary["fixed_change"].mean(), change_ratio_fixed=summary["change_ratio_fixed"].mean(),
                   tracks_steadier_than_fixed=float((summary["change_ratio_fixed"] < 1).mean()))
    for c in ("accuracy", "iou", "rotation_deg_jitter", "scale_x_jitter", "tx_jitter", "ty_jitter"):
        if c in summary:
            row[c] = summary[c].mean()
    return pd.DataFrame([row])


# --------------------------------------------------------------------------- data-set tables


@torch.no_grad()
def _collect(model, data, key: str | None, batch_size: int, device, limit: int | None):
    """Run ``data`` (a batch source) through ``model``: theta, inputs/outputs, labels, logits, extras
    (CPU copies; the batches are made on the model's device)."""
    dev = _on_device(model, device)
    out = {"theta": [], "outputs": [], "inputs": [], "labels": [], "logits": [], "extras": []}
    seen = 0
    for batch in data.batches(batch_size, device=dev):
        _check_finite_batch(batch.images, batch.index, data)
        logits, rec = collect_batch(model, batch.images)
        r = rec.pick(key)
        out["theta"].append(None if r.theta is None else r.theta.detach().cpu())
        out["outputs"].append(_cpu(r.output))
        out["inputs"].append(_cpu(r.input))
        out["labels"].append(batch.labels.cpu())
        out["logits"].append(logits.float().cpu())
        out["extras"].append({k: v.cpu() for k, v in batch.extras.items()})
        seen += batch.labels.numel()
        if limit is not None and seen >= limit:
            break
    return out


def class_transform_stats(model, data, *, key: str | None = None, batch_size: int = 256, device=None) -> pd.DataFrame:
    """Per class: count, and mean / std of the learned rotation (deg), scale x / y and translation.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> data = stnviz.data.DistortedMNIST(stnviz.data.sample("mnist").subset(torch.arange(32)), "rts", seed=0)
        >>> stats = class_transform_stats(model, data)
        >>> list(stats.columns[:4]), int(stats["count"].sum())
        (['label', 'count', 'rotation_deg_mean', 'rotation_deg_std'], 32)
    """
    c = _collect(model, data, key, batch_size, device, None)
    if any(t is None for t in c["theta"]):
        raise ValueError("class_transform_stats needs an affine-type transformer (theta); this one has none")
    df = decomposed_theta(torch.cat(c["theta"]))[list(_PARTS)]
    df["label"] = torch.cat(c["labels"]).numpy()
    stats = df.groupby("label").agg(["mean", "std"])
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    stats.insert(0, "count", df.groupby("label").size())
    return stats.reset_index()


def canonical_means(model, data, *, key: str | None = None, batch_size: int = 256, device=None) -> dict:
    """Per class, the mean input and the mean transformer output: ``{label: (mean_in, mean_out)}``,
    each ``(C, H, W)``. A sharp mean output where the mean input is a blur shows the transformer
    bringing the class to one canonical pose.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> data = stnviz.data.DistortedMNIST(stnviz.data.sample("mnist").subset(torch.arange(32)), "rts", seed=0)
        >>> mean_in, mean_out = canonical_means(model, data)[0]  # the digit 0
        >>> mean_in.shape, mean_out.shape  # the 42x42 canvas in, the transformer's 28x28 output
        (torch.Size([1, 42, 42]), torch.Size([1, 28, 28]))
    """
    c = _collect(model, data, key, batch_size, device, None)
    labels = torch.cat(c["labels"])
    inputs, outputs = torch.cat(c["inputs"]), torch.cat(c["outputs"])
    return {int(k): (inputs[labels == k].mean(0), outputs[labels == k].mean(0)) for k in torch.unique(labels).tolist()}


@torch.no_grad()
def accuracy_with_without(model, data, *, twin=None, batch_size: int = 256, device=None) -> pd.DataFrame:
    """Accuracy of the ST model, of the same model with every transformer forced to the identity,
    and of a separately trained no-ST ``twin`` when given.

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> data = stnviz.data.DistortedMNIST(stnviz.data.sample("mnist").subset(torch.arange(32)), "rts", seed=0)
        >>> table = accuracy_with_without(model, data)
        >>> table["model"].tolist(), bool(table["accuracy"][0] > table["accuracy"][1])
        (['with transformer', 'same weights, transformer = identity'], True)
    """
    import copy

    from .models import SpatialTransformer
    from .train import evaluate

    rows = [{"model": "with transformer", **evaluate(model, data, batch_size=batch_size, device=device)}]
    frozen = copy.deepcopy(model)
    for m in frozen.modules():
        if isinstance(m, SpatialTransformer):
            m.reset_to_identity()
    rows.append({"model": "same weights, transformer = identity", **evaluate(frozen, data, batch_size=batch_size, device=device)})
    if twin is not None:
        rows.append({"model": "no-ST twin", **evaluate(twin, data, batch_size=batch_size, device=device)})
    return pd.DataFrame(rows)[["model", "accuracy", "error", "loss", "n"]]


def distortion_residuals(model, data, *, key: str | None = None, batch_size: int = 256, device=None,
                         limit: int | None = None) -> pd.DataFrame:
    """How much of a known distortion the transformer undoes (``stnviz.data.DistortedMNIST`` with
    ground-truth ``theta``).

    The digit pixel seen at output ``v`` is ``G(S(v))``: ``S`` the learned theta, ``G`` the ground
    truth (canvas -> digit). A transformer that undoes the distortion makes ``M = G S`` the same
    for every sample, so per component (rotation, log scale, translation) the table compares the
    spread of the ground truth with the spread left in ``M``; ``undone = 1 - residual / distortion``
    (1: fully undone, 0: untouched).

    Example:
        >>> import stnviz
        >>> model = stnviz.load_pretrained("stn_cnn.mnist_rts", device="cpu")
        >>> data = stnviz.data.DistortedMNIST(stnviz.data.sample("mnist").subset(torch.arange(32)), "rts", seed=0)
        >>> table = distortion_residuals(model, data).set_index("component")
        >>> table.index.tolist(), bool(table.loc["translation x", "undone"] > 0.5)
        (['rotation (deg)', 'log scale', 'translation x', 'translation y'], True)
    """
    c = _collect(model, data, key, batch_size, device, limit)
    if not c["extras"] or "theta" not in c["extras"][0]:
        raise ValueError("distortion_residuals needs data with ground-truth 'theta' (e.g. DistortedMNIST 'rts' or 'rotated')")
    if any(t is None for t in c["theta"]):
        raise ValueError("distortion_residuals needs an affine-type transformer")
    s = torch.cat(c["theta"]).double()
    g = torch.cat([e["theta"] for e in c["extras"]]).double()
    m = geometry.to_matrix(g, "affine") @ geometry.to_matrix(s, "affine")
    gt = decomposed_theta(g)
    res = decomposed_theta(m[:, :2])
    rows = []

    def spread(series, circular=False):
        v = series.to_numpy(dtype=np.float64)
        if circular:  # degrees: wrap around the circular mean
            ang = np.deg2rad(v)
            mean = math.atan2(np.sin(ang).mean(), np.cos(ang).mean())
            return float(np.rad2deg(np.sqrt(np.mean(((ang - mean + np.pi) % (2 * np.pi) - np.pi) ** 2))))
        return float(np.std(v))

    for comp, col, fn in (("rotation (deg)", "rotation_deg", None), ("log scale", "scale", np.log),
                          ("translation x", "tx", None), ("translation y", "ty", None)):
        if col == "scale":
            a = np.log(np.sqrt(gt["scale_x"] * gt["scale_y"].abs()))
            b = np.log(np.sqrt(res["scale_x"] * res["scale_y"].abs()))
            d, r = float(np.std(a)), float(np.std(b))
        else:
            d, r = spread(gt[col], col == "rotation_deg"), spread(res[col], col == "rotation_deg")
        # a component the distortion does not vary (scale and translation on R) has a spread of float
        # noise: "undone" is undefined there, not a ratio of two rounding errors
        distorted = d > (1e-3 if col == "rotation_deg" else 1e-5)
        rows.append({"component": comp, "distortion_spread": d, "residual_spread": r,
                     "undone": 1 - r / d if distorted else math.nan})
    return pd.DataFrame(rows)


# The names these had before they said per-frame / per-track / per-model (kept so older notebooks
# run; not in __all__).
sequence_stability = stability_per_frame
stability_summary = stability_per_track
summarize_stability = stability_per_model
