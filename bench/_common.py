"""Helpers shared by the benchmarks."""

from __future__ import annotations

__all__ = ["cpu_stall_us", "reset_peak_rss", "status_kb"]


def cpu_stall_us() -> int | None:
    """Cumulative microseconds in which some task waited for a CPU (Linux PSI), or None."""
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            for line in f:
                if line.startswith("some "):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` figure in kB (``VmRSS``: resident now, ``VmHWM``: peak), Linux."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (``VmHWM``) to its RSS now; False where Linux does not allow it.

    Measure a child's peak with ``VmHWM`` after this, never with ``ru_maxrss``: Linux carries the
    parent's RSS at the fork into the child's ``ru_maxrss`` across ``exec``, so a child spawned by a
    large process reports that process's size as its own peak.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False
