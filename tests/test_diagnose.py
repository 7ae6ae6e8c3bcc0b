"""stnviz.diagnose: every broken zoo model caught by its check, every shipped model's findings as
found (and why they are true), bad input, the table, the HTML view and the figure."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import stnviz
from stnviz.data import distorted_test_set, sample
from stnviz.diagnose import CHECKS, Diagnosis, diagnose

from diagnose_zoo import ZOO, healthy

LOOK = Path("/tmp/look")


@pytest.fixture(scope="module")
def digits():
    return sample("mnist").get(torch.arange(64))


def _names_figure(text: str, value: float) -> bool:
    """Whether ``text`` states ``value`` in one of the ways the checks write figures."""
    forms = {f"{value:.2f}", f"{value:.3f}", f"{value:.4f}", f"{value:.0%}", f"{value * 100:.1f}"}
    return any(f in text for f in forms)


class TestZoo:
    def test_one_case_per_check(self):
        assert set(ZOO) == set(CHECKS)

    @pytest.mark.parametrize("check", list(ZOO))
    def test_caught_by_its_check(self, check, digits, device):
        model = ZOO[check](device)
        d = diagnose(model, digits.images, digits.labels)
        found = [f for f in d.findings if f.check == check and f.severity in ("warning", "error")]
        assert found, f"{check} not reported: {d}"
        for f in found:
            assert _names_figure(f.message, f.value), (f.message, f.value)
            assert _names_figure(f.fix, f.value), (f.fix, f.value)
            assert f.fix and f.threshold == f.threshold  # a remedy and a threshold (not NaN)

    def test_healthy_is_clean(self, digits, device):
        d = diagnose(healthy(device), digits.images)
        assert d.ok, d
        assert repr(d).startswith("Diagnosis(no problem found: ")
        assert "area" in repr(d) and "spread_px" in repr(d)
        assert "no problem found" in d._repr_html_()


def _shipped_batch(name: str):
    tag = name.split(".")[1]
    if tag.startswith("gtsrb"):
        return sample("gtsrb").get(torch.arange(0, 600, 2))  # 300 frames spanning all 20 tracks
    if tag == "mnist":
        return sample("mnist").get(torch.arange(256))
    kind = {"mnist_rts": "rts", "mnist_rts_upright": "rts", "mnist_rotated": "rotated", "mnist_elastic": "elastic"}[tag]
    return distorted_test_set(sample("mnist"), kind).get(torch.arange(256))


# Each shipped checkpoint on its own data, with labels. What is reported is true:
# * stn_gtsrb.gtsrb's first transformer crops every sign alike (scale ~0.96, the model card says it
#   stays close to the identity): its grid moves 0.08 px between frames (input_independent), and
#   swapping it for the identity costs no accuracy on the 300 frames (no_effect).
# * stn_gtsrb.gtsrb_loc's first transformer finds the sign, but the classifier, fine-tuned on the
#   plain frames with the transformers frozen, reads the uncropped frames as well (no_effect: 0 points).
# * stn_tutorial.mnist samples 1.44x the input's area (1.2x its side) on plain MNIST: the mild
#   zoom-out of the PyTorch tutorial's recipe (zoom_out warning); 31% of its grid reads padding.
# The RTS, rotated and elastic models need their transformers (2-52 accuracy points) and are clean.
SHIPPED = {
    "stn_cnn.mnist_rts": set(),
    "stn_cnn.mnist_rts_upright": set(),
    "stn_fcn.mnist_rotated": set(),
    "stn_fcn_tps.mnist_elastic": set(),
    "stn_gtsrb.gtsrb": {("input_independent", "transformer"), ("no_effect", "transformer")},
    "stn_gtsrb.gtsrb_loc": {("no_effect", "transformer")},
    "stn_tutorial.mnist": {("zoom_out", "transformer")},
}


class TestShipped:
    def test_every_shipped_transformer_is_listed(self):
        names = {n for n in stnviz.list_models(pretrained=True) if n.startswith("stn")}
        assert names == set(SHIPPED)

    @pytest.mark.parametrize("name", list(SHIPPED))
    def test_findings(self, name, device):
        data = _shipped_batch(name)
        d = diagnose(stnviz.load_pretrained(name, device=device), data.images, data.labels)
        assert {(f.check, f.key) for f in d.problems} == SHIPPED[name], d
        assert all(f.severity == "warning" for f in d.problems)
        for f in d.problems:
            assert _names_figure(f.message, f.value) and _names_figure(f.fix, f.value)

    def test_no_effect_sees_a_needed_transformer(self, device):
        data = _shipped_batch("stn_cnn.mnist_rts")
        d = diagnose(stnviz.load_pretrained("stn_cnn.mnist_rts", device=device), data.images, data.labels)
        (f,) = d.of("no_effect")
        assert f.severity == "ok" and f.value > 0.2  # 99% with it, ~61% with the identity grid
        assert d.figures["transformer"]["accuracy"] - d.figures["transformer"]["accuracy_identity"] == pytest.approx(f.value)


class TestBadInput:
    def test_no_sampler_call(self, digits, device):
        with pytest.raises(ValueError, match=r"expected at least one sampler call in Sequential's forward .* got none"):
            diagnose(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to(device), digits.images)

    def test_not_a_batch(self, digits, device):
        with pytest.raises(ValueError, match=r"images must be a batch \(B, C, H, W\), got shape \(1, 28, 28\)"):
            diagnose(healthy(device), digits.images[0])

    def test_shape_the_model_refuses(self, digits, device):
        with pytest.raises(ValueError, match="built for 42x42 images, got 28x28"):
            diagnose(stnviz.load_pretrained("stn_cnn.mnist_rts", device=device), digits.images)

    def test_foreign_shape_error_becomes_a_value_error(self, device):
        with pytest.raises(ValueError, match=r"could not run on images of shape \(2, 1, 20, 20\)"):
            model = healthy(device)
            model.head = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).to(device)  # needs 784 features
            diagnose(model, torch.rand(2, 1, 20, 20))

    def test_labels_of_another_length(self, digits, device):
        with pytest.raises(ValueError, match="one entry per image: expected 64, got 10"):
            diagnose(healthy(device), digits.images, digits.labels[:10])

    def test_output_without_class_scores(self, digits, device):
        model = ZOO["identity"](device)
        with pytest.raises(ValueError, match=r"pass predict="):
            diagnose(model, digits.images, digits.labels, forward=lambda m, x: m(x)[:, 0])


@pytest.fixture(scope="module")
def zoom_out(digits, device):
    return diagnose(ZOO["zoom_out"](device), digits.images, digits.labels)


class TestDiagnosis:

    def test_model_state_is_kept(self, digits, device):
        model = healthy(device).train()
        diagnose(model, digits.images)
        assert model.training

    def test_to_frame(self, zoom_out):
        frame = zoom_out.to_frame()
        assert list(frame.columns) == ["check", "key", "severity", "value", "threshold", "message", "fix", "samples"]
        assert len(frame) == len(CHECKS)  # one record, every check
        assert frame["severity"].iloc[0] == "error" and frame["check"].iloc[0] == "zoom_out"
        assert frame.set_index("check").loc["zoom_out", "samples"] == 64

    def test_html_worst_first_healthy_folded(self, zoom_out):
        page = zoom_out._repr_html_()
        worst, warning = page.index("<code>zoom_out</code>"), page.index("<code>outside_image</code>")
        assert worst < warning < page.index("<details>") < page.index("<code>fold</code>")
        assert "healthy checks</summary>" in page

    def test_worst_and_repr(self, zoom_out):
        assert zoom_out.worst == "error" and not zoom_out.ok
        assert repr(zoom_out).startswith("Diagnosis(1 error, ") and "zoom_out" in repr(zoom_out)
        assert [f.check for f in zoom_out.problems][0] == "zoom_out"

    def test_of_names_what_exists(self, zoom_out):
        with pytest.raises(ValueError, match="no finding for check 'zoom'; checks run: .*zoom_out"):
            zoom_out.of("zoom")

    def test_plot_shows_offending_samples(self, zoom_out):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig = zoom_out.plot("zoom_out", n=3)
        assert len([ax for ax in fig.axes if ax.images]) == 6  # 3 rows: input + region | output
        assert "zoom_out" in fig._suptitle.get_text() and "3.24x" in fig._suptitle.get_text()
        LOOK.mkdir(parents=True, exist_ok=True)
        fig.savefig(LOOK / "diagnose_zoom_out.png", dpi=80)
        plt.close(fig)

    def test_plot_refuses_a_clean_check(self, zoom_out):
        with pytest.raises(ValueError, match="found no offending sample"):
            zoom_out.plot("fold")

    def test_top_level_verb(self):
        assert stnviz.diagnose is diagnose and stnviz.Diagnosis is Diagnosis


def test_thresholds_are_documented():
    """Every check but no_effect has its function in the table; no_effect's value is a drop in accuracy."""
    from stnviz.diagnose import checks

    assert list(CHECKS) == ["zoom_out", "outside_image", "over_zoom", "input_independent", "identity", "degenerate",
                            "fold", "stacked_warps", "align_corners_mismatch", "padding_not_background",
                            "low_precision_grid", "non_finite", "no_effect"]
    assert all(fn.__module__ == checks.__name__ for fn in CHECKS.values() if fn is not None)
    assert not math.isnan(checks.no_effect("k", 1.0, 0.5, 10).value)
