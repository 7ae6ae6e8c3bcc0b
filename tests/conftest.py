import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from stnviz.device import resolve_device
from stnviz.data import sample

#: The variable that picks the device the suite runs models on; ``make test`` on a GPU host:
#: ``STNVIZ_TEST_DEVICE=cuda make test``.
DEVICE_VARIABLE = "STNVIZ_TEST_DEVICE"


def suite_device() -> torch.device:
    """``STNVIZ_TEST_DEVICE`` (default ``"cpu"``), resolved and checked once: ``cuda`` on a host
    without one is an error, never a silent fallback to the CPU. For code that cannot take a
    fixture (module-level settings, scripts run in a subprocess); tests take :func:`device`."""
    return resolve_device(os.environ.get(DEVICE_VARIABLE) or "cpu")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device every test that runs a model builds it on and feeds it tensors on."""
    return suite_device()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in MNIST's IDX format, as torchvision reads it from ``raw/``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """A torchvision MNIST folder built from the shipped 1,000 digits: 800 train, 200 test."""
    root = tmp_path_factory.mktemp("mnist_root")
    s = sample("mnist")
    images, labels = s.pixels[:, 0].numpy(), s.labels.numpy()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    tr, te = order[:800], order[800:]
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images[tr])
    write_idx(raw / "train-labels-idx1-ubyte", labels[tr])
    write_idx(raw / "t10k-images-idx3-ubyte", images[te])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[te])
    return root
