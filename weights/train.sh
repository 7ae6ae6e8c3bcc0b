#!/usr/bin/env bash
# The exact commands that trained the shipped checkpoints (also stored in each file's meta).
# Usage: STNVIZ_DATA=/path/to/torchvision/data bash weights/train.sh [NAME ...]
# Each run writes to $RUNS/NAME (default ~/stnviz-runs) and copies NAME.pt here. Rerunning a
# name resumes its run from last.pt when one exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-$HOME/stnviz-runs}

run() {
  local name=$1; shift
  local out="$RUNS/$name"
  local resume=()
  [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
  "$PY" -m stnviz train "$@" --out "$out" --name "$name" "${resume[@]}"
  cp "$out/$name.pt" "weights/$name.pt"
}

# A first stage of a multi-stage recipe: trains into $RUNS/DIR, ships nothing.
stage() {
  local dir=$1; shift
  local out="$RUNS/$dir"
  local resume=()
  [ -f "$out/last.pt" ] && resume=(--resume "$out/last.pt")
  "$PY" -m stnviz train "$@" --out "$out" "${resume[@]}"
}

want() { [ $# -eq 0 ] || [[ " $* " == *" $NAME "* ]]; }

for NAME in stn_tutorial.mnist stn_gtsrb.gtsrb cnn_gtsrb.gtsrb stn_cnn.mnist_rts cnn.mnist_rts \
            stn_fcn.mnist_rotated fcn.mnist_rotated stn_gtsrb.gtsrb_loc stn_cnn.mnist_rts_upright \
            stn_fcn_tps.mnist_elastic fcn.mnist_elastic; do
  want "$@" || continue
  case $NAME in
    stn_tutorial.mnist) run $NAME --model stn_tutorial --data mnist --epochs 12 --lr 0.05 --batch-size 128 ;;
    stn_gtsrb.gtsrb)    run $NAME --model stn_gtsrb --data gtsrb --epochs 20 --lr 0.05 --batch-size 128 --augment --label-smoothing 0.1 ;;
    cnn_gtsrb.gtsrb)    run $NAME --model cnn_gtsrb --data gtsrb --epochs 20 --lr 0.05 --batch-size 128 --augment --label-smoothing 0.1 ;;
    # RTS: lr 0.02, a region penalty and a 28x28 transformer output (the transformer crops the digit
    # from the 42x42 canvas, which also halves the classifier's cost). A first run at lr 0.05
    # without the penalty collapsed to zoom-out (theta scale 1.7-2.0); 20 epochs with the penalty
    # at the full 42x42 output reached 0.84% test error.
    stn_cnn.mnist_rts)  run $NAME --model stn_cnn --model-args '{"output_size": [28, 28]}' --data mnist_rts --epochs 70 --lr 0.02 --batch-size 128 --region-penalty 1.0 ;;
    cnn.mnist_rts)      run $NAME --model cnn --data mnist_rts --epochs 70 --lr 0.02 --batch-size 128 --region-penalty 1.0 ;;
    # R (rotation +-90), the paper's FCN rows (FCN 2.1%, ST-FCN affine 1.2% error). Recipes tried
    # (test error; "rotation undone" from stnviz.analysis.distortion_residuals on the test split):
    #   stn_fcn rotation-only ("restricted", ["rotation"]), 5 epochs, loc-lr 0.005 (lr/10): 4.83%, 0.1% undone
    #     (the transformer had not started to rotate);
    #   rotation-only, 20 epochs, loc-lr 0.05: 1.92%, 59.7% undone;
    #   affine, 20 epochs, loc-lr 0.05: collapsed in epoch 3 (val accuracy 0.85 -> 0.47), stopped;
    #   rotation-only, 50 epochs, loc-lr 0.05 (shipped): 1.67%, 55.3% undone. Most of the rest is the
    #     digits whose pose the classifier cannot tell apart anyway (0, 1, 8 and 6/9 at +-90 deg).
    #   affine, 40 epochs, loc-lr 0.01: 1.53% (lower error) but only 10.4% of the rotation undone:
    #     the affine transformer scales and shears while the classifier learns the rotations, so the
    #     rotation-only one ships (it is the one whose outputs are upright digits).
    #   fcn (the twin), 50 epochs: 2.52%.
    # OMP_NUM_THREADS=1 on a shared 2-core CPU: 5-10 s per epoch instead of 100 s with two threads.
    # GTSRB, a first transformer that localises (issue 13; targets on held-out tracks: IoU of its
    # region with the annotated box >= 0.80, output change <= 0.85x its fixed mean transform's,
    # accuracy >= 99.8%). Accuracy met, IoU and steadiness not; what was tried (figures from
    # scripts/measure_transform.py: test = the 133 held-out test tracks, shipped = the 20 sample
    # tracks; stn_gtsrb.gtsrb itself: IoU 0.63 / 0.65, change ratio 0.996 / 0.998, 99.82%):
    #   A  fine-tune stn_gtsrb.gtsrb, --augment reframe (place_object: sign at 0.5-1.0 of the frame,
    #      anywhere, +-10 deg), penalty 1, lr 0.01, loc-lr 0.01: after 1 epoch (val 99.11%) the first
    #      transformer was still one constant transform (IoU 0.68, ratio 1.000). Its localisation
    #      features barely vary with the input (std 0.01 over images: PyTorch's default init, then
    #      weight decay), so its regressor gets almost no gradient.
    #   A' the same at loc-lr 0.1 / penalty 10: collapsed in 60 steps (-168 deg, train acc 0.17);
    #      at loc-lr 0.03: still constant after 60 steps, accuracy falling (0.69).
    #   A" --reinit-transformers 1 (fresh He-initialised localisation net), penalty 20: features
    #      vary 10x more, parameters start to depend on the input, but after 200 steps the region
    #      stayed frame-sized (IoU 0.61): the classifier prefers the framing it was trained on.
    #   B  A" starting from a crop of the mean ROI (--init-params, scale 0.78): the crop drifted
    #      back out to 0.91-0.94 within 120 steps (IoU 0.71).
    #   D  from scratch, first transformer He-initialised at the mean-ROI crop, reframe, penalty 20,
    #      16 epochs lr 0.05 onecycle, loc-lr 0.01 (35 min): best epoch 9, test 99.62%, IoU 0.71 /
    #      0.71, ratio 1.02 / 1.06; last epoch: test 99.40%, IoU 0.77 / 0.77, ratio 1.02 / 1.05.
    #      The region shrinks toward the sign and grows with it over a track, but by less than the
    #      sign does (the output keeps a margin: sign at ~0.85 of the frame) and with a constant
    #      -5 deg tilt; it jitters as much as it follows.
    #      python -m stnviz train --model stn_gtsrb --data gtsrb --reinit-transformers 1 --init-params '[0.78, 0, 0.028, 0, 0.78, 0.028]' --augment reframe --region-penalty 20 --epochs 16 --lr 0.05 --loc-lr 0.01 --label-smoothing 0.1 --batch-size 128 --out $RUNS/stn_gtsrb.gtsrb_loc_stage1 --name stn_gtsrb.gtsrb_loc
    #   E  D's last epoch fine-tuned 6 epochs with penalty 200 (lr 0.01 cosine): test 99.35%,
    #      IoU 0.78 / 0.78, ratio 1.02 / 1.02: the stronger penalty did not close the margin.
    #      python -m stnviz train --model stn_gtsrb --data gtsrb --init $RUNS/stn_gtsrb.gtsrb_loc_stage1/last.pt --augment reframe --region-penalty 200 --epochs 6 --lr 0.01 --loc-lr 0.01 --schedule cosine --label-smoothing 0.1 --batch-size 128 --out $RUNS/stn_gtsrb.gtsrb_loc --name stn_gtsrb.gtsrb_loc
    #   F  (shipped as stn_gtsrb.gtsrb_loc) D's last epoch, its transformers frozen (--loc-lr 0), the
    #      classifier fine-tuned 6 epochs on the plain frames with the usual jitter (lr 0.01 cosine):
    #      best epoch 1, test 99.82% (the old model's figure, so a new tag), IoU 0.772 / 0.769, change
    #      ratio 1.022 / 1.046 (in the file: meta["transform_metrics"], scripts/measure_transform.py --record).
    #      The region finds the sign and crops most of the margin, but still keeps some of it (IoU
    #      short of 0.80) and moves from frame to frame about as much as the sign does, no steadier
    #      than one fixed crop (ratio short of 0.85).
    stn_gtsrb.gtsrb_loc)
      stage stn_gtsrb.gtsrb_loc_stage1 --model stn_gtsrb --data gtsrb --reinit-transformers 1 --init-params '[0.78, 0, 0.028, 0, 0.78, 0.028]' \
        --augment reframe --region-penalty 20 --epochs 16 --lr 0.05 --loc-lr 0.01 --label-smoothing 0.1 --batch-size 128 --name stn_gtsrb.gtsrb_loc
      run $NAME --model stn_gtsrb --data gtsrb --init "$RUNS/stn_gtsrb.gtsrb_loc_stage1/last.pt" --augment --loc-lr 0 --epochs 6 --lr 0.01 \
        --schedule cosine --label-smoothing 0.1 --batch-size 128 ;;
    # RTS, a transformer that uprights the digits (issue 13; targets on the RTS test split with
    # stnviz.analysis.distortion_residuals: rotation undone >= 0.5, scale >= 0.6, translation >= 0.9,
    # test error <= 0.6%). stn_cnn.mnist_rts itself: 7% / 25% / 91% / 90%, 0.58% error: its classifier
    # learns the rotations. Not met; what was tried ("restricted" family = rotation, scale, translation):
    #   calibration (a previous session): stn_cnn restricted, 6 epochs joint: rotation 3%, scale 51%,
    #     translation 98%: rotation is learned last, and only when the classifier can't cope alone.
    #   A  a classifier on canonical digits: stn_cnn at 28x28 on plain MNIST, its transformer frozen
    #      at the identity (--freeze transformers), 4 epochs: 98.76% val.
    #   B  that classifier frozen (--freeze classifier, --init-matching: the localisation net's input
    #      size differs) behind a fresh He-initialised restricted transformer (starting at a 0.7 crop)
    #      on RTS, 8 epochs: only the transformer can make the loss fall, by bringing digits to the
    #      pose the classifier knows. Test 2.87% error, rotation 41%, scale 44%, translation 87%.
    #   B2 B continued at loc-lr 0.01 (cosine): unstable (val 91% -> 79% in 2 epochs), stopped.
    #   C  B's transformer frozen, classifier fine-tuned on RTS (lr 0.01): 97.7% val after 3 epochs,
    #      too slow, stopped.
    #   Cj (shipped as stn_cnn.mnist_rts_upright) B fine-tuned jointly 15 epochs (lr 0.02 onecycle,
    #      loc-lr 0.002, penalty 1): test error 0.87%; rotation 40.7%, scale 42.5%, translation
    #      87.9% / 87.0% undone (meta["transform_metrics"]): the outputs are visibly more upright
    #      (a third of the +-45 deg spread is left), at 0.3 points more error than the joint model.
    #   What's left: the frozen classifier of B is the ceiling (98.8% on plain MNIST); a better one
    #   and longer B and Cj stages are the next things to try.
    stn_cnn.mnist_rts_upright)
      stage stn_cnn.mnist_canonical --model stn_cnn --model-args '{"input_size":[1,28,28],"output_size":[28,28],"family":"restricted","components":["rotation","scale","translation"]}' \
        --data mnist --freeze transformers --epochs 4 --lr 0.02 --batch-size 128 --name stn_cnn.mnist_canonical
      stage stn_cnn.mnist_rts_B --model stn_cnn --model-args '{"output_size":[28,28],"family":"restricted","components":["rotation","scale","translation"]}' \
        --data mnist_rts --init "$RUNS/stn_cnn.mnist_canonical/stn_cnn.mnist_canonical.pt" --init-matching --freeze classifier \
        --reinit-transformers 1 --init-params '[0, 0.7, 0, 0]' --epochs 8 --lr 0.01 --loc-lr 0.01 --region-penalty 1 --batch-size 128 --name stn_cnn.mnist_rts_B
      run $NAME --model stn_cnn --model-args '{"output_size":[28,28],"family":"restricted","components":["rotation","scale","translation"]}' \
        --data mnist_rts --init "$RUNS/stn_cnn.mnist_rts_B/stn_cnn.mnist_rts_B.pt" --epochs 15 --lr 0.02 --loc-lr 0.002 --region-penalty 1 --batch-size 128 ;;
    stn_fcn.mnist_rotated) run $NAME --model stn_fcn --model-args '{"family": "restricted", "components": ["rotation"]}' --data mnist_rotated --epochs 50 --lr 0.05 --loc-lr 0.05 ;;
    fcn.mnist_rotated)  run $NAME --model fcn --data mnist_rotated --epochs 50 --lr 0.05 ;;
    # E (elastic), the paper's ST-FCN with a thin-plate-spline transformer (paper: 2.4% error on its
    # E; this package's E noise is its own choice): 1.08% test error; its FCN twin 1.89%. The
    # first recipe tried, the R one with the default loc-lr (lr/10), ~6 s per epoch.
    stn_fcn_tps.mnist_elastic) run $NAME --model stn_fcn_tps --data mnist_elastic --epochs 50 --lr 0.05 ;;
    fcn.mnist_elastic)  run $NAME --model fcn --data mnist_elastic --epochs 50 --lr 0.05 ;;
  esac
done
