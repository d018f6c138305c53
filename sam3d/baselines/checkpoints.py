"""The supervised baselines' checkpoint format, ``sam3d-baseline/1``, in the registry of
:mod:`sam3d.checkpoint`.

``{"format": "sam3d-baseline/1", "variant": <baseline name>, "size": [D, H, W], "state":
<whole state dict>, "extra"}``: a :class:`~sam3d.baselines.networks.PromptFree` holds every
weight (no SAM file under it), so the whole state dict is stored and loaded strictly.
:mod:`sam3d.checkpoint` imports this module the first time it reads or writes the format.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, CheckpointFormat, load_state_strict, register_format
from .networks import BASELINE_FORMAT, BASELINES, PromptFree


def _state(model: PromptFree) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.state_dict().items()}


def _fields(model: PromptFree) -> dict:
    return {"variant": model.name, "size": list(model.size)}


def _load(ckpt: dict, path: Path, sam_checkpoint, variant: str | None) -> PromptFree:
    """Rebuild a supervised baseline and load its whole state strictly."""
    name, size, state = ckpt.get("variant"), ckpt.get("size"), ckpt.get("state")
    if name not in BASELINES:
        raise CheckpointError(f"{path}: unknown baseline {name!r}; known: {sorted(BASELINES)}")
    if not (isinstance(size, (list, tuple)) and len(size) == 3) or not isinstance(state, dict):
        raise CheckpointError(f"{path} is an incomplete baseline checkpoint (size or state)")
    if variant is not None and name != variant:
        raise CheckpointError(f"{path} holds baseline {name!r}, but {variant!r} was requested")
    if sam_checkpoint is not None:
        raise CheckpointError(f"{path} is a supervised baseline ({name}) without SAM weights; "
                              "load it without sam_checkpoint")
    baseline = BASELINES[name]
    try:
        cube = len(set(size)) == 1
        model = baseline.engine_model(int(size[0])) if cube else baseline.model(size)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    load_state_strict(model, state, f"{path} ({name})")
    return model


register_format(CheckpointFormat(BASELINE_FORMAT, _state, _fields, _load))
