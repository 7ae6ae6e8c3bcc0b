import os
import pickle

import pytest
import torch

import stnviz
from stnviz import get_model
from stnviz.checkpoints import CheckpointError, CheckpointWarning, load_checkpoint, load_model, save_checkpoint


def _trained_like(name="stn_cnn", *, device, **kw):
    torch.manual_seed(1)
    model = get_model(name, device=device, **kw)
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
        model = _trained_like("stn_gtsrb", device=device)
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
        model = _trained_like("stn_cnn", family="tps", device=device)
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

    def test_plain_types_only(self, tmp_path, device):
        with pytest.raises(ValueError, match=r"meta\['when'\] must hold only plain types"):
            save_checkpoint(_trained_like(device=device), tmp_path / "m.pt", {"when": object()})
        assert not (tmp_path / "m.pt").exists()

    def test_needs_registered_model(self, tmp_path):
        with pytest.raises(ValueError, match="registered builder"):
            save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "m.pt")

    def test_extra_state(self, tmp_path, device):
        model = _trained_like("stn_tutorial", device=device)
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

    def test_truncated(self, tmp_path, device):
        path = save_checkpoint(_trained_like(device=device), tmp_path / "m.pt")
        data = path.read_bytes()
        cut = tmp_path / "cut.pt"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"cannot read .*cut\.pt: truncated"):
            load_checkpoint(cut)

    def test_missing(self, tmp_path, device):
        with pytest.raises(FileNotFoundError, match=r"nope\.pt does not exist"):
            load_model(tmp_path / "nope.pt", device=device)

    def test_other_architecture(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        with pytest.raises(CheckpointError, match=r"holds architecture 'stn_tutorial', expected 'stn_gtsrb'"):
            load_model(path, arch="stn_gtsrb", device=device)

    def test_weights_do_not_fit(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_cnn", device=device), tmp_path / "m.pt")
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
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        member = _largest_storage(path)
        start, size = _member_data_offset(path, member)
        raw = bytearray(path.read_bytes())
        raw[start + size // 2] ^= 0x10
        bad = tmp_path / "flipped.pt"
        bad.write_bytes(bytes(raw))
        with pytest.raises(CheckpointError, match=r"flipped\.pt is corrupted"):
            load_model(bad, device=device)

    def test_weights_changed_behind_the_digest_are_caught(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        payload = torch.load(path, weights_only=True)
        key = next(iter(payload["state_dict"]))
        payload["state_dict"][key] = payload["state_dict"][key].clone()
        payload["state_dict"][key].view(-1)[0] += 1e-3  # a valid zip with valid CRCs, other weights
        torch.save(payload, tmp_path / "edited.pt")
        with pytest.raises(CheckpointError, match=r"edited\.pt is corrupted: its weights' SHA-256 is .* the file records"):
            load_checkpoint(tmp_path / "edited.pt")

    def test_digest_is_stored_and_files_without_one_are_refused(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        payload = load_checkpoint(path)
        assert re.fullmatch(r"[0-9a-f]{64}", payload["weights_sha256"])
        del payload["weights_sha256"]  # a valid zip with valid CRCs, but nothing vouches for the weights
        torch.save(payload, tmp_path / "nodigest.pt")
        expected = (r"nodigest\.pt carries no weights digest \(expected a 'weights_sha256' string, got NoneType\); "
                    r"re-save it with stnviz\.checkpoints\.save_checkpoint to add one$")
        with pytest.raises(CheckpointError, match=expected):
            load_model(tmp_path / "nodigest.pt", device=device)
        with pytest.raises(CheckpointError, match=expected):
            stnviz.load_pretrained(tmp_path / "nodigest.pt", device=device)

    def test_fuzzed_files_only_ever_raise_checkpoint_error_naming_the_file(self, tmp_path, device):
        good_path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "good.pt")
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
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
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
    def test_a_read_only_checkpoint_is_not_replaced(self, tmp_path, device):
        """save_checkpoint writes through stnviz._io.atomic_write (tested in test_io.py)."""
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        before = path.read_bytes()
        path.chmod(0o444)
        with pytest.raises(PermissionError, match=r"m\.pt is read-only"):
            save_checkpoint(_trained_like("stn_cnn", device=device), path)
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.pt"]


class TestFamilyName:
    """The transform family is called ``family`` everywhere: in model arguments, metadata and code."""

    def test_files_say_family(self, tmp_path, device):
        path = save_checkpoint(_trained_like("stn_cnn", family="tps", device=device), tmp_path / "m.pt")
        payload = load_checkpoint(path)
        assert payload["model_args"] == {"family": "tps"} and payload["meta"]["family"] == "tps"
        assert "transform" not in payload["meta"]

    def test_a_file_saying_transform_is_not_translated(self, tmp_path, device):
        """The pre-release name is not read: such a file's arguments are refused, naming them."""
        path = save_checkpoint(_trained_like("stn_cnn", family="tps", device=device), tmp_path / "m.pt")
        payload = torch.load(path, weights_only=True)
        payload["model_args"] = {"transform": "tps"}
        torch.save(payload, path)
        with pytest.raises(CheckpointError, match=r"m\.pt: cannot rebuild its model 'stn_cnn' with \{'transform': 'tps'\}: "
                                                  r"bad arguments .*unexpected keyword argument 'transform'"):
            load_model(path, device=device)

    def test_transform_keyword_is_refused(self, device):
        with pytest.raises(ValueError, match=r"bad arguments for architecture 'stn_cnn': .*unexpected keyword argument "
                                             r"'transform'"):
            get_model("stn_cnn", transform="attention", device=device)


# --------------------------------------------------------------------------- issue 18 item 2: bounded files


def _rezip(src, dst, *, compress=zipfile.ZIP_DEFLATED, replace=None):
    """Copy the zip ``src`` to ``dst`` with members written with ``compress``: every one, or only
    those in ``replace``, which maps a member name to new bytes (a weight storage: a bomb)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = (replace or {}).get(info.filename, zin.read(info.filename))
            how = compress if replace is None or info.filename in replace else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=how)
    return dst


def _forbid(monkeypatch, *names):
    """Make reading a zip member's data or unpickling fail loudly: what is refused must be refused
    from the zip directory alone."""
    def boom(*args, **kwargs):
        raise AssertionError("the checkpoint's data was read before it was refused")

    for owner, attr in names:
        monkeypatch.setattr(owner, attr, boom)


class TestZipDirectory:
    def test_deflate_bomb_is_refused_before_anything_is_decompressed(self, tmp_path, monkeypatch, device):
        good = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        member = _largest_storage(good)
        bomb = _rezip(good, tmp_path / "bomb.pt", replace={member: bytes(64 * 2**20)})  # 64 MiB of zeros
        assert bomb.stat().st_size < 2**20  # a small file that unpacks to 64 MiB
        _forbid(monkeypatch, (zipfile.ZipFile, "testzip"), (zipfile.ZipFile, "read"), (zipfile.ZipFile, "open"),
                (torch, "load"))
        with pytest.raises(CheckpointError, match=r"refused to load .*bomb\.pt: its member '.*' is compressed \(deflate, "
                                                  r"[\d,]+ bytes that unpack to 67,108,864\)"):
            load_checkpoint(bomb)

    def test_any_compressed_member_is_refused(self, tmp_path, device):
        good = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        deflated = _rezip(good, tmp_path / "deflated.pt")  # the same weights, deflated
        with pytest.raises(CheckpointError, match=r"deflated\.pt: its member .* is compressed \(deflate"):
            load_model(deflated, device=device)
        assert load_checkpoint(_rezip(good, tmp_path / "stored.pt", compress=zipfile.ZIP_STORED))["arch"] == "stn_tutorial"

    def test_stored_member_declaring_more_than_it_holds_is_refused(self, tmp_path, monkeypatch, device):
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        member = _largest_storage(path)
        with zipfile.ZipFile(path) as zf:
            held = zf.getinfo(member).file_size
        crafted = _declare_size(path, tmp_path / "crafted.pt", member, uncompressed=3 * 2**30)
        _forbid(monkeypatch, (zipfile.ZipFile, "testzip"), (torch, "load"))
        with pytest.raises(CheckpointError, match=rf"crafted\.pt: its stored member '.*' declares 3,221,225,472 bytes "
                                                  rf"but holds {held:,}"):
            load_checkpoint(crafted)

    def test_total_size_is_bounded(self, tmp_path, monkeypatch, device):
        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        assert stnviz.checkpoints.MAX_CHECKPOINT_BYTES == 2**30
        with pytest.raises(CheckpointError, match=r"m\.pt: it is [\d,]+ bytes, above the bound of 10,000 \(MAX_CHECKPOINT_BYTES\)"):
            load_checkpoint(path, max_bytes=10_000)
        assert load_checkpoint(path, max_bytes=path.stat().st_size)["arch"] == "stn_tutorial"
        with monkeypatch.context() as m:  # the module's bound is read at each load (load_pretrained has no max_bytes=)
            m.setattr(stnviz.checkpoints, "MAX_CHECKPOINT_BYTES", 10_000)
            with pytest.raises(CheckpointError, match=r"above the bound of 10,000"):
                stnviz.load_pretrained(path, device=device)
        # a small file whose directory says a member holds 3 GiB (both sizes agree)
        member = _largest_storage(path)
        crafted = _declare_size(path, tmp_path / "crafted.pt", member, uncompressed=3 * 2**30, compressed=3 * 2**30)
        _forbid(monkeypatch, (zipfile.ZipFile, "testzip"), (torch, "load"))
        with pytest.raises(CheckpointError, match=r"crafted\.pt: its members hold 3,2[\d,]+ bytes in all, above the bound "
                                                  r"of 1,073,741,824 \(MAX_CHECKPOINT_BYTES\)"):
            load_checkpoint(crafted)


def _declare_size(src, dst, member, *, uncompressed=None, compressed=None):
    """Copy ``src`` to ``dst`` with the sizes of ``member`` changed in the zip's central directory
    (the data, and the sizes in its local header, are left as they are)."""
    raw = bytearray(src.read_bytes())
    for at in [m.start() for m in re.finditer(b"PK\x01\x02", bytes(raw))]:
        name_len = int.from_bytes(raw[at + 28 : at + 30], "little")
        if raw[at + 46 : at + 46 + name_len] == member.encode():
            if compressed is not None:
                raw[at + 20 : at + 24] = compressed.to_bytes(4, "little")
            if uncompressed is not None:
                raw[at + 24 : at + 28] = uncompressed.to_bytes(4, "little")
            break
    else:
        raise AssertionError(f"no central directory entry for {member}")
    dst.write_bytes(bytes(raw))
    return dst


class TestModelArgumentsBoundedByTheWeights:
    def _crafted(self, tmp_path, device, arch, **model_args):
        path = save_checkpoint(_trained_like(arch, device=device), tmp_path / "m.pt")
        payload = torch.load(path, weights_only=True)
        payload["model_args"] = model_args
        torch.save(payload, tmp_path / "crafted.pt")
        return tmp_path / "crafted.pt"

    def test_huge_num_classes_is_refused_before_it_is_allocated(self, tmp_path, device):
        from torch.overrides import TorchFunctionMode

        crafted = self._crafted(tmp_path, device, "stn_tutorial", num_classes=10**8)  # 20 GB of head weights

        class NoHugeTensors(TorchFunctionMode):
            """Fails the test at a tensor factory call for 10**8 elements or more, off the meta device."""

            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is torch.empty and str(kwargs.get("device")) != "meta":
                    size = args[0] if len(args) == 1 and not isinstance(args[0], int) else args
                    assert torch.Size(size).numel() < 10**8, f"a {tuple(size)} tensor was allocated"
                return func(*args, **kwargs)

        with NoHugeTensors(), pytest.raises(
            CheckpointError, match=r"crafted\.pt: its model_args \{'num_classes': 100000000\} ask for a larger 'stn_tutorial' "
                                   r"than the weights it stores: building it asked for [\d,]+ bytes \(a \(100000000, 50\) "
                                   r"tensor last\) where the file holds [\d,]+; refused before allocating"):
            stnviz.load_pretrained(crafted, device=device)

    def test_weights_of_other_shapes_are_named(self, tmp_path, device):
        crafted = self._crafted(tmp_path, device, "stn_tutorial", num_classes=12)
        with pytest.raises(CheckpointError, match=r"crafted\.pt: its weights do not fit architecture 'stn_tutorial' with "
                                                  r"\{'num_classes': 12\}: head\.3\.weight is \(12, 50\) in the model, "
                                                  r"\(10, 50\) in the file, head\.3\.bias is \(12,\) in the model, \(10,\)"):
            load_model(crafted, device=device)

    def test_10000_tps_control_points_are_refused_from_a_file(self, tmp_path, device):
        crafted = self._crafted(tmp_path, device, "stn_fcn_tps", control_points=10_000)
        with pytest.raises(CheckpointError, match=r"crafted\.pt: cannot rebuild its model 'stn_fcn_tps' .*TPS takes at most "
                                                  r"MAX_TPS_CONTROL_POINTS = 1024 control points, got K=10000"):
            load_model(crafted, device=device)

    def test_10000_tps_control_points_are_refused_in_code(self, device):
        from stnviz import geometry
        from stnviz.models import GridGenerator

        assert geometry.MAX_TPS_CONTROL_POINTS == 1024
        for ask in (lambda: get_model("stn_cnn", family="tps", control_points=10_000, device=device),
                    lambda: GridGenerator("tps", control_points=10_000),
                    lambda: geometry.tps_grid(torch.zeros(1, 10_000, 2), (8, 8))):
            with pytest.raises(ValueError, match="at most MAX_TPS_CONTROL_POINTS = 1024 control points, got K=10000"):
                ask()
        assert GridGenerator("tps", control_points=1024).num_params == 2048  # the bound itself is allowed

    def test_every_architecture_and_family_loads_within_its_budget(self, tmp_path, device):
        """The memory budget comes from the stored weights: a good file of any architecture and
        family must load (the builders' trial inputs and the weights fit in it)."""
        import inspect

        from stnviz import geometry, models

        shipped = [a for a in stnviz.list_models(pretrained=False) if a in models.__all__]  # not the tests' own
        assert len(shipped) >= 11
        for arch in shipped:
            params = inspect.signature(getattr(models, arch)).parameters
            asks = [{}]
            if "family" in params:
                asks += [{"family": f} for f in geometry.FAMILIES if f != "restricted"]
                asks += [{"family": "restricted", "components": ["rotation", "scale"]}]
            if "output_size" in params:
                asks.append({"output_size": [20, 20]})
            if "control_points" in params:
                asks.append({"control_points": 1024, **({"family": "tps"} if "family" in params else {})})
            for kwargs in asks:
                path = save_checkpoint(get_model(arch, device=device, **kwargs), tmp_path / f"{arch}.pt")
                assert load_model(path, device=device).stnviz_config == {"arch": arch, "kwargs": kwargs}


class _SystemPayload:
    """Unpickling this runs a shell command (os.system), which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TestCodeIsRefusedForSafety:
    def test_os_system_payload_is_refused_for_safety_not_called_malformed(self, tmp_path, device):
        marker = tmp_path / "pwned"
        evil = tmp_path / "evil.pt"
        torch.save({"format": "stnviz-checkpoint", "payload": _SystemPayload(marker)}, evil)
        with pytest.raises(CheckpointError) as err:
            stnviz.load_pretrained(evil, device=device)
        msg = str(err.value)
        assert "evil.pt" in msg and "holds code or objects" in msg and "refused for safety" in msg, msg
        assert "system" in msg and "malformed" not in msg and "weights_only" not in msg, msg
        assert not marker.exists()

    def test_refusal_does_not_depend_on_torch_wording(self, tmp_path, monkeypatch):
        evil = tmp_path / "evil.pt"
        torch.save({"format": "stnviz-checkpoint", "payload": _SystemPayload(tmp_path / "pwned")}, evil)

        def reworded(*args, **kwargs):
            raise pickle.UnpicklingError("Weights only load failed. Some future wording with no name in it.")

        monkeypatch.setattr(torch, "load", reworded)
        with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt: it holds code .*forbidden global "
                                                  r"(posix|nt)\.system"):
            load_checkpoint(evil)

    def test_globals_are_read_without_running_anything(self, tmp_path):
        from stnviz.checkpoints import _pickle_globals

        marker = tmp_path / "pwned"
        for protocol in (2, 4, 5):
            assert "system" in " ".join(_pickle_globals(pickle.dumps(_SystemPayload(marker), protocol=protocol)))
        assert _pickle_globals(b"not a pickle") == [] and not marker.exists()


class TestNonFiniteWeights:
    def _nan_model(self, device):
        model = _trained_like("stn_tutorial", device=device)
        with torch.no_grad():
            model.head[3].weight[0, 0] = float("nan")
            model.head[3].bias[1] = float("inf")
        return model

    def test_refused_on_save_unless_allowed(self, tmp_path, device):
        with pytest.raises(ValueError, match=r"refusing to save .*nan\.pt: weights head\.3\.weight, head\.3\.bias hold NaN "
                                             r"or inf .*allow_nonfinite=True"):
            save_checkpoint(self._nan_model(device), tmp_path / "nan.pt")
        assert not (tmp_path / "nan.pt").exists() and os.listdir(tmp_path) == []
        save_checkpoint(self._nan_model(device), tmp_path / "nan.pt", allow_nonfinite=True)
        assert (tmp_path / "nan.pt").is_file()

    def test_warned_about_on_load_naming_the_file_and_tensors(self, tmp_path, device):
        save_checkpoint(self._nan_model(device), tmp_path / "nan.pt", allow_nonfinite=True)
        with pytest.warns(CheckpointWarning, match=r"nan\.pt holds non-finite weights \(NaN or inf\) in head\.3\.weight, "
                                                   r"head\.3\.bias"):
            stnviz.load_pretrained(tmp_path / "nan.pt", device=device)

    def test_finite_files_load_without_a_warning(self, tmp_path, device):
        import warnings

        path = save_checkpoint(_trained_like("stn_tutorial", device=device), tmp_path / "m.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)
            load_model(path, device=device)
