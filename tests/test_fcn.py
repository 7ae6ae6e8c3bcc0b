"""The paper's FCN / ST-FCN builders and their shipped weights on rotated MNIST (R)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import stnviz
from stnviz import geometry
from stnviz.analysis import distortion_residuals
from stnviz.data import DistortedMNIST, sample
from stnviz.data.catalog import TEST_SEED
from stnviz import get_model
from stnviz.models import SpatialTransformer
from stnviz.train import evaluate

REPO = Path(__file__).resolve().parents[1]


def _digits(b=4, device=None):
    return sample("mnist").get(torch.arange(b)).images.to(device)


class TestBuilders:
    def test_registered_by_name(self, device):
        assert {"fcn", "stn_fcn"} <= set(stnviz.list_models(pretrained=False))
        assert get_model("stn_fcn", device=device).stnviz_config["arch"] == "stn_fcn"
        assert get_model("fcn", hidden=[64, 32], device=device).stnviz_config == {"arch": "fcn", "kwargs": {"hidden": [64, 32]}}

    @pytest.mark.parametrize("kwargs", [{}, {"family": "restricted", "components": ["rotation"]},
                                        {"output_size": [20, 20]}, {"family": "tps", "control_points": 9}])
    def test_shapes(self, kwargs, device):
        model = get_model("stn_fcn", **kwargs, device=device)
        assert model(_digits(device=device)).shape == (4, 10)
        assert model.transformer(_digits(device=device)).shape[-2:] == tuple(kwargs.get("output_size", (28, 28)))
        assert get_model("fcn", num_classes=7, device=device)(_digits(device=device)).shape == (4, 7)

    def test_fully_connected_classifier(self, device):
        model = get_model("stn_fcn", device=device)
        layers = [m for m in model.body.modules() if not isinstance(m, torch.nn.Sequential)]
        assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
        assert [m.out_features for m in layers if isinstance(m, torch.nn.Linear)] == [128, 128, 128]
        loc = [m.out_features for m in model.transformer.localization.modules() if isinstance(m, torch.nn.Linear)]
        assert loc == [32, 32, 32]

    def test_twin_has_the_same_classifier_and_no_transformer(self, device):
        st, twin = get_model("stn_fcn", device=device), get_model("fcn", device=device)
        assert isinstance(st.transformer, SpatialTransformer) and not twin.transformers
        assert [p.shape for p in st.body.parameters()] == [p.shape for p in twin.body.parameters()]

    @pytest.mark.parametrize("kwargs", [{}, {"family": "restricted", "components": ["rotation"]}])
    def test_identity_init(self, kwargs, device):
        model = get_model("stn_fcn", **kwargs, device=device).eval()
        x = _digits(device=device)
        st = model.transformer
        expected = geometry.identity_params(st.grid_generator.family, components=st.grid_generator.components).to(device)
        assert torch.allclose(st.predict_params(x), expected.expand(4, -1), atol=1e-6)
        assert torch.allclose(st(x), x, atol=1e-5)
        # and the whole model equals its classifier on the raw input: the transformer does nothing yet
        direct = model.head(model.body(model.normalize(x)))
        assert torch.allclose(model(x), direct, atol=1e-5)

    def test_normalises_after_the_transformer(self, device):
        model = get_model("stn_fcn", device=device).eval()
        st = model.transformer
        st.set_constant_params(torch.tensor([2.0, 0, 0, 0, 2.0, 0]))  # zoom out: zero padding around
        seen = {}
        model.normalize.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].detach()))
        model(torch.zeros(1, 1, 28, 28, device=device))
        assert float(seen["inp"].abs().max()) == 0.0  # padding enters as 0, not as a normalised grey

    def test_localisation_gets_gradients(self, device):
        model = get_model("stn_fcn", device=device)
        loss = F.cross_entropy(model(_digits(8, device=device)), torch.arange(8, device=device) % 10)
        loss.backward()
        assert model.transformer.regressor.weight.grad.abs().sum() > 0

    def test_bad_widths(self, device):
        with pytest.raises(ValueError, match="at least one width"):
            get_model("stn_fcn", hidden=[], device=device)


def _rotated_sample():
    return DistortedMNIST(sample("mnist"), "rotated", seed=TEST_SEED)


class TestShipped:
    """The shipped R models, scored on the 1,000 shipped test digits rotated by the test-split draws."""

    def test_fcn_scores(self, device):
        model = stnviz.load_pretrained("fcn.mnist_rotated", device=device)
        assert model.meta["dataset"] == "mnist_rotated"
        assert evaluate(model, _rotated_sample())["accuracy"] >= 0.96

    def test_stn_fcn_scores_and_uprights(self, device):
        model = stnviz.load_pretrained("stn_fcn.mnist_rotated", device=device)
        acc = evaluate(model, _rotated_sample())["accuracy"]
        twin = evaluate(stnviz.load_pretrained("fcn.mnist_rotated", device=device), _rotated_sample())["accuracy"]
        assert acc >= 0.97 and acc > twin
        undone = distortion_residuals(model, _rotated_sample()).set_index("component")["undone"]
        assert undone["rotation (deg)"] >= 0.4, undone


def _elastic_sample():
    return DistortedMNIST(sample("mnist"), "elastic", seed=TEST_SEED)


class TestShippedElastic:
    """The paper's E rows: the FCN and the ST-FCN with a thin-plate-spline transformer, scored on
    the 1,000 shipped test digits with the test-split elastic draws (1.89% and 1.08% test error on
    10,000 in their meta)."""

    def test_builder_is_the_tps_st_fcn(self, device):
        model = get_model("stn_fcn_tps", device=device)
        assert model.transformer.family == "tps" and "stn_fcn_tps" in stnviz.list_models(pretrained=False)
        assert model.stnviz_config["arch"] == "stn_fcn_tps"

    def test_scores_and_warps_per_digit(self, device):
        model = stnviz.load_pretrained("stn_fcn_tps.mnist_elastic", device=device)
        twin = stnviz.load_pretrained("fcn.mnist_elastic", device=device)
        assert model.meta["dataset"] == twin.meta["dataset"] == "mnist_elastic"
        acc, twin_acc = evaluate(model, _elastic_sample())["accuracy"], evaluate(twin, _elastic_sample())["accuracy"]
        assert acc >= 0.975 and acc > twin_acc, (acc, twin_acc)
        batch = _elastic_sample().get(torch.arange(64), device)
        with torch.no_grad(), stnviz.capture(model) as rec:
            model(batch.images)
        offsets = rec.last("transformer").params.reshape(64, -1, 2).cpu() - geometry.tps_control_points(16)
        assert offsets.abs().mean() > 0.02 and offsets.std(0).mean() > 0.01  # it moves, and per digit
