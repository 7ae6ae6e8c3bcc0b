"""stnviz.data.distortions: the paper's distorted MNIST variants and their ground truth."""

import numpy as np
import pytest
import torch

from stnviz import geometry
from stnviz.data import DISTORTIONS, DistortedMNIST, distort, sample
from stnviz.data.distortions import hash_uniform


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
        assert gt["rotation_deg"].abs().max() <= 45 + 1e-4
        assert gt["rotation_deg"].abs().max() > 40  # the range is used, not just allowed
        assert gt["scale"].min() >= 0.7 and gt["scale"].max() <= 1.2
        # the scaled digit box stays on the 42x42 canvas
        assert (gt["translation_px"].abs() <= 21 - 14 * gt["scale"].unsqueeze(1) + 1e-5).all()

    def test_rotated_range(self, digits):
        gt = DistortedMNIST(digits, "r", seed=5).get(torch.arange(1000)).extras
        assert gt["rotation_deg"].abs().max() <= 90 + 1e-4 and gt["rotation_deg"].abs().max() > 85

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
