"""Numeric precision of a run, owned by the code that runs the model (the trainer, the
benchmark), not by the model: the networks compute in whatever precision the caller's context
sets and return float32 logits."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast(device: torch.device | str, bf16: bool) -> AbstractContextManager:
    """``torch.autocast`` to bfloat16 on ``device``'s type when ``bf16``, else a context that
    changes nothing (the default: float32 throughout)."""
    if not bf16:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
