import subprocess
import sys

import numpy as np
import pytest
import torch

from stnviz import demo, geometry
from stnviz.animate import Snapshot
from stnviz.cli import main
from stnviz.demo import load_recorded_run, run_demo, save_recorded_run


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
        import stnviz.animate as animate

        monkeypatch.setattr(animate.os, "access", lambda path, mode: False)  # as for a non-root user in a 0555 folder
        monkeypatch.setattr(demo, "families_figure", lambda *a, **k: pytest.fail("work started before out was checked"))
        with pytest.raises(ValueError, match=r"out .*out cannot be made: .* is read-only"):
            run_demo(tmp_path / "out", device=device, quick=True)


def _recording(tmp_path):
    theta = torch.eye(2, 3).expand(4, 2, 3)
    snaps = [Snapshot(step=10 * i, epoch=0.5 * i, params=theta, outputs=torch.zeros(4, 1, 28, 28),
                      outlines=geometry.sampled_outline(theta, "affine", (28, 28)), loss=0.3, accuracy=0.75) for i in range(3)]
    return save_recorded_run(tmp_path / "rec.npz", torch.rand(4, 1, 28, 28), None, snaps, {"command": "test"})


class TestDamagedRecording:
    def test_round_trip(self, tmp_path):
        inputs, snaps, meta = load_recorded_run(_recording(tmp_path))
        assert inputs.shape == (4, 1, 28, 28) and [s.step for s in snaps] == [0, 10, 20] and meta == {"command": "test"}

    def test_missing_file_is_no_recording(self, tmp_path):
        assert load_recorded_run(tmp_path / "none.npz") is None

    @pytest.mark.parametrize("keep", [0, 100, 0.5, -20])
    def test_truncated(self, tmp_path, keep):
        path = _recording(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: int(keep * len(data)) if isinstance(keep, float) else keep % len(data)])
        with pytest.raises(ValueError, match=r"training recording .*rec.npz is not a readable .npz file \(.*\); "
                                             r"expected numpy's savez format .* holding inputs, labels, meta, step") as info:
            load_recorded_run(path)
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize("change, message", [
        (lambda d: d.update(step=d["step"][:2]), r"'epoch' has shape \(3,\); expected one row per snapshot \(2\)"),
        (lambda d: d.update(outputs=d["outputs"][:, :2]), r"'outputs' has shape \(3, 2, 1, 28, 28\) for inputs of shape \(4, 1, 28, 28\)"),
        (lambda d: d.update(meta=np.array("{not json")), r"'meta' is not JSON"),
        (lambda d: d.pop("loss"), r" lacks the arrays loss; expected inputs, labels, meta, step"),
    ])
    def test_arrays_that_disagree(self, tmp_path, change, message):
        path = _recording(tmp_path)
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        change(d)
        np.savez(path, **d)
        with pytest.raises(ValueError, match=rf"training recording .*rec.npz.*{message}"):
            load_recorded_run(path)

    def test_save_needs_an_npz_path(self, tmp_path):
        with pytest.raises(ValueError, match=r"recording path must end in .npz, got '.*rec.txt'"):
            save_recorded_run(tmp_path / "rec.txt", torch.rand(2, 1, 8, 8), None, [], {})
        assert list(tmp_path.iterdir()) == []
