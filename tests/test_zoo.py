"""A zoo of STN styles found in the wild, written here in this project's own code, each captured,
rendered and inspected as a new user would: capture (count, keys, reproduction through
``sampling``, theta in stnviz's convention), one render, and the inspector (construct, move the
picker, switch transformers, no message or log error)."""

from __future__ import annotations

import threading
import weakref

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.functional import affine_grid, grid_sample  # noqa: E402  (bound at import, as much STN code does)

import stnviz  # noqa: E402
from stnviz import geometry, render  # noqa: E402
from stnviz.capture import CaptureError, capture, collect  # noqa: E402
from stnviz.widgets import STNInspector  # noqa: E402


def _loc(cin: int, out: int, bias) -> nn.Sequential:
    """A small localisation net ending in a zero-weight linear layer with the given bias."""
    head = nn.Linear(16, out)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return nn.Sequential(nn.Conv2d(cin, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), head)


ROT = [0.8, -0.3, 0.1, 0.3, 0.8, -0.05]  # a rotation + zoom-in + shift, so conventions matter


# --------------------------------------------------------------------------- the zoo


class TutorialStyle(nn.Module):
    """The PyTorch tutorial's pattern: ``F.affine_grid`` / ``F.grid_sample`` as attributes."""

    def __init__(self):
        super().__init__()
        self.localization = _loc(1, 6, ROT)
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        theta = self.localization(x).view(-1, 2, 3)
        x = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return self.head(x.flatten(1))


class BoundNames(nn.Module):
    """``from torch.nn.functional import grid_sample, affine_grid`` at import time."""

    def __init__(self):
        super().__init__()
        self.localization = _loc(1, 6, ROT)
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        theta = self.localization(x).view(-1, 2, 3)
        return self.head(grid_sample(x, affine_grid(theta, x.size(), align_corners=False), align_corners=False).flatten(1))


class CornersBorder(nn.Module):
    """``align_corners=True`` and border padding (kornia, TPS rectifiers, registration nets)."""

    def __init__(self):
        super().__init__()
        self.stn = _loc(1, 6, ROT)
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        theta = self.stn(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=True)
        return self.head(F.grid_sample(x, grid, padding_mode="border", align_corners=True).flatten(1))


class TPSRectifier(nn.Module):
    """A text recogniser's thin-plate-spline rectifier with its own grid generator: 2K fiducial
    points predicted, the TPS system solved here, the grid built by matrix products."""

    def __init__(self, k: int = 10, out_size=(16, 48)):
        super().__init__()
        self.k, self.out_size = k, out_size
        xs = torch.linspace(-1, 1, k // 2)
        target = torch.cat([torch.stack([xs, -torch.ones_like(xs)], 1), torch.stack([xs, torch.ones_like(xs)], 1)])
        bent = target.clone()
        bent[:, 1] *= 0.6
        bent[: k // 2, 1] += 0.15 * xs**2
        self.loc = _loc(3, 2 * k, bent.flatten())
        h, w = out_size
        gy, gx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        pts = torch.stack([gx, gy], -1).view(-1, 2)
        self.register_buffer("kernel", self._kernel(pts, target))
        self.register_buffer("inverse", torch.linalg.inv(self._system(target)))

    @staticmethod
    def _u(d2):
        return 0.5 * d2 * torch.log(d2 + 1e-6)

    def _system(self, c):
        k = c.shape[0]
        a = torch.zeros(k + 3, k + 3)
        a[:k, :k] = self._u(torch.cdist(c, c) ** 2)
        a[:k, k] = 1
        a[:k, k + 1 :] = c
        a[k, :k] = 1
        a[k + 1 :, :k] = c.t()
        return a

    def _kernel(self, p, c):
        return torch.cat([self._u(torch.cdist(p, c) ** 2), torch.ones(p.shape[0], 1), p], 1)

    def forward(self, image):
        src = self.loc(image).view(-1, self.k, 2)
        coeff = self.inverse[:, : self.k] @ src  # (B, K + 3, 2)
        grid = (self.kernel @ coeff).view(-1, *self.out_size, 2)
        rectified = F.grid_sample(image, grid, padding_mode="border", align_corners=True)
        return rectified.mean((2, 3))


class MaskAndImage(nn.Module):
    """One module samples a binary mask (nearest) and the image with the same theta."""

    def __init__(self):
        super().__init__()
        self.geometric = _loc(1, 6, ROT)

    def forward(self, x):
        theta = self.geometric(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        mask = (x > 0.5).float()
        m = F.grid_sample(mask, grid, mode="nearest", align_corners=False)
        y = F.grid_sample(x, grid, align_corners=False)
        return (y * m).flatten(1)[:, :10]


class IterativeSTN(nn.Module):
    """The same module refines theta three times, warping the original image each time (IC-STN)."""

    def __init__(self):
        super().__init__()
        self.refine = _loc(1, 6, [0.0, 0.0, 0.05, 0.0, 0.0, -0.03])
        self.head = nn.Linear(28 * 28, 10)

    def forward(self, x):
        theta = torch.eye(2, 3, device=x.device).expand(x.shape[0], 2, 3)
        y = x
        for _ in range(3):
            theta = theta + self.refine(y).view(-1, 2, 3)
            y = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return self.head(y.flatten(1))


class TwoInputs(nn.Module):
    """A registration net: ``model(moving, fixed)`` warps ``moving`` onto ``fixed``; the image out."""

    def __init__(self):
        super().__init__()
        self.loc = _loc(2, 6, ROT)

    def forward(self, moving, fixed):
        theta = self.loc(torch.cat([moving, fixed], 1)).view(-1, 2, 3)
        return F.grid_sample(moving, F.affine_grid(theta, moving.size(), align_corners=True), align_corners=True)


class TupleOutput(nn.Module):
    """Returns ``(logits, theta)``."""

    def __init__(self):
        super().__init__()
        self.stn = TutorialStyle()

    def forward(self, x):
        logits = self.stn(x)
        return logits, torch.zeros(x.shape[0], 2, 3, device=x.device)


class SequenceOutput(nn.Module):
    """A text recogniser's shape: rectify, then ``(B, T, classes)`` logits per time step."""

    def __init__(self):
        super().__init__()
        self.rectifier = _loc(1, 6, ROT)
        self.rnn = nn.Linear(28, 37)

    def forward(self, x):
        theta = self.rectifier(x).view(-1, 2, 3)
        y = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
        return self.rnn(y[:, 0].transpose(1, 2))  # (B, 28 time steps, 37 classes)


class KorniaWarps(nn.Module):
    """kornia's ``warp_affine`` (pixel matrices, ``align_corners=True``) then ``warp_perspective``."""

    def __init__(self):
        super().__init__()
        self.loc = _loc(1, 6, [0.9, -0.2, 4.0, 0.2, 0.9, -2.0])

    def forward(self, x):
        import kornia.geometry.transform as KT

        m = self.loc(x).view(-1, 2, 3)
        y = KT.warp_affine(x, m, dsize=(28, 28), align_corners=True)
        h = torch.tensor([[1.0, 0.05, 1.0], [0.02, 1.0, 0.0], [0.001, 0.0, 1.0]], device=x.device).expand(x.shape[0], 3, 3)
        return KT.warp_perspective(y, h, dsize=(28, 28), align_corners=True)


class DenseFlow(nn.Module):
    """A registration net's diffeomorphic warp: a velocity field integrated by scaling and squaring
    (each step samples the flow itself: auxiliary), then the moving image warped by the result."""

    def __init__(self, steps: int = 3):
        super().__init__()
        self.steps = steps
        self.flow = nn.Conv2d(2, 2, 3, padding=1)
        nn.init.normal_(self.flow.weight, std=0.02)
        nn.init.zeros_(self.flow.bias)

    @staticmethod
    def identity(b, h, w, device=None):
        return F.affine_grid(torch.eye(2, 3, device=device).expand(b, 2, 3), [b, 1, h, w], align_corners=True)

    def forward(self, moving, fixed):
        b, _, h, w = moving.shape
        v = self.flow(torch.cat([moving, fixed], 1)) / 2**self.steps
        base = self.identity(b, h, w, moving.device)
        for _ in range(self.steps):
            v = v + F.grid_sample(v, base + v.permute(0, 2, 3, 1), align_corners=True)
        return F.grid_sample(moving, base + v.permute(0, 2, 3, 1), align_corners=True)


class Volume(nn.Module):
    """A 3-D spatial transformer on volumes ``(B, C, D, H, W)``."""

    def forward(self, vol):
        theta = torch.tensor([[0.9, 0, 0, 0.1], [0, 0.9, 0, 0], [0, 0, 0.9, 0]], device=vol.device).expand(vol.shape[0], 3, 4)
        return F.grid_sample(vol, F.affine_grid(theta, vol.size(), align_corners=False), align_corners=False)


class CorrelationLookup(nn.Module):
    """An optical-flow net's correlation look-up (RAFT): all-pairs correlation of two frames'
    features, then a 7 x 7 window around each pixel's current match, sampled with a batch of
    pixels x images (role ``lookup``)."""

    def __init__(self, radius: int = 3):
        super().__init__()
        self.radius = radius
        self.features = nn.Conv2d(1, 8, 3, padding=1, stride=2)

    def forward(self, frame1, frame2):
        f1, f2 = self.features(frame1), self.features(frame2)
        b, c, h, w = f1.shape
        corr = torch.einsum("bchw,bcuv->bhwuv", f1, f2).reshape(b * h * w, 1, h, w) / c**0.5
        ys, xs = torch.meshgrid(torch.arange(h, device=f1.device), torch.arange(w, device=f1.device), indexing="ij")
        centres = torch.stack([xs, ys], -1).float().reshape(1, h * w, 2).expand(b, -1, -1).reshape(b * h * w, 1, 1, 2)
        d = torch.arange(-self.radius, self.radius + 1, device=f1.device, dtype=torch.float32)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        window = centres + torch.stack([dx, dy], -1)  # (B*h*w, 7, 7, 2) in pixels
        grid = torch.stack([2 * window[..., 0] / (w - 1) - 1, 2 * window[..., 1] / (h - 1) - 1], -1)
        return F.grid_sample(corr, grid, align_corners=True).view(b, h, w, -1).permute(0, 3, 1, 2)


class DeformableAttention(nn.Module):
    """Deformable attention (Deformable DETR): each of ``heads`` heads samples ``points`` offsets
    around every query's reference point in its share of the value map; grids ``(N * heads, Lq,
    points, 2)`` (role ``lookup``)."""

    def __init__(self, channels: int = 8, heads: int = 4, points: int = 4, queries: int = 16):
        super().__init__()
        self.heads, self.points = heads, points
        self.value = nn.Conv2d(1, channels, 3, padding=1)
        self.queries = nn.Parameter(torch.rand(queries, 2) * 2 - 1)
        self.offsets = nn.Parameter(torch.randn(heads, queries, points, 2) * 0.1)

    def forward(self, x):
        v = self.value(x)
        n, c, h, w = v.shape
        v = v.view(n * self.heads, c // self.heads, h, w)
        loc = (self.queries[None, :, None] + self.offsets).unsqueeze(0).expand(n, -1, -1, -1, -1)
        sampled = F.grid_sample(v, loc.reshape(n * self.heads, -1, self.points, 2), align_corners=False)
        return sampled.view(n, c, -1, self.points).mean(-1)


class PointHead(nn.Module):
    """A point-based segmentation head (PointRend): the most uncertain points of a coarse mask,
    sampled as ``(N, P, 1, 2)`` columns from the coarse logits and the image (role ``points``)."""

    def __init__(self, points: int = 24):
        super().__init__()
        self.points = points
        self.coarse = nn.Conv2d(1, 1, 5, padding=2, stride=4)
        self.fine = nn.Conv1d(2, 1, 1)

    def forward(self, x):
        logits = self.coarse(x)
        n, _, h, w = logits.shape
        uncertain = (-logits.abs()).flatten(1).topk(self.points, 1).indices
        p = torch.stack([(uncertain % w + 0.5) / w, (uncertain // w + 0.5) / h], -1)  # (N, P, 2) in [0, 1]
        grid = (2 * p - 1).unsqueeze(2)  # (N, P, 1, 2)
        coarse = F.grid_sample(logits, grid, align_corners=False)
        fine = F.grid_sample(x, grid, align_corners=False)
        return self.fine(torch.cat([coarse, fine], 1).squeeze(-1))


class ImplicitQueries(nn.Module):
    """An implicit-function super-resolution model (LIIF): features made once (``gen_feat``),
    then queried at arbitrary coordinates in chunks through ``query_rgb``, not ``forward``; each
    query a ``(B, 1, Q, 2)`` row of points (role ``points``)."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(1, 8, 3, padding=1)
        self.mlp = nn.Linear(8 + 2, 1)

    def gen_feat(self, x):
        self.feat = self.encoder(x)
        return self.feat

    def query_rgb(self, coord):
        """``coord (B, Q, 2)`` in ``(y, x)`` order, as LIIF's code keeps it -> ``(B, Q, 1)``."""
        q = F.grid_sample(self.feat, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
        return self.mlp(torch.cat([q[:, :, 0].permute(0, 2, 1), coord], -1))


class FillMaskAugment(nn.Module):
    """An augmentation layer inside a model, as torchvision's functional ``affine`` fills: the
    image concatenated with a ones channel, warped, split, the mask blending in the fill colour
    (one grey image + its mask: 2 channels, not a flow field)."""

    def __init__(self, fill: float = 0.5):
        super().__init__()
        self.fill = fill
        self.register_buffer("theta", torch.tensor(ROT).view(1, 2, 3))

    def forward(self, x):
        b = x.shape[0]
        both = torch.cat([x, torch.ones_like(x[:, :1])], 1)
        grid = F.affine_grid(self.theta.expand(b, 2, 3), both.size(), align_corners=False)
        warped = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        image, mask = warped[:, :-1], warped[:, -1:]
        return image * mask + (1 - mask) * self.fill


class GlimpseGuide(nn.Module):
    """A generative attention model (DRAW, AIR; a Pyro guide) run through ``guide(x)``; it has no
    ``forward``. Three attention steps, each a glimpse of the image where the last one pointed (role ``image``)."""

    def __init__(self, steps: int = 3):
        super().__init__()
        self.steps = steps
        self.where = _loc(1, 6, [0.6, 0.0, 0.1, 0.0, 0.6, -0.1])

    def guide(self, x):
        glimpses, seen = [], x
        for _ in range(self.steps):
            theta = self.where(seen).view(-1, 2, 3)
            seen = F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)
            glimpses.append(seen)
        return torch.stack(glimpses, 1)


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits(device):
    """Six shipped digits on the suite's device (STNVIZ_TEST_DEVICE)."""
    d = stnviz.data.sample("mnist")
    return d.to_float(d.images[:6]).to(device)


def reproduces(r) -> None:
    """The record's own sampling settings reproduce its output."""
    torch.testing.assert_close(geometry.warp(r.input.float(), r.grid.float(), **r.sampling), r.output.float(),
                               atol=1e-5, rtol=1e-4)


def theta_in_stnviz_convention(r) -> None:
    """Regenerating the grid from ``r.theta`` with stnviz's convention samples the same output."""
    grid = geometry.affine_grid(r.theta.float(), r.output_size)
    out = geometry.warp(r.input.float(), grid, mode=r.sampling["mode"], padding_mode=r.sampling["padding_mode"])
    torch.testing.assert_close(out, r.output.float(), atol=2e-5, rtol=1e-4)


def renders(r) -> None:
    fig = plt.figure()
    axes = fig.subplots(1, 2)
    render.plot_record(r, 0, axes)
    assert axes[0].lines, "the sampled region's outline was drawn"
    plt.close(fig)
    rgb = render.overlay_rgb(r.input[0].float(), r.sampled_outline(8)[0])
    assert rgb.dtype == np.uint8 and (rgb == np.array(render_outline_rgb())).all(-1).any()


def shown(png: bytes, size) -> np.ndarray:
    """A widget's grey PNG (magnified by a whole factor) read back at ``size`` (H, W), in [0, 1]:
    the centre pixel of each magnified block."""
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    k = rgb.shape[0] // size[0]
    assert rgb.shape[:2] == (k * size[0], k * size[1]), rgb.shape
    return rgb[k // 2 :: k, k // 2 :: k, 0].astype(np.float32) / 255


def render_outline_rgb():
    h = render.OUTLINE_COLOR.lstrip("#")
    return [int(h[i : i + 2], 16) for i in (0, 2, 4)]


def inspects(model, images, **kwargs) -> STNInspector:
    """Construct, move the picker to every image, switch through every transformer: never a
    message or a log entry."""
    ins = STNInspector(model, images, **kwargs)
    for key in [v for _, v in ins.which.options]:
        ins.which.value = key
        for i in range(images.shape[0]):
            ins.picker.value = i
            assert ins.log.outputs == (), ins.log.outputs
            assert "error" not in ins.message.value, ins.message.value
            assert ins.input_view.value and ins.output_view.value
    return ins


# --------------------------------------------------------------------------- the tests


class TestZoo:
    def test_tutorial_style(self, digits, device):
        model = TutorialStyle().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        assert rec.keys() == ["TutorialStyle:grid_sample"]
        r = rec.last()
        assert r.family == "affine" and r.role == "image"
        assert r.sampling == {"mode": "bilinear", "padding_mode": "zeros", "align_corners": False}
        torch.testing.assert_close(r.theta, torch.tensor(ROT, device=device).view(1, 2, 3).expand(6, 2, 3))
        reproduces(r)
        renders(r)
        ins = inspects(model, digits)
        assert ins.predictions.shape == (6,)
        # what the inspector shows is the transformer's output: its PNG, read back at the
        # record's resolution, is geometry.warp of the digit by the model's theta (to 1/255)
        ins.picker.value = 2
        expected = geometry.warp(digits[2:3].cpu(), geometry.affine_grid(torch.tensor(ROT).view(1, 2, 3), (28, 28)))
        np.testing.assert_allclose(shown(ins.output_view.value, (28, 28)), expected[0, 0].numpy(), atol=1.5 / 255)

    def test_names_bound_at_import(self, digits, device):
        model = BoundNames().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        assert len(rec) == 1 and rec.last().key == "BoundNames:grid_sample" and rec.last().family == "affine"
        reproduces(rec.last())
        theta_in_stnviz_convention(rec.last())
        inspects(model, digits)

    def test_align_corners_and_border(self, digits, device):
        model = CornersBorder().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        r = rec.last()
        assert r.key == "CornersBorder:grid_sample"
        assert r.sampling == {"mode": "bilinear", "padding_mode": "border", "align_corners": True}
        reproduces(r)
        # theta is converted: it is *not* the code's own theta, and it samples the same points in
        # stnviz's convention
        assert not torch.allclose(r.theta[0].cpu(), torch.tensor(ROT).view(2, 3))
        theta_in_stnviz_convention(r)
        # the outline from theta and the recorded grid agree on where the output's corners sample
        corners = r.sampled_outline(1)[0]
        g = r.pixel_grid()[0]
        h, w = r.output_size
        half_px = torch.stack([g[0, 0] - (g[0, 1] - g[0, 0]) / 2 - (g[1, 0] - g[0, 0]) / 2])
        torch.testing.assert_close(corners[0], half_px[0], atol=1e-4, rtol=0)
        renders(r)
        inspects(model, digits)

    def test_tps_rectifier_with_own_grid(self, device):
        torch.manual_seed(0)
        model = TPSRectifier().to(device).eval()
        words = torch.rand(3, 3, 32, 100, device=device)
        with torch.no_grad(), capture(model) as rec:
            model(words)
        r = rec.last()
        assert r.key == "TPSRectifier:grid_sample" and r.family is None and r.params is None and r.theta is None
        assert r.sampling["align_corners"] is True and r.output_size == (16, 48)
        reproduces(r)
        outline = r.sampled_outline(4)[0]
        # the outline is the grid's border, in input pixels of the align_corners=True grid
        g = r.grid[0]
        torch.testing.assert_close(outline[0], torch.stack([(g[0, 0, 0] + 1) * 99 / 2, (g[0, 0, 1] + 1) * 31 / 2]))
        renders(r)
        inspects(model, words)

    def test_mask_and_image_in_one_module(self, digits, device):
        model = MaskAndImage().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        assert rec.keys() == ["MaskAndImage:grid_sample", "MaskAndImage:grid_sample#1"]
        mask, image = rec.of("MaskAndImage:grid_sample")[0], rec.of("MaskAndImage:grid_sample#1")[0]
        assert mask.role == "auxiliary" and image.role == "image"
        assert mask.sampling["mode"] == "nearest"
        reproduces(mask)
        reproduces(image)
        assert rec.pick() is image  # what widgets show by default
        ins = inspects(model, digits)
        assert ins.which.value == "MaskAndImage:grid_sample#1"
        assert [k for _, k in ins.which.options] == ["MaskAndImage:grid_sample#1"]
        ins = inspects(model, digits, auxiliary=True)
        assert [k for _, k in ins.which.options] == ["MaskAndImage:grid_sample#1", "MaskAndImage:grid_sample"]

    def test_iterative_stn(self, digits, device):
        model = IterativeSTN().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
            model(digits)  # a second forward: the same keys again
        keys = ["IterativeSTN:grid_sample", "IterativeSTN:grid_sample#1", "IterativeSTN:grid_sample#2"]
        assert rec.keys() == keys and len(rec) == 6
        tx = [float(rec.of(k)[-1].theta[0, 0, 2]) for k in keys]
        assert tx == pytest.approx([0.05, 0.10, 0.15])
        for r in rec:
            reproduces(r)
        ins = inspects(model, digits)
        assert [k for _, k in ins.which.options] == keys

    def test_two_inputs(self, digits, device):
        model = TwoInputs().to(device).eval()
        fixed = digits.flip(-1)
        with torch.no_grad(), capture(model) as rec:
            model(digits, fixed)
        r = rec.last()
        assert r.role == "image" and r.sampling["align_corners"] is True
        reproduces(r)
        theta_in_stnviz_convention(r)
        ins = inspects(model, digits, forward=lambda m, x: m(x, fixed))
        assert ins.predictions is None  # an image output: no prediction, no failure
        assert "prediction" not in ins.info.value

    def test_tuple_and_sequence_outputs(self, digits, device):
        labels = torch.arange(6, device=device)
        ins = inspects(TupleOutput().to(device).eval(), digits, labels=labels)
        assert ins.predictions.shape == (6,)
        assert "prediction" in ins.info.value and "true" in ins.info.value
        ins = inspects(SequenceOutput().to(device).eval(), digits)
        assert ins.predictions is None
        # a custom predict turns sequence logits into one label per image
        ins = inspects(SequenceOutput().to(device).eval(), digits, predict=lambda out: out.argmax(-1)[:, 0],
                       class_names=[str(c) for c in range(37)])
        assert ins.predictions.shape == (6,)

    def test_kornia_warps(self, digits, device):
        pytest.importorskip("kornia", reason="kornia is in the test extras")
        model = KorniaWarps().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        assert rec.keys() == ["KorniaWarps:grid_sample", "KorniaWarps:grid_sample#1"]
        affine, persp = rec.of("KorniaWarps:grid_sample")[0], rec.of("KorniaWarps:grid_sample#1")[0]
        # kornia builds its grids itself (no affine_grid): recorded as grids, no family
        assert affine.family is None and persp.family is None
        assert affine.sampling["align_corners"] is True and persp.sampling["align_corners"] is True
        reproduces(affine)
        reproduces(persp)
        # read in the record's own normalisation, the grid is kornia's pixel matrix, inverted:
        # output pixel (x, y) samples input pixel inv(M) @ (x, y, 1)
        m = torch.tensor([[0.9, -0.2, 4.0], [0.2, 0.9, -2.0], [0.0, 0.0, 1.0]])
        inv = torch.linalg.inv(m)
        px = affine.pixel_grid()[0].cpu()
        for x, y in [(0, 0), (27, 0), (5, 17)]:
            expected = (inv @ torch.tensor([float(x), float(y), 1.0]))[:2]
            torch.testing.assert_close(px[y, x], expected, atol=1e-3, rtol=0)
        renders(affine)
        renders(persp)
        inspects(model, digits)

    def test_dense_flow(self, digits, device):
        torch.manual_seed(0)
        model = DenseFlow().to(device).eval()
        fixed = digits.roll(2, -1)
        with torch.no_grad(), capture(model) as rec:
            model(digits, fixed)
        assert rec.keys() == ["DenseFlow:grid_sample", "DenseFlow:grid_sample#1", "DenseFlow:grid_sample#2",
                              "DenseFlow:grid_sample#3"]
        roles = [r.role for r in rec]
        assert roles == ["flow"] * 3 + ["image"]  # each integration step samples the flow field itself
        for r in rec:
            reproduces(r)
        assert rec.pick().key == "DenseFlow:grid_sample#3"
        ins = inspects(model, digits, forward=lambda m, x: m(x, fixed))
        assert [k for _, k in ins.which.options] == ["DenseFlow:grid_sample#3"]

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_precision(self, digits, dtype, device):
        model = stnviz.get_model("stn_tutorial", device=device).to(dtype).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits.to(device, dtype))
        r = rec.last()
        assert r.input.dtype == dtype and r.theta.dtype == dtype
        renders(r)
        ins = inspects(model, digits)  # float32 images go to the model's dtype
        assert ins.predictions.shape == (6,)
        foreign = TutorialStyle().to(device, dtype).eval()
        inspects(foreign, digits)

    def test_compiled_models(self, digits, device):
        model = stnviz.get_model("stn_tutorial", device=device).eval()
        compiled = torch.compile(model, backend="eager")
        with torch.no_grad():
            compiled(digits.to(device))  # compiled and run once outside the capture
            with capture(compiled) as rec:
                compiled(digits.to(device))
        assert rec.keys() == ["transformer"]  # no _orig_mod. prefix
        foreign = torch.compile(TutorialStyle().to(device).eval(), backend="eager")
        with torch.no_grad():
            foreign(digits)
            with capture(foreign) as rec:
                foreign(digits)
        assert rec.keys() == ["TutorialStyle:grid_sample"]
        reproduces(rec.last())
        inspects(foreign, digits)
        after = foreign(digits)  # still runs compiled afterwards
        assert after.shape == (6, 10)

    @pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
    def test_scripted_model_is_refused_cleanly(self, digits, device):
        from torch.nn.modules import module as hooks

        before = (len(hooks._global_forward_pre_hooks), len(hooks._global_forward_hooks))
        scripted = torch.jit.script(BoundNames().to(device).eval())
        with pytest.raises(CaptureError, match="TorchScript"):
            with capture(scripted):
                scripted(digits)
        traced = torch.jit.trace(TutorialStyle().to(device).eval(), digits)
        with pytest.raises(CaptureError, match="TorchScript"):
            with capture(traced):
                pass
        assert (len(hooks._global_forward_pre_hooks), len(hooks._global_forward_hooks)) == before
        assert torch.overrides._get_current_function_mode_stack() == []

    def test_two_threads(self, digits, device):
        """Two threads capture two models at once: each records only its own calls, nothing stays
        installed afterwards."""
        from torch.nn.modules import module as hooks

        a, b = TutorialStyle().to(device).eval(), IterativeSTN().to(device).eval()
        results, errors = {}, []
        barrier = threading.Barrier(2)

        def run(name, model):
            try:
                with torch.no_grad(), capture(model, keep_last=None) as rec:
                    barrier.wait()
                    for _ in range(20):
                        model(digits)
                results[name] = rec
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=("a", a)), threading.Thread(target=run, args=("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(results["a"]) == 20 and results["a"].keys() == ["TutorialStyle:grid_sample"]
        assert len(results["b"]) == 60 and all(k.startswith("IterativeSTN") for k in results["b"].keys())
        assert len(hooks._global_forward_pre_hooks) == 0 and len(hooks._global_forward_hooks) == 0
        assert torch.overrides._get_current_function_mode_stack() == []
        # nothing leaks into later, uncaptured calls: grid_sample is torch's own again
        assert F.grid_sample is torch.nn.functional.grid_sample and grid_sample is F.grid_sample

    def test_nested_and_overlapping(self, digits, device):
        a, b = TutorialStyle().to(device).eval(), BoundNames().to(device).eval()
        outer = capture(a)
        inner = capture(b)
        ra = outer.__enter__()
        rb = inner.__enter__()
        with torch.no_grad():
            a(digits)
            b(digits)
        outer.__exit__(None, None, None)  # not LIFO
        with torch.no_grad():
            b(digits)
        inner.__exit__(None, None, None)
        assert len(ra) == 1 and ra.keys() == ["TutorialStyle:grid_sample"]
        assert len(rb) == 2 and rb.keys() == ["BoundNames:grid_sample"]
        assert torch.overrides._get_current_function_mode_stack() == []
        # the same model in two nested captures: both see it
        with capture(a) as r1, capture(a) as r2, torch.no_grad():
            a(digits)
        assert len(r1) == len(r2) == 1

    def test_exception_inside_restores_everything(self, digits, device):
        from torch.nn.modules import module as hooks

        model = TutorialStyle().to(device)
        with pytest.raises(RuntimeError):
            with capture(model):
                model(torch.rand(2, 3, 28, 28, device=device))  # wrong channels: the localisation net raises
        assert len(hooks._global_forward_hooks) == 0 and torch.overrides._get_current_function_mode_stack() == []
        with capture(model) as rec, torch.no_grad():
            model(digits)
        assert len(rec) == 1  # the next capture starts clean

    def test_keep_last_bounds_memory_for_foreign_code(self, digits, device):
        """1,000 forwards with keep_last=4: four records kept, no grid or theta held beyond them."""
        grids = []

        class Watched(TutorialStyle):
            def forward(self, x):
                theta = self.localization(x).view(-1, 2, 3)
                grid = F.affine_grid(theta, x.size(), align_corners=False)
                grids.append(weakref.ref(grid))
                return F.grid_sample(x, grid, align_corners=False)

        model = Watched().to(device).eval()
        with torch.no_grad(), capture(model, keep_last=4, batch_slice=2) as rec:
            for _ in range(1000):
                model(digits)
            alive = sum(g() is not None for g in grids)
        assert len(rec) == 4 and rec.dropped == 996 and rec.last().input.shape[0] == 2
        assert alive == 0, f"{alive} grids kept alive by the capture"

    def test_volumes_are_marked_and_refused_by_name(self, device):
        model = Volume()
        with torch.no_grad(), capture(model) as rec:
            model(torch.rand(2, 1, 4, 6, 6, device=device))
        r = rec.last()
        assert r.spatial_dims == 3 and r.family is None and r.input.dim() == 5
        with pytest.raises(ValueError, match="2-D"):
            render.plot_record(r)
        with pytest.raises(ValueError, match="2-D samplers only; record 'Volume:grid_sample' is a 3-D"):
            render.plot_batch(r)  # was "too many values to unpack"
        with pytest.raises(ValueError, match="2-D"):
            r.sampled_outline()
        with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
            STNInspector(model, torch.rand(2, 1, 4, 6, 6, device=device))

    def test_normalised_inputs_shown_unclipped(self, digits, device):
        class Normalised(TutorialStyle):
            pass

        model = Normalised().to(device).eval()
        images = digits * 2 - 1  # the data pipeline normalised to [-1, 1]
        ins = STNInspector(model, images, mean=[0.5], std=[0.5])
        assert ins.message.value == ""
        ins_auto = STNInspector(model, images)
        assert "stretched" in ins_auto.message.value
        # both show the digit's full range: the background is black, not clipped grey-less
        from PIL import Image
        import io

        shown = np.asarray(Image.open(io.BytesIO(ins.output_view.value)).convert("L"))
        assert shown.min() < 10 and shown.max() > 245

    def test_collect_joins_batches(self, digits, device):
        model = IterativeSTN().to(device).eval()
        col = collect(model, digits, batch_size=4)
        assert list(col.records) == ["IterativeSTN:grid_sample", "IterativeSTN:grid_sample#1", "IterativeSTN:grid_sample#2"]
        assert all(r.input.shape[0] == 6 for r in col.records.values()) and len(col.outputs) == 2

    def test_top_level_verbs(self, digits, device):
        model = stnviz.get_model("stn_tutorial", device=device).eval()
        with torch.no_grad(), stnviz.capture(model) as rec:
            model(digits.to(device))
        assert rec.keys() == ["transformer"]
        from stnviz.capture import capture as capture_fn

        assert callable(stnviz.capture) and callable(capture_fn)
        assert stnviz.fit is stnviz.train.fit

    def test_readme_capture_example_runs(self):
        """The README's "See inside any STN" example runs and says what it claims."""
        from pathlib import Path

        text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
        block = text[text.index("## See inside any STN") :]
        start = block.index("```python") + len("```python")
        code = block[start : block.index("```", start)]
        ns = {"torch": torch, "stnviz": stnviz}
        exec(compile("import stnviz.widgets\n" + code, "README.md", "exec"), ns)
        r = ns["r"]
        assert r.key == "Registration:grid_sample" and r.role == "image"
        assert r.sampling == {"mode": "bilinear", "padding_mode": "border", "align_corners": True}
        torch.testing.assert_close(geometry.warp(r.input, r.grid, **r.sampling), r.output)

    def test_widgets_warn_once_for_0_255_floats(self, digits, device):
        from stnviz.models.inputs import ImageRangeWarning, _warned

        _warned.discard("STNInspector")
        with pytest.warns(ImageRangeWarning, match="STNInspector expects float images in \\[0, 1\\]"):
            STNInspector(TutorialStyle().to(device).eval(), digits * 255)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", ImageRangeWarning)
            STNInspector(TutorialStyle().to(device).eval(), digits * 255)  # once only
            STNInspector(TutorialStyle().to(device).eval(), digits * 255, mean=[0.0], std=[1 / 255])  # display range given

    def test_theta_explorer_on_foreign_models(self, digits, device):
        from stnviz.widgets import ThetaExplorer

        fixed = digits.flip(-1)
        model = TwoInputs().to(device).eval()  # align_corners=True, two inputs
        ex = ThetaExplorer(digits, model=model, forward=lambda m, x: m(x, fixed))
        presets = lambda e: [p["name"] for p in e.view.presets]  # noqa: E731
        assert ex.family == "affine" and "snap to learned" in presets(ex)
        assert ex.prediction == []  # forward= ran on the whole batch (it holds fixed's 6); its output is an image
        ex.index = 2
        ex.use_learned()
        with torch.no_grad(), capture(model) as rec:
            model(digits, fixed)
        np.testing.assert_allclose(ex.params, rec.last().theta[2].reshape(-1).double().cpu().numpy(), atol=1e-6)
        # a class that happens to be called SpatialTransformer, with no sampler: no learned preset, no crash
        class SpatialTransformer(nn.Module):
            def forward(self, x):
                return x

        plain = ThetaExplorer(digits, model=SpatialTransformer())
        assert "snap to learned" not in presets(plain) and plain.family == "affine"


# --------------------------------------------------------------------------- samplings that are not (only) image warps


def _look(fig, name: str) -> None:
    """Save a drawing under /tmp/look/ (to look at) and close it."""
    from pathlib import Path

    folder = Path("/tmp/look")
    folder.mkdir(exist_ok=True)
    fig.savefig(folder / f"zoo_{name}.png", dpi=80)
    plt.close(fig)


class TestRolesInTheZoo:
    """Each style captured, its role judged, drawn as the role says and inspected where a picture
    makes sense (issue 20)."""

    def test_correlation_lookup(self, digits, device):
        model = CorrelationLookup().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits, digits.roll(1, -1))
        r = rec.last()
        assert r.role == "lookup" and r.input.shape[0] == 6 * 14 * 14 and r.grid.shape == (6 * 14 * 14, 7, 7, 2)
        reproduces(r)
        with pytest.raises(ValueError, match=r"it is a lookup .*1176 look-ups of 7 x 7 points"):
            render.plot_batch(r)  # never a polygon through random points
        with pytest.raises(ValueError, match=r"nothing it can draw.*\(lookup, 2-D\)"):
            render.plot_batch(rec)
        with pytest.raises(ValueError, match=r"the inspector shows 2-D image warps.*lookup, 2-D, batch 1176"):
            STNInspector(model, digits, forward=lambda m, x: m(x, x.roll(1, -1)))

    def test_deformable_attention(self, digits, device):
        torch.manual_seed(0)
        model = DeformableAttention().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        r = rec.last()
        assert r.role == "lookup" and r.grid.shape == (6 * 4, 16, 4, 2)  # (N * heads, Lq, points, 2)
        reproduces(r)
        with pytest.raises(ValueError, match="it is a lookup"):
            render.plot_record(r)
        with pytest.raises(ValueError, match="the inspector shows 2-D image warps"):
            STNInspector(model, digits)

    def test_point_sampling(self, digits, device):
        torch.manual_seed(0)
        model = PointHead().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        coarse, fine = rec.of("PointHead:grid_sample")[0], rec.of("PointHead:grid_sample#1")[0]
        assert coarse.role == fine.role == "points" and fine.grid.shape == (6, 24, 1, 2)
        reproduces(fine)
        fig = render.plot_batch(rec, n=2)
        titles = [ax.get_title() for ax in fig.axes]
        assert not any("output" in t for t in titles)  # no 24 x 1 "output image"
        assert titles[0] == "PointHead:grid_sample\ninput + sampled points" and not fig.axes[0].lines
        assert len(fig.axes[0].collections[0].get_offsets()) == 24  # every point, no polygon
        _look(fig, "points_pointrend")
        with pytest.raises(ValueError, match=r"\(points, 2-D, batch 6\).*plot_batch draws points"):
            STNInspector(model, digits)

    def test_implicit_function_queries(self, digits, device):
        torch.manual_seed(0)
        model = ImplicitQueries().to(device).eval()
        coord = torch.rand(6, 40, 2, device=device) * 2 - 1
        with torch.no_grad(), capture(model) as rec:
            model.gen_feat(digits)
            for chunk in coord.split(20, 1):  # LIIF queries in chunks, through query_rgb
                model.query_rgb(chunk)
        assert len(rec) == 2 and all(r.role == "points" and r.grid.shape == (6, 1, 20, 2) for r in rec)
        reproduces(rec.last())
        fig = render.plot_batch(rec.last(), n=2)
        assert len(fig.axes) == 4 and not any("output" in ax.get_title() for ax in fig.axes)
        _look(fig, "points_liif")

    def test_augmentation_with_fill_mask(self, digits, device):
        model = FillMaskAugment().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        r = rec.last()
        assert r.input.shape[1] == 2  # one grey channel + the fill mask: once judged a flow field
        assert r.role == "image" and r.image_channels == 1 and r.family == "affine"
        reproduces(r)
        theta_in_stnviz_convention(r)
        fig = render.plot_batch(rec, n=2)
        drawn = fig.axes[0].images[0].get_array()
        np.testing.assert_allclose(drawn, digits[0, 0].cpu().numpy(), atol=1e-6)  # the image part, not a mean
        assert fig.axes[0].lines and fig.axes[1].get_title() == "output"
        _look(fig, "image_fill_mask")
        ins = inspects(model, digits)
        assert ins.which.value == "FillMaskAugment:grid_sample"
        ins.picker.value = 0  # the inspector shows the warped image, without its mask channel
        expected = geometry.warp(digits[:1].cpu(), geometry.affine_grid(torch.tensor(ROT).view(1, 2, 3), (28, 28)))
        np.testing.assert_allclose(shown(ins.output_view.value, (28, 28)), expected[0, 0].numpy(), atol=1.5 / 255)

    def test_driven_through_another_method(self, digits, device):
        model = GlimpseGuide().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model.guide(digits)
        assert len(rec) == 3 and all(r.role == "image" and r.family == "affine" for r in rec)
        for r in rec:
            reproduces(r)
            theta_in_stnviz_convention(r)
        fig = render.plot_batch(list(rec), n=1)
        assert len(fig.axes) == 9 and all(ax.lines for ax in fig.axes[::3])  # a region per glimpse
        _look(fig, "image_guide")
        inspects(model, digits, forward=lambda m, x: m.guide(x))

    def test_flow_and_masks_drawn_when_asked(self, digits, device):
        torch.manual_seed(0)
        model = DenseFlow().to(device).eval()
        fixed = digits.roll(2, -1)
        with torch.no_grad(), capture(model) as rec:
            model(digits, fixed)
        fig = render.plot_batch(rec, n=1, auxiliary=True)
        assert [ax.get_title().split("\n")[1] for ax in fig.axes[::3]] == ["field + sampled region"] * 3 + [
            "input + sampled region"]
        _look(fig, "flow_dense")
        ins = inspects(model, digits, forward=lambda m, x: m(x, fixed), auxiliary=True)
        assert [label for label, _ in ins.which.options][1:] == [  # in words, each told apart
            f"an offset field ({k} of 3), on feature maps (2 × 28 × 28)" for k in (1, 2, 3)]
        model = MaskAndImage().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(digits)
        assert len(render.plot_batch(rec, n=1).axes) == 3  # the image warp only
        fig = render.plot_batch(rec, n=1, auxiliary=True)
        mask = fig.axes[0].images[0].get_array()
        assert set(np.unique(mask)) == {0.0, 1.0} and fig.axes[0].get_title().startswith("MaskAndImage:grid_sample\n")
        _look(fig, "auxiliary_mask")
