"""The run's precision (:mod:`sam3d.engine.precision`): the trainer's and benchmark's context."""

from __future__ import annotations

import torch

from sam3d.engine.precision import autocast


def test_bf16_lowers_a_matmul_and_float32_leaves_it() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("cpu", True):
        low = a @ b
    with autocast(torch.device("cpu"), False):
        full = a @ b
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert torch.equal(full, a @ b)
