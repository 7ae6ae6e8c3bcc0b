"""Small real samples shipped inside the package: usable offline, with no arguments.

* ``mnist``: 1,000 MNIST test digits (100 per class), ``(1000, 1, 28, 28)`` uint8.
  MNIST: Y. LeCun and C. Cortes, redistributed under CC BY-SA 3.0.
* ``gtsrb``: 20 GTSRB tracks (20 classes, one track each, every frame), ``(T, 3, 32, 32)`` uint8
  with ``track``, ``frame`` and ``roi`` columns, taken from the tracks that the shipped GTSRB
  checkpoints held out as their *test* split (never trained or selected on).
  GTSRB: J. Stallkamp, M. Schlipsing, J. Salmen, C. Igel, "The German Traffic Sign Recognition
  Benchmark", IJCNN 2011 (INI, Ruhr-Universitaet Bochum).

:func:`build_samples` regenerates the files from the full data sets.
"""

from __future__ import annotations

import zipfile
import zlib
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from .datasets import Track, tracks_of
from .imageset import ImageSet

__all__ = ["SAMPLES", "build_samples", "read_npz", "sample", "sample_tracks"]

SAMPLES = {"mnist": "mnist_test_1000.npz", "gtsrb": "gtsrb_tracks_20.npz"}
#: The arrays each sample file must hold.
_SAMPLE_ARRAYS = {"mnist": ("images", "labels"), "gtsrb": ("images", "labels", "track", "frame", "roi")}


def read_npz(path: str | Path, required: tuple[str, ...] = (), *, what: str = "file", hint: str = "") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path``, read in full (no pickles). A missing, truncated or
    foreign file, or one without the ``required`` arrays, is one ValueError naming it (``what``
    says what the file is; ``hint``, if given, ends the message).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = Path(tmp) / "arrays.npz"
        ...     np.savez(path, images=np.zeros((2, 1, 4, 4), np.uint8))
        ...     _ = path.write_bytes(path.read_bytes()[:100])  # cut short, as by a failed copy
        ...     read_npz(path, ("images", "labels"), what="sample")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: sample .../arrays.npz is not a readable .npz file (BadZipFile: File is not a zip file); expected ...
    """
    path = Path(path)
    end = f"; {hint}" if hint else ""
    expected = "numpy's savez format (a zip of .npy arrays)" + (f" holding {', '.join(required)}" if required else "")

    def bad(why: str) -> ValueError:
        return ValueError(f"{what} {path} is not a readable .npz file ({why}); expected {expected}{end}")

    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic[:2] != b"PK":
            got = "it is empty" if not magic else "it is a single .npy array" if magic == b"\x93NUMPY" else (
                f"it starts with bytes {magic[:4].hex(' ')}")
            raise bad(got)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist; expected an .npz file{end}") from None
    except OSError as e:
        raise bad(e.strerror or f"{type(e).__name__}: {e}") from None
    except (EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:  # cut short, or corrupted bytes
        raise bad(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'cut short'}") from None
    except ValueError as e:
        if str(e).startswith(f"{what} {path}"):
            raise
        raise bad(str(e).splitlines()[0]) from None  # e.g. an object array, which would need a pickle
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(
            f"{what} {path} lacks the arrays {', '.join(missing)}; expected {', '.join(required)}, "
            f"got {', '.join(arrays) or 'none'}{end}"
        )
    return arrays


def _path(name: str) -> Path:
    if name not in SAMPLES:
        raise ValueError(f"sample must be one of {tuple(SAMPLES)}, got {name!r}")
    return Path(str(files("stnviz.data") / "samples" / SAMPLES[name]))


@lru_cache(maxsize=4)
def _load(name: str) -> dict:
    arrays = read_npz(_path(name), _SAMPLE_ARRAYS[name], what=f"shipped sample {name!r}",
                      hint="the installed package is damaged: reinstall stnviz")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def sample(name: str = "mnist") -> ImageSet:
    """The shipped sample ``name`` (``"mnist"`` or ``"gtsrb"``) as an :class:`ImageSet`: its
    ``images`` float in [0, 1] (as every batch of it), stored as uint8 ``pixels``.

    Example:
        >>> digits = sample("mnist")
        >>> len(digits), digits.image_size, digits.labels.bincount().tolist() == [100] * 10
        (1000, (1, 28, 28), True)
        >>> digits.images.dtype, digits.images.max().item(), digits.pixels.dtype
        (torch.float32, 1.0, torch.uint8)
        >>> torch.equal(digits.images[:3], digits.get(torch.arange(3)).images)  # one convention
        True
        >>> sample("gtsrb")
        ImageSet('sample-gtsrb', n=600, image_size=(3, 32, 32), extras=['frame', 'roi', 'track'])
    """
    data = dict(_load(name))
    images, labels = data.pop("images"), data.pop("labels")
    return ImageSet(images.clone(), labels.clone(), name=f"sample-{name}", **{k: v.clone() for k, v in data.items()})


def sample_tracks() -> list[Track]:
    """The 20 shipped GTSRB tracks, frames in order.

    Example:
        >>> tracks = sample_tracks()
        >>> len(tracks), len({t.label for t in tracks}), tuple(tracks[0].images.shape[1:])
        (20, 20, (3, 32, 32))
    """
    return list(tracks_of(sample("gtsrb")))


def build_samples(root=None, out_dir: str | Path | None = None) -> list[Path]:
    """Rebuild the sample files from the full MNIST / GTSRB under ``root`` (maintainers only).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # needs the full data sets under root
        ...     build_samples(root=tmp, out_dir=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MNIST not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    from .catalog import load_splits
    from .datasets import mnist

    out = Path(out_dir) if out_dir is not None else Path(__file__).parent / "samples"
    test = mnist(train=False, root=root)
    idx = torch.cat([(test.labels == c).nonzero().flatten()[:100] for c in range(10)])
    idx = idx.sort().values
    written = []

    def save(path, arrays):
        atomic_write(path, lambda tmp: np.savez_compressed(open(tmp, "wb"), **arrays))
        written.append(path)

    save(out / SAMPLES["mnist"], {"images": test.pixels[idx].numpy(), "labels": test.labels[idx].numpy()})
    held_out = load_splits("gtsrb", root=root).test  # tracks no shipped checkpoint saw
    track, labels = held_out.extras["track"], held_out.labels
    chosen = []
    for cls in torch.unique(labels).tolist():
        tids = torch.unique(track[labels == cls])
        chosen.append(int(tids[0]))
    # 20 classes spread over the 43, one track each
    picks = [chosen[int(round(i * (len(chosen) - 1) / 19))] for i in range(20)]
    sel = torch.isin(track, torch.tensor(picks))
    sub = held_out.subset(sel)
    save(out / SAMPLES["gtsrb"], {
        "images": sub.pixels.numpy(), "labels": sub.labels.numpy(), "track": sub.extras["track"].numpy(),
        "frame": sub.extras["frame"].numpy(), "roi": sub.extras["roi"].numpy(),
    })
    return written
