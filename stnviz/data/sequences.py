"""Frame sequences for stability analysis: GTSRB tracks, video files, folders of images.

:func:`read_frames` turns any of them into ``(T, C, H, W)`` float in [0, 1], resized (bilinear,
antialiased) to the model's input size, plus the normalised boxes when the source has them.
Video is decoded by imageio with imageio-ffmpeg's bundled ffmpeg, animated GIFs by Pillow.
Integer pixels are scaled by their dtype's range (uint8 by 255, 16-bit by 65535); an alpha
channel is dropped (grey + alpha becomes grey, RGBA becomes RGB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import Track

__all__ = ["IMAGE_SUFFIXES", "read_frames", "resize_frames"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def resize_frames(frames: torch.Tensor, size) -> torch.Tensor:
    """``(T, C, H, W)`` -> ``(T, C, *size)`` (bilinear, antialiased; a no-op at the same size).

    Example:
        >>> tuple(resize_frames(torch.ones(3, 1, 64, 64), (32, 32)).shape)
        (3, 1, 32, 32)
    """
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=tuple(size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _unit_range(arr: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1]: integers divided by their dtype's maximum, floats as they are."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
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


def _to_tensor(arrays: list[np.ndarray], what: str) -> torch.Tensor:
    if not arrays:
        raise ValueError(f"{what} holds no frames; expected at least one")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{what} has frames of mixed sizes {sorted(shapes)[:4]}; expected one size for the whole sequence")
    arr = np.stack(arrays)
    if arr.ndim == 3:
        arr = arr[..., None]
    arr = _drop_alpha(arr)
    return torch.from_numpy(np.ascontiguousarray(_unit_range(arr))).permute(0, 3, 1, 2)


def _tensor_frames(frames: torch.Tensor) -> torch.Tensor:
    """A frame tensor as float in [0, 1]: integer dtypes scaled by their range (uint8 by 255)."""
    if frames.dtype == torch.bool:
        return frames.float()
    if not frames.is_floating_point():
        if frames.is_complex():
            raise ValueError(f"frames must be real images, got dtype {frames.dtype}")
        return (frames.double() / torch.iinfo(frames.dtype).max).clamp(0, 1).float()
    return frames.float()


def _read_gif(path: Path) -> torch.Tensor:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as im:
            grey = im.mode in ("L", "LA", "I;16", "1") or (
                im.mode == "P" and all(r == g == b for r, g, b in zip(*[iter(im.getpalette() or [])] * 3))
            )
            arrays = [np.asarray(f.convert("L" if grey else "RGB")) for f in ImageSequence.Iterator(im)]
    except Exception as e:  # Pillow raises OSError / SyntaxError / ValueError for bad files
        raise ValueError(f"cannot read GIF {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return _to_tensor(arrays, f"GIF {path}")


def _read_video(path: Path) -> torch.Tensor:
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
        try:
            arrays = [np.asarray(f) for f in reader]
        finally:
            reader.close()
    except Exception as e:  # imageio raises OSError / RuntimeError / IndexError for bad files
        raise ValueError(f"cannot read video {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return _to_tensor(arrays, f"video {path}")


def _read_folder(path: Path) -> torch.Tensor:
    import imageio.v2 as imageio

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); expected a sequence of frames")
    arrays = []
    for f in files:
        try:
            a = np.asarray(imageio.imread(f))
        except Exception as e:
            raise ValueError(f"cannot read image {f}: {type(e).__name__}: {e}") from None
        arrays.append(a)
    return _to_tensor(arrays, f"folder {path}")


def read_frames(source, size=None, *, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frames ``(T, C, H, W)`` in [0, 1] and boxes ``(T, 4)`` (normalised ``x1, y1, x2, y2``) or ``None``.

    ``source``: a :class:`~stnviz.data.Track`, a ``(T, C, H, W)`` tensor, a video file (``.mp4``,
    ``.avi``, ``.gif`` ...), or a folder of images (sorted by name). ``size``: resize to
    ``(H, W)``. ``channels``: convert grey <-> RGB to this many channels.

    Example:
        >>> from stnviz.data import sample_tracks
        >>> frames, boxes = read_frames(sample_tracks()[0], size=(48, 48))
        >>> tuple(frames.shape), tuple(boxes.shape)
        ((30, 3, 48, 48), (30, 4))
        >>> frames, boxes = read_frames(torch.full((5, 3, 8, 8), 255, dtype=torch.uint8), channels=1)
        >>> tuple(frames.shape), round(float(frames.max()), 3), boxes  # uint8 scaled to [0, 1]
        ((5, 1, 8, 8), 1.0, None)
    """
    boxes = None
    if isinstance(source, Track):
        frames, boxes = _tensor_frames(source.images), source.boxes.float()
    elif isinstance(source, torch.Tensor):
        frames = _tensor_frames(source)
        if frames.dim() != 4:
            raise ValueError(f"frames must be (T, C, H, W), got shape {tuple(frames.shape)}")
        if frames.shape[0] == 0:
            raise ValueError("the frame sequence is empty; expected at least one frame")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"frame source {path} does not exist")
        if path.is_dir():
            frames = _read_folder(path)
        elif path.suffix.lower() == ".gif":
            frames = _read_gif(path)
        else:
            frames = _read_video(path)
    else:
        raise ValueError(f"source must be a Track, a (T, C, H, W) tensor, a video file or a folder, got {type(source).__name__}")
    if channels is not None and frames.shape[1] != channels:
        if channels == 3 and frames.shape[1] == 1:
            frames = frames.expand(-1, 3, -1, -1)
        elif channels == 1 and frames.shape[1] == 3:
            frames = (frames * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        else:
            raise ValueError(f"cannot convert {frames.shape[1]}-channel frames to {channels} channels")
    if size is not None:
        frames = resize_frames(frames, size)
    return frames.contiguous(), boxes
