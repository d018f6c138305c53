"""Keep what was clicked: the predicted connected components that hold a positive click.

A model of the ``*_maps`` variants (``Sam3DConfig.maps_first_prompt``, the book's real-CT model)
is asked for *the lesion a click is on*. On a CT with many lesions its mask may also cover a
neighbour of the clicked lesion, apart from it; interactive tools then keep the part of the
mask that is connected to the click (not in the paper, whose model is asked for every tumour
voxel of its box). :func:`keep_clicked` does that on the model grid, before the mask is
mapped back to the image: the voxels at or above the threshold (0.5, as the mask is cut) that
lie in no 26-connected component reaching within ``reach`` voxels of a positive click are set
to 0. ``reach`` (1 by default) forgives a click on the rim of the mask, one voxel off it.
Measured in smoke (``book_real``, five held-out LiTS 117 lesions, 1 click): see the README.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and scipy load when a prediction runs, not with the command line
    import torch

#: where a mask is cut (Predictor.to_input_grid: probability ≥ 0.5)
THRESHOLD = 0.5
#: how far (voxels, per axis) from a click a component may start and still count as clicked
REACH = 1
#: what a prediction keeps: every predicted voxel, or the components a click is on
KEEP = ("all", "clicked")


def segments_clicked_lesion(model: object) -> bool:
    """Whether ``model`` is asked for *the lesion a click is on* (a ``*_maps`` variant,
    ``Sam3DConfig.maps_first_prompt``): what its predictions keep and zoom by default."""
    return bool(getattr(getattr(model, "config", None), "maps_first_prompt", False))


def clicked_components(prob: torch.Tensor, clicks: np.ndarray, reach: int = REACH) -> np.ndarray:
    """Bool ``D×H×W``: the voxels of ``prob`` (``D×H×W``) at or above the threshold that lie in
    a 26-connected component reaching within ``reach`` voxels of one of the ``k×3`` (d, h, w)
    positive ``clicks`` (none: nothing)."""
    import torch

    from ..data.lesion_split import lesion_components

    if not isinstance(prob, torch.Tensor) or prob.ndim != 3:
        raise ValueError(f"prob must be a D×H×W tensor, got {getattr(prob, 'shape', prob)!r}")
    if isinstance(reach, bool) or not isinstance(reach, int) or reach < 0:
        raise ValueError(f"reach must be a non-negative integer, got {reach!r}")
    pts = np.asarray(clicks, dtype=np.int64).reshape(-1, 3)
    mask = (prob >= THRESHOLD).cpu().numpy()
    comp, _ = lesion_components(mask, 1)  # 26-connected
    kept: set[int] = set()
    for point in pts:
        lo = np.maximum(point - reach, 0)
        hi = np.minimum(point + reach + 1, mask.shape)
        window = comp[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        kept.update(int(i) for i in np.unique(window) if i)
    return mask & np.isin(comp, sorted(kept))


def keep_clicked(prob: torch.Tensor, clicks: np.ndarray, reach: int = REACH) -> torch.Tensor:
    """``prob`` (``D×H×W``) with the predicted components that no positive click reaches set to
    0 (:func:`clicked_components`); ``clicks``: ``k×3`` (d, h, w) voxel indices of the positive
    clicks (none: nothing is kept). Voxels below the threshold are returned as they are."""
    import torch

    kept = clicked_components(prob, clicks, reach)
    drop = (prob >= THRESHOLD).cpu().numpy() & ~kept
    return prob.masked_fill(torch.as_tensor(drop, device=prob.device), 0.0)
