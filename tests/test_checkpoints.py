import os
import pickle

import pytest
import torch

import stnviz
from stnviz.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from stnviz.checkpoints import _load_model as load_model  # what load_pretrained(path) runs
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
    def test_round_trip_bit_exact(self, tmp_path, device):
        model = _trained_like("stn_gtsrb")
        path = save_checkpoint(model, tmp_path / "m.pt", {"dataset": "gtsrb", "epochs": 3, "seed": 7, "metrics": {"acc": 0.5}})
        loaded = load_model(path, device=device)
        a, b = model.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k].cpu()), k
        x = torch.rand(4, 3, 32, 32, device=device)
        assert torch.equal(model.to(device)(x), loaded(x))
        assert not loaded.training

    def test_meta_contents(self, tmp_path, device):
        model = _trained_like("stn_cnn", family="tps")
        save_checkpoint(model, tmp_path / "m.pt", {"dataset": "mnist_rts", "epochs": 2, "seed": 3, "metrics": {"err": 0.01}})
        payload = load_checkpoint(tmp_path / "m.pt")
        assert payload["arch"] == "stn_cnn" and payload["model_args"] == {"family": "tps"}
        meta = payload["meta"]
        assert meta["dataset"] == "mnist_rts" and meta["epochs"] == 2 and meta["seed"] == 3
        assert meta["metrics"] == {"err": 0.01}
        assert meta["family"] == "tps" and meta["input_size"] == [1, 42, 42]
        assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["stnviz"] == stnviz.__version__
        assert meta["created"].endswith("+00:00") and meta["command"]
        loaded = load_model(tmp_path / "m.pt", device=device)
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
    def test_malicious_pickle_refused_and_never_runs(self, tmp_path, device):
        marker = tmp_path / "pwned"
        evil = tmp_path / "evil.pt"
        torch.save({"format": "stnviz-checkpoint", "payload": _Payload(str(marker))}, evil)
        # sanity: a plain unpickle *would* run it
        assert not marker.exists()
        with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt"):
            load_checkpoint(evil)
        with pytest.raises(CheckpointError, match="refused"):
            stnviz.load_pretrained(evil, device=device)
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

    def test_missing(self, tmp_path, device):
        with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
            load_model(tmp_path / "nope.pt", device=device)

    def test_other_architecture(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        with pytest.raises(CheckpointError, match=r"holds architecture 'stn_tutorial', expected 'stn_gtsrb'"):
            load_model(path, arch="stn_gtsrb", device=device)

    def test_weights_do_not_fit(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_cnn"), tmp_path / "m.pt")
        payload = load_checkpoint(path)
        payload["model_args"] = {"family": "projective"}  # regressor now has 8 outputs, file has 6
        torch.save(payload, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match=r"bad\.pt: its weights do not fit architecture 'stn_cnn'"):
            load_model(tmp_path / "bad.pt", device=device)

    def test_not_a_stnviz_checkpoint(self, tmp_path):
        torch.save({"state_dict": {}}, tmp_path / "plain.pt")
        with pytest.raises(CheckpointError, match="not a stnviz checkpoint"):
            load_checkpoint(tmp_path / "plain.pt")


# --------------------------------------------------------------------------- issue 12: trust


import random  # noqa: E402
import re  # noqa: E402
import zipfile  # noqa: E402


def _member_data_offset(path, name_suffix):
    """Byte offset and size of the (stored, uncompressed) zip member ending in ``name_suffix``."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(name_suffix))
    raw = path.read_bytes()
    h = info.header_offset
    name_len, extra_len = int.from_bytes(raw[h + 26 : h + 28], "little"), int.from_bytes(raw[h + 28 : h + 30], "little")
    return h + 30 + name_len + extra_len, info.file_size


def _largest_storage(path):
    with zipfile.ZipFile(path) as zf:
        return max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size).filename


class TestCorruption:
    def test_flipped_byte_in_a_weight_is_caught(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        member = _largest_storage(path)
        start, size = _member_data_offset(path, member)
        raw = bytearray(path.read_bytes())
        raw[start + size // 2] ^= 0x10
        bad = tmp_path / "flipped.pt"
        bad.write_bytes(bytes(raw))
        with pytest.raises(CheckpointError, match=r"flipped\.pt is corrupted"):
            load_model(bad, device=device)

    def test_weights_changed_behind_the_digest_are_caught(self, tmp_path):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        payload = torch.load(path, weights_only=True)
        key = next(iter(payload["state_dict"]))
        payload["state_dict"][key] = payload["state_dict"][key].clone()
        payload["state_dict"][key].view(-1)[0] += 1e-3  # a valid zip with valid CRCs, other weights
        torch.save(payload, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=r"edited\.pt is corrupted: its weights' SHA-256 is .* the file records"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_digest_is_stored_and_files_without_one_still_load(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        payload = load_checkpoint(path)
        assert re.fullmatch(r"[0-9a-f]{64}", payload["weights_sha256"])
        del payload["weights_sha256"]  # as written by earlier versions
        torch.save(payload, tmp_path / "old.pt")
        assert load_model(tmp_path / "old.pt", device=device).meta["arch"] == "stn_tutorial"

    def test_fuzzed_files_only_ever_raise_checkpoint_error_naming_the_file(self, tmp_path, device):
        good_path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "good.pt")
        good = good_path.read_bytes()
        pkl_start, pkl_size = _member_data_offset(good_path, "data.pkl")
        rng = random.Random(0)
        for i in range(120):
            raw = bytearray(good)
            kind = i % 6
            if kind >= 4:  # the pickled header: keys, types, storage sizes
                raw[pkl_start + rng.randrange(pkl_size)] = rng.randrange(256)
            elif kind == 0:  # zip headers
                for _ in range(rng.randint(1, 4)):
                    raw[rng.randrange(0, 4096)] = rng.randrange(256)
            elif kind == 1:  # the central directory at the end
                for _ in range(rng.randint(1, 4)):
                    raw[rng.randrange(len(raw) - 2048, len(raw))] = rng.randrange(256)
            elif kind == 2:  # anywhere
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            else:  # truncated
                raw = raw[: rng.randrange(1, len(raw))]
            path = tmp_path / f"fuzz{i}.pt"
            path.write_bytes(bytes(raw))
            try:
                load_model(path, device=device)
            except CheckpointError as e:
                assert f"fuzz{i}.pt" in str(e)
            # any other exception type fails the test

    @pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", b"PK\x03\x04" + b"\x00" * 40,
                                         pickle.dumps({"format": "stnviz-checkpoint"})])
    def test_non_checkpoint_files(self, tmp_path, content, device):
        path = tmp_path / "other.pt"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=r"other\.pt"):
            load_model(path, device=device)

    @pytest.mark.parametrize("model_args", [{"num_classes": -3}, {"input_size": [1, -28, 28]}, {"num_classes": "ten"}])
    def test_crafted_model_arguments(self, tmp_path, model_args, device):
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        payload = torch.load(path, weights_only=True)
        payload["model_args"] = model_args
        torch.save(payload, tmp_path / "crafted.pt")
        with pytest.raises(CheckpointError, match=r"crafted\.pt: cannot rebuild its model 'stn_tutorial'"):
            load_model(tmp_path / "crafted.pt", device=device)

    def test_refusal_names_the_global_without_advice_to_load_unsafely(self, tmp_path):
        evil = tmp_path / "evil.pt"
        torch.save({"format": "stnviz-checkpoint", "payload": _Payload(str(tmp_path / "pwned"))}, evil)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(evil)
        msg = str(err.value)
        assert "forbidden global" in msg and "open" in msg
        assert "weights_only" not in msg and "add_safe_globals" not in msg and "trust" not in msg



class TestWritesAtomically:
    def test_a_read_only_checkpoint_is_not_replaced(self, tmp_path):
        """save_checkpoint writes through stnviz._io.atomic_write (tested in test_io.py)."""
        path = save_checkpoint(_trained_like("stn_tutorial"), tmp_path / "m.pt")
        before = path.read_bytes()
        path.chmod(0o444)
        with pytest.raises(PermissionError, match=r"m\.pt is read-only"):
            save_checkpoint(_trained_like("stn_cnn"), path)
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]


class TestFamilyName:
    """The transform family is called ``family`` everywhere; ``transform`` (its older name) is read
    from old files silently and accepted from code with a DeprecationWarning."""

    def test_old_files_say_transform(self, tmp_path, device):
        model = _trained_like("stn_cnn", family="tps")
        path = save_checkpoint(model, tmp_path / "old.pt", meta={"dataset": "x"})
        payload = torch.load(path, weights_only=True)
        payload["model_args"] = {"transform": "tps"}
        payload["meta"]["transform"] = payload["meta"].pop("family")
        torch.save(payload, path)
        loaded = load_model(path, device=device)
        assert loaded.transformers[0].family == "tps" and loaded.meta["family"] == "tps"
        assert loaded.meta["model_args"] == {"family": "tps"}

    def test_transform_keyword_still_works_with_a_warning(self, device):
        from stnviz.models import SpatialTransformer
        from stnviz.models.registry import build_model

        with pytest.warns(DeprecationWarning, match="family="):
            m = build_model("stn_cnn", transform="attention")
        assert m.transformers[0].family == "attention"
        with pytest.warns(DeprecationWarning, match="family="):
            st = SpatialTransformer(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)), transform="attention")
        assert st.family == "attention"
        with pytest.raises(ValueError, match="pass family= only"):
            build_model("stn_cnn", transform="tps", family="tps")
