"""stnviz.data.catalog: named data sets and their train / val / test splits."""

import pytest

from stnviz.data import load_splits


class TestSplits:
    def test_mnist_splits_from_local_root(self, mnist_root):
        s = load_splits("mnist_rts", root=mnist_root)
        assert (len(s.train), len(s.val), len(s.test)) == (720, 80, 200)
        assert s.image_size == (1, 42, 42)
        assert not set(s.train.source.images.flatten(1).sum(1).tolist()) >= set(
            s.val.source.images.flatten(1).sum(1).tolist()
        ) or len(s.val) == 0

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
            load_splits("imagenet")

    @pytest.mark.parametrize("name", [None, 3])
    def test_name_that_is_not_a_string(self, name):
        with pytest.raises(ValueError, match=rf"data set name must be a string, one of \('mnist', .*\), got {type(name).__name__} {name}"):
            load_splits(name)
