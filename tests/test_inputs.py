"""stnviz.models.inputs: what a model says about the images it is given (range, dtype, size)."""

import pytest
import torch

from stnviz import get_model


class TestModelInputs:
    @pytest.fixture(autouse=True)
    def _fresh_warning_state(self, monkeypatch):
        from stnviz.models import inputs

        monkeypatch.setattr(inputs, "_warned", set())

    def test_images_in_0_255_warn_once(self, device):
        import warnings

        from stnviz.models.inputs import ImageRangeWarning

        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(2, 1, 28, 28, device=device)
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

    def test_other_image_size_names_both(self, device):
        rts = get_model("stn_cnn", device=device)  # built for 42x42
        with pytest.raises(ValueError, match=r"stn_cnn was built for 42x42 images, got 28x28"):
            rts(torch.rand(2, 1, 28, 28, device=device))

    def test_dtypes(self, device):
        model = get_model("cnn_tutorial", device=device).eval()
        x8 = (torch.rand(2, 1, 28, 28, device=device) * 255).to(torch.uint8)
        assert torch.allclose(model(x8), model(x8.float() / 255))
        x = torch.rand(2, 1, 28, 28, device=device)
        out = model(x.double())
        assert out.dtype == torch.float32 and torch.allclose(out, model(x))
        with pytest.raises(TypeError, match=r"cnn_tutorial expects float images in \[0, 1\] \(torch.float32\) or uint8 .*got dtype torch.int64"):
            model(torch.zeros(2, 1, 28, 28, dtype=torch.int64, device=device))

    @pytest.mark.parametrize("arch, kwargs, says", [
        ("stn_cnn", dict(output_size=[1, 1]), r"transformer output_size of 1x1: its layers need at least 4x4"),
        ("stn_cnn", dict(input_size=(1, 8, 8)), r"input of 8x8: its layers need at least 16x16"),
        ("cnn", dict(input_size=(1, 2, 2)), r"input of 2x2: its layers need at least 4x4"),
        ("stn_cnn", dict(output_size=[0, 5]), r"output_size must be two positive integers"),
    ])
    def test_builders_name_the_minimum_size(self, arch, kwargs, says, device):
        with pytest.raises(ValueError, match=says):
            get_model(arch, **kwargs, device=device)
