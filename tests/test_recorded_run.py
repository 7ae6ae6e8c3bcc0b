"""The demo's recorded training run: written, read back, rendered."""

import math

import numpy as np
import pytest
import torch

from stnviz.animate import Snapshot, compose_frame
from stnviz.demo import load_recorded_run, save_recorded_run


def _area(outline: torch.Tensor) -> float:
    """Shoelace area of a closed outline ``(P, 2)``."""
    x, y = outline[:, 0].double(), outline[:, 1].double()
    return float(0.5 * abs((x * y.roll(-1) - x.roll(-1) * y).sum()))


def _fake_snapshots(n=3, b=2):
    outline = torch.tensor([[0.0, 0], [9, 0], [9, 9], [0, 9]]).repeat_interleave(8, 0)
    return [Snapshot(step=10 * i, epoch=0.5 * i, params=torch.randn(b, 6), outputs=torch.rand(b, 1, 6, 6),
                     outlines=outline.expand(b, -1, -1) * (1 - 0.2 * i), loss=1.0 / (i + 1), accuracy=0.5,
                     train_loss=math.nan) for i in range(n)]


def test_round_trip(tmp_path):
    inputs, snaps = torch.rand(2, 1, 10, 10), _fake_snapshots()
    path = save_recorded_run(tmp_path / "run.npz", inputs, torch.tensor([3, 4]), snaps, {"command": "x"})
    got_inputs, got, meta = load_recorded_run(path)
    assert meta == {"command": "x"} and len(got) == 3
    assert torch.allclose(got_inputs, inputs, atol=1 / 255)  # images travel as uint8
    for a, b in zip(got, snaps):
        assert (a.step, a.epoch) == (b.step, b.epoch) and a.loss == pytest.approx(b.loss)
        assert torch.allclose(a.outlines, b.outlines) and torch.allclose(a.params, b.params)
        assert torch.allclose(a.outputs, b.outputs, atol=1 / 255)
    frame = compose_frame(got_inputs, got[0], columns=2, tile=32)
    assert frame.dtype == np.uint8 and frame.ndim == 3


def test_missing_file_and_empty_run(tmp_path):
    assert load_recorded_run(tmp_path / "none.npz") is None
    with pytest.raises(ValueError, match="at least one snapshot"):
        save_recorded_run(tmp_path / "run.npz", torch.rand(1, 1, 4, 4), None, [], {})
