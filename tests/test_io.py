"""stnviz._io: atomic file writes (temp file beside the target, then a rename)."""

import os
import stat
import time
from pathlib import Path

import pytest

from stnviz._io import atomic_write, is_temp_file, remove_stale_temp_files


def _writes(data: bytes):
    return lambda tmp: Path(tmp).write_bytes(data)


class TestAtomicWrite:
    def test_failure_keeps_previous_file(self, tmp_path):
        path = atomic_write(tmp_path / "m.pt", _writes(b"the previous weights"))
        before = path.read_bytes()

        def boom(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError, match="disk full"):
            atomic_write(path, boom)
        assert path.read_bytes() == before == b"the previous weights"
        assert sorted(os.listdir(tmp_path)) == ["m.pt"]


class TestTempFiles:
    def test_temp_name_is_hidden_and_never_a_weights_name(self, tmp_path):
        from stnviz.hub import WEIGHTS_FILE

        seen = []
        atomic_write(tmp_path / "stn_cnn.mnist_rts.pt", lambda tmp: (seen.append(os.path.basename(tmp)), open(tmp, "wb").close()))
        (name,) = seen
        assert name.startswith(".") and is_temp_file(name)
        assert not WEIGHTS_FILE.match(name)

    def test_stale_temp_files_are_removed_on_the_next_write(self, tmp_path):
        old = time.time() - 2 * 3600
        stale = [tmp_path / ".stn_cnn.mnist.pt.abcd1234.stnviz-tmp.pt",
                 tmp_path / ".anim.gif.q1w2e3r4.stnviz-tmp.gif"]
        fresh = tmp_path / ".last.pt.zzzz9999.stnviz-tmp.pt"  # may be a write in progress
        unrelated = tmp_path / ".hidden.pt"
        for f in stale + [fresh, unrelated]:
            f.write_bytes(b"x")
        for f in stale + [unrelated]:
            os.utime(f, (old, old))
        atomic_write(tmp_path / "m.pt", _writes(b"weights"))
        assert sorted(os.listdir(tmp_path)) == sorted([".hidden.pt", fresh.name, "m.pt"])
        assert remove_stale_temp_files(tmp_path) == []  # nothing stale is left


class TestReadOnly:
    def test_read_only_file_is_not_replaced(self, tmp_path):
        path = atomic_write(tmp_path / "m.pt", _writes(b"kept"))
        path.chmod(0o444)
        with pytest.raises(PermissionError, match=r"m\.pt is read-only .*refusing to replace it"):
            atomic_write(path, _writes(b"new"))
        assert path.read_bytes() == b"kept" and stat.S_IMODE(path.stat().st_mode) == 0o444
        assert sorted(os.listdir(tmp_path)) == ["m.pt"]

    def test_existing_file_keeps_its_mode(self, tmp_path):
        path = atomic_write(tmp_path / "m.pt", _writes(b"old"))
        path.chmod(0o640)
        atomic_write(path, _writes(b"new"))
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() == b"new"
