"""stnviz.data.sequences: frame sequences from tensors, videos, GIFs and folders, in [0, 1]."""

import numpy as np
import pytest
import torch
from PIL import Image

from stnviz.data import read_frames


class TestReadFrames:
    def test_video_file_round_trip(self, tmp_path):
        from stnviz.animate import save_mp4

        frames = [np.full((32, 32, 3), 30 * i, np.uint8) for i in range(5)]
        path = save_mp4(frames, tmp_path / "v.mp4", fps=5)
        t, boxes = read_frames(path, size=(16, 16))
        assert t.shape == (5, 3, 16, 16) and boxes is None
        assert float(t[4].mean()) == pytest.approx(120 / 255, abs=0.03)

    def test_folder(self, tmp_path):
        import imageio.v2 as imageio

        for i in range(3):
            imageio.imwrite(tmp_path / f"{i:03d}.png", np.full((8, 10, 3), 80 * i, np.uint8))
        t, _ = read_frames(tmp_path, channels=1)
        assert t.shape == (3, 1, 8, 10)
        assert [round(float(x), 3) for x in t.mean((1, 2, 3))] == [0.0, round(80 / 255, 3), round(160 / 255, 3)]

    def test_bad_sources(self, tmp_path):
        bad = tmp_path / "corrupt.mp4"
        bad.write_bytes(b"this is not a video" * 100)
        with pytest.raises(ValueError, match=r"cannot read video .*corrupt\.mp4"):
            read_frames(bad)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            read_frames(tmp_path / "missing.mp4")
        empty = tmp_path / "empty"
        empty.mkdir()
        with pytest.raises(ValueError, match="holds no images"):
            read_frames(empty)
        import imageio.v2 as imageio

        mixed = tmp_path / "mixed"
        mixed.mkdir()
        imageio.imwrite(mixed / "a.png", np.zeros((8, 8, 3), np.uint8))
        imageio.imwrite(mixed / "b.png", np.zeros((9, 8, 3), np.uint8))
        with pytest.raises(ValueError, match="mixed sizes"):
            read_frames(mixed)
        with pytest.raises(ValueError, match=r"\(T, C, H, W\)"):
            read_frames(torch.zeros(3, 4, 4))


class TestReadFramesScaling:
    def test_uint8_tensor_is_scaled(self):
        from stnviz.data import read_frames

        frames, _ = read_frames(torch.full((3, 1, 8, 8), 255, dtype=torch.uint8))
        assert frames.dtype == torch.float32 and float(frames.max()) == 1.0

    @pytest.mark.parametrize("dtype, top", [(torch.int16, 32767), (torch.int32, 2**31 - 1)])
    def test_other_integer_tensors_are_scaled_by_their_range(self, dtype, top):
        from stnviz.data import read_frames

        frames, _ = read_frames(torch.tensor([0, top // 2, top], dtype=dtype).view(1, 1, 1, 3))
        assert frames.flatten().tolist() == pytest.approx([0.0, 0.5, 1.0], abs=1e-4)

    def test_16_bit_png_is_scaled(self, tmp_path):
        from stnviz.data import read_frames

        ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
        for i in range(2):
            Image.fromarray(ramp).save(tmp_path / f"f{i}.png")
        frames, _ = read_frames(tmp_path)
        assert frames.shape == (2, 1, 16, 16)
        assert float(frames.max()) == 1.0 and float(frames.min()) == 0.0

    def test_grey_alpha_png_becomes_grey(self, tmp_path):
        from stnviz.data import read_frames

        grey = np.full((8, 8), 128, np.uint8)
        Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(tmp_path / "a.png")
        frames, _ = read_frames(tmp_path)
        assert frames.shape == (1, 1, 8, 8) and torch.allclose(frames, torch.full_like(frames, 128 / 255))
        rgb, _ = read_frames(tmp_path, channels=3)
        assert rgb.shape == (1, 3, 8, 8)

    def test_animated_gif_is_a_frame_source(self, tmp_path):
        from stnviz.data import read_frames

        levels = [0, 80, 160, 240]
        images = [Image.fromarray(np.full((12, 10, 3), (v, 255 - v, 30), np.uint8)) for v in levels]
        images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=50, loop=0)
        frames, boxes = read_frames(tmp_path / "clip.gif", size=(24, 20))
        assert frames.shape == (4, 3, 24, 20) and boxes is None
        assert [round(float(f[0].mean()) * 255) for f in frames] == levels
        grey = [Image.fromarray(np.full((12, 10), v, np.uint8)) for v in levels]
        grey[0].save(tmp_path / "grey.gif", save_all=True, append_images=grey[1:], duration=50, loop=0)
        frames, _ = read_frames(tmp_path / "grey.gif")
        assert frames.shape == (4, 1, 12, 10) and [round(float(f.mean()) * 255) for f in frames] == levels
