"""Record the demo's "watch it learn to attend" run once and ship its snapshots.

An ST-CNN with a downsampling transformer (60x60 canvas -> 28x28) learns translated-cluttered
MNIST (the paper's TC set); a :class:`stnviz.animate.ProgressRecorder` follows 8 fixed test
canvases. At the start the transformer samples the whole canvas; as it learns, the region shrinks
onto the digit. The snapshots go to ``stnviz/data/samples/attention_tc.npz`` (a few hundred kB),
which ``make demo`` renders in seconds (:func:`stnviz.demo.load_recorded_run`).

    STNVIZ_DATA=/path/to/torchvision/data python scripts/record_attention.py [--epochs 2]

Not shipped yet: no recipe tried so far made the region shrink onto the digit (the goal: mean
region area at the end below half the canvas, each region on its digit). Tried, with the mean
region area at the end as a fraction of the 60x60 canvas, the mean IoU of the 8 probe regions
with their digits' 28x28 patches (0.22 for the whole canvas; ``digit_boxes`` in the recording's
meta) and the full TC test accuracy:
  joint training, stn_cnn affine, 28x28 output:
    --epochs 2 (lr 0.02, loc-lr 0.01, penalty 1): 0.78, 83.4% (405 s);
    --epochs 3 --lr 0.05 --loc-lr 0.02 --every 15: zoomed *out* to 1.1-1.6, 91.6% (635 s);
    --epochs 3 --lr 0.05 --loc-lr 0.01 --region-penalty 20 --every 15: 0.76, 94.5% (659 s);
  joint, the attention family (scale + translation):
    --family attention --epochs 4 --lr 0.05 --loc-lr 0.01 --region-penalty 20: 0.79, IoU 0.27, 95.2%;
    the same at --output-size 16 (the whole canvas leaves the digit 7 px tall), 3 epochs: 0.53,
    IoU 0.32, 84.7%; 8 epochs: 0.57 (oscillating 0.54-0.71 over the run), IoU 0.31, 89.5% (1051 s).
    One scale for all digits: the region shrinks, but its translation barely follows each digit;
  a classifier trained on plain 28x28 MNIST, frozen (--classifier), the attention transformer alone
  learning (the curriculum that works for RTS rotation, weights/train.sh):
    from the identity, loc-lr 0.02: collapsed to scale 0 within 30 steps, 8.9%;
    loc-lr 0.005, penalty 10: zoomed out to 1.3-1.9, then back to 0.65, 20.8%;
    from a 0.7 crop (--init-params '[0.7, 0, 0]'), loc-lr 0.005 or 0.0005: zoomed out to scale
    1.8-2.3 (the frozen classifier scores a nearly blank picture better than a cluttered one).
  stn_fcn (fully connected classifier) joint, attention, 2 epochs: 0.84, 21.4%.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "stnviz" / "data" / "samples" / "attention_tc.npz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=None, help="train on the first N digits only")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--loc-lr", type=float, default=0.01)
    ap.add_argument("--region-penalty", type=float, default=1.0)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-snapshots", type=int, default=48)
    ap.add_argument("--model", default="stn_cnn", choices=["stn_cnn", "stn_fcn"],
                    help="the paper's ST-CNN, or its ST-FCN (a fully connected classifier: no translation or scale "
                         "tolerance of its own, so finding and enlarging the digit pays more)")
    ap.add_argument("--output-size", type=int, default=28,
                    help="side of the transformer's output: the smaller, the more a region that fits the digit pays "
                         "(the whole 60x60 canvas at 16x16 leaves the digit 7 pixels tall)")
    ap.add_argument("--family", default="affine", help="the transformer's family (affine, attention ...)")
    ap.add_argument("--classifier", default=None,
                    help="start the classifier from these weights (e.g. one trained on plain 28x28 MNIST) and keep "
                         "it frozen: the transformer alone learns, and only framing the digit as that classifier "
                         "knows it pays")
    ap.add_argument("--init-params", default=None,
                    help="the transformer's starting transform, flat parameters as JSON (e.g. attention "
                         "'[0.7, 0, 0]': a centred crop of 0.7 of the canvas; default the identity)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    from stnviz import geometry
    from stnviz.animate import ProgressRecorder
    from stnviz.data import load_splits
    from stnviz.data.distortions import DistortedMNIST
    from stnviz.demo import save_recorded_run
    from stnviz.hub import get_model, load_pretrained
    from stnviz.train import evaluate, fit, freeze, load_matching

    splits = load_splits("mnist_tc", root=args.data_root, seed=args.seed)
    train = splits.train
    if args.train_size:
        train = DistortedMNIST(train.source.subset(torch.arange(args.train_size)), "translated_cluttered",
                               seed=args.seed, fresh=True)
    torch.manual_seed(args.seed)
    model = get_model(args.model, input_size=(1, 60, 60), output_size=(args.output_size,) * 2, family=args.family, device="cpu")
    if args.classifier:
        loaded, _ = load_matching(model, load_pretrained(args.classifier, device="cpu").state_dict())
        freeze(model, "classifier")
        print(f"classifier from {args.classifier} ({len(loaded)} tensors), frozen")
    # He-initialised localisation net: PyTorch's default init gives features that barely vary with
    # the input, and a transformer that takes many epochs to start moving
    for m in model.transformer.localization.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    if args.init_params:
        model.transformer.set_constant_params(torch.tensor(json.loads(args.init_params), dtype=torch.float32))
    probe = splits.test.get(torch.arange(8))
    rec = ProgressRecorder(probe.images, probe.labels, every=args.every, max_snapshots=args.max_snapshots)
    t0 = time.perf_counter()
    hist = fit(model, train, None, epochs=args.epochs, batch_size=128, lr=args.lr, loc_lr=args.loc_lr, weight_decay=0.0,
               region_penalty=args.region_penalty, seed=args.seed, device="cpu", callbacks=[rec], progress=False)
    seconds = time.perf_counter() - t0
    test = evaluate(model, splits.test, device="cpu")
    snaps = rec.snapshots
    # where each probe digit's 28x28 patch lies on its canvas (pixels, from the ground truth, which
    # maps canvas -> digit): what the regions should end on
    corners = geometry.sampled_outline(geometry.invert(probe.extras["theta"]), "affine", (60, 60), points_per_side=1)
    boxes = torch.cat([corners.amin(1), corners.amax(1)], 1)
    meta = {
        "command": "python scripts/record_attention.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "model": f"{args.model} ({args.family}), input 1x60x60, transformer output {args.output_size}x{args.output_size}", "data": "mnist_translated_cluttered",
        "epochs": args.epochs, "train_seconds": round(seconds, 1), "test_accuracy": test["accuracy"],
        "train_loss_last_epoch": float(hist["train_loss"].iloc[-1]),
        "digit_boxes": [[round(float(v), 2) for v in b] for b in boxes],
    }
    out = save_recorded_run(args.out, probe.images, probe.labels, snaps, meta)
    print(json.dumps({"wrote": str(out), "bytes": out.stat().st_size, "snapshots": len(snaps), **meta}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
