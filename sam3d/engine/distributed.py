"""Single-process or ``torchrun`` multi-process training context.

``torchrun --nproc_per_node N -m sam3d.cli train …`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; the context then initialises the process group (NCCL on CUDA, gloo on CPU),
wraps the model in ``DistributedDataParallel`` and averages metrics across ranks. Only rank 0
writes checkpoints, metrics and logs. Multi-node runs work the same way (torchrun's
``--nnodes``/``--rdzv-endpoint``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    progress_bars: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` for this world: itself, or under DDP (which looks for the parameters a
        step left without gradient when the model says it may: ``conditional_parameters``)."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        unused = bool(getattr(model, "conditional_parameters", False))
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def mean(self, values: list[float]) -> float:
        """Mean over every value of every rank."""
        total = torch.tensor([float(np.sum(values)), float(len(values))], dtype=torch.float64)
        if self.world > 1:
            t = total.to(self.device) if self.device.type == "cuda" else total
            dist.all_reduce(t)
            total = t.cpu()
        return float(total[0] / total[1]) if total[1] else float("nan")

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)

    def progress(self, iterable, desc: str):
        if not (self.is_main and self.progress_bars):
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False, unit="it")

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → the local CUDA device when available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup_distributed(device: str = "auto", progress: bool = True) -> DistContext:
    """Read torchrun's environment; initialise the process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank,
                                world_size=world)
    return DistContext(rank, world, local, dev, progress)
