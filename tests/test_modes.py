"""stnviz.models.modes: a model's mode for a block, and where (and in which dtype) its inputs go."""

import pytest
import torch
from torch import nn

from stnviz.capture import model_device_dtype as from_capture
from stnviz import get_model
from stnviz.models import eval_mode, model_device_dtype


class TestEvalMode:
    def test_restores_training_mode_also_on_error(self, device):
        model = get_model("stn_tutorial", device=device).train()
        with eval_mode(model):
            assert not model.training and not model.transformers[0].training
        assert model.training and model.transformers[0].training
        with pytest.raises(RuntimeError, match="boom"):
            with eval_mode(model):
                raise RuntimeError("boom")
        assert model.training

    def test_restores_each_submodules_own_mode(self, device):
        """A BatchNorm the user froze in eval mode inside a training model stays frozen after an
        inspection (model.train(True) would have switched it back to training)."""
        model = get_model("stn_gtsrb", device=device).train()
        frozen = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)][:2]
        for m in frozen:
            m.eval()
        before = {name: m.training for name, m in model.named_modules()}
        assert not all(before.values()) and any(before.values())
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
        assert {name: m.training for name, m in model.named_modules()} == before

    def test_keeps_eval_mode(self, device):
        model = get_model("cnn_tutorial", device=device).eval()
        with eval_mode(model):
            pass
        assert not model.training


class TestModelDeviceDtype:
    def test_follows_the_model(self, device):
        model = get_model("cnn_tutorial", device=device)
        assert model_device_dtype(model) == (device, torch.float32)
        assert model_device_dtype(model.to(torch.float64)) == (device, torch.float64)

    def test_first_floating_tensor_wins_buffers_too(self):
        class OnlyBuffers(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("count", torch.zeros(1, dtype=torch.long))
                self.register_buffer("scale", torch.ones(1, dtype=torch.float16))

        assert model_device_dtype(OnlyBuffers()) == (torch.device("cpu"), torch.float16)

    def test_no_floating_tensor_means_cpu_float32(self):
        assert model_device_dtype(nn.ReLU()) == (torch.device("cpu"), torch.float32)

    def test_one_function(self):
        assert from_capture is model_device_dtype  # capture re-exports it, never a second copy
