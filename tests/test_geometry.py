"""Tests for :mod:`stnviz.geometry`.

One class per public function (kornia style): smoke, shapes, exception, gradcheck, convention.
Expected values are worked out by hand (the arithmetic is in the comments) or derived
independently, e.g. with ``torch.nn.functional.affine_grid`` / ``grid_sample`` or by an image
that makes the sampled position readable (a linear ramp, a delta).

Conventions under test (module docstring of ``stnviz.geometry``): normalised ``(x, y)`` in
``[-1, 1]``, ``align_corners=False``, parameters map OUTPUT -> INPUT, pixel centres at integers.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from conftest import suite_device
from stnviz import geometry as g

F64 = torch.float64
#: The CPU, and the suite's device (STNVIZ_TEST_DEVICE) when it is another one.
DEVICES = sorted({"cpu", str(suite_device())})

ALL_COMPONENTS = ("rotation", "scale", "aspect", "shear", "tx", "ty")
#: Identity value of each restricted component (rotation 0, scale 1, aspect 1, shear 0, t 0).
IDENTITY_VALUE = {"rotation": 0.0, "scale": 1.0, "aspect": 1.0, "shear": 0.0, "tx": 0.0, "ty": 0.0}


# --------------------------------------------------------------------------- helpers


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def near_identity_theta(b: int, seed: int = 0, scale: float = 0.1, dtype=F64) -> torch.Tensor:
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype)
    return eye + scale * torch.randn(b, 2, 3, generator=gen(seed), dtype=dtype)


def near_identity_homography(b: int, seed: int = 0, scale: float = 0.05, dtype=F64) -> torch.Tensor:
    h = torch.eye(3, dtype=dtype) + scale * torch.randn(b, 3, 3, generator=gen(seed), dtype=dtype)
    h[:, 2, 2] = 1.0
    return h


def torch_identity_grid(b: int, h: int, w: int, dtype=F64) -> torch.Tensor:
    """PyTorch's own identity grid (align_corners=False), independent of stnviz."""
    theta = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype).expand(b, 2, 3)
    return F.affine_grid(theta, [b, 1, h, w], align_corners=False)


def smooth_image(b: int, c: int, h: int, w: int, dtype=F64) -> torch.Tensor:
    """Low-frequency image in [0, 1] (different per channel / batch item)."""
    ys = torch.linspace(0, 1, h, dtype=dtype).view(h, 1)
    xs = torch.linspace(0, 1, w, dtype=dtype).view(1, w)
    out = torch.empty(b, c, h, w, dtype=dtype)
    for i in range(b):
        for j in range(c):
            out[i, j] = 0.5 + 0.25 * torch.sin(2.0 * xs + 1.3 * ys + i + j) + 0.2 * torch.cos(1.7 * ys - 0.9 * xs + j)
    return out


def ramp_image(h: int, w: int, dtype=F64) -> torch.Tensor:
    """``I(x, y) = x + 10 y`` at pixel centre (x, y): bilinear sampling reads the position back."""
    ys = torch.arange(h, dtype=dtype).view(h, 1)
    xs = torch.arange(w, dtype=dtype).view(1, w)
    return (xs + 10.0 * ys).view(1, 1, h, w)


def pixel_centres_h(h: int, w: int, dtype=F64) -> torch.Tensor:
    """Homogeneous pixel centres ``(H, W, 3)`` = (x, y, 1), pixel i centred at i."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dtype), torch.arange(w, dtype=dtype), indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)


def apply_pixel_matrix(m: torch.Tensor, pts_h: torch.Tensor) -> torch.Tensor:
    """Map homogeneous points ``(..., 3)`` through one ``(3, 3)`` matrix, dehomogenise -> ``(..., 2)``."""
    q = pts_h @ m.T
    return q[..., :2] / q[..., 2:]


def batch_params(family: str, b: int = 2, dtype=torch.float32, **kw) -> torch.Tensor:
    return g.identity_params(family, dtype=dtype, **kw).unsqueeze(0).repeat(b, 1)


# --------------------------------------------------------------------------- affine_grid


class TestAffineGrid:
    def test_smoke_and_shape(self):
        grid = g.affine_grid(near_identity_theta(3), (4, 5))
        assert grid.shape == (3, 4, 5, 2)

    def test_flat_theta_equals_matrix_theta(self):
        theta = near_identity_theta(2)
        torch.testing.assert_close(g.affine_grid(theta.reshape(2, 6), (4, 5)), g.affine_grid(theta, (4, 5)))

    def test_matches_torch_align_corners_false(self):
        theta = near_identity_theta(2, seed=3)
        expected = F.affine_grid(theta, [2, 1, 4, 5], align_corners=False)
        torch.testing.assert_close(g.affine_grid(theta, (4, 5)), expected)

    def test_identity_is_pixel_centres(self):
        # align_corners=False: pixel i of W sits at (2i + 1) / W - 1. W = 4: -0.75, -0.25, 0.25, 0.75.
        grid = g.affine_grid(torch.tensor([[1.0, 0, 0, 0, 1, 0]], dtype=F64), (2, 4))
        torch.testing.assert_close(grid[0, 0, :, 0], torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=F64))
        # H = 2: rows at -0.5 and 0.5
        torch.testing.assert_close(grid[0, :, 0, 1], torch.tensor([-0.5, 0.5], dtype=F64))

    def test_gradcheck(self):
        theta = near_identity_theta(2).requires_grad_()
        assert gradcheck(lambda t: g.affine_grid(t, (4, 5)), (theta,))

    @pytest.mark.parametrize(
        "theta, match",
        [
            (torch.zeros(1, 3, 3), r"theta must be \(B, 2, 3\) or \(B, 6\), got shape \(1, 3, 3\)"),
            (torch.zeros(2, 3), r"theta must be \(B, 2, 3\) or \(B, 6\), got shape \(2, 3\)"),
            (torch.zeros(2, 3, 2), r"got shape \(2, 3, 2\)"),
            (torch.zeros(2, 3, 2, 1), r"got shape \(2, 3, 2, 1\)"),
            (torch.zeros(0, 2, 3), r"theta is an empty batch \(shape \(0, 2, 3\)\)"),
            (torch.zeros(0, 6), r"empty batch"),
            (torch.zeros(1, 2, 3, dtype=torch.int64), r"floating-point tensor, got torch.int64"),
        ],
    )
    def test_bad_theta(self, theta, match):
        with pytest.raises(ValueError, match=match):
            g.affine_grid(theta, (4, 4))

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
    def test_non_finite(self, bad):
        theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0]]])
        theta[0, 1, 2] = bad
        with pytest.raises(ValueError, match=r"theta must be finite, got NaN or inf .*\(1, 2, 3\)"):
            g.affine_grid(theta, (4, 4))

    def test_not_a_tensor(self):
        with pytest.raises(ValueError, match="theta must be a torch.Tensor, got list"):
            g.affine_grid([[1.0, 0, 0], [0, 1, 0]], (4, 4))

    @pytest.mark.parametrize("size", [(0, 4), (4, -1), (4,), "ab", None])
    def test_bad_size(self, size):
        with pytest.raises(ValueError, match=r"size must be .*\(H, W\), got"):
            g.affine_grid(torch.tensor([[1.0, 0, 0, 0, 1, 0]]), size)

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    @pytest.mark.parametrize("device", DEVICES)
    def test_dtype_device_follow_input(self, dtype, device):
        theta = near_identity_theta(1, dtype=dtype).to(device)
        grid = g.affine_grid(theta, (3, 4))
        assert grid.dtype == dtype and grid.device == theta.device

    @pytest.mark.parametrize("size", [(1, 1), (1, 7), (28, 28), (13, 42), (64, 32)])
    def test_broadcast_grid_matches_torch_in_float32(self, size):
        """The eager grid (an outer sum) is F.affine_grid's to float rounding, far from the identity too."""
        theta = (torch.randn(16, 2, 3, generator=gen(5)) * 2).float()
        expected = F.affine_grid(theta.double(), [16, 1, *size], align_corners=False)
        got = g.affine_grid(theta, size)
        assert got.dtype == torch.float32 and got.is_contiguous()
        torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)

    def test_grad_matches_torch(self):
        theta = near_identity_theta(3, seed=4).requires_grad_()
        w = torch.randn(3, 5, 6, 2, generator=gen(6), dtype=F64)
        (gt,) = torch.autograd.grad((g.affine_grid(theta, (5, 6)) * w).sum(), theta)
        (gf,) = torch.autograd.grad((F.affine_grid(theta, [3, 1, 5, 6], align_corners=False) * w).sum(), theta)
        torch.testing.assert_close(gt, gf)

    def test_torch_builds_it_under_a_function_mode_and_tracing(self):
        """A capture (a torch function mode) sees F.affine_grid, and so does a trace (export keeps one op)."""
        from torch.overrides import TorchFunctionMode

        seen = []

        class Spy(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                seen.append(getattr(func, "__name__", ""))
                return func(*args, **(kwargs or {}))

        theta = near_identity_theta(2).float()
        with Spy():
            g.affine_grid(theta, (4, 4))
        assert "affine_grid" in seen
        traced = torch.jit.trace(lambda t: g.affine_grid(t, (4, 4)), theta)
        assert "aten::affine_grid_generator" in str(traced.graph)
        torch.testing.assert_close(traced(theta * 1.5), g.affine_grid(theta * 1.5, (4, 4)))


# --------------------------------------------------------------------------- attention


class TestAttentionToTheta:
    def test_known_matrix(self):
        p = torch.tensor([[0.5, 0.2, -0.3], [2.0, 0.0, 0.1]], dtype=F64)
        expected = torch.tensor(
            [[[0.5, 0, 0.2], [0, 0.5, -0.3]], [[2.0, 0, 0.0], [0, 2.0, 0.1]]], dtype=F64
        )
        torch.testing.assert_close(g.attention_to_theta(p), expected)

    @pytest.mark.parametrize(
        "p, match",
        [
            (torch.zeros(2, 4), r"attention params must be \(B, 3\) = \(scale, tx, ty\), got shape \(2, 4\)"),
            (torch.zeros(3), r"got shape \(3,\)"),
            (torch.zeros(0, 3), r"attention params is an empty batch"),
            (torch.tensor([[1.0, float("nan"), 0.0]]), r"attention params must be finite"),
        ],
    )
    def test_exception(self, p, match):
        with pytest.raises(ValueError, match=match):
            g.attention_to_theta(p)


class TestAttentionGrid:
    def test_shape(self):
        assert g.attention_grid(torch.tensor([[0.5, 0.0, 0.0]] * 2), (3, 7)).shape == (2, 3, 7, 2)

    def test_zoom_is_half_of_identity_grid(self):
        # s = 0.5, t = 0: every output point samples half as far from the centre.
        grid = g.attention_grid(torch.tensor([[0.5, 0.0, 0.0]], dtype=F64), (4, 6))
        torch.testing.assert_close(grid, 0.5 * torch_identity_grid(1, 4, 6))

    def test_translation_shifts_grid(self):
        grid = g.attention_grid(torch.tensor([[1.0, 0.25, -0.5]], dtype=F64), (4, 6))
        expected = torch_identity_grid(1, 4, 6) + torch.tensor([0.25, -0.5], dtype=F64)
        torch.testing.assert_close(grid, expected)

    def test_gradcheck(self):
        p = (torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.1, -0.1]], dtype=F64) + 0.05 * torch.randn(2, 3, generator=gen(1), dtype=F64)).requires_grad_()
        assert gradcheck(lambda q: g.attention_grid(q, (4, 5)), (p,))

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype(self, dtype):
        assert g.attention_grid(torch.tensor([[1.0, 0, 0]], dtype=dtype), (2, 2)).dtype == dtype


# --------------------------------------------------------------------------- translation


class TestTranslationToTheta:
    def test_known_matrix(self):
        p = torch.tensor([[0.3, -0.4]], dtype=F64)
        torch.testing.assert_close(g.translation_to_theta(p), torch.tensor([[[1.0, 0, 0.3], [0, 1.0, -0.4]]], dtype=F64))

    @pytest.mark.parametrize(
        "p, match",
        [
            (torch.zeros(2, 3), r"translation params must be \(B, 2\) = \(tx, ty\), got shape \(2, 3\)"),
            (torch.zeros(0, 2), r"translation params is an empty batch"),
            (torch.tensor([[float("inf"), 0.0]]), r"translation params must be finite"),
        ],
    )
    def test_exception(self, p, match):
        with pytest.raises(ValueError, match=match):
            g.translation_to_theta(p)


class TestTranslationGrid:
    def test_shift(self):
        grid = g.translation_grid(torch.tensor([[0.5, 0.25]], dtype=F64), (3, 4))
        torch.testing.assert_close(grid, torch_identity_grid(1, 3, 4) + torch.tensor([0.5, 0.25], dtype=F64))

    def test_gradcheck(self):
        p = (0.1 * torch.randn(2, 2, generator=gen(2), dtype=F64)).requires_grad_()
        assert gradcheck(lambda q: g.translation_grid(q, (4, 5)), (p,))

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype(self, dtype):
        assert g.translation_grid(torch.zeros(1, 2, dtype=dtype), (2, 2)).dtype == dtype


# --------------------------------------------------------------------------- restricted


def _rot(a: float) -> list[list[float]]:
    return [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]


class TestRestrictedToTheta:
    @pytest.mark.parametrize(
        "component, value, expected",
        [
            # rotation r: [[cos r, -sin r, 0], [sin r, cos r, 0]]
            ("rotation", 0.4, [[math.cos(0.4), -math.sin(0.4), 0], [math.sin(0.4), math.cos(0.4), 0]]),
            # isotropic scale s: s * I
            ("scale", 1.5, [[1.5, 0, 0], [0, 1.5, 0]]),
            # aspect a: scale_x = 1 * a, scale_y = 1 / a
            ("aspect", 2.0, [[2.0, 0, 0], [0, 0.5, 0]]),
            # shear h: [[1, h], [0, 1]]
            ("shear", 0.3, [[1, 0.3, 0], [0, 1, 0]]),
            ("tx", 0.25, [[1, 0, 0.25], [0, 1, 0]]),
            ("ty", -0.75, [[1, 0, 0], [0, 1, -0.75]]),
        ],
    )
    def test_each_component_alone(self, component, value, expected):
        theta = g.restricted_to_theta(torch.tensor([[value]], dtype=F64), (component,))
        torch.testing.assert_close(theta, torch.tensor([expected], dtype=F64))

    def test_string_component(self):
        theta = g.restricted_to_theta(torch.tensor([[0.5]], dtype=F64), "tx")
        torch.testing.assert_close(theta, torch.tensor([[[1.0, 0, 0.5], [0, 1, 0]]], dtype=F64))

    def test_translation_alias(self):
        p = torch.tensor([[0.1, -0.2], [0.3, 0.4]], dtype=F64)
        torch.testing.assert_close(
            g.restricted_to_theta(p, ("translation",)), g.restricted_to_theta(p, ("tx", "ty"))
        )
        torch.testing.assert_close(g.restricted_to_theta(p, ("translation",)), g.translation_to_theta(p))

    def test_column_order_follows_components(self):
        p = torch.tensor([[0.1, -0.2]], dtype=F64)
        # ("ty", "tx"): first column is ty
        torch.testing.assert_close(
            g.restricted_to_theta(p, ("ty", "tx")), torch.tensor([[[1.0, 0, -0.2], [0, 1, 0.1]]], dtype=F64)
        )

    def test_rotation_scale_translation(self):
        # the docstring example: s * R(r) with translation (tx, ty)
        r, s, tx, ty = 0.5, 0.8, 0.1, -0.3
        theta = g.restricted_to_theta(torch.tensor([[r, s, tx, ty]], dtype=F64), ("rotation", "scale", "translation"))
        rot = _rot(r)
        expected = [[s * rot[0][0], s * rot[0][1], tx], [s * rot[1][0], s * rot[1][1], ty]]
        torch.testing.assert_close(theta, torch.tensor([expected], dtype=F64))

    def test_omitted_components_stay_at_identity(self):
        # Only aspect and ty given: rotation 0, scale 1, shear 0, tx 0.
        theta = g.restricted_to_theta(torch.tensor([[4.0, 0.2]], dtype=F64), ("aspect", "ty"))
        torch.testing.assert_close(theta, torch.tensor([[[4.0, 0, 0], [0, 0.25, 0.2]]], dtype=F64))

    def test_all_identity_values_give_identity(self):
        p = torch.tensor([[IDENTITY_VALUE[c] for c in ALL_COMPONENTS]], dtype=F64)
        torch.testing.assert_close(g.restricted_to_theta(p, ALL_COMPONENTS), torch.tensor([[[1.0, 0, 0], [0, 1, 0]]], dtype=F64))

    def test_all_components_equal_compose_affine(self):
        rot, scale, aspect, shear, tx, ty = 0.3, 1.2, 1.5, -0.2, 0.1, 0.05
        p = torch.tensor([[rot, scale, aspect, shear, tx, ty]], dtype=F64)
        # scale_x = scale * aspect, scale_y = scale / aspect; A = R @ [[1, shear], [0, 1]] @ diag(sx, sy)
        sx, sy = scale * aspect, scale / aspect
        r = torch.tensor(_rot(rot), dtype=F64)
        lin = r @ torch.tensor([[1.0, shear], [0.0, 1.0]], dtype=F64) @ torch.diag(torch.tensor([sx, sy], dtype=F64))
        expected = torch.cat([lin, torch.tensor([[tx], [ty]], dtype=F64)], dim=1).unsqueeze(0)
        torch.testing.assert_close(g.restricted_to_theta(p, ALL_COMPONENTS), expected)

    @pytest.mark.parametrize(
        "components, match",
        [
            (("rotation", "zoom"), r"restricted component must be one of .*'translation'.*got 'zoom'"),
            (("tx", "tx"), r"restricted component 'tx' given twice"),
            (("tx", "translation"), r"restricted component 'tx' given twice"),
            ((), r"needs at least one component, got none"),
        ],
    )
    def test_bad_components(self, components, match):
        with pytest.raises(ValueError, match=match):
            g.restricted_to_theta(torch.zeros(1, 2), components)

    def test_wrong_param_width(self):
        with pytest.raises(ValueError, match=r"restricted params must be \(B, 3\) for components \('rotation', 'tx', 'ty'\), got shape \(1, 2\)"):
            g.restricted_to_theta(torch.zeros(1, 2), ("rotation", "translation"))

    def test_empty_batch(self):
        with pytest.raises(ValueError, match=r"restricted params is an empty batch"):
            g.restricted_to_theta(torch.zeros(0, 1), ("rotation",))


RESTRICTED_SUBSETS = [
    ("rotation",),
    ("scale", "aspect"),
    ("shear", "translation"),
    ("rotation", "scale", "translation"),
    ALL_COMPONENTS,
]


class TestRestrictedGrid:
    @pytest.mark.parametrize("components", RESTRICTED_SUBSETS)
    def test_matches_torch_affine_grid(self, components):
        p = self._params(components)
        theta = g.restricted_to_theta(p, components)
        expected = F.affine_grid(theta, [2, 1, 4, 5], align_corners=False)
        torch.testing.assert_close(g.restricted_grid(p, (4, 5), components), expected)

    @pytest.mark.parametrize("components", RESTRICTED_SUBSETS)
    def test_gradcheck(self, components):
        p = self._params(components).requires_grad_()
        assert gradcheck(lambda q: g.restricted_grid(q, (4, 5), components), (p,))

    @staticmethod
    def _params(components, b=2):
        names = g._expand_components(components)
        base = torch.tensor([IDENTITY_VALUE[n] for n in names], dtype=F64)
        return base + 0.1 * torch.randn(b, len(names), generator=gen(len(names)), dtype=F64)


# --------------------------------------------------------------------------- projective


class TestProjectiveGrid:
    def test_identity_equals_torch_identity_grid(self):
        grid = g.projective_grid(torch.eye(3, dtype=F64).unsqueeze(0), (4, 6))
        torch.testing.assert_close(grid, torch_identity_grid(1, 4, 6))

    def test_affine_homography_matches_affine_grid(self):
        theta = near_identity_theta(2, seed=5)
        h = torch.cat([theta, torch.tensor([[[0.0, 0, 1]]], dtype=F64).expand(2, 1, 3)], dim=1)
        torch.testing.assert_close(g.projective_grid(h, (4, 5)), F.affine_grid(theta, [2, 1, 4, 5], align_corners=False))

    def test_layouts_agree(self):
        h = near_identity_homography(2)
        a = g.projective_grid(h, (3, 4))
        torch.testing.assert_close(g.projective_grid(h.reshape(2, 9), (3, 4)), a)
        torch.testing.assert_close(g.projective_grid(h.reshape(2, 9)[:, :8], (3, 4)), a)

    def test_perspective_division(self):
        # H = [[1,0,0],[0,1,0],[0.5,0,1]]: (x, y) -> (x, y) / (0.5 x + 1).
        # Output 1x2: pixel centres x = -0.5, 0.5 and y = 0.
        # x = -0.5: w = 0.75 -> (-2/3, 0); x = 0.5: w = 1.25 -> (0.4, 0).
        h = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0.5, 0, 1]]], dtype=F64)
        expected = torch.tensor([[[[-2.0 / 3.0, 0.0], [0.4, 0.0]]]], dtype=F64)
        torch.testing.assert_close(g.projective_grid(h, (1, 2)), expected)

    def test_scaled_homography_same_grid(self):
        h = near_identity_homography(1)
        torch.testing.assert_close(g.projective_grid(3.0 * h, (3, 4)), g.projective_grid(h, (3, 4)))

    def test_gradcheck(self):
        h = near_identity_homography(2, seed=4).requires_grad_()
        assert gradcheck(lambda q: g.projective_grid(q, (4, 5)), (h,))
        p8 = near_identity_homography(2, seed=6).reshape(2, 9)[:, :8].clone().requires_grad_()
        assert gradcheck(lambda q: g.projective_grid(q, (4, 5)), (p8,))

    @pytest.mark.parametrize(
        "h, match",
        [
            (torch.zeros(1, 2, 3), r"homography must be \(B, 3, 3\), \(B, 9\) or \(B, 8\), got shape \(1, 2, 3\)"),
            (torch.zeros(1, 7), r"got shape \(1, 7\)"),
            (torch.zeros(0, 8), r"homography is an empty batch"),
            (torch.full((1, 8), float("nan")), r"homography must be finite"),
        ],
    )
    def test_exception(self, h, match):
        with pytest.raises(ValueError, match=match):
            g.projective_grid(h, (4, 4))

    def test_point_at_infinity(self):
        # w = x vanishes at the middle column of a W=5 output (x = (2*2+1)/5 - 1 = 0).
        h = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [1, 0, 0]]])
        with pytest.raises(ValueError, match=r"sends a point to infinity \(w = 0\)"):
            g.projective_grid(h, (3, 5))

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype(self, dtype):
        assert g.projective_grid(torch.eye(3, dtype=dtype).unsqueeze(0), (2, 2)).dtype == dtype


# --------------------------------------------------------------------------- TPS


class TestTpsControlPoints:
    def test_lattice_x_fastest(self):
        pts = g.tps_control_points(4, dtype=F64)
        expected = torch.tensor([[-1.0, -1], [1, -1], [-1, 1], [1, 1]], dtype=F64)
        torch.testing.assert_close(pts, expected)
        pts9 = g.tps_control_points(9, dtype=F64)
        assert pts9.shape == (9, 2)
        torch.testing.assert_close(pts9[1], torch.tensor([0.0, -1.0], dtype=F64))
        torch.testing.assert_close(pts9[3], torch.tensor([-1.0, 0.0], dtype=F64))

    @pytest.mark.parametrize("k", [0, 1, 2, 5, 10, 15])
    def test_non_square(self, k):
        with pytest.raises(ValueError, match=rf"square number of control points K = n\*n >= 4, got K={k}"):
            g.tps_control_points(k)


class TestTpsSolve:
    def test_shape_and_dtype(self):
        src = g.tps_control_points(9, dtype=torch.float32)
        m = g.tps_solve(src, (4, 5))
        assert m.shape == (20, 9) and m.dtype == torch.float32

    def test_rows_sum_to_one(self):
        # A constant target (all control points at c) must give the constant map c.
        m = g.tps_solve(g.tps_control_points(16, dtype=F64), (4, 5))
        torch.testing.assert_close(m.sum(1), torch.ones(20, dtype=F64))

    @pytest.mark.parametrize(
        "src, match",
        [
            (torch.zeros(2, 2), r"TPS source points must be \(K, 2\) with K >= 3, got shape \(2, 2\)"),
            (torch.zeros(4, 3), r"got shape \(4, 3\)"),
            (torch.tensor([[-1.0, 0], [0, 0], [1, 0]]), r"degenerate \(collinear or repeated\)"),
        ],
    )
    def test_exception(self, src, match):
        with pytest.raises(ValueError, match=match):
            g.tps_solve(src, (3, 3))


class TestTpsGrid:
    def test_shape_and_flat_layout(self):
        pts = g.tps_control_points(16).unsqueeze(0).repeat(2, 1, 1)
        a = g.tps_grid(pts, (3, 7))
        assert a.shape == (2, 3, 7, 2)
        torch.testing.assert_close(g.tps_grid(pts.reshape(2, 32), (3, 7)), a)

    @pytest.mark.parametrize("k", [4, 9, 16])
    def test_rest_is_identity(self, k):
        pts = g.tps_control_points(k, dtype=F64).unsqueeze(0)
        torch.testing.assert_close(g.tps_grid(pts, (5, 6)), torch_identity_grid(1, 5, 6))

    def test_affine_targets_reproduce_affine_grid(self):
        # A TPS contains the affine maps (zero bending): targets = A(source) must give affine_grid(A).
        theta = near_identity_theta(2, seed=7)
        src = g.tps_control_points(16, dtype=F64)
        targets = src @ theta[:, :, :2].transpose(1, 2) + theta[:, :, 2].unsqueeze(1)
        torch.testing.assert_close(g.tps_grid(targets, (4, 5)), F.affine_grid(theta, [2, 1, 4, 5], align_corners=False))

    def test_interpolates_moved_control_point(self):
        # Output 5x5 pixel centres: (2i+1)/5 - 1 = -0.8, -0.4, 0, 0.4, 0.8. Put a 3x3 source lattice on
        # {-0.8, 0, 0.8} so control point (r, c) sits exactly on output pixel (2r, 2c).
        lin = torch.tensor([-0.8, 0.0, 0.8], dtype=F64)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        src = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
        targets = src.clone().unsqueeze(0)
        targets[0, 4] = torch.tensor([0.1, -0.2], dtype=F64)  # move the centre point
        grid = g.tps_grid(targets, (5, 5), source=src)
        torch.testing.assert_close(grid[0, 2, 2], torch.tensor([0.1, -0.2], dtype=F64))
        for k in range(9):
            r, c = divmod(k, 3)
            torch.testing.assert_close(grid[0, 2 * r, 2 * c], targets[0, k])
        # and it really bends in between (not the identity at pixel (1, 1))
        assert (grid[0, 1, 1] - torch.tensor([-0.4, -0.4], dtype=F64)).abs().max() > 1e-3
        # solved= gives the same grid as source=
        torch.testing.assert_close(g.tps_grid(targets, (5, 5), solved=g.tps_solve(src, (5, 5))), grid)

    def test_matches_reference_thin_plate_spline(self):
        # Independent reference (Bookstein's formulation, solved here): f(x) = a0 + a1 x + a2 y
        # + sum_i w_i U(|x - p_i|), U(r) = r^2 log r^2, with f(p_i) = target_i, sum w = 0, sum w p = 0.
        src = g.tps_control_points(9, dtype=F64)
        tgt = src + 0.15 * torch.randn(9, 2, generator=gen(34), dtype=F64)

        def u(d2):
            return torch.where(d2 > 0, d2 * torch.log(torch.where(d2 > 0, d2, torch.ones_like(d2))), torch.zeros_like(d2))

        k = src.shape[0]
        p1 = torch.cat([torch.ones(k, 1, dtype=F64), src], 1)
        lhs = torch.zeros(k + 3, k + 3, dtype=F64)
        lhs[:k, :k] = u(((src[:, None] - src[None]) ** 2).sum(-1))
        lhs[:k, k:] = p1
        lhs[k:, :k] = p1.T
        coef = torch.linalg.solve(lhs, torch.cat([tgt, torch.zeros(3, 2, dtype=F64)]))
        x = torch_identity_grid(1, 4, 5).reshape(-1, 2)
        basis = torch.cat([u(((x[:, None] - src[None]) ** 2).sum(-1)), torch.ones(len(x), 1, dtype=F64), x], 1)
        expected = (basis @ coef).reshape(1, 4, 5, 2)
        torch.testing.assert_close(g.tps_grid(tgt.unsqueeze(0), (4, 5)), expected)

    def test_custom_source_at_rest_is_identity(self):
        src = torch.tensor([[-0.9, -0.7], [0.6, -0.8], [0.8, 0.9], [-0.5, 0.4], [0.1, 0.05]], dtype=F64)
        torch.testing.assert_close(g.tps_grid(src.unsqueeze(0), (4, 6), source=src), torch_identity_grid(1, 4, 6))

    def test_solve_is_cached(self, monkeypatch):
        calls = []
        real = g.tps_solve

        def counting(*a, **kw):
            calls.append(1)
            return real(*a, **kw)

        monkeypatch.setattr(g, "tps_solve", counting)
        g._regular_tps_matrix.cache_clear()
        pts = g.tps_control_points(9, dtype=F64).unsqueeze(0)
        g.tps_grid(pts, (6, 7))
        info1 = g._regular_tps_matrix.cache_info()
        g.tps_grid(pts + 0.01, (6, 7))
        info2 = g._regular_tps_matrix.cache_info()
        assert len(calls) == 1
        assert info2.hits == info1.hits + 1 and info2.misses == info1.misses == 1
        # a different size is a new entry
        g.tps_grid(pts, (6, 8))
        assert len(calls) == 2

    def test_gradcheck(self):
        src = g.tps_control_points(9, dtype=F64)
        pts = (src + 0.05 * torch.randn(2, 9, 2, generator=gen(8), dtype=F64)).requires_grad_()
        assert gradcheck(lambda q: g.tps_grid(q, (4, 5)), (pts,))

    def test_gradcheck_flat(self):
        pts = (g.identity_params("tps", control_points=4, dtype=F64) + 0.05 * torch.randn(2, 8, generator=gen(9), dtype=F64)).requires_grad_()
        assert gradcheck(lambda q: g.tps_grid(q, (4, 5)), (pts,))

    @pytest.mark.parametrize(
        "pts, match",
        [
            (torch.zeros(1, 5, 2), r"square number of control points .* got K=5"),
            (torch.zeros(1, 10), r"square number of control points .* got K=5"),
            (torch.zeros(1, 4, 3), r"TPS points must be \(B, K, 2\) or \(B, 2K\), got shape \(1, 4, 3\)"),
            (torch.zeros(1, 7), r"TPS points must be \(B, K, 2\) or \(B, 2K\), got shape \(1, 7\)"),
            (torch.zeros(0, 4, 2), r"TPS points is an empty batch"),
            (torch.zeros(0, 8), r"TPS points is an empty batch"),
            (torch.full((1, 4, 2), float("nan")), r"TPS points must be finite"),
        ],
    )
    def test_exception(self, pts, match):
        with pytest.raises(ValueError, match=match):
            g.tps_grid(pts, (3, 3))

    def test_solved_wrong_shape(self):
        pts = g.tps_control_points(4).unsqueeze(0)
        with pytest.raises(ValueError, match=r"solved TPS matrix must be \(H\*W, K\) = \(9, 4\), got \(9, 9\)"):
            g.tps_grid(pts, (3, 3), solved=torch.zeros(9, 9))

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype(self, dtype):
        assert g.tps_grid(g.tps_control_points(4, dtype=dtype).unsqueeze(0), (2, 2)).dtype == dtype


# --------------------------------------------------------------------------- make_grid / params


FAMILY_KW = {
    "affine": {},
    "attention": {},
    "translation": {},
    "restricted": {"components": ALL_COMPONENTS},
    "projective": {},
    "tps": {"control_points": 16},
}


def _grid_kw(family):
    kw = FAMILY_KW[family]
    return {"components": kw["components"]} if "components" in kw else {}


class TestMakeGrid:
    @pytest.mark.parametrize("family", g.FAMILIES)
    def test_identity_warp_returns_image(self, family):
        img = torch.rand(2, 3, 5, 6, generator=gen(10))
        params = batch_params(family, **FAMILY_KW[family])
        grid = g.make_grid(params, family, (5, 6), **_grid_kw(family))
        assert grid.shape == (2, 5, 6, 2) and grid.dtype == torch.float32
        torch.testing.assert_close(g.warp(img, grid), img, atol=1e-5, rtol=0)

    @pytest.mark.parametrize("family", g.FAMILIES)
    def test_identity_grid_equals_torch_identity(self, family):
        params = batch_params(family, dtype=F64, **FAMILY_KW[family])
        torch.testing.assert_close(g.make_grid(params, family, (4, 7), **_grid_kw(family)), torch_identity_grid(2, 4, 7))

    def test_dispatch_matches_family_functions(self):
        p = torch.tensor([[0.7, 0.1, -0.2]], dtype=F64)
        torch.testing.assert_close(g.make_grid(p, "attention", (3, 4)), g.attention_grid(p, (3, 4)))
        h = near_identity_homography(1)
        torch.testing.assert_close(g.make_grid(h, "projective", (3, 4)), g.projective_grid(h, (3, 4)))
        src = torch.tensor([[-0.9, -0.7], [0.6, -0.8], [0.8, 0.9], [-0.5, 0.4]], dtype=F64)
        tgt = (src + 0.1).unsqueeze(0)
        torch.testing.assert_close(g.make_grid(tgt, "tps", (3, 4), source=src), g.tps_grid(tgt, (3, 4), source=src))

    @pytest.mark.parametrize("family", g.FAMILIES)
    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype_follows_params(self, family, dtype):
        params = batch_params(family, dtype=dtype, **FAMILY_KW[family])
        assert g.make_grid(params, family, (3, 3), **_grid_kw(family)).dtype == dtype

    def test_bad_family(self):
        with pytest.raises(ValueError, match=r"family must be one of \('affine'.*'tps'\), got 'spline'"):
            g.make_grid(torch.zeros(1, 6), "spline", (3, 3))

    def test_restricted_needs_components(self):
        with pytest.raises(ValueError, match=r"family 'restricted' needs components=\.\.\., got None"):
            g.make_grid(torch.zeros(1, 2), "restricted", (3, 3))

    def test_tps_non_square_k(self):
        with pytest.raises(ValueError, match=r"square number .* got K=6"):
            g.make_grid(torch.zeros(1, 12), "tps", (3, 3))


class TestNumParams:
    def test_counts(self):
        assert g.num_params("affine") == 6
        assert g.num_params("attention") == 3
        assert g.num_params("translation") == 2
        assert g.num_params("projective") == 8
        assert g.num_params("restricted", components=("rotation", "translation")) == 3
        assert g.num_params("tps", control_points=9) == 18

    @pytest.mark.parametrize("family", g.FAMILIES)
    def test_matches_identity_params(self, family):
        assert g.num_params(family, **FAMILY_KW[family]) == g.identity_params(family, **FAMILY_KW[family]).numel()

    def test_exception(self):
        with pytest.raises(ValueError, match=r"family must be one of .* got 'rigid'"):
            g.num_params("rigid")
        with pytest.raises(ValueError, match=r"needs components"):
            g.num_params("restricted")
        with pytest.raises(ValueError, match=r"got K=8"):
            g.num_params("tps", control_points=8)


class TestIdentityParams:
    def test_values(self):
        torch.testing.assert_close(g.identity_params("affine"), torch.tensor([1.0, 0, 0, 0, 1, 0]))
        torch.testing.assert_close(g.identity_params("attention"), torch.tensor([1.0, 0, 0]))
        torch.testing.assert_close(g.identity_params("translation"), torch.tensor([0.0, 0]))
        torch.testing.assert_close(g.identity_params("projective"), torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0]))
        torch.testing.assert_close(
            g.identity_params("restricted", components=("shear", "scale", "translation")), torch.tensor([0.0, 1, 0, 0])
        )
        torch.testing.assert_close(g.identity_params("tps", control_points=4), torch.tensor([-1.0, -1, 1, -1, -1, 1, 1, 1]))

    def test_dtype(self):
        assert g.identity_params("affine", dtype=F64).dtype == F64
        assert g.identity_params("tps", control_points=4, dtype=F64).dtype == F64

    def test_exception(self):
        with pytest.raises(ValueError, match=r"family must be one of .* got 'AFFINE'"):
            g.identity_params("AFFINE")
        with pytest.raises(ValueError, match=r"got K=7"):
            g.identity_params("tps", control_points=7)


class TestToMatrix:
    def test_families(self):
        eye = torch.eye(3, dtype=F64).unsqueeze(0)
        for family in ("affine", "attention", "translation", "projective"):
            torch.testing.assert_close(g.to_matrix(batch_params(family, 1, F64), family), eye)
        m = g.to_matrix(torch.tensor([[0.2, -0.1]], dtype=F64), "restricted", components=("tx", "ty"))
        torch.testing.assert_close(m, torch.tensor([[[1.0, 0, 0.2], [0, 1, -0.1], [0, 0, 1]]], dtype=F64))

    def test_exception(self):
        with pytest.raises(ValueError, match=r"family 'tps' has no matrix"):
            g.to_matrix(torch.zeros(1, 8), "tps")
        with pytest.raises(ValueError, match=r"family must be one of .* got 'foo'"):
            g.to_matrix(torch.zeros(1, 6), "foo")
        with pytest.raises(ValueError, match=r"needs components"):
            g.to_matrix(torch.zeros(1, 6), "restricted")


# --------------------------------------------------------------------------- compose / decompose


class TestComposeAffine:
    def test_identity_defaults(self):
        theta = g.compose_affine(rotation=torch.zeros(3, dtype=F64))
        torch.testing.assert_close(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=F64).expand(3, 2, 3))

    def test_known_matrix(self):
        # R(pi/2) = [[0, -1], [1, 0]]; shear 0.5: [[1, 0.5], [0, 1]]; diag(2, 3)
        # R @ Sh = [[0, -1], [1, 0.5]]; @ diag(2, 3) = [[0, -3], [2, 1.5]]
        theta = g.compose_affine(
            rotation=torch.tensor([math.pi / 2], dtype=F64), scale_x=2.0, scale_y=3.0, shear=0.5, tx=0.1, ty=-0.2
        )
        torch.testing.assert_close(theta, torch.tensor([[[0.0, -3, 0.1], [2, 1.5, -0.2]]], dtype=F64))

    def test_gradcheck(self):
        args = [torch.randn(2, generator=gen(11 + i), dtype=F64).requires_grad_() for i in range(6)]
        assert gradcheck(lambda *a: g.compose_affine(*a), tuple(args))

    def test_exception(self):
        with pytest.raises(ValueError, match=r"needs at least one \(B,\) tensor argument, got only numbers"):
            g.compose_affine(0.1, 1.0)
        with pytest.raises(ValueError, match=r"must be \(B,\) tensors with B >= 1, got shape \(0,\)"):
            g.compose_affine(rotation=torch.zeros(0))
        with pytest.raises(ValueError, match=r"scale_x must have shape \(2,\), got \(3,\)"):
            g.compose_affine(rotation=torch.zeros(2), scale_x=torch.ones(3))
        with pytest.raises(ValueError, match=r"shear must be finite"):
            g.compose_affine(rotation=torch.zeros(2), shear=torch.tensor([0.0, float("nan")]))


class TestDecomposeAffine:
    def test_pure_rotation_30_degrees(self):
        a = math.pi / 6
        theta = torch.tensor([[[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]]], dtype=F64)
        comp = g.decompose_affine(theta)
        torch.testing.assert_close(comp.rotation, torch.tensor([math.pi / 6], dtype=F64))
        torch.testing.assert_close(comp.scale_x, torch.ones(1, dtype=F64))
        torch.testing.assert_close(comp.scale_y, torch.ones(1, dtype=F64))
        torch.testing.assert_close(comp.shear, torch.zeros(1, dtype=F64))
        torch.testing.assert_close(comp.tx, torch.zeros(1, dtype=F64))

    def test_known_components_with_reflection(self):
        # Horizontal flip [[-1, 0], [0, 1]]: first column (-1, 0) -> rotation pi, scale_x 1;
        # det = -1 -> scale_y = -1; shear = (c*a12 + s*a22) / scale_y = 0.
        comp = g.decompose_affine(torch.tensor([[-1.0, 0, 0.3, 0, 1, -0.4]], dtype=F64))
        torch.testing.assert_close(torch.stack(list(comp), 1), torch.tensor([[math.pi, 1.0, -1.0, 0.0, 0.3, -0.4]], dtype=F64))

    def test_recovers_composed_components(self):
        # scale_x > 0 and rotation in (-pi, pi] make the decomposition unique.
        rot = torch.tensor([0.2, -2.5, 3.0], dtype=F64)
        sx = torch.tensor([1.5, 0.4, 2.0], dtype=F64)
        sy = torch.tensor([-0.7, 1.1, 0.5], dtype=F64)  # first item reflects
        sh = torch.tensor([0.3, -0.6, 0.0], dtype=F64)
        tx = torch.tensor([0.1, 0.0, -1.0], dtype=F64)
        ty = torch.tensor([-0.2, 0.5, 2.0], dtype=F64)
        comp = g.decompose_affine(g.compose_affine(rot, sx, sy, sh, tx, ty))
        for got, want in zip(comp, (rot, sx, sy, sh, tx, ty)):
            torch.testing.assert_close(got, want)

    def test_round_trip_random_batched(self):
        theta = torch.randn(16, 2, 3, generator=gen(12), dtype=F64)
        theta[0, :, 0] *= -1  # force a reflection in the batch
        dets = theta[:, 0, 0] * theta[:, 1, 1] - theta[:, 0, 1] * theta[:, 1, 0]
        assert (dets < 0).any() and (dets > 0).any()
        comp = g.decompose_affine(theta)
        assert comp.rotation.shape == (16,)
        torch.testing.assert_close(g.compose_affine(*comp), theta)
        # reflections show as a negative scale_y, scale_x is always positive
        assert torch.equal(comp.scale_y < 0, dets < 0)
        assert (comp.scale_x > 0).all()
        torch.testing.assert_close(comp.scale_x * comp.scale_y, dets)

    def test_flat_input(self):
        theta = torch.randn(3, 2, 3, generator=gen(13), dtype=F64)
        for a, b in zip(g.decompose_affine(theta.reshape(3, 6)), g.decompose_affine(theta)):
            torch.testing.assert_close(a, b)

    def test_gradcheck(self):
        theta = near_identity_theta(2, seed=14).requires_grad_()
        assert gradcheck(lambda t: tuple(g.decompose_affine(t)), (theta,))

    @pytest.mark.parametrize(
        "theta, match",
        [
            # rank-1 linear part: det = 1*4 - 2*2 = 0, in batch index 1
            (
                torch.tensor([[1.0, 0, 0, 0, 1, 0], [1.0, 2, 0, 2, 4, 0]]),
                r"expects a non-singular linear part, got det=0 at batch index 1",
            ),
            (torch.tensor([[0.0, 1, 0, 0, 1, 0]]), r"non-singular linear part, got det=0 at batch index 0"),
            (torch.zeros(1, 3, 3), r"theta must be \(B, 2, 3\) or \(B, 6\), got shape \(1, 3, 3\)"),
            (torch.zeros(0, 2, 3), r"empty batch"),
            (torch.tensor([[1.0, 0, float("inf"), 0, 1, 0]]), r"must be finite"),
        ],
    )
    def test_exception(self, theta, match):
        with pytest.raises(ValueError, match=match):
            g.decompose_affine(theta)

    def test_dtype(self):
        comp = g.decompose_affine(near_identity_theta(1))
        assert all(c.dtype == F64 for c in comp)


# --------------------------------------------------------------------------- invert


def _h(theta: torch.Tensor) -> torch.Tensor:
    """Homogeneous ``(B, 3, 3)`` from ``(B, 2, 3)``, built here (not with stnviz)."""
    row = torch.tensor([0.0, 0, 1], dtype=theta.dtype).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, row], 1)


class TestInvert:
    def test_affine_round_trip(self):
        theta = torch.randn(5, 2, 3, generator=gen(15), dtype=F64) + torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=F64)
        inv = g.invert(theta)
        assert inv.shape == (5, 2, 3)
        eye = torch.eye(3, dtype=F64).expand(5, 3, 3)
        torch.testing.assert_close(_h(theta) @ _h(inv), eye)
        torch.testing.assert_close(_h(inv) @ _h(theta), eye)
        torch.testing.assert_close(g.invert(inv), theta)

    def test_known_affine_inverse(self):
        # x_in = 2 x_out + 0.5  =>  x_out = 0.5 x_in - 0.25 ; y_in = 4 y_out - 1 => y_out = 0.25 y_in + 0.25
        theta = torch.tensor([[[2.0, 0, 0.5], [0, 4, -1]]], dtype=F64)
        torch.testing.assert_close(g.invert(theta), torch.tensor([[[0.5, 0, -0.25], [0, 0.25, 0.25]]], dtype=F64))

    def test_projective_round_trip(self):
        h = near_identity_homography(4, seed=16, scale=0.2)
        inv = g.invert(h)
        assert inv.shape == (4, 3, 3)
        torch.testing.assert_close(h @ inv, torch.eye(3, dtype=F64).expand(4, 3, 3))

    def test_composition_direction(self):
        # Parameters map output -> input, so warp(warp(img, A), B)(p) = warp(img, A)(B p) = img(A B p):
        # two warps equal one warp by the matrix product A @ B (B applied to the point first).
        img = smooth_image(1, 1, 24, 24)
        a = torch.tensor([[[0.9, 0.0, 0.05], [0.0, 0.9, 0.0]]], dtype=F64)  # zoom in + shift right
        b = torch.tensor([[[math.cos(0.3), -math.sin(0.3), 0.0], [math.sin(0.3), math.cos(0.3), 0.1]]], dtype=F64)
        twice = g.warp(g.warp(img, g.affine_grid(a, (24, 24))), g.affine_grid(b, (24, 24)))
        ab = (_h(a) @ _h(b))[:, :2]
        ba = (_h(b) @ _h(a))[:, :2]
        once_ab = g.warp(img, g.affine_grid(ab, (24, 24)))
        once_ba = g.warp(img, g.affine_grid(ba, (24, 24)))
        crop = (slice(None), slice(None), slice(6, 18), slice(6, 18))
        err_ab = (twice - once_ab)[crop].abs().max()
        err_ba = (twice - once_ba)[crop].abs().max()
        assert err_ab < 5e-3
        assert err_ba > 5 * err_ab

    @pytest.mark.parametrize("family", ["affine", "projective"])
    def test_warp_then_inverse_recovers_image(self, family):
        # "The inverse check of the MATLAB STN article": warp by T, then by invert(T) -> the image again
        # wherever both samplings stayed inside. out2(p) = out1(T^-1 p) = img(T T^-1 p) = img(p).
        size = (32, 32)
        img = smooth_image(1, 3, *size)
        theta = torch.tensor([[[0.95 * math.cos(0.15), -0.95 * math.sin(0.15), 0.05], [0.95 * math.sin(0.15), 0.95 * math.cos(0.15), -0.03]]], dtype=F64)
        t = theta if family == "affine" else torch.cat([theta, torch.tensor([[[0.05, -0.04, 1.0]]], dtype=F64)], 1)
        grid = g.affine_grid if family == "affine" else g.projective_grid
        back = g.warp(g.warp(img, grid(t, size)), grid(g.invert(t), size))
        crop = (slice(None), slice(None), slice(8, 24), slice(8, 24))
        err = (back - img)[crop].abs().max()
        assert err < 1e-2  # two bilinear resamplings of a smooth image
        # sanity: warping by T twice does NOT recover it
        twice = g.warp(g.warp(img, grid(t, size)), grid(t, size))
        assert (twice - img)[crop].abs().max() > 5 * err

    def test_flat_theta_rejected(self):
        with pytest.raises(ValueError, match=r"invert expects an affine theta \(B, 2, 3\) or a homography \(B, 3, 3\), got shape \(1, 6\)"):
            g.invert(torch.zeros(1, 6))

    @pytest.mark.parametrize(
        "m, match",
        [
            (torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[1.0, 2, 0], [2, 4, 0]]]), r"cannot invert a singular matrix: det=-?0 at batch index 1"),
            (torch.tensor([[[1.0, 0, 0], [0, 1, 0], [1, 0, 0]]]), r"singular matrix: det=-?0 at batch index 0"),
            (torch.zeros(0, 2, 3), r"empty batch"),
            (torch.tensor([[[float("nan"), 0, 0], [0, 1, 0]]]), r"must be finite"),
        ],
    )
    def test_exception(self, m, match):
        with pytest.raises(ValueError, match=match):
            g.invert(m)

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_dtype(self, dtype):
        assert g.invert(near_identity_theta(1, dtype=dtype)).dtype == dtype
        assert g.invert(near_identity_homography(1, dtype=dtype)).dtype == dtype


# --------------------------------------------------------------------------- warp


class TestWarp:
    def test_shape_follows_grid(self):
        img = torch.rand(2, 3, 5, 6, generator=gen(17))
        grid = g.affine_grid(torch.tensor([[1.0, 0, 0, 0, 1, 0]]).repeat(2, 1), (3, 8))
        out = g.warp(img, grid)
        assert out.shape == (2, 3, 3, 8)

    @pytest.mark.parametrize("c", [1, 3, 7])
    def test_channels_in_one_call(self, c):
        img = torch.rand(2, c, 5, 6, generator=gen(c), dtype=F64)
        grid = g.affine_grid(near_identity_theta(2, seed=c), (4, 5))
        out = g.warp(img, grid)
        assert out.shape == (2, c, 4, 5)
        for ch in range(c):
            torch.testing.assert_close(out[:, ch : ch + 1], g.warp(img[:, ch : ch + 1], grid))

    def test_zoom_known_values(self):
        # 1x4 image [0, 1, 2, 3], theta zoom 0.5 about the centre, 1x4 output:
        # output pixel x -> input pixel 0.5 x + 0.75 (see TestThetaToPixel) = 0.75, 1.25, 1.75, 2.25;
        # bilinear on the ramp reads the position back.
        img = torch.tensor([[[[0.0, 1, 2, 3]]]], dtype=F64)
        out = g.warp(img, g.attention_grid(torch.tensor([[0.5, 0, 0]], dtype=F64), (1, 4)))
        torch.testing.assert_close(out, torch.tensor([[[[0.75, 1.25, 1.75, 2.25]]]], dtype=F64))

    def test_nearest(self):
        img = torch.tensor([[[[1.0, 2, 3, 4]]]], dtype=F64)
        # shift 0.4 px (tx = 0.4 * 2 / 4 = 0.2): samples x + 0.4 -> nearest is x itself
        out = g.warp(img, g.translation_grid(torch.tensor([[0.2, 0.0]], dtype=F64), (1, 4)), mode="nearest")
        torch.testing.assert_close(out, img)
        # shift 0.6 px (tx = 0.3): samples x + 0.6 -> rounds to x + 1; the last one (3.6 -> 4) is outside -> 0
        out = g.warp(img, g.translation_grid(torch.tensor([[0.3, 0.0]], dtype=F64), (1, 4)), mode="nearest")
        torch.testing.assert_close(out, torch.tensor([[[[2.0, 3, 4, 0]]]], dtype=F64))

    def test_bicubic_known_values(self):
        # Delta at pixel 2 of a 1x6 image; shift by half a pixel (tx = 0.5 * 2 / 6 = 1/6): output x
        # samples x + 0.5. PyTorch's cubic convolution kernel (a = -0.75):
        #   W(0.5) = (a+2)/8 - (a+3)/4 + 1 = (4 - a)/8 = 0.59375
        #   W(1.5) = a (1.5^3 - 5*1.5^2 + 8*1.5 - 4) = a * 0.125 = -0.09375 (the negative lobe)
        #   W(2.5) = 0.  Bilinear would give 0.5 and 0.
        img = torch.tensor([[[[0.0, 0, 1, 0, 0, 0]]]], dtype=F64)
        grid = g.translation_grid(torch.tensor([[1.0 / 6.0, 0.0]], dtype=F64), (1, 6))
        expected = torch.tensor([[[[-0.09375, 0.59375, 0.59375, -0.09375, 0, 0]]]], dtype=F64)
        torch.testing.assert_close(g.warp(img, grid, mode="bicubic"), expected)
        torch.testing.assert_close(g.warp(img, grid), torch.tensor([[[[0.0, 0.5, 0.5, 0, 0, 0]]]], dtype=F64))

    @pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
    def test_identity_all_modes(self, mode):
        img = torch.rand(1, 2, 5, 6, generator=gen(18), dtype=F64)
        out = g.warp(img, torch_identity_grid(1, 5, 6), mode=mode)
        torch.testing.assert_close(out, img)

    @pytest.mark.parametrize(
        "padding_mode, expected",
        [
            # 1x4 image [1, 2, 3, 4] shifted by 2 px (tx = 2 * 2 / 4 = 1): output x samples x + 2 = 2, 3, 4, 5.
            ("zeros", [3.0, 4, 0, 0]),  # 4, 5 are outside -> 0
            ("border", [3.0, 4, 4, 4]),  # clamp to the last pixel
            ("reflection", [3.0, 4, 4, 3]),  # mirror about the edge 3.5: 4 -> 3, 5 -> 2
        ],
    )
    def test_padding(self, padding_mode, expected):
        img = torch.tensor([[[[1.0, 2, 3, 4]]]], dtype=F64)
        grid = g.translation_grid(torch.tensor([[1.0, 0.0]], dtype=F64), (1, 4))
        torch.testing.assert_close(g.warp(img, grid, padding_mode=padding_mode), torch.tensor([[[expected]]], dtype=F64))

    def test_gradcheck_bilinear_image_and_grid(self):
        img = torch.rand(2, 2, 5, 6, generator=gen(19), dtype=F64).requires_grad_()
        grid = g.affine_grid(near_identity_theta(2, seed=20), (4, 5)).detach().requires_grad_()
        assert gradcheck(lambda i, gr: g.warp(i, gr), (img, grid))

    @pytest.mark.parametrize("padding_mode", ["border", "reflection"])
    def test_gradcheck_paddings(self, padding_mode):
        img = torch.rand(1, 1, 5, 6, generator=gen(21), dtype=F64).requires_grad_()
        grid = g.affine_grid(near_identity_theta(1, seed=22, scale=0.2), (4, 5)).detach().requires_grad_()
        assert gradcheck(lambda i, gr: g.warp(i, gr, padding_mode=padding_mode), (img, grid))

    def test_gradcheck_bicubic_image(self):
        img = torch.rand(2, 2, 5, 6, generator=gen(23), dtype=F64).requires_grad_()
        grid = g.affine_grid(near_identity_theta(2, seed=24), (4, 5)).detach()
        assert gradcheck(lambda i: g.warp(i, grid, mode="bicubic"), (img,))

    @pytest.mark.parametrize(
        "family, params",
        [
            ("affine", lambda: near_identity_theta(1, seed=25)),
            ("projective", lambda: near_identity_homography(1, seed=26)),
            ("tps", lambda: g.tps_control_points(9, dtype=F64).unsqueeze(0) + 0.05 * torch.randn(1, 9, 2, generator=gen(27), dtype=F64)),
        ],
    )
    def test_gradcheck_end_to_end_params(self, family, params):
        # The STN's gradient path: image loss -> grid -> parameters.
        img = smooth_image(1, 1, 5, 6)
        p = params().requires_grad_()
        assert gradcheck(lambda q: g.warp(img, g.make_grid(q, family, (4, 5))), (p,))

    def test_dtype_follows_image(self):
        img = torch.rand(1, 1, 3, 3, dtype=F64)
        out = g.warp(img, torch_identity_grid(1, 3, 3, dtype=torch.float32))
        assert out.dtype == F64
        out32 = g.warp(img.float(), torch_identity_grid(1, 3, 3))
        assert out32.dtype == torch.float32

    @pytest.mark.parametrize("device", DEVICES)
    def test_device_follows_input(self, device):
        img = torch.rand(1, 1, 3, 3, device=device)
        assert g.warp(img, torch_identity_grid(1, 3, 3, dtype=torch.float32).to(device)).device == img.device

    @pytest.mark.parametrize(
        "image, grid, kw, match",
        [
            (torch.zeros(1, 1, 3, 3, dtype=torch.uint8), torch.zeros(1, 3, 3, 2), {}, r"image must be floating point .*got torch.uint8"),
            (torch.zeros(3, 3), torch.zeros(1, 3, 3, 2), {}, r"image must be \(B, C, H, W\), got shape \(3, 3\)"),
            (torch.zeros(0, 1, 3, 3), torch.zeros(0, 3, 3, 2), {}, r"image must be non-empty \(B, C, H, W\), got shape \(0, 1, 3, 3\)"),
            (torch.zeros(1, 0, 3, 3), torch.zeros(1, 3, 3, 2), {}, r"non-empty .*got shape \(1, 0, 3, 3\)"),
            (torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, 3), {}, r"grid must be \(B, H, W, 2\), got shape \(1, 3, 3, 3\)"),
            (torch.zeros(1, 1, 3, 3), torch.zeros(3, 3, 2), {}, r"grid must be \(B, H, W, 2\), got shape \(3, 3, 2\)"),
            (torch.zeros(3, 1, 3, 3), torch.zeros(2, 3, 3, 2), {}, r"grid batch 2 must match image batch 3"),
            (torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, 2), {"mode": "area"}, r"mode must be one of \('bilinear', 'nearest', 'bicubic'\), got 'area'"),
            (torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3, 2), {"padding_mode": "wrap"}, r"padding_mode must be one of \('zeros', 'border', 'reflection'\), got 'wrap'"),
            ("img", torch.zeros(1, 3, 3, 2), {}, r"image must be a torch.Tensor, got str"),
        ],
    )
    def test_exception(self, image, grid, kw, match):
        with pytest.raises(ValueError, match=match):
            g.warp(image, grid, **kw)


# --------------------------------------------------------------------------- pixel conventions


ZOOM = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]], dtype=F64)


class TestThetaToPixel:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_zoom_2x_about_centre_4x4(self, align_corners):
        # 4x4 in and out, theta = [[0.5, 0, 0], [0, 0.5, 0]] (zoom in 2x about the centre).
        # align_corners=False: pixel -> normalised u = (2x + 1)/4 - 1 = x/2 - 3/4.
        #   output x_o -> u = x_o/2 - 3/4 -> input u' = 0.5 u = x_o/4 - 3/8
        #   -> input pixel x_i = (u' + 1) * 4/2 - 1/2 = x_o/2 - 3/4 + 2 - 1/2 = 0.5 x_o + 0.75
        # align_corners=True: u = 2x/3 - 1.
        #   output x_o -> u = 2x_o/3 - 1 -> u' = x_o/3 - 1/2 -> x_i = (u' + 1) * 3/2 = 0.5 x_o + 0.75
        # Same in both (a square, same-size zoom about the centre pixel 1.5), y likewise. So
        #   inverse map (output -> input): [[0.5, 0, 0.75], [0, 0.5, 0.75]]
        #   OpenCV forward (input -> output): x_o = (x_i - 0.75) / 0.5 = 2 x_i - 1.5
        forward = torch.tensor([[[2.0, 0, -1.5], [0, 2.0, -1.5], [0, 0, 1]]], dtype=F64)
        inverse = torch.tensor([[[0.5, 0, 0.75], [0, 0.5, 0.75], [0, 0, 1]]], dtype=F64)
        torch.testing.assert_close(g.theta_to_pixel(ZOOM, (4, 4), align_corners=align_corners), forward)
        torch.testing.assert_close(g.theta_to_pixel(ZOOM, (4, 4), align_corners=align_corners, inverse_map=True), inverse)

    @pytest.mark.parametrize(
        "align_corners, shift",
        [
            # tx = 0.5 normalised on W = 4. align_corners=False: one unit = W/2 = 2 px -> shift 1 px.
            # align_corners=True: one unit = (W-1)/2 = 1.5 px -> shift 0.75 px.
            (False, 1.0),
            (True, 0.75),
        ],
    )
    def test_translation_differs_between_conventions(self, align_corners, shift):
        theta = torch.tensor([[[1.0, 0, 0.5], [0, 1.0, 0]]], dtype=F64)
        # inverse map: x_i = x_o + shift; forward (OpenCV): x_o = x_i - shift
        forward = torch.tensor([[[1.0, 0, -shift], [0, 1.0, 0], [0, 0, 1]]], dtype=F64)
        torch.testing.assert_close(g.theta_to_pixel(theta, (4, 4), align_corners=align_corners), forward)

    @pytest.mark.parametrize(
        "align_corners, inverse",
        [
            # identity theta, input (H, W) = (4, 6), output (2, 3): a 2x downsample.
            # False: x_o -> u = (2x_o + 1)/3 - 1 -> x_i = (u + 1) * 6/2 - 1/2 = 2 x_o + 0.5
            #        y_o -> v = (2y_o + 1)/2 - 1 -> y_i = (v + 1) * 4/2 - 1/2 = 2 y_o + 0.5
            (False, [[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]]),
            # True:  x_o -> u = 2x_o/2 - 1 -> x_i = (u + 1) * 5/2 = 2.5 x_o
            #        y_o -> v = 2y_o/1 - 1 -> y_i = (v + 1) * 3/2 = 3 y_o
            (True, [[2.5, 0, 0], [0, 3.0, 0], [0, 0, 1]]),
        ],
    )
    def test_different_output_size(self, align_corners, inverse):
        theta = torch.tensor([[1.0, 0, 0, 0, 1, 0]], dtype=F64)  # flat (B, 6) accepted
        inv = torch.tensor([inverse], dtype=F64)
        got_inv = g.theta_to_pixel(theta, (4, 6), (2, 3), align_corners=align_corners, inverse_map=True)
        torch.testing.assert_close(got_inv, inv)
        # forward is its inverse: False -> x_o = (x_i - 0.5)/2, True -> x_o = x_i / 2.5, y_o = y_i / 3
        forward = {False: [[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]], True: [[0.4, 0, 0], [0, 1 / 3, 0], [0, 0, 1]]}
        torch.testing.assert_close(
            g.theta_to_pixel(theta, (4, 6), (2, 3), align_corners=align_corners), torch.tensor([forward[align_corners]], dtype=F64)
        )

    def test_rotation_non_square(self):
        # theta = [[0, -1, 0], [1, 0, 0]]: output (u, v) samples input (-v, u). Input (H, W) = (4, 6),
        # output (6, 4) (portrait), align_corners=False.
        # x_o -> u = (2x_o + 1)/4 - 1 = x_o/2 - 3/4;  y_o -> v = (2y_o + 1)/6 - 1 = y_o/3 - 5/6
        # input x: -v = 5/6 - y_o/3 -> x_i = (-v + 1) * 6/2 - 1/2 = 5/2 - y_o + 3 - 1/2 = 5 - y_o
        # input y:  u = x_o/2 - 3/4 -> y_i = (u + 1) * 4/2 - 1/2 = x_o - 3/2 + 2 - 1/2 = x_o
        theta = torch.tensor([[[0.0, -1, 0], [1, 0, 0]]], dtype=F64)
        inv = torch.tensor([[[0.0, -1, 5], [1, 0, 0], [0, 0, 1]]], dtype=F64)
        torch.testing.assert_close(g.theta_to_pixel(theta, (4, 6), (6, 4), inverse_map=True), inv)
        # forward: y_o = 5 - x_i, x_o = y_i
        fwd = torch.tensor([[[0.0, 1, 0], [-1, 0, 5], [0, 0, 1]]], dtype=F64)
        torch.testing.assert_close(g.theta_to_pixel(theta, (4, 6), (6, 4)), fwd)

    def test_inverse_map_matches_affine_grid(self):
        # Derived independently: torch's affine_grid gives the normalised sample point of each output
        # pixel; pixel = (g + 1) * W / 2 - 1/2 (align_corners=False).
        theta = near_identity_theta(3, seed=28, scale=0.3)
        hi, wi, ho, wo = 5, 7, 4, 9
        grid = F.affine_grid(theta, [3, 1, ho, wo], align_corners=False)
        px = torch.stack([(grid[..., 0] + 1) * wi / 2 - 0.5, (grid[..., 1] + 1) * hi / 2 - 0.5], -1)
        m = g.theta_to_pixel(theta, (hi, wi), (ho, wo), inverse_map=True)
        for b in range(3):
            torch.testing.assert_close(apply_pixel_matrix(m[b], pixel_centres_h(ho, wo)), px[b])

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_matches_grid_sample_on_ramp(self, align_corners):
        # Sample a known location: on I(x, y) = x + 10 y bilinear sampling returns x_i + 10 y_i, so
        # warping with theta must read the inverse_map image of every output pixel centre.
        hi, wi, ho, wo = 7, 9, 5, 6
        theta = g.compose_affine(
            rotation=torch.tensor([0.3], dtype=F64), scale_x=0.6, scale_y=0.55, shear=0.1, tx=0.1, ty=-0.05
        )
        img = ramp_image(hi, wi)
        grid = F.affine_grid(theta, [1, 1, ho, wo], align_corners=align_corners)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=align_corners)
        m = g.theta_to_pixel(theta, (hi, wi), (ho, wo), align_corners=align_corners, inverse_map=True)[0]
        pos = apply_pixel_matrix(m, pixel_centres_h(ho, wo))
        # all samples inside the pixel-centre hull, so bilinear interpolation of the ramp is exact
        assert pos[..., 0].min() > 0 and pos[..., 0].max() < wi - 1
        assert pos[..., 1].min() > 0 and pos[..., 1].max() < hi - 1
        torch.testing.assert_close(out[0, 0], pos[..., 0] + 10 * pos[..., 1])
        # and the forward (OpenCV) matrix sends those input points back to the output pixel centres
        fwd = g.theta_to_pixel(theta, (hi, wi), (ho, wo), align_corners=align_corners)[0]
        pos_h = torch.cat([pos, torch.ones_like(pos[..., :1])], -1)
        torch.testing.assert_close(apply_pixel_matrix(fwd, pos_h), pixel_centres_h(ho, wo)[..., :2])

    def test_homography_matches_warp_on_ramp(self):
        hi, wi, ho, wo = 8, 8, 6, 7
        h = torch.tensor([[[0.6, 0.05, 0.02], [-0.04, 0.55, 0.03], [0.05, -0.08, 1.0]]], dtype=F64)
        out = g.warp(ramp_image(hi, wi), g.projective_grid(h, (ho, wo)))
        m = g.theta_to_pixel(h, (hi, wi), (ho, wo), inverse_map=True)[0]
        pos = apply_pixel_matrix(m, pixel_centres_h(ho, wo))
        assert pos.min() > 0 and pos.max() < 7
        torch.testing.assert_close(out[0, 0], pos[..., 0] + 10 * pos[..., 1])

    def test_delta_lands_where_forward_matrix_says(self):
        # A single bright input pixel must show up at M @ (x, y, 1) in the output (nearest, to be exact).
        # theta: translation by (-0.5, 0.25) normalised on 8x8: -2 px in x, +1 px in y (inverse map),
        # so forward x_o = x_i + 2, y_o = y_i - 1. Input pixel (x=3, y=5) -> output (5, 4).
        theta = torch.tensor([[[1.0, 0, -0.5], [0, 1.0, 0.25]]], dtype=F64)
        fwd = g.theta_to_pixel(theta, (8, 8))[0]
        torch.testing.assert_close(fwd @ torch.tensor([3.0, 5, 1], dtype=F64), torch.tensor([5.0, 4, 1], dtype=F64))
        img = torch.zeros(1, 1, 8, 8, dtype=F64)
        img[0, 0, 5, 3] = 1.0
        out = g.warp(img, g.affine_grid(theta, (8, 8)))
        assert out[0, 0, 4, 5] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)

    def test_batched_and_dtype(self):
        theta = near_identity_theta(4, seed=29, dtype=torch.float32)
        m = g.theta_to_pixel(theta, (5, 6))
        assert m.shape == (4, 3, 3) and m.dtype == torch.float32
        assert g.theta_to_pixel(near_identity_theta(2), (5, 6)).dtype == F64

    def test_exception(self):
        with pytest.raises(ValueError, match=r"align_corners=True needs H, W >= 2, got \(1, 4\)"):
            g.theta_to_pixel(ZOOM, (1, 4), align_corners=True)
        with pytest.raises(ValueError, match=r"homography must be \(B, 3, 3\), \(B, 9\) or \(B, 8\), got shape \(1, 4, 4\)"):
            g.theta_to_pixel(torch.zeros(1, 4, 4), (4, 4))
        with pytest.raises(ValueError, match=r"size must be"):
            g.theta_to_pixel(ZOOM, (4, 0))
        with pytest.raises(ValueError, match=r"must be finite"):
            g.theta_to_pixel(torch.full((1, 2, 3), float("nan")), (4, 4))
        with pytest.raises(ValueError, match=r"singular"):
            g.theta_to_pixel(torch.zeros(1, 2, 3), (4, 4))


class TestPixelConversionsInFloat64:
    """The pixel / normalised conversions are exact in theory: they run in float64 whatever the
    input's dtype, so a float32 result is the float64 one rounded once, the same on every CPU (in
    float32 one machine printed 0.0000 and another -5.9605e-08 for the same doctest)."""

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_float32_is_the_float64_result_rounded(self, align_corners):
        theta = near_identity_theta(16, seed=40, scale=0.4).float()
        kw = dict(align_corners=align_corners)
        m32 = g.theta_to_pixel(theta, (27, 31), (13, 9), **kw)
        assert m32.dtype == torch.float32
        assert torch.equal(m32, g.theta_to_pixel(theta.double(), (27, 31), (13, 9), **kw).float())
        back32 = g.pixel_to_theta(m32, (27, 31), (13, 9), **kw)
        assert torch.equal(back32, g.pixel_to_theta(m32.double(), (27, 31), (13, 9), **kw).float())
        conv = g.convert_align_corners(theta, (27, 31), source=not align_corners, target=align_corners)
        assert torch.equal(conv, g.convert_align_corners(theta.double(), (27, 31), source=not align_corners,
                                                         target=align_corners).float())
        pts = torch.rand(4, 5, 2) * 2 - 1
        assert torch.equal(g.grid_to_pixels(pts, (27, 31), **kw), g.grid_to_pixels(pts.double(), (27, 31), **kw).float())

    def test_exact_cases_give_exact_zeros(self):
        shift = torch.tensor([[[1.0, 0.0, 7.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
        assert g.pixel_to_theta(shift, (28, 28)).tolist() == [[[1.0, 0.0, -0.5], [0.0, 1.0, 0.0]]]
        zoom = torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]]])
        m = g.theta_to_pixel(zoom, (28, 28))
        assert m.tolist() == [[[2.0, 0.0, -13.5], [0.0, 2.0, -13.5], [0.0, 0.0, 1.0]]]
        rotated = torch.tensor([[[0.8, -0.6, 0.1], [0.6, 0.8, -0.2]]])
        last_row = g.theta_to_pixel(rotated, (28, 20))[:, 2]
        assert last_row.tolist() == [[0.0, 0.0, 1.0]]  # an affine map stays affine, exactly


class TestPixelToTheta:
    @pytest.mark.parametrize("align_corners", [False, True])
    def test_hand_matrices_back_to_theta(self, align_corners):
        forward = torch.tensor([[[2.0, 0, -1.5], [0, 2.0, -1.5], [0, 0, 1]]], dtype=F64)
        inverse = torch.tensor([[[0.5, 0, 0.75], [0, 0.5, 0.75]]], dtype=F64)  # (B, 2, 3) accepted too
        torch.testing.assert_close(g.pixel_to_theta(forward, (4, 4), align_corners=align_corners), ZOOM)
        torch.testing.assert_close(g.pixel_to_theta(inverse, (4, 4), align_corners=align_corners, inverse_map=True), ZOOM)

    @pytest.mark.parametrize("align_corners", [False, True])
    @pytest.mark.parametrize("inverse_map", [False, True])
    def test_round_trip_affine(self, align_corners, inverse_map):
        theta = near_identity_theta(4, seed=30, scale=0.3)
        kw = dict(align_corners=align_corners, inverse_map=inverse_map)
        m = g.theta_to_pixel(theta, (5, 7), (6, 4), **kw)
        back = g.pixel_to_theta(m, (5, 7), (6, 4), **kw)
        assert back.shape == (4, 2, 3)
        torch.testing.assert_close(back, theta)

    @pytest.mark.parametrize("align_corners", [False, True])
    def test_round_trip_homography(self, align_corners):
        h = near_identity_homography(3, seed=31, scale=0.1)
        m = g.theta_to_pixel(h, (5, 7), (6, 4), align_corners=align_corners)
        back = g.pixel_to_theta(m, (5, 7), (6, 4), align_corners=align_corners)
        assert back.shape == (3, 3, 3)
        torch.testing.assert_close(back / back[:, 2:, 2:], h / h[:, 2:, 2:])

    def test_exception(self):
        with pytest.raises(ValueError, match=r"matrix must be \(B, 3, 3\), \(B, 9\) or \(B, 8\), got shape \(2, 2, 2\)"):
            g.pixel_to_theta(torch.zeros(2, 2, 2), (4, 4))
        with pytest.raises(ValueError, match=r"singular matrix"):
            g.pixel_to_theta(torch.zeros(1, 3, 3), (4, 4))
        with pytest.raises(ValueError, match=r"empty batch"):
            g.pixel_to_theta(torch.zeros(0, 2, 3), (4, 4))


# --------------------------------------------------------------------------- sampled region


# Input (H, W) = (4, 8): the image spans x in [-0.5, 7.5], y in [-0.5, 3.5].
IDENTITY_CORNERS = [[-0.5, -0.5], [7.5, -0.5], [7.5, 3.5], [-0.5, 3.5]]


class TestSampledCorners:
    @pytest.mark.parametrize("family", g.FAMILIES)
    def test_identity_is_image_corners(self, family):
        params = batch_params(family, 2, F64, **FAMILY_KW[family])
        c = g.sampled_corners(params, family, (4, 8), **_grid_kw(family))
        assert c.shape == (2, 4, 2) and c.dtype == F64
        torch.testing.assert_close(c, torch.tensor([IDENTITY_CORNERS] * 2, dtype=F64))

    def test_attention_centre_half(self):
        # s = 0.5: normalised +-0.5 -> x = (+-0.5 + 1) * 8/2 - 0.5 = 1.5, 5.5 ; y = (+-0.5 + 1) * 4/2 - 0.5 = 0.5, 2.5
        c = g.sampled_corners(torch.tensor([[0.5, 0.0, 0.0]], dtype=F64), "attention", (4, 8))
        torch.testing.assert_close(c, torch.tensor([[[1.5, 0.5], [5.5, 0.5], [5.5, 2.5], [1.5, 2.5]]], dtype=F64))

    def test_attention_right_half(self):
        # s = 0.5, tx = 0.5: x in [0, 1] normalised -> [3.5, 7.5] px
        c = g.sampled_corners(torch.tensor([[0.5, 0.5, 0.0]], dtype=F64), "attention", (4, 8))
        torch.testing.assert_close(c, torch.tensor([[[3.5, 0.5], [7.5, 0.5], [7.5, 2.5], [3.5, 2.5]]], dtype=F64))

    def test_affine_matches_theta_to_pixel(self):
        # Independent route: the output's outer corners (-0.5, -0.5) ... (W_o - 0.5, H_o - 0.5) in output
        # pixels, pushed through the inverse-map pixel matrix (any output size: use 10x10).
        theta = near_identity_theta(2, seed=32, scale=0.3)
        c = g.sampled_corners(theta, "affine", (4, 8))
        m = g.theta_to_pixel(theta, (4, 8), (10, 10), inverse_map=True)
        out_corners = torch.tensor([[-0.5, -0.5, 1], [9.5, -0.5, 1], [9.5, 9.5, 1], [-0.5, 9.5, 1]], dtype=F64)
        for b in range(2):
            torch.testing.assert_close(c[b], apply_pixel_matrix(m[b], out_corners))

    def test_projective(self):
        # H = [[1,0,0],[0,1,0],[0.5,0,1]]: (x, y) -> (x, y) / (0.5 x + 1).
        # (-1,-1): w = 0.5 -> (-2, -2); (1,-1): w = 1.5 -> (2/3, -2/3); (1,1) -> (2/3, 2/3); (-1,1) -> (-2, 2)
        # pixels on (H, W) = (4, 8): x = (xn + 1) * 4 - 0.5, y = (yn + 1) * 2 - 0.5
        #   (-2,-2) -> (-4.5, -2.5); (2/3,-2/3) -> (20/3 - 0.5, 1/6); (2/3,2/3) -> (20/3 - 0.5, 10/3 - 0.5);
        #   (-2, 2) -> (-4.5, 5.5)
        h = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0.5, 0, 1]]], dtype=F64)
        expected = torch.tensor(
            [[[-4.5, -2.5], [20 / 3 - 0.5, 1 / 6], [20 / 3 - 0.5, 10 / 3 - 0.5], [-4.5, 5.5]]], dtype=F64
        )
        torch.testing.assert_close(g.sampled_corners(h, "projective", (4, 8)), expected)
        torch.testing.assert_close(g.sampled_corners(h.reshape(1, 9)[:, :8], "projective", (4, 8)), expected)

    def test_tps_moved_corner(self):
        # The 3x3 lattice's corners are the output corners, and the TPS interpolates its control points:
        # move top-left (-1, -1) to (-0.5, -0.8) -> pixel ((0.5) * 4 - 0.5, (0.2) * 2 - 0.5) = (1.5, -0.1).
        pts = g.tps_control_points(9, dtype=F64).unsqueeze(0).clone()
        pts[0, 0] = torch.tensor([-0.5, -0.8], dtype=F64)
        pts[0, 4] = torch.tensor([0.2, 0.1], dtype=F64)  # moving the centre must not move the corners
        c = g.sampled_corners(pts, "tps", (4, 8))
        expected = torch.tensor([[[1.5, -0.1], [7.5, -0.5], [7.5, 3.5], [-0.5, 3.5]]], dtype=F64)
        torch.testing.assert_close(c, expected)
        torch.testing.assert_close(g.sampled_corners(pts.reshape(1, 18), "tps", (4, 8)), expected)

    def test_restricted(self):
        # scale 0.5 alone = attention (0.5, 0, 0)
        c = g.sampled_corners(torch.tensor([[0.5]], dtype=F64), "restricted", (4, 8), components=("scale",))
        torch.testing.assert_close(c, torch.tensor([[[1.5, 0.5], [5.5, 0.5], [5.5, 2.5], [1.5, 2.5]]], dtype=F64))

    def test_exception(self):
        with pytest.raises(ValueError, match=r"family must be one of .* got 'crop'"):
            g.sampled_corners(torch.zeros(1, 3), "crop", (4, 4))
        with pytest.raises(ValueError, match=r"attention params must be \(B, 3\)"):
            g.sampled_corners(torch.zeros(1, 4), "attention", (4, 4))
        with pytest.raises(ValueError, match=r"got K=5"):
            g.sampled_corners(torch.zeros(1, 5, 2), "tps", (4, 4))
        with pytest.raises(ValueError, match=r"size must be"):
            g.sampled_corners(torch.tensor([[1.0, 0, 0]]), "attention", (4,))


class TestSampledOutline:
    def test_identity_traces_border_clockwise(self):
        # points_per_side = 4: t = -1, -0.5, 0, 0.5 along each side; input (H, W) = (4, 8):
        # x = (t + 1) * 4 - 0.5 -> -0.5, 1.5, 3.5, 5.5 ; y = (t + 1) * 2 - 0.5 -> -0.5, 0.5, 1.5, 2.5
        expected = [
            [-0.5, -0.5], [1.5, -0.5], [3.5, -0.5], [5.5, -0.5],  # top, left -> right
            [7.5, -0.5], [7.5, 0.5], [7.5, 1.5], [7.5, 2.5],  # right, top -> bottom
            [7.5, 3.5], [5.5, 3.5], [3.5, 3.5], [1.5, 3.5],  # bottom, right -> left
            [-0.5, 3.5], [-0.5, 2.5], [-0.5, 1.5], [-0.5, 0.5],  # left, bottom -> top
        ]  # fmt: skip
        o = g.sampled_outline(torch.tensor([[1.0, 0, 0]], dtype=F64), "attention", (4, 8), points_per_side=4)
        torch.testing.assert_close(o, torch.tensor([expected], dtype=F64))

    @pytest.mark.parametrize("family", g.FAMILIES)
    @pytest.mark.parametrize("n", [1, 3, 16])
    def test_length_and_starts_at_corners(self, family, n):
        params = batch_params(family, 2, F64, **FAMILY_KW[family])
        o = g.sampled_outline(params, family, (4, 8), points_per_side=n, **_grid_kw(family))
        assert o.shape == (2, 4 * n, 2)
        corners = g.sampled_corners(params, family, (4, 8), **_grid_kw(family))
        torch.testing.assert_close(o[:, ::n], corners)

    def test_affine_sides_are_straight(self):
        theta = near_identity_theta(1, seed=33, scale=0.3)
        n = 5
        o = g.sampled_outline(theta, "affine", (6, 6), points_per_side=n)[0]
        c = g.sampled_corners(theta, "affine", (6, 6))[0]
        for side in range(4):
            a, b = c[side], c[(side + 1) % 4]
            for j in range(n):
                torch.testing.assert_close(o[side * n + j], a + (b - a) * j / n)

    def test_tps_outline_interpolates_and_curves(self):
        # K = 9, points_per_side = 2: the outline points are exactly the 8 border control points,
        # in order (0,-1)... Move the top-middle one (0, -1) to (0, -0.6): the outline follows it and
        # the top side is no longer a straight line.
        pts = g.tps_control_points(9, dtype=F64).unsqueeze(0).clone()
        pts[0, 1] = torch.tensor([0.0, -0.6], dtype=F64)
        o = g.sampled_outline(pts, "tps", (4, 8), points_per_side=2)
        # (0, -0.6) -> pixel ((0 + 1) * 4 - 0.5, (0.4) * 2 - 0.5) = (3.5, 0.3)
        torch.testing.assert_close(o[0, 1], torch.tensor([3.5, 0.3], dtype=F64))
        torch.testing.assert_close(o[0, 0], torch.tensor([-0.5, -0.5], dtype=F64))
        fine = g.sampled_outline(pts, "tps", (4, 8), points_per_side=8)[0]
        top = fine[:8]
        assert (top[1:, 1] - (-0.5)).abs().max() > 0.1  # bulges down, off the straight edge y = -0.5

    def test_exception(self):
        with pytest.raises(ValueError, match=r"points_per_side must be >= 1, got 0"):
            g.sampled_outline(torch.tensor([[1.0, 0, 0]]), "attention", (4, 4), points_per_side=0)


# --------------------------------------------------------------------------- issue 12: absurd sizes


class TestAbsurdGridSize:
    """A grid of 1e5 x 1e5 points would need 80 GB: refused before anything is allocated."""

    @pytest.mark.parametrize("family, params", [
        ("affine", torch.eye(2, 3).unsqueeze(0)),
        ("projective", torch.eye(3).unsqueeze(0)),
        ("tps", g.tps_control_points(16).unsqueeze(0)),
        ("attention", torch.tensor([[1.0, 0.0, 0.0]])),
    ])
    def test_make_grid_refuses(self, family, params):
        with pytest.raises(ValueError, match=r"grid of batch 1 x 100000 x 100000 has 10,000,000,000 points, more than the limit"):
            g.make_grid(params, family, (100_000, 100_000))

    def test_affine_grid_counts_the_batch(self):
        theta = torch.eye(2, 3).expand(64, 2, 3)
        with pytest.raises(ValueError, match=r"batch 64 x 2048 x 2048 .* expected an output size of at most"):
            g.affine_grid(theta, (2048, 2048))
        assert g.affine_grid(theta[:1], (64, 64)).shape == (1, 64, 64, 2)


class TestIsSingular:
    """One rule for "singular": decompose_affine, invert and the messages all ask is_singular."""

    def test_affine(self):
        theta = torch.tensor([[[1.0, 0, 5.0], [0, 1, 0]],      # identity, any translation: regular
                              [[1.0, 2, 0], [0.5, 1, 0]],      # det 0
                              [[0.0, 0, 0.3], [0, 0, -0.2]],   # collapses onto one point
                              [[1e3, 0, 0], [0, 1e-3, 0]]], dtype=F64)  # det 1: regular, however elongated
        assert g.is_singular(theta).tolist() == [False, True, True, False]
        assert g.is_singular(theta.reshape(4, 6)).tolist() == [False, True, True, False]

    def test_tolerance_follows_the_dtype(self):
        theta = torch.tensor([[[1.0, 0, 0], [0, 1e-8, 0]]], dtype=F64)  # det 1e-8
        assert not bool(g.is_singular(theta)) and bool(g.is_singular(theta.float()))

    def test_homography_is_judged_at_any_scale(self):
        h = near_identity_homography(3)
        for c in (1e-3, 1.0, 1e3):
            assert not g.is_singular(c * h).any()
        flat = h.clone()
        flat[:, 2] = flat[:, 0]  # two equal rows: rank 2
        assert g.is_singular(flat).all()

    def test_matrix_of_every_matrix_family(self):
        for family, params in [("affine", torch.tensor([[0.0, 0, 0.1, 0, 0, 0]])), ("attention", torch.tensor([[0.0, 0.1, 0]])),
                               ("translation", torch.tensor([[0.3, 0.1]])), ("projective", torch.eye(3).unsqueeze(0))]:
            expected = family in ("affine", "attention")
            assert bool(g.is_singular(g.to_matrix(params, family))) is expected, family

    def test_non_finite_is_not_singular(self):
        assert not bool(g.is_singular(torch.tensor([[[math.nan, 0, 0], [0, 1, 0]]])))

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"is_singular expects an affine theta \(B, 2, 3\) or \(B, 6\) or a matrix \(B, 3, 3\), got shape \(2, 2\)"):
            g.is_singular(torch.eye(2))

    @pytest.mark.parametrize("dtype", [torch.float32, F64])
    def test_decompose_and_invert_agree(self, dtype):
        theta = torch.tensor([[[1.0, 0, 0], [0, 1, 0]], [[1.0, 2, 0], [0.5, 1 + 1e-9, 0]], [[1e-7, 0, 0.2], [0, 1, 0]],
                              [[0.8, -0.3, 0.1], [0.3, 0.8, -0.05]]], dtype=dtype)
        bad = g.is_singular(theta)
        assert torch.equal(torch.isnan(g.decompose_affine(theta, singular="nan").scale_x), bad)
        for i in range(theta.shape[0]):
            if bad[i]:
                with pytest.raises(ValueError, match="singular"):
                    g.invert(theta[i : i + 1])
            else:
                g.invert(theta[i : i + 1])


class TestFamilyLists:
    """The family lists are read off FAMILY_TABLE, and none leaves out a family it should hold."""

    def test_lists_come_from_the_table(self):
        assert g.FAMILIES == tuple(g.FAMILY_TABLE)
        assert g.AFFINE_FAMILIES == tuple(n for n, f in g.FAMILY_TABLE.items() if f.is_affine)
        assert g.AFFINE_FAMILIES == ("affine", "attention", "restricted", "translation")

    @pytest.mark.parametrize("family", g.FAMILIES)
    def test_is_affine_means_a_2x3_theta(self, family):
        comps = ("rotation", "scale") if family == "restricted" else None
        params = g.shape_params(g.identity_params(family, components=comps, control_points=9).unsqueeze(0), family)
        if g.FAMILY_TABLE[family].matrix is None:
            with pytest.raises(ValueError, match="has no matrix"):
                g.to_matrix(params, family, components=comps)
            assert not g.FAMILY_TABLE[family].is_affine
            return
        m = g.to_matrix(params, family, components=comps)  # every family with a matrix, projective included
        assert m.shape == (1, 3, 3)
        assert g.FAMILY_TABLE[family].is_affine == (family != "projective")
        if g.FAMILY_TABLE[family].is_affine:  # its theta is the matrix's top two rows
            params = params + 0.1
            m = g.to_matrix(params, family, components=comps)
            torch.testing.assert_close(g.affine_grid(m[:, :2], (5, 7)), g.make_grid(params, family, (5, 7), components=comps))
