import copy
import dataclasses
import functools
import gc
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

from stnviz import geometry, get_model
from stnviz.capture import CaptureError, CaptureWarning, TransformRecord, capture, collect
from stnviz.models import GridGenerator, SpatialTransformer


class TutorialNet(nn.Module):
    """The PyTorch STN tutorial's network, written without stnviz."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.localization = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
            nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
        )
        self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True), nn.Linear(32, 3 * 2))
        self.fc_loc[2].weight.data.zero_()
        self.fc_loc[2].bias.data.copy_(torch.tensor([0.9, 0.1, 0.05, -0.1, 0.9, 0.0]))

    def stn(self, x):
        xs = self.localization(x).view(-1, 10 * 3 * 3)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def forward(self, x):
        x = self.stn(x)
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(x.view(-1, 320)))
        return F.log_softmax(self.fc2(x), dim=1)


class TwoStageNet(nn.Module):
    """Two foreign transformers: one in a submodule, one in the root's forward."""

    def __init__(self):
        super().__init__()
        self.first = nn.Identity()
        self.head = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        b = x.shape[0]
        t1 = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], device=x.device).expand(b, 2, 3)
        t2 = torch.tensor([[1.0, 0.0, 0.2], [0.0, 1.0, 0.0]], device=x.device).expand(b, 2, 3)
        x = F.grid_sample(x, F.affine_grid(t1, x.size(), align_corners=False), align_corners=False)
        y = self.head(x)
        return F.grid_sample(y, F.affine_grid(t2, y.size(), align_corners=False), align_corners=False)


class TestCaptureStnviz:
    def test_a_captured_forward_computes_what_an_uncaptured_one_does(self, device):
        # its grid generator's hook records theta, so its affine grid is broadcast as without a
        # capture (F.affine_grid rounds differently in the last bits, and costs more on the CPU)
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.5, 0.1, 0.2, -0.1, 0.6, 0.0]))
        x = torch.rand(4, 1, 28, 28, device=device)
        with torch.no_grad():
            plain = model(x)
            with capture(model) as rec:
                captured = model(x)
                assert getattr(geometry._recorded, "depth", 0) == 0  # only while the generator runs
                with pytest.raises((ValueError, RuntimeError)):
                    model.transformers[0].grid_generator(torch.zeros(1, 5, device=device), (4, 4))
                assert geometry._recorded.depth == 0  # left after a failed generator too
        assert torch.equal(captured, plain)
        torch.testing.assert_close(rec.last().theta.cpu(), torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.6, 0.0]]]).expand(4, 2, 3))

    def test_geometry_affine_grid_outside_a_generator_still_gives_theta(self, device):
        # no generator hook records it: the capture must see F.affine_grid
        class Direct(nn.Module):
            def forward(self, x):
                theta = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0]]], device=x.device).expand(x.shape[0], 2, 3)
                return F.grid_sample(x, geometry.affine_grid(theta, (8, 8)), align_corners=False)

        net = Direct()
        with capture(net) as rec:
            net(torch.rand(2, 1, 8, 8, device=device))
        torch.testing.assert_close(rec.last().theta.cpu(), torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0]]]).expand(2, 2, 3))

    def test_records_every_transformer(self, device):
        model = get_model("stn_gtsrb", device=device).eval()
        x = torch.rand(4, 3, 32, 32, device=device)
        with capture(model) as rec:
            model(x)
        assert rec.keys() == ["transformer", "body.1"]
        first, second = rec.of("transformer")[0], rec.of("body.1")[0]
        assert (first.call, second.call) == (0, 1)
        assert first.family == "affine" and first.params.shape == (4, 2, 3)
        assert torch.equal(first.input, x)
        assert first.grid.shape == (4, 32, 32, 2) and first.output.shape == (4, 3, 32, 32)
        assert second.input.shape == (4, 32, 16, 16)
        # an untrained transformer is the identity
        torch.testing.assert_close(first.theta.cpu(), geometry.identity_params("affine").view(1, 2, 3).expand(4, 2, 3))
        torch.testing.assert_close(first.output, x, atol=1e-5, rtol=0)

    def test_records_are_detached_cpu_copies(self, device):
        model = get_model("stn_tutorial", device=device)
        x = torch.rand(2, 1, 28, 28, requires_grad=True, device=device)
        with capture(model) as rec:
            out = model(x)
        r = rec.last()
        assert not r.output.requires_grad and not r.params.requires_grad
        out.sum().backward()  # the model's graph is untouched by the copies
        assert x.grad is not None

    @pytest.mark.parametrize("family,kwargs,shape", [
        ("tps", {"control_points": 9}, (2, 9, 2)),
        ("projective", {}, (2, 8)),
        ("restricted", {"components": ["rotation", "scale"]}, (2, 2)),
    ])
    def test_other_families(self, family, kwargs, shape, device):
        model = get_model("stn_cnn", family=family, **kwargs, device=device).eval()
        with capture(model) as rec:
            model(torch.rand(2, 1, 42, 42, device=device))
        r = rec.last("transformer")
        assert r.family == family and tuple(r.params.shape) == shape
        outline = r.sampled_outline(4).cpu()
        assert outline.shape == (2, 16, 2)
        # identity: the outline runs along the image border
        assert outline[..., 0].min() == pytest.approx(-0.5, abs=1e-3) and outline[..., 0].max() == pytest.approx(41.5, abs=1e-3)

    def test_bounded_memory(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        with capture(model, keep_last=3, batch_slice=2) as rec:
            for _ in range(5):
                model(torch.rand(8, 1, 28, 28, device=device))
        assert len(rec) == 3 and rec.dropped == 2
        assert [r.call for r in rec] == [2, 3, 4]
        assert all(r.input.shape[0] == 2 and r.grid.shape[0] == 2 for r in rec)

    def test_hooks_removed_on_exit_and_on_error(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        st = model.transformers[0]
        before = (len(st._forward_hooks), len(st._forward_pre_hooks), len(model._forward_pre_hooks))
        with pytest.raises(RuntimeError, match="boom"):
            with capture(model):
                model(torch.rand(1, 1, 28, 28, device=device))
                raise RuntimeError("boom")
        assert (len(st._forward_hooks), len(st._forward_pre_hooks), len(model._forward_pre_hooks)) == before
        assert F.grid_sample.__module__ == "torch.nn.functional" and F.affine_grid.__module__ == "torch.nn.functional"

    def test_nothing_captured_is_an_error(self, device):
        model = get_model("stn_tutorial", device=device)
        with pytest.raises(CaptureError, match="has 1 SpatialTransformer module.*none ran"):
            with capture(model):
                pass
        plain = nn.Linear(3, 3, device=device)
        with pytest.raises(CaptureError, match="no stnviz SpatialTransformer and made no grid_sample call"):
            with capture(plain):
                plain(torch.rand(1, 3, device=device))
        with capture(plain, allow_empty=True) as rec:
            plain(torch.rand(1, 3, device=device))
        assert len(rec) == 0

    def test_missing_module_lookup(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        with capture(model) as rec:
            model(torch.rand(1, 1, 28, 28, device=device))
        with pytest.raises(CaptureError, match=r"no records for 'body.9'; captured keys: \['transformer'\]"):
            rec.of("body.9")


class CalledOutOfOrder(nn.Module):
    """Two stnviz transformers registered ``a``, ``b`` and called ``b`` then ``a``; with ``mask_first``
    a binary mask is warped before them (an auxiliary sampling, called first)."""

    def __init__(self, mask_first: bool = False):
        super().__init__()
        self.a = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU()), features=12)
        self.b = SpatialTransformer(nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU()), features=12)
        self.mask_first = mask_first

    def forward(self, x):
        if self.mask_first:
            mask = (x > 0.5).to(x.dtype)
            theta = geometry.identity_params("affine").view(1, 2, 3).to(x).expand(x.shape[0], 2, 3)
            F.grid_sample(mask, F.affine_grid(theta, mask.size(), align_corners=False), align_corners=False)
        return self.a(self.b(x))


class TestKeyOrder:
    @pytest.mark.parametrize("mask_first,expected", [
        (False, ["b", "a"]),
        (True, ["CalledOutOfOrder:grid_sample", "b", "a"]),
    ])
    def test_capture_and_collection_order_keys_alike(self, mask_first, expected, device):
        """Both list keys in the order the forward first called them (not registration order, and
        not image warps first)."""
        model = CalledOutOfOrder(mask_first).to(device).eval()
        x = torch.rand(4, 1, 8, 8, device=device)
        with torch.no_grad(), capture(model) as rec:
            model(x)
        col = collect(model, x, batch_size=2)
        assert rec.keys() == expected
        assert col.keys() == rec.keys()
        for role in ("image", "auxiliary"):
            assert col.keys(role) == rec.keys(role) == [k for k in expected if rec.of(k)[0].role == role]
        assert rec.keys("auxiliary") == (["CalledOutOfOrder:grid_sample"] if mask_first else [])

    def test_capture_keys_follow_first_calls_over_forwards(self, device):
        model = CalledOutOfOrder().to(device).eval()
        with torch.no_grad(), capture(model) as rec:
            model.a(torch.rand(1, 1, 8, 8, device=device))  # a submodule on its own first
            model(torch.rand(1, 1, 8, 8, device=device))
        assert rec.keys() == ["a", "b"] and [r.key for r in rec] == ["a", "b", "a"]


#: ``import stnviz; stnviz.capture(model)`` opens a capture whatever was imported before it.
TOP_LEVEL_SCRIPT = """
import sys
{first}
import stnviz
import torch
model = stnviz.get_model("stn_tutorial", device=sys.argv[1]).eval()
with torch.no_grad(), stnviz.capture(model) as rec:
    model(torch.rand(2, 1, 28, 28, device=sys.argv[1]))
import stnviz.capture
from stnviz import capture as verb
from stnviz.capture import Collection, capture, collect
assert stnviz.capture is capture is verb and callable(stnviz.capture), stnviz.capture
assert stnviz.collect is collect and sys.modules["stnviz.capture"].Collection is Collection
print(rec.keys())
"""


@pytest.mark.parametrize("first", ["", "import stnviz.capture", "from stnviz.capture import collect",
                                   "import stnviz.capture.records", "from stnviz.capture.collection import collect_batch"])
def test_top_level_capture_is_the_function(first, device):
    script = TOP_LEVEL_SCRIPT.format(first=first)
    proc = subprocess.run([sys.executable, "-c", script, str(device)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "['transformer']"


def test_capture_is_a_plain_function_and_the_package_a_plain_module():
    import types

    import stnviz

    assert isinstance(stnviz.capture, types.FunctionType)
    assert type(sys.modules["stnviz.capture"]) is types.ModuleType
    assert not hasattr(sys.modules["stnviz.capture"].Capture, "modules")  # the word is ``keys``


class TestCaptureForeign:
    def test_tutorial_net(self, device):
        torch.manual_seed(0)
        net = TutorialNet().to(device).eval()
        x = torch.rand(3, 1, 28, 28, device=device)
        with capture(net) as rec:
            net(x)
        assert len(rec) == 1
        r = rec.last()
        assert r.key == "TutorialNet:grid_sample" and r.module == "TutorialNet" and r.family == "affine"
        expected = torch.tensor([[0.9, 0.1, 0.05], [-0.1, 0.9, 0.0]], device=device).expand(3, 2, 3)
        torch.testing.assert_close(r.theta, expected)
        torch.testing.assert_close(r.output, F.grid_sample(x, F.affine_grid(expected, x.size(), align_corners=False), align_corners=False))
        corners = r.sampled_outline(1)
        torch.testing.assert_close(corners, geometry.sampled_corners(expected, "affine", (28, 28)))

    def test_two_transformers(self, device):
        net = TwoStageNet().to(device)
        with capture(net) as rec:
            net(torch.rand(2, 1, 8, 8, device=device))
        assert len(rec) == 2
        a, b = rec[0], rec[1]
        assert a.theta[0, 0, 0] == 0.5 and b.theta[0, 0, 2] == pytest.approx(0.2)
        assert a.input.shape[1] == 1 and b.input.shape[1] == 2

    def test_grid_without_theta(self, device):
        """A sampler fed a hand-made grid is recorded with params=None and a traced outline."""

        class Raw(nn.Module):
            def forward(self, x):
                grid = geometry.affine_grid(torch.tensor([[[0.5, 0, 0], [0, 0.5, 0]]], device=x.device), (4, 4)).clone()
                return F.grid_sample(x, grid, align_corners=False)

        raw = Raw()
        with capture(raw) as rec:
            raw(torch.rand(1, 1, 8, 8, device=device))
        r = rec.last()
        assert r.params is None and r.theta is None and r.family is None
        outline = r.sampled_outline().cpu()
        # the traced border runs through the output's edge pixel centres: normalised +-0.75 * 0.5
        # = +-0.375, i.e. input pixels (1 - 0.375) * 8 / 2 - 0.5 = 2.0 and (1 + 0.375) * 4 - 0.5 = 5.0
        assert outline[..., 0].min() == pytest.approx(2.0) and outline[..., 0].max() == pytest.approx(5.0)

    def test_foreign_off(self, device):
        net = TutorialNet().to(device)
        with pytest.raises(CaptureError, match="foreign=False"):
            with capture(net, foreign=False):
                net(torch.rand(1, 1, 28, 28, device=device))

    def test_stnviz_model_is_not_double_counted(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        with capture(model, foreign=True) as rec:
            model(torch.rand(1, 1, 28, 28, device=device))
        assert len(rec) == 1 and rec.last().module == "transformer"

    def test_record_type(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.5, 0.1, 0.2, -0.1, 0.6, 0.0]))
        x = torch.rand(1, 1, 28, 28, device=device)
        with capture(model) as rec:
            model(x)
        r = rec.last()
        assert isinstance(r, TransformRecord)
        # what it holds reproduces the sampler's output: the theta that ran, its grid, the warp
        theta = torch.tensor([[[0.5, 0.1, 0.2], [-0.1, 0.6, 0.0]]], device=device)
        torch.testing.assert_close(r.theta, theta)
        torch.testing.assert_close(r.grid, geometry.affine_grid(theta, (28, 28)))
        torch.testing.assert_close(r.input, x)
        torch.testing.assert_close(r.output, geometry.warp(x, geometry.affine_grid(theta, (28, 28))))


# --------------------------------------------------------------------------- issue 18 item 4:
# capture never breaks a forward that works without it


class SamplerCalls(TorchFunctionMode):
    """A user's own mode: counts the grid_sample calls it sees."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.grid_sample:
            self.calls += 1
        return func(*args, **(kwargs or {}))


def _stnviz_modes():
    return [m for m in _get_current_function_mode_stack() if type(m).__module__.startswith("stnviz.capture.")]


def _stnviz_hooks(model):
    hooks = []
    for m in model.modules():
        for d in (m._forward_hooks, m._forward_pre_hooks):
            hooks += [h for h in d.values() if getattr(h, "__module__", "").startswith("stnviz.capture.")]
    return hooks


@dataclasses.dataclass
class ZoomHelper:
    """A plain helper object with eq=True, hence ``__hash__ = None``, that samples."""

    scale: float = 0.5

    def warp(self, x):
        theta = torch.tensor([[self.scale, 0.0, 0.0], [0.0, self.scale, 0.0]], device=x.device).expand(x.shape[0], 2, 3)
        return F.grid_sample(x, F.affine_grid(theta, x.size(), align_corners=False), align_corners=False)


class UnhashableBlock(nn.Module):
    __hash__ = None  # a module class without a hash (torch's named_modules can't walk it)

    def forward(self, x):
        return ZoomHelper(0.8).warp(x)


class HelperNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.helper = ZoomHelper()
        self.block = UnhashableBlock()

    def forward(self, x):
        return self.block(self.helper.warp(x))


class TestCaptureNeverBreaksTheForward:
    def test_unhashable_objects_calling_the_sampler(self, device):
        net = HelperNet()
        x = torch.rand(2, 1, 8, 8, device=device)
        plain = net(x)
        with capture(net) as rec:
            out = net(x)
        assert torch.equal(out, plain)
        assert [r.key for r in rec] == ["HelperNet:grid_sample", "block:grid_sample"]
        assert rec[0].theta[0, 0, 0] == 0.5 and rec[1].theta[0, 0, 0] == pytest.approx(0.8)

    def test_user_mode_entered_inside_the_capture_stays(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        ctx, mine = capture(model), SamplerCalls()
        rec = ctx.__enter__()
        mine.__enter__()
        model(x)
        ctx.__exit__(None, None, None)  # the capture ends first: it takes out its own mode only
        assert _get_current_function_mode_stack() == [mine] and len(rec) == 1
        model(x)
        assert mine.calls == 2 and len(rec) == 1
        mine.__exit__(None, None, None)
        assert _get_current_function_mode_stack() == []

    def test_user_mode_exited_inside_the_capture_is_gone(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        mine = SamplerCalls()
        mine.__enter__()
        with capture(model) as rec:
            model(x)
            mine.__exit__(None, None, None)  # the user's mode ends first: it pops itself, not the capture
            model(x)
            assert mine.calls == 1 and len(rec) == 2
        assert _get_current_function_mode_stack() == []

    def test_torch_device_context_in_any_order(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        with capture(model) as rec, torch.device(device):
            model(x)
        with torch.device(device), capture(model) as rec2:
            model(x)
        assert len(rec) == len(rec2) == 1 and _get_current_function_mode_stack() == []

    def test_dropped_capture_is_cleaned_up(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        ctx = capture(model)
        ctx.__enter__()
        del ctx
        gc.collect()

        def frames():
            with capture(model) as rec:
                for _ in range(3):
                    model(x)
                    yield rec

        g = frames()
        next(g)
        del g
        gc.collect()
        assert _stnviz_modes() == [] and _stnviz_hooks(model) == []
        model(x)

    def test_dropped_capture_leaves_the_users_mode(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        ctx = capture(model)
        ctx.__enter__()
        with SamplerCalls() as mine:
            del ctx
            gc.collect()  # the capture is closed while the user's mode is on top of its own
            assert _get_current_function_mode_stack() == [mine] and _stnviz_hooks(model) == []
            model(x)
        assert mine.calls == 1 and _get_current_function_mode_stack() == []

    def test_capture_collected_in_another_thread(self, device):
        """A capture dropped in a worker and garbage-collected by the main thread: its hooks go at
        once; its mode, on the worker's own stack, passes calls on and goes with the worker's next
        capture."""
        model = get_model("stn_tutorial", device=device).eval()
        x = torch.rand(1, 1, 28, 28, device=device)
        held, collected, seen = [], threading.Event(), {}

        def worker():
            ctx = capture(model)
            ctx.__enter__()
            held.append(ctx)
            del ctx
            collected.wait(30)
            seen["passes"] = model(x).shape
            with capture(model) as rec:
                model(x)
            seen["records"] = len(rec)
            seen["modes"] = _stnviz_modes()

        t = threading.Thread(target=worker)
        t.start()
        while not held and t.is_alive():
            time.sleep(0.01)
        held.clear()
        gc.collect()
        assert _stnviz_hooks(model) == []
        collected.set()
        t.join(60)
        assert seen == {"passes": (1, 10), "records": 1, "modes": []}

    def test_a_call_that_cannot_be_recorded_is_left_out(self):
        """On the meta device a forward runs but nothing can be copied: the forwards return their
        own results, one warning names the call, ``skipped`` counts them."""
        torch.manual_seed(0)
        net = TutorialNet().to("meta")
        x = torch.rand(2, 1, 28, 28, device="meta")
        with pytest.warns(CaptureWarning, match=r"could not record a grid_sample call in 'TutorialNet' \(NotImplementedError") as caught:
            with capture(net, allow_empty=True) as rec:
                outs = [net(x) for _ in range(3)]
        assert len(caught) == 1
        assert all(o.shape == (2, 10) and o.device.type == "meta" for o in outs)
        assert len(rec) == 0 and rec.skipped == 3 and "skipped=3" in repr(rec)
        with pytest.warns(CaptureWarning), pytest.raises(CaptureError, match=r"1 call\(s\) could not be recorded"):
            with capture(net):
                net(x)

    def test_grid_generator_called_by_keyword(self, device):
        class KeywordCall(nn.Module):
            def __init__(self):
                super().__init__()
                self.generator = GridGenerator("affine")

            def forward(self, x):
                flat = torch.tensor([[0.5, 0.0, 0.1, 0.0, 0.5, 0.0]], device=x.device).expand(x.shape[0], 6)
                grid = self.generator(params=flat, size=x.shape[-2:])
                return F.grid_sample(x, grid, align_corners=False)

        net = KeywordCall()
        x = torch.rand(2, 1, 8, 8, device=device)
        plain = net(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with capture(net) as rec:
                out = net(x)
        assert torch.equal(out, plain) and rec.skipped == 0
        r = rec.last()
        assert r.family == "affine" and r.theta[0, 0, 2] == pytest.approx(0.1)


# --------------------------------------------------------------------------- issue 20 items 3, 4, 5, 7:
# keys that never collide, warnings at the user's line, honest theta, memory in bytes, overhead


class Queried(nn.Module):
    """Features made once, then queried through ``query`` (LIIF) or glimpsed through ``guide``
    (a Pyro guide): sampler calls made outside ``forward``."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(1, 2, 3, padding=1)

    def gen_feat(self, x):
        self.feat = self.encoder(x)

    def query(self, coord):  # (B, Q, 2) -> (B, C, 1, Q)
        return F.grid_sample(self.feat, coord.unsqueeze(1), align_corners=False)

    def guide(self, x, steps=3):
        for _ in range(steps):
            x = F.grid_sample(x, F.affine_grid(ZOOM.expand(x.shape[0], 2, 3).to(x), x.size(), align_corners=False),
                              align_corners=False)
        return x


ZOOM = torch.tensor([[[0.8, 0.0, 0.1], [0.0, 0.8, 0.0]]])


class TestKeysNeverCollide:
    def test_queries_through_a_method_each_get_their_own_key(self, device):
        model = Queried().to(device)
        x = torch.rand(2, 1, 8, 8, device=device)
        with torch.no_grad(), capture(model) as rec:
            model.gen_feat(x)
            for _ in range(4):
                model.query(torch.rand(2, 5, 2, device=device) * 2 - 1)
        assert [r.key for r in rec] == ["Queried.query:grid_sample"] + [f"Queried.query:grid_sample#{k}" for k in (1, 2, 3)]

    def test_steps_of_a_guide_and_guides_called_again(self, device):
        model = Queried().to(device)
        x = torch.rand(2, 1, 8, 8, device=device)
        with torch.no_grad(), capture(model) as rec:
            model.guide(x)
            model.guide(x)
        keys = [r.key for r in rec]
        assert keys == ["Queried.guide:grid_sample"] + [f"Queried.guide:grid_sample#{k}" for k in range(1, 6)]
        assert all(r.family == "affine" for r in rec)

    def test_a_forward_starts_a_new_pass(self, device):
        net = TutorialNet().to(device)
        x = torch.rand(2, 1, 28, 28, device=device)
        with torch.no_grad(), capture(net) as rec:
            net(x)
            net(x)
        assert [r.key for r in rec] == ["TutorialNet:grid_sample"] * 2  # a helper method called from forward is forward


class TestWarningsAndTheta:
    def test_torch_warnings_point_at_the_users_line(self, device):
        class Defaults(nn.Module):
            def forward(self, x):
                grid = F.affine_grid(ZOOM.expand(x.shape[0], 2, 3).to(x), x.size())  # align_corners not given
                return F.grid_sample(x, grid)

        net = Defaults().to(device)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            with torch.no_grad(), capture(net):
                net(torch.rand(1, 1, 8, 8, device=device))
        assert len(w) == 2 and all("align_corners" in str(x.message) for x in w)
        assert {x.filename for x in w} == {__file__}

    def test_a_grid_changed_in_place_keeps_no_stale_theta(self, device):
        class FlowOnAffine(nn.Module):
            def forward(self, x):
                grid = F.affine_grid(ZOOM.expand(x.shape[0], 2, 3).to(x), x.size(), align_corners=False)
                grid += 0.2  # flow code: a residual flow added in place
                return F.grid_sample(x, grid, align_corners=False)

        net = FlowOnAffine().to(device)
        with torch.no_grad(), capture(net) as rec:
            net(torch.rand(2, 1, 8, 8, device=device))
        r = rec.last()
        assert r.family is None and r.theta is None and r.params is None
        pixel = r.pixel_grid()
        torch.testing.assert_close(r.sampled_outline(2)[:, 0], pixel[:, 0, 0])  # the outline comes from the grid

    def test_a_wrapped_sampler_is_recognised(self, device, monkeypatch):
        """A tracing tool's wrapper that dispatches torch functions itself (as TorchLens' decorated
        functions do), bound in the model's code: the mode sees the wrapper, not ``F.grid_sample``."""
        from torch.overrides import handle_torch_function, has_torch_function

        orig = F.grid_sample

        @functools.wraps(orig)
        def traced(input, grid, *args, **kwargs):
            if has_torch_function((input, grid)):
                return handle_torch_function(traced, (input, grid), input, grid, *args, **kwargs)
            return orig(input, grid, *args, **kwargs)

        class UsesTraced(nn.Module):
            def forward(self, x):
                return traced(x, F.affine_grid(ZOOM.expand(x.shape[0], 2, 3).to(x), x.size(), align_corners=False),
                              align_corners=False)

        net = UsesTraced().to(device)
        with torch.no_grad(), capture(net) as rec:
            net(torch.rand(2, 1, 8, 8, device=device))
        assert rec.keys() == ["UsesTraced:grid_sample"] and rec.last().family == "affine"
        monkeypatch.setattr(F, "grid_sample", functools.wraps(orig)(lambda *a, **k: orig(*a, **k)))  # installed in torch
        tutorial = TutorialNet().to(device)
        with torch.no_grad(), capture(tutorial) as rec:
            tutorial(torch.rand(2, 1, 28, 28, device=device))
        assert rec.keys() == ["TutorialNet:grid_sample"] and rec.last().family == "affine"


class LookupPyramid(nn.Module):
    """A correlation volume (batch = pixels x images) looked up ``iters`` times, and an image
    warped once: the volume is one tensor sampled many times."""

    def __init__(self, iters=3):
        super().__init__()
        self.iters = iters

    def forward(self, x):
        b, _, h, w = x.shape
        corr = torch.rand(b * h * w, 1, h, w, device=x.device)
        for i in range(self.iters):
            F.grid_sample(corr, torch.rand(b * h * w, 3, 3, 2, device=x.device) * 2 - 1, align_corners=True)
        return F.grid_sample(x, torch.rand(b, h, w, 2, device=x.device) * 2 - 1, align_corners=True)


class TestMemoryInBytes:
    def test_records_sampling_one_tensor_share_one_copy(self, device):
        net = LookupPyramid().to(device)
        with torch.no_grad(), capture(net) as rec:
            net(torch.rand(2, 1, 6, 6, device=device))
        lookups = rec[:3]
        assert len({r.input.untyped_storage().data_ptr() for r in lookups}) == 1
        corr, grids = lookups[0].input, sum(r.grid.nbytes + r.output.nbytes for r in lookups)
        image = rec.last()
        assert rec.kept_bytes == corr.nbytes + grids + image.input.nbytes + image.grid.nbytes + image.output.nbytes

    def test_oldest_records_dropped_to_stay_under_the_budget(self, device):
        net = LookupPyramid(iters=6).to(device)
        x = torch.rand(2, 1, 6, 6, device=device)
        with torch.no_grad(), capture(net, max_bytes=None) as full:
            net(x)
        budget = full.kept_bytes // 2
        with torch.no_grad(), capture(net, max_bytes=budget) as rec:
            net(x)
        assert 0 < len(rec) < len(full) and rec.dropped == len(full) - len(rec)
        assert rec.kept_bytes <= budget and rec.last().input.shape == x.shape
        assert f"dropped={rec.dropped}" in repr(rec)
        with pytest.raises(ValueError, match="max_bytes must be a positive number of bytes or None, got 0"):
            with capture(net, max_bytes=0):
                pass

    def test_batch_slice_cuts_images_of_a_pixels_by_images_batch(self, device):
        net = LookupPyramid(iters=1).to(device)
        x = torch.rand(3, 1, 4, 5, device=device)
        torch.manual_seed(0)
        with torch.no_grad(), capture(net) as full:
            net(x)
        torch.manual_seed(0)
        with torch.no_grad(), capture(net, batch_slice=slice(1, 2)) as cut:
            net(x)
        lookup, whole = cut[0], full[0]
        assert lookup.input.shape[0] == lookup.grid.shape[0] == 4 * 5  # the pixels of image 1
        torch.testing.assert_close(lookup.grid, whole.grid[20:40])
        torch.testing.assert_close(lookup.output, whole.output[20:40])
        assert cut.last().input.shape[0] == 1
        torch.testing.assert_close(cut.last().input, x[1:2].cpu() if full.last().input.device.type == "cpu" else x[1:2])


class TestOverhead:
    def test_grids_are_forgotten_with_them_and_many_stay_correct(self, device):
        class ManyGrids(nn.Module):
            def forward(self, x):
                grids = [F.affine_grid((ZOOM * (1 + i / 1000)).expand(x.shape[0], 2, 3).to(x), x.size(),
                                       align_corners=False) for i in range(600)]
                return [F.grid_sample(x, g, align_corners=False) for g in grids[::100]]

        net = ManyGrids().to(device)
        with torch.no_grad(), capture(net, keep_last=None) as rec:
            net(torch.rand(1, 1, 4, 4, device=device))
            from stnviz.capture._mode import _local
            session = _local.dispatcher.sessions[-1]
            assert len(session.grids) == 0  # every grid is gone, and its entry with it
        assert len(rec) == 6
        for i, r in zip(range(0, 600, 100), rec):
            torch.testing.assert_close(r.theta, (ZOOM * (1 + i / 1000)).cpu().to(r.theta.dtype))

    def test_interception_only_while_the_model_runs(self, device):
        seen = []

        class Probe(nn.Module):
            def forward(self, x):
                seen.append(len(_stnviz_modes()))
                return x

        class WithProbe(Queried):
            def __init__(self):
                super().__init__()
                self.probe = Probe()

            def forward(self, x):
                return self.guide(self.probe(x), steps=1)

        model = WithProbe().to(device)
        x = torch.rand(2, 1, 8, 8, device=device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with capture(model) as rec:
            model.gen_feat(x)
            (model(x).sum() + model.feat.sum()).backward()
            assert _stnviz_modes() == []  # an optimizer step, a loss: no torch call goes through Python
            opt.step()
            model.probe(x)  # a submodule on its own
            model.query(torch.zeros(2, 3, 2, device=device))  # a method other than forward
            del model.feat  # (a non-leaf tensor can't be deep-copied)
            assert "query" in model.__dict__ and copy.deepcopy(model).query.__func__ is Queried.query
        assert seen == [1, 1] and _stnviz_modes() == [] and "query" not in model.__dict__
        assert [r.key for r in rec] == ["WithProbe:grid_sample", "WithProbe.query:grid_sample"]
