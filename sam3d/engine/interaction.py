"""Training with simulated interaction (the RITM / SAM-Med3D practice; issue 13, off by default).

Within one training step, after the first prompt (the official training clicks), the model
predicts without gradient from the same image embedding, and each round adds one corrective
click per sample from that prediction's error: a voxel drawn uniformly from the error voxels,
positive when it is missed lesion (false negative), negative when it is false lesion (false
positive). A model without the negative-click extension only gets positive corrections (from
the false negatives). The step's loss is then computed on the prediction from all the clicks,
so the model learns to use a correction. The number of rounds is drawn per step in
``0..interaction_rounds`` (``TrainConfig.interaction_rounds``), so the model still learns the
plain first prompt.

With the extension, the first prompt's clicks are labelled by the ground truth as well: the
official recipe's random clicks that fall outside the lesion become negative clicks (a crop
whose clicks hit no lesion keeps the official all-positive prompt, since a prompt needs a
positive click).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .targets import predicted_foreground

if TYPE_CHECKING:
    from ..modeling.sam3d import Sam3D

__all__ = ["click_labels", "corrective_clicks", "simulate_interaction"]


def _lesion_at(label: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Whether each click ``B×N×3`` lies on lesion of ``label`` ``B×1×D×H×W`` → ``B×N`` bool."""
    idx = points.long()
    b = torch.arange(points.shape[0], device=points.device)[:, None]
    return label[b, 0, idx[..., 0], idx[..., 1], idx[..., 2]] > 0.5


def click_labels(label: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """The extension's labels of the first prompt ``B×N×3`` → ``B×N`` int64: 1 on lesion,
    0 elsewhere; a row with no click on lesion stays all positive (the official prompt)."""
    on = _lesion_at(label, points.to(label.device))
    return torch.where(on.any(1, keepdim=True), on, torch.ones_like(on)).long()


def corrective_clicks(logits: torch.Tensor, label: torch.Tensor, rng: np.random.Generator,
                      negatives: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective click per sample from ``logits`` ``B×2×D×H×W`` against ``label``
    ``B×1×D×H×W``: ``(points B×1×3 float32, labels B×1 int64)``.

    A voxel uniformly from the false negatives (and, with ``negatives``, the false positives),
    labelled 1 on a false negative, 0 on a false positive. A sample without such an error
    gets a positive click on a random lesion voxel (anywhere, without lesion).
    """
    pred = predicted_foreground(logits)[:, 0].cpu().numpy()
    gt = (label[:, 0] > 0.5).cpu().numpy()
    points, labels = [], []
    for p, g in zip(pred, gt, strict=True):
        error = (g & ~p) | ((p & ~g) if negatives else False)
        pool = error if error.any() else (g if g.any() else np.ones_like(g))
        flat = np.flatnonzero(pool)
        voxel = np.array(np.unravel_index(flat[rng.integers(0, flat.size)], g.shape))
        points.append(voxel)
        labels.append(int(g[tuple(voxel)] or not error.any()))
    return (torch.as_tensor(np.stack(points), dtype=torch.float32)[:, None].to(logits.device),
            torch.as_tensor(labels, dtype=torch.long)[:, None].to(logits.device))


@torch.no_grad()
def simulate_interaction(model: Sam3D, image: torch.Tensor, label: torch.Tensor,
                         points: torch.Tensor, labels: torch.Tensor | None, rounds: int,
                         rng: np.random.Generator, first_prompt: int = 0,
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``rounds`` corrective clicks appended to ``points`` ``B×N×3`` (and ``labels`` ``B×N``,
    None for a model without the extension): ``B×(N+rounds)×3`` and the labels. The image is
    encoded once; each round decodes it with the clicks so far (no gradient;
    ``first_prompt`` as :meth:`Sam3D.decode`: the first prompt's size for click maps)."""
    negatives = bool(model.negative_clicks)
    embedding = model.encode(image)
    for _ in range(rounds):
        logits = model.decode(embedding, points, labels, first_prompt)
        new, new_labels = corrective_clicks(logits, label, rng, negatives)
        points = torch.cat([points, new], 1)
        if labels is not None:
            labels = torch.cat([labels, new_labels], 1)
    return points, labels
