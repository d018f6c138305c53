"""Prompt encoder ("visual sampler" + global-query attention layers)."""

from __future__ import annotations

import pytest
import torch

from sam3d.modeling.prompt_encoder import Attention, PromptEncoder3D, official_unused_params

DIM, G = 32, 16  # tiny: 32 channels on a 16³ grid


def cell(h: int, w: int, d: int) -> list[float]:
    """grid_sample coordinates (x→D, y→W, z→H) of the centre of feature cell (h, w, d)."""
    return [(i + 0.5) * 2 / G - 1 for i in (d, w, h)]


@pytest.fixture
def encoder() -> PromptEncoder3D:
    torch.manual_seed(0)
    return PromptEncoder3D(DIM, depth=2, num_heads=4, mlp_dim=64, num_queries=10).eval()


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(2, DIM, G, G, G, generator=torch.Generator().manual_seed(0))


def test_output_shape(encoder, features) -> None:
    points = torch.tensor([[cell(1, 2, 3)], [cell(4, 5, 6)]])
    with torch.no_grad():
        out = encoder(features, points)
    assert out.shape == features.shape
    assert torch.isfinite(out).all()


def test_output_changes_with_click(encoder, features) -> None:
    with torch.no_grad():
        a = encoder(features[:1], torch.tensor([[cell(3, 5, 9)]]))
        b = encoder(features[:1], torch.tensor([[cell(12, 2, 7)]]))
    assert (a - b).abs().max() > 1e-3


def test_samples_feature_at_h_w_d(encoder, features) -> None:
    """Two clicks on cells holding equal features give equal outputs; wrong axes do not."""
    f = features[:1].clone()
    f[0, :, 7, 2, 12] = f[0, :, 3, 5, 9]  # cells (h, w, d) = (3, 5, 9) and (7, 2, 12) equal
    with torch.no_grad():
        a = encoder(f, torch.tensor([[cell(3, 5, 9)]]))
        b = encoder(f, torch.tensor([[cell(7, 2, 12)]]))
        c = encoder(f, torch.tensor([[cell(9, 5, 3)]]))  # h and d swapped
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (a - c).abs().max() > 1e-3


def test_click_order_and_batch_independence(encoder, features) -> None:
    """No positional encoding or labels: the clicks form a set; batch items do not mix."""
    points = torch.tensor(
        [
            [cell(1, 2, 3), cell(8, 8, 8), cell(15, 0, 4)],
            [cell(4, 5, 6), cell(0, 0, 0), cell(2, 9, 11)],
        ]
    )
    with torch.no_grad():
        out = encoder(features, points)
        flipped = encoder(features, points.flip(1))
        second = encoder(features[1:], points[1:])
    torch.testing.assert_close(out, flipped, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1:], second, atol=1e-5, rtol=1e-5)


def test_official_unused_params() -> None:
    assert official_unused_params() == 263_424
    # the official per-encoder total (3,164,160) = what we build + what we leave out
    built = sum(p.numel() for p in PromptEncoder3D().parameters())
    assert built + official_unused_params() == 3_164_160


def test_state_dict_names_follow_official() -> None:
    keys = set(PromptEncoder3D().state_dict())
    assert (
        "layers.0.global_query" in keys
        and "layers.1.cross_attn_image_to_token.out_proj.bias" in keys
    )
    assert not any("cross_attn_token_to_image" in k or "gaussian" in k for k in keys)
    assert PromptEncoder3D().layers[0].global_query.shape == (1, 10, 256)


def test_gradient_reaches_global_queries(features) -> None:
    torch.manual_seed(0)
    enc = PromptEncoder3D(DIM, depth=2, num_heads=4, mlp_dim=64, num_queries=10)
    out = enc(features[:1], torch.tensor([[cell(3, 5, 9)]]))
    out.square().mean().backward()
    for layer in enc.layers:
        assert layer.global_query.grad is not None
        assert layer.global_query.grad.abs().max() > 0


def test_attention_rejects_bad_width() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        Attention(32, 3)
    with pytest.raises(ValueError, match="internal width"):
        Attention(32, 8, downsample_rate=8)  # internal width 4 < heads
    with pytest.raises(ValueError):
        PromptEncoder3D(DIM, depth=0)
