"""stnviz.data.procedural: glyphs drawn from geometry (no files)."""

import pytest
import torch

from stnviz.data import draw_glyphs


class TestDrawGlyphs:
    def test_shapes_range_determinism(self):
        a = draw_glyphs(7, (20, 24), channels=3)
        assert a.shape == (7, 3, 20, 24) and a.dtype == torch.float32
        assert a.min() >= 0 and a.max() <= 1
        assert torch.equal(a, draw_glyphs(7, (20, 24), channels=3))

    def test_glyphs_show_orientation(self):
        """A half turn changes every glyph, and F / L change under either mirror, so the demo
        shows which way a transform turned or flipped."""
        g = draw_glyphs(size=(32, 32))
        assert (g - g.flip(-1, -2)).abs().amax(dim=(1, 2, 3)).min() > 0.5
        f_and_l = draw_glyphs(glyphs=("F", "L"), size=(32, 32))
        assert (f_and_l - f_and_l.flip(-1)).abs().amax(dim=(1, 2, 3)).min() > 0.5
        assert (f_and_l - f_and_l.flip(-2)).abs().amax(dim=(1, 2, 3)).min() > 0.5

    def test_bad_input(self):
        with pytest.raises(ValueError, match="positive number of images, got 0"):
            draw_glyphs(0)
        with pytest.raises(ValueError, match="glyph must be one of"):
            draw_glyphs(1, glyphs=("Q",))
