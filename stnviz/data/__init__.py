"""Data: procedurally drawn test images (more data sets arrive with the training work)."""

from .procedural import draw_glyphs

__all__ = ["draw_glyphs"]
