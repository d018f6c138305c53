"""Reusing a window's image features across clicks gives exactly the fresh forward pass."""

from __future__ import annotations

import torch

from sam3d.build import build_sam3d
from sam3d.evaluation.feature_cache import reuse_image_features


def test_reused_features_give_identical_logits() -> None:
    torch.manual_seed(0)
    model = build_sam3d("tiny").eval()
    c = model.crop
    volume = torch.randn(1, 3, c, c, c)
    a = torch.tensor([[[10.0, 20.0, 30.0]]])
    b = torch.tensor([[[40.0, 12.0, 5.0], [3.0, 3.0, 3.0]]])
    with torch.no_grad():
        fresh = [model(volume, a), model(volume, b)]
        with reuse_image_features(model) as stats:
            cached = [model(volume, a), model(volume, b)]
    assert stats == {"hits": 1, "misses": 1}
    assert all(torch.equal(x, y) for x, y in zip(fresh, cached, strict=True))
    assert not torch.equal(cached[0], cached[1])  # the clicks still matter
    assert "forward" not in vars(model.image_encoder)  # restored on exit


def test_models_without_an_encoder_or_in_training_are_left_alone() -> None:
    stand_in = torch.nn.Linear(2, 2)
    with reuse_image_features(stand_in) as stats:
        stand_in(torch.ones(1, 2))
    assert stats == {"hits": 0, "misses": 0}
    model = build_sam3d("tiny").train()
    with reuse_image_features(model):
        assert "forward" not in vars(model.image_encoder)


class _Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        return [volume * 2]


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = _Counting()

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(volume)[0]


def test_distinct_windows_are_kept_up_to_the_limit() -> None:
    model = _Model().eval()
    x, y = torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)
    with reuse_image_features(model, max_windows=2) as stats:
        outs = [model(x), model(y), model(x)]
    assert stats == {"hits": 1, "misses": 2} and model.image_encoder.calls == 2
    assert torch.equal(outs[0], outs[2]) and torch.equal(outs[1], 2 * y)
    with reuse_image_features(model, max_windows=1) as stats:
        model(x), model(y), model(x)  # y pushes x out
    assert stats == {"hits": 0, "misses": 3}
