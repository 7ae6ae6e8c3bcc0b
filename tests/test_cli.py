"""The command line's contract: every user error is one ``stnviz: error: ...`` line with exit
status 2 (1 for a diverged training run), never a traceback. (``make lab`` / ``make dashboard``:
tests/test_serve.py.)"""

import json
import os
import re
import socket
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from stnviz import get_model
from stnviz.checkpoints import load_model, save_checkpoint
from stnviz.cli import main


def one_error_line(err: str) -> str:
    """The single error line of stderr, apart from tqdm's progress bar segments."""
    segments = [seg.strip() for seg in re.split(r"[\r\n]+", err)]
    lines = [seg for seg in segments if seg and not re.match(r"^epoch \d+/\d+:\s+\d+%\|", seg)]
    assert len(lines) == 1, err
    assert lines[0].startswith("stnviz: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
def train_args(tmp_path, mnist_root, device):
    return ["train", "--data", "mnist", "--data-root", str(mnist_root), "--batch-size", "64",
            "--out", str(tmp_path / "run"), "--device", str(device), "--epochs", "1"]


class TestTrainErrors:
    def test_divergence_is_one_line_with_status_1(self, train_args, capsys):
        code = main(train_args + ["--model", "cnn_tutorial", "--lr", "1e6", "--schedule", "constant"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 1 and "diverged" in line

    @pytest.mark.parametrize("bad, says", [("[1,2]", "(a list)"), ("{bad", "Expecting property name"), ("3", "(a int)")])
    def test_bad_model_args(self, train_args, capsys, bad, says):
        code = main(train_args + ["--model", "cnn_tutorial", "--model-args", bad])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "--model-args must be a JSON object" in line and says in line and repr(bad) in line

    def test_unknown_builder_argument(self, train_args, capsys):
        code = main(train_args + ["--model", "cnn_tutorial", "--model-args", '{"colour": 1}'])
        assert code == 2 and "bad arguments for architecture 'cnn_tutorial'" in one_error_line(capsys.readouterr().err)

    def test_resume_from_another_architecture(self, train_args, tmp_path, capsys):
        assert main(train_args + ["--model", "cnn_tutorial"]) == 0
        capsys.readouterr()
        code = main(train_args + ["--model", "stn_tutorial", "--resume", str(tmp_path / "run" / "last.pt")])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "holds architecture 'cnn_tutorial'" in line and "size mismatch" not in line

    def test_resume_from_a_final_checkpoint(self, train_args, tmp_path, capsys, device):
        final = save_checkpoint(get_model("cnn_tutorial", device=device), tmp_path / "cnn_tutorial.mnist.pt")
        code = main(train_args + ["--model", "cnn_tutorial", "--resume", str(final)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "holds no trainer state" in line and "None epochs" not in line

    @pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-3"), ("--epochs", "0")])
    def test_non_positive_sizes_are_refused_by_the_parser(self, train_args, capsys, flag, value):
        args = [a for a in train_args]
        i = args.index(flag) if flag in args else None
        if i is not None:
            args[i + 1] = value
        else:
            args += [flag, value]
        with pytest.raises(SystemExit) as exc:
            main(args + ["--model", "cnn_tutorial"])
        assert exc.value.code == 2
        assert f"argument {flag}: expected a positive integer, got {int(value)}" in capsys.readouterr().err


class TestTrainGuards:
    """Issue 18: a training command can't silently do the wrong thing."""

    @pytest.mark.parametrize("flag, value, says", [
        ("--loc-lr", "-1", "expected a number >= 0, got -1"),  # trained by gradient ascent, exit 0
        ("--lr", "0", "expected a number > 0, got 0"),
        ("--lr", "nan", "expected a number > 0, got nan"),
        ("--weight-decay", "-0.1", "expected a number >= 0, got -0.1"),
        ("--label-smoothing", "1", "expected a number >= 0 and < 1, got 1"),
        ("--region-penalty", "-2", "expected a number >= 0, got -2"),
        ("--seed", "-1", "expected an integer >= 0 and <= 99999, got -1"),
        ("--seed", "1000000", "expected an integer >= 0 and <= 99999, got 1000000"),
        ("--checkpoint-every", "-5", "expected an integer >= 0, got -5"),
        ("--reinit-transformers", "-1", "expected an integer >= 0, got -1"),  # was the slice [:-1]
        ("--batch-size", "1.5", "expected a positive integer, got '1.5'"),
    ])
    def test_numeric_option_out_of_range_is_refused_by_the_parser(self, train_args, capsys, flag, value, says):
        with pytest.raises(SystemExit) as exc:
            main(train_args + ["--model", "stn_tutorial", flag, value])
        assert exc.value.code == 2
        assert f"argument {flag}: {says}" in capsys.readouterr().err

    def test_more_transformers_reinitialised_than_the_model_has(self, train_args, tmp_path, capsys):
        code = main(train_args + ["--model", "stn_tutorial", "--reinit-transformers", "2"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "--reinit-transformers must be an integer from 0 to 1" in line and "got 2" in line
        assert not (tmp_path / "run").exists()  # refused before any training; the empty folder went too

    def test_init_params_without_reinit_is_refused(self, train_args, capsys):
        code = main(train_args + ["--model", "stn_tutorial", "--init-params", "[0.8, 0, 0, 0, 0.8, 0]"])
        assert code == 2 and "set --reinit-transformers to N >= 1" in one_error_line(capsys.readouterr().err)

    @pytest.mark.parametrize("name", ["../../escaped.x", "ABSOLUTE/abs.x", "nodot", "a.b.c", "sub/dir.x", "a.b\n"])
    def test_name_is_arch_dot_tag(self, train_args, tmp_path, capsys, name):
        name = name.replace("ABSOLUTE", str(tmp_path / "elsewhere"))
        with pytest.raises(SystemExit) as exc:
            main(train_args + ["--model", "cnn_tutorial", "--name", name])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "argument --name: expected ARCH.TAG" in err and repr(name) in err
        assert not list(tmp_path.parent.rglob("*.x.pt"))  # ../../ from --out is tmp_path's parent

    @pytest.mark.parametrize("first, then, says", [
        (["--freeze", "classifier"], [], "it was a run with freeze=['classifier'], got freeze=[]"),
        (["--reinit-transformers", "1"], [], "it was a run with reinit_transformers=1, got reinit_transformers=0"),
        (["--loc-lr", "0"], ["--loc-lr", "0.01"], "it was a run with loc_lr=0.0, got loc_lr=0.01"),
    ])
    def test_resume_refuses_a_changed_training_setting(self, train_args, tmp_path, capsys, first, then, says):
        args = train_args + ["--model", "stn_tutorial", "--checkpoint-every", "0"]
        assert main(args + first) == 0
        capsys.readouterr()
        code = main(args + then + ["--resume", str(tmp_path / "run" / "last.pt")])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and says in line

    def test_a_second_run_into_the_same_folder_is_refused(self, train_args, tmp_path, capsys):
        out = tmp_path / "run"
        out.mkdir()
        other = subprocess.Popen(["sleep", "60"])  # stands in for the first run, still going
        try:
            lock = out / ".stnviz-run.lock"
            lock.write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "started": "2024-01-01T00:00:00",
                                        "command": "python -m stnviz train --first"}))
            code = main(train_args + ["--model", "cnn_tutorial"])
            line = one_error_line(capsys.readouterr().err)
            assert code == 2 and f"{out} is in use by another training run (pid {other.pid}" in line
            assert "--first" in line and f"remove its lock file {lock}" in line
            assert lock.is_file() and sorted(p.name for p in out.iterdir()) == [".stnviz-run.lock"]  # nothing written
        finally:
            other.kill()
            other.wait()

    def test_a_stale_lock_of_a_dead_process_is_taken_over(self, train_args, tmp_path, capsys):
        out = tmp_path / "run"
        out.mkdir()
        gone = subprocess.Popen(["true"])
        gone.wait()
        (out / ".stnviz-run.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname()}))
        assert main(train_args + ["--model", "cnn_tutorial"]) == 0
        assert (out / "cnn_tutorial.mnist.pt").is_file() and not (out / ".stnviz-run.lock").exists()

    def test_the_lock_is_removed_on_error(self, train_args, tmp_path, capsys):
        code = main(train_args + ["--model", "cnn_tutorial", "--lr", "1e6", "--schedule", "constant", "--checkpoint-every", "1"])
        assert code == 1 and "diverged" in one_error_line(capsys.readouterr().err)
        assert not (tmp_path / "run" / ".stnviz-run.lock").exists()

    def test_out_is_a_file(self, train_args, tmp_path, capsys):
        (tmp_path / "run").write_text("not a folder")
        code = main(train_args + ["--model", "cnn_tutorial"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and f"cannot write to {tmp_path / 'run'}: expected a folder, got a file" in line
        assert (tmp_path / "run").read_text() == "not a folder"

    @pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full to stand for a full disk")
    def test_a_full_disk_is_found_before_training(self, train_args, tmp_path, capsys, monkeypatch):
        import stnviz.train.folder as folder_module
        import stnviz.train.loop as loop_module

        real_mkstemp, steps = tempfile.mkstemp, []

        def onto_a_full_disk(*args, **kwargs):  # the probe's temp file: writes fail with ENOSPC
            fd, path = real_mkstemp(*args, **kwargs)
            if kwargs.get("prefix") == ".write-probe.":
                os.close(fd)
                fd = os.open("/dev/full", os.O_WRONLY)
            return fd, path

        monkeypatch.setattr(folder_module.tempfile, "mkstemp", onto_a_full_disk)
        monkeypatch.setattr(loop_module._Run, "train_step", lambda self, batch: steps.append(1))
        code = main(train_args + ["--model", "cnn_tutorial"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and f"cannot write {tmp_path / 'run'}: No space left on device" in line
        assert steps == [] and not (tmp_path / "run").exists()

    def test_a_disk_filling_up_mid_run_ends_in_one_line(self, train_args, tmp_path, capsys, monkeypatch):
        import errno

        import stnviz.train.loop as loop_module

        def full(model, path, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(loop_module, "save_checkpoint", full)
        code = main(train_args + ["--model", "cnn_tutorial"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and line == f"stnviz: error: cannot write {tmp_path / 'run' / 'best.pt'}: No space left on device"

    @pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root writes into read-only folders")
    def test_a_read_only_out_is_found_before_training(self, train_args, tmp_path, capsys):
        out = tmp_path / "run"
        out.mkdir()
        out.chmod(0o555)
        try:
            code = main(train_args + ["--model", "cnn_tutorial"])
        finally:
            out.chmod(0o755)
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "cannot write" in line and "Permission denied" in line


class TestEvalErrors:
    def test_model_built_for_other_image_size(self, tmp_path, mnist_root, capsys, device):
        rts = save_checkpoint(get_model("stn_cnn", device=device), tmp_path / "stn_cnn.mnist_rts.pt")  # 42x42 input
        code = main(["eval", "--model", str(rts), "--data", "mnist", "--data-root", str(mnist_root), "--device", str(device)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "built for 1x42x42" in line and "1x28x28" in line

    def test_corrupt_checkpoint(self, tmp_path, mnist_root, capsys, device):
        bad = tmp_path / "cnn.broken.pt"
        bad.write_bytes(b"PK\x03\x04 not really a zip")
        code = main(["eval", "--model", str(bad), "--data", "mnist", "--data-root", str(mnist_root), "--device", str(device)])
        assert code == 2 and str(bad) in one_error_line(capsys.readouterr().err)

    def test_capture_error_is_a_user_error(self, monkeypatch, capsys):
        from stnviz.capture import CaptureError

        def fail(args):
            raise CaptureError("no spatial transformer ran in the model\nexpected at least one")

        monkeypatch.setattr("stnviz.cli._eval", fail)
        code = main(["eval", "--model", "x.pt", "--data", "mnist"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "no spatial transformer ran" in line

    def test_a_bug_keeps_its_traceback(self, monkeypatch):
        def bug(args):
            raise ZeroDivisionError("a bug in stnviz")

        monkeypatch.setattr("stnviz.cli._eval", bug)
        with pytest.raises(ZeroDivisionError):
            main(["eval", "--model", "x.pt", "--data", "mnist"])


# --------------------------------------------------------------------------- Makefile token


class TestTrainEval:
    def test_train_then_eval(self, tmp_path, mnist_root, capsys, device):
        out = tmp_path / "run"
        code = main(["train", "--model", "stn_tutorial", "--data", "mnist", "--data-root", str(mnist_root),
                     "--epochs", "1", "--batch-size", "64", "--out", str(out), "--device", str(device)])
        assert code == 0
        ckpt = out / "stn_tutorial.mnist.pt"
        model = load_model(ckpt, device=device)
        assert model.meta["dataset"] == "mnist" and "test_accuracy" in model.meta["metrics"]
        assert model.meta["command"].startswith("python -m stnviz train")
        capsys.readouterr()
        assert main(["eval", "--model", str(ckpt), "--data", "mnist", "--data-root", str(mnist_root), "--device", str(device)]) == 0
        assert '"accuracy"' in capsys.readouterr().out

    def test_resume_flag(self, tmp_path, mnist_root, device):
        out = tmp_path / "run"
        args = ["train", "--model", "cnn_tutorial", "--data", "mnist", "--data-root", str(mnist_root),
                "--batch-size", "64", "--out", str(out), "--device", str(device)]
        assert main(args + ["--epochs", "2"]) == 0
        first = load_model(out / "cnn_tutorial.mnist.pt", device=device).meta["metrics"]
        # resuming a finished run trains no more and reports the same model
        assert main(args + ["--epochs", "2", "--resume", str(out / "last.pt")]) == 0
        assert len(pd.read_csv(out / "metrics.csv")) == 2
        assert load_model(out / "cnn_tutorial.mnist.pt", device=device).meta["metrics"] == first

    def test_resume_with_other_settings_is_refused(self, tmp_path, mnist_root, capsys, device):
        out = tmp_path / "run"
        args = ["train", "--model", "cnn_tutorial", "--data", "mnist", "--data-root", str(mnist_root),
                "--batch-size", "64", "--out", str(out), "--device", str(device)]
        assert main(args + ["--epochs", "1"]) == 0
        capsys.readouterr()
        assert main(args + ["--epochs", "3", "--resume", str(out / "last.pt")]) == 2
        assert "it was a run with epochs=1, got epochs=3" in capsys.readouterr().err

    def test_curriculum_flags(self, tmp_path, mnist_root, capsys, device):
        """--init-matching takes a related architecture's classifier, --freeze classifier keeps it
        exactly as it came while the transformer trains (weights/train.sh's RTS curriculum)."""
        common = ["--data", "mnist", "--data-root", str(mnist_root), "--epochs", "1", "--batch-size", "64",
                  "--device", str(device)]
        assert main(["train", "--model", "stn_cnn", "--model-args", '{"input_size": [1, 28, 28], "output_size": [28, 28]}',
                     "--freeze", "transformers", "--out", str(tmp_path / "a"), *common]) == 0
        first = load_model(tmp_path / "a" / "stn_cnn.mnist.pt", device=device)
        ident = get_model("stn_cnn", input_size=(1, 28, 28), output_size=(28, 28), device=device)
        assert torch.equal(first.transformer.regressor.bias.cpu(), ident.transformer.regressor.bias)  # frozen
        capsys.readouterr()
        # the classifier frozen, a fresh transformer learns in front of it
        assert main(["train", "--model", "stn_cnn", "--model-args", '{"input_size": [1, 28, 28], "output_size": [28, 28]}',
                     "--init", str(tmp_path / "a" / "stn_cnn.mnist.pt"), "--init-matching", "--freeze", "classifier",
                     "--reinit-transformers", "1", "--loc-lr", "0.01", "--out", str(tmp_path / "b"), *common]) == 0
        out = capsys.readouterr().out
        assert "init: " in out and "tensors loaded" in out
        second = load_model(tmp_path / "b" / "stn_cnn.mnist.pt", device=device)
        for key in ("body.0.weight", "head.3.weight", "head.3.bias"):
            assert torch.equal(second.state_dict()[key].cpu(), first.state_dict()[key].cpu()), key
        assert not torch.equal(second.transformer.regressor.weight.cpu(), first.transformer.regressor.weight.cpu())
        capsys.readouterr()
        assert main(["train", "--model", "stn_cnn", "--freeze", "classifier", "transformers",
                     "--out", str(tmp_path / "e"), *common]) == 2
        assert "leaves nothing to train" in one_error_line(capsys.readouterr().err)
        # another classifier shape (14x14 transformer output): refused without --init-matching ...
        other = ["train", "--model", "stn_cnn", "--model-args", '{"output_size": [14, 14]}',
                 "--init", str(tmp_path / "a" / "stn_cnn.mnist.pt"), *common]
        assert main(other + ["--out", str(tmp_path / "c")]) == 2
        assert "--init-matching" in one_error_line(capsys.readouterr().err)
        # ... and with it, every tensor whose shape differs is named as skipped
        assert main(other + ["--init-matching", "--out", str(tmp_path / "d")]) == 0
        assert "head.0.weight" in capsys.readouterr().out

    def test_missing_data_is_reported(self, tmp_path, capsys, device):
        code = main(["train", "--model", "stn_tutorial", "--data", "mnist", "--data-root", str(tmp_path),
                     "--epochs", "1", "--out", str(tmp_path / "o"), "--device", str(device)])
        assert code == 2 and "MNIST not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- issue 19: one TrainConfig


def _train_parser():
    from stnviz.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(getattr(a, "choices", None), dict))
    return sub.choices["train"]


class TestTrainOptionsFromTheConfig:
    def test_every_field_has_an_option_and_every_option_a_field(self):
        from stnviz.cli import RUN_OPTIONS
        from stnviz.train import TrainConfig

        dests = {a.dest for a in _train_parser()._actions if a.dest != "help"}
        assert dests - set(RUN_OPTIONS) == set(TrainConfig.names())
        assert set(RUN_OPTIONS) <= dests

    def test_the_options_defaults_help_and_ranges_are_the_fields(self):
        from dataclasses import MISSING, fields

        from stnviz.train import OPTION_RANGES, TrainConfig

        actions = {a.dest: a for a in _train_parser()._actions}
        for f in fields(TrainConfig):
            action = actions[f.name]
            assert action.option_strings[0] == "--" + f.name.replace("_", "-")
            assert action.help.startswith(f.metadata["help"])
            if f.default is MISSING:
                assert action.required
            else:
                assert action.default == (list(f.default) if isinstance(f.default, tuple) else f.default), f.name
            if f.name in OPTION_RANGES:
                assert action.type.__qualname__.startswith("_option"), f.name

    def test_parsed_defaults_make_the_default_config(self, tmp_path):
        from stnviz.cli import _config
        from stnviz.train import TrainConfig

        args = _train_parser().parse_args(["--model", "cnn", "--data", "mnist", "--out", str(tmp_path), "--epochs", "3"])
        assert _config(args) == TrainConfig(epochs=3)

    def test_a_setting_error_names_the_option(self, train_args, capsys):
        code = main(train_args + ["--model", "stn_tutorial", "--init-matching"])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and line == "stnviz: error: --init-matching loads the tensors of --init that fit; give --init too, or leave it out"


class TestFitAndTheCliTrainTheSame:
    def test_bit_identical_weights(self, tmp_path, mnist_root, capsys, device):
        """The same settings, once through ``python -m stnviz train`` and once through ``fit`` in
        Python: the same weights, bit for bit on the CPU (same seed; on CUDA to rounding: its
        backward passes accumulate in a varying order), starting weights included (--init,
        --reinit-transformers with --init-params), augmentation and a region penalty."""
        from stnviz.data import load_splits
        from stnviz.hub import get_model
        from stnviz.train import TrainConfig, fit

        torch.manual_seed(7)
        start = save_checkpoint(get_model("stn_tutorial", device=device), tmp_path / "stn_tutorial.start.pt")
        settings = dict(epochs=1, batch_size=128, seed=3, lr=0.02, loc_lr=0.01, augment="jitter", region_penalty=0.5,
                        init=str(start), reinit_transformers=1, init_params=[0.9, 0, 0.05, 0, 0.9, 0])
        out = tmp_path / "cli"
        assert main(["train", "--model", "stn_tutorial", "--data", "mnist", "--data-root", str(mnist_root),
                     "--out", str(out), "--device", str(device), "--epochs", "1", "--batch-size", "128", "--seed", "3",
                     "--lr", "0.02", "--loc-lr", "0.01", "--augment", "--region-penalty", "0.5", "--init", str(start),
                     "--reinit-transformers", "1", "--init-params", "[0.9, 0, 0.05, 0, 0.9, 0]"]) == 0
        by_cli = load_model(out / "last.pt", device=device).state_dict()

        splits = load_splits("mnist", root=mnist_root, seed=3)
        torch.manual_seed(3)  # as the CLI: the seed, then the model
        model = get_model("stn_tutorial", device=device, input_size=list(splits.image_size), num_classes=splits.num_classes)
        fit(model, splits.train, splits.val, TrainConfig(**settings), device=device, progress=False)
        by_fit = model.state_dict()
        assert by_cli.keys() == by_fit.keys()
        initial = get_model("stn_tutorial", device=device).state_dict()
        assert [k for k in by_fit if not torch.equal(by_fit[k].cpu(), initial[k])]  # the run trained
        for k, v in by_fit.items():
            if device.type == "cpu":
                assert torch.equal(by_cli[k], v), k
            else:
                torch.testing.assert_close(by_cli[k], v, rtol=1e-4, atol=1e-6, msg=k)


def _recipes() -> list[list[str]]:
    """The ``train`` arguments of every command in weights/train.sh (``run NAME ...`` and
    ``stage DIR ...``), with the ``--out`` (and ``--name``) the script adds."""
    import shlex

    text = (Path(__file__).resolve().parents[1] / "weights" / "train.sh").read_text().replace("\\\n", " ")
    commands = []
    for m in re.finditer(r"^\s*(?:\S+\)\s+)?(run \$NAME|stage \S+)\s+(.*?)\s*(?:;;)?\s*$", text, re.M):
        args = shlex.split(m.group(2).replace("$RUNS", "/runs"))
        commands.append(args + ["--out", "/runs/x"] + (["--name", "a.b"] if m.group(1).startswith("run") else []))
    return commands


class TestShippedRecipes:
    def test_every_flag_of_weights_train_sh_still_means_what_it_meant(self):
        """Each command that trained a shipped checkpoint parses into a valid TrainConfig, and
        every setting it does not pass is the default it was trained with (the CLI's defaults
        then: SGD momentum 0.9, weight decay 5e-4, onecycle, batch 128, lr 0.05)."""
        from stnviz.cli import _config, _model_args

        recipes = _recipes()
        assert len(recipes) == 14  # 11 shipped names, 3 first stages
        for args in recipes:
            parsed = _train_parser().parse_args(args)
            config = _config(parsed)
            assert isinstance(_model_args(parsed.model_args), dict)
            given = {a.lstrip("-").replace("-", "_") for a in args if a.startswith("--")}
            expected = dict(batch_size=128, lr=0.05, loc_lr=None, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                            schedule="onecycle", label_smoothing=0.0, seed=0, amp=None, augment=None, region_penalty=0.0,
                            channels_last=True, init=None, init_matching=False, reinit_transformers=0, init_params=None,
                            freeze=(), checkpoint_every=200, keep_best=True)
            for name, value in expected.items():
                if name not in given:
                    assert getattr(config, name) == value, (args, name)
            if "augment" in given:
                assert config.augment in ("jitter", "reframe")


# --------------------------------------------------------------------------- diagnose


class TestDiagnose:
    def test_shipped_model_on_shipped_data_is_clean(self, capsys, device):
        code = main(["diagnose", "--model", "stn_cnn.mnist_rts", "--data", "mnist_rts", "--n", "128", "--device", str(device)])
        out = capsys.readouterr().out
        assert code == 0
        assert out.startswith("stnviz diagnose on 128 samples: no problem found")
        assert re.search(r"^ok\s+zoom_out\s+transformer\s+0\.3\d*\s+1\.2$", out, re.M)  # the table, one row per check
        assert "no_effect" in out and "error" not in out

    def test_a_zoom_out_checkpoint_exits_1(self, tmp_path, capsys, device):
        model = get_model("stn_tutorial", device=device)
        model.transformers[0].set_constant_params(torch.tensor([2.0, 0, 0, 0, 2.0, 0]))  # 4x the input's area
        path = save_checkpoint(model, tmp_path / "stn_tutorial.zoomed.pt")
        code = main(["diagnose", "--model", str(path), "--data", "mnist", "--n", "64", "--device", str(device)])
        out = capsys.readouterr().out
        assert code == 1
        assert re.search(r"^error\s+zoom_out\s+transformer\s+4\s+2$", out, re.M)
        assert "error zoom_out on 'transformer': the sampled region is 4.00x the input's area" in out
        assert "fix: bring the area ratio from 4.00 under 1.2" in " ".join(out.split())

    def test_json(self, tmp_path, capsys, device):
        model = get_model("stn_tutorial", device=device)
        model.transformers[0].set_constant_params(torch.tensor([2.0, 0, 0, 0, 2.0, 0]))
        path = save_checkpoint(model, tmp_path / "stn_tutorial.zoomed.pt")
        code = main(["diagnose", "--model", str(path), "--data", "mnist", "--n", "32", "--json", "--device", str(device)])
        report = json.loads(capsys.readouterr().out)
        assert code == 1 and report["worst"] == "error" and report["samples"] == 32
        assert report["model"] == str(path) and report["data"] == "mnist"
        first = report["findings"][0]
        assert first["severity"] == "error" and first["check"] in ("zoom_out", "outside_image")
        zoom = next(f for f in report["findings"] if f["check"] == "zoom_out")
        assert zoom["value"] == pytest.approx(4.0, rel=1e-3) and zoom["samples"] == 32
        assert report["figures"]["transformer"]["area"] == pytest.approx(4.0, rel=1e-3)

    def test_data_without_a_shipped_sample_needs_a_root(self, capsys, device):
        code = main(["diagnose", "--model", "stn_cnn.mnist_rts", "--data", "cifar10", "--device", str(device)])
        line = one_error_line(capsys.readouterr().err)
        assert code == 2 and "shipped samples hold mnist, mnist_<kind> and gtsrb, got 'cifar10'" in line
        assert "--data-root" in line

    def test_data_root_gives_its_test_split(self, mnist_root, capsys, device):
        code = main(["diagnose", "--model", "stn_tutorial.mnist", "--data", "mnist", "--data-root", str(mnist_root),
                     "--n", "32", "--json", "--device", str(device)])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["samples"] == 32
