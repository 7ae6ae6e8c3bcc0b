"""stnviz.data.shipped: the samples that ship with the package (work offline)."""

import numpy as np
import pytest
import torch

from stnviz.data import sample, sample_tracks, shipped


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


# --------------------------------------------------------------------------- issue 18.7: damaged files

@pytest.fixture
def fake_samples(tmp_path, monkeypatch):
    """The sample files read from ``tmp_path`` (a good copy of the MNIST one), the cache cleared."""
    from shutil import copyfile

    for name, file in shipped.SAMPLES.items():
        copyfile(shipped._path(name), tmp_path / file)
    monkeypatch.setattr(shipped, "_path", lambda name: tmp_path / shipped.SAMPLES[name])
    shipped._load.cache_clear()
    yield tmp_path / shipped.SAMPLES["mnist"]
    shipped._load.cache_clear()


class TestDamagedSampleFiles:
    @pytest.mark.parametrize("keep", [0, 10, 2000, -30])
    def test_truncated_sample_is_one_line(self, fake_samples, keep):
        data = fake_samples.read_bytes()
        fake_samples.write_bytes(data[: keep % len(data)])
        with pytest.raises(ValueError, match=r"shipped sample 'mnist' .*mnist_test_1000.npz is not a readable .npz file "
                                             r"\(.*\); expected numpy's savez format .* holding images, labels; "
                                             r"the installed package is damaged: reinstall stnviz") as info:
            sample("mnist")
        assert "\n" not in str(info.value)

    def test_corrupted_bytes(self, fake_samples):
        data = bytearray(fake_samples.read_bytes())
        data[len(data) // 2] ^= 0xFF
        fake_samples.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=r"mnist_test_1000.npz is not a readable .npz file \((BadZipFile|zlib|error)"):
            sample("mnist")

    def test_missing_arrays(self, fake_samples):
        np.savez(fake_samples, images=np.zeros((2, 1, 28, 28), np.uint8))
        with pytest.raises(ValueError, match=r"mnist_test_1000.npz lacks the arrays labels; expected images, labels, got images"):
            sample("mnist")

    def test_missing_file(self, fake_samples):
        fake_samples.unlink()
        with pytest.raises(ValueError, match=r"mnist_test_1000.npz does not exist; expected an .npz file"):
            sample("mnist")

    def test_good_copy_still_loads(self, fake_samples):
        assert len(sample("mnist")) == 1000


class TestReadNpz:
    @pytest.mark.parametrize("content, why", [
        (b"", r"it is empty"),
        (b"hello world", r"it starts with bytes 68 65 6c 6c"),
        (b"\x93NUMPY\x01\x00", r"it is a single .npy array"),
    ])
    def test_foreign_files(self, tmp_path, content, why):
        path = tmp_path / "x.npz"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=rf"recording .*x.npz is not a readable .npz file \({why}\)"):
            shipped.read_npz(path, what="recording")

    def test_object_arrays_are_refused(self, tmp_path):
        path = tmp_path / "x.npz"
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
        with pytest.raises(ValueError, match=r"x.npz is not a readable .npz file \(Object arrays cannot be loaded"):
            shipped.read_npz(path)
