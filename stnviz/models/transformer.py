"""The spatial transformer module: localisation net -> parameters -> grid -> sampler.

The module is a thin shell over :mod:`stnviz.geometry`. It is split into named children so hooks
(``stnviz.capture``) see every stage: ``localization`` (features), ``regressor`` (parameters),
``grid_generator`` (parameters in, grid out) and the transformer itself (image in, image out).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import nn

from .. import geometry

__all__ = ["GridGenerator", "Normalize", "SpatialTransformer", "localization_parameters", "param_groups"]


class GridGenerator(nn.Module):
    """Flat parameters ``(B, P)`` -> sampling grid ``(B, H, W, 2)`` for one transform family.

    For TPS the system is solved once per output size, device and dtype, in :mod:`stnviz.geometry`'s
    cache (not per forward).

    Example:
        >>> gen = GridGenerator("affine")
        >>> identity = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])  # flat theta (B, 6)
        >>> gen.num_params, tuple(gen(identity, (4, 5)).shape)
        (6, (1, 4, 5, 2))
        >>> GridGenerator("tps", control_points=9).num_params  # (x, y) per control point
        18
    """

    def __init__(self, family: str, *, components: Sequence[str] | None = None, control_points: int = 16):
        super().__init__()
        if family not in geometry.FAMILIES:
            raise ValueError(f"family must be one of {geometry.FAMILIES}, got {family!r}")
        self.family = family
        self.components = tuple(components) if components is not None else None
        self.control_points = control_points
        self.num_params = geometry.num_params(family, components=components, control_points=control_points)

    def forward(self, params: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        shaped = geometry.shape_params(params, self.family)
        return geometry.make_grid(shaped, self.family, size, components=self.components)

    def extra_repr(self) -> str:
        extra = f", components={self.components}" if self.components else ""
        extra += f", control_points={self.control_points}" if self.family == "tps" else ""
        return f"family={self.family!r}{extra}"


def _last_linear_width(module: nn.Module) -> int | None:
    width = None
    for m in module.modules():
        if isinstance(m, nn.Linear):
            width = m.out_features
    return width


class SpatialTransformer(nn.Module):
    """A spatial transformer: ``(B, C, H, W)`` -> ``(B, C, *output_size)``.

    Args:
        localization: a module taking the input ``(B, C, H, W)`` to features ``(B, F)``.
        family: a family of :data:`stnviz.geometry.FAMILIES`.
        output_size: ``(H_out, W_out)``; ``None`` keeps the input size. A smaller size crops or
            zooms (the paper's downsampling transformer).
        features: ``F``; read from the last ``nn.Linear`` in ``localization`` when omitted.
        components: for ``family="restricted"``, the named parameters (see
            :func:`stnviz.geometry.restricted_to_theta`).
        control_points: for ``family="tps"``, ``K = n * n`` control points.
        mode, padding_mode: sampler settings, see :func:`stnviz.geometry.warp`.

    The regression layer starts at zero weight and identity bias, so an untrained transformer
    returns its input exactly (for the same output size). Conventions (normalised coordinates,
    ``align_corners=False``, output -> input) are those of :mod:`stnviz.geometry`.

    Example:
        >>> loc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32), nn.ReLU())
        >>> x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(SpatialTransformer(loc)(x), x, atol=1e-5)  # starts as the identity
        True
        >>> tuple(SpatialTransformer(loc, "affine", output_size=(14, 14))(x).shape)  # downsampling
        (2, 1, 14, 14)
    """

    def __init__(
        self,
        localization: nn.Module,
        family: str = "affine",
        output_size: Sequence[int] | None = None,
        *,
        features: int | None = None,
        components: Sequence[str] | None = None,
        control_points: int = 16,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
    ):
        super().__init__()
        self.localization = localization
        self.grid_generator = GridGenerator(family, components=components, control_points=control_points)
        features = features if features is not None else _last_linear_width(localization)
        if features is None:
            raise ValueError(
                "SpatialTransformer needs the width of the localisation features: pass features=F "
                "(the localisation net has no nn.Linear to read it from)"
            )
        self.regressor = nn.Linear(features, self.grid_generator.num_params)
        if output_size is not None:
            try:
                output_size = tuple(int(s) for s in output_size)
            except (TypeError, ValueError):
                raise ValueError(f"output_size must be (H_out, W_out), got {output_size!r}") from None
            if len(output_size) != 2 or min(output_size) < 1:
                raise ValueError(f"output_size must be two positive integers (H_out, W_out), got {output_size!r}")
        self.output_size = output_size
        self.mode = mode
        self.padding_mode = padding_mode
        self.reset_to_identity()

    @property
    def family(self) -> str:
        """The transform family (:data:`stnviz.geometry.FAMILIES`)."""
        return self.grid_generator.family

    def reset_to_identity(self) -> None:
        """Zero the regression weights and set the bias to the identity parameters."""
        g = self.grid_generator
        with torch.no_grad():
            self.regressor.weight.zero_()
            self.regressor.bias.copy_(
                geometry.identity_params(g.family, components=g.components, control_points=g.control_points)
            )

    def set_constant_params(self, params: torch.Tensor) -> None:
        """Make the transformer apply the fixed flat parameters ``(P,)`` to every input (weights zero,
        bias ``params``): handy to explore a transform by hand or to freeze a learned one."""
        params = torch.as_tensor(params, dtype=self.regressor.bias.dtype).reshape(-1)
        if params.numel() != self.grid_generator.num_params:
            raise ValueError(
                f"{self.family} transform takes {self.grid_generator.num_params} parameters, got {params.numel()}"
            )
        with torch.no_grad():
            self.regressor.weight.zero_()
            self.regressor.bias.copy_(params.to(self.regressor.bias.device))

    def predict_params(self, x: torch.Tensor) -> torch.Tensor:
        """Flat transform parameters ``(B, P)`` for input ``x (B, C, H, W)``."""
        return self.regressor(self.localization(x).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"SpatialTransformer expects (B, C, H, W), got shape {tuple(x.shape)}")
        size = self.output_size or tuple(x.shape[-2:])
        grid = self.grid_generator(self.predict_params(x), size)
        return geometry.warp(x, grid, mode=self.mode, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, mode={self.mode!r}, padding_mode={self.padding_mode!r}"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as a layer, placed *after* the transformer.

    Normalising before the sampler would turn the zero padding into a grey border, a known cause
    of STNs collapsing to zoom-out; so models take images in ``[0, 1]`` and normalise here.

    Example:
        >>> norm = Normalize(mean=(0.5,), std=(0.25,))
        >>> norm(torch.tensor([[[[0.0, 0.5, 1.0]]]])).flatten().tolist()
        [-2.0, 0.0, 2.0]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def localization_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Parameters of every transformer's localisation net and regressor inside ``model``.

    Example:
        >>> from stnviz.models import cnn_tutorial, stn_tutorial
        >>> sum(p.numel() for p in localization_parameters(stn_tutorial()))
        5520
        >>> list(localization_parameters(cnn_tutorial()))  # no transformer, nothing to localise
        []
    """
    seen = set()
    for m in model.modules():
        if isinstance(m, SpatialTransformer):
            for p in list(m.localization.parameters()) + list(m.regressor.parameters()):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p


def param_groups(model: nn.Module, lr: float, loc_lr: float | None = None) -> list[dict]:
    """Optimizer parameter groups: the classifier at ``lr``, localisation nets at ``loc_lr``.

    ``loc_lr`` defaults to ``lr / 10``, the common recipe for stable STN training.

    Example:
        >>> from stnviz.models import stn_tutorial
        >>> groups = param_groups(stn_tutorial(), 0.01)  # for torch.optim.SGD(groups, lr=0.01)
        >>> [(g["name"], g["lr"], sum(p.numel() for p in g["params"])) for g in groups]
        [('classifier', 0.01, 21840), ('localization', 0.001, 5520)]
    """
    loc = list(localization_parameters(model))
    loc_ids = {id(p) for p in loc}
    rest = [p for p in model.parameters() if id(p) not in loc_ids]
    groups = [{"params": rest, "lr": lr, "name": "classifier"}]
    if loc:
        groups.append({"params": loc, "lr": loc_lr if loc_lr is not None else lr / 10, "name": "localization"})
    return groups
