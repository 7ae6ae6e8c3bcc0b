import os
import pickle

import pytest
import torch

import stnviz
from stnviz.checkpoints import CheckpointError, atomic_write, load_checkpoint, load_model, save_checkpoint
from stnviz.models import build_model


def _trained_like(name="stn_cnn", **kw):
    torch.manual_seed(1)
    model = build_model(name, **kw)
    with torch.no_grad():  # move off identity so the round trip checks real numbers
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return model.eval()


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class TestSaveLoad:
    def test_round_trip_bit_exact(self, tmp_path):
        model = _trained_like("stn_gtsrb")
        path = save_checkpoint(model, tmp_path / "m.pt", {"dataset": "gtsrb", "epochs": 3, "seed": 7, "metrics": {"acc": 0.5}})
        loaded = load_model(path, device="cpu")
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        x = torch.rand(4, 3, 32, 32)
        assert torch.equal(model(x), loaded(x))
        assert not loaded.training

    def test_meta_contents(self, tmp_path):
        model = _trained_like("stn_cnn", transform="tps")
        save_checkpoint(model, tmp_path / "m.pt", {"dataset": "mnist_rts", "epochs": 2, "seed": 3, "metrics": {"err": 0.01}})
        payload = load_checkpoint(tmp_path / "m.pt")
        assert payload["arch"] == "stn_cnn" and payload["model_args"] == {"transform": "tps"}
        meta = payload["meta"]
        assert meta["dataset"] == "mnist_rts" and meta["epochs"] == 2 and meta["seed"] == 3
        assert meta["metrics"] == {"err": 0.01}
        assert meta["transform"] == "tps" and meta["input_size"] == [1, 42, 42]
        assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["stnviz"] == stnviz.__version__
        assert meta["created"].endswith("+00:00") and meta["command"]
        loaded = load_model(tmp_path / "m.pt")
        assert loaded.meta["dataset"] == "mnist_rts" and loaded.meta["arch"] == "stn_cnn"

    def test_plain_types_only(self, tmp_path):
        with pytest.raises(ValueError, match=r"meta\['when'\] must hold only plain types"):
            save_checkpoint(_trained_like(), tmp_path / "m.pt", {"when": object()})
        assert not (tmp_path / "m.pt").exists()

    def test_needs_registered_model(self, tmp_path):
        with pytest.raises(ValueError, match="registered builder"):
            save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m.pt")

    def test_extra_state(self, tmp_path):
        model = _trained_like("stn_tutorial")
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.rand(2, 1, 28, 28)).sum().backward()
        opt.step()
        save_checkpoint(model, tmp_path / "m.pt", extra={"optimizer": opt.state_dict(), "step": 5})
        extra = load_checkpoint(tmp_path / "m.pt")["extra"]
        assert extra["step"] == 5
        opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt2.load_state_dict(extra["optimizer"])


class TestBadFiles:
    def test_malicious_pickle_refused_and_never_runs(self, tmp_path):
        marker = tmp_path / "pwned"
        evil = tmp_path / "evil.pt"
        torch.save({"format": "stnviz-checkpoint", "payload": _Payload(str(marker))}, evil)
        # sanity: a plain unpickle *would* run it
        assert not marker.exists()
        with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt"):
            load_checkpoint(evil)
        with pytest.raises(CheckpointError, match="refused"):
            stnviz.load_pretrained(evil)
        assert not marker.exists()

    def test_raw_pickle_refused(self, tmp_path):
        marker = tmp_path / "pwned"
        evil = tmp_path / "evil.pt"
        evil.write_bytes(pickle.dumps(_Payload(str(marker)), protocol=2))
        with pytest.raises(CheckpointError, match="evil.pt"):
            load_checkpoint(evil)
        assert not marker.exists()

    def test_truncated(self, tmp_path):
        path = save_checkpoint(_trained_like(), tmp_path / "m.pt")
        data = path.read_bytes()
        cut = tmp_path / "cut.pt"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"cannot read .*cut\.pt: truncated"):
            load_checkpoint(cut)

    def test_missing(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
            load_model(tmp_path / "nope.pt")

    def test_other_architecture(self, tmp_path):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        with pytest.raises(CheckpointError, match=r"holds architecture 'stn_tutorial', expected 'stn_gtsrb'"):
            load_model(path, arch="stn_gtsrb")

    def test_weights_do_not_fit(self, tmp_path):
        path = save_checkpoint(_trained_like("stn_cnn"), tmp_path / "m.pt")
        payload = load_checkpoint(path)
        payload["model_args"] = {"transform": "projective"}  # regressor now has 8 outputs, file has 6
        torch.save(payload, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=r"bad\.pt: its weights do not fit architecture 'stn_cnn'"):
            load_model(tmp_path / "bad.pt")

    def test_not_a_stnviz_checkpoint(self, tmp_path):
        torch.save({"state_dict": {}}, tmp_path / "plain.pt")
        with pytest.raises(CheckpointError, match="not a stnviz checkpoint"):
            load_checkpoint(tmp_path / "plain.pt")


class TestAtomicWrite:
    def test_failure_keeps_previous_file(self, tmp_path):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        before = path.read_bytes()

        def boom(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write(path, boom)
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["m.pt"]
