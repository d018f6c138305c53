"""Crops cut like the test ROI around a click on a lesion, the lesions drawn with balanced weights.

Not the paper. The official training crop is centred on a lesion voxel drawn uniformly among
all the volume's lesion voxels (MONAI ``RandCropByPosNegLabeld``, then a random sub-crop), so
a lesion is drawn in proportion to its size and the clicks may fall on any lesion of the crop.
At test time the official ROI is centred on the click (:func:`sam3d.inference.roi.roi_box`)
and, on the per-lesion cases (:func:`sam3d.data.real_dataset.write_lesion_cases`), the
clicked lesion alone is the target. :class:`LesionCentredCropd` makes a training crop look like
that: it draws a lesion — every lesion of at least ``min_voxels`` voxels with probability
∝ ``voxels ** power`` — then a voxel of it uniformly (as a test click is drawn), and cuts the
ROI a single click there would get (:func:`~sam3d.inference.roi.roi_box` and
:func:`~sam3d.inference.roi.crop_roi`: zero padding outside the volume), so the drawn voxel is
voxel ``crop // 2`` of the crop on every axis. :func:`sam3d.engine.targets.centred_lesion_targets`
then clicks it and takes its lesion as the target.

``power`` 0 gives every lesion the same chance whatever its size, 1 is the official
voxel-uniform draw. Lesions below ``min_voxels`` (most of LiTS 117's 79 are a few voxels) are
drawn only when the volume has no larger one; a volume without lesion gets a crop around a
uniformly drawn voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from ..inference.roi import crop_roi, roi_box
from .lesion_split import lesion_components

#: defaults: lesions of ≥ 100 voxels (the size of the held-out lesions
#: :func:`sam3d.data.real_dataset.write_lesion_cases` scores), drawn ∝ voxels ** 0.5
MIN_VOXELS = 100
POWER = 0.5


def draw_lesion_voxel(mask: np.ndarray, rng: np.random.RandomState | np.random.Generator,
                      min_voxels: int = MIN_VOXELS, power: float = POWER) -> tuple[int, int, int]:
    """A voxel (d, h, w) of the binary ``D×H×W`` ``mask`` drawn as the module says: a lesion
    (26-connected) of ≥ ``min_voxels`` voxels with probability ∝ ``voxels ** power`` (all
    lesions when none is that large), then one of its voxels uniformly; any voxel uniformly
    when ``mask`` is empty."""
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, int) or min_voxels < 1:
        raise ValueError(f"min_voxels must be a positive integer, got {min_voxels!r}")
    if not 0.0 <= float(power) <= 1.0:
        raise ValueError(f"power must be in [0, 1], got {power!r}")
    mask = np.asarray(mask) > 0
    if mask.ndim != 3:
        raise ValueError(f"mask must be D×H×W, got shape {mask.shape}")
    box = _bounding_box(mask)
    if box is None:
        d, h, w = np.unravel_index(_below(rng, mask.size), mask.shape)
        return int(d), int(h), int(w)
    # within the lesions' bounding box the components are numbered, and each one's voxels
    # listed, in the same (C) order as over the whole volume, so the draw is the same, faster
    sub = mask[box]
    comp, n = lesion_components(sub, 1)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:].astype(np.float64)
    kept = sizes >= min_voxels
    weights = np.where(kept if kept.any() else sizes > 0, sizes ** float(power), 0.0)
    lesion = 1 + int(rng.choice(n, p=weights / weights.sum()))
    voxels = np.flatnonzero(comp.ravel() == lesion)
    local = np.unravel_index(int(voxels[_below(rng, len(voxels))]), sub.shape)
    return (int(local[0]) + box[0].start, int(local[1]) + box[1].start,
            int(local[2]) + box[2].start)


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every True voxel of the 3-D ``mask``; None when it has none.
    (Three reductions: ≈ 5 ms on a 88×301×364 mask where ``ndimage.find_objects`` takes 28.)"""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if not len(hit):
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return box[0], box[1], box[2]


def _below(rng: np.random.RandomState | np.random.Generator, n: int) -> int:
    """An integer drawn uniformly in [0, n) from either kind of numpy generator."""
    return int(rng.randint(n) if isinstance(rng, np.random.RandomState) else rng.integers(n))


class LesionCentredCropd(Randomizable, MapTransform):
    """The ``crop``³ test ROI of a click on a drawn lesion voxel (see module), cut out of every
    key (``C×D×H×W``); the voxel is at index ``crop // 2`` per axis. ``label`` (1×D×H×W, 0/1)
    is what the lesions are read from."""

    def __init__(self, keys: Sequence[str], crop: int, label_key: str = "label",
                 min_voxels: int = MIN_VOXELS, power: float = POWER) -> None:
        super().__init__(keys=keys)
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 2:
            raise ValueError(f"crop must be an integer ≥ 2, got {crop!r}")
        draw_lesion_voxel(np.zeros((1, 1, 1), bool), np.random.RandomState(0), min_voxels,
                          power)  # argument checks at construction
        self.crop, self.label_key = crop, label_key
        self.min_voxels, self.power = min_voxels, power

    def randomize(self, data: np.ndarray) -> tuple[int, int, int]:  # type: ignore[override]
        return draw_lesion_voxel(data, self.R, self.min_voxels, self.power)

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        label = torch.as_tensor(out[self.label_key])
        mask = label[0].detach().cpu().numpy() > 0.5
        box = roi_box([self.randomize(mask)], mask.shape, self.crop)
        for key in self.key_iterator(out):  # MetaTensors, as MONAI's crops give
            value = out[key]
            out[key] = MetaTensor(crop_roi(torch.as_tensor(value), box),
                                  meta=getattr(value, "meta", None))
        return out
