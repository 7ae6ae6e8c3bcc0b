"""Colour test pictures shared by the drawing tests: smooth photos in [0, 1] and their
ImageNet-normalised form (what a torchvision pipeline feeds a model)."""

import torch

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def photo(n: int = 4, size: int = 32) -> torch.Tensor:
    """Smooth colour pictures ``(n, 3, size, size)``, each spanning exactly [0, 1]."""
    ii, jj = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    x = torch.stack([0.6 * ii + 0.4 * jj, 0.3 * ii + 0.7 * jj, 1 - 0.5 * ii - 0.5 * jj])
    x = (x - x.min()) / (x.max() - x.min())
    return torch.stack([x.roll(k, dims=-1) for k in range(n)])


def imagenet(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, 3, H, W)`` in [0, 1], normalised with ImageNet's mean and std."""
    return (x - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)
