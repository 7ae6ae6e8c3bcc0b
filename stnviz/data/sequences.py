"""Frame sequences for stability analysis: GTSRB tracks, video files, folders of images.

:func:`read_frames` turns any of them into ``(T, C, H, W)`` float in [0, 1], resized (bilinear,
antialiased) to the model's input size, plus the normalised boxes when the source has them.
Video is decoded by imageio with imageio-ffmpeg's bundled ffmpeg, animated GIFs by Pillow.
Integer pixels are scaled by their dtype's range (uint8 by 255, 16-bit by 65535); an alpha
channel is dropped (grey + alpha becomes grey, RGBA becomes RGB).

Memory is bounded by the output, not the source: frames are decoded, converted to float32 and
resized one at a time, and only the resized ones are kept (a 2-s 1080p clip read at 64x64 held
6.3 GB when the whole clip was converted at full size first). A file whose frames are larger than
:data:`MAX_FRAME_PIXELS` is refused from its header, before decoding, where the format allows.
"""

from __future__ import annotations

import numbers
import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Track

__all__ = ["IMAGE_SUFFIXES", "MAX_FRAME_PIXELS", "read_frames", "resize_frames"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: The most pixels (``H * W``) a frame read from a file may have: 40 M, so 8K UHD (7680 x 4320,
#: 33 M) fits, and a 12000 x 12000 image (144 M pixels, 1.7 GB as float32 RGB from a 137 KB PNG)
#: is refused from its header. Pass ``max_pixels=`` to :func:`read_frames` to read larger frames.
MAX_FRAME_PIXELS = 40_000_000


def _check_size(size) -> tuple[int, int]:
    """``size`` as ``(H, W)``, two positive integers, else one ``ValueError`` naming it.

    Example:
        >>> _check_size([48, 64])
        (48, 64)
        >>> _check_size((0, 64))
        Traceback (most recent call last):
        ...
        ValueError: size must be (H, W), two positive integers, got (0, 64)
    """
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be (H, W), two positive integers, got {size!r}") from None
    if isinstance(h, torch.Tensor) or isinstance(w, torch.Tensor):
        h, w = (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for v in (h, w))
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 1 for v in (h, w)):
        raise ValueError(f"size must be (H, W), two positive integers, got {size!r}")
    return int(h), int(w)


def resize_frames(frames: torch.Tensor, size) -> torch.Tensor:
    """``(T, C, H, W)`` -> ``(T, C, *size)`` (bilinear, antialiased; a no-op at the same size).

    Example:
        >>> tuple(resize_frames(torch.ones(3, 1, 64, 64), (32, 32)).shape)
        (3, 1, 32, 32)
    """
    size = _check_size(size)
    if tuple(frames.shape[-2:]) == size:
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _check_pixels(what: str, h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ValueError(
            f"{what} has frames of {w}x{h} = {h * w:,} pixels, above the bound of {max_pixels:,} per frame "
            "(MAX_FRAME_PIXELS); refused before decoding. Pass max_pixels= to read_frames to read it"
        )


_UINT8_UNIT = (np.arange(256, dtype=np.float64) / 255).astype(np.float32)


def _unit_range(arr: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1]: integers divided by their dtype's maximum, floats as they are."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:  # the common case: a table, no float64 copy of the frame
        return _UINT8_UNIT[arr]
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(arr.astype(np.float64) / np.iinfo(arr.dtype).max, 0.0, 1.0).astype(np.float32)
    return arr.astype(np.float32)


def _drop_alpha(arr: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)``: grey + alpha -> grey, RGBA -> RGB."""
    if arr.shape[-1] == 2:
        return arr[..., :1]
    if arr.shape[-1] > 3:
        return arr[..., :3]
    return arr


class _FrameBuffer:
    """Converts decoded frames ``(H, W)`` or ``(H, W, C)`` to ``(C, H, W)`` float32 in [0, 1] in
    the same full-size buffer every time: fresh full-size float arrays per frame fragment the heap
    (glibc kept +400 MB after a 2-s 1080p clip read at 64x64), a reused one does not. The returned
    tensor is overwritten by the next frame."""

    def __init__(self):
        self.out: np.ndarray | None = None
        self.tensor: torch.Tensor | None = None

    def __call__(self, arr: np.ndarray) -> torch.Tensor:
        if arr.ndim == 2:
            arr = arr[..., None]
        chw = _drop_alpha(arr).transpose(2, 0, 1)
        if self.out is None or self.out.shape != chw.shape:
            self.out = np.empty(chw.shape, np.float32)
            self.tensor = torch.from_numpy(self.out)
        if chw.dtype == np.uint8:  # the common case: a table lookup straight into the buffer
            np.take(_UINT8_UNIT, chw, out=self.out)
        else:
            self.out[...] = _unit_range(chw)
        return self.tensor


def _tensor_frames(frames: torch.Tensor) -> torch.Tensor:
    """A frame tensor as float in [0, 1]: integer dtypes scaled by their range (uint8 by 255)."""
    if frames.dtype == torch.bool:
        return frames.float()
    if not frames.is_floating_point():
        if frames.is_complex():
            raise ValueError(f"frames must be real images, got dtype {frames.dtype}")
        return (frames.double() / torch.iinfo(frames.dtype).max).clamp(0, 1).float()
    return frames.float()


def _convert_channels(frame: torch.Tensor, channels: int | None) -> torch.Tensor:
    """``(C, H, W)`` grey <-> RGB to ``channels`` (ITU-R 601 luma for RGB -> grey)."""
    if channels is None or frame.shape[0] == channels:
        return frame
    if channels == 3 and frame.shape[0] == 1:
        return frame.expand(3, -1, -1)
    if channels == 1 and frame.shape[0] == 3:
        return (frame * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    raise ValueError(f"cannot convert {frame.shape[0]}-channel frames to {channels} channels")


def _collect(frames: Iterable, what: str, size, channels: int | None, max_pixels: int | None = None,
             names: list | None = None) -> torch.Tensor:
    """Convert, check and resize frames one at a time; stack the results ``(T, C, H', W')``.

    ``frames`` yields decoded arrays ``(H, W[, C])`` or tensors ``(C, H, W)``; only one of them is
    held at full size at a time. ``what`` names the source in errors, ``names`` each frame's file.
    """
    out: list[torch.Tensor] = []
    first = None
    convert = _FrameBuffer()
    for i, raw in enumerate(frames):
        shape = tuple(raw.shape)
        if first is None:
            first = shape
            if max_pixels is not None and isinstance(raw, np.ndarray):  # formats without a header check
                _check_pixels(what, shape[0], shape[1], max_pixels)
        elif shape != first:
            raise ValueError(f"{what} has frames of mixed sizes {first} and {shape} (frame {i}); "
                             "expected one size for the whole sequence")
        is_array = isinstance(raw, np.ndarray)
        frame = convert(raw) if is_array else _tensor_frames(raw)
        if (not is_array or raw.dtype.kind == "f") and not bool(torch.isfinite(frame).all()):
            label = f" ({names[i]})" if names else ""
            raise ValueError(f"{what}: frame {i}{label} holds NaN or inf pixels; expected finite pixel values in [0, 1] "
                             "(bad input, not a transform problem: repair or drop the frame)")
        frame = _convert_channels(frame, channels)
        if size is not None:
            frame = resize_frames(frame.unsqueeze(0), size)[0]
        elif is_array and frame.data_ptr() == convert.tensor.data_ptr():
            frame = frame.clone()  # the buffer is reused for the next frame
        out.append(frame.contiguous())
    if not out:
        raise ValueError(f"{what} holds no frames; expected at least one")
    return torch.stack(out)


def _unreadable(kind: str, path: Path, e: Exception) -> ValueError:
    first = str(e).splitlines()[0] if str(e) else ""
    return ValueError(f"cannot read {kind} {path}: {type(e).__name__}: {first}")


def _gif_frames(path: Path, max_pixels: int) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence

    try:
        im = Image.open(path)  # reads the header only
    except Exception as e:  # Pillow raises OSError / SyntaxError / ValueError for bad files
        raise _unreadable("GIF", path, e) from None
    with im:
        _check_pixels(f"GIF {path}", im.height, im.width, max_pixels)
        try:
            grey = im.mode in ("L", "LA", "I;16", "1") or (
                im.mode == "P" and all(r == g == b for r, g, b in zip(*[iter(im.getpalette() or [])] * 3))
            )
            for f in ImageSequence.Iterator(im):
                yield np.asarray(f.convert("L" if grey else "RGB"))
        except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways part-way
            raise _unreadable("GIF", path, e) from None


def _video_frames(path: Path, max_pixels: int) -> Iterator[np.ndarray]:
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except Exception as e:  # imageio raises OSError / RuntimeError / IndexError for bad files
        raise _unreadable("video", path, e) from None
    try:
        try:
            w, h = reader.get_meta_data()["size"]  # from ffmpeg's header, before decoding
        except Exception as e:  # noqa: BLE001
            raise _unreadable("video", path, e) from None
        _check_pixels(f"video {path}", int(h), int(w), max_pixels)
        try:
            for f in reader:
                yield np.asarray(f)
        except Exception as e:  # noqa: BLE001
            raise _unreadable("video", path, e) from None
    finally:
        reader.close()


def _image_header_size(path: Path) -> tuple[int, int] | None:
    """``(H, W)`` from an image file's header (Pillow opens lazily), or None if Pillow can't tell."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the bound is checked here
            with Image.open(path) as im:
                return im.height, im.width
    except Image.DecompressionBombError as e:  # above twice Pillow's own limit: the size is in its message
        raise ValueError(f"image {path} is too large to read: {e}") from None
    except Exception:  # noqa: BLE001 - not a format Pillow knows; imageio may still read it
        return None


def _image_files(path: Path) -> list[Path]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); expected a sequence of frames")
    return files


def _folder_frames(files: list[Path], max_pixels: int) -> Iterator[np.ndarray]:
    import imageio.v2 as imageio

    for f in files:
        hw = _image_header_size(f)
        if hw is not None:
            _check_pixels(f"image {f}", *hw, max_pixels)
        try:
            a = np.asarray(imageio.imread(f))
        except Exception as e:
            raise ValueError(f"cannot read image {f}: {type(e).__name__}: {e}") from None
        if hw is None:
            _check_pixels(f"image {f}", a.shape[0], a.shape[1], max_pixels)
        yield a


def read_frames(source, size=None, *, channels: int | None = None,
                max_pixels: int = MAX_FRAME_PIXELS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames ``(T, C, H, W)`` in [0, 1] and boxes ``(T, 4)`` (normalised ``x1, y1, x2, y2``) or ``None``.

    ``source``: a :class:`~stnviz.data.Track`, a ``(T, C, H, W)`` tensor, a video file (``.mp4``,
    ``.avi``, ``.gif`` ...), or a folder of images (sorted by name). ``size``: resize to
    ``(H, W)``, two positive integers. ``channels``: convert grey <-> RGB to this many channels.
    ``max_pixels``: the most pixels per frame read from a file (:data:`MAX_FRAME_PIXELS`),
    checked from the file's header before decoding. Frames are converted and resized one at a
    time, so reading a long clip at a small ``size`` holds only the small frames. A frame with
    NaN or inf pixels is refused (``ValueError`` naming the source and the frame).

    Example:
        >>> from stnviz.data import sample_tracks
        >>> frames, boxes = read_frames(sample_tracks()[0], size=(48, 48))
        >>> tuple(frames.shape), tuple(boxes.shape)
        ((30, 3, 48, 48), (30, 4))
        >>> frames, boxes = read_frames(torch.full((5, 3, 8, 8), 255, dtype=torch.uint8), channels=1)
        >>> tuple(frames.shape), round(float(frames.max()), 3), boxes  # uint8 scaled to [0, 1]
        ((5, 1, 8, 8), 1.0, None)
    """
    if size is not None:
        size = _check_size(size)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    boxes = None
    if isinstance(source, Track):
        frames = _collect(source.images, f"track {source.track_id}", size, channels)
        boxes = source.boxes.float()
    elif isinstance(source, torch.Tensor):
        if source.dim() != 4:
            raise ValueError(f"frames must be (T, C, H, W), got shape {tuple(source.shape)}")
        if source.shape[0] == 0:
            raise ValueError("the frame sequence is empty; expected at least one frame")
        frames = _collect(source, "frames", size, channels)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"frame source {path} does not exist")
        if path.is_dir():
            files = _image_files(path)
            frames = _collect(_folder_frames(files, max_pixels), f"folder {path}", size, channels, max_pixels,
                              names=[f.name for f in files])
        elif path.suffix.lower() == ".gif":
            frames = _collect(_gif_frames(path, max_pixels), f"GIF {path}", size, channels, max_pixels)
        else:
            frames = _collect(_video_frames(path, max_pixels), f"video {path}", size, channels, max_pixels)
    else:
        raise ValueError(f"source must be a Track, a (T, C, H, W) tensor, a video file or a folder, got {type(source).__name__}")
    return frames, boxes
