import subprocess
import sys

import pytest
import torch

from stnviz.cli import main
from stnviz.data import draw_glyphs
from stnviz.demo import run_demo


class TestDrawGlyphs:
    def test_shapes_range_determinism(self):
        a = draw_glyphs(7, (20, 24), channels=3)
        assert a.shape == (7, 3, 20, 24) and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, draw_glyphs(7, (20, 24), channels=3))

    def test_glyphs_show_orientation(self):
        """A half turn changes every glyph, and F / L change under either mirror, so the demo
        shows which way a transform turned or flipped."""
        g = draw_glyphs(size=(32, 32))
        assert (g - g.flip(-1, -2)).abs().amax(dim=(1, 2, 3)).min() > 0.5
        f_and_l = draw_glyphs(glyphs=("F", "L"), size=(32, 32))
        assert (f_and_l - f_and_l.flip(-1)).abs().amax(dim=(1, 2, 3)).min() > 0.5
        assert (f_and_l - f_and_l.flip(-2)).abs().amax(dim=(1, 2, 3)).min() > 0.5

    def test_bad_input(self):
        with pytest.raises(ValueError, match="positive number of images, got 0"):
            draw_glyphs(0)
        with pytest.raises(ValueError, match="glyph must be one of"):
            draw_glyphs(1, glyphs=("Q",))


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
