"""The official optimisation recipe: three parameter groups, AdamW, linear decay, clipping.

Official (spec §4.4): AdamW (weight decay 0) with lr 4e-4 on each of the tuned encoder
parameters, the prompt encoder(s) and the decoder; ``LinearLR`` from 1.0 to 0.01 over the run,
stepped once per epoch; gradient max-norm 1.0 clipped separately per group. The official code
uses three optimisers; one AdamW with three parameter groups is the same update (Adam state is
per parameter), and keeps one state to checkpoint. A supervised baseline has one group with
the same settings.
"""

from __future__ import annotations

import torch
from torch import nn


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters of a model by group (its
    :meth:`~sam3d.modeling.kind.SegmentationModel.parameter_groups`: a Sam3D's ``encoder``,
    ``prompt`` and ``decoder``, a supervised baseline's one ``network``); refuses a model with
    none to train, and a network that is no sam3d model kind (wrap it in
    :class:`~sam3d.baselines.networks.PromptFree`)."""
    from ..modeling.kind import SegmentationModel

    if not isinstance(model, SegmentationModel):
        raise TypeError(f"{type(model).__name__} is not a sam3d model kind (name, crop, "
                        "promptable, parameter_groups …): wrap a plain network in PromptFree")
    groups = model.parameter_groups()
    if not any(groups.values()):
        raise ValueError("the model has no trainable parameters")
    return groups


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, epochs: int, end_factor: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the non-empty groups and its per-epoch linear decay to ``end_factor``·lr."""
    groups = parameter_groups(model)
    param_groups = [{"params": ps, "name": name} for name, ps in groups.items() if ps]
    optimizer = torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0,
                                                  end_factor=end_factor, total_iters=epochs)
    return optimizer, scheduler


def clip_per_group(optimizer: torch.optim.Optimizer, max_norm: float) -> dict[str, float]:
    """Clip each group's gradient norm to ``max_norm``; return the norms before clipping."""
    norms = {}
    for group in optimizer.param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            norms[group["name"]] = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return norms
