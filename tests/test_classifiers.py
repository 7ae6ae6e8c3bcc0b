"""stnviz.models.classifiers: the architectures, their ST / no-ST twins and input checks."""

import pytest
import torch

from stnviz import get_model
from stnviz.models import SpatialTransformer

ARCHS = {
    "stn_tutorial": (1, 28, 28, 10, 1),
    "cnn_tutorial": (1, 28, 28, 10, 0),
    "stn_cnn": (1, 42, 42, 10, 1),
    "cnn": (1, 42, 42, 10, 0),
    "stn_gtsrb": (3, 32, 32, 43, 2),
    "cnn_gtsrb": (3, 32, 32, 43, 0),
    "stn_cifar": (3, 32, 32, 10, 1),
    "cnn_cifar": (3, 32, 32, 10, 0),
}


class TestBuilders:
    @pytest.mark.parametrize("name", sorted(ARCHS))
    def test_shapes_and_transformer_count(self, name, device):
        c, h, w, classes, n_st = ARCHS[name]
        model = get_model(name, device=device).eval()
        assert model(torch.rand(2, c, h, w, device=device)).shape == (2, classes)
        assert len(model.transformers) == n_st
        assert model.stnviz_config == {"arch": name, "kwargs": {}}

    @pytest.mark.parametrize("stn,twin", [("stn_tutorial", "cnn_tutorial"), ("stn_cnn", "cnn"),
                                          ("stn_gtsrb", "cnn_gtsrb"), ("stn_cifar", "cnn_cifar")])
    def test_twin_has_identical_classifier(self, stn, twin, device):
        a, b = get_model(stn, device=device).eval(), get_model(twin, device=device).eval()
        ka = {k: v.shape for k, v in a.state_dict().items() if "transformer" not in k and not _in_st(a, k)}
        kb = {k: v.shape for k, v in b.state_dict().items()}
        assert ka == kb
        # with the ST twin's classifier weights copied, an untrained ST model equals its twin
        b.load_state_dict({k: a.state_dict()[k] for k in kb})
        x = torch.rand(3, *a.input_size, device=device)
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("family", ["affine", "projective", "tps"])
    def test_stn_cnn_families(self, family, device):
        model = get_model("stn_cnn", family=family, device=device).eval()
        assert model.transformers[0].family == family
        assert model(torch.rand(2, 1, 42, 42, device=device)).shape == (2, 10)

    def test_stn_cnn_output_size(self, device):
        model = get_model("stn_cnn", output_size=(21, 21), device=device).eval()
        seen = []
        model.body.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        model(torch.rand(2, 1, 42, 42, device=device))
        assert seen[0] == (2, 1, 21, 21)

    def test_normalises_after_transformer(self, device):
        """Zero padding must stay black: the transformer sees raw [0, 1] images."""
        model = get_model("stn_tutorial", device=device).eval()
        seen = []
        model.transformers[0].register_forward_hook(lambda m, i, o: seen.append(i[0]))
        x = torch.rand(2, 1, 28, 28, device=device)
        model(x)
        assert torch.equal(seen[0], x)

    def test_wrong_channels(self, device):
        with pytest.raises(ValueError, match=r"stn_gtsrb expects images \(B, 3, 32, 32\), got shape \(2, 1, 32, 32\)"):
            get_model("stn_gtsrb", device=device)(torch.rand(2, 1, 32, 32, device=device))

    def test_unknown_arch_and_bad_kwargs(self, device):
        with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
            get_model("resnet", device=device)
        with pytest.raises(ValueError, match="bad arguments for architecture 'stn_cnn'"):
            get_model("stn_cnn", colour=True, device=device)


def _in_st(model, key):
    names = [n for n, m in model.named_modules() if isinstance(m, SpatialTransformer)]
    return any(key.startswith(n + ".") for n in names)
