"""stnviz.data.datasets: MNIST and GTSRB from their folders, tracks, track splits."""

import numpy as np
import pytest
import torch
from PIL import Image

from stnviz.data import ImageSet, gtsrb, mnist, sample, split_tracks, tracks_of


def _write_gtsrb_fixture(root):
    """Two classes, three tracks, real file layout; images on disk are NOT the CSV's size."""
    rows = {0: [], 1: []}
    specs = [(0, 0, 3, (40, 50)), (0, 1, 2, (30, 30)), (1, 0, 4, (64, 32))]
    for cls, track, frames, (w, h) in specs:
        folder = root / "gtsrb" / "GTSRB" / "Training" / f"{cls:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            name = f"{track:05d}_{f:05d}.ppm"
            arr = np.full((32, 32, 3), 40 * cls + 10 * f + track, dtype=np.uint8)  # resized copy: 32x32
            Image.fromarray(arr).save(folder / name)
            # ROI in the ORIGINAL (w, h) image: x1=w/4, y1=h/5, x2=3w/4-1, y2=h-1
            rows[cls].append(f"{name};{w};{h};{w // 4};{h // 5};{3 * w // 4 - 1};{h - 1};{cls}")
    for cls, lines in rows.items():
        folder = root / "gtsrb" / "GTSRB" / "Training" / f"{cls:05d}"
        (folder / f"GT-{cls:05d}.csv").write_text(
            "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n" + "\n".join(lines) + "\n"
        )


class TestGTSRB:
    def test_tracks_frames_and_roi(self, tmp_path):
        _write_gtsrb_fixture(tmp_path)
        ds = gtsrb(root=tmp_path, cache=False)
        assert len(ds) == 9 and ds.image_size == (3, 32, 32)
        tracks = list(tracks_of(ds))
        assert [(t.label, len(t)) for t in tracks] == [(0, 3), (0, 2), (1, 4)]
        assert [t.frames.tolist() for t in tracks] == [[0, 1, 2], [0, 1], [0, 1, 2, 3]]
        # normalised by the CSV's Width/Height (40x50), using pixel edges: x2 + 1
        torch.testing.assert_close(tracks[0].boxes[0], torch.tensor([10 / 40, 10 / 50, 30 / 40, 50 / 50]))
        torch.testing.assert_close(tracks[2].boxes[0], torch.tensor([16 / 64, 6 / 32, 48 / 64, 32 / 32]))
        # frames in order within a track, pixels from the right files
        assert tracks[2].images[3, 0, 0, 0] == pytest.approx((40 + 30) / 255)

    def test_cache_round_trip(self, tmp_path):
        _write_gtsrb_fixture(tmp_path)
        a = gtsrb(root=tmp_path)
        assert (tmp_path / "stnviz-cache" / "gtsrb-train-32.pt").is_file()
        b = gtsrb(root=tmp_path)
        assert torch.equal(a.images, b.images) and torch.equal(a.extras["roi"], b.extras["roi"])

    def test_split_holds_out_whole_tracks(self):
        ds = sample("gtsrb")
        # make two tracks per class so every class can hold one out
        ds2 = ImageSet(torch.cat([ds.images, ds.images]), torch.cat([ds.labels, ds.labels]),
                       track=torch.cat([ds.extras["track"], ds.extras["track"] + 1]),
                       frame=torch.cat([ds.extras["frame"]] * 2), roi=torch.cat([ds.extras["roi"]] * 2))
        train, val = split_tracks(ds2, 0.5, seed=0)
        tr, va = set(train.extras["track"].tolist()), set(val.extras["track"].tolist())
        assert tr and va and not (tr & va)
        assert len(train) + len(val) == len(ds2)
        assert set(train.labels.tolist()) == set(val.labels.tolist()) == set(ds.labels.tolist())
        again, _ = split_tracks(ds2, 0.5, seed=0)
        assert torch.equal(again.extras["track"], train.extras["track"])

    def test_missing_data_is_a_clear_error(self, tmp_path):
        with pytest.raises(ValueError, match=r"GTSRB not found under .*download=True"):
            gtsrb(root=tmp_path)


class TestMNIST:
    def test_mnist_missing(self, tmp_path):
        with pytest.raises(ValueError, match="MNIST not found"):
            mnist(root=tmp_path)


# --------------------------------------------------------------------------- issue 18.7: bad folders and files


def _csv(root, cls=0):
    return root / "gtsrb" / "GTSRB" / "Training" / f"{cls:05d}" / f"GT-{cls:05d}.csv"


def _ppm(root, name="00000_00001.ppm", cls=0):
    return root / "gtsrb" / "GTSRB" / "Training" / f"{cls:05d}" / name


def _replace_in_csv(root, old, new):
    path = _csv(root)
    path.write_text(path.read_text().replace(old, new))


def _truncate(path, keep):
    path.write_bytes(path.read_bytes()[:keep])


BAD_GTSRB = {
    # name: (what is done to a good fixture, the one line expected: file or folder, expectation, what came)
    "no class folders": (lambda r: [__import__("shutil").rmtree(p) for p in (r / "gtsrb/GTSRB/Training").iterdir()],
                         r"GTSRB folder .*Training holds no class folders; expected 00000 to 00042"),
    "junk folder": (lambda r: (r / "gtsrb/GTSRB/Training/junk").mkdir(),
                    r"GTSRB folder .*Training holds the folder 'junk'; expected only class folders 00000 to 00042"),
    "class out of range": (lambda r: (r / "gtsrb/GTSRB/Training/00001").rename(r / "gtsrb/GTSRB/Training/00077"),
                           r"holds the folder '00077'; expected only class folders 00000 to 00042"),
    "empty class folder": (lambda r: [p.unlink() for p in (r / "gtsrb/GTSRB/Training/00001").glob("*.ppm")],
                           r"GTSRB class folder .*00001 holds no images; expected TTTTT_FFFFF.ppm files"),
    "no csv": (lambda r: _csv(r).unlink(), r"GTSRB class folder .*00000 has no GT-\*.csv annotation file; expected GT-00000.csv"),
    "csv missing columns": (lambda r: _csv(r).write_text("Filename;Width;Height\n00000_00000.ppm;40;50\n"),
                            r"GT-00000.csv: expected the ;-separated columns Filename;Width;.*ClassId, got 'Filename;Width;Height' "
                            r"\(missing Roi.X1, Roi.Y1, Roi.X2, Roi.Y2, ClassId\)"),
    "csv comma-separated": (lambda r: _replace_in_csv(r, ";", ","), r"GT-00000.csv: expected the ;-separated columns .*got 'Filename,Width"),
    "csv empty": (lambda r: _csv(r).write_text(""), r"GT-00000.csv: expected the ;-separated columns .*got 'an empty file'"),
    "csv not a number": (lambda r: _replace_in_csv(r, "00000_00001.ppm;40;50", "00000_00001.ppm;forty;50"),
                         r"GT-00000.csv line 3: expected a file name and whole numbers .*got '00000_00001.ppm;forty;50;"),
    "csv short row": (lambda r: _replace_in_csv(r, "00000_00001.ppm;40;50;10;10;29;49;0", "00000_00001.ppm;40"),
                      r"GT-00000.csv line 3: expected a file name and whole numbers .*got '00000_00001.ppm;40;;"),
    "csv zero width": (lambda r: _replace_in_csv(r, "00000_00001.ppm;40;50", "00000_00001.ppm;0;50"),
                       r"GT-00000.csv line 3: expected a positive Width and Height, got 0 x 50"),
    "csv binary": (lambda r: _csv(r).write_bytes(bytes(range(256))), r"GT-00000.csv is not text \(byte 128 is 0x80\); expected a ;-separated CSV"),
    "csv wrong class": (lambda r: _replace_in_csv(r, "10;10;29;49;0", "10;10;29;49;5"),
                        r"GT-00000.csv: 00000_00000.ppm has ClassId 5; expected 0, its folder's class"),
    "truncated image": (lambda r: _truncate(_ppm(r), 100),
                        r"GTSRB image .*00000_00001.ppm cannot be decoded \(OSError: image file is truncated.*\); expected a readable PPM image"),
    "not an image": (lambda r: _ppm(r).write_text("hello"),
                     r"GTSRB image .*00000_00001.ppm cannot be decoded \(UnidentifiedImageError: cannot identify image file\)"),
    "empty image": (lambda r: _ppm(r).write_bytes(b""), r"GTSRB image .*00000_00001.ppm cannot be decoded"),
    "image is a folder": (lambda r: (_ppm(r).unlink(), _ppm(r).mkdir()),
                          r"GTSRB image .*00000_00001.ppm cannot be decoded \(Is a directory\)"),
    "bad file name": (lambda r: _ppm(r).rename(_ppm(r, "sign.ppm")), r"GTSRB file .*sign.ppm is not named TTTTT_FFFFF.ppm"),
}


class TestBadGTSRB:
    """Every bad folder or file is one ValueError line naming it, what was expected and what came."""

    @pytest.mark.parametrize("case", sorted(BAD_GTSRB))
    def test_one_line_naming_the_file(self, tmp_path, case):
        mutate, message = BAD_GTSRB[case]
        _write_gtsrb_fixture(tmp_path)
        mutate(tmp_path)
        with pytest.raises(ValueError, match=message) as info:
            gtsrb(root=tmp_path, cache=False)
        assert "\n" not in str(info.value)
        assert not list(tmp_path.glob("stnviz-cache/*"))  # nothing cached from a bad folder

    def test_hidden_and_stray_files_are_skipped(self, tmp_path):
        _write_gtsrb_fixture(tmp_path)
        training = tmp_path / "gtsrb" / "GTSRB" / "Training"
        (training / ".DS_Store").write_bytes(b"\0\1")
        (training / "Readme.txt").write_text("GTSRB")
        (training / ".ipynb_checkpoints").mkdir()
        (training / "00000" / "._00000_00000.ppm").write_bytes(b"\0\5\26\7")  # a macOS resource fork
        assert len(gtsrb(root=tmp_path, cache=False)) == 9

    @pytest.mark.parametrize("inner", ["gtsrb", "gtsrb/GTSRB"])
    def test_root_one_level_too_deep_names_the_right_root(self, tmp_path, inner):
        _write_gtsrb_fixture(tmp_path)
        with pytest.raises(ValueError, match=rf"GTSRB not found under .*: no folder .*, but there is .*Training; "
                                             rf"point root= at {tmp_path} \(the folder that holds gtsrb/\)"):
            gtsrb(root=tmp_path / inner, cache=False)

    def test_test_split_without_annotations(self, tmp_path):
        (tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images").mkdir(parents=True)
        with pytest.raises(ValueError, match=r"GTSRB test annotations not found: expected .*gtsrb/GT-final_test.csv"):
            gtsrb(root=tmp_path, split="test", cache=False)

    @pytest.mark.parametrize("size", [0, -3, 2.5, True])
    def test_bad_size(self, tmp_path, size):
        with pytest.raises(ValueError, match=rf"GTSRB size must be a positive whole number of pixels, got {size!r}"):
            gtsrb(root=tmp_path, size=size)

    def test_truncated_cache_is_rebuilt_with_a_warning(self, tmp_path):
        _write_gtsrb_fixture(tmp_path)
        first = gtsrb(root=tmp_path)
        _truncate(tmp_path / "stnviz-cache" / "gtsrb-train-32.pt", 300)
        with pytest.warns(UserWarning, match=r"ignoring the unreadable GTSRB cache .*gtsrb-train-32.pt"):
            again = gtsrb(root=tmp_path)
        assert torch.equal(again.images, first.images) and torch.equal(again.extras["roi"], first.extras["roi"])
        assert torch.equal(gtsrb(root=tmp_path).images, first.images)  # rewritten: read without a warning


def _mnist_folder(root, n=20, shape=(28, 28)):
    from conftest import write_idx

    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    for part, count in (("train", n), ("t10k", 10)):
        write_idx(raw / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (count, *shape)))
        write_idx(raw / f"{part}-labels-idx1-ubyte", rng.integers(0, 10, count))
    return raw


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"

BAD_MNIST = {
    "truncated images": (lambda raw: _truncate(raw / IMAGES, 5000),
                         rf"{IMAGES} is truncated: its header promises shape \(20, 28, 28\) \(15696 bytes\), the file has 5000 bytes"),
    "truncated header": (lambda raw: _truncate(raw / IMAGES, 6), rf"{IMAGES} is truncated: 6 bytes, too short for its own header"),
    "empty file": (lambda raw: _truncate(raw / LABELS, 0),
                   rf"{LABELS} is not a uint8 IDX file: expected it to start with bytes 00 00 08 01, got an empty file"),
    "wrong magic": (lambda raw: (raw / IMAGES).write_bytes(b"\1\2" + (raw / IMAGES).read_bytes()[2:]),
                    rf"{IMAGES} is not a uint8 IDX file: expected it to start with bytes 00 00 08 03, got 01 02 08 03"),
    "gzip": (lambda raw: (raw / IMAGES).write_bytes(__import__("gzip").compress((raw / IMAGES).read_bytes())),
             rf"{IMAGES} is gzip-compressed; expected the uncompressed IDX file"),
    "labels 2-d": (lambda raw: __import__("conftest").write_idx(raw / LABELS, np.zeros((20, 1))),
                   rf"{LABELS} holds a 2-dimensional array; expected a 1-dimensional one \(N,\)"),
    "wrong image size": (lambda raw: __import__("conftest").write_idx(raw / IMAGES, np.zeros((20, 32, 32))),
                         rf"{IMAGES} holds an array of shape \(20, 32, 32\); expected \(N, 28, 28\)"),
    "label count": (lambda raw: __import__("conftest").write_idx(raw / LABELS, np.zeros(15)),
                    rf"{LABELS} holds 15 labels; expected one per image of .*{IMAGES} \(20\)"),
    "label out of range": (lambda raw: __import__("conftest").write_idx(raw / LABELS, np.full(20, 200)),
                           rf"{LABELS}: labels must be 0 to 9; label 0 is 200"),
    "trailing bytes": (lambda raw: (raw / LABELS).write_bytes((raw / LABELS).read_bytes() + b"\0"),
                       rf"{LABELS} has trailing bytes: its header promises shape \(20,\) \(28 bytes\), the file has 29 bytes"),
}


class TestBadMNIST:
    @pytest.mark.parametrize("case", sorted(BAD_MNIST))
    def test_one_line_naming_the_file(self, tmp_path, case):
        mutate, message = BAD_MNIST[case]
        raw = _mnist_folder(tmp_path)
        assert len(mnist(root=tmp_path)) == 20  # the good folder loads
        mutate(raw)
        with pytest.raises(ValueError, match=message) as info:
            mnist(root=tmp_path)
        assert "\n" not in str(info.value)

    def test_missing_file_is_named(self, tmp_path):
        raw = _mnist_folder(tmp_path)
        (raw / "t10k-labels-idx1-ubyte").unlink()
        with pytest.raises(ValueError, match=r"MNIST not found under .* \(missing t10k-labels-idx1-ubyte in .*raw\)"):
            mnist(root=tmp_path)


def test_svhn_split_is_named(tmp_path):
    from stnviz.data import svhn

    with pytest.raises(ValueError, match=r"SVHN split must be 'train', 'test' or 'extra', got 'valid'"):
        svhn(split="valid", root=tmp_path)
