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
from .distortions import DISTORTIONS, DistortedMNIST, distort, hash_uniform
from .imageset import Batch, ImageSet, epoch_order, to_device
from .augment import Reframed, place_object, random_affine
from .procedural import draw_glyphs
from .sequences import read_frames, resize_frames
from .shipped import build_samples, read_npz, sample, sample_tracks

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
    "Reframed",
    "Track",
    "cifar10",
    "data_root",
    "distort",
    "draw_glyphs",
    "epoch_order",
    "hash_uniform",
    "place_object",
    "random_affine",
    "read_frames",
    "read_npz",
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
    "to_device",
    "tracks_of",
]
