import math

import numpy as np
import pytest
import torch

from photos import IMAGENET, imagenet, photo  # shared test pictures
from stnviz import geometry, get_model, render
from stnviz.data import sample
from stnviz.widgets import (
    ExplorerState, STNInspector, ThetaExplorer, affine_as, compose_parts, render_explorer, slider_value,
)


@pytest.fixture(scope="module")
def digits():
    return sample("mnist").get(torch.arange(4)).images


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    import io

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


class TestExplorerState:
    """The widget-free truth behind the explorer."""

    def test_rotation_out_and_back_is_the_identity_exactly(self):
        st = ExplorerState("affine")
        st.set_part("rotation_deg", 5.0)
        assert st.params[3] == pytest.approx(math.sin(math.radians(5)), abs=1e-15)
        st.set_part("rotation_deg", 0.0)
        assert st.params.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        st.set_part("scale_x", 1.37)
        st.set_part("scale_x", 1.0)
        assert st.params.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def test_parts_keep_the_others_as_they_are(self):
        st = ExplorerState("affine", [0.8, 0.1, 0.0, -0.1, 0.8, 0.2])
        before = dict(st.parts)
        st.set_part("rotation_deg", before["rotation_deg"] + 10)
        st.set_part("rotation_deg", before["rotation_deg"])
        np.testing.assert_allclose(st.params, [0.8, 0.1, 0.0, -0.1, 0.8, 0.2], atol=1e-12)
        assert {k: v for k, v in st.parts.items() if k != "rotation_deg"} == {k: v for k, v in before.items() if k != "rotation_deg"}

    def test_entries_points_presets(self):
        st = ExplorerState("tps", control_points=9)
        st.set_point(4)
        assert st.entry_values() == [0.0, 0.0]
        st.set_entry(0, 0.3)
        assert st.params[8] == 0.3 and st.entry_values() == [0.3, 0.0]
        st.to_identity()
        assert st.params.tolist() == st.identity.tolist()
        st = ExplorerState("affine", [0.5, 0, 0, 0, 0.5, 0])
        st.to_identity()
        st.reset()
        assert st.params.tolist() == [0.5, 0, 0, 0, 0.5, 0]
        st.set_params([0, 0, 0, 0, 0, 0])  # singular: the parts keep their last decomposition
        assert st.parts["scale_x"] == 0.5
        with pytest.raises(ValueError, match="takes 6 parameters, got 4"):
            st.set_params([1, 0, 0, 1])
        with pytest.raises(ValueError, match="affine family only"):
            ExplorerState("projective").set_part("rotation_deg", 1)


class TestRenderExplorer:
    def test_pure_and_matches_geometry(self, digits):
        theta = [0.5, 0.0, 0.0, 0.0, 0.5, 0.0]
        v = render_explorer(digits[0], theta, "affine", scale=1)
        again = render_explorer(digits[0], theta, "affine", scale=1)
        assert np.array_equal(v.input_rgb, again.input_rgb) and v.theta_text == again.theta_text
        expected = geometry.warp(digits[:1], geometry.affine_grid(torch.tensor(theta).view(1, 2, 3), (28, 28)))[0, 0]
        np.testing.assert_allclose(v.output_rgb[..., 0] / 255, expected.numpy(), atol=1 / 255 + 1e-6)
        assert v.message == "" and "scale       +0.500 × +0.500" in v.theta_text

    def test_theta_text_has_fixed_width(self, digits):
        widths = set()
        for p in ([1, 0, 0, 0, 1, 0], [-1.234, 0.5, -1.9, 0.004, -0.7, 1.25], [0.999, -0.001, 0, 0.001, 0.999, 0]):
            widths.add(tuple(len(line) for line in render_explorer(digits[0], p, "affine").theta_text.splitlines()))
        assert len(widths) == 1, widths
        assert "-0.000" not in render_explorer(digits[0], [1, -1e-9, 0, 1e-9, 1, 0], "affine").theta_text

    def test_tps_points_drawn_selected_highlighted(self, digits):
        params = geometry.identity_params("tps", control_points=9, dtype=torch.float64).numpy()
        a = render_explorer(digits[0], params, "tps", point=0, scale=8).input_rgb
        b = render_explorer(digits[0], params, "tps", point=4, scale=8).input_rgb
        pink = np.array([0xFF, 0x2D, 0xD4])
        near = lambda img: np.argwhere((np.abs(img.astype(int) - pink).sum(-1) < 10))  # noqa: E731
        ca, cb = near(a).mean(0), near(b).mean(0)
        # point 0 is the top-left control point, point 4 the centre one
        assert ca[0] < cb[0] - 40 and ca[1] < cb[1] - 40
        blue = (np.abs(a.astype(int) - np.array([0x32, 0xD2, 0xFF])).sum(-1) < 10).sum()
        assert blue > 8 * 10  # the other eight points

    def test_degenerate(self, digits):
        assert "singular" in render_explorer(digits[0], [0, 0, 0, 0, 0, 0], "affine").message
        v = render_explorer(digits[0], [float("nan"), 0, 0, 0, 1, 0], "affine")
        assert v.message.startswith("cannot sample")


@pytest.fixture(scope="module")
def rts():
    from stnviz.data import distorted_test_set

    return distorted_test_set(sample("mnist"), "rts").get(torch.arange(4)).images


class TestThetaExplorer:
    """The kernel side of the browser explorer: the page's params become the state, the state's
    params go to the page, each image its own learned theta, presets, prediction, export."""

    def test_page_params_become_the_state_and_back(self, digits):
        ex = ThetaExplorer(digits)
        assert ex.view.params == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] and ex.view.family == "affine"
        ex.view.params = [0.5, 0.1, 0.2, -0.1, 0.5, 0.0]  # what the page sends while a hand drags
        assert ex.params.tolist() == [0.5, 0.1, 0.2, -0.1, 0.5, 0.0]
        assert ex.state.parts["scale_x"] == pytest.approx(math.hypot(0.5, 0.1))
        ex.set_params(compose_parts({"rotation_deg": 30.0, "scale_x": 1, "scale_y": 1, "shear": 0, "tx": 0, "ty": 0}))
        c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
        assert ex.view.params == pytest.approx([c, -s, 0, s, c, 0], abs=1e-15)  # the page follows, exactly
        ex.params = [1, 0, 0.25, 0, 1, 0]
        assert ex.view.params == [1.0, 0.0, 0.25, 0.0, 1.0, 0.0]

    def test_the_image_is_sent_once_as_rgba(self, digits):
        ex = ThetaExplorer(digits)
        h, w = digits.shape[-2:]
        assert ex.view.image_shape == [h, w] and len(ex.view.image) == h * w * 4
        rgba = np.frombuffer(ex.view.image, np.uint8).reshape(h, w, 4)
        expected = (digits[0, 0] * 255).round().numpy()
        np.testing.assert_array_equal(rgba[..., 0], expected)  # grey: the same value in R, G, B
        np.testing.assert_array_equal(rgba[..., 1], rgba[..., 2])
        assert (rgba[..., 3] == 255).all() and ex.view.pad == [0, 0, 0]
        image = ex.view.image
        ex.view.params = [0.5, 0, 0, 0, 0.5, 0]
        assert ex.view.image is image  # a move sends parameters, never pixels
        ex.view.index = 2
        assert ex.view.image != image and ex.index == 2

    def test_zero_padding_is_the_colour_of_a_zero_pixel(self):
        display = render.Display(mean=(0.6, 0.4, 0.2), std=(0.2, 0.2, 0.2))
        ex = ThetaExplorer(torch.zeros(1, 3, 8, 8), display=display)
        assert ex.view.pad == [153, 102, 51]

    def test_each_image_its_own_learned_theta(self, rts, device):
        from stnviz import load_pretrained

        digits = rts
        model = load_pretrained("stn_cnn.mnist_rts", device=device)
        ex = ThetaExplorer(digits, model=model, params="learned")
        learned = [ex.learned_params(i) for i in range(len(digits))]
        assert not np.allclose(learned[0], learned[1], atol=1e-3)  # the images differ: so do their thetas
        np.testing.assert_allclose(ex.params, learned[0])
        assert ex.view.learned == pytest.approx(learned[0].tolist())  # the ghost outline
        ex.view.index = 1  # the picker
        np.testing.assert_allclose(ex.params, learned[1])
        ex.set_params([1, 0, 0, 0, 1, 0])
        ex.reset()  # "reset" is this image's learned theta
        np.testing.assert_allclose(ex.params, learned[1])
        ex.set_params([0.5, 0, 0, 0, 0.5, 0])
        ex.view.index = 2  # a hand-made theta stays when the image changes
        assert ex.params.tolist() == [0.5, 0, 0, 0, 0.5, 0]
        names = [p["name"] for p in ex.view.presets]
        assert names == ["identity", "snap to learned", "zoom 2x", "rotate 30°", "model's mean"]
        mean = next(p for p in ex.view.presets if p["name"] == "model's mean")["params"]
        np.testing.assert_allclose(mean, np.mean(learned, axis=0))
        snap = next(p for p in ex.view.presets if p["name"] == "snap to learned")["params"]
        np.testing.assert_allclose(snap, learned[2])

    def test_family_switch(self, digits, device):
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.8, 0.1, 0.0, -0.1, 0.8, 0.2]))
        ex = ThetaExplorer(digits, model=model)
        ex.view.family = "tps"  # the switch in the page
        assert ex.family == "tps" and ex.view.params == ex.state.identity.tolist() and len(ex.params) == 18
        ghost = torch.tensor(ex.view.learned, dtype=torch.float64).view(1, 9, 2)  # the learned theta as control points
        theta = torch.tensor([[[0.8, 0.1, 0.0], [-0.1, 0.8, 0.2]]], dtype=torch.float64)
        torch.testing.assert_close(geometry.make_grid(ghost, "tps", (8, 8)), geometry.affine_grid(theta, (8, 8)), atol=1e-6, rtol=0)
        ex.family = "projective"
        assert ex.view.family == "projective" and len(ex.view.params) == 8
        assert ex.view.learned == pytest.approx([0.8, 0.1, 0.0, -0.1, 0.8, 0.2, 0.0, 0.0])

    def test_prediction_for_the_region_on_screen(self, rts, device):
        from stnviz import load_pretrained

        digits = rts

        model = load_pretrained("stn_cnn.mnist_rts", device=device).train()
        ex = ThetaExplorer(digits, model=model, params="learned")
        with torch.no_grad():
            own = model.eval()(digits[:1].to(device)).softmax(1)[0]
        model.train()
        (label, p), *_ = ex.prediction
        assert label == str(int(own.argmax())) and p == pytest.approx(float(own.max()), abs=1e-4)
        assert len(ex.view.prediction) == 3 and model.training  # the user's mode is left alone
        ex.view.params = [0.05, 0, 0.9, 0, 0.05, 0.9]  # a tiny corner of the image, dragged there
        assert ex.prediction[0][1] == p  # the model runs when the hand stops, not at every step
        ex.view.settled += 1  # the page: the hand stopped
        assert ex.prediction[0][1] != pytest.approx(p, abs=1e-3)  # another answer

    def test_static_export_carries_a_png(self, digits):
        import base64

        ex = ThetaExplorer(digits)
        ex.set_params([0.5, 0, 0, 0, 0.5, 0])
        bundle = ex._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        png = _pixels(base64.b64decode(bundle["image/png"]))
        v = render_explorer(digits[0], [0.5, 0, 0, 0, 0.5, 0], "affine", scale=8)
        assert png.shape == (max(v.input_rgb.shape[0], v.output_rgb.shape[0]),
                             v.input_rgb.shape[1] + 8 + v.output_rgb.shape[1], 3)  # input + region | output
        np.testing.assert_array_equal(png[:v.input_rgb.shape[0], :v.input_rgb.shape[1]], v.input_rgb)
        assert bundle["text/plain"] == "ThetaExplorer(affine, params=[0.5, 0.0, 0.0, 0.0, 0.5, 0.0])"

    def test_saved_notebook_shows_the_last_state(self, tmp_path):
        """A notebook run top to bottom and saved (nbclient, as nbconvert --execute): the explorer's
        output carries a PNG of its state after the last cell, and the HTML export shows it."""
        import base64

        import nbformat
        from nbclient import NotebookClient
        from nbconvert import HTMLExporter

        nb = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell("import torch\nfrom stnviz.widgets import ThetaExplorer\n"
                                      "explorer = ThetaExplorer(torch.rand(2, 3, 16, 16))\nexplorer"),
            nbformat.v4.new_code_cell("explorer.set_params([0.5, 0, 0.2, 0, 0.5, 0])"),
            nbformat.v4.new_code_cell("print(explorer._repr_mimebundle_()['image/png'])"),
        ])
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                       store_widget_state=False).execute()  # saved as JupyterLab saves by default: no widget state
        last = nb.cells[2].outputs[0]["text"].strip()
        shown = nb.cells[0].outputs[0]["data"]
        assert shown["image/png"] == last and "application/vnd.jupyter.widget-view+json" in shown
        assert "0.5" in shown["text/plain"]
        html, _ = HTMLExporter().from_notebook_node(nb)
        assert f'src="data:image/png;base64,{last}"' in html  # the last state's picture, not nothing
        assert base64.b64decode(last)[:4] == b"\x89PNG"

    def test_a_folded_homography_is_named(self, digits):
        v = render_explorer(digits[0], [1, 0, 0, 0, 1, 0, 1.5, 0], "projective")
        assert "horizon crosses the output" in v.message
        assert render_explorer(digits[0], [1, 0, 0, 0, 1, 0, 0.5, 0], "projective").message == ""

    def test_errors_are_shown_not_raised(self, digits, monkeypatch):
        ex = ThetaExplorer(digits)

        def boom(*_):
            raise RuntimeError("state exploded")

        monkeypatch.setattr(ex.state, "set_params", boom)
        ex.view.params = [0.5, 0, 0, 0, 0.5, 0]  # must not raise out of the callback
        assert "state exploded" in ex.view.message
        assert any("state exploded" in o.get("text", "") for o in ex.log.outputs)

    def test_affine_as_samples_the_same(self):
        theta = [0.7, -0.2, 0.1, 0.3, 0.6, -0.1]
        ref = geometry.affine_grid(torch.tensor(theta, dtype=torch.float64).view(1, 2, 3), (6, 7))
        for family in ("projective", "tps"):
            p = torch.tensor(affine_as(family, theta, 16)).unsqueeze(0)
            p = p.view(1, -1, 2) if family == "tps" else p
            torch.testing.assert_close(geometry.make_grid(p, family, (6, 7)), ref)

    def test_bad_arguments(self, digits):
        with pytest.raises(ValueError, match=r"family must be one of \('affine', 'projective', 'tps'\), got 'swirl'"):
            ThetaExplorer(digits, family="swirl")
        with pytest.raises(ValueError, match="images must be"):
            ThetaExplorer([1, 2, 3])
        ex = ThetaExplorer(digits)
        with pytest.raises(ValueError, match="takes 6 parameters, got 4"):
            ex.set_params([1, 0, 0, 1])
        with pytest.raises(ValueError, match="needs one"):
            ex.learned_params()
        with pytest.raises(ValueError, match=r"image index must be in \[0, 4\), got 7"):
            ex.index = 7


def test_slider_value_matches_nouislider():
    # the value a browser's FloatSlider (ipywidgets 8, noUiSlider 15, Chromium) sent back for a pushed -0.09
    assert slider_value(-0.09, -2.0, 2.0, 0.01) == -0.09000000000000008
    assert slider_value(0.87, -2.0, 2.0, 0.01) == pytest.approx(0.87, abs=1e-12)
    assert slider_value(5.0, -180.0, 180.0, 0.1) == pytest.approx(5.0, abs=1e-9)
    assert slider_value(7.0, -2.0, 2.0, 0.01) == 2.0 and slider_value(-7.0, -2.0, 2.0, 0.01) == -2.0


class TestSTNInspector:
    def test_browse(self, device):
        model = get_model("stn_gtsrb", device=device).eval()
        s = sample("gtsrb")
        sub = s.subset(torch.arange(6))
        ins = STNInspector(model, sub)
        assert list(ins.records) == ["transformer", "body.1"]
        assert "prediction" in ins.info.value and "true" in ins.info.value
        assert "transformer 2 of 2, on feature maps" in ins.table.value and "turned (degrees)" in ins.table.value
        before = ins.input_view.value
        ins.picker.value = 5
        assert ins.input_view.value != before
        ins.which.value = "body.1"  # feature-map transformer: grey view of 32 channels
        assert ins.input_view.format == "png"
        assert len(ins.predictions) == 6

    def test_speaks_to_people(self, device):
        """Issue 22 item 4: the picker, the table and the text name things in words, never by
        code (no "body.1", no align_corners, no bare family / role columns), and the pictures fit
        a laptop screen."""
        model = get_model("stn_gtsrb", device=device).eval()
        ins = STNInspector(model, sample("gtsrb").subset(torch.arange(3)))
        labels = [label for label, _ in ins.which.options]
        assert labels == ["transformer 1 of 2, on the input image", "transformer 2 of 2, on feature maps (32 × 16 × 16)"]
        assert ins.which.layout.width == f"{len(labels[1]) + 16}ch"  # the longest name is never cut
        for key in ins.state.keys:
            ins.which.value = key
            shown = ins.table.value + ins.info.value
            assert "body.1" not in shown and "align_corners" not in shown, shown
            assert "<th>family</th>" not in shown and "<th>role</th>" not in shown
            assert max(_pixels(ins.input_view.value).shape[:2]) <= 336
        assert "What every transformer does to this image" in ins.table.value

    def test_table_per_image(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        imgs = sample("mnist").subset(torch.arange(5))
        ins = STNInspector(model, imgs, batch_size=2)  # records split over batches
        t = ins.theta_table(4)
        assert len(t) == 1 and t.loc[0, "scale x"] == pytest.approx(1.0)

    def test_findings_of_the_picked_transformer_once_shown(self, device, monkeypatch):
        import sys

        package = sys.modules["stnviz.diagnose"]  # stnviz.diagnose is the function
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([1.6, 0, 0, 0, 1.6, 0]))  # 2.56x the input's area
        runs = []
        real = package.diagnose
        monkeypatch.setattr(package, "diagnose", lambda *a, **k: runs.append(1) or real(*a, **k))
        ins = STNInspector(model, sample("mnist").subset(torch.arange(8)))
        assert ins.diagnosis is None and ins.diagnosis_view.value == "" and not runs  # not before it is shown
        ins._repr_mimebundle_()
        view = ins.diagnosis_view.value
        assert "error</b> <code>zoom_out</code> (2.56)" in view and "on the transformer, on the input image" in view
        assert "<code>identity</code>" not in view  # only what is wrong
        ins.picker.value = 5
        ins._repr_mimebundle_()
        assert len(runs) == 1 and ins.diagnosis_view.value == view  # once per batch, never per slider move


class TestTrainingPlayer:
    def test_scrub(self, device):
        from stnviz.animate import ProgressRecorder

        model = get_model("stn_tutorial", device=device).eval()
        rec = ProgressRecorder(sample("mnist").get(torch.arange(4)).images, every=1)
        rec.record(model, 0)
        model.transformers[0].set_constant_params(torch.tensor([0.6, 0, 0, 0, 0.6, 0]))
        rec.record(model, 10, 1.0)
        from stnviz.widgets import TrainingPlayer

        p = TrainingPlayer(rec, tile=32)
        from stnviz.animate import compose_frame

        # every step composed once, in the kernel, and sent to the page in one list
        assert p.frames_rendered == 2 and p.view.count == 2 and p.view.label == "snapshot"
        for i, snap in enumerate(rec.snapshots):
            assert np.array_equal(_pixels(p.view.frames[0][i]), compose_frame(rec.inputs, snap, tile=32))
        assert p.view.captions == ["step 0 · epoch 0.00", "step 10 · epoch 1.00"]
        p.frame = 1  # as the page's slider reports it
        assert p.caption == "step 10 · epoch 1.00" and p.frames_rendered == 2  # nothing composed again
        with pytest.raises(Exception, match=r"frame must be in \[0, 2\), got 2"):
            p.frame = 2
        with pytest.raises(ValueError, match="holds none"):
            TrainingPlayer(ProgressRecorder(torch.rand(1, 1, 8, 8)))

    def test_static_picture_is_the_frame_shown(self, device):
        """A notebook converted to HTML without widget state shows the frame on screen as a PNG."""
        import base64

        from stnviz.animate import ProgressRecorder
        from stnviz.widgets import TrainingPlayer

        model = get_model("stn_tutorial", device=device).eval()
        rec = ProgressRecorder(sample("mnist").get(torch.arange(2)).images, every=1)
        rec.record(model, 0)
        rec.record(model, 5)
        p = TrainingPlayer(rec, tile=32)
        p.frame = 1
        bundle = p._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert base64.b64decode(bundle["image/png"]) == p.view.frames[0][1]


class TestFramePlayer:
    def _pictures(self, n):
        return [render.encode(np.full((4, 6, 3), 20 * i, np.uint8)) for i in range(n)]

    def test_frames_captions_and_frame(self):
        from stnviz.widgets import FramePlayer

        p = FramePlayer(frames=[self._pictures(3), self._pictures(3)], titles=["a", "b"], captions=["x", "y", "z"])
        assert (p.count, p.frame, p.caption) == (3, 0, "x")
        p.frame = 2
        assert p.caption == "z"
        state = p.get_state()
        assert len(state["frames"]) == 2 and len(state["frames"][1]) == 3  # sent as binary buffers, once
        p.show_frames([self._pictures(5)], captions=list("abcde"), frame=4, plot=b"\x89PNG", markers=[[[1.0] * 5, 0, 9]])
        assert (p.count, p.frame, p.caption, p.plot) == (5, 4, "e", b"\x89PNG")

    def test_refuses(self):
        import traitlets

        from stnviz.widgets import FramePlayer

        with pytest.raises(traitlets.TraitError, match=r"same number of frames \(at least one\), got \[2, 3\]"):
            FramePlayer(frames=[self._pictures(2), self._pictures(3)])
        p = FramePlayer(frames=[self._pictures(2)])
        with pytest.raises(traitlets.TraitError, match=r"frame must be in \[0, 2\), got -1"):
            p.frame = -1

    def test_front_end_ships_with_the_package(self):
        from stnviz.widgets import FramePlayer

        from importlib.resources import files

        web = files("stnviz.widgets") / "web"
        assert str(FramePlayer._esm) == (web / "player.js").read_text() and "export default" in str(FramePlayer._esm)
        assert str(FramePlayer._css) == (web / "player.css").read_text()


class TestStabilityViewer:
    def test_tracks_and_frames(self, device):
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer

        model = get_model("stn_gtsrb", device=device).eval()
        v = StabilityViewer(model, sample_tracks()[:3])
        assert v.view.count == 30 and "overlap of the region with the marked sign (IoU)" in v.info
        plots, frames = v.view.plot, v.view.frames
        assert plots[:4] == b"\x89PNG" and len(frames) == 2  # input + region, output
        w, h = _pixels(plots).shape[1::-1]
        assert v.view.plot_size == [w, h]  # shown at the size it was drawn
        assert len(v.view.markers) == 4 and all(len(xs) == 30 and 0 <= top < bottom <= h
                                                for xs, top, bottom in v.view.markers)  # 3 transform panels + change
        v.frame = 20  # a scrub only moves the frame: nothing is sent but the index
        assert v.view.frames is frames and v.view.plot is plots and v.state.frame == 20
        v.track.value = 1
        assert v.view.plot != plots and v.view.frames != frames and v.view.frame == 20  # the frame is kept
        v.track.value = 2  # prefetched in the background meanwhile, or computed now
        assert v.run(2).frames.shape[0] == 30
        v.close()
        with pytest.raises(ValueError, match=r"frame must be in \[0, 30\) for track 2, got 30"):
            v.frame = 30
        with pytest.raises(ValueError, match="at least one track"):
            StabilityViewer(model, [])


class TestWidgetsLeaveTheModelAlone:
    """Issue 18 item 5: a background run never touches the model the user holds."""

    def test_prefetch_while_the_user_trains(self, device):
        import threading

        from stnviz.analysis import run_sequence
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer

        torch.manual_seed(0)
        model = get_model("stn_gtsrb", device=device)  # BatchNorm and dropout: eval mode changes its steps
        tracks = sample_tracks()[:2]
        reference = [run_sequence(model, t) for t in tracks]  # plain eval runs of the weights the viewer sees
        assert model.training
        main, foreign_calls = threading.get_ident(), []
        hook = model.register_forward_pre_hook(
            lambda m, args: foreign_calls.append(threading.current_thread().name)
            if m is model and threading.get_ident() != main else None)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        x, y = torch.rand(8, 3, 32, 32, device=device), torch.randint(0, 43, (8,), device=device)
        v = StabilityViewer(model, tracks)
        futures = list(v._futures.values())
        modes, steps = [], 0
        while steps < 3 or not all(f.done() for f in futures):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            modes.append(all(m.training for m in model.modules()))
            steps += 1
            assert steps < 5000, "the prefetch never finished"
        hook.remove()
        assert all(modes) and len(modes) == steps
        assert foreign_calls == []  # the background thread ran its own copy, never this model
        for i, ref in enumerate(reference):
            run = v.run(i)
            torch.testing.assert_close(run.outputs, ref.outputs, atol=1e-5, rtol=1e-4)
            assert run.table["prediction"].tolist() == ref.table["prediction"].tolist()
            np.testing.assert_allclose(run.table["rotation_deg"], ref.table["rotation_deg"], atol=1e-3)
        v.close()

    def test_a_model_that_cannot_be_copied_is_not_prefetched(self, device):
        import threading

        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer

        model = get_model("stn_gtsrb", device=device)
        model.guard = threading.Lock()  # deepcopy can't copy a lock
        with pytest.warns(RuntimeWarning, match=r"prefetch=True needs a copy of the model, but copy.deepcopy failed \(TypeError"):
            v = StabilityViewer(model, sample_tracks()[:2])
        assert v._pool is None and v._futures == {}
        v.track.value = 1  # run now, in the caller's thread, on the model itself
        assert v.run(1).frames.shape[0] == 30 and v.message.value == ""
        assert all(m.training for m in model.modules())  # its mode is restored after the run

    def test_one_thread_restores_each_threads_own_count(self):
        """torch's intra-op thread count belongs to each thread: when the user's thread leaves the
        block first and a background thread last, the user's thread gets its own count back."""
        import threading

        from stnviz.widgets._base import _one_thread

        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            inside, leave, seen = threading.Event(), threading.Event(), {}

            def background():
                with _one_thread():
                    seen["background"] = torch.get_num_threads()
                    inside.set()
                    leave.wait(30)

            with _one_thread():
                seen["main"] = torch.get_num_threads()
                t = threading.Thread(target=background)
                t.start()
                inside.wait(30)
            leave.set()  # the background thread leaves last
            t.join(30)
            assert seen == {"main": 1, "background": 1}
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(before)


class TestWidgetMisuse:
    """Issue 12's widget probes: stale errors, more inputs than probes, inspector arguments."""

    def test_a_good_selection_clears_the_old_error(self, device):
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer

        tracks = sample_tracks()[:2]
        bad = torch.full((3, 3, 32, 32), float("nan"))  # a "track" of frames that can't be shown
        v = StabilityViewer(get_model("stn_gtsrb", device=device).eval(), [tracks[0], bad])
        v.track.value = 1
        assert "error" in v.message.value
        v.track.value = 0
        assert v.message.value == "" and "IoU" in v.info
        v.close()

    def test_player_refuses_more_inputs_than_probes(self, device):
        from stnviz.animate import ProgressRecorder
        from stnviz.widgets import TrainingPlayer

        model = get_model("stn_tutorial", device=device).eval()
        rec = ProgressRecorder(sample("mnist").get(torch.arange(4)).images, every=1)
        rec.record(model, 0)
        with pytest.raises(ValueError, match="6 probe inputs but the snapshots hold 4 outputs"):
            TrainingPlayer(snapshots=rec.snapshots, inputs=torch.rand(6, 1, 28, 28))

    def test_inspector_validates_up_front(self, device):
        from stnviz.widgets import STNInspector

        model = get_model("stn_tutorial", device=device).eval()
        images = sample("mnist").get(torch.arange(4)).images
        with pytest.raises(ValueError, match="class_names must name every class up to 9"):
            STNInspector(model, images, labels=torch.tensor([9, 1, 2, 3]), class_names=["zero", "one"])
        with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) = \(4, 4\)"):
            STNInspector(model, images, boxes=torch.zeros(4, 3))
        with pytest.raises(ValueError, match=r"labels must have one entry per image \(4\), got 3"):
            STNInspector(model, images, labels=torch.tensor([1, 2, 3]))
        with pytest.raises(ValueError, match="pass both mean and std"):
            STNInspector(model, images, mean=[0.5])


# --------------------------------------------------------------------------- issue 19 item 3: state | render | shell


def _panels(views):
    return views.input_rgb, views.output_rgb


class TestInspectorState:
    """Which image and which transformer the inspector shows, without widgets."""

    def test_select_validates(self):
        from stnviz.widgets.inspector import InspectorState

        st = InspectorState(["transformer", "body.1"], 4)
        assert (st.index, st.key, st.shows_box) == (0, "transformer", True)
        st.select(index=3, key="body.1")
        assert (st.index, st.key, st.shows_box) == (3, "body.1", False)
        with pytest.raises(ValueError, match=r"image index must be in \[0, 4\), got 4"):
            st.select(index=4)
        with pytest.raises(ValueError, match=r"transformer must be one of \['transformer', 'body.1'\], got 'head'"):
            st.select(key="head")
        assert (st.index, st.key) == (3, "body.1")  # a refused selection changes nothing
        with pytest.raises(ValueError, match="at least one recorded transformer"):
            InspectorState([], 4)

    def test_from_a_collection(self, digits, device):
        from stnviz.capture import collect
        from stnviz.widgets.inspector import InspectorState

        model = get_model("stn_tutorial", device=device).eval()
        st = InspectorState.for_collection(collect(model, digits), 4)
        assert st.keys == ("transformer",) and st.batches == {"transformer": 4}
        st.require_one_per_image()
        odd = InspectorState(["a", "b"], 4, batches={"a": 4, "b": 8})
        odd.select(key="b")
        with pytest.raises(ValueError, match=r"'b' sampled a batch of 8 per 4 images \(not one per image\)"):
            odd.require_one_per_image()


@pytest.fixture(scope="module")
def record(digits, device):
    """The tutorial model's transformer on the digits, set to a visible zoom (its init is the identity)."""
    from stnviz.capture import collect_batch

    model = get_model("stn_tutorial", device=device).eval()
    model.transformers[0].set_constant_params(torch.tensor([0.6, 0.1, 0.1, -0.1, 0.6, 0.0]))
    with torch.no_grad():
        _, rec = collect_batch(model, digits)
    return rec.pick()


class TestRenderInspector:
    """The inspector's pictures and text from one record, without widgets."""

    def test_pictures_are_the_region_panels(self, record):
        from stnviz import render
        from stnviz.widgets.inspector import render_inspector

        box = torch.tensor([4.0, 4.0, 20.0, 22.0])
        v = render_inspector(record, 2, box=box, scale=4)
        lattice = render.lattice_points(record.grid[2], (28, 28), 8)
        want = render.region_panels(record.input[2], record.output[2], record.sampled_outline(8)[2], lattice, box,
                                    scale=4, margin=0.25)
        assert all(np.array_equal(a, b) for a, b in zip(_panels(v), want))
        assert v.message == ""

    def test_info_names_prediction_and_truth(self, record):
        from stnviz.widgets.inspector import render_inspector

        names = ["zero", "one", "two <b>"]
        v = render_inspector(record, 0, prediction=1, label=2, class_names=names)
        lines = v.info.split("<br>")
        assert lines[:2] == ["prediction: <b>one</b>", "true: two &lt;b&gt; ✗"]  # names are escaped
        assert "Turns, scales, shears and moves; blends the 4 nearest pixels; black outside the input" in lines[2]
        assert render_inspector(record, 0, label=2, class_names=names).info.startswith("true: two &lt;b&gt;<br>")

    def test_inputs_outside_unit_range(self, record):
        import copy

        from stnviz.widgets.inspector import render_inspector

        rec = copy.copy(record)
        rec.input, rec.output = record.input * 2 - 0.5, record.output * 2 - 0.5
        v = render_inspector(rec, 1)
        assert "shown stretched to its own range" in v.message
        assert v.input_rgb.max() == 255 and v.output_rgb.min() == 0
        undone = render_inspector(rec, 1, display=render.Display(denormalize=lambda x: (x + 0.5) / 2))
        assert undone.message == ""
        assert all(np.array_equal(a, b) for a, b in zip(_panels(undone), _panels(render_inspector(record, 1))))

    def test_sampling_outside_the_input(self, record):
        import copy

        from stnviz.widgets.inspector import render_inspector

        rec = copy.copy(record)
        rec.grid = record.grid + 5.0
        assert render_inspector(rec, 0).message == "this transformer samples entirely outside its input"

    def test_the_widget_shows_what_render_gives(self, device):
        from stnviz.widgets.inspector import render_inspector

        s = sample("gtsrb").subset(torch.arange(3))
        model = get_model("stn_gtsrb", device=device).eval()
        boxes = torch.tensor([[3.0, 4.0, 25.0, 28.0]] * 3)
        ins = STNInspector(model, s, boxes=boxes)
        ins.picker.value = 1
        assert ins.state.index == 1
        v = render_inspector(ins.record(1, "transformer"), 0, box=boxes[1], label=int(s.labels[1]),
                             prediction=int(ins.predictions[1]), scale=7)  # 32 px, 25% margins: 7x fits 336 px
        assert ins.input_view.format == "jpeg" and ins.info.value == v.info
        ins.which.value = "body.1"  # not the input the boxes belong to: no box
        assert ins.state.key == "body.1" and ins.input_view.format == "png"
        v = render_inspector(ins.record(1, "body.1"), 0, scale=8)  # 16 x 16 feature maps: 8x at most
        assert np.array_equal(_pixels(ins.input_view.value), v.input_rgb)
        assert np.array_equal(_pixels(ins.output_view.value), v.output_rgb)


@pytest.fixture(scope="module")
def track_run(device):
    from stnviz.analysis import run_sequence
    from stnviz.data import sample_tracks

    return run_sequence(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[0])


class TestStabilityState:
    def test_a_shorter_track_clamps_the_frame(self):
        from stnviz.widgets.stability import StabilityState

        st = StabilityState(2)
        st.set_track(0, frames=30)
        st.set_frame(29)
        st.set_track(1, frames=10)
        assert (st.track, st.frame, st.frames) == (1, 9, 10)
        st.set_track(0, frames=30)
        assert st.frame == 9  # a longer one keeps it

    def test_refuses(self):
        from stnviz.widgets.stability import StabilityState

        st = StabilityState(2)
        with pytest.raises(ValueError, match=r"track must be in \[0, 2\), got 2"):
            st.set_track(2, frames=5)
        with pytest.raises(ValueError, match="track 1 has no frames; expected at least one"):
            st.set_track(1, frames=0)
        st.set_track(1, frames=5)
        with pytest.raises(ValueError, match=r"frame must be in \[0, 5\) for track 1, got -1"):
            st.set_frame(-1)
        with pytest.raises(ValueError, match="at least one track, got 0"):
            StabilityState(0)


class TestRenderStability:
    def test_frame_views(self, track_run):
        from stnviz import render
        from stnviz.widgets.stability import render_stability

        v = render_stability(track_run, 12, class_names=[f"c{i}" for i in range(43)], scale=4)
        want = render.region_panels(track_run.frames[12], track_run.outputs[12], track_run.outlines[12],
                                    box=track_run.boxes[12], scale=4, margin=0.15)
        assert all(np.array_equal(a, b) for a, b in zip(_panels(v), want))
        row = track_run.table.iloc[12]
        assert v.info.startswith(f"frame 12: prediction <b>c{int(row['prediction'])}</b> ({row['confidence']:.0%} sure)")
        assert f"(IoU): {row['iou']:.2f}" in v.info and f"turned {row['rotation_deg']:+.1f}°" in v.info
        assert f"{row['scale_x']:.2f} × {row['scale_y']:.2f} of the frame" in v.info
        assert f"theta [{row['theta_00']:+.3f} " in v.info  # the theta the record holds, as format_theta writes it
        with pytest.raises(ValueError, match=r"frame must be in \[0, 30\), got 30"):
            render_stability(track_run, 30)

    def test_plots_and_marker(self, track_run):
        from stnviz.widgets.stability import stability_plots

        rgb, markers = stability_plots(track_run.table)
        assert rgb.dtype == np.uint8 and rgb.shape == (340, 960, 3)
        assert len(markers) == 4  # rotation, scale, translation, change
        for xs, top, bottom in markers:
            assert len(xs) == 30 and np.all(np.diff(xs) > 0) and 0 <= top < bottom <= 340

    def test_the_viewer_follows_its_state(self, device):
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer
        from stnviz.widgets.stability import render_stability

        v = StabilityViewer(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[:1], prefetch=False)
        assert v.frames_rendered == 30  # every frame once, when the track is first shown
        v.view.frame = 21  # what the page's slider sends
        assert (v.state.track, v.state.frame, v.state.frames) == (0, 21, 30)
        want = render_stability(v.run(0), 21)
        assert np.array_equal(_pixels(v.view.frames[0][21]), want.input_rgb)
        assert np.array_equal(_pixels(v.view.frames[1][21]), want.output_rgb) and v.info == want.info
        assert v.frames_rendered == 30

    def test_static_picture(self, device):
        """Without a live kernel (nbconvert to HTML) the viewer is a PNG: the frame shown, its
        output, and the plots with the marker at that frame."""
        import base64

        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer
        from stnviz.widgets.stability import render_stability

        v = StabilityViewer(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[:1], prefetch=False)
        v.frame = 12
        png = _pixels(base64.b64decode(v._repr_mimebundle_()["image/png"]))
        want = render_stability(v.run(0), 12)
        h, w = want.input_rgb.shape[:2]
        assert np.array_equal(png[:h, :w], want.input_rgb)
        plot = _pixels(v.view.plot)
        assert png.shape[0] == h + 8 + plot.shape[0]
        x = round(v.view.markers[0][0][12])
        top = v.view.markers[0][1]
        assert tuple(png[h + 8 + top + 5, x]) == (0xFF, 0x3B, 0x30)  # the marker, in the outline colour


# --------------------------------------------------------------------------- issue 20 item 2: one display pipeline

def _clipped(rgb: np.ndarray) -> float:
    """The fraction of an RGB panel's values at 0 or 255."""
    return float(((rgb == 0) | (rgb == 255)).mean())


class TestDisplayInWidgets:
    """A normalised input is drawn unclipped, in its true colours when the display knows the
    normalisation, by the explorer, the inspector, the stability viewer and the player."""

    def test_explorer(self, device):
        x = photo(1)[0]
        truth = render_explorer(x, [1, 0, 0, 0, 1, 0], "affine", scale=2)
        undone = render_explorer(imagenet(x[None])[0], [1, 0, 0, 0, 1, 0], "affine", scale=2,
                                 display=render.Display(**IMAGENET))
        assert np.abs(undone.output_rgb.astype(int) - truth.output_rgb).max() <= 1
        assert np.abs(undone.input_rgb.astype(int) - truth.input_rgb).max() <= 1
        assert _clipped(render_explorer(imagenet(x[None])[0], [1, 0, 0, 0, 1, 0], "affine").output_rgb) < 0.01
        stretched = render_explorer(x * 2 - 1, [1, 0, 0, 0, 1, 0], "affine", scale=2)  # [-1, 1], no display
        assert _clipped(stretched.output_rgb) < 0.01
        model = render.set_display(get_model("stn_gtsrb", device=device), **IMAGENET)
        explorer = ThetaExplorer(imagenet(x[None]), model)  # the model's display, remembered
        assert explorer.display.mean == IMAGENET["mean"]

    def test_bgr_in_the_explorer(self):
        red = torch.zeros(3, 16, 16)
        red[2] = 0.9  # red, in BGR order
        rgb = render_explorer(red, [1, 0, 0, 0, 1, 0], "affine", scale=1, display=render.Display(channels="bgr")).output_rgb
        assert rgb[..., 0].min() > 220 and rgb[..., 2].max() < 10

    def test_inspector(self, device):
        from stnviz.widgets.inspector import render_inspector

        x = photo(3)
        model = get_model("stn_gtsrb", device=device).eval()
        truth = STNInspector(model, x)
        render.set_display(model, **IMAGENET)
        ins = STNInspector(model, imagenet(x))  # the model's display
        assert ins.display.mean == IMAGENET["mean"] and ins.message.value == ""
        got = render_inspector(ins.record(1), 0, display=ins.display)
        want = render_inspector(truth.record(1), 0)
        assert np.abs(got.output_rgb.astype(int) - want.output_rgb).max() <= 1
        render.set_display(model)
        minus_one = STNInspector(model, x * 2 - 1)  # no display: stretched, and the message says so
        assert "shown stretched" in minus_one.message.value
        assert _clipped(render_inspector(minus_one.record(1), 0).output_rgb) < 0.01
        with pytest.raises(ValueError, match="pass display or its mean/std/denormalize, not both"):
            STNInspector(model, x, mean=[0.5], std=[0.5], display=render.Display())

    def test_stability_viewer_and_player(self, device):
        from stnviz.animate import ProgressRecorder
        from stnviz.widgets import StabilityViewer, TrainingPlayer

        x = photo(4)
        model = get_model("stn_gtsrb", device=device).eval()
        plain = ProgressRecorder(x)
        plain.record(model, step=0)
        render.set_display(model, **IMAGENET, class_names={k: f"c{k}" for k in range(43)})
        normalised = ProgressRecorder(imagenet(x))
        normalised.record(model, step=0)  # the recorder takes the model's display
        a = TrainingPlayer(plain, tile=32).view.frames[0][0]
        b = TrainingPlayer(normalised, tile=32).view.frames[0][0]
        assert np.abs(_pixels(a).astype(int) - _pixels(b)).max() <= 1
        viewer = StabilityViewer(model, [imagenet(x)], prefetch=False)
        assert viewer.display.mean == IMAGENET["mean"] and "prediction <b>c" in viewer.info
        assert _clipped(_pixels(viewer.view.frames[1][0])) < 0.01


# --------------------------------------------------------------------------- issue 20 item 7: the inspector's memory


class TestInspectorMemory:
    def test_keeps_shapes_and_parameters_and_remakes_the_picked_record(self, device):
        from stnviz.capture import collect_batch

        model = get_model("stn_gtsrb", device=device).eval()
        images = torch.rand(5, 3, 32, 32)
        ins = STNInspector(model, images, batch_size=2)  # 3 chunks
        kept = ins.records["transformer"]
        assert kept.input.is_meta and kept.grid.is_meta and kept.output.is_meta  # no pixels kept
        assert tuple(kept.input.shape) == (5, 3, 32, 32) and tuple(kept.theta.shape) == (5, 2, 3)
        _, full = collect_batch(model, images)
        for i in (4, 1):  # another chunk each time
            ins.picker.value = i
            got, want = ins.record(i), full.pick("transformer").sample(i)
            assert ins._chunk[0] == i  # the picked image, run alone
            torch.testing.assert_close(got.output.cpu(), want.output.cpu(), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got.theta.cpu(), kept.theta[i : i + 1].cpu(), atol=1e-5, rtol=1e-5)
        assert ins.message.value == "" and len(ins.theta_table(3)) == 2
        batched = STNInspector(model, images, forward=lambda m, x: m(x), batch_size=2)  # its batch, as collected
        torch.testing.assert_close(batched.record(3).output.cpu(), full.pick("transformer").sample(3).output.cpu(),
                                   atol=1e-4, rtol=1e-4)
        assert batched._chunk[0] == 2

    def test_joining_shape_only_chunks_never_imports_the_compiler(self, device):
        # torch.cat on "meta" tensors imports torch._dynamo (1.2 s, ~150 MB resident): it was most of
        # the inspector's memory at 224 px, paid by the first inspector of more than one chunk
        import subprocess
        import sys

        code = ("import sys, torch\n"
                "from stnviz import get_model\n"
                "from stnviz.widgets import STNInspector\n"
                "assert 'torch._dynamo' not in sys.modules, 'imported before the inspector'\n"
                f"ins = STNInspector(get_model('stn_gtsrb', device={str(device)!r}).eval(), torch.rand(5, 3, 32, 32), batch_size=2)\n"
                "kept = ins.records['transformer']\n"
                "assert kept.input.is_meta and tuple(kept.input.shape) == (5, 3, 32, 32), kept\n"
                "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'triton', 'sympy'))))\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "[]"


def _widgets_to_close(model, digits, device):
    from stnviz.animate import ProgressRecorder
    from stnviz.data import sample_tracks
    from stnviz.widgets import StabilityViewer, TrainingPlayer

    rec = ProgressRecorder(digits, every=1)
    rec.record(model, 0)
    yield STNInspector(model, digits)
    yield ThetaExplorer(digits, model=model)
    yield TrainingPlayer(rec, tile=32)
    yield StabilityViewer(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[:2], prefetch=False)


def test_close_lets_the_kernel_free_a_widget(digits, device):
    # ipywidgets keeps every widget alive until it is closed: a cell run again must be able to let go
    import gc
    import weakref

    from stnviz.widgets._base import _widget_tree

    model = get_model("stn_tutorial", device=device).eval()
    for widget in _widgets_to_close(model, digits, device):
        name = type(widget).__name__
        parts = _widget_tree(widget.root)
        assert all(w.comm is not None for w in parts), name
        ref = weakref.ref(widget)
        widget.close()
        assert all(w.comm is None for w in parts), f"{name}: a part is still open"
        del widget, parts
        gc.collect()
        assert ref() is None, f"{name} is still alive after close()"


class TestStaticExport:
    """Issue 22 item 6: a notebook saved with its outputs and converted to HTML (no widget state,
    as nbconvert and GitHub see it) shows each widget's picture, not nothing."""

    def test_nbconvert_html_shows_a_png_per_widget(self, device):
        import base64

        import nbformat
        from nbconvert import HTMLExporter

        from stnviz.animate import ProgressRecorder
        from stnviz.data import sample_tracks
        from stnviz.widgets import StabilityViewer, TrainingPlayer

        model = get_model("stn_tutorial", device=device).eval()
        rec = ProgressRecorder(sample("mnist").get(torch.arange(2)).images, every=1)
        rec.record(model, 0)
        widgets = [TrainingPlayer(rec, tile=32),
                   StabilityViewer(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[:1], prefetch=False),
                   STNInspector(model, sample("mnist").subset(torch.arange(2)))]
        cells = []
        for w in widgets:  # what Jupyter stores for a displayed widget: its mimebundle
            out = nbformat.v4.new_output("display_data", data=w._repr_mimebundle_())
            cells.append(nbformat.v4.new_code_cell("w", outputs=[out]))
        html, _ = HTMLExporter().from_notebook_node(nbformat.v4.new_notebook(cells=cells))
        for w in widgets:
            assert base64.b64encode(w._static_png()).decode() in html, type(w).__name__
        assert html.count("src=\"data:image/png;base64,") == 3

    @pytest.mark.slow
    def test_the_export_follows_the_last_state(self, tmp_path):
        """In a kernel, a displayed player's output picture is brought up to the widget's state
        after each cell a person runs: a notebook saved afterwards exports the frame last shown."""
        import base64
        import hashlib

        import nbformat
        from nbclient import NotebookClient

        cells = ["import hashlib, torch, stnviz\n"
                 "from stnviz.animate import ProgressRecorder\n"
                 "from stnviz.data import sample, sample_tracks\n"
                 "from stnviz.widgets import StabilityViewer, TrainingPlayer\n"
                 "model = stnviz.get_model('stn_tutorial', device='cpu').eval()\n"
                 "rec = ProgressRecorder(sample('mnist').get(torch.arange(2)).images, every=1)\n"
                 "for step, s in enumerate([1.0, 0.8, 0.6]):\n"
                 "    model.transformers[0].set_constant_params(torch.tensor([s, 0, 0, 0, s, 0]))\n"
                 "    rec.record(model, step)\n"
                 "player = TrainingPlayer(rec, tile=32)\n"
                 "player",
                 "viewer = StabilityViewer(stnviz.get_model('stn_gtsrb', device='cpu').eval(), sample_tracks()[:1],"
                 " prefetch=False)\n"
                 "viewer",
                 "player.frame = 2\nviewer.frame = 17",  # as the page's sliders would
                 "print(hashlib.sha256(player._static_png()).hexdigest(), hashlib.sha256(viewer._static_png()).hexdigest())"]
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
        want = nb.cells[3].outputs[0]["text"].split()
        shown = [hashlib.sha256(base64.b64decode(nb.cells[i].outputs[0]["data"]["image/png"])).hexdigest()
                 for i in (0, 1)]
        assert shown == want, "the saved pictures are not the last state"
