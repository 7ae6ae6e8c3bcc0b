import pytest
import torch

from stnviz import resolve_device


class TestResolveDevice:
    def test_auto_prefers_cuda_then_mps_then_cpu(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device("auto").type == "cuda"
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
        assert resolve_device(None).type == "mps"
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        assert resolve_device("auto") == torch.device("cpu")

    def test_explicit(self):
        assert resolve_device("cpu") == torch.device("cpu")
        assert resolve_device(torch.device("cpu")) == torch.device("cpu")

    def test_unknown_string(self):
        with pytest.raises(ValueError, match="device must be 'auto', 'cpu'.*got 'gpu0'"):
            resolve_device("gpu0")

    def test_missing_cuda(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
        with pytest.raises(ValueError, match="no CUDA device is available"):
            resolve_device("cuda")

    def test_cuda_index_out_of_range(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(ValueError, match="only 1 CUDA device"):
            resolve_device("cuda:3")
