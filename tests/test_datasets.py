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
