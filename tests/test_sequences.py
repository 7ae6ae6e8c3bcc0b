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


# --------------------------------------------------------------------------- issue 18: bounded reads, bad input


def _png_claiming(path, width, height):
    """A small PNG whose header (IHDR) claims ``width x height``: Pillow reports that size without
    decoding; decoding it would fail (or cost width * height pixels)."""
    import struct
    import zlib

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"IHDR")
    raw[at + 4 : at + 12] = struct.pack(">II", width, height)
    raw[at + 17 : at + 21] = struct.pack(">I", zlib.crc32(bytes(raw[at : at + 17])))
    path.write_bytes(bytes(raw))
    return path


class TestBoundedReads:
    def test_clip_is_converted_and_resized_frame_by_frame(self, tmp_path, monkeypatch):
        """Only one frame is ever held at full size as float: every resize is of a single frame,
        and the numpy memory at the peak is below the clip's size even as uint8."""
        import tracemalloc

        from stnviz.animate import save_mp4
        from stnviz.data import sequences

        frames = [np.full((120, 160, 3), 6 * i, np.uint8) for i in range(40)]
        path = save_mp4(frames, tmp_path / "clip.mp4", fps=10)
        clip_uint8_bytes = 40 * 120 * 160 * 3
        batches = []
        real_resize = sequences.resize_frames

        def spy(x, size):
            batches.append(tuple(x.shape))
            return real_resize(x, size)

        monkeypatch.setattr(sequences, "resize_frames", spy)
        tracemalloc.start()
        try:
            out, _ = read_frames(path, size=(16, 16))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out.shape == (40, 3, 16, 16) and out.dtype == torch.float32
        assert batches == [(1, 3, 120, 160)] * 40
        assert peak < clip_uint8_bytes, (peak, clip_uint8_bytes)  # before: the clip in float64, 8x this
        assert float(out[20].mean()) == pytest.approx(120 / 255, abs=0.03)

    @pytest.mark.parametrize("channels", [None, 1, 3])
    def test_frames_kept_at_full_size_are_not_the_reused_buffer(self, tmp_path, channels):
        for i, level in enumerate((10, 100, 200)):
            Image.fromarray(np.full((6, 5), level, np.uint8)).save(tmp_path / f"{i}.png")
        frames, _ = read_frames(tmp_path, channels=channels)
        assert [round(float(f.mean()) * 255) for f in frames] == [10, 100, 200]
        assert frames.shape == (3, channels or 1, 6, 5)

    def test_per_frame_results_match_the_whole_batch(self):
        frames = torch.rand(6, 3, 40, 30, generator=torch.Generator().manual_seed(0))
        out, _ = read_frames((frames * 255).to(torch.uint8), size=(12, 10), channels=1)
        whole = (frames * 255).to(torch.uint8).double().div(255).float()
        whole = (whole * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        whole = torch.nn.functional.interpolate(whole, size=(12, 10), mode="bilinear", align_corners=False,
                                                antialias=True).clamp(0, 1)
        assert torch.allclose(out, whole, atol=1e-6)

    def test_huge_image_is_refused_from_its_header(self, tmp_path, monkeypatch):
        import imageio.v2 as imageio

        from stnviz.data.sequences import MAX_FRAME_PIXELS

        folder = tmp_path / "frames"
        folder.mkdir()
        _png_claiming(folder / "big.png", 12000, 12000)

        def no_decoding(*args, **kwargs):
            raise AssertionError("the image was decoded before its size was checked")

        monkeypatch.setattr(imageio, "imread", no_decoding)
        assert MAX_FRAME_PIXELS == 40_000_000
        with pytest.raises(ValueError, match=r"image .*big\.png has frames of 12000x12000 = 144,000,000 pixels, above "
                                             r"the bound of 40,000,000 per frame \(MAX_FRAME_PIXELS\)"):
            read_frames(folder, size=(64, 64))

    def test_the_bound_applies_to_videos_and_gifs_and_can_be_raised(self, tmp_path):
        from stnviz.animate import save_mp4

        video = save_mp4([np.zeros((32, 48, 3), np.uint8)] * 3, tmp_path / "v.mp4", fps=5)
        with pytest.raises(ValueError, match=r"video .*v\.mp4 has frames of 48x32 = 1,536 pixels, above the bound of 1,000"):
            read_frames(video, max_pixels=1000)
        assert read_frames(video, max_pixels=48 * 32)[0].shape == (3, 3, 32, 48)
        images = [Image.fromarray(np.full((12, 10, 3), v, np.uint8)) for v in (0, 200)]
        images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:])
        with pytest.raises(ValueError, match=r"GIF .*a\.gif has frames of 10x12 = 120 pixels, above the bound of 100"):
            read_frames(tmp_path / "a.gif", max_pixels=100)
        with pytest.raises(ValueError, match="max_pixels must be a positive integer, got 0"):
            read_frames(tmp_path / "a.gif", max_pixels=0)


class TestBadInput:
    @pytest.mark.parametrize("size", [(0, 64), (-8, 64), (64, -1), (64.0, 64), (32, 2.5), ("64", 64), 64, (64,),
                                      (1, 2, 3), (True, 64)])
    def test_bad_size_is_one_clear_error_naming_the_argument(self, tmp_path, size):
        with pytest.raises(ValueError, match=r"^size must be \(H, W\), two positive integers, got "):
            read_frames(torch.rand(2, 1, 8, 8), size=size)
        with pytest.raises(ValueError, match=r"^size must be \(H, W\), two positive integers"):
            read_frames(tmp_path / "missing.mp4", size=size)  # checked before the file is looked at

    def test_integer_sizes_of_any_kind_are_accepted(self):
        for size in ((4, 6), [4, 6], (np.int64(4), np.int32(6)), torch.Size([4, 6])):
            assert read_frames(torch.rand(2, 1, 8, 8), size=size)[0].shape == (2, 1, 4, 6)

    def test_nan_frame_is_bad_input_naming_the_source_and_frame(self, tmp_path):
        frames = torch.rand(4, 1, 8, 8)
        frames[2, 0, 3, 3] = float("nan")
        with pytest.raises(ValueError, match=r"^frames: frame 2 holds NaN or inf pixels; .*bad input, not a transform problem"):
            read_frames(frames, size=(4, 4))
        folder = tmp_path / "tiffs"
        folder.mkdir()
        for i in range(2):
            image = np.full((6, 6), 0.5, np.float32)
            image[0, 0] = np.nan if i == 1 else 0.5
            Image.fromarray(image).save(folder / f"{i}.tiff")
        with pytest.raises(ValueError, match=r"^folder .*tiffs: frame 1 \(1\.tiff\) holds NaN or inf pixels"):
            read_frames(folder)
