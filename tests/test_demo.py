import subprocess
import sys

import pytest

from stnviz import demo
from stnviz.cli import main
from stnviz.demo import run_demo


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

    def test_bad_device_is_a_clear_error(self, tmp_path, capsys):
        assert main(["demo", "--out", str(tmp_path), "--device", "gpu0"]) == 2
        assert "device must be" in capsys.readouterr().err

    def test_module_entry_point_lists_models(self):
        import stnviz

        out = subprocess.run([sys.executable, "-m", "stnviz", "models", "stn_*"], capture_output=True, text=True, check=True)
        assert out.stdout.split() == stnviz.list_models("stn_*")
        assert {"stn_cifar", "stn_cnn", "stn_gtsrb", "stn_tutorial"} <= set(out.stdout.split())
        assert all(n.startswith("stn_") for n in out.stdout.split())


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
