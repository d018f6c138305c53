"""A small, fast training configuration (tiny model, a few small phantoms) for the engine tests."""

from __future__ import annotations

import pytest

from sam3d.engine.config import TrainConfig


@pytest.fixture
def smoke_cfg(tmp_path) -> TrainConfig:
    return TrainConfig(
        name="test", dataset="phantoms", data_dir=str(tmp_path / "phantoms"), phantoms=5,
        phantom_difficulty=0.0, phantom_shape=(48, 48, 40), variant="tiny", tuning="full",
        epochs=1, lr=1e-3, seed=0, device="cpu", out_dir=str(tmp_path / "run"),
        progress=False, tensorboard=False, cache_dir=str(tmp_path / "cache"),
    )
