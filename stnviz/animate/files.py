"""Writing animations and checking where they go, before any work: GIF (Pillow), MP4 (imageio
with imageio-ffmpeg's bundled ffmpeg), through a temp file and a rename, so a failure never
leaves a half-written file."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .._io import atomic_write

__all__ = ["GIF_MAX_FPS", "check_output_folder", "check_output_path", "save_gif", "save_mp4", "write_animation"]


def _positive_int(value, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{option} must be a whole number >= 1, got {value!r}")
    return int(value)


def _folder_problem(folder: Path) -> str | None:
    """Why no file can be written into ``folder`` (made if missing), or ``None``."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return "is a file; expected a folder" if existing == folder else f"cannot be made: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return "is read-only; expected a folder you can write into" if existing == folder else (
            f"cannot be made: {existing} is read-only")
    return None


def check_output_folder(folder, *, option: str = "folder") -> Path:
    """``folder`` as a Path, when files can be written into it: it is a folder, or it can be made
    (its nearest existing parent is a writable folder). Otherwise one ValueError naming ``option``.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp())
        >>> check_output_folder(tmp / "new" / "out").name  # missing: made when written to
        'out'
        >>> _ = (tmp / "notes.txt").write_text("a file")
        >>> check_output_folder(tmp / "notes.txt", option="out")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: out .../notes.txt is a file; expected a folder
        >>> import shutil; shutil.rmtree(tmp)
    """
    if not isinstance(folder, (str, os.PathLike)):
        raise ValueError(f"{option} must be a folder path, got {type(folder).__name__}")
    folder = Path(folder)
    problem = _folder_problem(folder)
    if problem:
        raise ValueError(f"{option} {folder} {problem}")
    return folder


def check_output_path(path, suffixes: Sequence[str], *, option: str = "path") -> Path:
    """``path`` as a Path, checked before any work is done: it ends in one of ``suffixes``, is not
    an existing folder, and its folder can be written (see :func:`check_output_folder`).
    Otherwise one ValueError naming ``option``, what was expected and what came.

    Example:
        >>> check_output_path("out/progress.gif", (".gif",)).name
        'progress.gif'
        >>> check_output_path("progress.webm", (".gif", ".mp4"), option="animation path")
        Traceback (most recent call last):
        ...
        ValueError: animation path must end in .gif or .mp4, got 'progress.webm'
    """
    wanted = " or ".join(suffixes)
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"{option} must be a file path ending in {wanted}, got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {wanted}, got {str(path)!r}")
    if p.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; expected a file path ending in {wanted}")
    problem = _folder_problem(p.parent)
    if problem:
        raise ValueError(f"{option} {str(path)!r} cannot be written: its folder {p.parent} {problem}")
    return p


def _check_frames(frames) -> list[np.ndarray]:
    """``frames`` as a list of ``(H, W, 3)`` uint8 arrays of one size (RGBA ``(H, W, 4)`` passes too)."""
    try:
        frames = [np.asarray(f) for f in frames]
    except TypeError as e:
        raise ValueError(f"frames must be a sequence of (H, W, 3) uint8 arrays, got {type(frames).__name__} ({e})") from None
    if not frames:
        raise ValueError("no frames to write: the recorder holds no snapshots (did training run?)")
    for i, f in enumerate(frames):
        if f.ndim != 3 or f.shape[2] not in (3, 4):
            raise ValueError(f"frames must be (H, W, 3) RGB; frame {i} has shape {f.shape}")
        if f.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (0 to 255); frame {i} is {f.dtype} (scale floats in [0, 1] by 255 and round)")
        if f.shape[0] < 1 or f.shape[1] < 1:
            raise ValueError(f"frames must be at least 1 x 1 pixels; frame {i} has shape {f.shape}")
        if f.shape != frames[0].shape:
            raise ValueError(f"frames must all be one size; frame 0 is {frames[0].shape}, frame {i} is {f.shape}")
    return frames


#: GIF frame delays are whole hundredths of a second and players raise delays under 20 ms, so a
#: GIF plays at most 50 frames per second.
GIF_MAX_FPS = 50


def _check_fps(fps, fmt: str) -> float:
    """``fps`` as a float, or a ValueError saying what is expected."""
    limit = GIF_MAX_FPS if fmt == "GIF" else 1000
    if isinstance(fps, bool):
        raise ValueError(f"fps must be a number, got {fps!r}")
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0 or value > limit:
        raise ValueError(f"fps of a {fmt} must be a number in (0, {limit}], got {fps!r}")
    return value


def save_gif(frames, path, *, fps: float = 8, loop: int = 0) -> Path:
    """Write frames as an animated GIF (atomically).

    Written with Pillow directly rather than through imageio's GIF plugin (which is Pillow
    underneath): this way each frame is quantised with the fast octree method, about 20x faster
    than the default median cut and indistinguishable on these flat renderings.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> frames = [np.full((32, 48, 3), v, np.uint8) for v in (0, 128, 255)]  # (H, W, 3) uint8
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_gif(frames, Path(tmp) / "fade.gif", fps=10)
        ...     with Image.open(path) as gif:
        ...         print(path.name, gif.n_frames, gif.size)
        fade.gif 3 (48, 32)
    """
    from PIL import Image

    fps = _check_fps(fps, "GIF")
    if isinstance(loop, bool) or not isinstance(loop, (int, np.integer)) or not 0 <= loop <= 65535:
        raise ValueError(f"loop must be a whole number in [0, 65535] (0: forever), got {loop!r}")
    path = check_output_path(path, (".gif",), option="GIF path")
    frames = _check_frames(frames)
    images = [Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
              for f in frames]
    duration = max(20, int(round(1000 / fps)))

    def write(tmp):
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=loop,
                       optimize=False, disposal=1)

    return atomic_write(path, write)


def save_mp4(frames, path, *, fps: float = 8, quality: int = 8) -> Path:
    """Write frames as an H.264 MP4 (yuv420p, plays everywhere), atomically. Frame sides are
    padded to even numbers, which H.264 needs.

    Example:
        >>> import tempfile
        >>> frames = [np.full((31, 47, 3), v, np.uint8) for v in (0, 128, 255)]  # odd sides: padded
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = save_mp4(frames, Path(tmp) / "fade.mp4", fps=10)
        ...     print(path.name, path.stat().st_size > 0)
        fade.mp4 True
    """
    import imageio.v2 as imageio

    fps = _check_fps(fps, "MP4")
    if isinstance(quality, bool) or not isinstance(quality, (int, float, np.number)) or not 1 <= quality <= 10:
        raise ValueError(f"quality of an MP4 must be a number in [1, 10], got {quality!r}")
    path = check_output_path(path, (".mp4",), option="MP4 path")
    frames = _check_frames(frames)
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = [np.pad(f, ((0, ph - h), (0, pw - w), (0, 0))) for f in frames]

    def write(tmp):
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
                                pixelformat="yuv420p", macro_block_size=1) as w_:
            for f in frames:
                w_.append_data(f)

    return atomic_write(path, write)


def write_animation(frames, path, *, fps: float = 8) -> Path:
    """GIF or MP4 by the file's suffix.

    Example:
        >>> import tempfile
        >>> frames = [np.full((32, 32, 3), v, np.uint8) for v in (0, 255)]
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     print(write_animation(frames, Path(tmp) / "blink.gif").name)
        blink.gif
        >>> write_animation(frames, "blink.webm")
        Traceback (most recent call last):
        ...
        ValueError: animation path must end in .gif or .mp4, got 'blink.webm'
    """
    suffix = check_output_path(path, (".gif", ".mp4"), option="animation path").suffix.lower()
    return save_gif(frames, path, fps=fps) if suffix == ".gif" else save_mp4(frames, path, fps=fps)


