"""stnviz.data.shipped: the samples that ship with the package (work offline)."""

import torch

from stnviz.data import sample, sample_tracks


class TestSamples:
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
