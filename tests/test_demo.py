import subprocess
import sys

import pytest
import torch

from stnviz import demo
from stnviz.cli import main
from stnviz.demo import ATTENTION_RECIPE, region_figures, run_demo
from stnviz.diagnose import DiagnoseCallback, diagnose
from stnviz.train import fit


class TestDemo:
    def test_writes_everything_it_says(self, tmp_path, capsys, device):
        assert main(["demo", "--out", str(tmp_path), "--device", str(device), "--quick"]) == 0
        printed = {line[len("wrote "):] for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")}
        on_disk = {str(p) for p in tmp_path.iterdir()}
        assert printed == on_disk  # every file announced, nothing else (no temp files left)
        names = {p.name for p in tmp_path.iterdir()}
        assert {"transforms.png", "training_progress.gif", "training_progress.mp4", "training_contact_sheet.png",
                "summary.md"} <= names
        assert {"overlays_gtsrb.png", "overlays_mnist_rts.png", "stability_track.png", "stability_track.gif",
                "stability_summary.csv", "stability_summary.png"} <= names
        import matplotlib.image as mpimg

        img = mpimg.imread(tmp_path / "transforms.png")
        assert img.shape[0] > 400 and img.shape[1] > 400
        assert img[..., :3].std() > 0.1  # a real picture, not a blank canvas
        summary = (tmp_path / "summary.md").read_text()
        assert "stn_tutorial.mnist" in summary
        assert "stnviz.diagnose on the trained model: " in summary  # the live run's verdict
        assert "DiagnoseCallback during training: " in summary

    def test_bad_device_is_a_clear_error(self, tmp_path, capsys):
        assert main(["demo", "--out", str(tmp_path), "--device", "gpu0"]) == 2
        assert "device must be" in capsys.readouterr().err

    def test_module_entry_point_lists_models(self):
        import stnviz

        out = subprocess.run([sys.executable, "-m", "stnviz", "models", "stn_*"], capture_output=True, text=True, check=True)
        assert out.stdout.split() == stnviz.list_models("stn_*")
        assert {"stn_cifar", "stn_cnn", "stn_gtsrb", "stn_tutorial"} <= set(out.stdout.split())
        assert all(n.startswith("stn_") for n in out.stdout.split())


# --------------------------------------------------------------------------- issue 21.5: a run that closes in


@pytest.fixture(scope="module")
def trained(device):
    """The demo's live run, trained once: (model, its DiagnoseCallback, 256 test canvases)."""
    recipe = ATTENTION_RECIPE
    model = recipe.model(device)
    monitor = DiagnoseCallback(recipe.probe(64).images, every=80, warn=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as run_demo trains it on a CPU (and 4x faster than two threads on a busy machine)
    try:
        fit(model, recipe.train_set(), None, recipe.config, device=device, progress=False, callbacks=[monitor])
    finally:
        torch.set_num_threads(threads)
    return model, monitor, recipe.probe(256, device)


class TestAttentionRecipe:
    """The demo's live run (ATTENTION_RECIPE, as make demo and notebook 03 train it): the window
    closes in on the digits, inside the canvas, and diagnose finds nothing wrong with it."""

    def test_starts_at_the_whole_canvas(self, device):
        recipe = ATTENTION_RECIPE
        assert region_figures(recipe.model(device), recipe.probe(8, device).images) == {"area": 1.0, "overshoot_px": 0.0}

    def test_region_closes_in_on_the_digits(self, trained):
        model, monitor, check = trained
        regions = region_figures(model, check.images)
        assert regions["area"] < 0.5, regions  # from 1.0 (the whole canvas) to under half of it
        assert regions["overshoot_px"] < 1.5, regions  # the outlines lie inside the 42x42 frame (1.5 px slack)
        probe = region_figures(model, ATTENTION_RECIPE.probe(8).images)  # the 8 canvases of the GIF
        assert probe["area"] < 0.5 and probe["overshoot_px"] < 0.5, probe
        areas = monitor.to_frame()["area"].tolist()
        assert areas[0] > 0.99 and areas[-1] < 0.5, areas  # it closed in during training

    def test_diagnose_reports_no_zoom_out(self, trained):
        model, monitor, check = trained
        d = diagnose(model, check.images, check.labels)
        assert [f.severity for f in d.of("zoom_out")] == ["ok"], d.summary()
        for check_id in ("outside_image", "input_independent", "identity", "no_effect"):  # it looks at each digit and needs it
            assert [f.severity for f in d.of(check_id)] == ["ok"], (check_id, d.summary())
        assert d.figures["transformer"]["accuracy"] > d.figures["transformer"]["accuracy_identity"] + 0.2
        assert monitor.findings == []  # no collapsing or exploding during training


# --------------------------------------------------------------------------- issue 18.7: bad paths and files


class TestBadOutputFolder:
    @pytest.mark.parametrize("under, message", [
        ("", r"out .*notes is a file; expected a folder"),
        ("sub", r"out .*notes/sub cannot be made: .*notes is a file, not a folder"),
    ])
    def test_refused_before_any_work(self, tmp_path, monkeypatch, under, message, device):
        (tmp_path / "notes").write_text("a file")
        monkeypatch.setattr(demo, "families_figure", lambda *a, **k: pytest.fail("work started before out was checked"))
        with pytest.raises(ValueError, match=message):
            run_demo(tmp_path / "notes" / under if under else tmp_path / "notes", device=device, quick=True)

    def test_read_only_folder(self, tmp_path, monkeypatch, device):
        import stnviz.animate.files as animate

        monkeypatch.setattr(animate.os, "access", lambda path, mode: False)  # as for a non-root user in a 0555 folder
        monkeypatch.setattr(demo, "families_figure", lambda *a, **k: pytest.fail("work started before out was checked"))
        with pytest.raises(ValueError, match=r"out .*out cannot be made: .* is read-only"):
            run_demo(tmp_path / "out", device=device, quick=True)
