"""Under ``torchrun``: the process group, the rank and the CUDA-only paths, each decided in one
place from the device (a CPU test mocks the device): float16 autocast with a gradient scaler, the
NCCL backend, and pinned, non-blocking host-to-GPU copies of every batch
(:func:`stnviz.data.imageset.to_device`)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__: list[str] = []


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1



def _amp_setting(amp: bool | None, device: torch.device) -> bool:
    """The ``amp`` run setting: ``None`` means on for CUDA, off elsewhere."""
    return device.type == "cuda" if amp is None else bool(amp)


def _uses_amp(amp: bool, device: torch.device) -> bool:
    """Whether mixed precision actually runs: float16 autocast and a gradient scaler exist for
    CUDA only, so ``amp=True`` on another device is recorded but trains in float32."""
    return bool(amp) and device.type == "cuda"


def _process_group_backend(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def _maybe_init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; return True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    dist.init_process_group(backend=_process_group_backend(device))
    return True

