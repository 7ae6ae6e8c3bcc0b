"""Helpers shared by the benchmarks."""

from __future__ import annotations

__all__ = ["cpu_stall_us"]


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
