"""stnviz.data.augment: on-device augmentation (random affine, object placement, Reframed)."""

import math

import pytest
import torch

from stnviz import geometry
from stnviz.data import ImageSet, random_affine, sample


class TestAugment:
    def test_deterministic_and_in_range(self):
        x = sample("gtsrb").get(torch.arange(8)).images
        a = random_affine(x, None, torch.Generator().manual_seed(0))
        b = random_affine(x, None, torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a, x)
        # the geometry is geometry.warp by the drawn theta (draws: rotation, scale, tx, ty, then
        # contrast and brightness, which are off here), border padding
        jitter = random_affine(x, None, torch.Generator().manual_seed(0), brightness=0.0, contrast=0.0)
        u = torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
        s = 0.9 + 0.2 * u[:, 1]
        theta = geometry.compose_affine(rotation=(u[:, 0] * 2 - 1) * math.radians(10), scale_x=s, scale_y=s,
                                        tx=(u[:, 2] * 2 - 1) * 0.1, ty=(u[:, 3] * 2 - 1) * 0.1)
        expected = geometry.warp(x, geometry.affine_grid(theta, (32, 32)), padding_mode="border")
        torch.testing.assert_close(jitter, expected)
        # with every range at zero it is the identity
        still = random_affine(x, None, torch.Generator().manual_seed(0), rotation_deg=0.0, scale=(1.0, 1.0),
                              translate=0.0, brightness=0.0, contrast=0.0)
        torch.testing.assert_close(still, x, atol=1e-6, rtol=0)


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
        # the boxes travel with the batch: each returned roi is where its object now is
        boxes = torch.tensor([[0.1, 0.1, 0.9, 0.9], [0.2, 0.15, 0.7, 0.85]] * 4)
        squares = ImageSet((_square_images(boxes) * 255).to(torch.uint8), torch.zeros(8), roi=boxes)
        moved = next(Reframed(squares, brightness=0.0, contrast=0.0, padding="zeros", rotation_deg=0.0).batches(8))
        assert not torch.equal(moved.extras["roi"], boxes)
        for img, box in zip(moved.images, moved.extras["roi"]):
            ys, xs = torch.nonzero(img[0] > 0.5, as_tuple=True)
            seen = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / 32
            assert torch.allclose(seen, box, atol=1.5 / 32), (seen, box)
