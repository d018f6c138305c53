"""The official evaluation's single region of interest (ROI), in the model's ``D×H×W`` grid.

The official ``test.py`` predicts one ``size``³ box (128 for every task) and calls everything
outside it background — no sliding window. The box is centred at the midpoint of the bounding
box of the clicks, ``(min + max) // 2`` per axis (the click itself for one click), and starts
``size // 2`` voxels before it, so it may leave the volume; the image is zero-padded there
(after z-scoring, as the official code does). Click coordinates are made relative to the box
start. The foreground probability of the box is written into an otherwise-zero volume.

Plain tensor indexing and ``torch.nn.functional.pad``; clicks are ``k×3`` integer (d, h, w)
voxel indices (:func:`sam3d.data.clicks.check_clicks`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType

import numpy as np
import torch
import torch.nn.functional as F

from sam3d.data.clicks import ClickError, check_clicks

#: ROI edge of the official evaluation (voxels at 1 mm).
OFFICIAL_SIZE = 128


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) \
            or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return operator.index(value)


def _shape(shape: object) -> tuple[int, int, int]:
    values = tuple(shape) if isinstance(shape, tuple | list | torch.Size) else ()
    if len(values) != 3:
        raise ValueError(f"shape must be 3 positive integers (D, H, W), got {shape!r}")
    return tuple(_positive_int(s, "shape entry") for s in values)  # type: ignore[return-value]


@dataclass(frozen=True)
class Box:
    """A ``size``³ box of the model grid: voxels ``start[a] ≤ i < start[a] + size`` per axis.

    ``start`` (d, h, w) may be negative and the box may extend past the volume's far side.
    """

    start: tuple[int, int, int]
    size: int

    def __post_init__(self) -> None:
        start = tuple(self.start) if isinstance(self.start, tuple | list | np.ndarray) else ()
        if len(start) != 3 or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool | np.bool_) for s in start
        ):
            raise ValueError(f"Box.start must be 3 integers (d, h, w), got {self.start!r}")
        object.__setattr__(self, "start", tuple(int(s) for s in start))
        object.__setattr__(self, "size", _positive_int(self.size, "Box.size"))

    @property
    def stop(self) -> tuple[int, int, int]:
        """Exclusive end (d, h, w) of the box."""
        return tuple(s + self.size for s in self.start)  # type: ignore[return-value]

    def overlap(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Slices of the box ∩ volume: ``(in the volume, in the box)``; empty when disjoint."""
        vol, box = [], []
        for start, stop, dim in zip(self.start, self.stop, _shape(shape), strict=True):
            lo, hi = max(start, 0), min(stop, dim)
            hi = max(hi, lo)
            vol.append(slice(lo, hi))
            box.append(slice(lo - start, hi - start) if hi > lo else slice(0, 0))
        return tuple(vol), tuple(box)


def roi_box(clicks: object, shape: Sequence[int], size: int = OFFICIAL_SIZE) -> Box:
    """The ``size``³ box centred at the midpoint of the clicks' bounding box.

    Arguments:
      clicks (k×3, k ≥ 1): integer (d, h, w) voxel indices inside a ``D×H×W`` volume.
      shape (D, H, W): the model grid's shape.
      size (int): box edge in voxels (official 128).

    Returns a :class:`Box` with ``start = (min + max) // 2 − size // 2`` per axis.
    Raises :class:`ClickError` for no click or a click outside the volume.
    """
    size = _positive_int(size, "size")
    dims = _shape(shape)
    pts = check_clicks(clicks, dims)
    if len(pts) == 0:
        raise ClickError("at least one click is needed to place the ROI")
    d, h, w = (int(c) - size // 2 for c in (pts.min(axis=0) + pts.max(axis=0)) // 2)
    return Box((d, h, w), size)


def crop_roi(volume: torch.Tensor, box: Box) -> torch.Tensor:
    """The box cut out of ``volume`` (``…×D×H×W``, e.g. ``C×D×H×W``) → ``…×size×size×size``.

    Voxels of the box outside the volume are 0 (the official zero padding).
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim < 3:
        raise ValueError("volume must be a tensor …×D×H×W (e.g. C×D×H×W), got "
                         f"{getattr(volume, 'shape', type(volume).__name__)}")
    if not isinstance(box, Box):
        raise TypeError(f"box must be a Box (roi_box), got {type(box).__name__}")
    vol_sl, box_sl = box.overlap(tuple(volume.shape[-3:]))
    if any(s.stop == s.start for s in vol_sl):
        return volume.new_zeros((*volume.shape[:-3], box.size, box.size, box.size))
    index: tuple[EllipsisType | slice, ...] = (..., *vol_sl)
    part = volume[index]
    pad: list[int] = []
    for sl in reversed(box_sl):  # F.pad wants (w_before, w_after, h_before, …)
        pad += [sl.start, box.size - sl.stop]
    return F.pad(part, pad, mode="constant", value=0.0)


def clicks_in_roi(clicks: object, box: Box) -> np.ndarray:
    """Clicks (k×3 (d, h, w) in the volume) relative to the box start → k×3 int64.

    Raises :class:`ClickError` when a click falls outside the box (clicks spread wider than
    ``size``); the official code passed such points on silently, our model rejects them.
    """
    if not isinstance(box, Box):
        raise TypeError(f"box must be a Box (roi_box), got {type(box).__name__}")
    pts = check_clicks(clicks, (2**62,) * 3)
    rel = pts - np.asarray(box.start, dtype=np.int64)
    outside = np.flatnonzero(((rel < 0) | (rel >= box.size)).any(axis=1))
    if outside.size:
        i = int(outside[0])
        raise ClickError(f"click {i} {tuple(int(v) for v in pts[i])} lies outside the ROI "
                         f"starting at {box.start} of size {box.size}: the clicks span more "
                         "than the ROI; use a larger ROI or fewer, closer clicks")
    return rel


def paste_roi(prob: torch.Tensor, box: Box, shape: Sequence[int]) -> torch.Tensor:
    """ROI values (``size×size×size``) written into zeros of ``shape`` (D, H, W) → ``D×H×W``.

    Only the part of the box inside the volume is written; the rest of the volume is 0.
    """
    if not isinstance(box, Box):
        raise TypeError(f"box must be a Box (roi_box), got {type(box).__name__}")
    dims = _shape(shape)
    if not isinstance(prob, torch.Tensor) or tuple(prob.shape) != (box.size,) * 3:
        raise ValueError(f"prob must be a {box.size}×{box.size}×{box.size} tensor, got "
                         f"{tuple(getattr(prob, 'shape', ())) or type(prob).__name__}")
    out = prob.new_zeros(dims)
    vol_sl, box_sl = box.overlap(dims)
    out[vol_sl] = prob[box_sl]
    return out
