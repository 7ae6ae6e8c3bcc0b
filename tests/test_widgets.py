import math

import numpy as np
import pytest
import torch

from stnviz import geometry, get_model
from stnviz.data import sample
from stnviz.widgets import STNInspector, ThetaExplorer


@pytest.fixture(scope="module")
def digits():
    return sample("mnist").get(torch.arange(4)).images


class TestThetaExplorer:
    def test_decomposed_and_entries_stay_in_sync(self, digits):
        ex = ThetaExplorer(digits)
        before = ex.input_view.value, ex.output_view.value
        ex.parts["rotation"].value = 30
        c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
        np.testing.assert_allclose(ex.params, [c, -s, 0, s, c, 0], atol=1e-12)  # exact, not slider-rounded
        # the entry sliders show it, snapped to their 0.01 step
        assert [e.value for e in ex.entries] == [0.87, -0.5, 0.0, 0.5, 0.87, 0.0]
        assert ex.input_view.value != before[0] and ex.output_view.value != before[1]
        ex.entries[0].value = 0.5  # entries -> decomposed: only a11 changes
        np.testing.assert_allclose(ex.params, [0.5, -s, 0, s, c, 0], atol=1e-12)
        parts = geometry.decompose_affine(torch.tensor(ex.params).view(1, 2, 3))
        assert ex.parts["scale_x"].value == pytest.approx(float(parts.scale_x), abs=0.005)
        assert ex.parts["rotation"].value == pytest.approx(math.degrees(float(parts.rotation)), abs=0.5)

    def test_browser_echo_of_snapped_values_does_not_drift(self, digits):
        """The front end snaps pushed values to the step and sends them back: that must not move theta."""
        ex = ThetaExplorer(digits)
        ex.parts["rotation"].value = 1.0
        exact = ex.params.copy()
        for _ in range(5):  # echo every slider's (already snapped) value back, as the browser does
            for sl in list(ex.entries) + list(ex.parts.values()):
                sl.value = round(round(sl.value / sl.step) * sl.step, 10)
        np.testing.assert_allclose(ex.params, exact, atol=1e-12)
        parts = geometry.decompose_affine(torch.tensor(ex.params).view(1, 2, 3))
        assert float(parts.scale_x) == pytest.approx(1.0, abs=1e-12) and math.degrees(float(parts.rotation)) == pytest.approx(1.0)

    def test_output_matches_geometry(self, digits):
        ex = ThetaExplorer(digits, scale=1)
        theta = [0.5, 0.0, 0.0, 0.0, 0.5, 0.0]
        ex.set_params(theta)
        from PIL import Image
        import io

        shown = np.asarray(Image.open(io.BytesIO(ex.output_view.value)))[..., 0] / 255
        expected = geometry.warp(digits[:1], geometry.affine_grid(torch.tensor(theta).view(1, 2, 3), (28, 28)))[0, 0]
        np.testing.assert_allclose(shown, expected.numpy(), atol=1 / 255 + 1e-6)

    def test_presets(self, digits):
        model = get_model("stn_tutorial").eval()
        model.transformers[0].set_constant_params(torch.tensor([0.8, 0.1, 0.0, -0.1, 0.8, 0.2]))
        ex = ThetaExplorer(digits, model=model)
        ex.use_learned()
        np.testing.assert_allclose(ex.params, [0.8, 0.1, 0.0, -0.1, 0.8, 0.2], atol=1e-6)
        assert ex.entries[5].value == pytest.approx(0.2)
        ex.buttons["identity"].click()
        np.testing.assert_allclose(ex.params, [1, 0, 0, 0, 1, 0])
        ex.picker.value = 2
        ex.buttons["learned"].click()
        assert ex.params[0] == pytest.approx(0.8)
        ex.buttons["reset"].click()
        np.testing.assert_allclose(ex.params, [1, 0, 0, 0, 1, 0])

    def test_degenerate_inputs_show_messages(self, digits):
        ex = ThetaExplorer(digits)
        ex.set_params([0, 0, 0, 0, 0, 0])
        assert "singular" in ex.message.value
        ex.set_params([1, 0, 5, 0, 1, 5])
        assert "entirely outside" in ex.message.value
        ex.set_params([float("nan"), 0, 0, 0, 1, 0])
        assert "cannot sample" in ex.message.value and "finite" in ex.message.value
        ex.set_params([1, 0, 0, 0, 1, 0])  # and it recovers
        assert ex.message.value == ""

    def test_callback_exception_goes_to_output_area(self, digits, monkeypatch):
        ex = ThetaExplorer(digits)

        def boom():
            raise RuntimeError("render exploded")

        monkeypatch.setattr(ex, "update", boom)
        ex.parts["shear"].value = 0.3  # must not raise out of the callback
        assert "render exploded" in ex.message.value
        assert any("render exploded" in o.get("text", "") for o in ex.log.outputs)

    def test_projective_and_tps(self, digits):
        ep = ThetaExplorer(digits, family="projective")
        assert len(ep.entries) == 8
        before = ep.output_view.value
        ep.entries[6].value = 0.4
        assert ep.output_view.value != before and ep.params[6] == pytest.approx(0.4)
        et = ThetaExplorer(digits, family="tps", control_points=9)
        et.point.value = 4  # the centre point
        assert et.entries[0].value == pytest.approx(0.0)
        before = et.output_view.value
        et.entries[0].value = 0.3
        assert et.params[8] == pytest.approx(0.3) and et.output_view.value != before
        et.point.value = 0
        assert (et.entries[0].value, et.entries[1].value) == (-1.0, -1.0)

    def test_bad_arguments(self, digits):
        with pytest.raises(ValueError, match="family must be 'affine', 'projective' or 'tps', got 'swirl'"):
            ThetaExplorer(digits, family="swirl")
        with pytest.raises(ValueError, match="images must be"):
            ThetaExplorer([1, 2, 3])
        ex = ThetaExplorer(digits)
        with pytest.raises(ValueError, match="takes 6 parameters, got 4"):
            ex.set_params([1, 0, 0, 1])
        with pytest.raises(ValueError, match="needs one"):
            ex.learned_params()

    def test_colour_images_use_jpeg(self):
        ex = ThetaExplorer(torch.rand(2, 3, 40, 40))
        assert ex.input_view.format == "jpeg" and ex.input_view.value[:2] == b"\xff\xd8"


class TestSTNInspector:
    def test_browse(self):
        model = get_model("stn_gtsrb").eval()
        s = sample("gtsrb")
        sub = s.subset(torch.arange(6))
        ins = STNInspector(model, sub)
        assert list(ins.records) == ["transformer", "body.1"]
        assert "prediction" in ins.info.value and "true" in ins.info.value
        assert "body.1" in ins.table.value and "rotation_deg" in ins.table.value
        before = ins.input_view.value
        ins.picker.value = 5
        assert ins.input_view.value != before
        ins.which.value = "body.1"  # feature-map transformer: grey view of 32 channels
        assert ins.input_view.format == "png"
        assert len(ins.predictions) == 6

    def test_table_per_image(self):
        model = get_model("stn_tutorial").eval()
        imgs = sample("mnist").subset(torch.arange(5))
        ins = STNInspector(model, imgs, batch_size=2)  # records split over batches
        t = ins.theta_table(4)
        assert len(t) == 1 and t.loc[0, "scale_x"] == pytest.approx(1.0)


class TestTrainingPlayer:
    def test_scrub(self):
        from stnviz.animate import ProgressRecorder

        model = get_model("stn_tutorial").eval()
        rec = ProgressRecorder(sample("mnist").get(torch.arange(4)).images, every=1)
        rec.record(model, 0)
        model.transformers[0].set_constant_params(torch.tensor([0.6, 0, 0, 0, 0.6, 0]))
        rec.record(model, 10, 1.0)
        from stnviz.widgets import TrainingPlayer

        p = TrainingPlayer(rec)
        first = p.view.value
        p.slider.value = 1
        assert p.view.value != first and "step 10" in p.caption.value
        p.slider.value = 0
        assert p.view.value == first  # cached frames
        with pytest.raises(ValueError, match="holds none"):
            TrainingPlayer(ProgressRecorder(torch.rand(1, 1, 8, 8)))


class TestStabilityViewer:
    def test_tracks_and_frames(self):
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer

        model = get_model("stn_gtsrb").eval()
        v = StabilityViewer(model, sample_tracks()[:2])
        assert v.frame.max == 29 and "IoU with box" in v.info.value
        plots, before = v.plots.value, v.input_view.value
        assert plots[:4] == b"\x89PNG"
        v.frame.value = 20
        assert v.input_view.value != before
        v.track.value = 1
        assert v.plots.value != plots
        with pytest.raises(ValueError, match="at least one track"):
            StabilityViewer(model, [])


def test_late_echoes_are_ignored(digits):
    """Echoes can arrive after newer pushes (quick key presses): none of them may move theta."""
    ex = ThetaExplorer(digits)
    pushed = []
    for angle in (1.0, 2.0, 3.0, 4.0, 5.0):
        ex.parts["rotation"].value = angle
        pushed.append([e.value for e in ex.entries])
    exact = ex.params.copy()
    for values in pushed:  # the browser replays older entry values, out of order, with JS rounding
        for sl, v in zip(ex.entries, values):
            sl.value = v + 8e-17
    for sl, v in zip(ex.entries, pushed[-1]):
        sl.value = v
    np.testing.assert_allclose(ex.params, exact, atol=1e-12)
    c, s = math.cos(math.radians(5)), math.sin(math.radians(5))
    np.testing.assert_allclose(ex.params, [c, -s, 0, s, c, 0], atol=1e-12)
