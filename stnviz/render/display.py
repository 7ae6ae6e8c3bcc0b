"""The one display pipeline: how the pixels a model saw become the pixels a picture shows.

A model may see images normalised (ImageNet's ``mean`` / ``std``, ``[-1, 1]``), in BGR order or
dark; a picture needs RGB in ``[0, 1]``. :class:`Display` says how to get there, and
:meth:`Display.apply` does it, once, for every drawing entry point: :func:`stnviz.render.plot_batch`
and :func:`~stnviz.render.plot_record`, the explorer, the inspector, the stability viewer,
:func:`stnviz.animate.sequence_frames`, the GIF / MP4 frames and the training player.

The steps, in order (each picture ``(C, H, W)`` on its own; pictures have 1 or 3 channels, and
feature maps with other counts are passed through untouched, shown by their channel mean):

1. undo the normalisation: ``denormalize(x)``, else ``x * std + mean`` per channel; without
   either, a picture whose reference (its input) leaves ``[0, 1]`` is stretched to the
   reference's own range, with a one-time note saying so;
2. ``channels="bgr"``: reverse the channel order (the ``mean`` / ``std`` are in the model's order);
3. ``contrast=True``: stretch the 1st-99th percentile to black-white (dark frames, GTSRB);
4. clip to ``[0, 1]``.

Remembered per model, capture or run: :func:`set_display` stores a :class:`Display` on the object
as its ``stnviz_display`` attribute, and every entry point that is given that object (a model, a
capture, a :class:`stnviz.analysis.SequenceRun`, a :class:`stnviz.animate.ProgressRecorder`)
reads it with :func:`display_of` when no ``display=`` is passed. ``class_names`` travel in the same
object: :func:`class_name` is the one way a class number becomes text.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Sequence

import numpy as np
import torch

__all__ = ["Display", "class_name", "display_of", "set_display", "stretch_contrast"]

#: a picture whose reference leaves [-tol, 1 + tol] is out of range
_RANGE_TOLERANCE = 0.02
_noted: set = set()


def stretch_contrast(images, low: float = 1.0, high: float = 99.0) -> torch.Tensor:
    """Contrast stretch of each picture: its ``low`` / ``high`` percentiles (over all its
    channels) to 0 / 1, clipped. ``images (B, C, H, W)`` (or one ``(C, H, W)``) -> the same shape,
    float. A flat picture is left as it is.

    Example:
        >>> dark = torch.linspace(0.0, 0.2, 101).view(1, 1, 1, 101)  # a dark frame
        >>> s = stretch_contrast(dark)
        >>> round(float(s.min()), 3), round(float(s.max()), 3), round(float(s[0, 0, 0, 50]), 3)
        (0.0, 1.0, 0.5)
    """
    x = torch.as_tensor(images).detach().float()
    one = x.dim() == 3
    b = x.unsqueeze(0) if one else x
    if b.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    flat = b.reshape(b.shape[0], -1)
    q = torch.quantile(flat, torch.tensor([low / 100, high / 100]), dim=1)  # (2, B)
    lo, hi = q[0].view(-1, 1, 1, 1), q[1].view(-1, 1, 1, 1)
    flatness = hi <= lo
    out = torch.where(flatness, b, ((b - lo) / torch.where(flatness, torch.ones_like(hi), hi - lo)).clamp(0, 1))
    return out[0] if one else out


def class_name(c, class_names=None) -> str:
    """Class ``c`` as text: ``class_names[c]`` (a sequence or a dict) when given, else the number;
    ``"?"`` for ``None``.

    Example:
        >>> from stnviz.data import GTSRB_CLASS_NAMES
        >>> class_name(14, GTSRB_CLASS_NAMES), class_name(14), class_name(None)
        ('stop', '14', '?')
    """
    if c is None:
        return "?"
    c = int(c)
    return str(class_names[c]) if class_names is not None else str(c)


@dataclasses.dataclass(frozen=True)
class Display:
    """How a model's input becomes a picture: see the module's steps.

    Args:
        mean, std: per-channel values the data pipeline normalised with (in the model's channel
            order); one value each for all channels, or one per channel. Both or neither.
        denormalize: ``f((B, C, H, W)) -> (B, C, H, W)`` in [0, 1], for other schemes (not with
            ``mean`` / ``std``).
        channels: ``"rgb"`` or ``"bgr"`` (the order of the model's 3 channels).
        contrast: stretch each picture's 1st-99th percentile to black-white (dark frames).
        class_names: names of the classes (a sequence or dict), for captions and titles.

    Example:
        >>> mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
        >>> photo = torch.rand(2, 3, 8, 8) * 0.98 + 0.01
        >>> normalised = (photo - mean.view(3, 1, 1)) / std.view(3, 1, 1)  # what an ImageNet model sees
        >>> shown = Display(mean=mean, std=std).apply(normalised)  # back in [0, 1], nothing clipped
        >>> tuple(shown.shape), bool(torch.allclose(shown, photo, atol=1e-5))
        ((2, 3, 8, 8), True)
        >>> Display(channels="bgr").apply(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)).flatten().tolist()
        [1.0, 0.5, 0.0]
    """

    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    denormalize: Callable | None = None
    channels: str = "rgb"
    contrast: bool = False
    class_names: Sequence | dict | None = None

    def __post_init__(self):
        if (self.mean is None) != (self.std is None):
            raise ValueError("pass both mean and std (the values the inputs were normalised with), or neither; "
                             f"got mean={self.mean!r}, std={self.std!r}")
        if self.denormalize is not None and self.mean is not None:
            raise ValueError("pass mean/std or denormalize, not both")
        if self.denormalize is not None and not callable(self.denormalize):
            raise ValueError(f"denormalize must be callable (B, C, H, W) -> (B, C, H, W), got "
                             f"{type(self.denormalize).__name__}")
        if self.channels not in ("rgb", "bgr"):
            raise ValueError(f"channels must be 'rgb' or 'bgr', got {self.channels!r}")
        if self.mean is not None:
            for name in ("mean", "std"):  # plain tuples: hashable, printable, comparable
                object.__setattr__(self, name, tuple(float(v) for v in np.asarray(getattr(self, name)).reshape(-1)))
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean and std must have one value per channel each, got {len(self.mean)} and "
                                 f"{len(self.std)}")

    @property
    def knows_range(self) -> bool:
        """True when the display undoes a normalisation (no stretch to the picture's own range)."""
        return self.mean is not None or self.denormalize is not None

    def stretches(self, reference) -> torch.Tensor:
        """Which pictures of ``reference (B, C, H, W)`` would be stretched to their own range:
        ``(B,)`` bool (never with ``mean`` / ``std`` or ``denormalize``; only 1- or 3-channel
        pictures, feature maps are shown by their channel mean)."""
        ref = _batch(reference)
        if self.knows_range or ref.shape[1] not in (1, 3):
            return torch.zeros(ref.shape[0], dtype=torch.bool)
        lo, hi = _range(ref)
        return ((lo < -_RANGE_TOLERANCE) | (hi > 1 + _RANGE_TOLERANCE)) & (hi > lo)

    def apply(self, images, reference=None, *, where: str = "stnviz.render") -> torch.Tensor:
        """``images (B, C, H, W)`` (or one ``(C, H, W)``) as the model saw them -> float on the CPU,
        same shape, in ``[0, 1]``, RGB.

        ``reference``: what decides the stretch of a picture without a denormaliser (default the
        images themselves; pass the input when drawing the output, so both panels share one
        range). ``where`` names the caller in the one-time note.
        """
        x = torch.as_tensor(images).detach()
        one = x.dim() == 3
        x = _batch(x)
        if not _is_picture(x, self.mean):  # a feature map: shown by its channel mean (render.to_display)
            return x[0] if one else x
        if self.denormalize is not None:
            x = _batch(self.denormalize(x.float())).detach().cpu().float()
        elif self.mean is not None:
            m = torch.tensor(self.mean).view(1, -1, 1, 1)
            s = torch.tensor(self.std).view(1, -1, 1, 1)
            x = x * s + m
        else:
            ref = x if reference is None else _batch(torch.as_tensor(reference).detach())
            if ref.shape[0] != x.shape[0]:
                raise ValueError(f"reference must hold one picture per image ({x.shape[0]}), got {ref.shape[0]}")
            stretch = self.stretches(ref)
            if bool(stretch.any()):
                lo, hi = _range(ref)
                span = torch.where(stretch, hi - lo, torch.ones_like(hi)).view(-1, 1, 1, 1)
                shift = torch.where(stretch, lo, torch.zeros_like(lo)).view(-1, 1, 1, 1)
                x = (x - shift) / span
                _note_once(where, float(lo.min()), float(hi.max()))
        if self.channels == "bgr" and x.shape[1] == 3:
            x = x.flip(1)
        if self.contrast and x.shape[1] in (1, 3):
            x = stretch_contrast(x)
        x = x.clamp(0, 1)
        return x[0] if one else x

    def name(self, c) -> str:
        """Class ``c`` by this display's ``class_names`` (:func:`class_name`)."""
        return class_name(c, self.class_names)


def _is_picture(x: torch.Tensor, mean) -> bool:
    """1 or 3 channels (and as many as ``mean`` has values, or ``mean`` has one): a picture the
    display pipeline applies to; other channel counts are feature maps."""
    c = x.shape[1]
    return c in (1, 3) and (mean is None or len(mean) in (1, c))


def _batch(x) -> torch.Tensor:
    """``(B, C, H, W)`` float on the CPU from ``(B, C, H, W)`` or ``(C, H, W)``."""
    x = torch.as_tensor(x).detach()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x.cpu().float()


def _range(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each picture's min and max, ``(B,)`` each."""
    flat = ref.reshape(ref.shape[0], -1)
    return flat.amin(1), flat.amax(1)


def _note_once(where: str, lo: float, hi: float) -> None:
    if where in _noted:
        return
    _noted.add(where)
    warnings.warn(f"{where}: images outside [0, 1] (from {lo:.3g} to {hi:.3g}) are shown stretched to each "
                  "picture's own range; pass display=stnviz.render.Display(mean=..., std=...) (or denormalize=) "
                  "for true colours, or remember it with stnviz.render.set_display(model, ...)", UserWarning,
                  stacklevel=3)


def set_display(owner, display: Display | None = None, **settings):
    """Remember how ``owner``'s pictures are shown: a model, a capture, a sequence run, a
    recorder ... (stored as ``owner.stnviz_display``); every drawing entry point given that object
    uses it unless it is given ``display=``. Pass a :class:`Display` or its fields; ``None`` and no
    fields forgets it. Returns ``owner``.

    Example:
        >>> class Model: pass
        >>> model = set_display(Model(), mean=[0.5], std=[0.5])  # a model fed [-1, 1] images
        >>> display_of(model).mean, display_of(object()) == Display()
        ((0.5,), True)
    """
    if display is not None and settings:
        raise ValueError(f"pass a Display or its fields, not both; got {display!r} and {sorted(settings)}")
    if display is None and settings:
        display = Display(**settings)
    if display is not None and not isinstance(display, Display):
        raise ValueError(f"display must be a stnviz.render.Display, got {type(display).__name__}")
    owner.stnviz_display = display
    return owner


def display_of(*owners, display: Display | None = None) -> Display:
    """The display to use: ``display`` when given, else the first one remembered by
    :func:`set_display` on ``owners`` (``None`` entries are skipped), else the default
    ``Display()`` (stretch out-of-range pictures, RGB).

    Example:
        >>> display_of(None, display=Display(channels="bgr")).channels
        'bgr'
    """
    if display is not None:
        if not isinstance(display, Display):
            raise ValueError(f"display must be a stnviz.render.Display, got {type(display).__name__}")
        return display
    for owner in owners:
        found = getattr(owner, "stnviz_display", None) if owner is not None else None
        if found is not None:
            return found
    return Display()
