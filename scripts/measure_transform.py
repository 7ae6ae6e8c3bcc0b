"""What a trained model's transformer does, measured (issue 13's figures).

MNIST distortions (``--data mnist_rotated`` / ``mnist_rts`` ...): test error and
:func:`stnviz.analysis.distortion_residuals` on the test split (how much of the rotation, scale and
translation the first transformer undoes).

GTSRB (``--data gtsrb``): accuracy on the held-out test tracks, and over those tracks and over the
20 shipped tracks (:func:`stnviz.data.sample_tracks`) the mean IoU of the first transformer's
sampled region with the annotated box and the output change per frame against the model's own
fixed mean transform (``change_ratio_fixed``, from :func:`stnviz.analysis.stability_per_track`).

    python scripts/measure_transform.py MODEL_OR_PATH --data mnist_rotated --data-root DATA
"""

from __future__ import annotations

import argparse
import json

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="trained weights name or .pt path")
    ap.add_argument("--data", required=True)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--splits", nargs="*", default=["test"], choices=["val", "test"])
    ap.add_argument("--tracks", type=int, default=None, help="at most this many held-out tracks (GTSRB)")
    ap.add_argument("--record", action="store_true",
                    help="store the figures in the .pt file's metadata (meta['transform_metrics'], written atomically)")
    args = ap.parse_args(argv)

    import stnviz
    from stnviz.analysis import distortion_residuals, stability_per_model, stability_per_track
    from stnviz.data import load_splits, sample_tracks
    from stnviz.data.datasets import tracks_of
    from stnviz.train import evaluate

    torch.set_grad_enabled(False)
    model = stnviz.load_pretrained(args.model, device="cpu")
    splits = load_splits(args.data, root=args.data_root)
    out: dict = {"model": args.model, "data": splits.name}
    for split in args.splits:
        data = getattr(splits, split)
        res = evaluate(model, data, device="cpu")
        out[split] = {"accuracy": res["accuracy"], "error": res["error"], "n": res["n"]}
        if args.data.startswith("mnist_"):
            table = distortion_residuals(model, data, device="cpu")
            out[split]["undone"] = {r.component: round(float(r.undone), 4) for r in table.itertuples()}
        elif args.data == "gtsrb":
            tracks = list(tracks_of(data))[: args.tracks]
            row = stability_per_model(stability_per_track(model, tracks, device="cpu"), args.model).iloc[0]
            out[split]["tracks"] = {k: round(float(row[k]), 4) for k in
                                    ("tracks", "accuracy", "iou", "change_ratio_fixed", "change_ratio",
                                     "tracks_steadier_than_fixed")}
    if args.data == "gtsrb":
        row = stability_per_model(stability_per_track(model, sample_tracks(), device="cpu"), args.model).iloc[0]
        out["shipped_tracks"] = {k: round(float(row[k]), 4) for k in
                                 ("tracks", "accuracy", "iou", "change_ratio_fixed", "change_ratio",
                                  "tracks_steadier_than_fixed")}
    print(json.dumps(out, indent=1))
    if args.record:
        from pathlib import Path

        from stnviz.checkpoints import load_checkpoint, save_checkpoint

        if not Path(args.model).is_file():
            raise SystemExit(f"--record needs a .pt path, got the name {args.model!r}")
        figures = {k: v for k, v in out.items() if k not in ("model",)}
        stored = load_checkpoint(args.model)["meta"]  # the file's own meta (model.meta adds where it was loaded from)
        save_checkpoint(model, args.model, {**stored, "transform_metrics": figures})
        print(f"recorded in {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
