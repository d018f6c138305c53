"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The repository lives beside the project's shared/ folder (…/main and …/shared), so
# parents[2] of this file is the folder holding both.
_DEFAULT_GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared/golden/official-v2"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of the official-v2 golden fixture (override with SAM3D_GOLDEN_DIR).

    Skips the test when the folder is absent.
    """
    path = Path(os.environ.get("SAM3D_GOLDEN_DIR", _DEFAULT_GOLDEN_DIR))
    if not path.is_dir():
        pytest.skip(
            f"golden fixture folder not found: {path} "
            "(set SAM3D_GOLDEN_DIR to the official-v2 fixture folder)"
        )
    return path


# --------------------------------------------------------------------------------------
# Shared helpers for the model tests (tiny variant; everything here is CPU-cheap).
# --------------------------------------------------------------------------------------

import torch  # noqa: E402

TINY_CROP = 64


def _randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Overwrite every zero-initialised parameter (pos/rel-pos tables) with small noise.

    A freshly built model has all-zero ``pos_embed`` and ``rel_pos_*`` tables, which would
    let a wrong axis convention pass unnoticed; the tests fill them with distinct values.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return module


@pytest.fixture
def randomise():
    """``randomise(module, seed=0, std=0.05)``: fill zero-initialised tables with noise."""
    return _randomise


@pytest.fixture
def tiny_model():
    """A seeded, eval-mode ``tiny`` model with non-zero positional and rel-pos tables."""
    from sam3d import build_sam3d

    torch.manual_seed(0)
    return _randomise(build_sam3d("tiny")).eval()


@pytest.fixture
def tiny_inputs():
    """``(volume, points)`` for the tiny model: ``2×3×64³`` volume, ``2×3×3`` (d, h, w) clicks."""
    gen = torch.Generator().manual_seed(1)
    volume = torch.randn(2, 3, TINY_CROP, TINY_CROP, TINY_CROP, generator=gen)
    points = torch.tensor(
        [[[10.0, 20.0, 30.0], [33.0, 5.0, 60.0], [63.0, 0.0, 41.0]],
         [[40.0, 50.0, 12.0], [7.0, 7.0, 7.0], [20.0, 60.0, 33.0]]]
    )
    return volume, points
