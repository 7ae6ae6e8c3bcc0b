import struct
from pathlib import Path

import numpy as np
import pytest

from stnviz.data import sample


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
    images, labels = s.images[:, 0].numpy(), s.labels.numpy()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(labels))
    tr, te = order[:800], order[800:]
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images[tr])
    write_idx(raw / "train-labels-idx1-ubyte", labels[tr])
    write_idx(raw / "t10k-images-idx3-ubyte", images[te])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[te])
    return root
