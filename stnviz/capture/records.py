"""What a capture holds: :class:`TransformRecord` (one sampler call), :class:`Capture` (the records of
one ``capture`` context) and the errors and warnings of capturing."""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from .. import geometry

__all__ = ["Capture", "CaptureError", "CaptureWarning", "TransformRecord"]


class CaptureError(RuntimeError):
    """Nothing was captured, a record was asked for that does not exist, or the model can't be
    seen into (TorchScript, a compiler error).

    Example:
        >>> from stnviz.capture import capture
        >>> layer = torch.nn.Linear(4, 2)  # samples nothing
        >>> with capture(layer):  # doctest: +ELLIPSIS
        ...     _ = layer(torch.rand(1, 4))
        Traceback (most recent call last):
        ...
        stnviz.capture.records.CaptureError: nothing captured: the model has no stnviz SpatialTransformer and made no ...
    """


class CaptureWarning(RuntimeWarning):
    """A sampler call (or a capture hook) could not be recorded; the forward ran unchanged and the
    capture goes on with one record less (``Capture.skipped`` counts them). Given once per capture."""


@dataclass
class TransformRecord:
    """One sampler call (``grid_sample``) of one transformer.

    Attributes:
        key: stable name to pick the record by: the transformer's module name for stnviz
            transformers (``"transformer"``), else the module running the call, ``.method``
            when it was driven through a method other than ``forward``, and ``":grid_sample"``
            (``"stn:grid_sample"``, ``"LIIF.query_rgb:grid_sample"``); the k-th call of the same
            one in a capture pass (one forward of the model; outside a forward, the calls until
            the next forward) gets ``"#k"`` (``"stn:grid_sample#1"``).
        module: qualified name of that module in the model (``""`` names the model itself shown
            as its class name); ``_orig_mod.`` of compiled models is dropped.
        call: order of this call among all records of the capture (0, 1, ...).
        family: transform family (``"affine"``, ``"tps"`` ...), or ``None`` when the grid was not
            made from known parameters (a TPS rectifier's own grid, a flow field).
        input: ``(B, C, H, W)`` the sampled image or feature map (``(B, C, D, H, W)`` in 3-D).
        params: the family's parameters (affine ``(B, 2, 3)``, TPS ``(B, K, 2)``, ...) in stnviz's
            convention (``align_corners=False``), or ``None``.
        grid: ``(B, H_out, W_out, 2)`` the sampling grid exactly as the sampler got it (its
            normalisation is ``sampling["align_corners"]``).
        output: ``(B, C, H_out, W_out)``.
        sampling: ``{"mode", "padding_mode", "align_corners"}`` as the code called the sampler.
        role: what was sampled, judged by :mod:`stnviz.capture.roles`: ``"image"`` (a warp of
            images or feature maps of the model's batch), ``"points"`` (point or query look-ups),
            ``"flow"`` (an offset or flow field), ``"auxiliary"`` (a binary mask) or ``"lookup"``
            (a correlation or attention look-up whose batch is not the image batch).
        image_channels: how many leading input / output channels are the picture when a fill mask
            travels with the image (torchvision's image + ones channel); ``None``: all of them.
        spatial_dims: 2, or 3 for volumes.
        components: for the ``restricted`` family, its component names.

    Example:
        >>> import stnviz
        >>> from stnviz.capture import collect_batch
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> r = collect_batch(model, torch.rand(2, 1, 28, 28))[1].pick()
        >>> r.key, r.family, tuple(r.theta.shape), r.input_size
        ('transformer', 'affine', (2, 2, 3), (28, 28))
        >>> torch.allclose(r.reproduce(), r.output)  # the sampling is recorded, so the output can be remade
        True
    """

    key: str
    module: str
    call: int
    family: str | None
    input: torch.Tensor
    params: torch.Tensor | None
    grid: torch.Tensor
    output: torch.Tensor
    sampling: dict = field(default_factory=lambda: {"mode": "bilinear", "padding_mode": "zeros",
                                                    "align_corners": geometry.ALIGN_CORNERS})
    role: str = "image"
    spatial_dims: int = 2
    components: tuple | None = None
    image_channels: int | None = None

    @property
    def theta(self) -> torch.Tensor | None:
        """``(B, 2, 3)`` in stnviz's convention for affine families (``None`` for projective, TPS,
        unknown)."""
        if self.params is None or self.family not in geometry.AFFINE_FAMILIES:
            return None
        return geometry.to_matrix(self.params, self.family, components=self.components)[:, :2]

    @property
    def input_size(self) -> tuple[int, ...]:
        return tuple(self.input.shape[2:])

    @property
    def output_size(self) -> tuple[int, ...]:
        return tuple(self.output.shape[2:])

    def require_2d(self, what: str = "drawing") -> None:
        """Raise a clear ``ValueError`` for a 3-D (volume) record."""
        if self.spatial_dims != 2:
            raise ValueError(f"{what} handles 2-D samplers only; record {self.key!r} is a 3-D (volume) sampling "
                             f"with input shape {tuple(self.input.shape)} and grid {tuple(self.grid.shape)}")

    def pixel_grid(self) -> torch.Tensor:
        """The grid in input pixel coordinates (pixel centres at integers), ``(B, H_out, W_out, 2)``,
        using the record's own ``align_corners``."""
        self.require_2d("pixel_grid")
        return geometry.grid_to_pixels(self.grid.float(), self.input_size,
                                       align_corners=bool(self.sampling.get("align_corners")))

    def sampled_outline(self, points_per_side: int = 16) -> torch.Tensor:
        """The sampled region's outline in input pixels ``(B, 4 * points_per_side, 2)``.

        From the parameters when the family is known; otherwise traced along the border of the
        recorded grid (the output's edge pixel centres), in the record's own normalisation."""
        self.require_2d("sampled_outline")
        if self.params is not None and self.family is not None:
            return geometry.sampled_outline(self.params.float(), self.family, self.input_size,
                                            components=self.components, points_per_side=points_per_side)
        g = self.pixel_grid()
        return torch.cat([g[:, 0, :], g[:, :, -1], g[:, -1, :].flip(1), g[:, :, 0].flip(1)], dim=1)

    def reproduce(self) -> torch.Tensor:
        """``geometry.warp(input, grid, **sampling)``: the output again, from what was recorded."""
        self.require_2d("reproduce")
        return geometry.warp(self.input, self.grid, **self.sampling)

    def sample(self, index: int) -> "TransformRecord":
        """The record of one sample: every batched field cut to ``[index : index + 1]``."""
        cut = slice(index, index + 1)
        return dataclasses.replace(self, input=self.input[cut], grid=self.grid[cut], output=self.output[cut],
                                   params=None if self.params is None else self.params[cut])

    @staticmethod
    def cat(records: list["TransformRecord"]) -> "TransformRecord":
        """Join records of one key made on consecutive batches into one (batch dims concatenated)."""
        first = records[0]
        if len(records) == 1:
            return first
        def cat(name):
            values = [getattr(r, name) for r in records]
            return None if any(v is None for v in values) else _cat_batches(values)
        return TransformRecord(key=first.key, module=first.module, call=first.call, family=first.family,
                               input=cat("input"), params=cat("params"), grid=cat("grid"), output=cat("output"),
                               sampling=dict(first.sampling), role=first.role, spatial_dims=first.spatial_dims,
                               components=first.components, image_channels=first.image_channels)

    def __repr__(self) -> str:
        return (f"TransformRecord(key={self.key!r}, family={self.family!r}, role={self.role!r}, "
                f"input={tuple(self.input.shape)}, output={tuple(self.output.shape)}, sampling={self.sampling})")


def _cat_batches(values: list[torch.Tensor]) -> torch.Tensor:
    """``(B_i, ...)`` tensors -> ``(sum B_i, ...)``. Shape-only ("meta") tensors, as the inspector
    keeps, get an empty meta tensor of that shape: ``torch.cat`` on "meta" runs a Python
    decomposition whose first call imports ``torch._dynamo`` (1.2 s and ~150 MB of resident memory
    in a process that never compiles)."""
    rest = values[0].shape[1:]
    if all(v.is_meta and v.shape[1:] == rest and v.dtype == values[0].dtype for v in values):
        return torch.empty((sum(v.shape[0] for v in values), *rest), dtype=values[0].dtype, device="meta")
    return torch.cat(values)


def _first_call_order(records: Iterable[TransformRecord], role: str | None = None) -> list[str]:
    """The keys of ``records``, each once, in the order of their first call (``call``; within one
    forward, the order the model called its samplers); only those of ``role`` if given. The one key
    order of :meth:`Capture.keys` and :meth:`stnviz.capture.Collection.keys`."""
    first: dict[str, int] = {}
    for r in records:
        if role is None or r.role == role:
            first[r.key] = min(first.get(r.key, r.call), r.call)
    return sorted(first, key=first.__getitem__)


#: the default byte budget of a capture's records: 256 MB of copies
_MAX_BYTES = 256 * 2**20


def _storage(t: torch.Tensor) -> tuple[int, int]:
    """``(storage address, bytes)`` of ``t``; a tensor without a plain storage counts alone."""
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):
        return id(t), t.numel() * t.element_size()


def _storages(r: TransformRecord) -> dict[int, int]:
    """``{storage address: bytes}`` of the tensors a record holds (input, grid, output, params)."""
    return dict(_storage(t) for t in (r.input, r.grid, r.output, r.params) if t is not None)


class Capture:
    """The records of one ``capture`` context: a sequence in call order, addressable by key.

    Memory is bounded twice: at most ``keep_last`` records, holding at most ``max_bytes`` together
    (a tensor shared by several records, copied once, counts once); the oldest records go first,
    counted in ``dropped`` (the newest record is always kept, even alone over the budget).
    ``kept_bytes`` is what the kept records hold now.

    Example:
        >>> import stnviz
        >>> from stnviz.capture import capture
        >>> model = stnviz.get_model("stn_tutorial", device="cpu")
        >>> with torch.no_grad(), capture(model) as rec:
        ...     _ = model(torch.rand(2, 1, 28, 28))
        >>> rec, rec.pick().key, len(rec.of("transformer"))
        (Capture(1 records, keys=['transformer'], dropped=0), 'transformer', 1)
        >>> rec.kept_bytes  # input, grid and output of 2 images at 28 x 28, and the thetas
        25136
    """

    def __init__(self, keep_last: int | None, max_bytes: int | None = _MAX_BYTES):
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be a positive number of records or None, got {keep_last}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive number of bytes or None, got {max_bytes}")
        self.keep_last, self.max_bytes = keep_last, max_bytes
        self._records: deque = deque()
        self._counter = itertools.count()
        self._storages: dict[int, list] = {}  # storage address -> [bytes, records holding it]
        #: the bytes the kept records hold (each shared copy counted once)
        self.kept_bytes = 0
        #: how many of the oldest records were dropped to stay within ``keep_last`` and ``max_bytes``
        self.dropped = 0
        #: how many times recording failed (a sampler call left out, a hook that could not note its
        #: state); the forwards themselves ran unchanged, see the :class:`CaptureWarning`
        self.skipped = 0

    def _add(self, rec: TransformRecord) -> None:
        self._records.append(rec)
        for ptr, nbytes in _storages(rec).items():
            entry = self._storages.setdefault(ptr, [nbytes, 0])
            self.kept_bytes += nbytes if entry[1] == 0 else 0
            entry[1] += 1
        while len(self._records) > 1 and (
                (self.keep_last is not None and len(self._records) > self.keep_last)
                or (self.max_bytes is not None and self.kept_bytes > self.max_bytes)):
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        for ptr in _storages(self._records.popleft()):
            entry = self._storages[ptr]
            entry[1] -= 1
            if entry[1] == 0:
                self.kept_bytes -= entry[0]
                del self._storages[ptr]
        self.dropped += 1

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[TransformRecord]:
        return iter(self._records)

    def __getitem__(self, i: int) -> TransformRecord:
        return list(self._records)[i]

    def keys(self, role: str | None = None) -> list[str]:
        """Keys of the kept records in first-call order (only those of ``role`` if given)."""
        return _first_call_order(self._records, role)

    def of(self, key: str) -> list[TransformRecord]:
        """All kept records of ``key``, in call order."""
        out = [r for r in self._records if r.key == key]
        if not out:
            raise CaptureError(f"no records for {key!r}; captured keys: {self.keys()}")
        return out

    def pick(self, key: str | None = None) -> TransformRecord:
        """The record to show: the latest of ``key`` if given, else the first image warp (the
        first record when every sampling is auxiliary)."""
        if key is not None:
            return self.of(key)[-1]
        for r in self._records:
            if r.role == "image":
                return r
        return self.last()

    def last(self, key: str | None = None) -> TransformRecord:
        """The latest record (of ``key`` if given)."""
        if key is not None:
            return self.of(key)[-1]
        if not self._records:
            raise CaptureError("the capture holds no records")
        return self._records[-1]

    def __repr__(self) -> str:
        skipped = f", skipped={self.skipped}" if self.skipped else ""
        return f"Capture({len(self)} records, keys={self.keys()}, dropped={self.dropped}{skipped})"
