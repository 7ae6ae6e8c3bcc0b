import io
import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from stnviz import geometry, get_model, render
from stnviz.analysis import decomposed_theta
from stnviz.capture import capture


class TestToDisplay:
    def test_shapes(self):
        assert render.to_display(torch.rand(1, 5, 6)).shape == (5, 6)
        assert render.to_display(torch.rand(3, 5, 6)).shape == (5, 6, 3)
        fm = render.to_display(torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 4, 4))
        assert fm.shape == (4, 4) and fm.min() == 0 and fm.max() == 1  # feature maps: mean, rescaled

    def test_bad(self):
        with pytest.raises(ValueError, match=r"image must be \(C, H, W\) or \(H, W\), got shape \(1, 1, 2, 2\)"):
            render.to_display(np.zeros((1, 1, 2, 2)))


class TestLatticePoints:
    def test_identity_grid_hits_pixel_centres(self):
        grid = geometry.affine_grid(geometry.identity_params("affine").view(1, 2, 3), (8, 8))[0]
        pts = render.lattice_points(grid, (8, 8), n=8)
        assert pts.shape == (64, 2)
        np.testing.assert_allclose(np.unique(pts[:, 0]), np.arange(8), atol=1e-5)


class TestOverlayRGB:
    def test_outline_drawn_where_expected(self):
        img = torch.zeros(1, 10, 10)
        outline = torch.tensor([[2.0, 2.0], [7.0, 2.0], [7.0, 7.0], [2.0, 7.0]])
        rgb = render.overlay_rgb(img, outline, scale=4)
        assert rgb.shape == (40, 40, 3) and rgb.dtype == np.uint8
        red = (rgb[..., 0] > 200) & (rgb[..., 1] < 100)
        # pixel centre 2 -> canvas (2 + 0.5) * 4 = 10; the top edge runs along row 10
        assert red[10, 12:28].all()
        assert not red[20, 20]  # inside the region: untouched
        plain = render.overlay_rgb(img, scale=4)
        assert not ((plain[..., 0] > 200) & (plain[..., 1] < 100)).any()

    def test_margin_and_max_side(self):
        rgb = render.overlay_rgb(torch.zeros(3, 100, 100), scale=8, max_side=320, margin=0.25)
        assert rgb.shape == (150 * 3, 150 * 3, 3)  # scale capped at 3, 25 px margin each side

    def test_encode(self):
        rgb = render.overlay_rgb(torch.rand(3, 16, 16), scale=2)
        png, jpg = render.encode(rgb, "png"), render.encode(rgb, "jpeg")
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and jpg[:2] == b"\xff\xd8"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)
        with pytest.raises(ValueError, match="fmt must be 'png' or 'jpeg', got 'gif'"):
            render.encode(rgb, "gif")


def _red(rgb):
    return (rgb == (255, 59, 48)).all(-1)  # OUTLINE_COLOR


class TestRegionTile:
    """The one "input with its sampled region | output" picture (widgets and animation frames)."""

    @staticmethod
    def _zoom(size=28):
        theta = torch.tensor([[[0.5, 0.0, 0.1], [0.0, 0.5, 0.0]]])
        image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0))
        out = geometry.warp(image, geometry.affine_grid(theta, (size, size)))[0]
        return image[0], out, geometry.sampled_outline(theta, "affine", (size, size))[0]

    def test_panels_at_their_own_size_are_the_overlays(self):
        image, out, outline = self._zoom()
        box = torch.tensor([3.0, 4.0, 20.0, 22.0])
        lattice = render.lattice_points(geometry.affine_grid(torch.eye(2, 3)[None], (28, 28))[0], (28, 28), 4)
        a, b = render.region_panels(image, out, outline, lattice, box, scale=5, margin=0.25)
        assert np.array_equal(a, render.overlay_rgb(image, outline, lattice, box, scale=5, margin=0.25))
        assert np.array_equal(b, render.overlay_rgb(out, scale=5))
        assert a.shape == ((28 + 14) * 5, (28 + 14) * 5, 3) and b.shape == (140, 140, 3)

    def test_tile_lays_the_panels_side_by_side(self):
        image, out, outline = self._zoom()
        a, b = render.region_panels(image, out[:, :14, :20], outline, scale=3, margin=0.25)  # panels of two heights
        tile = render.region_tile(image, out[:, :14, :20], outline, scale=3, margin=0.25, gap=5, background=(1, 2, 3))
        assert tile.shape == (a.shape[0], a.shape[1] + 5 + b.shape[1], 3) and tile.dtype == np.uint8
        assert np.array_equal(tile[:, :a.shape[1]], a)
        assert np.array_equal(tile[:b.shape[0], a.shape[1] + 5:], b)
        assert (tile[:, a.shape[1]:a.shape[1] + 5] == (1, 2, 3)).all()  # the gap
        assert (tile[b.shape[0]:, a.shape[1] + 5:] == (1, 2, 3)).all()  # under the shorter panel

    def test_fixed_size_magnifies_by_whole_factors(self):
        image, out, outline = self._zoom()
        tile = render.region_tile(image, out, outline, margin=0.15, size=112, gap=4)
        assert tile.shape == (112, 228, 3)
        a, b = tile[:, :112], tile[:, 116:]
        assert _red(a).any() and not _red(b).any()  # the region is drawn on the input only
        # 28 px output into 112: magnified 4x, so each image pixel is a 4 x 4 block
        shown = np.asarray(render.to_display(out) * 255 + 0.5, dtype=np.uint8)
        assert np.array_equal(b[::4, ::4, 0], shown) and np.array_equal(b[3::4, 3::4, 0], shown)

    def test_overlay_square(self):
        image, _, outline = self._zoom()
        sq = render.overlay_square(image, 100, outline, margin=0.15)  # 36 px with margins: 2x, then resized
        big = render.overlay_rgb(image, outline, scale=2, margin=0.15)
        assert sq.shape == (100, 100, 3) and big.shape == (72, 72, 3)
        assert np.array_equal(sq, np.asarray(Image.fromarray(big).resize((100, 100), Image.NEAREST)))
        assert render.overlay_square(torch.zeros(1, 300, 300), 20).shape == (20, 20, 3)  # never below 1x: shrunk

    def test_control_points(self):
        image, out, _ = self._zoom()
        pts = torch.tensor([[5.0, 5.0], [20.0, 20.0], [float("nan"), 3.0]])
        a, _ = render.region_panels(image, out, points=pts, selected=1, scale=4, margin=0.0)
        pink, blue = (a == (255, 45, 212)).all(-1), (a == (50, 210, 255)).all(-1)
        assert blue[22, 22] and not pink[22, 22]  # (5 + 0.5) * 4 = 22: an unselected point
        assert pink[82, 82] and not blue.any(-1)[60:].any()  # the selected one at (20 + 0.5) * 4, pink only

    @pytest.mark.parametrize("kw, message", [
        ({"size": 0}, "size must be a whole number of pixels >= 1, got 0"),
        ({"size": 2.5}, "size must be a whole number of pixels >= 1, got 2.5"),
        ({"gap": -1}, "gap must be a whole number of pixels >= 0, got -1"),
    ])
    def test_bad_sizes(self, kw, message):
        image, out, outline = self._zoom(8)
        with pytest.raises(ValueError, match=re.escape(message)):
            render.region_tile(image, out, outline, **kw)


class TestFormatTheta:
    def test_decomposition_text(self):
        theta = geometry.compose_affine(rotation=torch.tensor([np.pi / 6]), scale_x=0.5, scale_y=0.5, tx=0.25)
        text = render.format_theta(theta[0])
        assert text.splitlines() == ["[+0.433 -0.250 +0.250]", "[+0.250 +0.433 +0.000]", "rotation     +30.0°",
                                     "scale       +0.500 × +0.500", "shear       +0.000", "translation +0.250 +0.000"]
        line = render.format_theta(theta[0], layout="line")
        assert line == "[+0.433 -0.250 +0.250; +0.250 +0.433 +0.000]  " + ", ".join(
            ["rotation +30.0°", "scale +0.500 × +0.500", "shear +0.000", "translation +0.250 +0.000"])

    def test_singular(self):
        assert render.format_theta(torch.zeros(2, 3)).splitlines()[2:] == ["singular: no decomposition"]
        assert render.format_theta(torch.tensor([[1.0, 0, 0], [0, 1e-13, 0]], dtype=torch.float64)).endswith("singular: no decomposition")
        assert render.format_theta(torch.tensor([[math.nan, 0, 0], [0, 1, 0]])).endswith("not finite: no decomposition")
        with pytest.raises(ValueError, match="layout must be 'block' or 'line', got 'table'"):
            render.format_theta(torch.eye(2, 3), layout="table")

    def test_one_text_everywhere(self, device):
        """The theta table, the explorer and the figures write theta with format_theta."""
        from stnviz.analysis import theta_table
        from stnviz.widgets import render_explorer

        theta = torch.tensor([[0.7, -0.2, 0.1], [0.3, 0.9, -0.4]])
        assert render_explorer(torch.zeros(1, 8, 8), theta.flatten().tolist(), "affine").theta_text.rstrip("\n") == \
            render.format_theta(theta)
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.5, 0.1, -0.2, 0.0, 0.6, 0.3]))
        with capture(model) as rec:
            model(torch.rand(1, 1, 28, 28, device=device))
        assert theta_table(rec)["theta"][0] == render.format_theta(rec.last().theta[0], decomposed=False, layout="line")
        ax_in, ax_out = render.plot_record(rec.last(), 0)
        assert ax_out.texts[0].get_text() == render.format_theta(rec.last().theta[0])
        plt.close("all")


class TestPlots:
    def test_plot_record_and_batch(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        model.transformers[0].set_constant_params(torch.tensor([0.5, 0, 0, 0, 0.5, 0]))
        with capture(model) as rec:
            logits = model(torch.rand(3, 1, 28, 28, device=device))
        r = rec.last()
        ax_in, ax_out = render.plot_record(r, 1, prediction="7", box=torch.tensor([5.0, 5, 20, 20]))
        line = ax_in.lines[0].get_xydata()
        # attention window of half size: the outline spans pixels 6.5 .. 20.5 (edges of the central half)
        assert line[:, 0].min() == pytest.approx(6.5) and line[:, 0].max() == pytest.approx(20.5)
        assert "output: 7" in ax_out.get_title()
        assert "rotation" in ax_out.texts[0].get_text()
        assert len(ax_in.patches) == 1  # the annotated box
        fig = render.plot_batch(r, predictions=logits.argmax(1), labels=torch.tensor([1, 2, 3]), n=2)
        assert len(fig.axes) == 6  # per row: input, output, theta text
        ins, outs = fig.axes[0], fig.axes[1]
        assert ins.get_position().width == pytest.approx(outs.get_position().width, rel=0.02)  # equal panels
        assert ins.get_facecolor()[:3] != (1.0, 1.0, 1.0)  # a grey margin, no white strips
        assert "rotation" in fig.axes[2].texts[0].get_text()
        plt.close("all")

    def test_draw_outline_rejects_nan(self):
        with pytest.raises(ValueError, match="non-finite"):
            render.draw_outline(np.array([[0, 0], [np.nan, 1]]))


def _record(role="image", inp=None, grid=None, *, key="m:grid_sample", image_channels=None):
    """A capture record made here: ``inp`` sampled at ``grid`` (default: a digit-sized image, an
    identity grid)."""
    from stnviz.capture import TransformRecord

    inp = torch.rand(2, 1, 8, 8) if inp is None else inp
    grid = geometry.affine_grid(torch.eye(2, 3).expand(inp.shape[0], 2, 3), inp.shape[-2:]) if grid is None else grid
    return TransformRecord(key=key, module="m", call=0, family=None, input=inp, params=None, grid=grid,
                           output=geometry.warp(inp, grid), role=role, image_channels=image_channels)


class TestRoles:
    """plot_batch and plot_record draw each record as its role says (stnviz.capture.roles)."""

    def test_points_drawn_on_the_input_without_output(self):
        grid = torch.rand(2, 5, 1, 2) * 2 - 1  # PointRend's (N, P, 1, 2) columns of points
        r = _record("points", grid=grid)
        fig = render.plot_batch(r, n=2)
        assert len(fig.axes) == 4  # per row: input with points, text; no output panel
        assert not any("output" in ax.get_title() for ax in fig.axes)
        assert fig.axes[0].get_title() == "input + sampled points" and not fig.axes[0].lines  # no region polygon
        pts = fig.axes[0].collections[0].get_offsets()
        np.testing.assert_allclose(pts, geometry.grid_to_pixels(grid[0], (8, 8)).reshape(-1, 2).numpy(), atol=1e-5)
        assert "5 points" in fig.axes[1].texts[0].get_text() and not fig.axes[1].axison  # a summary, no image
        plt.close("all")

    def test_lookup_refused_by_name_with_a_summary(self):
        r = _record("lookup", torch.rand(128, 1, 8, 8), torch.rand(128, 7, 7, 2) * 2 - 1, key="corr:grid_sample")
        for draw in (render.plot_batch, render.plot_record):
            with pytest.raises(ValueError, match=r"'corr:grid_sample': it is a lookup .* 128 look-ups of 7 x 7 points"):
                draw(r)
        with pytest.raises(ValueError, match=r"nothing it can draw.*'corr:grid_sample' \(lookup, 2-D\)"):
            render.plot_batch([r])
        plt.close("all")

    def test_flow_drawn_as_a_field_when_asked(self):
        flow = _record("flow", torch.randn(2, 2, 8, 8))
        image = _record("image", key="m:grid_sample#1")
        fig = render.plot_batch([flow, image], n=1)  # not asked: the image only
        assert len(fig.axes) == 3 and fig.axes[0].get_title() == "input + sampled region"
        fig = render.plot_batch([flow, image], n=1, auxiliary=True)
        assert [ax.get_title() for ax in fig.axes[::3]] == ["m:grid_sample\nfield + sampled region",
                                                             "m:grid_sample#1\ninput + sampled region"]
        assert fig.axes[0].collections and fig.axes[1].get_title() == "warped field"  # arrows over the magnitude
        plt.close("all")

    def test_fill_mask_channel_not_drawn(self):
        image = torch.rand(2, 3, 8, 8)
        r = _record("image", torch.cat([image, torch.ones(2, 1, 8, 8)], 1), image_channels=3)
        ax_in, ax_out = render.plot_record(r, 1)
        np.testing.assert_allclose(ax_in.images[0].get_array(), image[1].permute(1, 2, 0).numpy(), atol=1e-6)
        assert ax_out.images[0].get_array().shape == (8, 8, 3)  # RGB, not a grey mean of four channels
        plt.close("all")

    def test_three_d_refused_by_name_everywhere(self):
        from stnviz.capture import TransformRecord

        vol = torch.rand(1, 1, 4, 6, 6)
        grid = torch.rand(1, 4, 6, 6, 3) * 2 - 1
        r = TransformRecord(key="vol:grid_sample", module="", call=0, family=None, input=vol, params=None, grid=grid,
                            output=torch.nn.functional.grid_sample(vol, grid, align_corners=False), spatial_dims=3)
        for draw in (render.plot_batch, render.plot_record):
            with pytest.raises(ValueError, match="2-D samplers only; record 'vol:grid_sample' is a 3-D"):
                draw(r)
        with pytest.raises(ValueError, match="'vol:grid_sample' \\(image, 3-D\\)"):
            render.plot_batch([r])

    def test_a_whole_capture(self, device):
        model = get_model("stn_tutorial", device=device).eval()
        with torch.no_grad(), capture(model) as rec:
            model(torch.rand(3, 1, 28, 28, device=device))
            model(torch.rand(3, 1, 28, 28, device=device))
        fig = render.plot_batch(rec, n=2)  # the latest record of each key
        assert len(fig.axes) == 6
        np.testing.assert_allclose(fig.axes[0].images[0].get_array(), rec.last().input[0, 0].cpu().numpy(), atol=1e-6)
        plt.close("all")


class TestOneDecomposition:
    """render.format_theta, analysis.decomposed_theta and geometry.decompose_affine give one answer,
    also for near-singular theta (where three formulas once gave three)."""

    @pytest.mark.parametrize("theta", [
        [[0.8, -0.3, 0.1], [0.3, 0.8, -0.05]],
        [[1e-7, 0.0, 0.2], [0.0, 1.0, 0.0]],      # near-singular: scale_x below tolerance in float32
        [[1.0, 2.0, 0.0], [0.5, 1.0 + 1e-9, 0.0]],  # det ~ 1e-9
    ])
    def test_same_answer(self, theta):
        t = torch.tensor(theta, dtype=torch.float64).view(1, 2, 3)
        parts = geometry.decompose_affine(t, singular="nan")
        row = decomposed_theta(t).iloc[0]
        text = render.format_theta(t[0])
        if math.isnan(float(parts.scale_x[0])):
            assert math.isnan(row["scale_x"]) and "singular" in text
            with pytest.raises(ValueError, match="non-singular"):
                geometry.decompose_affine(t)
        else:
            assert row["rotation_deg"] == pytest.approx(math.degrees(float(parts.rotation[0])))
            assert f"rotation    {round(math.degrees(float(parts.rotation[0])), 1) + 0.0:+6.1f}°" in text
            assert f"scale       {float(parts.scale_x[0]):+.3f} × {float(parts.scale_y[0]):+.3f}" in text

    def test_nan_rows_keep_translation(self):
        t = torch.tensor([[[0.0, 0.0, 0.3], [0.0, 0.0, -0.2]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        p = geometry.decompose_affine(t, singular="nan")
        assert torch.isnan(p.rotation[0]) and p.tx[0] == pytest.approx(0.3) and p.scale_x[1] == 1.0


def test_family_table_is_the_one_list():
    """Every family has a row; the ladders answer from it."""
    assert tuple(geometry.FAMILY_TABLE) == geometry.FAMILIES
    assert geometry.AFFINE_FAMILIES == ("affine", "attention", "restricted", "translation")
    for name, f in geometry.FAMILY_TABLE.items():
        comps = ("rotation", "scale") if name == "restricted" else None
        ident = geometry.identity_params(name, components=comps, control_points=9)
        assert ident.numel() == geometry.num_params(name, components=comps, control_points=9)
        shaped = geometry.shape_params(ident.unsqueeze(0), name)
        grid = geometry.make_grid(shaped, name, (5, 7), components=comps)
        torch.testing.assert_close(grid, geometry.affine_grid(torch.eye(2, 3).unsqueeze(0), (5, 7)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="family must be one of"):
        geometry.family_info("similarity")


# --------------------------------------------------------------------------- issue 20 item 2: one display pipeline

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _photo(size: int = 32) -> torch.Tensor:
    """A smooth colour picture ``(1, 3, size, size)`` spanning exactly [0, 1]."""
    ii, jj = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    x = torch.stack([0.6 * ii + 0.4 * jj, 0.3 * ii + 0.7 * jj, 1 - 0.5 * ii - 0.5 * jj])
    return ((x - x.min()) / (x.max() - x.min())).unsqueeze(0)


def _imagenet(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)) / torch.tensor(IMAGENET["std"]).view(1, 3, 1, 1)


def _clipped(picture) -> float:
    """The fraction of a drawn picture's values at 0 or 1 (float) or 0 or 255 (uint8)."""
    a = np.asarray(picture, dtype=np.float64)
    top = 255 if np.asarray(picture).dtype == np.uint8 else 1
    return float(((a <= 0) | (a >= top)).mean())


class TestDisplay:
    def test_undoes_a_normalisation(self):
        x = _photo()
        assert _clipped(_imagenet(x)) > 0.3  # what plot_batch drew before: most pixels clipped
        np.testing.assert_allclose(render.Display(**IMAGENET).apply(_imagenet(x)), x, atol=1e-5)
        np.testing.assert_allclose(render.Display(mean=[0.5], std=[0.5]).apply(x * 2 - 1), x, atol=1e-6)
        undo = render.Display(denormalize=lambda t: (t + 1) / 2)
        np.testing.assert_allclose(undo.apply(x * 2 - 1), x, atol=1e-6)

    def test_out_of_range_is_stretched_once_with_a_note(self):
        from stnviz.render import display

        x = _photo()
        display._noted.discard("a test")
        with pytest.warns(UserWarning, match="a test: images outside \\[0, 1\\] .* shown stretched"):
            shown = render.Display().apply(x * 2 - 1, where="a test")
        np.testing.assert_allclose(shown, x, atol=1e-6)  # [-1, 1] spanning the range: the picture again
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            render.Display().apply(x * 2 - 1, where="a test")  # once
            assert torch.equal(render.Display().apply(x), x)  # in range: untouched
        # the output follows its input's range, so both panels agree
        out = render.Display().apply(torch.zeros(1, 3, 4, 4), x * 2 - 1, where="a test")
        np.testing.assert_allclose(out, 0.5)
        assert render.Display().stretches(x * 2 - 1).tolist() == [True]
        assert render.Display(mean=[0.5], std=[0.5]).stretches(x * 2 - 1).tolist() == [False]

    def test_bgr_and_feature_maps(self):
        red_in_bgr = torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
        assert render.Display(channels="bgr").apply(red_in_bgr)[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
        features = torch.randn(2, 16, 4, 4) * 5
        assert torch.equal(render.Display(**IMAGENET).apply(features), features)  # shown by their channel mean

    def test_contrast_and_class_names(self):
        dark = _photo() * 0.1
        shown = render.Display(contrast=True).apply(dark)
        assert float(shown.max()) == 1.0 and float(shown.min()) == 0.0
        assert render.Display(class_names=["zero", "one"]).name(1) == "one"
        assert render.class_name(3) == "3" and render.class_name(None) == "?"

    def test_bad_settings(self):
        with pytest.raises(ValueError, match="pass both mean and std"):
            render.Display(mean=[0.5])
        with pytest.raises(ValueError, match="pass mean/std or denormalize, not both"):
            render.Display(mean=[0.5], std=[0.5], denormalize=lambda t: t)
        with pytest.raises(ValueError, match="channels must be 'rgb' or 'bgr', got 'hsv'"):
            render.Display(channels="hsv")
        with pytest.raises(ValueError, match="mean and std must have one value per channel each, got 3 and 2"):
            render.Display(mean=[0.1, 0.2, 0.3], std=[0.5, 0.5])
        with pytest.raises(ValueError, match="display must be a stnviz.render.Display, got dict"):
            render.display_of(display={"mean": [0.5]})

    def test_remembered_per_model_and_capture(self, device):
        from stnviz.capture import collect_batch

        model = get_model("stn_gtsrb", device=device).eval()
        assert render.display_of(model) == render.Display()
        render.set_display(model, **IMAGENET)
        _, rec = collect_batch(model, _imagenet(_photo()))
        assert render.display_of(rec).mean == IMAGENET["mean"]  # the capture took the model's
        render.set_display(model)  # forgotten
        assert render.display_of(model) == render.Display()


class TestPlotBatchDisplay:
    """plot_batch draws normalised inputs unclipped and BGR inputs in RGB."""

    @pytest.fixture
    def model(self, device):
        return get_model("stn_gtsrb", device=device).eval()  # untrained: the identity

    def _drawn(self, model, images, **kwargs):
        from stnviz.capture import collect_batch

        _, rec = collect_batch(model, images)
        fig = render.plot_batch(rec.pick("transformer"), n=1, **kwargs)
        pictures = [np.asarray(fig.axes[k].images[0].get_array()) for k in (0, 1)]
        plt.close(fig)
        return pictures

    @pytest.mark.parametrize("how", ["imagenet", "minus_one_to_one"])
    def test_normalised_inputs_are_not_clipped(self, model, how):
        x = _photo()
        given = _imagenet(x) if how == "imagenet" else x * 2 - 1
        for display in (None, render.Display(**IMAGENET) if how == "imagenet" else render.Display(mean=[0.5], std=[0.5])):
            for picture in self._drawn(model, given, display=display):
                assert _clipped(picture) < 0.01, (how, display)
        inp, out = self._drawn(model, given, display=render.Display(**IMAGENET) if how == "imagenet" else None)
        np.testing.assert_allclose(inp, x[0].permute(1, 2, 0).numpy(), atol=1e-4)  # the true colours
        np.testing.assert_allclose(out, inp, atol=0.02)  # the identity warp

    def test_bgr_is_drawn_rgb(self, model):
        red = torch.zeros(1, 3, 32, 32)
        red[:, 2] = 0.9  # red, in BGR order
        inp, _ = self._drawn(model, red, display=render.Display(channels="bgr"))
        assert inp[..., 0].min() > 0.85 and inp[..., 2].max() < 0.05

    def test_class_names_and_contrast(self, model):
        from stnviz.capture import collect_batch

        _, rec = collect_batch(model, _photo() * 0.1)
        fig = render.plot_batch(rec.pick("transformer"), predictions=torch.tensor([14]), labels=torch.tensor([14]),
                                display=render.Display(contrast=True, class_names={14: "stop"}))
        assert fig.axes[1].get_title() == "output: pred stop (true stop)"
        assert np.asarray(fig.axes[0].images[0].get_array()).max() == 1.0  # a dark frame, stretched
        plt.close(fig)
