"""A randomly initialised SAM-format checkpoint whose image encoder fits a small 3D variant.

Full mode initialises the 3D encoder from SAM ViT-B (``sam_vit_b_01ec64.pth``), which cannot be
downloaded here. The rehearsal runs that same loading path — ``build_sam3d(...,
sam_checkpoint=...)``, the recorded SHA-256, the SAM 2D rows of Table 1 — on a file of the same
format: segment-anything's own modules (:func:`sam3d.baselines.sam_vit.build_sam_vit`) at the
``tiny`` variant's size, randomly initialised from a seed, saved as a plain state dict.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..baselines.sam_vit import build_sam_vit, shape_of_variant
from ..checkpoint import atomic_save
from ..hashing import sha256_file

__all__ = ["write_sam_checkpoint"]


def write_sam_checkpoint(path: str | Path, variant: str = "tiny", seed: int = 0) -> Path:
    """Write (atomically; kept when already there) a random SAM-format state dict for
    ``variant``'s encoder at ``path`` and return it. Same ``seed`` and torch: same file."""
    path = Path(path)
    if path.is_file():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = build_sam_vit(shape_of_variant(variant))
    atomic_save(sam.state_dict(), path)
    return path


def describe(path: str | Path) -> str:
    """One line naming the file and its hash, for the chapters' set-up output."""
    return f"{path} (random SAM-format weights, SHA-256 {sha256_file(path)[:12]}…)"
