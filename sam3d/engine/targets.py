"""What a training step asks the model to segment: the whole crop's lesion, or the clicked one.

The paper's recipe (``train_target: crop``) scores the prediction against every lesion voxel
of the crop, whichever lesion the clicks fell on. On a volume with many lesions (LiTS 117 has
79) a model trained that way learns "segment the lesions near here": a click on a small lesion
gives a mask over its neighbours. Two instance targets (not in the paper), the
interactive-segmentation practice: the first lesion click is the paper's (a lesion voxel drawn
uniformly, so a lesion is drawn in proportion to its size), the further lesion clicks fall on
the same 26-connected lesion, and that lesion is the target.

* ``clicked_lesion``: the other lesions of the crop are background, as they are when a
  held-out lesion is scored (segmenting a neighbour is a false positive);
* ``centred_lesion``: ``clicked_lesion`` on crops cut as the test box of a click
  (:mod:`sam3d.data.lesion_crops`: the lesions drawn with balanced weights, the crop centred on
  a voxel of the drawn one): the first click is that centre voxel, as at test time (the
  book's real-CT model, ``book_real``);
* ``clicked_lesion_ignore``: the other lesions are *ignored* by the loss, neither target nor
  background. Done on the logits: the ignored voxels get a fixed, confident background logit
  pair, so they add nothing to MONAI's Dice and cross-entropy terms (target 0, predicted
  probability ≈ 1e-13) and pass no gradient back to the model.

Measured on the first ``book_real`` recipe (smoke: tiny model from scratch, 400 steps,
voxel-weighted crops, one patient's five held-out lesions, 1-click roi Dice, mean per lesion):
``crop`` 14.1 %, ``clicked_lesion`` 10.2 %, ``clicked_lesion_ignore`` 0.6 %. What helped was
the crop cut around the click, a click map for the decoder and a warm start: ``centred_lesion``
with ``tiny_maps`` from ``book_smoke`` (the README has the figures). Drawing the lesion
uniformly among the crop's lesions instead of by voxel made the tiny ones (most of LiTS 117's
79) the usual target, and the model learnt to predict nothing (0 % on every held-out lesion);
the lesion-centred crops draw only lesions of at least 100 voxels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.clicks import lesion_clicks, random_clicks
from ..data.lesion_split import lesion_components

TARGETS = ("crop", "clicked_lesion", "clicked_lesion_ignore", "centred_lesion")
#: the crop sampling (:func:`sam3d.data.transforms.build_transforms`) a target needs; "paper"
#: for the others
SAMPLING_OF_TARGET = {"centred_lesion": "lesion"}
_BACKGROUND = (0.0, -30.0)  # logits of an ignored voxel: softmax foreground ≈ 9e-14


def clicked_lesion_targets(labels: torch.Tensor, rng: np.random.Generator, n_lesion: int,
                           n_random: int, centred: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts and targets for a batch of crops ``B×1×D×H×W`` (binary lesion label).

    Returns ``(points B×N×3 float32 (d, h, w), target B×1×D×H×W float32, others
    B×1×D×H×W bool)``. Per crop: a first lesion click — a lesion voxel drawn uniformly, or with
    ``centred`` the crop's centre voxel ``(D//2, H//2, W//2)`` when it is a lesion voxel (the
    crops of :class:`sam3d.data.lesion_crops.LesionCentredCropd` are cut around it) —, its
    26-connected lesion the target, ``n_lesion - 1`` more clicks uniformly in it, then
    ``n_random`` voxels anywhere (the official unlabelled extras); others = the crop's other
    lesions (background, or ignored with :func:`ignore_voxels`). A crop without lesion gets
    ``n_lesion + n_random`` random voxels, an all-background target and no other lesion (the
    paper's rule for such a crop).
    """
    if labels.ndim != 5 or labels.shape[1] != 1:
        raise ValueError(f"labels must be B×1×D×H×W, got {tuple(labels.shape)}")
    masks = (labels[:, 0] > 0.5).cpu().numpy()
    points, target, others = [], np.zeros_like(masks), np.zeros_like(masks)
    centre = tuple(s // 2 for s in masks.shape[1:])
    for b, mask in enumerate(masks):
        comp, n = lesion_components(mask, 1)
        if n == 0:
            points.append(random_clicks(mask.shape, n_lesion + n_random, rng))
            continue
        first = np.array([centre]) if centred and mask[centre] else lesion_clicks(mask, 1, rng)
        chosen = comp == comp[tuple(first[0])]
        points.append(np.concatenate([first, lesion_clicks(chosen, n_lesion - 1, rng),
                                      random_clicks(mask.shape, n_random, rng)]))
        target[b], others[b] = chosen, mask & ~chosen
    device = labels.device
    return (torch.as_tensor(np.stack(points), dtype=torch.float32).to(device),
            torch.as_tensor(target[:, None], dtype=torch.float32).to(device),
            torch.as_tensor(others[:, None]).to(device))


def instance_targets(mode: str, labels: torch.Tensor, rng: np.random.Generator, n_lesion: int,
                     n_random: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`clicked_lesion_targets` for ``train_target`` ``mode`` (not "crop"): ``(points,
    target, ignore)``, ``ignore`` the other lesions for "clicked_lesion_ignore", else None
    (they stay background in ``target``)."""
    points, target, others = clicked_lesion_targets(labels, rng, n_lesion, n_random,
                                                    centred=mode == "centred_lesion")
    return points, target, others if mode == "clicked_lesion_ignore" else None


def ignore_voxels(logits: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """``logits`` ``B×2×D×H×W`` with the ``ignore`` voxels (``B×1×D×H×W`` bool) set to a
    fixed confident background: they add nothing to the loss and take no gradient."""
    fixed = torch.tensor(_BACKGROUND, dtype=logits.dtype, device=logits.device)
    return torch.where(ignore, fixed.view(1, 2, 1, 1, 1), logits)


def predicted_foreground(logits: torch.Tensor) -> torch.Tensor:
    """The mask ``B×1×D×H×W`` (bool) of two-channel ``logits`` ``B×2×D×H×W``: channel 1 above
    channel 0 — the channel argmax, ties to background — in a fraction of a millisecond where
    torch's argmax over the channels takes ≈ 50 ms for one 64³ crop on this CPU."""
    if logits.ndim < 2 or logits.shape[1] != 2:
        raise ValueError(f"logits must be B×2×…, got shape {tuple(logits.shape)}")
    return logits[:, 1:2] > logits[:, 0:1]
