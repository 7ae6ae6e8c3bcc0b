import math

import numpy as np
import pytest
import torch

from stnviz import geometry, get_model
from stnviz.analysis import (
    accuracy_with_without,
    canonical_means,
    class_transform_stats,
    decomposed_theta,
    distortion_residuals,
    polygon_box_iou,
    run_sequence,
    stability_per_frame,
    stability_per_track,
    stability_per_model,
    theta_table,
)
from stnviz.capture import capture
from stnviz.data import DistortedMNIST, sample, sample_tracks


class TestPolygonBoxIoU:
    def test_known_values(self):
        square = np.array([[0, 0], [2, 0], [2, 2], [0, 2]], float)
        assert polygon_box_iou(square, (0, 0, 2, 2)) == pytest.approx(1.0)
        assert polygon_box_iou(square, (1, 0, 3, 2)) == pytest.approx(2 / 6)
        assert polygon_box_iou(square, (5, 5, 6, 6)) == 0.0
        diamond = np.array([[1, 0], [2, 1], [1, 2], [0, 1]], float)  # area 2, inside the 2x2 box
        assert polygon_box_iou(diamond, (0, 0, 2, 2)) == pytest.approx(2 / 4)

    def test_nan_polygon(self):
        assert math.isnan(polygon_box_iou(np.array([[np.nan, 0], [1, 1], [0, 1]]), (0, 0, 1, 1)))


def _steady_model(theta, device):
    model = get_model("stn_gtsrb", device=device).eval()
    model.transformers[0].set_constant_params(torch.tensor(theta, dtype=torch.float32))
    return model


class TestRunSequence:
    def test_table_columns_and_identity_baseline(self, device):
        track = sample_tracks()[0]
        model = get_model("stn_gtsrb", device=device).eval()  # untrained: identity transformers
        t = stability_per_frame(model, track)
        assert len(t) == 30 and list(t["frame"]) == list(range(30))
        assert {"rotation_deg", "scale_x", "tx", "iou", "output_change", "input_change", "prediction", "correct"} <= set(t.columns)
        assert math.isnan(t["output_change"][0])
        # the identity transform changes exactly as much as the input, and is its own mean
        np.testing.assert_allclose(t["output_change"][1:], t["input_change"][1:], rtol=1e-5)
        np.testing.assert_allclose(t["fixed_change"][1:], t["output_change"][1:], rtol=1e-5)
        # identity region = whole image: corners at the image edges
        assert t["region_x_tl"][0] == pytest.approx(-0.5) and t["region_x_br"][0] == pytest.approx(31.5)
        # IoU of the whole image with the annotated box = box area / image area
        box = track.boxes[0]
        expected = float((box[2] - box[0]) * (box[3] - box[1]))
        assert t["iou"][0] == pytest.approx(expected, rel=1e-4)

    def test_fixed_transform_baseline(self, device):
        """A constant zoom is steadier than the identity (resampling blurs) but exactly as steady
        as the fixed-mean baseline: it does not follow anything."""
        t = stability_per_frame(_steady_model([0.7, 0, 0, 0, 0.7, 0], device), sample_tracks()[1])
        assert t["output_change"][1:].mean() < t["input_change"][1:].mean()
        np.testing.assert_allclose(t["output_change"][1:], t["fixed_change"][1:], rtol=1e-5)
        s = stability_per_track(_steady_model([0.7, 0, 0, 0, 0.7, 0], device), sample_tracks()[1:2])
        assert s.loc[0, "change_ratio"] < 1 and s.loc[0, "change_ratio_fixed"] == pytest.approx(1.0, abs=1e-5)

    def test_zoom_onto_a_static_sequence(self, device):
        frames = sample_tracks()[0].images[:1].expand(5, -1, -1, -1).clone()
        run = run_sequence(_steady_model([0.5, 0, 0, 0, 0.5, 0], device), frames)
        assert run.boxes is None and "iou" not in run.table
        assert (run.table["output_change"][1:] == 0).all()
        assert run.table["scale_x"][0] == pytest.approx(0.5)
        assert run.outputs.shape == (5, 3, 32, 32)

    def test_summary_tables(self, device):
        tracks = sample_tracks()[:3]
        model = get_model("stn_gtsrb", device=device).eval()
        s = stability_per_track(model, tracks)
        assert len(s) == 3 and list(s["track"]) == [t.track_id for t in tracks]
        assert (s["change_ratio"].round(5) == 1.0).all()
        one = stability_per_model(s, "untrained")
        assert one.loc[0, "model"] == "untrained" and one.loc[0, "frames"] == 90
        assert one.loc[0, "tracks_steadier_than_identity"] == 0.0

    def test_key_picks_the_transformer(self, device):
        """``key=`` takes a capture record's key (``record.key``); ``module=`` is not a parameter."""
        model = get_model("stn_gtsrb", device=device).eval()
        frames = sample_tracks()[0].images[:3]
        with capture(model) as rec:
            model(frames.to(device))
        second = rec.of("body.1")[0]
        run = run_sequence(model, frames, key=second.key)
        assert run.key == "body.1" and run.outputs.shape == second.output.shape
        assert run_sequence(model, frames).key == "transformer"  # default: the first image transformer
        with pytest.raises(TypeError, match="module"):
            run_sequence(model, frames, module=second.key)

    def test_every_key_parameter_is_named_key(self):
        """One word per idea: whatever picks a transformer by its record key calls it ``key``."""
        import inspect

        from stnviz import analysis, animate
        from stnviz.widgets import StabilityViewer

        takers = (analysis.run_sequence, analysis.stability_per_track, analysis.class_transform_stats,
                  analysis.canonical_means, analysis.distortion_residuals, animate.probe_snapshot,
                  animate.ProgressRecorder, animate.snapshots_from_checkpoints, StabilityViewer)
        for f in takers:
            params = inspect.signature(f).parameters
            assert "key" in params and "module" not in params, f.__qualname__

    def test_bad_sequences(self, tmp_path, device):
        model = get_model("stn_gtsrb", device=device).eval()
        with pytest.raises(ValueError, match="empty"):
            run_sequence(model, torch.zeros(0, 3, 32, 32))
        with pytest.raises(ValueError, match="no tracks"):
            stability_per_track(model, [])


class TestDataSetTables:
    def test_residuals_identity_vs_oracle(self, device):
        data = DistortedMNIST(sample("mnist").subset(torch.arange(200)), "rts", seed=4)
        untrained = get_model("stn_cnn", device=device).eval()
        r0 = distortion_residuals(untrained, data)
        assert list(r0["component"]) == ["rotation (deg)", "log scale", "translation x", "translation y"]
        np.testing.assert_allclose(r0["undone"], 0.0, atol=1e-9)

        # a perfect transformer would apply invert(G): the composed map is then the identity
        batch = data.get(torch.arange(200))
        s = geometry.invert(batch.extras["theta"].double())
        from stnviz.analysis import decomposed_theta

        g = geometry.to_matrix(batch.extras["theta"].double(), "affine")
        m = (g @ geometry.to_matrix(s, "affine"))[:, :2]
        res = decomposed_theta(m)
        assert res["rotation_deg"].abs().max() < 1e-6 and (res["scale_x"] - 1).abs().max() < 1e-6

    def test_class_stats_canonical_means_accuracy(self, device):
        data = sample("mnist").subset(torch.arange(0, 1000, 10))
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.8, 0, 0, 0, 0.8, 0]))
        stats = class_transform_stats(model, data)
        assert list(stats["label"]) == list(range(10)) and stats["count"].sum() == 100
        assert stats["scale_x_mean"].round(6).eq(0.8).all() and stats["rotation_deg_std"].fillna(0).eq(0).all()
        means = canonical_means(model, data)
        assert sorted(means) == list(range(10))
        mean_in, mean_out = means[3]
        assert mean_in.shape == mean_out.shape == (1, 28, 28)
        table = accuracy_with_without(model, data, twin=get_model("cnn_tutorial", device=device).eval())
        assert list(table["model"]) == ["with transformer", "same weights, transformer = identity", "no-ST twin"]
        assert (table["n"] == 100).all()

    def test_residuals_need_ground_truth(self, device):
        with pytest.raises(ValueError, match="ground-truth 'theta'"):
            distortion_residuals(get_model("stn_tutorial", device=device), sample("mnist").subset(torch.arange(10)))


class TestAnalysisTables:
    def test_decomposed(self):
        theta = geometry.compose_affine(rotation=torch.tensor([0.5, 0.0]), scale_x=torch.tensor([1.0, 2.0]), shear=0.1, ty=0.3)
        df = decomposed_theta(theta)
        assert list(df["rotation_deg"].round(4)) == [round(np.degrees(0.5), 4), 0.0]
        assert list(df["scale_x"].round(6)) == [1.0, 2.0] and list(df["ty"].round(6)) == [0.3, 0.3]
        singular = decomposed_theta(torch.zeros(1, 2, 3))
        assert np.isnan(singular["rotation_deg"][0])

    def test_theta_table_from_records(self, device):
        model = get_model("stn_gtsrb", device=device).eval()
        with capture(model) as rec:
            model(torch.rand(2, 3, 32, 32, device=device))
        df = theta_table(rec, 1)
        assert list(df["transformer"]) == ["transformer", "body.1"]
        assert list(df["scale x"].round(6)) == [1.0, 1.0] and df["theta"][0] == "[+1.000 +0.000 +0.000; +0.000 +1.000 +0.000]"

class TestDeviceAndDtype:
    def test_tables_come_back_on_the_cpu_in_float32(self, device):
        """A float64 model on the suite's device: frames go to its device and dtype, the run
        comes back as CPU float32 tensors and plain tables."""
        model = get_model("stn_gtsrb", device=device).double().eval()
        run = run_sequence(model, sample_tracks()[0].images[:4])
        for t in (run.frames, run.outputs, run.outlines):
            assert t.device.type == "cpu" and t.dtype == torch.float32
        assert (run.table["output_change"][1:].round(5) == run.table["input_change"][1:].round(5)).all()
        data = DistortedMNIST(sample("mnist").subset(torch.arange(64)), "rts", seed=4)
        r = distortion_residuals(get_model("stn_cnn", device=device).double().eval(), data)
        np.testing.assert_allclose(r["undone"], 0.0, atol=1e-6)  # untrained: the identity undoes nothing


def test_residuals_leave_undistorted_components_undefined(device):
    """On R (rotation only) scale and translation are not distorted: their "undone" is NaN, not noise."""
    from stnviz.analysis import distortion_residuals
    from stnviz.data import distorted_test_set

    model = get_model("stn_tutorial", device=device).eval()  # the identity: undoes nothing
    table = distortion_residuals(model, distorted_test_set(sample("mnist").subset(torch.arange(64)), "rotated"))
    undone = table.set_index("component")["undone"]
    assert np.isnan(undone["log scale"]) and np.isnan(undone["translation x"]) and np.isnan(undone["translation y"])
    assert undone["rotation (deg)"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- issue 18.7: NaN input is bad input


class TestNonFiniteInput:
    """A NaN or inf frame or image is reported as bad input, naming it, not as a degenerate theta."""

    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_sequence_frame(self, device, value):
        from stnviz.analysis import sequence_stability

        frames = sample_tracks()[0].images[:5].clone()
        frames[3, 0, 4, 4] = value
        model = get_model("stn_gtsrb", device=device).eval()
        for fn in (run_sequence, stability_per_frame, sequence_stability):
            with pytest.raises(ValueError, match=r"frame 3 holds NaN or inf pixels; expected finite pixel values in \[0, 1\]"):
                fn(model, frames)

    def test_track_is_named(self, device):
        tracks = sample_tracks()[:2]
        tracks[1].images = tracks[1].images.clone()
        tracks[1].images[7, :, :3] = math.nan
        with pytest.raises(ValueError, match=rf"track {tracks[1].track_id}: frame 7 holds NaN or inf pixels"):
            stability_per_track(get_model("stn_gtsrb", device=device).eval(), tracks)

    @pytest.mark.parametrize("table", [class_transform_stats, canonical_means])
    def test_data_set_image(self, device, table):
        from stnviz.data import ImageSet

        digits = DistortedMNIST(sample("mnist").subset(torch.arange(16)), "rts", seed=0).get(torch.arange(16))
        images = digits.images.clone()
        images[9, 0, 3, 3] = math.nan
        data = ImageSet(images, digits.labels, name="my-digits")
        with pytest.raises(ValueError, match=r"my-digits: image 9 holds NaN or inf pixels; expected finite pixel values "
                                             r"in \[0, 1\] \(bad input, not a transform problem"):
            table(get_model("stn_cnn", device=device).eval(), data, batch_size=4)

    @pytest.mark.parametrize("batch_size", [0, -1, 2.5])
    def test_run_sequence_batch_size(self, device, batch_size):
        with pytest.raises(ValueError, match=rf"batch_size must be a positive integer, got {batch_size!r}"):
            run_sequence(get_model("stn_gtsrb", device=device).eval(), sample_tracks()[0], batch_size=batch_size)
