"""Data: torchvision-backed sets held in tensors, the paper's distortions, GTSRB tracks, shipped samples."""

from .catalog import DATASETS, Splits, distorted_test_set, load_splits
from .classes import GTSRB_CLASS_NAMES, MNIST_CLASS_NAMES
from .datasets import (
    GTSRB_NUM_CLASSES,
    Track,
    cifar10,
    data_root,
    fashion_mnist,
    gtsrb,
    gtsrb_tracks,
    mnist,
    split_tracks,
    svhn,
    tracks_of,
)
from .distortions import DISTORTIONS, DistortedMNIST, distort
from .imageset import Batch, ImageSet
from .augment import random_affine
from .procedural import draw_glyphs
from .sequences import read_frames, resize_frames
from .shipped import build_samples, sample, sample_tracks

__all__ = [
    "DATASETS",
    "GTSRB_CLASS_NAMES",
    "MNIST_CLASS_NAMES",
    "Splits",
    "distorted_test_set",
    "load_splits",
    "DISTORTIONS",
    "GTSRB_NUM_CLASSES",
    "Batch",
    "DistortedMNIST",
    "ImageSet",
    "Track",
    "cifar10",
    "data_root",
    "distort",
    "draw_glyphs",
    "random_affine",
    "read_frames",
    "resize_frames",
    "sample",
    "sample_tracks",
    "build_samples",
    "fashion_mnist",
    "gtsrb",
    "gtsrb_tracks",
    "mnist",
    "split_tracks",
    "svhn",
    "tracks_of",
]
