"""stnviz.diagnose.DiagnoseCallback: the figures over training, and the dynamic checks
``exploding`` and ``collapsing`` warned once, early, with the step; a healthy run warns of neither."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stnviz
from stnviz.data import sample
from stnviz.diagnose import DiagnoseCallback, MonitorWarning, localisation_params
from stnviz.diagnose.checks import ZOOM_OUT


@pytest.fixture(scope="module")
def digits():
    return sample("mnist").subset(torch.arange(256))


def _fit(model, data, monitor, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stnviz.fit(model, data, epochs=1, batch_size=32, device=next(model.parameters()).device, progress=False,
                   callbacks=[monitor], **kwargs)
    return [w for w in caught if issubclass(w.category, MonitorWarning)]


class ForeignSTN(nn.Module):
    """Plain torch: theta = identity + gain * head(features), the classifier after the sampler."""

    def __init__(self, gain: float):
        super().__init__()
        self.gain = gain
        self.loc = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 16), nn.ReLU(), nn.Linear(16, 6))
        self.cls = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))

    def forward(self, x):
        eye = torch.eye(2, 3, device=x.device).flatten()
        theta = (eye + self.gain * self.loc(x)).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=False)
        return self.cls(F.grid_sample(x, grid, align_corners=False))


class TestHealthy:
    def test_no_warning_and_a_history(self, digits, device):
        torch.manual_seed(0)
        model = stnviz.get_model("stn_tutorial", device=device)
        monitor = DiagnoseCallback(digits.get(torch.arange(32)).images, every=2)
        caught = _fit(model, digits, monitor)
        assert not caught and monitor.findings == []
        frame = monitor.to_frame()
        assert frame.step.tolist() == [0, 2, 4, 6, 8]  # once at the start, then every 2 of the 8 steps
        assert set(frame.key) == {"transformer"}
        assert frame.area.between(0.9, 1.1).all() and frame.theta_norm.iloc[0] == pytest.approx(2 ** 0.5, abs=1e-4)
        grads = frame[frame.step > 0]  # fit calls back after backward: the gradients are there
        assert (grads.grad_loc > 0).all() and (grads.grad_rest > 0).all()
        assert monitor.diagnosis is not None and "transformer" in monitor.diagnosis.figures


class TestCollapsing:
    def test_a_loss_that_rewards_zoom_out_is_caught_before_zoom_out(self, digits, device):
        """Any loop: a loss that pays for a larger scale grows the region a little every step."""
        torch.manual_seed(0)
        model = stnviz.get_model("stn_tutorial", device=device)
        st = model.transformers[0]
        opt = torch.optim.SGD(st.parameters(), lr=0.01)
        images = digits.get(torch.arange(16)).images.to(device)
        monitor = DiagnoseCallback(images, every=2)
        with pytest.warns(MonitorWarning, match=r"step \d+: collapsing on 'transformer'") as caught:
            for step in range(30):
                theta = st.predict_params(images)
                loss = -(theta[:, 0] + theta[:, 4]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % monitor.every == 0:
                    monitor.update(model, step)
        assert len([w for w in caught if "collapsing" in str(w.message)]) == 1  # once
        (found,) = monitor.findings
        assert found.check == "collapsing" and found.severity == "warning"
        assert 1.05 < found.value < ZOOM_OUT[0]  # early: before the zoom_out check would warn
        assert monitor.to_frame().area.iloc[-1] > ZOOM_OUT[0]  # and the run went on to zoom out
        assert f"{found.value:.2f}" in found.message and "normalise inside the model" in found.fix


class TestExploding:
    def test_a_huge_localisation_lr_is_caught_by_theta(self, digits, device):
        torch.manual_seed(0)
        model = stnviz.get_model("stn_tutorial", device=device)
        monitor = DiagnoseCallback(digits.get(torch.arange(32)).images, every=2)
        caught = _fit(model, digits, monitor, loc_lr=10.0)
        exploding = [f for f in monitor.findings if f.check == "exploding"]
        assert len(exploding) == 1 and exploding[0].step <= 4  # of 8 steps
        assert exploding[0].severity == "error" and exploding[0].value > 3
        assert sum("exploding" in str(w.message) for w in caught) == 1
        assert "loc_lr" in exploding[0].fix

    def test_a_localisation_gradient_far_above_the_classifier_is_caught(self, digits, device):
        torch.manual_seed(0)
        model = ForeignSTN(gain=50.0).to(device)
        batch = digits.get(torch.arange(32))
        images, labels = batch.images.to(device), batch.labels.to(device)
        monitor = DiagnoseCallback(images, every=1)
        monitor.update(model, 0)  # no gradients yet: figures only
        F.cross_entropy(model(images), labels).backward()
        with pytest.warns(MonitorWarning, match="step 1: exploding"):
            monitor.update(model, 1)
        (found,) = [f for f in monitor.findings if f.check == "exploding"]
        row = monitor.to_frame().iloc[-1]
        assert found.value == pytest.approx(row.grad_loc / row.grad_rest) and found.value > 30
        assert found.step == 1 and f"{found.value:.1f}x" in found.message


class TestLocalisationParams:
    def test_foreign_code(self, device):
        model = ForeignSTN(gain=1.0).to(device)
        (names,) = localisation_params(model, torch.rand(2, 1, 28, 28, device=device))
        assert names == {"loc.1.weight", "loc.1.bias", "loc.3.weight", "loc.3.bias"}


class TestBadInput:
    def test_probe_must_be_a_batch(self):
        with pytest.raises(ValueError, match=r"probe images must be a batch \(N, C, H, W\).*got \(1, 28, 28\)"):
            DiagnoseCallback(torch.rand(1, 28, 28))

    def test_every(self):
        with pytest.raises(ValueError, match="every must be an int >= 1, got 0"):
            DiagnoseCallback(torch.rand(2, 1, 28, 28), every=0)


class TestDivergedPointsHere:
    def test_the_divergence_message_names_the_monitor(self, digits, device):
        from stnviz.train import TrainingDiverged

        torch.manual_seed(0)
        model = stnviz.get_model("stn_tutorial", device=device)
        with pytest.raises(TrainingDiverged, match=r"diverged at step .*stnviz\.diagnose\.DiagnoseCallback"):
            stnviz.fit(model, digits.subset(torch.arange(32)), epochs=1, batch_size=16, lr=1e30, device=device,
                       progress=False)
