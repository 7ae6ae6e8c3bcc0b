"""torchvision-backed data sets loaded once into :class:`ImageSet` tensors.

``root`` defaults to ``$STNVIZ_DATA``, else ``~/.cache/stnviz/data``; ``download`` is passed to
torchvision. Decoded GTSRB images are cached beside the data (``stnviz-cache/``) so later loads
take a second, not a minute.

GTSRB extras per image: ``track`` (a unique id per physical sign: ``class * 100000 + TTTTT``),
``frame`` (``FFFFF``) and ``roi`` ``(x1, y1, x2, y2)`` normalised to ``[0, 1]`` by the CSV's
``Width`` / ``Height`` (the *original* image size) using pixel edges: ``x1 / W`` and
``(x2 + 1) / W``. That is right whether the files on disk are the originals or resized copies.
"""

from __future__ import annotations

import csv
import math
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .._io import atomic_write
from .imageset import ImageSet

__all__ = [
    "GTSRB_NUM_CLASSES",
    "Track",
    "cifar10",
    "data_root",
    "fashion_mnist",
    "gtsrb",
    "gtsrb_tracks",
    "mnist",
    "split_tracks",
    "svhn",
    "tracks_of",
]

GTSRB_NUM_CLASSES = 43


def data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$STNVIZ_DATA``, else ``~/.cache/stnviz/data``.

    Example:
        >>> data_root("/data/stnviz").as_posix()
        '/data/stnviz'
        >>> data_root("~/datasets") == Path.home() / "datasets"
        True
    """
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("STNVIZ_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stnviz" / "data"


def _tv():
    import torchvision.datasets as tvd

    return tvd


def _not_found(name: str, root: Path, err) -> ValueError:
    return ValueError(
        f"{name} not found under {root} ({err}); pass download=True, or point root= / $STNVIZ_DATA at a folder "
        f"holding torchvision's {name} files"
    )


def _gray(ds, name: str) -> ImageSet:
    images = torch.as_tensor(ds.data).unsqueeze(1).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets), name=name, classes=list(getattr(ds, "classes", [])) or None)


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (its first sentence when long): one line for a
    library's error about a user's file."""
    lines = str(e).strip().splitlines()
    if not lines:
        return type(e).__name__
    text = lines[0]
    if len(text) > 160 and ". " in text:
        text = text[: text.index(". ")]
    return f"{type(e).__name__}: {text}"


# --------------------------------------------------------------------------- MNIST-style IDX files

_IDX_UINT8 = 0x08


def _check_idx(path: str | os.PathLike, shape: tuple) -> int:
    """Check that ``path`` is a whole uint8 IDX file (MNIST's format) of ``shape``, where ``None``
    is the free length ``N``; return ``N``. Reads only the header and the file size.

    Anything else is a ValueError naming the file, what was expected and what came.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "labels-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([7, 2, 1]))  # 3 labels
        >>> _check_idx(path, (None,))
        3
        >>> _ = path.write_bytes(path.read_bytes()[:-1])  # one byte short
        >>> _check_idx(path, (None,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: .../labels-idx1-ubyte is truncated: its header promises shape (3,) (11 bytes), the file has 10 bytes
        >>> tmp.cleanup()
    """
    path = Path(path)
    ndim = len(shape)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4 + 4 * ndim)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or _first_line(e)}") from None
    if head[:2] == b"\x1f\x8b":
        raise ValueError(f"{path} is gzip-compressed; expected the uncompressed IDX file (gunzip it, or pass download=True)")
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != _IDX_UINT8:
        raise ValueError(
            f"{path} is not a uint8 IDX file: expected it to start with bytes 00 00 08 {ndim:02x}, got {head[:4].hex(' ') or 'an empty file'}"
        )
    if head[3] != ndim:
        raise ValueError(f"{path} holds a {head[3]}-dimensional array; expected a {ndim}-dimensional one {_shape_text(shape)}")
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{path} is truncated: {size} bytes, too short for its own header")
    dims = struct.unpack(f">{ndim}I", head[4:])
    if any(want is not None and want != got for want, got in zip(shape, dims)):
        raise ValueError(f"{path} holds an array of shape {dims}; expected {_shape_text(shape)}")
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        what = "is truncated" if size < expected else "has trailing bytes"
        raise ValueError(f"{path} {what}: its header promises shape {dims} ({expected} bytes), the file has {size} bytes")
    return dims[0]


def _shape_text(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _mnist_like(cls_name: str, name: str, *, train: bool, root, download: bool) -> ImageSet:
    """MNIST or Fashion-MNIST through torchvision, with the IDX files checked first so that a
    truncated or foreign file is one line naming it (torchvision fails on an ``assert``)."""
    r = data_root(root)
    raw = r / cls_name / "raw"
    part = "train" if train else "t10k"
    images_file, labels_file = raw / f"{part}-images-idx3-ubyte", raw / f"{part}-labels-idx1-ubyte"
    legacy = all((r / cls_name / "processed" / f).is_file() for f in ("training.pt", "test.pt"))
    if not legacy and images_file.exists() and labels_file.exists():
        n_images = _check_idx(images_file, (None, 28, 28))
        n_labels = _check_idx(labels_file, (None,))
        if n_images == 0:
            raise ValueError(f"{images_file} holds no images; expected at least one")
        if n_images != n_labels:
            raise ValueError(f"{labels_file} holds {n_labels} labels; expected one per image of {images_file} ({n_images})")
    try:
        ds = getattr(_tv(), cls_name)(str(r), train=train, download=download)
    except RuntimeError as e:
        files = [f"{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
        missing = [f for f in files if not (raw / f).is_file()]
        why = f"missing {', '.join(missing)} in {raw}" if missing and not download else _first_line(e)
        raise _not_found(cls_name, r, why) from None
    except Exception as e:  # a corrupt legacy processed/*.pt, or a file that changed under us
        raise ValueError(f"cannot read {cls_name} under {r / cls_name}: {_first_line(e)}") from None
    out = _gray(ds, f"{name}-" + ("train" if train else "test"))
    bad = (out.labels < 0) | (out.labels >= 10)
    if bad.any():
        i = int(bad.nonzero()[0])
        where = r / cls_name / "processed" if legacy else labels_file
        raise ValueError(f"{where}: labels must be 0 to 9; label {i} is {int(out.labels[i])}")
    return out


def mnist(*, train: bool = True, root=None, download: bool = False) -> ImageSet:
    """MNIST digits ``(N, 1, 28, 28)`` uint8 (60,000 train / 10,000 test).

    Offline, :func:`stnviz.data.sample` ``("mnist")`` holds 1,000 of the test digits. A truncated
    or foreign IDX file is a ValueError naming it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     mnist(train=False, root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MNIST not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    return _mnist_like("MNIST", "mnist", train=train, root=root, download=download)


def fashion_mnist(*, train: bool = True, root=None, download: bool = False) -> ImageSet:
    """Fashion-MNIST ``(N, 1, 28, 28)`` uint8.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     fashion_mnist(root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: FashionMNIST not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    return _mnist_like("FashionMNIST", "fashion_mnist", train=train, root=root, download=download)


def cifar10(*, train: bool = True, root=None, download: bool = False) -> ImageSet:
    """CIFAR-10 ``(N, 3, 32, 32)`` uint8.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     cifar10(root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: CIFAR-10 not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    r = data_root(root)
    try:
        ds = _tv().CIFAR10(str(r), train=train, download=download)
    except RuntimeError as e:
        raise _not_found("CIFAR-10", r, e) from None
    images = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets), name="cifar10-" + ("train" if train else "test"), classes=ds.classes)


def svhn(*, split: str = "train", root=None, download: bool = False) -> ImageSet:
    """SVHN ``(N, 3, 32, 32)`` uint8; ``split`` is ``train``, ``test`` or ``extra``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     svhn(split="test", root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: SVHN not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    if split not in ("train", "test", "extra"):
        raise ValueError(f"SVHN split must be 'train', 'test' or 'extra', got {split!r}")
    r = data_root(root)
    try:
        ds = _tv().SVHN(str(r), split=split, download=download)
    except RuntimeError as e:
        raise _not_found("SVHN", r, e) from None
    return ImageSet(torch.as_tensor(ds.data), torch.as_tensor(ds.labels), name=f"svhn-{split}")


# --------------------------------------------------------------------------- GTSRB

#: The columns of a GTSRB annotation file (``GT-000CC.csv``, ``GT-final_test.csv``), ``;``-separated.
_GT_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")
_GT_SPLIT_FOLDERS = {"train": ("Training",), "test": ("Final_Test", "Images")}


def _read_gt_csv(path: Path) -> dict[str, tuple[int, int, int, int, int, int, int]]:
    """Filename -> (Width, Height, X1, Y1, X2, Y2, ClassId) from a GT-*.csv file.

    A missing file or column, a row that is not whole numbers, or a zero width or height is one
    ValueError naming the file (and line)."""
    out = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=";", skipinitialspace=True)
            header = reader.fieldnames or []
            missing = [c for c in _GT_COLUMNS if c not in header]
            if missing:
                got = ";".join(header) if header else "an empty file"
                raise ValueError(
                    f"GTSRB annotation file {path}: expected the ;-separated columns {';'.join(_GT_COLUMNS)}, "
                    f"got {got!r} (missing {', '.join(missing)})"
                )
            for row in reader:
                try:
                    values = tuple(int(row[k]) for k in _GT_COLUMNS[1:])
                except (TypeError, ValueError):
                    got = ";".join("" if row.get(k) is None else str(row[k]) for k in _GT_COLUMNS)
                    raise ValueError(
                        f"GTSRB annotation file {path} line {reader.line_num}: expected a file name and whole numbers "
                        f"for {';'.join(_GT_COLUMNS)}, got {got!r}"
                    ) from None
                if values[0] <= 0 or values[1] <= 0:
                    raise ValueError(
                        f"GTSRB annotation file {path} line {reader.line_num}: expected a positive Width and Height, "
                        f"got {values[0]} x {values[1]}"
                    )
                out[row["Filename"]] = values
    except UnicodeDecodeError as e:
        raise ValueError(f"GTSRB annotation file {path} is not text (byte {e.start} is 0x{e.object[e.start]:02x}); expected a ;-separated CSV") from None
    except OSError as e:
        raise ValueError(f"cannot read GTSRB annotation file {path}: {e.strerror or _first_line(e)}") from None
    return out


def _roi(w: int, h: int, x1: int, y1: int, x2: int, y2: int) -> tuple[float, float, float, float]:
    """The annotated box normalised by the *original* size ``(w, h)``, pixel edges: ``(x2 + 1) / w``."""
    return (x1 / w, y1 / h, (x2 + 1) / w, (y2 + 1) / h)


def _decode(path: Path, size: int) -> np.ndarray:
    """``(3, size, size)`` uint8; a missing, truncated or foreign file is one ValueError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # what Pillow raises for bad files
        why = e.strerror if isinstance(e, OSError) and e.strerror else _first_line(e).replace(f" '{path}'", "")
        raise ValueError(f"GTSRB image {path} cannot be decoded ({why}); expected a readable PPM image") from None


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` by name, without hidden ones (``.DS_Store``, ``._x.ppm`` from macOS)."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_folders(folder: Path) -> list[tuple[int, Path]]:
    """``(class, folder)`` for each ``000CC`` folder of the training set; any other folder is an error."""
    out = []
    for p in _visible(folder):
        if not p.is_dir():
            continue  # a stray readme or archive beside the class folders
        if not re.fullmatch(r"[0-9]{1,5}", p.name) or int(p.name) >= GTSRB_NUM_CLASSES:
            raise ValueError(
                f"GTSRB folder {folder} holds the folder {p.name!r}; expected only class folders 00000 to "
                f"{GTSRB_NUM_CLASSES - 1:05d}"
            )
        out.append((int(p.name), p))
    if not out:
        raise ValueError(
            f"GTSRB folder {folder} holds no class folders; expected 00000 to {GTSRB_NUM_CLASSES - 1:05d}, "
            f"each with GT-000CC.csv and TTTTT_FFFFF.ppm images"
        )
    return out


def _load_gtsrb_train(root: Path, size: int) -> dict:
    folder = root / "gtsrb" / "GTSRB" / "Training"
    images, labels, tracks, frames, rois = [], [], [], [], []
    for cls, class_dir in _class_folders(folder):
        csvs = sorted(p for p in class_dir.glob("GT-*.csv") if not p.name.startswith("."))
        if not csvs:
            raise ValueError(f"GTSRB class folder {class_dir} has no GT-*.csv annotation file; expected GT-{cls:05d}.csv")
        gt = _read_gt_csv(csvs[0])
        ppms = [p for p in _visible(class_dir) if p.suffix == ".ppm"]
        if not ppms:
            raise ValueError(f"GTSRB class folder {class_dir} holds no images; expected TTTTT_FFFFF.ppm files")
        for img in ppms:
            try:
                track_no, frame_no = (int(s) for s in img.stem.split("_"))
            except ValueError:
                raise ValueError(f"GTSRB file {img} is not named TTTTT_FFFFF.ppm") from None
            if img.name not in gt:
                raise ValueError(f"GTSRB image {img} has no row in {csvs[0]}")
            w, h, x1, y1, x2, y2, class_id = gt[img.name]
            if class_id != cls:
                raise ValueError(f"GTSRB annotation file {csvs[0]}: {img.name} has ClassId {class_id}; expected {cls}, its folder's class")
            images.append(_decode(img, size))
            labels.append(cls)
            tracks.append(cls * 100000 + track_no)
            frames.append(frame_no)
            rois.append(_roi(w, h, x1, y1, x2, y2))
    return {
        "images": torch.from_numpy(np.stack(images)),
        "labels": torch.tensor(labels),
        "track": torch.tensor(tracks),
        "frame": torch.tensor(frames),
        "roi": torch.tensor(rois, dtype=torch.float32),
    }


def _load_gtsrb_test(root: Path, size: int) -> dict:
    base = root / "gtsrb"
    folder = base / "GTSRB" / "Final_Test" / "Images"
    gt_path = base / "GT-final_test.csv"
    if not gt_path.is_file():
        raise ValueError(f"GTSRB test annotations not found: expected {gt_path} beside {base / 'GTSRB'} (as torchvision downloads them)")
    images, labels, rois = [], [], []
    for name, (w, h, x1, y1, x2, y2, class_id) in _read_gt_csv(gt_path).items():
        if not 0 <= class_id < GTSRB_NUM_CLASSES:
            raise ValueError(f"GTSRB annotation file {gt_path}: {name} has ClassId {class_id}; expected 0 to {GTSRB_NUM_CLASSES - 1}")
        images.append(_decode(folder / name, size))
        labels.append(class_id)
        rois.append(_roi(w, h, x1, y1, x2, y2))
    if not images:
        raise ValueError(f"GTSRB annotation file {gt_path} has no rows; expected one per test image")
    n = len(images)
    return {
        "images": torch.from_numpy(np.stack(images)),
        "labels": torch.tensor(labels),
        "track": torch.full((n,), -1),  # the official test set has no tracks
        "frame": torch.zeros(n, dtype=torch.long),
        "roi": torch.tensor(rois, dtype=torch.float32),
    }


def _gtsrb_folder(r: Path, split: str, download: bool) -> Path:
    """The split's image folder under ``r``, downloaded first when asked and missing; a root one
    level off (the ``gtsrb`` or ``GTSRB`` folder itself) is named in the error."""
    parts = _GT_SPLIT_FOLDERS[split]
    folder = r.joinpath("gtsrb", "GTSRB", *parts)
    if download and not folder.is_dir():
        try:
            _tv().GTSRB(str(r), split=split, download=True)
        except Exception as e:  # no network, a bad archive: one line, not urllib's traceback
            raise ValueError(f"GTSRB download into {r} failed: {_first_line(e)}") from None
    if folder.is_dir():
        return folder
    for inner, parent in ((r.joinpath("GTSRB", *parts), r.parent), (r.joinpath(*parts), r.parent.parent)):
        if inner.is_dir():
            raise ValueError(
                f"GTSRB not found under {r}: no folder {folder}, but there is {inner}; point root= at {parent} "
                f"(the folder that holds gtsrb/)"
            )
    raise _not_found("GTSRB", r, f"no folder {folder}")


def _read_cache(path: Path) -> dict | None:
    """The decoded set cached at ``path``, or ``None`` (with a warning) when it is unreadable."""
    try:
        data = torch.load(path, weights_only=True)
        n = len(data["images"])
        if not all(len(data[k]) == n for k in ("labels", "track", "frame", "roi")) or data["images"].dim() != 4:
            raise ValueError("its columns do not match")
        return data
    except Exception as e:  # truncated, foreign or from another version: rebuild it from the images
        warnings.warn(f"ignoring the unreadable GTSRB cache {path} ({_first_line(e)}); decoding the images again", stacklevel=3)
        return None


def gtsrb(*, split: str = "train", root=None, download: bool = False, size: int = 32, cache: bool = True) -> ImageSet:
    """GTSRB ``(N, 3, size, size)`` uint8 with extras ``track``, ``frame``, ``roi``.

    ``split="train"`` is the official training set (39,209 images in 1,307 tracks); hold out whole
    tracks with :func:`split_tracks`. ``split="test"`` is the official test set (track = -1).
    Offline, :func:`stnviz.data.sample` ``("gtsrb")`` holds 20 held-out tracks.

    The layout is torchvision's: ``root/gtsrb/GTSRB/Training/000CC/`` with ``GT-000CC.csv`` and
    ``TTTTT_FFFFF.ppm`` images (hidden files such as ``.DS_Store`` are skipped). Anything else (a
    missing column, a row that is not numbers, an image that does not decode, a folder that is not
    a class) is one ValueError naming the file.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     gtsrb(split="train", root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GTSRB not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    if split not in _GT_SPLIT_FOLDERS:
        raise ValueError(f"GTSRB split must be 'train' or 'test', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"GTSRB size must be a positive whole number of pixels, got {size!r}")
    r = data_root(root)
    cache_file = r / "stnviz-cache" / f"gtsrb-{split}-{size}.pt"
    data = _read_cache(cache_file) if cache and cache_file.is_file() else None
    if data is None:
        _gtsrb_folder(r, split, download)
        data = _load_gtsrb_train(r, size) if split == "train" else _load_gtsrb_test(r, size)
        if cache:
            atomic_write(cache_file, lambda tmp: torch.save(data, tmp))
    images, labels = data.pop("images"), data.pop("labels")
    return ImageSet(images, labels, name=f"gtsrb-{split}", **data)


def split_tracks(ds: ImageSet, val_fraction: float = 0.1, *, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split by whole tracks, stratified by class: frames of one track never straddle the split.

    Frames of a track are near-duplicates, so a random split of frames would overstate accuracy.
    Deterministic for a given ``seed``. Each class keeps at least one training track.

    Example:
        >>> track = torch.arange(24) // 3  # 8 tracks of 3 frames, 4 tracks per class
        >>> signs = ImageSet(torch.zeros(24, 3, 8, 8), track // 4, track=track)
        >>> train, val = split_tracks(signs, 0.25)
        >>> len(train), len(val), val.extras["track"].unique().numel()  # one track per class held out
        (18, 6, 2)
        >>> set(train.extras["track"].tolist()) & set(val.extras["track"].tolist())
        set()
    """
    if "track" not in ds.extras:
        raise ValueError(f"{ds.name} has no 'track' column; expected a GTSRB training set")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    track = ds.extras["track"]
    g = torch.Generator().manual_seed(seed)
    val_tracks = []
    for cls in torch.unique(ds.labels).tolist():
        ids = torch.unique(track[ds.labels == cls])
        ids = ids[torch.randperm(len(ids), generator=g)]
        k = min(len(ids) - 1, max(1, round(val_fraction * len(ids)))) if len(ids) > 1 else 0
        val_tracks.append(ids[:k])
    val_mask = torch.isin(track, torch.cat(val_tracks))
    return ds.subset(~val_mask, f"{ds.name}-train"), ds.subset(val_mask, f"{ds.name}-val")


@dataclass
class Track:
    """One physical sign filmed as the car approaches: ``images (T, C, H, W)`` float in [0, 1],
    ``boxes (T, 4)`` normalised ROI ``(x1, y1, x2, y2)``, frame numbers ``(T,)``.

    Example:
        >>> from stnviz.data import sample_tracks
        >>> track = sample_tracks()[0]
        >>> len(track), track.label, tuple(track.images.shape), tuple(track.boxes.shape)
        (30, 0, (30, 3, 32, 32), (30, 4))
    """

    track_id: int
    label: int
    images: torch.Tensor
    boxes: torch.Tensor
    frames: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]


def tracks_of(ds: ImageSet) -> Iterator[Track]:
    """Group a set with ``track`` / ``frame`` / ``roi`` columns into :class:`Track` s, frames in order.

    Example:
        >>> from stnviz.data import sample
        >>> tracks = list(tracks_of(sample("gtsrb")))  # 600 frames of 20 physical signs
        >>> len(tracks), tracks[0].frames[:5].tolist()
        (20, [0, 1, 2, 3, 4])
    """
    for key in ("track", "frame", "roi"):
        if key not in ds.extras:
            raise ValueError(f"{ds.name} has no {key!r} column; expected GTSRB images with track annotations")
    track = ds.extras["track"]
    for tid in torch.unique(track).tolist():
        if tid < 0:
            continue
        idx = (track == tid).nonzero().flatten()
        idx = idx[torch.argsort(ds.extras["frame"][idx])]
        yield Track(
            track_id=int(tid),
            label=int(ds.labels[idx[0]]),
            images=ds.to_float(ds.pixels[idx]),
            boxes=ds.extras["roi"][idx],
            frames=ds.extras["frame"][idx],
        )


def gtsrb_tracks(*, root=None, download: bool = False, which: str = "val", val_fraction: float = 0.1,
                 seed: int = 0, size: int = 32) -> Iterator[Track]:
    """Real video sequences: the GTSRB training tracks of the held-out part (``which="val"``), the
    training part (``"train"``) or all of them (``"all"``), each as a :class:`Track`.

    Offline, :func:`stnviz.data.sample_tracks` gives 20 shipped tracks.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     gtsrb_tracks(root=tmp, which="val")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GTSRB not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    ds = gtsrb(split="train", root=root, download=download, size=size)
    if which == "all":
        return tracks_of(ds)
    train, val = split_tracks(ds, val_fraction, seed=seed)
    if which == "val":
        return tracks_of(val)
    if which == "train":
        return tracks_of(train)
    raise ValueError(f"which must be 'val', 'train' or 'all', got {which!r}")
