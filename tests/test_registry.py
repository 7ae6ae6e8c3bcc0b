"""stnviz.models.registry: architectures by name; duplicates and dotted names refused; one word per idea."""

import inspect
import subprocess
import sys

import pytest
from torch import nn

import stnviz
from stnviz import models
from stnviz.models import register_model
from stnviz.models.registry import ARCHITECTURES


class TestRegistry:
    def test_list(self):
        names = stnviz.list_models("stn_*", pretrained=False)
        assert names == sorted(names) and all(n.startswith("stn_") for n in names)
        assert {"stn_cifar", "stn_cnn", "stn_fcn_tps", "stn_gtsrb", "stn_tutorial"} <= set(names)
        assert names == ARCHITECTURES.names("stn_*")

    def test_builds_by_name_on_the_device(self, device):
        model = stnviz.get_model("stn_cnn", family="projective", device=device)
        assert model.transformer.family == "projective" and next(model.parameters()).device == device
        assert model.stnviz_config == {"arch": "stn_cnn", "kwargs": {"family": "projective"}}
        with pytest.raises(ValueError, match=r"unknown architecture 'resnet'; expected one of \['cnn', "):
            stnviz.get_model("resnet", device=device)

    def test_refuses_duplicates(self):
        with pytest.raises(ValueError, match="already registered"):
            register_model("stn_cnn")(lambda **kw: nn.Identity())

    def test_refuses_dotted_names(self):
        with pytest.raises(ValueError, match="may not contain"):
            register_model("a.b")(lambda **kw: nn.Identity())


class TestOneWordPerIdea:
    """Issue 19: get_model / list_models are the words for "a model by name"; the registry is reached
    through them, and every registered builder is importable from stnviz.models."""

    def test_no_synonyms_of_get_model_and_list_models_are_exported(self):
        for module in (stnviz, stnviz.hub, models, models.registry):
            assert not {"build_model", "list_architectures"} & set(module.__all__), module.__name__
            assert not hasattr(module, "build_model") and not hasattr(module, "list_architectures"), module.__name__

    def test_every_registered_builder_is_importable_from_models(self):
        """Run in a fresh interpreter: other tests register architectures of their own."""
        code = ("import stnviz.models as m\n"
                "from stnviz.models.registry import ARCHITECTURES\n"
                "print(' '.join(n for n in ARCHITECTURES.names() if n not in m.__all__ or not callable(getattr(m, n))))\n"
                "print(len(ARCHITECTURES.names()))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
        missing, count = out.stdout.splitlines()
        assert missing == "" and int(count) >= 11, out.stdout

    def test_a_builder_imported_from_models_is_the_registered_one(self):
        for name in ARCHITECTURES.names():
            if name in models.__all__:
                builder = getattr(models, name)
                assert inspect.isfunction(builder) and builder.__name__ == name
                assert builder().stnviz_config["arch"] == name  # it records how to rebuild it
