import math

import numpy as np
import pytest
import torch
from PIL import Image

from stnviz import geometry
from stnviz.data import (
    DISTORTIONS,
    DistortedMNIST,
    ImageSet,
    distort,
    gtsrb,
    load_splits,
    mnist,
    random_affine,
    sample,
    sample_tracks,
    split_tracks,
    tracks_of,
)
from stnviz.data.distortions import hash_uniform
from stnviz.data.imageset import epoch_order


@pytest.fixture(scope="module")
def digits():
    return sample("mnist")


def _interior_error(a, b, margin):
    """Mean absolute difference inside the centred disc of radius 14 - margin (the part of a
    28x28 digit that stays on the canvas under any rotation)."""
    yy, xx = torch.meshgrid(torch.arange(28) - 13.5, torch.arange(28) - 13.5, indexing="ij")
    disc = (yy**2 + xx**2) < (14 - margin) ** 2
    return (a - b).abs()[..., disc].mean()


class TestDistort:
    @pytest.mark.parametrize("kind", ["rotated", "rts", "translated_cluttered"])
    def test_inverse_of_ground_truth_recovers_digit(self, digits, kind):
        ds = DistortedMNIST(digits, kind, seed=3)
        batch = ds.get(torch.arange(64))
        back = geometry.warp(batch.images, geometry.affine_grid(geometry.invert(batch.extras["theta"]), (28, 28)))
        original = digits.get(torch.arange(64)).images
        err = _interior_error(back, original, 2)
        # two bilinear resamplings blur the strokes a little (about 0.045); a wrong transform
        # gives about 0.2, the digits' own mean brightness
        assert err < 0.07, err
        if kind == "translated_cluttered":  # whole-pixel placement: only clutter overlaps differ
            assert err < 0.03

    def test_projective_inverse(self, digits):
        batch = DistortedMNIST(digits, "projective", seed=3).get(torch.arange(64))
        back = geometry.warp(batch.images, geometry.projective_grid(geometry.invert(batch.extras["homography"]), (28, 28)))
        assert _interior_error(back, digits.get(torch.arange(64)).images, 4) < 0.07

    def test_wrong_inverse_is_caught(self, digits):
        """Guard for the test above: the identity 'inverse' must fail the same check."""
        batch = DistortedMNIST(digits, "rts", seed=3).get(torch.arange(64))
        crop = batch.images[..., 7:35, 7:35]
        assert _interior_error(crop, digits.get(torch.arange(64)).images, 2) > 0.12

    @pytest.mark.parametrize("kind", sorted(DISTORTIONS))
    def test_deterministic_per_seed_and_index(self, digits, kind):
        ds = DistortedMNIST(digits, kind, seed=11)
        a = ds.get(torch.arange(10))
        b = ds.get(torch.tensor([7, 3, 0]))
        assert torch.equal(b.images[0], a.images[7]) and torch.equal(b.images[2], a.images[0])
        assert torch.equal(ds.get(torch.arange(10)).images, a.images)
        assert a.images.shape == (10, 1, DISTORTIONS[kind], DISTORTIONS[kind])
        other = DistortedMNIST(digits, kind, seed=12).get(torch.arange(10))
        assert not torch.equal(other.images, a.images)

    def test_fresh_changes_each_epoch_reproducibly(self, digits):
        ds = DistortedMNIST(digits, "rts", seed=1, fresh=True)
        e0, e1 = ds.get(torch.arange(8), epoch=0), ds.get(torch.arange(8), epoch=1)
        assert not torch.equal(e0.images, e1.images)
        assert torch.equal(ds.get(torch.arange(8), epoch=1).images, e1.images)

    def test_rts_parameter_ranges(self, digits):
        gt = DistortedMNIST(digits, "rts", seed=5).get(torch.arange(1000)).extras
        assert gt["rotation"].abs().max() <= math.pi / 4 + 1e-6
        assert gt["rotation"].abs().max() > math.radians(40)  # the range is used, not just allowed
        assert gt["scale"].min() >= 0.7 and gt["scale"].max() <= 1.2
        # the scaled digit box stays on the 42x42 canvas
        assert (gt["shift"].abs() <= 21 - 14 * gt["scale"].unsqueeze(1) + 1e-5).all()

    def test_rotated_range(self, digits):
        gt = DistortedMNIST(digits, "r", seed=5).get(torch.arange(1000)).extras
        assert gt["rotation"].abs().max() <= math.pi / 2 + 1e-6 and gt["rotation"].abs().max() > math.radians(85)

    def test_elastic_returns_tps_points(self, digits):
        b = DistortedMNIST(digits, "elastic", seed=5).get(torch.arange(4))
        assert b.extras["tps_points"].shape == (4, 16, 2)
        again = geometry.warp(digits.get(torch.arange(4)).images, geometry.tps_grid(b.extras["tps_points"], (28, 28)))
        torch.testing.assert_close(again.clamp(0, 1), b.images)

    def test_bad_input(self, digits):
        with pytest.raises(ValueError, match="distortion kind must be one of"):
            DistortedMNIST(digits, "swirl")
        with pytest.raises(ValueError, match=r"digits must be \(B, 1, 28, 28\), got shape \(2, 1, 32, 32\)"):
            distort(torch.rand(2, 1, 32, 32), "rts", torch.arange(2))
        with pytest.raises(ValueError, match="needs 1x28x28 digits"):
            DistortedMNIST(sample("gtsrb"), "rts")

    def test_hash_uniform_statistics(self):
        u = hash_uniform(0, torch.arange(20000), 0, 3)
        assert u.min() >= 0 and u.max() < 1
        assert abs(float(u.mean()) - 0.5) < 0.01
        assert abs(float(np.corrcoef(u[:, 0], u[:, 1])[0, 1])) < 0.03


class TestImageSet:
    def test_batches_cover_epoch_and_resume(self):
        ds = ImageSet(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10))
        seen = torch.cat([b.labels for b in ds.batches(3, shuffle=True, seed=1, epoch=2)])
        assert sorted(seen.tolist()) == list(range(10))
        resumed = torch.cat([b.labels for b in ds.batches(3, shuffle=True, seed=1, epoch=2, start=2)])
        assert torch.equal(resumed, seen[6:])
        assert not torch.equal(seen, torch.cat([b.labels for b in ds.batches(3, shuffle=True, seed=1, epoch=3)]))

    def test_distributed_slices_disjoint(self):
        parts = [epoch_order(11, shuffle=True, seed=0, epoch=0, rank=r, world_size=2) for r in range(2)]
        assert len(parts[0]) == len(parts[1]) == 6
        assert set(parts[0].tolist()) | set(parts[1].tolist()) == set(range(11))

    def test_float_scaling(self):
        ds = ImageSet(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), torch.zeros(2))
        assert torch.equal(ds.get(torch.arange(2)).images, torch.ones(2, 1, 2, 2))

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"labels must be \(N,\) with N=3"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
        with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
            ImageSet(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(3))


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


class TestSamplesAndSplits:
    def test_shipped_samples_offline(self):
        m = sample("mnist")
        assert len(m) == 1000 and m.image_size == (1, 28, 28)
        assert torch.bincount(m.labels).tolist() == [100] * 10
        tracks = sample_tracks()
        assert len(tracks) == 20 and len({t.label for t in tracks}) == 20
        for t in tracks:
            assert t.frames.tolist() == sorted(t.frames.tolist())
            assert ((t.boxes >= 0) & (t.boxes <= 1)).all()
            assert (t.boxes[:, 2] > t.boxes[:, 0]).all()

    def test_mnist_splits_from_local_root(self, mnist_root):
        s = load_splits("mnist_rts", root=mnist_root)
        assert (len(s.train), len(s.val), len(s.test)) == (720, 80, 200)
        assert s.image_size == (1, 42, 42)
        assert not set(s.train.source.images.flatten(1).sum(1).tolist()) >= set(
            s.val.source.images.flatten(1).sum(1).tolist()
        ) or len(s.val) == 0

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
            load_splits("imagenet")

    def test_mnist_missing(self, tmp_path):
        with pytest.raises(ValueError, match="MNIST not found"):
            mnist(root=tmp_path)


class TestAugment:
    def test_deterministic_and_in_range(self):
        x = sample("gtsrb").get(torch.arange(8)).images
        a = random_affine(x, None, torch.Generator().manual_seed(0))
        b = random_affine(x, None, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a, x)


# --------------------------------------------------------------------------- issue 12: frames in [0, 1]


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


def _square_images(boxes, size=32):
    """Black frames with a white box at each ``boxes`` row (fractions of the frame)."""
    ys = (torch.arange(size) + 0.5).view(size, 1) / size
    xs = (torch.arange(size) + 0.5).view(1, size) / size
    inside = [((xs >= b[0]) & (xs <= b[2]) & (ys >= b[1]) & (ys <= b[3])).float() for b in boxes]
    return torch.stack(inside).unsqueeze(1).repeat(1, 3, 1, 1)


class TestPlaceObject:
    def _place_plain(self, images, boxes, seed, **kw):
        from stnviz.data.augment import place_object

        return place_object(images, boxes, torch.Generator().manual_seed(seed), brightness=0.0, contrast=0.0,
                            padding="zeros", **kw)

    def test_the_returned_box_is_where_the_object_went(self):
        boxes = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.2, 0.15, 0.7, 0.85], [0.05, 0.3, 0.6, 0.95]] * 4)
        out, new = self._place_plain(_square_images(boxes), boxes, 0, rotation_deg=0.0)
        for img, b in zip(out, new):
            ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
            seen = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / 32
            assert torch.allclose(seen, b, atol=1.5 / 32), (seen, b)

    def test_sizes_in_range_and_object_stays_in_frame(self):
        boxes = torch.tensor([[0.12, 0.1, 0.88, 0.9]]).repeat(64, 1)
        _, new = self._place_plain(_square_images(boxes), boxes, 1, size=(0.5, 1.0), rotation_deg=10.0)
        longest = torch.maximum(new[:, 2] - new[:, 0], new[:, 3] - new[:, 1])
        assert longest.min() >= 0.5 - 1e-4 and new.min() >= -1e-4 and new.max() <= 1 + 1e-4
        # the draws spread over the range: small and large signs, left and right
        assert longest.min() < 0.6 and longest.max() > 0.9
        centre = (new[:, 0] + new[:, 2]) / 2
        assert centre.min() < 0.4 and centre.max() > 0.6

    def test_deterministic_in_range_and_validated(self):
        s = sample("gtsrb").get(torch.arange(16))
        from stnviz.data.augment import place_object

        a = place_object(s.images, s.extras["roi"], torch.Generator().manual_seed(3))
        b = place_object(s.images, s.extras["roi"], torch.Generator().manual_seed(3))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert a[0].shape == s.images.shape and 0 <= a[0].min() and a[0].max() <= 1
        with pytest.raises(ValueError, match="boxes must be"):
            place_object(s.images, s.extras["roi"][:3])
        with pytest.raises(ValueError, match="size must be"):
            place_object(s.images, s.extras["roi"], size=(0.9, 0.5))

    def test_reframed_source(self):
        from stnviz.data.augment import Reframed

        src = sample("gtsrb")
        rf = Reframed(src)
        assert len(rf) == len(src) and rf.image_size == src.image_size and rf.num_batches(100) == src.num_batches(100)
        full = list(rf.batches(100, shuffle=True, seed=2, epoch=1))
        plain = list(src.batches(100, shuffle=True, seed=2, epoch=1))
        assert all(torch.equal(f.index, p.index) and torch.equal(f.labels, p.labels) for f, p in zip(full, plain))
        assert not torch.equal(full[0].images, plain[0].images)
        assert not torch.equal(full[0].extras["roi"], plain[0].extras["roi"])
        # a resumed epoch (start=) draws the very same batches
        tail = list(rf.batches(100, shuffle=True, seed=2, epoch=1, start=3))
        assert all(torch.equal(a.images, b.images) for a, b in zip(tail, full[3:]))
        # another epoch, other draws
        other = next(rf.batches(100, shuffle=True, seed=2, epoch=2))
        assert not torch.equal(other.images, full[0].images)
        with pytest.raises(ValueError, match="no 'roi' column"):
            Reframed(sample("mnist"))


class TestBatchSize:
    @pytest.mark.parametrize("bs", [0, -2])
    def test_non_positive_batch_size(self, bs):
        s = sample("mnist")
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {bs}"):
            s.num_batches(bs)
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {bs}"):
            next(iter(s.batches(bs)))
