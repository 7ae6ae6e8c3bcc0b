"""Resolve a device once, at an entry point; everything below takes device from its inputs."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) picks CUDA, then Apple MPS, then CPU; anything else is checked.

    Raises ``ValueError`` for a device string torch does not know, or one this machine lacks
    (e.g. ``"cuda"`` without a GPU), naming what is available.

    Example:
        >>> resolve_device("cpu"), resolve_device("auto").type in ("cuda", "mps", "cpu")
        (device(type='cpu'), True)
        >>> resolve_device("gpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got 'gpu' (...)
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {device!r} ({e})") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        if n == 0:
            raise ValueError(f"device {device!r} asked for CUDA, but no CUDA device is available; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {device!r} asked for GPU {dev.index}, but only {n} CUDA device(s) exist")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} asked for Apple MPS, which is not available here; use 'auto' or 'cpu'")
    return dev
