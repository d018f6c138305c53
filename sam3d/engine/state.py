"""Training checkpoints: the model (sam3d checkpoint format, or the baseline format for a
supervised baseline) plus everything to resume.

``last.pt`` is written after every epoch and ``best.pt`` when the validation loss improves,
each atomically (temporary file, then rename: a crash never leaves a corrupt file). Both load
with :func:`sam3d.checkpoint.load_checkpoint` for inference; :func:`load_training_state` also
restores the optimiser, the schedule, the epoch, the best loss and the metric history.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint, stored_state
from ..modeling.kind import crop_size

TRAIN_FORMAT = "sam3d-train/1"


def save_training_state(path: str | Path, model, optimizer, scheduler, *, epoch: int,
                        best: float, history: list[dict], config: dict,
                        preprocessing: dict | None = None,
                        refiner: list[dict] | None = None) -> None:
    """Write model + resumable training state (+ the preprocessing constants) atomically;
    ``refiner``: the click refiner's fit after the epochs (:mod:`sam3d.engine.refiner_fit`),
    recorded so a resumed run does not fit it twice."""
    train = {"format": TRAIN_FORMAT, "epoch": int(epoch), "best": float(best),
             "history": history, "config": config, "preprocessing": preprocessing,
             "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict()}
    if refiner is not None:
        train["refiner"] = refiner
    save_checkpoint(model, path, extra={"train": train})


def load_training_state(path: str | Path, model, optimizer, scheduler) -> dict:
    """Restore the tuned weights, optimiser and schedule from ``path``; return the state."""
    ckpt = read_checkpoint_file(path)
    train = (ckpt.get("extra") or {}).get("train") if isinstance(ckpt, dict) else None
    if not isinstance(train, dict) or train.get("format") != TRAIN_FORMAT:
        raise CheckpointError(f"{path} is not a sam3d training checkpoint (nothing to resume)")
    if ckpt.get("variant") != model.name:
        raise CheckpointError(f"{path} holds variant {ckpt.get('variant')!r}, the run builds "
                              f"{model.name!r}")
    size = crop_size(model.crop)  # a variant fixes its crop; a baseline records the one it had
    if "size" in ckpt and tuple(ckpt.get("size") or ()) != size:
        raise CheckpointError(f"{path} was trained on crop {ckpt.get('size')}, the run builds "
                              f"{list(size)}")
    want = stored_state(model)
    state = ckpt["state"]
    if set(want) != set(state) or any(state[k].shape != want[k].shape for k in want):
        raise CheckpointError(f"{path}: weights do not match the configured model")
    with torch.no_grad():
        model.load_state_dict(state, strict=False)
    try:
        optimizer.load_state_dict(train["optimizer"])
        scheduler.load_state_dict(train["scheduler"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: optimiser state does not fit this run ({exc})") from None
    return train
