"""stnviz.models.registry: architectures by name; duplicates and dotted names refused."""

import pytest
from torch import nn

from stnviz.models import list_architectures, register_model


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
