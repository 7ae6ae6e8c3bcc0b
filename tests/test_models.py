import math

import pytest
import torch
from torch import nn

import stnviz
from stnviz import geometry
from stnviz.models import (
    GridGenerator,
    Normalize,
    SpatialTransformer,
    build_model,
    list_architectures,
    localization_parameters,
    param_groups,
    register_model,
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
    def test_untrained_is_identity(self, family, kwargs):
        torch.manual_seed(0)
        x = _smooth()
        st = SpatialTransformer(_loc(), transform=family, features=12, **kwargs)
        # even with a random localisation net, zero regression weights mean identity parameters
        out = st(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, x, atol=2e-5, rtol=0)

    def test_output_size_crops_and_zooms(self):
        x = _smooth(h=16, w=16)
        st = SpatialTransformer(_loc(), transform="attention", output_size=(8, 8), features=12)
        st.set_constant_params(torch.tensor([0.5, 0.0, 0.0]))
        out = st(x)
        assert out.shape == (3, 2, 8, 8)
        # half-size window at the centre, sampled at 8x8 from 16x16: pixel centres land exactly
        # between input pixels 4..11 -> the central crop, averaged by bilinear at offset 0
        torch.testing.assert_close(out, x[:, :, 4:12, 4:12], atol=1e-5, rtol=0)

    def test_gradients_reach_localisation(self):
        torch.manual_seed(0)
        st = SpatialTransformer(_loc(), transform="affine", features=12)
        x = _smooth()
        st(x)  # materialise the lazy layer
        st.regressor.weight.data.normal_(0, 0.01)
        st(x).square().sum().backward()
        assert st.regressor.weight.grad.abs().sum() > 0
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in st.localization.parameters())

    def test_features_inferred_from_last_linear(self):
        st = SpatialTransformer(_loc(), transform="projective")
        assert st.regressor.in_features == 12 and st.regressor.out_features == 8

    def test_features_required_without_linear(self):
        with pytest.raises(ValueError, match="features=F"):
            SpatialTransformer(nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), transform="affine")

    def test_bad_family(self):
        with pytest.raises(ValueError, match="transform must be one of"):
            SpatialTransformer(_loc(), transform="similarity", features=12)

    def test_bad_rank(self):
        st = SpatialTransformer(_loc(), features=12)
        with pytest.raises(ValueError, match=r"expects \(B, C, H, W\), got shape \(2, 5, 5\)"):
            st(torch.rand(2, 5, 5))

    def test_set_constant_params_matches_geometry(self):
        x = _smooth()
        st = SpatialTransformer(_loc(), transform="affine", features=12)
        theta = geometry.compose_affine(rotation=torch.tensor([0.4]), scale_x=0.9, scale_y=1.1, tx=0.1)
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
    def test_shapes_and_transformer_count(self, name):
        c, h, w, classes, n_st = ARCHS[name]
        model = build_model(name).eval()
        assert model(torch.rand(2, c, h, w)).shape == (2, classes)
        assert len(model.transformers) == n_st
        assert model.stnviz_config == {"arch": name, "kwargs": {}}

    @pytest.mark.parametrize("stn,twin", [("stn_tutorial", "cnn_tutorial"), ("stn_cnn", "cnn"),
                                          ("stn_gtsrb", "cnn_gtsrb"), ("stn_cifar", "cnn_cifar")])
    def test_twin_has_identical_classifier(self, stn, twin):
        a, b = build_model(stn).eval(), build_model(twin).eval()
        ka = {k: v.shape for k, v in a.state_dict().items() if "transformer" not in k and not _in_st(a, k)}
        kb = {k: v.shape for k, v in b.state_dict().items()}
        assert ka == kb
        # with the ST twin's classifier weights copied, an untrained ST model equals its twin
        b.load_state_dict({k: a.state_dict()[k] for k in kb})
        x = torch.rand(3, *a.input_size)
        torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("family", ["affine", "projective", "tps"])
    def test_stn_cnn_families(self, family):
        model = build_model("stn_cnn", transform=family).eval()
        assert model.transformers[0].transform == family
        assert model(torch.rand(2, 1, 42, 42)).shape == (2, 10)

    def test_stn_cnn_output_size(self):
        model = build_model("stn_cnn", output_size=(21, 21)).eval()
        seen = []
        model.body.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        model(torch.rand(2, 1, 42, 42))
        assert seen[0] == (2, 1, 21, 21)

    def test_normalises_after_transformer(self):
        """Zero padding must stay black: the transformer sees raw [0, 1] images."""
        model = build_model("stn_tutorial").eval()
        seen = []
        model.transformers[0].register_forward_hook(lambda m, i, o: seen.append(i[0]))
        x = torch.rand(2, 1, 28, 28)
        model(x)
        assert torch.equal(seen[0], x)

    def test_wrong_channels(self):
        with pytest.raises(ValueError, match=r"stn_gtsrb expects images \(B, 3, 32, 32\), got shape \(2, 1, 32, 32\)"):
            build_model("stn_gtsrb")(torch.rand(2, 1, 32, 32))

    def test_unknown_arch_and_bad_kwargs(self):
        with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
            build_model("resnet")
        with pytest.raises(ValueError, match="bad arguments for architecture 'stn_cnn'"):
            build_model("stn_cnn", colour=True)


def _in_st(model, key):
    names = [n for n, m in model.named_modules() if isinstance(m, SpatialTransformer)]
    return any(key.startswith(n + ".") for n in names)


class TestRegistry:
    def test_list(self):
        names = list_architectures("stn_*")
        assert names == sorted(names) and all(n.startswith("stn_") for n in names)
        assert {"stn_cifar", "stn_cnn", "stn_gtsrb", "stn_tutorial"} <= set(names)

    def test_refuses_duplicates(self):
        with pytest.raises(ValueError, match="already registered"):
            register_model("stn_cnn")(lambda **kw: nn.Identity())

    def test_refuses_dotted_names(self):
        with pytest.raises(ValueError, match="may not contain"):
            register_model("a.b")(lambda **kw: nn.Identity())


class TestParamGroups:
    def test_localisation_separate(self):
        model = build_model("stn_gtsrb")
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

    def test_twin_has_one_group(self):
        assert len(param_groups(build_model("cnn"), lr=0.1)) == 1

    def test_default_loc_lr(self):
        assert param_groups(build_model("stn_cnn"), lr=0.05)[1]["lr"] == pytest.approx(0.005)


# --------------------------------------------------------------------------- issue 12: model inputs


class TestModelInputs:
    @pytest.fixture(autouse=True)
    def _fresh_warning_state(self, monkeypatch):
        from stnviz.models import inputs

        monkeypatch.setattr(inputs, "_warned", set())

    def test_images_in_0_255_warn_once(self):
        import warnings

        from stnviz.models.inputs import ImageRangeWarning

        model = build_model("stn_tutorial").eval()
        x = torch.rand(2, 1, 28, 28)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model(x)  # [0, 1]: nothing
            model(x * 255)
            model(x * 255)
        hits = [w for w in caught if issubclass(w.category, ImageRangeWarning)]
        assert len(hits) == 1
        assert "stn_tutorial expects float images in [0, 1], got values up to 25" in str(hits[0].message)
        assert "divide by 255" in str(hits[0].message)

    def test_the_shared_check_for_other_callers(self):
        from stnviz.models.inputs import ImageRangeWarning, warn_if_not_unit_range

        assert warn_if_not_unit_range(torch.rand(4, 3, 8, 8), where="capture") is False
        with pytest.warns(ImageRangeWarning, match=r"^capture expects float images in \[0, 1\]"):
            assert warn_if_not_unit_range(torch.rand(4, 3, 8, 8) * 255, where="capture") is True
        assert warn_if_not_unit_range(torch.full((1, 1, 2, 2), 1.2), where="capture") is False  # not far above 1
        assert warn_if_not_unit_range(torch.full((1, 1, 2, 2), 200, dtype=torch.uint8), where="capture") is False

    def test_other_image_size_names_both(self):
        rts = build_model("stn_cnn")  # built for 42x42
        with pytest.raises(ValueError, match=r"stn_cnn was built for 42x42 images, got 28x28"):
            rts(torch.rand(2, 1, 28, 28))

    def test_dtypes(self):
        model = build_model("cnn_tutorial").eval()
        x8 = (torch.rand(2, 1, 28, 28) * 255).to(torch.uint8)
        assert torch.allclose(model(x8), model(x8.float() / 255))
        x = torch.rand(2, 1, 28, 28)
        out = model(x.double())
        assert out.dtype == torch.float32 and torch.allclose(out, model(x))
        with pytest.raises(TypeError, match=r"cnn_tutorial expects float images in \[0, 1\] \(torch.float32\) or uint8 .*got dtype torch.int64"):
            model(torch.zeros(2, 1, 28, 28, dtype=torch.int64))

    @pytest.mark.parametrize("arch, kwargs, says", [
        ("stn_cnn", dict(output_size=[1, 1]), r"transformer output_size of 1x1: its layers need at least 4x4"),
        ("stn_cnn", dict(input_size=(1, 8, 8)), r"input of 8x8: its layers need at least 16x16"),
        ("cnn", dict(input_size=(1, 2, 2)), r"input of 2x2: its layers need at least 4x4"),
        ("stn_cnn", dict(output_size=[0, 5]), r"output_size must be two positive integers"),
    ])
    def test_builders_name_the_minimum_size(self, arch, kwargs, says):
        with pytest.raises(ValueError, match=says):
            build_model(arch, **kwargs)
