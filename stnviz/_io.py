"""File writing shared by every layer: write to a temp file beside the target, then rename.

Temp files are named ``.NAME.XXXXXXXX.stnviz-tmp.SUFFIX``: hidden, and never of the form
``ARCH.TAG.pt`` that :mod:`stnviz.hub` lists as trained weights. A kill part-way leaves such a
file behind; the next write to the same folder removes those older than
:data:`STALE_TEMP_SECONDS` (younger ones may belong to a write still running).
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path

__all__ = ["STALE_TEMP_SECONDS", "atomic_write", "is_temp_file", "remove_stale_temp_files"]

STALE_TEMP_SECONDS = 3600
TEMP_MARK = ".stnviz-tmp"
_TEMP_RE = re.compile(rf"^\..+{re.escape(TEMP_MARK)}(\.[^.]+)?$")


def is_temp_file(name: str | os.PathLike) -> bool:
    """True for the name of a temp file written by :func:`atomic_write`.

    Example:
        >>> is_temp_file(".stn_cnn.mnist.pt.k2j3a9_z.stnviz-tmp.pt"), is_temp_file("stn_cnn.mnist.pt")
        (True, False)
    """
    return bool(_TEMP_RE.match(Path(name).name))


def remove_stale_temp_files(folder: str | os.PathLike, *, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Delete :func:`atomic_write` temp files in ``folder`` older than ``older_than`` seconds
    (left by killed writes); return what was removed."""
    removed = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if is_temp_file(entry.name) and entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone already, or not ours to remove
            continue
    return removed


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temp file beside ``path``, then rename it into place.

    A failure (or a kill) part-way leaves any previous file at ``path`` untouched and no
    half-written file behind. An existing file keeps its permissions; a read-only one is not
    replaced (``PermissionError``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = None
    if path.exists():
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(f"cannot write {path}: expected a file path, got an existing directory or special file")
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise PermissionError(
                f"{path} is read-only (mode {stat.filemode(st.st_mode)}); refusing to replace it. "
                f"Make it writable (chmod u+w) or write to another path"
            )
        mode = stat.S_IMODE(st.st_mode)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask  # mkstemp makes 0600; give a new file the usual permissions
        os.chmod(tmp, mode)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
