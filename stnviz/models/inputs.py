"""Checks on the images a model is given: float in ``[0, 1]``, shaped ``(B, C, H, W)``.

:func:`warn_if_not_unit_range` is the one place that decides whether images look like ``[0, 255]``
(or normalised) data passed where ``[0, 1]`` is expected; models, capture, analysis and widgets
all call it, so the warning reads the same everywhere and comes once per caller.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["ImageRangeWarning", "UNIT_RANGE_LIMIT", "as_image_batch", "warn_if_not_unit_range"]

#: A float image whose maximum is above this is "far above 1": not an image in [0, 1].
UNIT_RANGE_LIMIT = 2.0

_warned: set[str] = set()


class ImageRangeWarning(UserWarning):
    """Float images with values far above 1: probably ``[0, 255]`` data given as ``[0, 1]``.

    Example:
        >>> issubclass(ImageRangeWarning, UserWarning)  # filter it like any warning
        True
    """


def warn_if_not_unit_range(images: torch.Tensor, *, where: str = "the model") -> bool:
    """Warn once per ``where`` when float ``images``' maximum is far above 1; return True if it is.

    ``where`` names the receiver in the message (e.g. ``"stn_tutorial"``, ``"capture"``).
    Integer tensors are not checked (they are scaled by their dtype's range where accepted).

    Example:
        >>> warn_if_not_unit_range(torch.rand(1, 1, 4, 4))
        False
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_not_unit_range(torch.full((1, 1, 4, 4), 255.0), where="a docstring example")
        True
        >>> caught[0].category.__name__
        'ImageRangeWarning'
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.numel() == 0:
        return False
    peak = float(images.detach().amax())
    if not peak > UNIT_RANGE_LIMIT:  # also False for NaN
        return False
    if where not in _warned:
        _warned.add(where)
        hint = " (0-255 pixel values: divide by 255)" if peak > 10 else " (normalised images: pass them un-normalised)"
        warnings.warn(
            f"{where} expects float images in [0, 1], got values up to {peak:.4g}{hint}; the results are "
            f"probably wrong. This warning is shown once.",
            ImageRangeWarning,
            stacklevel=3,
        )
    return True


def as_image_batch(x: torch.Tensor, *, channels_height_width=None, dtype: torch.dtype = torch.float32,
                   where: str = "the model") -> torch.Tensor:
    """Check and convert a model input: ``(B, C, H, W)``; uint8 is scaled to [0, 1], float64 /
    float16 cast to ``dtype`` (the model's); other dtypes are refused with what is expected.
    ``channels_height_width``: the ``(C, H, W)`` the model was built for, checked when given.

    Example:
        >>> x = as_image_batch(torch.full((1, 1, 4, 4), 255, dtype=torch.uint8))
        >>> x.dtype, float(x.max())
        (torch.float32, 1.0)
        >>> as_image_batch(x, channels_height_width=(1, 28, 28), where="stn_tutorial")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: stn_tutorial was built for 28x28 images, got 4x4 (shape (1, 1, 4, 4)); ...
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where} expects a tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dtype == torch.uint8:
        x = x.to(dtype) / 255.0
    elif x.is_floating_point():
        if x.dtype != dtype:
            x = x.to(dtype)
    else:
        raise TypeError(
            f"{where} expects float images in [0, 1] ({dtype}) or uint8 in [0, 255], got dtype {x.dtype}"
        )
    if channels_height_width is not None:
        c, h, w = (int(s) for s in channels_height_width)
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(f"{where} expects images (B, {c}, {h}, {w}), got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (h, w):
            raise ValueError(
                f"{where} was built for {h}x{w} images, got {x.shape[-2]}x{x.shape[-1]} (shape {tuple(x.shape)}); "
                f"resize the images or use a model built for input_size=({c}, {x.shape[-2]}, {x.shape[-1]})"
            )
    warn_if_not_unit_range(x, where=where)
    return x
