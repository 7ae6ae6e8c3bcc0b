"""A run's output folder: its lock (one run at a time), a probe write before the first step, and
write errors as one :class:`CannotWrite` line naming the file."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from torch import nn

from .._io import TEMP_MARK

__all__ = ["LOCK_FILE", "CannotWrite", "RunFolderBusy", "run_lock"]


class CannotWrite(OSError):
    """A file of a run could not be written (a read-only folder, a file where the folder should
    be, a full disk); the message names the file and the reason, ``errno`` is the system's."""


class RunFolderBusy(RuntimeError):
    """Another run holds the output folder's lock; the message names it and its lock file."""



@contextmanager
def _writing(path):
    """Turn an ``OSError`` raised inside into :class:`CannotWrite` naming ``path``."""
    try:
        yield
    except CannotWrite:
        raise
    except OSError as e:
        reason = e.strerror or str(e)
        err = CannotWrite(reason if reason.startswith("cannot write") else f"cannot write {path}: {reason}")
        err.errno = e.errno
        raise err from e


#: The lock file a run holds in its output folder (hidden; never a checkpoint name).
LOCK_FILE = ".stnviz-run.lock"
_held_locks: dict[str, tuple[int, int]] = {}  # resolved folder -> (thread id, depth) in this process


def _pid_is_dead(pid) -> bool:
    """True only when ``pid`` surely runs no process on this host (never guessed on Windows,
    where ``os.kill`` would end the process)."""
    if os.name == "nt" or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _read_lock(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _take_lock(folder: Path) -> Path:
    """Create ``folder/LOCK_FILE`` with ``O_CREAT | O_EXCL`` holding this run's pid, host, start
    time and command; a lock left by a process that is gone from this host is taken over."""
    path = folder / LOCK_FILE
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv)}
    for attempt in range(2):
        try:
            with _writing(path):
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except CannotWrite as e:
            if not isinstance(e.__cause__, FileExistsError):
                raise
            holder = _read_lock(path)
            if attempt == 0 and holder is not None and holder.get("host") == info["host"] and _pid_is_dead(holder.get("pid")):
                path.unlink(missing_ok=True)  # its run was killed before it could remove it
                continue
            who = ("a run whose lock cannot be read" if holder is None else
                   f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: {holder.get('command')}")
            raise RunFolderBusy(
                f"{folder} is in use by another training run ({who}); wait for it to end or write to another folder. "
                f"If that run is no longer running, remove its lock file {path}"
            ) from None
        try:
            with _writing(path), os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise AssertionError("unreachable")  # pragma: no cover


@contextmanager
def run_lock(folder: str | os.PathLike):
    """Hold the output folder of a run: ``folder/.stnviz-run.lock``, created exclusively and
    removed on leaving (also on an error). A second run into the same folder gets
    :class:`RunFolderBusy` naming the first (its pid, host, start and command) and the lock file
    to remove if that run is gone; a lock whose pid is dead on this host is taken over. The same
    thread may enter again (the CLI holds the folder around :func:`fit` and :func:`export_best`).
    Creates ``folder`` (removed again if it is left empty); a folder that cannot be written is
    :class:`CannotWrite`.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     with run_lock(tmp) as lock:
        ...         held = lock.name, lock.exists()
        ...     held, lock.exists()
        (('.stnviz-run.lock', True), False)
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CannotWrite(f"cannot write to {folder}: expected a folder, got a file")
    created = not folder.exists()
    with _writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    key, me = str(folder.resolve()), threading.get_ident()
    thread, depth = _held_locks.get(key, (me, 0))
    if depth and thread == me:
        _held_locks[key] = (me, depth + 1)
        try:
            yield folder / LOCK_FILE
        finally:
            _held_locks[key] = (me, depth)
        return
    try:
        path = _take_lock(folder)
    except BaseException:
        if created:
            _remove_if_empty(folder)
        raise
    _held_locks[key] = (me, 1)
    try:
        yield path
    finally:
        del _held_locks[key]
        path.unlink(missing_ok=True)
        if created:
            _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # holds files: keep it
        pass


def _probe_write(folder: Path, nbytes: int) -> None:
    """Write and remove a temp file of ``nbytes`` (about one checkpoint) in ``folder``: a
    read-only folder or a full disk shows now, as :class:`CannotWrite`, not after an epoch."""
    with _writing(folder):
        fd, tmp = tempfile.mkstemp(prefix=".write-probe.", suffix=TEMP_MARK, dir=folder)
    try:
        with _writing(folder), os.fdopen(fd, "wb") as f:
            chunk = bytes(min(nbytes, 1 << 20))
            left = nbytes
            while left > 0:
                f.write(chunk[:left])
                left -= len(chunk)
            f.flush()
            os.fsync(f.fileno())
    finally:
        Path(tmp).unlink(missing_ok=True)


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))

