"""Zoom in on a small lesion: predict it again in a smaller box, enlarged to the model's crop.

Interactive segmenters look closer at small objects (RITM's "Zoom-In", Sofiiuk et al. 2022;
FocalClick's focus view): a lesion of a few millimetres is a handful of voxels in a ``c``³
box at 1 mm, while the decoder draws boundaries best at the scale of the lesions it learned
from. With a zoom factor ``z`` > 1 a :class:`~sam3d.inference.predictor.Predictor` predicts
the clicks first in the ``(c/z)``³ box centred as :func:`~sam3d.inference.roi.roi_box` centres
the ``c``³ one, resampled trilinearly to ``c``³ (:func:`enlarge`; a click on voxel ``r`` of the
small box is voxel ``z·r`` of the enlarged one, so a centred click stays on the centre voxel
``c/2``, where training put it), and averages the probability back over ``z``³ blocks
(:func:`shrink`). It keeps that prediction when it :func:`fits`: the components the positive
clicks are on are not empty and span at most half the small box's edge on every axis, so the
lesion had context around it. Otherwise (a lesion too large for the small box, or nothing
found there) it predicts the ``c``³ box as without zoom.

The rule and its threshold were chosen on the synthetic validation lesions of the book's
real-CT data, not on the held-out lesions; measured in smoke mode (``book_real``): README.
By default only the models asked for *the lesion a click is on* zoom (the ``*_maps``
variants, ``Sam3DConfig.maps_first_prompt``, factor :data:`LESION_ZOOM`); every other model,
the paper's included, predicts as the official code does (factor 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .components import clicked_components, segments_clicked_lesion

if TYPE_CHECKING:  # torch loads when a prediction runs, not with the command line
    import torch

#: the default factor of the models that segment the lesion a click is on
LESION_ZOOM = 2
#: the smallest box edge (voxels) a zoom may leave: the model's patch grid needs some context
MIN_EDGE = 8


def default_zoom(model: object) -> int:
    """The model's own zoom factor: :data:`LESION_ZOOM` for a ``*_maps`` variant, else 1."""
    return LESION_ZOOM if segments_clicked_lesion(model) else 1


def check_zoom(zoom: object, crop: int) -> int:
    """``zoom`` as an int factor ≥ 1 that divides ``crop`` and leaves an edge ≥ :data:`MIN_EDGE`
    (1: no zoom); anything else is refused with a one-line message."""
    if isinstance(zoom, bool) or not isinstance(zoom, int | np.integer) or zoom < 1:
        raise ValueError(f"zoom must be an integer factor ≥ 1 (1: no zoom), got {zoom!r}")
    zoom = int(zoom)
    if crop % zoom or crop // zoom < MIN_EDGE:
        raise ValueError(f"zoom {zoom} must divide the model's crop {crop} into a box edge of "
                         f"at least {MIN_EDGE} voxels")
    return zoom


def enlarge(patch: torch.Tensor, size: int) -> torch.Tensor:
    """``B×C×s×s×s`` → ``B×C×size³``, trilinear (corners not aligned: a voxel becomes a block)."""
    import torch.nn.functional as F

    return F.interpolate(patch, size=(size,) * 3, mode="trilinear", align_corners=False)


def zoom_points(rel: np.ndarray, factor: int) -> np.ndarray:
    """Clicks ``k×3`` on the small box's voxels → the enlarged box's voxels (``factor·r``)."""
    return np.asarray(rel, dtype=np.int64) * factor


def shrink(prob: torch.Tensor, factor: int) -> torch.Tensor:
    """Probability ``c×c×c`` of the enlarged box → ``(c/factor)``³, the mean of each block."""
    import torch.nn.functional as F

    return F.avg_pool3d(prob[None, None], factor)[0, 0]


def fits(prob: torch.Tensor, clicks: np.ndarray) -> bool:
    """Whether the components of ``prob`` (``s×s×s``, the small box's probability) that the
    positive ``clicks`` (``k×3``, box voxels) are on are non-empty and span at most ``s // 2``
    voxels on every axis."""
    kept = clicked_components(prob, clicks)
    if not kept.any():
        return False
    edge = prob.shape[0]
    spans = [int(idx.max() - idx.min()) + 1 for idx in np.nonzero(kept)]
    return max(spans) <= edge // 2
