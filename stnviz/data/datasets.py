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
import os
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


def _not_found(name: str, root: Path, err: Exception) -> ValueError:
    return ValueError(
        f"{name} not found under {root} ({err}); pass download=True, or point root= / $STNVIZ_DATA at a folder "
        f"holding torchvision's {name} files"
    )


def _gray(ds, name: str) -> ImageSet:
    images = torch.as_tensor(ds.data).unsqueeze(1).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets), name=name, classes=list(getattr(ds, "classes", [])) or None)


def mnist(*, train: bool = True, root=None, download: bool = False) -> ImageSet:
    """MNIST digits ``(N, 1, 28, 28)`` uint8 (60,000 train / 10,000 test).

    Offline, :func:`stnviz.data.sample` ``("mnist")`` holds 1,000 of the test digits.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     mnist(train=False, root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MNIST not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    r = data_root(root)
    try:
        return _gray(_tv().MNIST(str(r), train=train, download=download), "mnist-" + ("train" if train else "test"))
    except RuntimeError as e:
        raise _not_found("MNIST", r, e) from None


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
    r = data_root(root)
    try:
        return _gray(_tv().FashionMNIST(str(r), train=train, download=download), "fashion_mnist-" + ("train" if train else "test"))
    except RuntimeError as e:
        raise _not_found("FashionMNIST", r, e) from None


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
    r = data_root(root)
    try:
        ds = _tv().SVHN(str(r), split=split, download=download)
    except RuntimeError as e:
        raise _not_found("SVHN", r, e) from None
    return ImageSet(torch.as_tensor(ds.data), torch.as_tensor(ds.labels), name=f"svhn-{split}")


# --------------------------------------------------------------------------- GTSRB


def _read_gt_csv(path: Path) -> dict[str, tuple[int, int, int, int, int, int]]:
    """Filename -> (Width, Height, X1, Y1, X2, Y2) from a GT-*.csv file."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter=";"):
            out[row["Filename"]] = tuple(int(row[k]) for k in ("Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
    return out


def _decode(path: str, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _load_gtsrb_train(root: Path, size: int) -> dict:
    folder = root / "gtsrb" / "GTSRB" / "Training"
    images, labels, tracks, frames, rois = [], [], [], [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        cls = int(class_dir.name)
        csvs = list(class_dir.glob("GT-*.csv"))
        if not csvs:
            raise ValueError(f"GTSRB class folder {class_dir} has no GT-*.csv annotation file")
        gt = _read_gt_csv(csvs[0])
        for img in sorted(class_dir.glob("*.ppm")):
            stem = img.stem
            try:
                track_no, frame_no = (int(s) for s in stem.split("_"))
            except ValueError:
                raise ValueError(f"GTSRB file {img} is not named TTTTT_FFFFF.ppm") from None
            if img.name not in gt:
                raise ValueError(f"GTSRB image {img} has no row in {csvs[0]}")
            w, h, x1, y1, x2, y2 = gt[img.name]
            images.append(_decode(str(img), size))
            labels.append(cls)
            tracks.append(cls * 100000 + track_no)
            frames.append(frame_no)
            rois.append((x1 / w, y1 / h, (x2 + 1) / w, (y2 + 1) / h))
    if not images:
        raise ValueError(f"no GTSRB images found in {folder}")
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
    images, labels, rois = [], [], []
    with open(gt_path, newline="") as f:
        for row in csv.DictReader(f, delimiter=";"):
            w, h = int(row["Width"]), int(row["Height"])
            x1, y1, x2, y2 = (int(row[k]) for k in ("Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"))
            images.append(_decode(str(folder / row["Filename"]), size))
            labels.append(int(row["ClassId"]))
            rois.append((x1 / w, y1 / h, (x2 + 1) / w, (y2 + 1) / h))
    n = len(images)
    return {
        "images": torch.from_numpy(np.stack(images)),
        "labels": torch.tensor(labels),
        "track": torch.full((n,), -1),  # the official test set has no tracks
        "frame": torch.zeros(n, dtype=torch.long),
        "roi": torch.tensor(rois, dtype=torch.float32),
    }


def gtsrb(*, split: str = "train", root=None, download: bool = False, size: int = 32, cache: bool = True) -> ImageSet:
    """GTSRB ``(N, 3, size, size)`` uint8 with extras ``track``, ``frame``, ``roi``.

    ``split="train"`` is the official training set (39,209 images in 1,307 tracks); hold out whole
    tracks with :func:`split_tracks`. ``split="test"`` is the official test set (track = -1).
    Offline, :func:`stnviz.data.sample` ``("gtsrb")`` holds 20 held-out tracks.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # an empty folder: a clear error, no download
        ...     gtsrb(split="train", root=tmp)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: GTSRB not found under ...; pass download=True, or point root= / $STNVIZ_DATA at a folder ...
    """
    if split not in ("train", "test"):
        raise ValueError(f"GTSRB split must be 'train' or 'test', got {split!r}")
    r = data_root(root)
    cache_file = r / "stnviz-cache" / f"gtsrb-{split}-{size}.pt"
    if cache and cache_file.is_file():
        data = torch.load(cache_file, weights_only=True)
    else:
        try:
            _tv().GTSRB(str(r), split=split, download=download)  # checks presence / downloads
        except RuntimeError as e:
            raise _not_found("GTSRB", r, e) from None
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
            images=ds.to_float(ds.images[idx]),
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
