import pytest
import torch

import stnviz
from stnviz.checkpoints import save_checkpoint


@pytest.fixture
def weights_dir(tmp_path, monkeypatch, device):
    monkeypatch.setenv("STNVIZ_CHECKPOINTS", str(tmp_path))
    torch.manual_seed(0)
    model = stnviz.get_model("stn_tutorial", device=device)
    save_checkpoint(model, tmp_path / "stn_tutorial.testset.pt", {"dataset": "testset", "metrics": {"acc": 0.25}})
    return tmp_path, model


class TestListModels:
    def test_architectures(self):
        assert "stn_cnn" in stnviz.list_models(pretrained=False)
        assert stnviz.list_models("cnn*", pretrained=False) == ["cnn", "cnn_cifar", "cnn_gtsrb", "cnn_tutorial"]

    def test_pretrained_found_in_env_dir(self, weights_dir):
        assert "stn_tutorial.testset" in stnviz.list_models(pretrained=True)
        assert "stn_tutorial.testset" not in stnviz.list_models(pretrained=False)
        assert "stn_tutorial.testset" in stnviz.list_models("stn_tutorial*")


class TestLoadPretrained:
    def test_by_name(self, weights_dir, device):
        _, model = weights_dir
        loaded = stnviz.load_pretrained("stn_tutorial.testset", device=device)
        assert loaded.meta["dataset"] == "testset" and loaded.meta["metrics"] == {"acc": 0.25}
        x = torch.rand(2, 1, 28, 28, device=device)
        assert torch.equal(loaded(x), model.to(device).eval()(x))
        assert next(loaded.parameters()).device == device

    def test_get_model_with_tag_loads_weights(self, weights_dir, device):
        assert stnviz.get_model("stn_tutorial.testset", device=device).meta["dataset"] == "testset"
        with pytest.raises(ValueError, match="arguments are fixed"):
            stnviz.get_model("stn_tutorial.testset", num_classes=3, device=device)

    def test_by_path(self, weights_dir, device):
        d, _ = weights_dir
        assert stnviz.load_pretrained(d / "stn_tutorial.testset.pt", device=device).meta["dataset"] == "testset"

    def test_unknown_name(self, weights_dir, device):
        with pytest.raises(ValueError, match=r"no trained weights named 'stn_cnn.svhn'; expected one of"):
            stnviz.load_pretrained("stn_cnn.svhn", device=device)

    def test_architecture_name_hint(self, weights_dir, device):
        with pytest.raises(ValueError, match=r"use stnviz.get_model\('stn_cnn'\)"):
            stnviz.load_pretrained("stn_cnn", device=device)

    def test_file_of_other_arch_under_a_name(self, weights_dir, device):
        d, model = weights_dir
        (d / "stn_tutorial.testset.pt").rename(d / "stn_gtsrb.renamed.pt")
        with pytest.raises(stnviz.CheckpointError, match="holds architecture 'stn_tutorial', expected 'stn_gtsrb'"):
            stnviz.load_pretrained("stn_gtsrb.renamed", device=device)


class TestGetModel:
    def test_untrained_with_kwargs(self, device):
        m = stnviz.get_model("stn_cnn", family="tps", device=device)
        assert m.transformers[0].family == "tps"


class TestPretrainedTable:
    def test_lists_found_weights_with_metadata(self, weights_dir):
        from stnviz.hub import pretrained_table

        t = pretrained_table()
        row = t[t["name"] == "stn_tutorial.testset"].iloc[0]
        assert row["dataset"] == "testset" and row["input_size"] == "1x28x28" and row["MB"] > 0


class TestLeftoverFiles:
    """Issue 12: a killed save leaves a temp file; it is never a model, and unreadable files are
    reported, not fatal."""

    @pytest.fixture
    def leftovers(self, weights_dir):
        d, _ = weights_dir
        names = [".stn_tutorial.testset.pt.ab12cd34.stnviz-tmp.pt"]  # what a SIGKILL during a save leaves
        for n in names:
            (d / n).write_bytes(b"PK\x03\x04 half a file")
        return d

    def test_temp_files_are_not_models(self, leftovers):
        names = stnviz.list_models(pretrained=True)
        assert "stn_tutorial.testset" in names
        assert not [n for n in names if "tmp" in n or n.startswith(".")]

    def test_cli_models_does_not_list_them(self, leftovers, capsys):
        from stnviz.cli import main

        assert main(["models", "--pretrained"]) == 0
        out = capsys.readouterr().out
        assert "stn_tutorial.testset" in out and "tmp" not in out

    def test_pretrained_table_skips_and_reports_unreadable_files(self, leftovers):
        from stnviz.hub import pretrained_table

        (leftovers / "stn_tutorial.broken.pt").write_bytes(b"not a checkpoint")
        with pytest.warns(UserWarning, match=r"pretrained_table skipped .*stn_tutorial\.broken\.pt"):
            t = pretrained_table()
        assert "stn_tutorial.testset" in set(t["name"]) and "stn_tutorial.broken" not in set(t["name"])
        (path, reason), = [s for s in t.attrs["skipped"] if "broken" in s[0]]
        assert path.endswith("stn_tutorial.broken.pt") and "cannot read" in reason
