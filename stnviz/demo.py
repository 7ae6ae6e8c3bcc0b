"""``make demo``: the headless main job on built-in data, no download.

For now: one spatial transformer per transform family, each set to a fixed transform, warps
procedurally drawn glyphs; the input with its sampled region and the output are written to a PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from . import geometry
from ._io import atomic_write
from .data import draw_glyphs
from .device import resolve_device
from .models import SpatialTransformer
from .render import draw_image, draw_outline

__all__ = ["demo_transforms", "run_demo"]


def demo_transforms() -> list[tuple[str, dict, torch.Tensor]]:
    """``(family, transformer kwargs, flat parameters)`` for a showcase of every family."""
    theta = geometry.compose_affine(
        rotation=torch.tensor([math.radians(25.0)]), scale_x=0.8, scale_y=0.7, shear=0.25, tx=0.1, ty=-0.05
    )
    tps = geometry.identity_params("tps", control_points=16).reshape(16, 2)
    tps[5] += torch.tensor([0.25, 0.2])  # pull two inner control points: a local, curved warp
    tps[10] += torch.tensor([-0.2, -0.25])
    return [
        ("affine", {}, theta.reshape(-1)),
        ("attention", {}, torch.tensor([0.55, -0.2, -0.2])),
        ("restricted", {"components": ("rotation", "scale", "translation")}, torch.tensor([-0.6, 0.9, 0.1, 0.0])),
        ("translation", {}, torch.tensor([0.3, 0.25])),
        ("projective", {}, torch.tensor([0.9, 0.1, 0.0, 0.0, 0.8, 0.0, 0.35, 0.2])),
        ("tps", {"control_points": 16}, tps.reshape(-1)),
    ]


class _TinyLocalization(nn.Sequential):
    def __init__(self, channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(channels * 16, 8), nn.ReLU())


def run_demo(out: str | Path = "out", *, device: str = "auto", size: int = 64) -> list[Path]:
    """Write ``out/transforms.png`` (families x glyphs: input + sampled region | output); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = resolve_device(device)
    images = draw_glyphs(3, (size, size), channels=3, device=dev)
    rows = demo_transforms()
    fig, axes = plt.subplots(len(rows), 2 * len(images), figsize=(2.0 * 2 * len(images), 2.1 * len(rows)))
    for r, (family, kwargs, params) in enumerate(rows):
        st = SpatialTransformer(_TinyLocalization(3), transform=family, output_size=(size, size), **kwargs).to(dev)
        st.set_constant_params(params)
        with torch.no_grad():
            warped = st(images)
            flat = params.to(dev).expand(len(images), -1)
            outline = geometry.sampled_outline(
                flat.reshape(len(images), 2, 3) if family == "affine" else flat,
                family,
                (size, size),
                components=kwargs.get("components"),
            )
        for i in range(len(images)):
            draw_image(images[i], axes[r, 2 * i], title=f"{family}: input" if i == 0 else None)
            draw_outline(outline[i], axes[r, 2 * i])
            draw_image(warped[i], axes[r, 2 * i + 1], title="output" if i == 0 else None)
    fig.suptitle("stnviz: each transform family, sampled region (red, dot = output's top-left) and output", fontsize=11)
    fig.tight_layout()
    path = Path(out) / "transforms.png"
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return [path]
