"""stnviz.models.transformer: SpatialTransformer, GridGenerator, Normalize, parameter groups."""

import pytest
import torch
from torch import nn

from stnviz import geometry, get_model
from stnviz.models import (
    GridGenerator,
    Normalize,
    SpatialTransformer,
    localization_parameters,
    param_groups,
)

FAMILY_KWARGS = [
    ("affine", {}),
    ("attention", {}),
    ("restricted", {"components": ("rotation", "scale", "translation")}),
    ("restricted", {"components": ("aspect", "shear")}),
    ("translation", {}),
    ("projective", {}),
    ("tps", {"control_points": 9}),
]


def _loc(c=1):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU())


def _smooth(b=3, c=2, h=12, w=10):
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    phase = torch.arange(b * c, dtype=torch.float32).view(b, c, 1, 1)
    return 0.5 + 0.4 * torch.sin(3 * x + 2 * y + phase)


class TestSpatialTransformer:
    @pytest.mark.parametrize("family,kwargs", FAMILY_KWARGS)
    def test_untrained_is_identity(self, family, kwargs, device):
        torch.manual_seed(0)
        x = _smooth().to(device)
        st = SpatialTransformer(_loc(), family=family, features=12, **kwargs).to(device)
        # even with a random localisation net, zero regression weights mean identity parameters
        out = st(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, x, atol=2e-5, rtol=0)

    def test_output_size_crops_and_zooms(self, device):
        x = _smooth(h=16, w=16).to(device)
        st = SpatialTransformer(_loc(), family="attention", output_size=(8, 8), features=12).to(device)
        st.set_constant_params(torch.tensor([0.5, 0.0, 0.0]))
        out = st(x)
        assert out.shape == (3, 2, 8, 8)
        # half-size window at the centre, sampled at 8x8 from 16x16: pixel centres land exactly
        # between input pixels 4..11 -> the central crop, averaged by bilinear at offset 0
        torch.testing.assert_close(out, x[:, :, 4:12, 4:12], atol=1e-5, rtol=0)

    def test_gradients_reach_localisation(self, device):
        torch.manual_seed(0)
        st = SpatialTransformer(_loc(), family="affine", features=12).to(device)
        x = _smooth().to(device)
        st(x)  # materialise the lazy layer
        st.regressor.weight.data.normal_(0, 0.01)
        st(x).square().sum().backward()
        assert st.regressor.weight.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in st.localization.parameters())

    def test_features_inferred_from_last_linear(self):
        st = SpatialTransformer(_loc(), family="projective")
        assert st.regressor.in_features == 12 and st.regressor.out_features == 8

    def test_features_required_without_linear(self):
        with pytest.raises(ValueError, match="features=F"):
            SpatialTransformer(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), family="affine")

    def test_bad_family(self):
        with pytest.raises(ValueError, match=r"family must be one of \(.*\), got 'similarity'"):
            SpatialTransformer(_loc(), family="similarity", features=12)

    def test_sampler_settings_reach_the_sampler(self, device):
        """padding_mode is the one word for what out-of-image samples read: stored, used, shown."""
        st = SpatialTransformer(_loc(), family="affine", features=12, padding_mode="border").to(device)
        st.set_constant_params(torch.tensor([2.0, 0, 0, 0, 2.0, 0]))  # zoom out: samples outside the input
        x = _smooth().to(device)
        theta = st.regressor.bias.detach().view(1, 2, 3).expand(3, 2, 3)
        expected = geometry.warp(x, geometry.affine_grid(theta, (12, 10)), padding_mode="border")
        assert st.padding_mode == "border" and "padding_mode='border'" in repr(st)
        with torch.no_grad():
            out = st(x)
        torch.testing.assert_close(out, expected)
        assert float(out.abs().min()) > 0  # border padding, no zeros

    @pytest.mark.parametrize("removed", [{"transform": "affine"}, {"padding": "zeros"}])
    def test_pre_release_keywords_are_gone(self, removed):
        """transform= (now family=) and padding= (now padding_mode=) were never released: plain TypeErrors."""
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(removed))}'"):
            SpatialTransformer(_loc(), features=12, **removed)
        with pytest.raises(TypeError, match="unexpected keyword argument 'padding'"):
            geometry.warp(_smooth(), geometry.affine_grid(torch.eye(2, 3).unsqueeze(0).expand(3, 2, 3), (4, 4)),
                          padding="zeros")
        assert not hasattr(SpatialTransformer(_loc(), features=12), "transform")

    def test_bad_rank(self):
        st = SpatialTransformer(_loc(), features=12)
        with pytest.raises(ValueError, match=r"expects \(B, C, H, W\), got shape \(2, 5, 5\)"):
            st(torch.rand(2, 5, 5))

    def test_set_constant_params_matches_geometry(self, device):
        x = _smooth().to(device)
        st = SpatialTransformer(_loc(), family="affine", features=12).to(device)
        theta = geometry.compose_affine(rotation=torch.tensor([0.4]), scale_x=0.9, scale_y=1.1, tx=0.1).to(device)
        st.set_constant_params(theta.reshape(-1))
        expected = geometry.warp(x, geometry.affine_grid(theta.expand(3, 2, 3), (12, 10)))
        torch.testing.assert_close(st(x), expected)
        with pytest.raises(ValueError, match="takes 6 parameters, got 5"):
            st.set_constant_params(torch.zeros(5))

    def test_tps_system_solved_once_per_size(self, monkeypatch):
        gen = GridGenerator("tps", control_points=9)
        calls = []
        real = geometry.tps_solve
        monkeypatch.setattr(geometry, "tps_solve", lambda *a, **k: calls.append(1) or real(*a, **k))
        p = geometry.identity_params("tps", control_points=9).expand(2, -1)
        for _ in range(3):
            gen(p, (6, 7))
        gen(p, (5, 5))
        assert len(calls) == 2


class TestNormalize:
    def test_values(self):
        n = Normalize((0.5, 0.25), (0.5, 0.25))
        x = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
        torch.testing.assert_close(n(x), torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))


class TestParamGroups:
    def test_localisation_separate(self, device):
        model = get_model("stn_gtsrb", device=device)
        groups = param_groups(model, lr=0.1, loc_lr=0.01)
        loc = {id(p) for p in localization_parameters(model)}
        assert {id(p) for p in groups[1]["params"]} == loc
        assert groups[1]["lr"] == 0.01 and groups[0]["lr"] == 0.1
        # both transformers' localisation nets and regressors, nothing else
        expected = set()
        for st in model.transformers:
            expected |= {id(p) for p in st.localization.parameters()} | {id(p) for p in st.regressor.parameters()}
        assert loc == expected
        assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
        opt = torch.optim.SGD(groups, lr=0.1)
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]

    def test_twin_has_one_group(self, device):
        assert len(param_groups(get_model("cnn", device=device), lr=0.1)) == 1

    def test_default_loc_lr(self, device):
        assert param_groups(get_model("stn_cnn", device=device), lr=0.05)[1]["lr"] == pytest.approx(0.005)
