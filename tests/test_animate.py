import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from photos import IMAGENET, imagenet, photo  # shared test pictures
from stnviz import geometry, get_model, render
from stnviz.animate import (
    ProgressRecorder,
    Snapshot,
    check_output_folder,
    check_output_path,
    compose_frame,
    probe_snapshot,
    save_contact_sheet,
    save_gif,
    save_mp4,
    sequence_frames,
    snapshots_from_checkpoints,
    write_animation,
)
from stnviz.analysis import run_sequence
from stnviz.checkpoints import save_checkpoint
from stnviz.data import sample, sample_tracks
from stnviz.train import fit


@pytest.fixture(scope="module")
def probe():
    b = sample("mnist").get(torch.arange(900, 906))
    return b.images, b.labels


def _trained_recorder(probe, device, every=4, max_snapshots=50, epochs=2):
    s = sample("mnist")
    torch.manual_seed(0)
    rec = ProgressRecorder(*probe, every=every, max_snapshots=max_snapshots)
    fit(get_model("stn_tutorial", device=device), s.subset(torch.arange(256)), None, epochs=epochs, batch_size=32, lr=0.003,
        optimizer="adam", device=device, progress=False, callbacks=[rec])
    return rec


class TestProgressRecorder:
    def test_frames_composed_once_and_never_stale(self, device, monkeypatch):
        """A logger pictures each record, then the whole run: each frame is composed once, and a
        frame always shows its own snapshot, also after thinning (max_snapshots) drops some."""
        model = get_model("stn_cnn", input_size=(1, 28, 28), device=device).eval()
        digits = sample("mnist").get(torch.arange(4))
        rec = ProgressRecorder(digits.images, digits.labels, every=1, max_snapshots=3)
        import stnviz.animate.recorder as recorder_module

        composed, pictured = [], []
        monkeypatch.setattr(recorder_module, "compose_frame", lambda *a, **k: composed.append(1) or compose_frame(*a, **k))
        with torch.no_grad():
            for step in range(7):
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))  # a different transform each step
                rec.record(model, step)
                pictured.append(rec.snapshots[-1])  # the latest after any thinning
                assert np.array_equal(rec.image(-1, tile=24), compose_frame(
                    rec.inputs, rec.snapshots[-1], tile=24).transpose(2, 0, 1))
        first = rec.image(0, tile=24)
        first[:] = 0  # a caller's copy: the composed frame is untouched
        assert rec.image(0, tile=24).any()
        video = rec.video(tile=24)
        assert len(composed) == len({id(p) for p in pictured})  # once per snapshot pictured; the video reused them
        for k, snap in enumerate(rec.snapshots):
            assert np.array_equal(video[k], compose_frame(rec.inputs, snap, tile=24).transpose(2, 0, 1))
        assert set(rec._composed) == {id(s) for s in rec.snapshots}  # thinned snapshots' frames gone

    def test_records_every_n_steps(self, probe, device):
        rec = _trained_recorder(probe, device)  # 8 steps an epoch, 16 in all
        assert [s.step for s in rec.snapshots] == [0, 4, 8, 12, 16]
        assert [s.epoch for s in rec.snapshots] == [0.0, 0.5, 1.0, 1.5, 2.0]
        s = rec.snapshots[-1]
        assert s.outputs.shape == (6, 1, 28, 28) and s.params.shape == (6, 2, 3) and s.outlines.shape == (6, 32, 2)
        assert 0 <= s.accuracy <= 1 and math.isfinite(s.loss) and math.isfinite(s.train_loss)
        assert s.outputs.device.type == s.params.device.type == s.outlines.device.type == "cpu"
        # the transformer moved away from identity during training
        assert not torch.allclose(rec.snapshots[-1].params, rec.snapshots[0].params)
        # each snapshot's outputs are the probe warped by its own theta
        for snap in (rec.snapshots[0], s):
            expected = geometry.warp(rec.inputs, geometry.affine_grid(snap.params, (28, 28)))
            torch.testing.assert_close(snap.outputs, expected, atol=1e-5, rtol=1e-4)

    def test_bounded_memory_keeps_even_spacing(self, probe, device):
        rec = _trained_recorder(probe, device, every=1, max_snapshots=6, epochs=2)
        assert len(rec.snapshots) <= 6
        steps = [s.step for s in rec.snapshots]
        gaps = np.diff(steps)
        assert steps[0] == 0 and len(set(gaps.tolist())) == 1  # evenly spaced
        assert rec.every > 1

    def test_probe_follows_the_models_device_and_dtype(self, probe, device):
        images, labels = probe  # CPU float32 images and int64 labels
        model = get_model("stn_tutorial", device=device).double()
        snap = probe_snapshot(model, images, labels, step=3)
        assert snap.step == 3 and 0 <= snap.accuracy <= 1 and math.isfinite(snap.loss)
        for t in (snap.params, snap.outputs, snap.outlines):
            assert t.device.type == "cpu"
        torch.testing.assert_close(snap.outputs.float(), images, atol=1e-5, rtol=0)  # untrained: the identity

    def test_bad_probe(self):
        with pytest.raises(ValueError, match=r"probe images must be \(N, C, H, W\)"):
            ProgressRecorder(torch.rand(0, 1, 28, 28))


class TestAnyLoop:
    """The recorder as a plain PyTorch loop calls it, and what it hands to loggers (issue 23 item 2)."""

    def test_plain_pytorch_loop(self, probe, device):
        model = get_model("stn_tutorial", device=device)
        digits = sample("mnist").subset(torch.arange(96))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
        rec = ProgressRecorder(*probe)
        before = [p.detach().clone() for p in model.parameters()]
        for step, (images, labels) in enumerate(digits.batches(32, device=device)):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            rec.record(model, step, train_loss=loss.item())
        assert model.training  # the user's modes are left as they were
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
        assert [s.step for s in rec.snapshots] == [0, 1, 2]
        table = rec.to_frame()
        assert list(table.columns) == ["step", "epoch", "train_loss", "loss", "accuracy", "area", "outside", "identity_px",
                                       "spread_px", *(f"theta_{i}" for i in range(6))]
        assert table["step"].tolist() == [0, 1, 2] and table.notna().all().all()
        assert rec.latest() == {k: float(v) for k, v in table.iloc[-1].items()}
        assert all(isinstance(v, float) for v in rec.latest().values())

    def test_video_and_image(self, probe, device):
        model = get_model("stn_tutorial", device=device)
        rec = ProgressRecorder(*probe)
        for step in (0, 10, 20):
            rec.record(model, step)
        frames = rec.frames(tile=48)
        video = rec.video(tile=48)
        assert video.dtype == np.uint8 and video.shape == (3, 3, *frames[0].shape[:2])
        np.testing.assert_array_equal(video[1], frames[1].transpose(2, 0, 1))
        image = rec.image(tile=48)
        assert image.dtype == np.uint8 and image.shape == video.shape[1:]
        np.testing.assert_array_equal(image, video[-1])
        np.testing.assert_array_equal(rec.image(0, tile=48), video[0])
        with pytest.raises(ValueError, match=r"index must be a whole number in \[-3, 2\].*got 3"):
            rec.image(3)

    def test_nothing_recorded(self, probe):
        rec = ProgressRecorder(*probe)
        for export in (rec.video, rec.image, rec.latest):
            with pytest.raises(ValueError, match="holds no snapshots: call recorder.record"):
                export()
        assert rec.to_frame().empty

    @pytest.mark.parametrize("scale, area", [(0.5, 0.25), (1.5, 2.25)])
    def test_health_figures_follow_theta(self, probe, device, scale, area):
        model = get_model("stn_tutorial", device=device)
        model.transformers[0].set_constant_params(torch.tensor([scale, 0, 0, 0, scale, 0.1]))
        rec = ProgressRecorder(*probe)
        rec.record(model, 0)
        row = rec.latest()
        assert row["area"] == pytest.approx(area, rel=0.05)
        assert (row["area"] < 1) == (scale < 1)
        assert row["outside"] == pytest.approx(0.0, abs=1e-9) if scale < 1 else row["outside"] > 0.4
        assert row["spread_px"] == pytest.approx(0.0, abs=1e-6)  # the same theta for every probe image
        assert row["identity_px"] > 1
        assert [row[f"theta_{i}"] for i in range(6)] == pytest.approx([scale, 0, 0, 0, scale, 0.1], abs=1e-6)

    def test_two_input_model_through_forward(self, probe, device):
        class TwoInputs(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = get_model("stn_tutorial", device=device)

            def forward(self, images, brightness):
                return self.net(images * brightness)

        images, labels = probe
        with pytest.raises(TypeError):  # as it is, the recorder cannot call it
            ProgressRecorder(images, labels).record(TwoInputs(), 0)
        rec = ProgressRecorder(images, labels, forward=lambda m, x: m(x, 1.0))
        rec.record(TwoInputs(), 0)
        assert rec.snapshots[0].params.shape == (6, 2, 3) and math.isfinite(rec.latest()["loss"])
        with pytest.raises(ValueError, match="forward must be callable"):
            ProgressRecorder(images, forward="model")

    def test_normalised_probe_with_mean_and_std(self, probe, device):
        class IdentitySTN(torch.nn.Module):  # a model fed normalised pixels: samples them as they are
            def forward(self, x):
                grid = torch.nn.functional.affine_grid(torch.eye(2, 3, device=x.device).expand(len(x), 2, 3),
                                                       list(x.shape), align_corners=False)
                return torch.nn.functional.grid_sample(x, grid, align_corners=False).flatten(1)[:, :10]

        images, _ = probe
        model = IdentitySTN().to(device)
        plain = ProgressRecorder(images)
        normalised = ProgressRecorder((images - 0.1307) / 0.3081, mean=[0.1307], std=[0.3081])
        for rec in (plain, normalised):
            rec.record(model, 0)
        assert render.display_of(normalised).mean == (0.1307,)
        shown, expected = normalised.image(tile=48).astype(int), plain.image(tile=48).astype(int)
        assert np.abs(shown - expected).max() <= 2  # the normalisation undone: the same picture
        with pytest.raises(ValueError, match="pass display or its mean/std/denormalize, not both"):
            ProgressRecorder(images, display=render.Display(), mean=[0.5], std=[0.5])
        with pytest.raises(ValueError, match="pass both mean and std"):
            ProgressRecorder(images, mean=[0.5])


class TestExports:
    def test_gif_mp4_contact_sheet(self, probe, tmp_path, device):
        rec = _trained_recorder(probe, device)
        gif = rec.save_gif(tmp_path / "p.gif", fps=5)
        frames = imageio.mimread(gif)
        assert len(frames) == len(rec.snapshots)
        assert frames[0].shape[:2] == rec.frames()[0].shape[:2]
        for got, made in zip(frames, rec.frames()):  # the file holds the frames (to a GIF palette)
            assert np.abs(got[..., :3].astype(int) - made.astype(int)).mean() < 4
        mp4 = rec.save_mp4(tmp_path / "p.mp4", fps=5)
        reader = imageio.get_reader(mp4, format="FFMPEG")
        n = sum(1 for _ in reader)
        reader.close()
        assert n == len(rec.snapshots)
        sheet = imageio.imread(rec.save_contact_sheet(tmp_path / "sheet.png", rows=3))
        assert sheet.ndim == 3 and sheet.shape[0] > 3 * 60
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gif", "p.mp4", "sheet.png"]  # no temp files

    def test_frame_caption_and_layout(self, probe, device):
        rec = _trained_recorder(probe, device, epochs=1)
        f = compose_frame(rec.inputs, rec.snapshots[-1], columns=3, tile=64)
        assert f.dtype == np.uint8 and f.shape == (24 + 2 * (64 + 4) + 4, 3 * (2 * 64 + 4) + 4 * 4, 3)

    def test_failed_write_leaves_nothing(self, tmp_path):
        frames = [np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)]
        with pytest.raises(ValueError, match="one size"):
            save_gif(frames, tmp_path / "x.gif")
        with pytest.raises(ValueError, match="no frames"):
            save_mp4([], tmp_path / "x.mp4")
        with pytest.raises(ValueError, match=r"must end in .gif or .mp4"):
            write_animation([np.zeros((4, 4, 3), np.uint8)], tmp_path / "x.avi")
        assert list(tmp_path.iterdir()) == []

    def test_odd_sizes_pad_for_h264(self, tmp_path):
        frames = [np.full((15, 21, 3), i * 40, np.uint8) for i in range(4)]
        path = save_mp4(frames, tmp_path / "odd.mp4")
        reader = imageio.get_reader(path, format="FFMPEG")
        first = reader.get_data(0)
        reader.close()
        assert first.shape == (16, 22, 3)

    def test_from_checkpoints(self, probe, tmp_path, device):
        paths = []
        model = get_model("stn_tutorial", device=device)
        for epoch in range(3):
            with torch.no_grad():
                model.transformers[0].regressor.bias.copy_(torch.tensor([1.0 - 0.1 * epoch, 0, 0, 0, 1.0, 0]))
            paths.append(save_checkpoint(model, tmp_path / f"e{epoch}.pt", {"epochs": epoch + 1}))
        snaps = snapshots_from_checkpoints(paths, *probe, device=device)
        assert [s.epoch for s in snaps] == [1.0, 2.0, 3.0]
        assert [round(float(s.params[0, 0, 0]), 3) for s in snaps] == [1.0, 0.9, 0.8]
        with pytest.raises(ValueError, match="at least one checkpoint"):
            snapshots_from_checkpoints([], *probe, device=device)

    def test_sequence_frames(self, tmp_path, device):
        run = run_sequence(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[0])
        frames = sequence_frames(run, tile=64)
        assert len(frames) == 30 and frames[0].shape == (64 + 22 + 4, 2 * 64 + 12, 3)
        path = write_animation(frames, tmp_path / "track.gif")
        decoded = imageio.mimread(path)
        assert len(decoded) == 30 and decoded[0].shape[:2] == frames[0].shape[:2]
        for t in (0, 15, 29):  # the file holds these frames (a GIF's palette costs a few levels)
            diff = np.abs(decoded[t][..., :3].astype(int) - frames[t].astype(int))
            assert diff.mean() < 4, (t, diff.mean())


class TestFramesAreRegionTiles:
    """Each pair in a frame is render.region_tile's picture, pixel for pixel (one drawing, one place)."""

    def test_compose_frame(self):
        theta = torch.tensor([[0.6, 0.1, 0.2], [-0.1, 0.7, 0.0]]).expand(5, 2, 3)
        inputs = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        outputs = geometry.warp(inputs, geometry.affine_grid(theta, (20, 20)))
        snap = Snapshot(step=3, epoch=0.1, params=theta, outputs=outputs, loss=0.5, accuracy=0.5,
                        outlines=geometry.sampled_outline(theta, "affine", (28, 28)))
        frame = compose_frame(inputs, snap, columns=2, tile=72)
        for i in range(5):
            r, c = divmod(i, 2)
            x, y = 4 + c * (2 * 72 + 8), 24 + 4 + r * (72 + 4)
            pair = render.region_tile(inputs[i], outputs[i], snap.outlines[i], margin=0.15, size=72, gap=4)
            assert np.array_equal(frame[y:y + 72, x:x + 2 * 72 + 4], pair), i

    def test_contact_sheet_cells(self, tmp_path):
        from PIL import Image

        snap = _identity_snapshot(3)
        snap.outputs = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(1))
        path = save_contact_sheet(torch.zeros(3, 1, 28, 28), [snap], tmp_path / "sheet.png", tile=50)
        sheet = np.asarray(Image.open(path).convert("RGB"))
        for c in range(3):  # each cell: the output at the largest whole magnification (2x), resized to the tile
            x = 120 + c * 52
            assert np.array_equal(sheet[2:52, x:x + 50], render.overlay_square(snap.outputs[c], 50)), c

    def test_sequence_frames_with_boxes(self, device):
        run = run_sequence(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[0])
        assert run.boxes is not None
        frames = sequence_frames(run, tile=80, caption=False)
        for t in (0, 17):
            pair = render.region_tile(run.frames[t], run.outputs[t], run.outlines[t], box=run.boxes[t], margin=0.15,
                                      size=80, gap=4)
            assert np.array_equal(frames[t][:80, 4:4 + 164], pair), t
            assert (pair == (52, 199, 89)).all(-1).any()  # the annotated box, in BOX_COLOR


# --------------------------------------------------------------------------- issue 12: fps, temp files


KILLED_EXPORT = """
import os, signal, sys
import numpy as np
import PIL.Image
from stnviz.animate import save_gif

real_save = PIL.Image.Image.save

def save_then_die(self, fp, *args, **kwargs):
    real_save(self, fp, *args, **kwargs)  # the temp file is written, the rename never happens
    os.kill(os.getpid(), signal.SIGKILL)

PIL.Image.Image.save = save_then_die
save_gif([np.zeros((16, 16, 3), np.uint8)] * 3, sys.argv[1])
"""


class TestExportSafety:
    @pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf"), "fast"])
    @pytest.mark.parametrize("writer", [save_gif, save_mp4])
    def test_bad_fps_is_refused(self, tmp_path, writer, fps):
        frames = [np.zeros((8, 8, 3), np.uint8)] * 2
        with pytest.raises(ValueError, match=r"fps"):
            writer(frames, tmp_path / "x.out", fps=fps)
        assert list(tmp_path.iterdir()) == []

    def test_gif_fps_above_what_gif_can_play(self, tmp_path):
        with pytest.raises(ValueError, match=r"fps of a GIF must be a number in \(0, 50\], got 60"):
            save_gif([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "x.gif", fps=60)
        with pytest.raises(ValueError, match=r"fps of a GIF must be a number in \(0, 50\], got 0"):
            write_animation([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "x.gif", fps=0)

    def test_fps_is_what_the_file_says(self, tmp_path):
        from PIL import Image

        frames = [np.full((8, 8, 3), v, np.uint8) for v in (0, 120, 240)]
        with Image.open(save_gif(frames, tmp_path / "a.gif", fps=4)) as im:
            assert im.info["duration"] == 250
        reader = imageio.get_reader(save_mp4(frames, tmp_path / "a.mp4", fps=3), format="FFMPEG")
        assert reader.get_meta_data()["fps"] == pytest.approx(3)
        reader.close()

    def test_killed_export_leaves_a_temp_file_that_the_next_write_cleans(self, tmp_path):
        import os
        import subprocess
        import sys
        import time

        from stnviz._io import is_temp_file

        proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(tmp_path / "anim.gif")], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == -9, proc.stderr
        (left,) = list(tmp_path.iterdir())
        assert left.name.startswith(".") and is_temp_file(left.name) and not left.name.endswith("anim.gif")
        save_gif([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "other.gif")
        assert left.exists()  # young: may be a write still running
        old = time.time() - 2 * 3600
        os.utime(left, (old, old))
        save_mp4([np.zeros((8, 8, 3), np.uint8)] * 2, tmp_path / "next.mp4")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["next.mp4", "other.gif"]


# --------------------------------------------------------------------------- issue 18.7: bad output paths and sizes

FRAMES = [np.zeros((8, 8, 3), np.uint8)] * 2


def _identity_snapshot(n=4):
    theta = torch.eye(2, 3).expand(n, 2, 3)
    return Snapshot(step=1, epoch=0.5, params=theta, outputs=torch.zeros(n, 1, 28, 28),
                    outlines=geometry.sampled_outline(theta, "affine", (28, 28)), loss=0.3, accuracy=0.75)


WRITERS = {  # writer, its suffix, the option its errors name
    "gif": (lambda frames, path, **kw: save_gif(frames, path, **kw), ".gif", "GIF path"),
    "mp4": (lambda frames, path, **kw: save_mp4(frames, path, **kw), ".mp4", "MP4 path"),
    "sheet": (lambda frames, path, **kw: save_contact_sheet(torch.zeros(4, 1, 28, 28), [_identity_snapshot()], path, **kw),
              ".png", "contact sheet path"),
}


class TestOutputPaths:
    @pytest.mark.parametrize("kind", sorted(WRITERS))
    def test_path_that_is_a_folder(self, tmp_path, kind):
        write, suffix, option = WRITERS[kind]
        (tmp_path / f"out{suffix}").mkdir()
        with pytest.raises(ValueError, match=rf"{option} '.*out\{suffix}' is a folder; expected a file path ending in \{suffix}"):
            write(FRAMES, tmp_path / f"out{suffix}")
        assert [p.name for p in tmp_path.iterdir()] == [f"out{suffix}"]

    @pytest.mark.parametrize("kind", sorted(WRITERS))
    @pytest.mark.parametrize("name", ["x.jpg", "x", "x.gif.tmp"])
    def test_unknown_suffix(self, tmp_path, kind, name):
        write, suffix, option = WRITERS[kind]
        with pytest.raises(ValueError, match=rf"{option} must end in \{suffix}, got '.*{name}'"):
            write(FRAMES, tmp_path / name)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("kind", sorted(WRITERS))
    def test_folder_that_is_a_file(self, tmp_path, kind):
        write, suffix, option = WRITERS[kind]
        (tmp_path / "notes").write_text("a file")
        with pytest.raises(ValueError, match=rf"{option} '.*notes/sub/x\{suffix}' cannot be written: its folder .*notes/sub "
                                             rf"cannot be made: .*notes is a file, not a folder"):
            write(FRAMES, tmp_path / "notes" / "sub" / f"x{suffix}")

    @pytest.mark.parametrize("kind", sorted(WRITERS))
    def test_read_only_folder(self, tmp_path, kind, monkeypatch):
        import stnviz.animate.files as animate

        write, suffix, option = WRITERS[kind]
        monkeypatch.setattr(animate.os, "access", lambda path, mode: False)  # as for a non-root user in a 0555 folder
        with pytest.raises(ValueError, match=rf"{option} '.*x\{suffix}' cannot be written: its folder .* is read-only"):
            write(FRAMES, tmp_path / f"x{suffix}")

    def test_missing_folders_are_made(self, tmp_path):
        path = save_gif(FRAMES, tmp_path / "new" / "sub" / "x.gif")
        assert path.is_file()

    def test_path_is_checked_before_any_frame_is_made(self, probe, tmp_path, monkeypatch):
        rec = ProgressRecorder(*probe)
        rec.snapshots.append(_identity_snapshot(probe[0].shape[0]))
        monkeypatch.setattr(rec, "frames", lambda **kw: pytest.fail("frames composed before the path was checked"))
        with pytest.raises(ValueError, match="GIF path must end in .gif"):
            rec.save_gif(tmp_path / "progress.mp4")
        (tmp_path / "d.mp4").mkdir()
        with pytest.raises(ValueError, match="MP4 path '.*d.mp4' is a folder"):
            rec.save_mp4(tmp_path / "d.mp4")
        with pytest.raises(ValueError, match="fps of a GIF"):
            rec.save_gif(tmp_path / "progress.gif", fps=0)

    def test_check_output_folder(self, tmp_path):
        assert check_output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
        (tmp_path / "f").write_text("x")
        with pytest.raises(ValueError, match=r"out .*f is a file; expected a folder"):
            check_output_folder(tmp_path / "f", option="out")
        with pytest.raises(ValueError, match=r"out must be a folder path, got int"):
            check_output_folder(3, option="out")
        with pytest.raises(ValueError, match=r"path must be a file path ending in .gif, got NoneType"):
            check_output_path(None, (".gif",))


class TestBadFramesAndSizes:
    @pytest.mark.parametrize("writer", [save_gif, save_mp4])
    @pytest.mark.parametrize("frames, message", [
        ([np.zeros((8, 8, 3))] * 2, r"frames must be uint8 \(0 to 255\); frame 0 is float64"),
        ([np.zeros((8, 8), np.uint8)] * 2, r"frames must be \(H, W, 3\) RGB; frame 0 has shape \(8, 8\)"),
        ([np.zeros((0, 0, 3), np.uint8)] * 2, r"frames must be at least 1 x 1 pixels; frame 0 has shape \(0, 0, 3\)"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.int16)], r"frame 1 is int16"),
        (None, r"frames must be a sequence of \(H, W, 3\) uint8 arrays, got NoneType"),
    ])
    def test_bad_frames_are_one_line(self, tmp_path, writer, frames, message):
        suffix = ".gif" if writer is save_gif else ".mp4"
        with pytest.raises(ValueError, match=message):
            writer(frames, tmp_path / f"x{suffix}")
        assert list(tmp_path.iterdir()) == []  # an empty MP4 was written for 0 x 0 frames before

    @pytest.mark.parametrize("loop", [-1, 1.5, 70000, True])
    def test_bad_gif_loop(self, tmp_path, loop):
        with pytest.raises(ValueError, match=rf"loop must be a whole number in \[0, 65535\] \(0: forever\), got {loop!r}"):
            save_gif(FRAMES, tmp_path / "x.gif", loop=loop)

    @pytest.mark.parametrize("quality", [0, 11, -1, "high"])
    def test_bad_mp4_quality(self, tmp_path, quality):
        with pytest.raises(ValueError, match=rf"quality of an MP4 must be a number in \[1, 10\], got {quality!r}"):
            save_mp4(FRAMES, tmp_path / "x.mp4", quality=quality)

    @pytest.mark.parametrize("option, value", [("rows", 0), ("rows", -1), ("tile", 0), ("images", 0), ("images", -2), ("tile", 2.5)])
    def test_bad_contact_sheet_sizes(self, tmp_path, option, value):
        with pytest.raises(ValueError, match=rf"{option} must be a whole number >= 1, got {value!r}"):
            save_contact_sheet(torch.zeros(4, 1, 28, 28), [_identity_snapshot()], tmp_path / "s.png", **{option: value})

    @pytest.mark.parametrize("option, value", [("columns", 0), ("tile", 0), ("tile", -5)])
    def test_bad_frame_sizes(self, option, value):
        with pytest.raises(ValueError, match=rf"{option} must be a whole number >= 1, got {value}"):
            compose_frame(torch.zeros(4, 1, 28, 28), _identity_snapshot(), **{option: value})

    def test_snapshot_of_another_probe(self, tmp_path):
        with pytest.raises(ValueError, match=r"the snapshot holds 4 outputs and 4 regions; expected one per input image \(8\)"):
            compose_frame(torch.zeros(8, 1, 28, 28), _identity_snapshot())
        with pytest.raises(ValueError, match=r"snapshot 0 holds 4 outputs; expected one per probe image \(8\)"):
            save_contact_sheet(torch.zeros(8, 1, 28, 28), [_identity_snapshot()], tmp_path / "s.png")

    def test_sequence_frames_tile(self, device):
        run = run_sequence(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[0].images[:2])
        with pytest.raises(ValueError, match=r"tile must be a whole number >= 1, got 0"):
            sequence_frames(run, tile=0)


# --------------------------------------------------------------------------- issue 20 item 2: one display pipeline

class TestDisplayInFrames:
    """GIF / MP4 frames, contact sheets and sequence frames show a normalised input as the
    [0, 1] picture it came from: by the display given, or the model's, remembered."""

    def test_progress_frames_and_contact_sheet(self, tmp_path, device):
        x = photo()
        model = get_model("stn_gtsrb", device=device).eval()
        truth = probe_snapshot(model, x, None)
        snap = probe_snapshot(model, imagenet(x), None)
        want = compose_frame(x, truth, tile=48)
        got = compose_frame(imagenet(x), snap, tile=48, display=render.Display(**IMAGENET))
        assert np.abs(got.astype(int) - want).max() <= 1
        raw = compose_frame(imagenet(x), snap, tile=48, display=render.Display(**IMAGENET, channels="bgr"))
        assert np.abs(raw.astype(int) - want).max() > 50  # the channel order is applied
        rec = ProgressRecorder(imagenet(x))
        rec.record(render.set_display(model, **IMAGENET), step=0)
        assert np.abs(rec.frames(tile=48)[0].astype(int) - want).max() <= 1  # the model's display, remembered
        from PIL import Image

        sheet = np.asarray(Image.open(rec.save_contact_sheet(tmp_path / "sheet.png", tile=32)).convert("RGB"))
        plain = ProgressRecorder(x)
        plain.record(render.set_display(model), step=0)
        expected = np.asarray(Image.open(plain.save_contact_sheet(tmp_path / "plain.png", tile=32)).convert("RGB"))
        assert np.abs(sheet.astype(int) - expected).max() <= 1

    def test_sequence_frames_of_a_normalised_model(self, device):
        x = photo(6)
        model = get_model("stn_gtsrb", device=device).eval()
        want = sequence_frames(run_sequence(model, x), tile=48, caption=False)
        render.set_display(model, **IMAGENET, class_names={k: f"sign {k}" for k in range(43)})
        run = run_sequence(model, imagenet(x))
        got = sequence_frames(run, tile=48, caption=False)  # the run remembers the model's display
        assert all(np.abs(g.astype(int) - w).max() <= 1 for g, w in zip(got, want))
        stretched = sequence_frames(run, tile=48, caption=False, display=render.Display())  # [0, 1] by its own range
        outputs = [f[:48, 56:104] for f in stretched]  # the output panels
        assert max(float(((o == 0) | (o == 255)).mean()) for o in outputs) < 0.01
