"""Click maps: the clicks as images at the decoder's resolution (an extension, not the paper).

The paper's prompt encoder turns a click into a token sampled from the coarsest feature level
(4 voxels per token for ``tiny``, 4 for ``vit_b``) and mixes it through global queries, so a
click carries no sharp position: a corrective click on a boundary error moves the mask by a
few voxels anywhere. Interactive tools of the nnInteractive / RITM family give the network the
clicks as maps. Here the two maps (positive, negative) enter the decoder's first classifier
convolution beside the raw-image skip, at its resolution (2 voxels per cell), through weights
that start at zero (:class:`~sam3d.modeling.mask_decoder.MaskDecoder3D`, ``click_chans``), so a
paper checkpoint loaded into a model with click maps gives the paper's logits. The maps carry
the corrective clicks only: the first prompt enters as tokens (``first_prompt`` of
:meth:`~sam3d.modeling.sam3d.Sam3D.decode`), so a model trained on the official 10 + 20 first
prompt still knows what to do with one click (measured in smoke: 86.5 % first-click Dice against
78.1 % with the first prompt in the maps; README). The ``*_maps`` variants
(``Sam3DConfig.maps_first_prompt``) put every click in the maps instead, for a model trained
to segment the one lesion a click is on (the book's real-CT model, ``book_real``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: the Gaussian's standard deviation in decoder cells (2 voxels each: 4 voxels)
SIGMA_CELLS = 2.0


def click_maps(points: torch.Tensor, labels: torch.Tensor | None, crop: Sequence[int],
               size: int, sigma: float = SIGMA_CELLS, combine: str = "sum") -> torch.Tensor:
    """Maps ``B×2×size×size×size`` in the decoder's (H, W, D) layout: channel 0 the positive
    clicks, channel 1 the negative ones, each the sum over its clicks of a Gaussian of
    ``sigma`` cells centred on the click (1 at the click's cell centre). A sum by default:
    a click placed again on an error the model did not fix counts again (with a maximum, 10
    of 25 corrective clicks in smoke repeated an earlier one and changed nothing).
    ``combine="max"``: the maximum instead, for clicks that are positions of one object (the
    ``*_maps`` variants): k clicks on a small lesion then give about the map of one, as the
    model was trained with, where their sum was k times as strong (measured in smoke: 1 / 3 /
    10 clicks 33.7 / 18.9 / 12.8 % mean Dice per held-out lesion with the sum).

    ``points``: ``B×N×3`` voxel indices (d, h, w) in a volume of ``crop`` = (D, H, W) voxels;
    ``labels``: ``B×N`` (1 positive, 0 negative; None: all positive). A click outside the
    volume contributes only its tail. No click (N = 0) gives empty maps.
    """
    if combine not in ("sum", "max"):
        raise ValueError(f"combine must be 'sum' or 'max', got {combine!r}")
    b, n = points.shape[:2]
    if n == 0:  # no click for the maps (a first prompt alone): empty maps
        return points.new_zeros((b, 2, size, size, size), dtype=torch.float32)
    scale = points.new_tensor([float(s) for s in crop]) / size  # voxels per cell, per axis
    cells = (points.to(torch.float32) + 0.5) / scale - 0.5  # B×N×3, (d, h, w) in cells
    axis = torch.arange(size, dtype=torch.float32, device=points.device)
    return gaussian_maps(cells, labels, (axis, axis, axis), sigma, combine)


def gaussian_maps(points: torch.Tensor, labels: torch.Tensor | None,
                  axes: Sequence[torch.Tensor], sigma: float,
                  combine: str = "sum") -> torch.Tensor:
    """The clicks' Gaussians on a grid, ``B×2×H×W×D`` ((H, W, D) layout): channel 0 the
    positive clicks', channel 1 the negative ones', combined by ``combine`` ("sum" or "max").

    ``points`` ``B×N×3`` (d, h, w, N ≥ 1) and ``axes`` (the grid's d, h and w coordinates,
    1-D float32) in the same units as ``sigma``; ``labels`` ``B×N`` (None: all positive).
    :func:`click_maps` (the decoder's cells) and the click refiner (a box of voxels,
    :mod:`sam3d.modeling.click_refiner`) both build their maps here.
    """
    if labels is None:
        labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
    # squared distance per axis, B×N×len; then the (H, W, D) grid by broadcasting
    d2 = [(axis[None, None, :] - points[..., i, None]) ** 2 for i, axis in enumerate(axes)]
    dist = d2[1][:, :, :, None, None] + d2[2][:, :, None, :, None] + d2[0][:, :, None, None, :]
    g = torch.exp(-dist / (2 * sigma ** 2))  # B×N×H×W×D
    pos = (labels == 1).to(g.dtype)[..., None, None, None]
    if combine == "max":
        return torch.stack([(g * pos).amax(1), (g * (1 - pos)).amax(1)], 1)
    return torch.stack([(g * pos).sum(1), (g * (1 - pos)).sum(1)], 1)
