import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch

from stnviz import get_model
from stnviz.checkpoints import load_checkpoint, load_model
from stnviz.data import DistortedMNIST, ImageSet, random_affine, sample
from stnviz.models import cnn_tutorial
from stnviz.train import Callback, TrainingDiverged, compare, evaluate, fit

from conftest import suite_device

REPO = Path(__file__).resolve().parents[1]


def tiny_sets(n_train=256, n_val=128):
    s = sample("mnist")
    order = torch.randperm(len(s), generator=torch.Generator().manual_seed(0))
    return s.subset(order[:n_train]), s.subset(order[n_train : n_train + n_val])


# the device comes from STNVIZ_TEST_DEVICE, as the `device` fixture's does (also in the scripts run below)
DEVICE = str(suite_device())
FIT = dict(batch_size=32, lr=0.003, optimizer="adam", schedule="constant", device=DEVICE, progress=False)
RESUME_FIT = dict(FIT, schedule="onecycle")  # the scheduler state must survive the kill too
#: Two runs with the same settings agree bit for bit on the CPU; on CUDA only to rounding
#: (grid_sample's and cuDNN's backward passes accumulate with atomics, in a varying order).
BIT_EXACT = torch.device(DEVICE).type == "cpu"


def assert_same_tensor(a, b, msg=None):
    if BIT_EXACT:
        assert torch.equal(a, b), msg
    else:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=msg)


def assert_same_table(a, b):
    if BIT_EXACT:
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    else:
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-6)


class TestFit:
    def test_loss_decreases_and_metrics_table(self, tmp_path, device):
        torch.manual_seed(0)
        train, val = tiny_sets()
        model = get_model("stn_tutorial", device=device)
        before = evaluate(model, val)
        hist = fit(model, train, val, epochs=4, out_dir=tmp_path, **FIT)
        assert list(hist["epoch"]) == [1, 2, 3, 4]
        assert hist["train_loss"].iloc[-1] < hist["train_loss"].iloc[0] * 0.8
        assert evaluate(model, val)["loss"] < before["loss"]
        csv = pd.read_csv(tmp_path / "metrics.csv")
        assert list(csv.columns) == list(hist.columns) and len(csv) == 4
        assert {"last.pt", "best.pt", "metrics.csv"} <= {p.name for p in tmp_path.iterdir()}
        best = load_checkpoint(tmp_path / "best.pt")
        assert best["meta"]["seed"] == 0
        assert load_checkpoint(tmp_path / "last.pt")["extra"]["epoch"] == 4

    def test_localisation_lr_group(self, device):
        train, val = tiny_sets(64, 32)
        model = get_model("stn_tutorial", device=device)
        lrs = []

        class Spy(Callback):
            def on_train_begin(self, state):
                lrs.append(None)

        fit(model, train, None, epochs=1, schedule="constant", lr=0.1, loc_lr=0.003, callbacks=[Spy()],
            batch_size=32, device=device, progress=False)
        # the transformer moved away from identity, at its own (small) rate
        st = model.transformers[0]
        assert st.regressor.weight.abs().sum() > 0

    def test_works_on_distorted_data_with_augment(self, tmp_path, device):
        train, val = tiny_sets(128, 64)
        hist = fit(get_model("stn_cnn", device=device), DistortedMNIST(train, "rts", fresh=True),
                   DistortedMNIST(val, "rts", seed=9), epochs=1, augment=random_affine, **FIT)
        assert len(hist) == 1 and 0 <= hist["val_accuracy"].iloc[0] <= 1

    def test_non_finite_theta_stops_and_keeps_last_good_checkpoint(self, tmp_path, device):
        train, val = tiny_sets(256, 32)
        model = get_model("stn_tutorial", device=device)

        class Poison(Callback):
            def on_step_end(self, state):
                if state.step == 5:
                    with torch.no_grad():
                        state.model.transformers[0].regressor.bias[0] = float("nan")

        with pytest.raises(TrainingDiverged, match=r"diverged at step 6 \(epoch 1\).*theta"):
            fit(model, train, val, epochs=2, out_dir=tmp_path, checkpoint_every=2, callbacks=[Poison()], **FIT)
        good = load_checkpoint(tmp_path / "last.pt")
        assert good["extra"]["step"] == 4
        assert all(torch.isfinite(v).all() for v in good["state_dict"].values() if v.is_floating_point())

    def test_non_finite_loss(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        model = get_model("cnn_tutorial", device=device)
        with torch.no_grad():
            model.head[-1].bias.fill_(float("inf"))
        with pytest.raises(TrainingDiverged, match=r"step 1 .*loss is nan"):
            fit(model, train, None, epochs=1, **FIT)

    def test_bad_arguments(self, device):
        train, _ = tiny_sets(64, 32)
        with pytest.raises(ValueError, match="epochs must be a positive integer, got 0"):
            fit(get_model("cnn_tutorial", device=device), train, epochs=0)
        with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'lbfgs'"):
            fit(get_model("cnn_tutorial", device=device), train, epochs=1, optimizer="lbfgs", progress=False)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_train import tiny_sets, RESUME_FIT
    from stnviz.data import random_affine
    from stnviz import get_model
    from stnviz.train import Callback, fit

    device = RESUME_FIT["device"]

    class Kill(Callback):
        def on_step_end(self, state):
            if state.step == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    train, val = tiny_sets()
    fit(get_model("stn_tutorial", device=device), train, val, epochs=3, out_dir={out!r}, checkpoint_every=5,
        seed=3, callbacks=[Kill()], augment=random_affine, **RESUME_FIT)
    """
)


class TestResume:
    def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(self, tmp_path, device):
        train, val = tiny_sets()  # 256 / 32 = 8 batches an epoch
        torch.manual_seed(0)
        ref = get_model("stn_tutorial", device=device)
        ref_hist = fit(ref, train, val, epochs=3, out_dir=tmp_path / "ref", checkpoint_every=5, seed=3,
                       augment=random_affine, **RESUME_FIT)

        out = tmp_path / "killed"
        script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), kill_at=13, out=str(out))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        ckpt = load_checkpoint(out / "last.pt")
        assert ckpt["extra"]["step"] == 10 and ckpt["extra"]["epoch"] == 1  # mid-epoch 2, lost 3 steps

        torch.manual_seed(123)  # a different process state must not matter
        resumed = get_model("stn_tutorial", device=device)
        hist = fit(resumed, train, val, epochs=3, out_dir=out, checkpoint_every=5, seed=3, resume=True,
                   augment=random_affine, **RESUME_FIT)
        assert list(hist["epoch"]) == [1, 2, 3]
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(resumed.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
        assert hist["val_accuracy"].iloc[-1] == pytest.approx(ref_hist["val_accuracy"].iloc[-1])

    def test_missing_resume_file(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
            fit(get_model("cnn_tutorial", device=device), train, epochs=1, resume=tmp_path / "nope.pt", **FIT)


class TestCompare:
    def test_table(self, device):
        train, val = tiny_sets(128, 64)
        table = compare(lambda: get_model("stn_tutorial", device=device), lambda: get_model("cnn_tutorial", device=device), train, val, epochs=1, **FIT)
        assert list(table["model"]) == ["stn_tutorial", "cnn_tutorial"]
        assert list(table["transformer"]) == [True, False]
        assert table.loc[0, "parameters"] > table.loc[1, "parameters"]
        assert set(table.columns) >= {"val_accuracy", "val_error", "best_val_accuracy", "train_seconds"}


DDP_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch, torch.distributed as dist
    sys.path.insert(0, {tests!r})
    from test_train import tiny_sets
    from stnviz import get_model
    from stnviz.train import Callback, fit

    seen = []
    class Spy(Callback):
        def on_train_begin(self, state):
            seen.append((state.rank, state.world_size, dist.get_backend()))

    torch.manual_seed(0)
    train, val = tiny_sets(128, 64)
    device = {device!r}
    model = get_model("stn_tutorial", device=device)
    hist = fit(model, train, val, epochs=2, batch_size=16, lr=0.05, device=device, progress=False,
               out_dir={out!r}, callbacks=[Spy()])
    digest = float(sum(p.double().sum() for p in model.parameters()))
    print(json.dumps({{"rank": seen[0][0], "world": seen[0][1], "backend": seen[0][2], "digest": digest,
                      "epochs": len(hist)}}))
    """
)


class TestDistributed:
    def test_two_processes(self, tmp_path, device):
        """Two ranks on the suite's device: gloo on the CPU, NCCL on CUDA (one GPU per rank, so a
        host with fewer than two GPUs runs the ranks on the CPU)."""
        if device.type == "cuda" and torch.cuda.device_count() < 2:
            device = torch.device("cpu")
        script = tmp_path / "ddp.py"
        script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "run"), device=str(device)))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script)],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        import json

        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert sorted(r["rank"] for r in rows) == [0, 1] and all(r["world"] == 2 for r in rows)
        assert {r["backend"] for r in rows} == {"nccl" if device.type == "cuda" else "gloo"}
        # DDP keeps the replicas identical
        assert rows[0]["digest"] == pytest.approx(rows[1]["digest"], rel=1e-6)
        assert all(r["epochs"] == 2 for r in rows)
        assert len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 2  # only rank 0 writes


class TestRegionPenalty:
    def test_pulls_a_zoomed_out_transformer_back_onto_the_image(self, device):
        train, _ = tiny_sets(64, 32)

        def scale_after(penalty):
            torch.manual_seed(0)
            model = get_model("stn_tutorial", device=device)
            model.transformers[0].set_constant_params(torch.tensor([2.0, 0, 0, 0, 2.0, 0]))  # samples 2x the image
            fit(model, train, None, epochs=2, batch_size=32, lr=1e-4, loc_lr=0.5, optimizer="sgd", momentum=0.0,
                schedule="constant", device=device, progress=False, region_penalty=penalty)
            return float(model.transformers[0].regressor.bias[0].detach())

        without, with_penalty = scale_after(0.0), scale_after(1.0)
        assert with_penalty < without - 0.2, (without, with_penalty)
        assert with_penalty < 1.9


# --------------------------------------------------------------------------- issue 12: trust


import math  # noqa: E402
import random as _random  # noqa: E402

from stnviz.checkpoints import CheckpointError, save_checkpoint  # noqa: E402
from stnviz.train import RUN_SETTINGS, TrainConfig, export_best  # noqa: E402

TIMING = ["seconds", "images_per_s"]  # wall-clock columns: the only ones a resumed run may differ in


class _Killed(Exception):
    """Stands in for a kill: raised from inside fit, it unwinds past every write in progress."""


class KillAtStep(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise _Killed(f"killed at step {state.step}")


class KillAtEpochEnd(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, state):
        if state.epoch == self.epoch:
            raise _Killed(f"killed after epoch {state.epoch}")


KILL_FIT = dict(epochs=3, batch_size=16, lr=0.02, optimizer="sgd", momentum=0.9, schedule="onecycle", device=DEVICE,
                progress=False, checkpoint_every=4, seed=5, augment=random_affine)


class TestFaultInjection:
    def test_random_kills_then_resume_match_an_uninterrupted_run(self, tmp_path, monkeypatch, device):
        """Six kills at random steps, one right after an epoch's files are written and one in the
        middle of writing last.pt: the run resumed after each ends with the same weights and the
        same metrics.csv, row for row, as a run that was never interrupted."""
        import stnviz.train.loop as loop_module

        train, val = tiny_sets(96, 32)  # 6 batches an epoch, 18 steps
        torch.manual_seed(0)
        ref = get_model("stn_tutorial", device=device)
        ref_hist = fit(ref, train, val, out_dir=tmp_path / "ref", **KILL_FIT)

        rng = _random.Random(12)
        kills = [KillAtStep(s) for s in rng.sample(range(1, 18), 6)] + [KillAtEpochEnd(1)]
        kills.sort(key=lambda k: k.step if isinstance(k, KillAtStep) else 6 * k.epoch + 0.5)  # in run order
        out = tmp_path / "killed"

        def resume_and_expect_kill(i, callbacks=()):
            torch.manual_seed(0)  # the same initial weights, as the CLI makes them (used if no last.pt yet)
            model = get_model("stn_tutorial", device=device)
            torch.manual_seed(1000 + i)  # then another process state: the rest must come from last.pt
            with pytest.raises(_Killed):
                fit(model, train, val, out_dir=out, resume=True, callbacks=list(callbacks), **KILL_FIT)

        for i, kill in enumerate(kills):
            resume_and_expect_kill(i, [kill])

        # killed half-way through writing the next checkpoint: the previous last.pt must survive
        before = load_checkpoint(out / "last.pt")["extra"]["step"]
        real_save = loop_module.save_checkpoint

        def dies_while_writing(model, path, *args, **kwargs):
            def half(tmp):
                Path(tmp).write_bytes(b"PK\x03\x04 half a checkpoint")
                raise _Killed(f"killed while writing {path}")

            from stnviz._io import atomic_write

            atomic_write(path, half)

        monkeypatch.setattr(loop_module, "save_checkpoint", dies_while_writing)
        resume_and_expect_kill(len(kills))
        monkeypatch.setattr(loop_module, "save_checkpoint", real_save)
        assert load_checkpoint(out / "last.pt")["extra"]["step"] == before
        assert not [f.name for f in out.iterdir() if f.name.startswith(".")]  # the half file went with the kill
        done = len(kills) + 1
        assert done >= 5
        torch.manual_seed(0)
        resumed = get_model("stn_tutorial", device=device)
        torch.manual_seed(4321)
        hist = fit(resumed, train, val, out_dir=out, resume=True, **KILL_FIT)

        for k, v in ref.state_dict().items():
            assert_same_tensor(resumed.state_dict()[k], v, k)
        a, b = pd.read_csv(tmp_path / "ref" / "metrics.csv"), pd.read_csv(out / "metrics.csv")
        assert list(a.columns) == list(b.columns) and len(a) == len(b) == 3
        assert_same_table(a.drop(columns=TIMING), b.drop(columns=TIMING))
        assert_same_table(ref_hist.drop(columns=TIMING), hist.drop(columns=TIMING))
        assert (b["seconds"] > 0).all()


class TestDivergedCheckpoint:
    def test_huge_learning_rate_keeps_no_checkpoint_whose_loss_is_out_of_range(self, tmp_path, device):
        """At lr 1e6 the weights after step 1 are finite but give a loss of ~1e22: once kept as
        "the last good checkpoint", now refused (issue 18)."""
        train, val = tiny_sets(128, 32)
        torch.manual_seed(0)
        with pytest.raises(TrainingDiverged, match=r"diverged by step 1 \(epoch 1\): the weights give a loss of \S+ on the "
                                                   r"last batch, over \S+ \(100 x .*last.pt was not written, no checkpoint"):
            fit(get_model("cnn_tutorial", device=device), train, val, epochs=2, batch_size=32, lr=1e6, optimizer="sgd",
                schedule="constant", device=device, progress=False, out_dir=tmp_path, checkpoint_every=1)
        assert not (tmp_path / "last.pt").exists()

    def test_last_good_checkpoint_has_a_loss_in_range(self, tmp_path, device):
        """Weights blown up to finite but huge values at step 3: last.pt of step 3 is refused (its
        loss is far over 100 x ln(10)), step 2's is kept and its loss is of a classifier's size."""
        train, val = tiny_sets(128, 32)

        class BlowUp(Callback):
            def on_step_end(self, state):
                if state.step == 3:
                    with torch.no_grad():
                        for p in state.model.parameters():
                            p.mul_(100)  # finite: every weight still far inside float32

        torch.manual_seed(0)
        with pytest.raises(TrainingDiverged, match=r"diverged by step 3 \(epoch 1\): the weights give a loss of [0-9.e+]+ on the last batch, over .*"
                                                   r"last.pt was not written, the last good checkpoint \(step 2\) is kept"):
            fit(get_model("cnn_tutorial", device=device), train, val, epochs=1, out_dir=tmp_path, checkpoint_every=1,
                callbacks=[BlowUp()], **FIT)
        payload = load_checkpoint(tmp_path / "last.pt")
        assert payload["extra"]["step"] == 2 and 0 < payload["extra"]["loss_scale"] < 5
        assert evaluate(load_model(tmp_path / "last.pt", device=device), val)["loss"] < 100 * math.log(10)
        for state in payload["extra"]["optimizer"]["state"].values():
            assert all(torch.isfinite(t).all() for t in state.values() if isinstance(t, torch.Tensor))

    def test_non_finite_weights_are_never_written(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)

        class Poison(Callback):  # weights turn NaN right before the periodic checkpoint of step 2
            def on_step_end(self, state):
                if state.step == 2:
                    with torch.no_grad():
                        state.model.head[-1].weight[0, 0] = float("inf")

        with pytest.raises(TrainingDiverged, match=r"parameter head.3.weight holds NaN/inf; last.pt was not written"):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path, checkpoint_every=1,
                callbacks=[Poison()], **FIT)
        assert load_checkpoint(tmp_path / "last.pt")["extra"]["step"] == 1


class TestResumeSettings:
    @pytest.fixture
    def stopped_run(self, tmp_path, device):
        train, _ = tiny_sets(128, 32)
        torch.manual_seed(0)
        with pytest.raises(_Killed):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=2, out_dir=tmp_path, checkpoint_every=2,
                callbacks=[KillAtStep(3)], **FIT)
        return train, tmp_path

    @pytest.mark.parametrize("change, stored, given", [
        (dict(batch_size=64), "batch_size=32", "batch_size=64"),
        (dict(batch_size=16), "batch_size=32", "batch_size=16"),
        (dict(seed=1), "seed=0", "seed=1"),
        (dict(lr=0.1), "lr=0.003", "lr=0.1"),
        (dict(optimizer="sgd"), "optimizer='adam'", "optimizer='sgd'"),
        (dict(augment=random_affine), "augment=None", "augment='stnviz.data.augment.random_affine'"),
    ])
    def test_changed_setting_is_refused_by_name(self, stopped_run, change, stored, given, device):
        train, out = stopped_run
        kwargs = dict(FIT, **change)
        with pytest.raises(ValueError, match=rf"it was a run with {re.escape(stored)}, got {re.escape(given)}"):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=2, out_dir=out, resume=True, **kwargs)

    def test_other_training_data_is_refused(self, stopped_run, device):
        train, out = stopped_run
        with pytest.raises(ValueError, match=r"it was a run with train_size=128, got train_size=96"):
            fit(get_model("cnn_tutorial", device=device), train.subset(torch.arange(96)), None, epochs=2, out_dir=out, resume=True, **FIT)

    def test_every_setting_is_stored(self, stopped_run):
        _, out = stopped_run
        settings = load_checkpoint(out / "last.pt")["extra"]["settings"]
        assert set(settings) == set(RUN_SETTINGS)
        assert settings["batch_size"] == 32 and settings["seed"] == 0 and settings["optimizer"] == "adam"

    def test_resume_from_a_final_checkpoint_says_it_holds_no_trainer_state(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        model = get_model("cnn_tutorial", device=device)
        final = save_checkpoint(model, tmp_path / "cnn_tutorial.mnist.pt", {"dataset": "mnist"})
        with pytest.raises(CheckpointError, match=r"cnn_tutorial.mnist.pt: it holds no trainer state") as err:
            fit(model, train, None, epochs=1, resume=final, **FIT)
        assert "None" not in str(err.value)

    def test_resume_from_another_architecture_is_a_checkpoint_error(self, stopped_run, device):
        train, out = stopped_run
        with pytest.raises(CheckpointError, match=r"holds architecture 'cnn_tutorial'.*expected 'stn_tutorial'"):
            fit(get_model("stn_tutorial", device=device), train, None, epochs=2, out_dir=out, resume=True, **FIT)


class TestRunningSums:
    def test_interrupted_epoch_row_counts_every_batch(self, tmp_path, device):
        train, _ = tiny_sets(128, 32)  # 4 batches an epoch
        torch.manual_seed(0)
        ref = fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path / "ref", checkpoint_every=2, **FIT)
        torch.manual_seed(0)
        with pytest.raises(_Killed):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path / "k", checkpoint_every=2,
                callbacks=[KillAtStep(3)], **FIT)
        tally = load_checkpoint(tmp_path / "k" / "last.pt")["extra"]["tally"]
        assert tally["seen"] == 64 and tally["loss_sum"] > 0
        hist = fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path / "k", checkpoint_every=2,
                   resume=True, **FIT)
        assert_same_table(hist[["train_loss", "train_accuracy"]], ref[["train_loss", "train_accuracy"]])


class TestUpFrontChecks:
    @pytest.mark.parametrize("bs", [0, -4])
    def test_batch_size(self, bs, device):
        train, _ = tiny_sets(64, 32)
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {bs}"):
            fit(get_model("cnn_tutorial", device=device), train, epochs=1, **dict(FIT, batch_size=bs))

    def test_empty_training_set(self, device):
        train, _ = tiny_sets(64, 32)
        empty = train.subset(torch.zeros(0, dtype=torch.long))
        with pytest.raises(ValueError, match=r"the training set .* is empty; expected at least one sample"):
            fit(get_model("cnn_tutorial", device=device), empty, epochs=1, **FIT)

    def test_validation_shape_checked_before_the_first_epoch(self, device):
        train, _ = tiny_sets(64, 32)
        steps = []

        class Count(Callback):
            def on_step_end(self, state):
                steps.append(state.step)

        val42 = DistortedMNIST(train, "rts", seed=1)  # 42x42 images for a 28x28 model
        with pytest.raises(ValueError, match=r"validation set's images are 1x42x42 .* model was built for 1x28x28"):
            fit(get_model("cnn_tutorial", device=device), train, val42, epochs=1, callbacks=[Count()], **FIT)
        assert steps == []

    def test_nan_pixel_is_reported_as_bad_input_not_divergence(self, device):
        train, _ = tiny_sets(64, 32)
        images = train.images.clone()  # float in [0, 1]
        images[5, 0, 3, 3] = float("nan")
        poisoned = ImageSet(images, train.labels)
        with pytest.raises(ValueError, match=r"training images of step \d \(epoch 1\) hold non-finite values .* positions \[5\]\); expected finite") as err:
            fit(get_model("stn_tutorial", device=device), poisoned, epochs=1, **dict(FIT, schedule="constant"))
        assert "theta" not in str(err.value) and not isinstance(err.value, TrainingDiverged)


class TestEvaluate:
    def test_batches_follow_the_models_device_and_dtype(self, device):
        _, val = tiny_sets(64, 64)
        torch.manual_seed(0)
        model = get_model("stn_tutorial", device=device)
        single = evaluate(model, val)
        double = evaluate(model.double(), val)  # float32 images, a float64 model
        assert double["n"] == single["n"] == 64
        assert double["accuracy"] == single["accuracy"] and double["loss"] == pytest.approx(single["loss"], rel=1e-4)

    def test_device_moves_the_model_there(self, device):
        _, val = tiny_sets(64, 32)
        model = cnn_tutorial()  # the builder itself: the model is on the CPU
        assert evaluate(model, val, device=device)["n"] == 32
        assert next(model.parameters()).device == device


class TestExportBest:
    def test_reload_best_evaluate_and_write_named_checkpoint(self, tmp_path, device):
        train, val = tiny_sets(128, 64)
        torch.manual_seed(0)
        model = get_model("cnn_tutorial", device=device)
        hist = fit(model, train, val, epochs=2, out_dir=tmp_path, **FIT)
        path, metrics = export_best(model, tmp_path, val, val, name="cnn_tutorial.tiny", meta={"dataset": "tiny"})
        assert path == tmp_path / "cnn_tutorial.tiny.pt"
        best_epoch = int(hist["val_accuracy"].idxmax()) + 1
        assert metrics["best_epoch"] == best_epoch
        assert metrics["val_accuracy"] == pytest.approx(hist["val_accuracy"].max())
        assert metrics["test_n"] == 64
        loaded = load_model(path, device=device)
        assert loaded.meta["metrics"] == metrics and loaded.meta["dataset"] == "tiny"
        assert "step" not in loaded.meta and loaded.meta["train_seconds"] > 0
        best = load_checkpoint(tmp_path / "best.pt")["state_dict"]
        assert all(torch.equal(v.cpu(), best[k]) for k, v in loaded.state_dict().items())


# --------------------------------------------------------------------------- issue 14: a GPU host


class TestCudaPaths:
    """The CUDA-only paths (float16 autocast with a gradient scaler, NCCL, pinned non-blocking
    batch copies) are chosen from the device alone: checked here on the CPU with the device
    mocked, and run for real by ``STNVIZ_TEST_DEVICE=cuda``."""

    @staticmethod
    def run_on(dev, amp=None):
        """A ``_Run`` as ``fit`` builds it for ``dev``; the model stays on the CPU (nothing runs)."""
        from stnviz.train.loop import _Run
        from stnviz.train.settings import run_settings

        train, _ = tiny_sets(64, 32)
        model = cnn_tutorial()
        config = TrainConfig(epochs=1, batch_size=32, lr=0.01, schedule="constant", amp=amp, channels_last=False,
                             checkpoint_every=0, keep_best=False)
        settings = run_settings(config, model, train, dev, 1)
        assert tuple(settings) == RUN_SETTINGS
        return _Run(model, train, None, config=config, settings=settings, dev=dev, rank=0, world=1, out=None,
                    callbacks=(), meta=None, progress=False, augment=None, layout=torch.contiguous_format)

    @pytest.fixture
    def recorded(self, monkeypatch, device):
        """torch.amp.GradScaler and torch.autocast replaced by recorders (no CUDA needed)."""
        calls = {}

        class Scaler:
            def __init__(self, device="cuda", enabled=True, **kwargs):
                calls["scaler"] = (device, enabled)

        def autocast(device_type, dtype=None, **kwargs):
            calls["autocast"] = (device_type, dtype)
            return contextlib.nullcontext()

        monkeypatch.setattr(torch.amp, "GradScaler", Scaler)
        monkeypatch.setattr(torch, "autocast", autocast)
        return calls

    def test_amp_on_cuda_by_default(self, recorded):
        run = self.run_on(torch.device("cuda"))
        assert run.settings["amp"] is True and run.amp is True
        assert recorded["scaler"] == ("cuda", True)
        with run._autocast():
            pass
        assert recorded["autocast"] == ("cuda", torch.float16)

    def test_amp_off_on_cuda_when_asked(self, recorded):
        run = self.run_on(torch.device("cuda"), amp=False)
        assert run.amp is False and recorded["scaler"] == ("cuda", False)
        assert isinstance(run._autocast(), contextlib.nullcontext) and "autocast" not in recorded

    @pytest.mark.parametrize("amp", [None, True])
    def test_no_amp_on_cpu(self, recorded, amp):
        run = self.run_on(torch.device("cpu"), amp=amp)
        assert run.settings["amp"] is bool(amp) and run.amp is False  # recorded as asked, never run
        assert recorded["scaler"] == ("cuda", False)
        assert isinstance(run._autocast(), contextlib.nullcontext) and "autocast" not in recorded

    @pytest.mark.parametrize("dev, backend", [("cuda", "nccl"), ("cuda:1", "nccl"), ("cpu", "gloo")])
    def test_process_group_backend_under_torchrun(self, monkeypatch, dev, backend):
        import stnviz.train.distributed as train_module

        joined = []
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setattr(train_module.dist, "is_available", lambda: True)
        monkeypatch.setattr(train_module.dist, "is_initialized", lambda: False)
        monkeypatch.setattr(train_module.dist, "init_process_group", lambda backend: joined.append(backend))
        assert train_module._maybe_init_distributed(torch.device(dev)) is True
        assert joined == [backend]

    def test_no_process_group_without_torchrun(self, monkeypatch):
        import stnviz.train.distributed as train_module

        monkeypatch.delenv("WORLD_SIZE", raising=False)
        monkeypatch.setattr(train_module.dist, "init_process_group", lambda backend: pytest.fail("joined a group"))
        assert train_module._maybe_init_distributed(torch.device("cuda")) is False

    def test_training_batches_are_copied_pinned_to_cuda(self, monkeypatch, device):
        """fit's batches come from ImageSet.get, which copies every tensor through to_device."""
        import stnviz.data.imageset as imageset

        moved = []
        monkeypatch.setattr(imageset, "to_device", lambda t, device=None: moved.append((t.dtype, device)) or t)
        train, _ = tiny_sets(64, 32)
        batch = next(train.batches(32, shuffle=True, device="cuda"))
        assert moved == [(torch.uint8, "cuda"), (torch.int64, "cuda")]  # images, labels
        assert batch.images.dtype == torch.float32 and batch.images.max() <= 1

    def test_a_cuda_run_uses_all_three(self, device, monkeypatch):
        """On a GPU host (STNVIZ_TEST_DEVICE=cuda), a real fit autocasts to float16 and copies its
        batches from pinned memory."""
        if device.type != "cuda":
            pytest.skip("needs STNVIZ_TEST_DEVICE=cuda on a host with a GPU")
        real_pin, pinned = torch.Tensor.pin_memory, []

        def pin_memory(t, *args, **kwargs):
            pinned.append(t.dtype)
            return real_pin(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        model = get_model("stn_tutorial", device=device)
        dtypes = []
        model.head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype) if m.training else None)
        train, _ = tiny_sets(64, 32)
        fit(model, train, None, epochs=1, batch_size=32, device=device, progress=False)
        assert dtypes and set(dtypes) == {torch.float16}
        assert pinned.count(torch.uint8) == 2  # the images of both batches


# --------------------------------------------------------------------------- issue 18: no silent wrong runs


import argparse  # noqa: E402
import json  # noqa: E402

from stnviz.train import (  # noqa: E402
    OPTION_RANGES, CannotWrite, RunFolderBusy, check_option, freeze, frozen_parts, run_lock,
)


class TestArgumentRanges:
    @pytest.mark.parametrize("change, says", [
        (dict(loc_lr=-1), "loc_lr must be a number >= 0, got -1"),  # trained by gradient ascent before
        (dict(lr=0), "lr must be a number > 0, got 0"),
        (dict(lr=float("inf")), "lr must be a number > 0, got inf"),
        (dict(weight_decay=-0.5), "weight_decay must be a number >= 0, got -0.5"),
        (dict(momentum=1.5), "momentum must be a number >= 0 and < 1, got 1.5"),
        (dict(label_smoothing=1.0), "label_smoothing must be a number >= 0 and < 1, got 1.0"),
        (dict(region_penalty=-1.0), "region_penalty must be a number >= 0, got -1.0"),
        (dict(seed=-3), "seed must be an integer >= 0 and <= 99999, got -3"),
        (dict(seed=10**6), "seed must be an integer >= 0 and <= 99999, got 1000000"),  # overflowed the augment seed
        (dict(seed=1.5), "seed must be an integer >= 0 and <= 99999, got 1.5"),
        (dict(checkpoint_every=-1), "checkpoint_every must be an integer >= 0, got -1"),
        (dict(batch_size=True), "batch_size must be a positive integer, got True"),
    ])
    def test_out_of_range_is_refused_before_any_step(self, tmp_path, device, change, says):
        train, _ = tiny_sets(64, 32)
        steps = []

        class Count(Callback):
            def on_step_end(self, state):
                steps.append(state.step)

        kwargs = dict(FIT, **change)
        with pytest.raises(ValueError, match=re.escape(says)):
            fit(get_model("stn_tutorial", device=device), train, epochs=1, out_dir=tmp_path / "o", callbacks=[Count()],
                augment=random_affine, **kwargs)
        assert steps == [] and not (tmp_path / "o").exists()

    def test_the_cli_accepts_exactly_what_fit_accepts(self):
        from stnviz.cli import _option

        for name, spec in OPTION_RANGES.items():
            for text in ["-1", "0", "0.5", "1", "99999", "100000", "nan"]:
                try:
                    _option(name)(text)
                    cli_ok = True
                except argparse.ArgumentTypeError:
                    cli_ok = False
                try:
                    check_option(name, int(text) if text.lstrip("-").isdigit() else float(text))
                    api_ok = True
                except ValueError:
                    api_ok = False
                assert cli_ok == api_ok, (name, text)


class TestResumeTrainingSettings:
    @pytest.fixture
    def stopped_stn(self, tmp_path, device):
        train, _ = tiny_sets(128, 32)
        torch.manual_seed(0)
        with pytest.raises(_Killed):
            fit(get_model("stn_tutorial", device=device), train, None, epochs=2, out_dir=tmp_path, checkpoint_every=2,
                callbacks=[KillAtStep(3)], **FIT)
        return train, tmp_path

    def test_a_changed_freeze_is_refused(self, stopped_stn, device):
        train, out = stopped_stn
        model = get_model("stn_tutorial", device=device)
        freeze(model, "transformers")
        assert frozen_parts(model) == ["transformers"]
        with pytest.raises(ValueError, match=re.escape("it was a run with freeze=[], got freeze=['transformers']")):
            fit(model, train, None, epochs=2, out_dir=out, resume=True, **FIT)

    def test_a_changed_start_is_refused_by_entry(self, stopped_stn, device):
        train, out = stopped_stn
        with pytest.raises(ValueError, match=re.escape("it was a run with reinit_transformers=0, got reinit_transformers=1")):
            fit(get_model("stn_tutorial", device=device), train, None, epochs=2, out_dir=out, resume=True,
                reinit_transformers=1, **FIT)

    def test_the_same_settings_resume(self, stopped_stn, device):
        train, out = stopped_stn
        hist = fit(get_model("stn_tutorial", device=device), train, None, epochs=2, out_dir=out, resume=True, **FIT)
        assert list(hist["step"]) == [4, 8]
        assert load_checkpoint(out / "last.pt")["extra"]["settings"]["freeze"] == []


class TestRunFolder:
    def test_a_second_run_into_a_busy_folder_is_refused(self, tmp_path, device):
        """A run started (in another thread) while the first holds the folder is refused by name;
        the first finishes, and its lock goes with it."""
        import threading

        train, _ = tiny_sets(64, 32)
        seen = []

        class SecondRun(Callback):
            def on_step_end(self, state):
                if state.step == 1:
                    def second():
                        try:
                            fit(get_model("cnn_tutorial", device=device), train, epochs=1, out_dir=tmp_path, **FIT)
                        except RunFolderBusy as e:
                            seen.append(str(e))

                    t = threading.Thread(target=second)
                    t.start()
                    t.join()

        fit(get_model("cnn_tutorial", device=device), train, epochs=1, out_dir=tmp_path, callbacks=[SecondRun()], **FIT)
        assert len(seen) == 1 and f"{tmp_path} is in use by another training run (pid {os.getpid()}" in seen[0]
        assert f"remove its lock file {tmp_path / '.stnviz-run.lock'}" in seen[0]
        assert not (tmp_path / ".stnviz-run.lock").exists()

    def test_export_refuses_a_best_pt_of_another_run(self, tmp_path, device):
        train, val = tiny_sets(64, 32)
        torch.manual_seed(0)
        model = get_model("cnn_tutorial", device=device)
        mine = fit(model, train, val, epochs=1, out_dir=tmp_path / "a", **FIT).attrs["run_id"]
        theirs = fit(get_model("cnn_tutorial", device=device), train, val, epochs=1, out_dir=tmp_path / "b", **FIT).attrs["run_id"]
        assert mine != theirs and load_checkpoint(tmp_path / "a" / "best.pt")["extra"]["run_id"] == mine
        (tmp_path / "b" / "best.pt").replace(tmp_path / "a" / "best.pt")  # the other run wrote into a/
        with pytest.raises(CheckpointError, match=rf"best.pt was written by run {theirs}, not by this run \({mine}\)"):
            export_best(model, tmp_path / "a", val, name="cnn_tutorial.tiny", run_id=mine)
        assert not (tmp_path / "a" / "cnn_tutorial.tiny.pt").exists()

    def test_a_resumed_run_keeps_its_id(self, tmp_path, device):
        train, _ = tiny_sets(128, 32)
        with pytest.raises(_Killed):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path, checkpoint_every=2,
                callbacks=[KillAtStep(3)], **FIT)
        first = load_checkpoint(tmp_path / "last.pt")["extra"]["run_id"]
        hist = fit(get_model("cnn_tutorial", device=device), train, None, epochs=1, out_dir=tmp_path, checkpoint_every=2,
                   resume=True, **FIT)
        assert hist.attrs["run_id"] == first

    @pytest.mark.parametrize("name", ["../escaped.x", "ABSOLUTE/abs.x", "nodot"])
    def test_export_name_stays_in_the_folder(self, tmp_path, device, name):
        name = name.replace("ABSOLUTE", str(tmp_path / "elsewhere"))
        train, val = tiny_sets(64, 32)
        model = get_model("cnn_tutorial", device=device)
        fit(model, train, val, epochs=1, out_dir=tmp_path / "run", **FIT)
        with pytest.raises(ValueError, match=r"name must be ARCH.TAG"):
            export_best(model, tmp_path / "run", val, name=name)
        assert not list(tmp_path.rglob("*.x.pt")) and not list((tmp_path / "run").glob("nodot*"))

    def test_out_dir_that_is_a_file_is_found_before_training(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        (tmp_path / "f").write_text("x")
        with pytest.raises(CannotWrite, match=r"cannot write to .*f: expected a folder, got a file"):
            fit(get_model("cnn_tutorial", device=device), train, epochs=1, out_dir=tmp_path / "f", **FIT)

    def test_lock_and_probe_leave_nothing_behind(self, tmp_path):
        with run_lock(tmp_path / "new") as lock:
            assert lock.is_file() and json.loads(lock.read_text())["pid"] == os.getpid()
            with run_lock(tmp_path / "new"):  # the same thread again (the CLI around fit)
                pass
            assert lock.is_file()
        assert not (tmp_path / "new").exists()  # made for the run, left empty: removed


# --------------------------------------------------------------------------- issue 19: one TrainConfig


from dataclasses import asdict  # noqa: E402

from stnviz.train import (  # noqa: E402
    ConfigError, init_from, prepare_model, reinit_transformers,
)
from stnviz.models import localization_parameters  # noqa: E402
from stnviz.train.surgery import ArchitectureMismatch  # noqa: E402


class TestTrainConfig:
    def test_defaults_are_the_shipped_recipes(self):
        """weights/train.sh's runs were trained with the CLI's defaults: they are the config's,
        so fit's too (fit had lr 0.01, weight decay 0, last.pt every 500 steps before)."""
        c = TrainConfig(epochs=1)
        assert (c.batch_size, c.lr, c.loc_lr, c.optimizer, c.momentum, c.weight_decay, c.schedule) == \
               (128, 0.05, None, "sgd", 0.9, 5e-4, "onecycle")
        assert (c.label_smoothing, c.seed, c.amp, c.augment, c.region_penalty, c.channels_last) == (0.0, 0, None, None, 0.0, True)
        assert (c.init, c.init_matching, c.reinit_transformers, c.init_params, c.freeze) == (None, False, 0, None, ())
        assert (c.checkpoint_every, c.keep_best) == (200, True)

    def test_fit_trains_with_the_config_defaults(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        fit(get_model("cnn_tutorial", device=device), train, epochs=1, batch_size=32, device=device, progress=False,
            out_dir=tmp_path)
        settings = load_checkpoint(tmp_path / "last.pt")["extra"]["settings"]
        assert (settings["lr"], settings["weight_decay"], settings["optimizer"]) == (0.05, 5e-4, "sgd")

    @pytest.mark.parametrize("call", [
        lambda model, train: fit(model, train, epochs=1, lr_rate=0.1),
        lambda model, train: fit(model, train, TrainConfig(epochs=1), lr_rate=0.1),
        lambda model, train: TrainConfig(epochs=1).replace(lr_rate=0.1),
    ])
    def test_an_unknown_setting_is_named_with_the_valid_ones(self, call, device):
        train, _ = tiny_sets(64, 32)
        with pytest.raises(TypeError, match=r"unknown setting 'lr_rate'; expected one of the TrainConfig fields: "
                                            r"epochs, batch_size, lr, loc_lr, .*keep_best") as err:
            call(get_model("cnn_tutorial", device=device), train)
        assert "Traceback" not in str(err.value) and len(str(err.value).splitlines()) == 1

    def test_missing_epochs_and_a_wrong_config(self, device):
        train, _ = tiny_sets(64, 32)
        with pytest.raises(TypeError, match=r"a training run needs epochs: pass epochs=N"):
            fit(get_model("cnn_tutorial", device=device), train, lr=0.1)
        with pytest.raises(TypeError, match=r"fourth argument is a TrainConfig .* got a ImageSet"):
            fit(get_model("cnn_tutorial", device=device), train, None, train)

    def test_a_config_and_its_keywords_train_the_same_weights(self, device):
        train, _ = tiny_sets(64, 32)
        config = TrainConfig(epochs=1, batch_size=16, lr=0.02, loc_lr=0.01, augment="jitter", seed=4, region_penalty=0.5)
        models = []
        for args, kwargs in [((config,), {}), ((), asdict(config))]:
            torch.manual_seed(0)
            models.append(get_model("stn_tutorial", device=device))
            fit(models[-1], train, None, *args, device=device, progress=False, **kwargs)
        for k, v in models[0].state_dict().items():
            assert_same_tensor(models[1].state_dict()[k], v, k)

    @pytest.mark.parametrize("settings, says", [
        (dict(init_params=[0.8, 0, 0, 0, 0.8, 0]), "init_params sets the starting transform of the transformers that "
                                                   "reinit_transformers re-initialises; set reinit_transformers to N >= 1"),
        (dict(freeze=["classifier", "transformers"]), "freeze classifier transformers leaves nothing to train"),
        (dict(freeze=["head"]), "freeze must hold parts from ('classifier', 'transformers'), got ['head']"),
        (dict(init_matching=True), "init_matching loads the tensors of init that fit; give init too"),
        (dict(optimizer="lbfgs"), "optimizer must be 'sgd' or 'adam', got 'lbfgs'"),
        (dict(schedule="step"), "schedule must be 'onecycle', 'cosine' or 'constant', got 'step'"),
        (dict(augment="flip"), "augment must be 'jitter', 'reframe', None or a function"),
        (dict(reinit_transformers=1, init_params=[1, "a"]), "init_params must be a list of finite numbers"),
    ])
    def test_settings_that_cannot_be(self, settings, says):
        with pytest.raises(ConfigError, match=re.escape(says)):
            TrainConfig(epochs=1, **settings)

    def test_every_range_is_a_field(self):
        assert set(OPTION_RANGES) <= set(TrainConfig.names())
        assert {"epochs", "lr", "loc_lr", "seed", "reinit_transformers", "checkpoint_every"} <= set(OPTION_RANGES)


def _stn_weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class TestSurgery:
    def test_freeze_each_part(self, device):
        model = get_model("stn_tutorial", device=device)
        loc = {id(p) for p in localization_parameters(model)}
        assert freeze(model, "transformers") == len(loc)
        assert all(p.requires_grad == (id(p) not in loc) for p in model.parameters())
        assert frozen_parts(model) == ["transformers"]
        with pytest.raises(ValueError, match=r"part must be one of \('classifier', 'transformers'\), got 'head'"):
            freeze(model, "head")

    def test_reinit_transformers_is_seeded_and_leaves_the_classifier(self, device):
        def made(seed, n=1, params=None):
            torch.manual_seed(0)
            model = get_model("stn_tutorial", device=device)
            torch.manual_seed(seed)
            reinit_transformers(model, n, params)
            return model

        before, a, b, c = made(0, 0), made(1), made(1), made(2, params=[0.7, 0, 0.1, 0, 0.7, 0])
        st = a.transformers[0]
        assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())  # same seed, same weights
        assert not torch.equal(a.transformer.localization[0].weight, before.transformer.localization[0].weight)
        assert not bool(st.regressor.weight.any()) and st.regressor.bias.tolist() == [1, 0, 0, 0, 1, 0]
        assert torch.allclose(c.transformer.regressor.bias, torch.tensor([0.7, 0, 0.1, 0, 0.7, 0]))
        assert all(torch.equal(a.state_dict()[k], v) for k, v in before.state_dict().items() if k.startswith("head"))
        with pytest.raises(ValueError, match=r"n must be an integer from 0 to 1 \(the model's transformers\), got 2"):
            reinit_transformers(a, 2)

    def test_init_from_a_file_all_or_matching(self, tmp_path, device):
        torch.manual_seed(1)
        source = get_model("stn_cnn", input_size=(1, 28, 28), output_size=(28, 28), device=device)
        path = save_checkpoint(source, tmp_path / "stn_cnn.canonical.pt")
        same = get_model("stn_cnn", input_size=(1, 28, 28), output_size=(28, 28), device=device)
        loaded, skipped = init_from(same, path)
        assert skipped == [] and all(torch.equal(same.state_dict()[k], v) for k, v in source.state_dict().items())
        other = get_model("stn_cnn", output_size=(28, 28), device=device)  # a 42x42 canvas: the localisation net differs
        with pytest.raises(ArchitectureMismatch, match=r"stn_cnn.canonical.pt does not fit the model \(size mismatch for "
                                                       r"transformer.localization.7.weight"):
            init_from(other, path)
        loaded, skipped = init_from(other, path, matching=True)
        assert skipped == ["transformer.localization.7.weight"]
        assert torch.equal(other.state_dict()["head.3.weight"], source.state_dict()["head.3.weight"])

    def test_prepare_model_in_the_clis_order(self, tmp_path, device):
        torch.manual_seed(1)
        source = get_model("stn_tutorial", device=device)
        path = save_checkpoint(source, tmp_path / "stn_tutorial.start.pt")
        model = get_model("stn_tutorial", device=device)
        config = TrainConfig(epochs=1, init=path, reinit_transformers=1, init_params=[0.8, 0, 0, 0, 0.8, 0],
                             freeze=["classifier"])
        assert config.init == str(path)
        assert prepare_model(model, config) == []
        assert torch.equal(model.state_dict()["head.0.weight"], source.state_dict()["head.0.weight"])  # init ...
        assert model.transformer.regressor.bias.tolist()[0] == pytest.approx(0.8)  # ... then reinit
        assert frozen_parts(model) == ["classifier"]  # ... then freeze
        with pytest.raises(ConfigError, match=r"init .* does not fit the model .*; add init_matching"):
            prepare_model(get_model("stn_cnn", device=device), TrainConfig(epochs=1, init=path))
        with pytest.raises(ConfigError, match=r"reinit_transformers must be an integer from 0 to 0 \(the transformers of cnn_tutorial\), got 1"):
            prepare_model(get_model("cnn_tutorial", device=device), TrainConfig(epochs=1, reinit_transformers=1))

    def test_fit_applies_and_stores_the_start(self, tmp_path, device):
        train, _ = tiny_sets(64, 32)
        model = get_model("stn_tutorial", device=device)
        head = model.head[0].weight.detach().clone()
        fit(model, train, epochs=1, freeze=["classifier"], reinit_transformers=1, out_dir=tmp_path, **FIT)
        assert torch.equal(model.head[0].weight, head)  # frozen: trained not at all
        settings = load_checkpoint(tmp_path / "last.pt")["extra"]["settings"]
        assert settings["freeze"] == ["classifier"] and settings["reinit_transformers"] == 1


class TestResumeConfig:
    def test_a_changed_config_field_is_refused_by_name(self, tmp_path, device):
        train, _ = tiny_sets(128, 32)
        config = TrainConfig(epochs=2, checkpoint_every=2, **{k: v for k, v in FIT.items() if k not in ("device", "progress")})
        torch.manual_seed(0)
        with pytest.raises(_Killed):
            fit(get_model("cnn_tutorial", device=device), train, None, config, out_dir=tmp_path, device=device,
                progress=False, callbacks=[KillAtStep(3)])
        for change, says in [(dict(weight_decay=0.0), "weight_decay=0.0005, got weight_decay=0.0"),
                             (dict(label_smoothing=0.1), "label_smoothing=0.0, got label_smoothing=0.1"),
                             (dict(channels_last=False), "channels_last=True, got channels_last=False")]:
            with pytest.raises(ValueError, match=re.escape(f"it was a run with {says}")):
                fit(get_model("cnn_tutorial", device=device), train, None, config.replace(**change), out_dir=tmp_path,
                    resume=True, device=device, progress=False)
        # checkpoint_every and keep_best do not change the weights: a resume may change them
        hist = fit(get_model("cnn_tutorial", device=device), train, None, config.replace(checkpoint_every=0, keep_best=False),
                   out_dir=tmp_path, resume=True, device=device, progress=False)
        assert list(hist["step"]) == [4, 8]

    def test_a_checkpoint_of_the_old_settings_is_one_clear_line(self, tmp_path, device):
        """A last.pt written before TrainConfig (its settings held ``start``, not ``init`` ...)
        need not resume, but is refused in one line naming what it lacks, not a KeyError."""
        train, _ = tiny_sets(128, 32)
        torch.manual_seed(0)
        with pytest.raises(_Killed):
            fit(get_model("cnn_tutorial", device=device), train, None, epochs=2, out_dir=tmp_path, checkpoint_every=2,
                callbacks=[KillAtStep(3)], **FIT)
        payload = load_checkpoint(tmp_path / "last.pt")
        extra = payload["extra"]
        old = {k: v for k, v in extra["settings"].items() if k not in ("init", "init_matching", "reinit_transformers", "init_params")}
        old["start"] = None
        (tmp_path / "old").mkdir()
        for settings in (old, None):  # the settings of issue 18, and a checkpoint older still
            save_checkpoint(load_model(tmp_path / "last.pt", device=device), tmp_path / "old" / "last.pt", payload["meta"],
                            extra=dict(extra, settings=settings))
            with pytest.raises(ValueError) as err:
                fit(get_model("cnn_tutorial", device=device), train, None, epochs=2, out_dir=tmp_path / "old", resume=True, **FIT)
            line = str(err.value)
            assert "written by an older stnviz" in line and "init" in line and "start a new run" in line
            assert len(line.splitlines()) == 1 and not isinstance(err.value, KeyError)


class _TutorialNet(torch.nn.Module):
    """The PyTorch STN tutorial's network, written the tutorial's way (``.view`` on conv outputs)."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1, self.conv2 = nn.Conv2d(1, 10, kernel_size=5), nn.Conv2d(10, 20, kernel_size=5)
        self.fc1, self.fc2 = nn.Linear(320, 50), nn.Linear(50, 10)
        self.localization = nn.Sequential(nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                                          nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True))
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float))

    def forward(self, x):
        theta = self.fc_loc(self.localization(x).view(-1, 10 * 3 * 3)).view(-1, 2, 3)
        x = torch.nn.functional.grid_sample(x, torch.nn.functional.affine_grid(theta, x.size(), align_corners=False),
                                            align_corners=False)
        x = torch.relu(torch.max_pool2d(self.conv1(x), 2))
        x = torch.relu(torch.max_pool2d(self.conv2(x), 2))
        return torch.log_softmax(self.fc2(torch.relu(self.fc1(x.view(-1, 320)))), dim=1)


class TestChannelsLastFallback:
    """Issue 23 item 1: fit's default channels_last layout meets the tutorial's ``.view``."""

    def test_tutorial_net_trains_contiguous_with_a_note(self, device, capsys):
        torch.manual_seed(0)
        model = _TutorialNet().to(device)
        digits = sample("mnist").subset(torch.arange(64))
        history = fit(model, digits, epochs=2, batch_size=32, device=device)
        assert history["step"].tolist() == [2, 4] and history["train_loss"].notna().all()
        out = capsys.readouterr().out
        assert out.count("training in the contiguous layout") == 1 and "channels_last=False" in out
        assert model.conv1.weight.is_contiguous()  # the model was switched back

    def test_callbacks_see_the_layout_that_runs(self, device):
        from stnviz.animate import ProgressRecorder

        probe = sample("mnist").get(torch.arange(4))
        recorder = ProgressRecorder(probe.images, probe.labels, every=1)  # records before the first step too
        fit(_TutorialNet().to(device), sample("mnist").subset(torch.arange(64)), epochs=1, batch_size=32,
            device=device, progress=False, callbacks=[recorder])
        assert [s.step for s in recorder.snapshots] == [0, 1, 2]

    def test_contiguous_by_choice_makes_no_note(self, device, capsys):
        model = _TutorialNet().to(device)
        fit(model, sample("mnist").subset(torch.arange(32)), epochs=1, batch_size=32, device=device, channels_last=False)
        assert "contiguous layout" not in capsys.readouterr().out

    def test_the_fallback_is_the_same_training(self, device):
        digits = sample("mnist").subset(torch.arange(64))
        weights = []
        for channels_last in (True, False):
            torch.manual_seed(0)
            model = _TutorialNet().to(device)
            fit(model, digits, epochs=1, batch_size=32, device=device, progress=False, channels_last=channels_last)
            weights.append(model.fc_loc[2].bias.detach().cpu())
        torch.testing.assert_close(weights[0], weights[1], atol=1e-5, rtol=1e-4)

    def test_other_errors_are_not_swallowed(self, device):
        class Broken(_TutorialNet):
            def forward(self, x):
                raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

        with pytest.raises(RuntimeError, match="mat1 and mat2"):
            fit(Broken().to(device), sample("mnist").subset(torch.arange(32)), epochs=1, batch_size=32, device=device,
                progress=False)
