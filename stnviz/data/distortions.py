"""The STN paper's distorted MNIST, generated on the training device as batched tensor ops.

No per-sample PIL: a whole batch is one sampling-grid warp. Randomness is counter-based (a
SplitMix64 hash of ``(seed, sample key, draw)``), so the same ``(seed, index)`` gives the same
sample on every call, on every device, in any batch composition; a test set is therefore fixed.

Every sample comes with its ground-truth transform, in the package's convention (output ->
input, normalised, ``align_corners=False``): ``theta (B, 2, 3)`` maps canvas coordinates to digit
coordinates, so ``warp(canvas, affine_grid(invert(theta), (28, 28)))`` gives back the centred digit.

=====================  ======  ===============================================================
kind                   canvas  distortion (parameters)
=====================  ======  ===============================================================
rotated (R)            28x28   rotation U(-90, 90) deg about the centre
rts (RTS)              42x42   rotation U(-45, 45) deg, scale U(0.7, 1.2), placed at a uniform
                               random position that keeps the scaled digit's box on the canvas
projective (P)         28x28   scale U(0.75, 1.0), then each of the four corners moved by
                               Gaussian noise, sigma = 0.1 of the image size (homography)
elastic (E)            28x28   scale U(0.75, 1.0), then a thin-plate spline whose 4x4 control
                               points are moved by Gaussian noise, sigma = 0.05 of the image size
translated_cluttered   60x60   the digit at a uniform random position fully on the canvas, plus
(TC)                           6 clutter pieces: 6x6 crops of other random digits at random places
=====================  ======  ===============================================================

Source: the distortions of Jaderberg et al., "Spatial Transformer Networks" (NIPS 2015), Sec. 4.1
and appendix (R: +-90 deg; RTS: +-45 deg, scale 0.7-1.2, 42x42; TC: 60x60 with 6x6 clutter).
The paper gives the P and E settings only in outline; the noise levels above are this package's
choice, stated here so results can be compared.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F

from .. import geometry
from .imageset import Batch, ImageSet, epoch_order

__all__ = ["DISTORTIONS", "DistortedMNIST", "distort", "hash_uniform"]

DISTORTIONS = {
    "rotated": 28,
    "rts": 42,
    "projective": 28,
    "elastic": 28,
    "translated_cluttered": 60,
}
_ALIASES = {"r": "rotated", "p": "projective", "e": "elastic", "tc": "translated_cluttered"}

_MASK64 = (1 << 64) - 1


def _signed(c: int) -> int:
    c &= _MASK64
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _srl(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _splitmix(x: torch.Tensor) -> torch.Tensor:
    x = x + _GOLDEN
    x = (x ^ _srl(x, 30)) * _M1
    x = (x ^ _srl(x, 27)) * _M2
    return x ^ _srl(x, 31)


def hash_uniform(seed: int, keys: torch.Tensor, stream: int, count: int) -> torch.Tensor:
    """Counter-based uniforms in ``[0, 1)``: ``(B, count)`` float64 from ``keys (B,)`` int64.

    The value depends only on ``(seed, key, stream, position)``, not on batch composition or device.

    Example:
        >>> u = hash_uniform(0, torch.tensor([3, 7]), stream=1, count=2)
        >>> tuple(u.shape), torch.equal(u[1], hash_uniform(0, torch.tensor([7]), 1, 2)[0])  # batch-independent
        ((2, 2), True)
    """
    base = _splitmix(_splitmix(torch.full_like(keys, int(seed))) ^ keys)
    draws = torch.arange(count, device=keys.device, dtype=torch.int64) + int(stream) * 1_000_003
    z = _splitmix(base.unsqueeze(1) ^ _splitmix(draws).unsqueeze(0))
    return _srl(z, 11).double() * (1.0 / (1 << 53))


def _normal(seed, keys, stream, count) -> torch.Tensor:
    u = hash_uniform(seed, keys, stream, 2 * count)
    u1, u2 = u[:, :count].clamp_min(1e-12), u[:, count:]
    return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def _between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * u


def _place_theta(angle, scale, shift_px, canvas: int, digit: int = 28) -> torch.Tensor:
    """theta (canvas -> digit) for a digit rotated by ``angle``, scaled by ``scale`` and centred at
    ``shift_px`` (pixels from the canvas centre). Pixel forward map: ``p = s R q + t``."""
    c, s = torch.cos(angle), torch.sin(angle)
    k = canvas / (digit * scale)  # canvas normalised units per digit normalised unit, inverted
    # v = (canvas/2) / (digit/2 * s) * R^T u - R^T t / (digit/2 * s)
    a11, a12, a21, a22 = c * k, s * k, -s * k, c * k
    tx = -(c * shift_px[:, 0] + s * shift_px[:, 1]) / (digit / 2 * scale)
    ty = -(-s * shift_px[:, 0] + c * shift_px[:, 1]) / (digit / 2 * scale)
    return torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)


def distort(
    digits: torch.Tensor, kind: str, keys: torch.Tensor, *, seed: int = 0, clutter_pool: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict]:
    """Distort ``digits (B, 1, 28, 28)`` in [0, 1] -> ``(canvas (B, 1, S, S), ground truth)``.

    ``keys (B,)`` int64 identify the samples (random draws depend on ``(seed, key)`` only);
    ``clutter_pool (N, 1, 28, 28)`` supplies clutter for ``translated_cluttered``. The ground
    truth dict holds ``theta`` (canvas -> digit, all kinds but elastic), ``homography``
    (projective), ``tps_points`` (elastic) and the drawn ``rotation_deg`` (degrees), ``scale``,
    ``translation_px`` ``(B, 2)`` (pixels from the canvas centre) where they apply.

    Example:
        >>> digits = torch.zeros(2, 1, 28, 28)
        >>> digits[:, :, 6:22, 12:16] = 1  # an upright bar
        >>> canvas, gt = distort(digits, "rotated", torch.tensor([0, 1]), seed=0)
        >>> tuple(canvas.shape), [round(d) for d in gt["rotation_deg"].tolist()]
        ((2, 1, 28, 28), [86, 74])
        >>> upright = geometry.warp(canvas, geometry.affine_grid(geometry.invert(gt["theta"]), (28, 28)))
        >>> bool((upright - digits).abs().mean() < 0.02)  # the ground truth undoes the distortion
        True
    """
    kind = _ALIASES.get(kind, kind)
    if kind not in DISTORTIONS:
        raise ValueError(f"distortion kind must be one of {tuple(DISTORTIONS)}, got {kind!r}")
    if digits.dim() != 4 or digits.shape[1:] != (1, 28, 28):
        raise ValueError(f"digits must be (B, 1, 28, 28), got shape {tuple(digits.shape)}")
    if not digits.is_floating_point():
        raise ValueError(f"digits must be float in [0, 1], got {digits.dtype}")
    keys = keys.to(device=digits.device, dtype=torch.int64)
    if keys.shape != (digits.shape[0],):
        raise ValueError(f"keys must be ({digits.shape[0]},), got shape {tuple(keys.shape)}")
    b, dev, dt = digits.shape[0], digits.device, digits.dtype
    size = DISTORTIONS[kind]
    gt: dict = {}
    zeros = torch.zeros(b, device=dev, dtype=torch.float64)
    if kind in ("rotated", "rts", "translated_cluttered"):
        u = hash_uniform(seed, keys, 1, 4)
        if kind == "rotated":
            angle, scale, shift = _between(u[:, 0], -math.pi / 2, math.pi / 2), zeros + 1, torch.stack([zeros, zeros], 1)
        elif kind == "rts":
            angle = _between(u[:, 0], -math.pi / 4, math.pi / 4)
            scale = _between(u[:, 1], 0.7, 1.2)
            room = size / 2 - 14 * scale  # keep the scaled 28x28 box on the canvas
            shift = torch.stack([_between(u[:, 2], -1, 1) * room, _between(u[:, 3], -1, 1) * room], 1)
        else:
            angle, scale = zeros, zeros + 1
            # whole-pixel offsets keep the digit's pixels exact (no resampling blur)
            offs = torch.floor(u[:, 2:4] * (size - 28 + 1)).clamp(max=size - 28)
            shift = offs - (size - 28) / 2
        theta = _place_theta(angle, scale, shift, size)
        gt.update(theta=theta.to(dt), rotation_deg=torch.rad2deg(angle).to(dt), scale=scale.to(dt),
                  translation_px=shift.to(dt))
        grid = geometry.affine_grid(theta.to(dt), (size, size))
    elif kind == "projective":
        u = hash_uniform(seed, keys, 2, 1)
        scale = _between(u[:, 0], 0.75, 1.0)
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=dev, dtype=torch.float64)
        noise = _normal(seed, keys, 3, 8).view(b, 4, 2) * 0.2  # sigma 0.1 of the size = 0.2 normalised
        moved = corners * scale.view(b, 1, 1) + noise  # where the digit's corners land on the canvas
        h_digit_to_canvas = _homography_from_points(corners.expand(b, 4, 2), moved)
        homography = geometry.invert(h_digit_to_canvas)  # canvas -> digit
        homography = homography / homography[:, 2:3, 2:3]
        gt.update(homography=homography.to(dt), scale=scale.to(dt))
        grid = geometry.projective_grid(homography.to(dt), (size, size))
    else:  # elastic
        u = hash_uniform(seed, keys, 4, 1)
        scale = _between(u[:, 0], 0.75, 1.0)
        rest = geometry.tps_control_points(16, device=dev, dtype=torch.float64)
        points = rest / scale.view(b, 1, 1) + _normal(seed, keys, 5, 32).view(b, 16, 2) * 0.1
        gt.update(tps_points=points.to(dt), scale=scale.to(dt))
        grid = geometry.tps_grid(points.to(dt), (size, size))
    canvas = geometry.warp(digits, grid, padding_mode="zeros")
    if kind == "translated_cluttered":
        canvas = torch.maximum(canvas, _clutter(clutter_pool if clutter_pool is not None else digits, keys, seed, size, dt))
    return canvas.clamp_(0, 1), gt


def _homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched DLT: ``(B, 3, 3)`` mapping 4 points ``src (B, 4, 2)`` onto ``dst (B, 4, 2)``."""
    b = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # (B, 8, 8)
    rhs = torch.cat([u, v], 1).unsqueeze(-1)
    h = torch.linalg.solve(a, rhs).squeeze(-1)
    return torch.cat([h, torch.ones(b, 1, dtype=h.dtype, device=h.device)], 1).view(b, 3, 3)


def _clutter(pool: torch.Tensor, keys: torch.Tensor, seed: int, size: int, dtype, pieces: int = 6, piece: int = 6) -> torch.Tensor:
    """``(B, 1, size, size)``: ``pieces`` random ``piece x piece`` crops of random pool digits."""
    b, dev = keys.shape[0], keys.device
    u = hash_uniform(seed, keys, 6, pieces * 5).view(b, pieces, 5)
    out = torch.zeros(b, 1, size, size, device=dev, dtype=dtype)
    ys = torch.arange(size, device=dev).view(1, size, 1)
    xs = torch.arange(size, device=dev).view(1, 1, size)
    for k in range(pieces):
        src = pool[(u[:, k, 0] * pool.shape[0]).long().clamp(max=pool.shape[0] - 1).to(pool.device)].to(dev, dtype)
        if src.dtype == torch.uint8:
            src = src.float() / 255
        cx = torch.floor(u[:, k, 1] * (28 - piece + 1)).long()  # crop corner in the digit
        cy = torch.floor(u[:, k, 2] * (28 - piece + 1)).long()
        px = torch.floor(u[:, k, 3] * (size - piece + 1)).long()  # paste corner on the canvas
        py = torch.floor(u[:, k, 4] * (size - piece + 1)).long()
        # integer shift by grid sampling at pixel centres: exact copies, one op for the batch
        shift = torch.stack([(cx - px).to(dtype) * 2 / 28, (cy - py).to(dtype) * 2 / 28], 1)
        theta = torch.zeros(b, 2, 3, device=dev, dtype=dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = size / 28
        theta[:, :, 2] = shift + (size / 28 - 1)
        moved = geometry.warp(src, geometry.affine_grid(theta, (size, size)), mode="nearest")
        inside = ((ys >= py.view(b, 1, 1)) & (ys < (py + piece).view(b, 1, 1)) &
                  (xs >= px.view(b, 1, 1)) & (xs < (px + piece).view(b, 1, 1))).unsqueeze(1)
        out = torch.maximum(out, moved * inside)
    return out


class DistortedMNIST:
    """A distorted view of an MNIST-like :class:`ImageSet` (digits ``(N, 1, 28, 28)``).

    Sample ``i`` of epoch ``e`` is generated from digit ``i`` with key ``i`` (``fresh=False``: the
    same every epoch, for test sets) or key ``e * N + i`` (``fresh=True``: new distortions every
    epoch, still reproducible). Batches carry the ground truth in ``batch.extras``.

    Example:
        >>> from stnviz.data import sample
        >>> rts = DistortedMNIST(sample("mnist"), "rts")
        >>> batch = rts.get(torch.arange(3))
        >>> tuple(batch.images.shape), tuple(batch.extras["theta"].shape), batch.labels.tolist()
        ((3, 1, 42, 42), (3, 2, 3), [7, 2, 1])
        >>> torch.equal(rts.get(torch.arange(3)).images, batch.images)  # fixed: the same on every call
        True
    """

    def __init__(self, source: ImageSet, kind: str, *, seed: int = 0, fresh: bool = False):
        kind = _ALIASES.get(kind, kind)
        if kind not in DISTORTIONS:
            raise ValueError(f"distortion kind must be one of {tuple(DISTORTIONS)}, got {kind!r}")
        if source.image_size != (1, 28, 28):
            raise ValueError(f"DistortedMNIST needs 1x28x28 digits, got {source.name} with {source.image_size}")
        self.source, self.kind, self.seed, self.fresh = source, kind, int(seed), fresh
        self.name = f"{source.name}-{kind}"
        self._on_device: dict = {}

    def __len__(self) -> int:
        return len(self.source)

    @property
    def image_size(self) -> tuple[int, int, int]:
        s = DISTORTIONS[self.kind]
        return (1, s, s)

    @property
    def labels(self) -> torch.Tensor:
        return self.source.labels

    def _digits(self, device) -> torch.Tensor:
        key = str(torch.device(device) if device is not None else "cpu")
        if key not in self._on_device:
            self._on_device = {key: self.source.pixels.to(device)}  # one device at a time
        return self._on_device[key]

    def get(self, index: torch.Tensor, device=None, *, epoch: int = 0) -> Batch:
        index = torch.as_tensor(index, dtype=torch.long)
        pool = self._digits(device)
        idx_dev = index.to(pool.device)
        digits = self.source.to_float(pool[idx_dev])
        keys = idx_dev + (int(epoch) * len(self) if self.fresh else 0)
        images, gt = distort(digits, self.kind, keys, seed=self.seed, clutter_pool=pool)
        return Batch(images, self.source.labels[index].to(images.device), index, gt)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, device=None,
                rank: int = 0, world_size: int = 1, start: int = 0) -> Iterator[Batch]:
        order = epoch_order(len(self), shuffle=shuffle, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        for i in range(start * batch_size, len(order), batch_size):
            yield self.get(order[i : i + batch_size], device, epoch=epoch)

    def num_batches(self, batch_size: int, world_size: int = 1) -> int:
        return self.source.num_batches(batch_size, world_size)

    def __repr__(self) -> str:
        return f"DistortedMNIST({self.kind!r}, n={len(self)}, seed={self.seed}, fresh={self.fresh})"
