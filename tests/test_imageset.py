"""stnviz.data.imageset: in-memory image sets, epoch order, batches on the device."""

import pytest
import torch

from stnviz.data import ImageSet, sample
from stnviz.data.imageset import epoch_order, to_device


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

    @pytest.mark.parametrize("name", ["mnist", "gtsrb"])
    def test_images_are_float_in_unit_range_everywhere(self, name):
        """Issue 23 item 1: sample(...).images was uint8 0-255 while .get(i).images was float in [0, 1]."""
        s = sample(name)
        assert s.pixels.dtype == torch.uint8  # stored compactly
        assert s.images.dtype == torch.float32 and 0 <= s.images.min() and s.images.max() == 1
        assert torch.equal(s.images[:5], s.get(torch.arange(5)).images)
        assert torch.equal(s.subset(torch.arange(5)).images, s.images[:5])
        assert torch.equal(next(iter(s.batches(5))).images, s.images[:5])

    def test_float_images_stay_as_given(self):
        images = torch.rand(3, 1, 4, 4)
        ds = ImageSet(images, torch.zeros(3))
        assert ds.pixels is images and torch.equal(ds.images, images)

    def test_batch_unpacks_as_images_and_labels(self):
        ds = sample("mnist").subset(torch.arange(10))
        for batch, (images, labels) in zip(ds.batches(4), ds.batches(4)):
            assert torch.equal(images, batch.images) and torch.equal(labels, batch.labels)
        images, labels = ds.get(torch.tensor([3, 1]))
        assert images.shape == (2, 1, 28, 28) and labels.tolist() == ds.labels[[3, 1]].tolist()

    def test_bad_input(self):
        with pytest.raises(ValueError, match=r"labels must be \(N,\) with N=3"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(4))
        with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
            ImageSet(torch.zeros(3, 2, 2, dtype=torch.uint8), torch.zeros(3))

    def test_not_tensors_are_one_line(self):
        import numpy as np

        with pytest.raises(ValueError, match=r"toy: images must be a torch.Tensor, got ndarray \(wrap it in torch.as_tensor\)"):
            ImageSet(np.zeros((3, 1, 2, 2), np.uint8), torch.zeros(3), name="toy")
        with pytest.raises(ValueError, match=r"toy: labels must be a torch.Tensor, got list"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), [0, 1, 2], name="toy")
        with pytest.raises(ValueError, match=r"toy: extra column 'track' must be a torch.Tensor, got list"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), name="toy", track=[1, 2, 3])
        with pytest.raises(ValueError, match=r"toy: extra column 'track' must have 3 rows, got shape \(\)"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(3), name="toy", track=torch.tensor(1))

    def test_fractional_labels_are_refused_not_truncated(self):
        with pytest.raises(ValueError, match=r"toy: labels must be whole class numbers, got fractional values such as 0.5"):
            ImageSet(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0.5, 1.0, 2.0]), name="toy")
        assert ImageSet(torch.zeros(2, 1, 2, 2), torch.tensor([1.0, 2.0])).labels.tolist() == [1, 2]


class TestBatchSize:
    @pytest.mark.parametrize("bs", [0, -2])
    def test_non_positive_batch_size(self, bs):
        s = sample("mnist")
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {bs}"):
            s.num_batches(bs)
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {bs}"):
            next(iter(s.batches(bs)))


class _HostTensor:
    """Stands in for a CPU tensor: records how it is moved (no GPU needed)."""

    def __init__(self):
        self.device, self.calls = torch.device("cpu"), []

    def pin_memory(self):
        self.calls.append("pin_memory")
        return self

    def to(self, device, non_blocking=False):
        self.calls.append(("to", torch.device(device).type, non_blocking))
        return self


class TestToDevice:
    def test_cpu_to_cuda_goes_through_pinned_memory_without_blocking(self):
        t = _HostTensor()
        to_device(t, "cuda")
        assert t.calls == ["pin_memory", ("to", "cuda", True)]

    @pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
    def test_other_devices_are_a_plain_copy(self, device):
        t = _HostTensor()
        to_device(t, device)
        assert t.calls == [("to", "cpu", False)]

    def test_none_leaves_the_tensor_where_it_is(self):
        t = torch.arange(3)
        assert to_device(t, None) is t

    def test_get_moves_images_labels_and_extras(self, monkeypatch, device):
        import stnviz.data.imageset as imageset

        moved = []
        monkeypatch.setattr(imageset, "to_device", lambda t, dev=None: moved.append((tuple(t.shape), dev)) or t.to(dev))
        ds = ImageSet(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.arange(4), track=torch.arange(4) // 2)
        b = ds.get(torch.tensor([3, 1]), device)
        assert sorted(moved, key=str) == sorted([((2, 1, 2, 2), device), ((2,), device), ((2,), device)], key=str)
        assert b.images.device == b.labels.device == b.extras["track"].device == device
        assert b.extras["track"].tolist() == [1, 0] and b.labels.tolist() == [3, 1]
