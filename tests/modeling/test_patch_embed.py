"""Volumetric patch embedding: composed 3D convolution vs the official three-step path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam3d.modeling.literal import LiteralPatchEmbed
from sam3d.modeling.patch_embed import VolumePatchEmbed, linear_upsample_taps

TINY = {"dim": 96, "patch": 16, "crop": 64, "grid": 16}  # the tiny variant's sizes (×4, stride 4)


def make_embed(seed: int = 0, **sizes) -> VolumePatchEmbed:
    torch.manual_seed(seed)
    embed = VolumePatchEmbed(**sizes)
    with torch.no_grad():  # default Conv3d init of the depth conv is tiny; use O(1) weights
        embed.slice_embed.weight.normal_(0, 0.25)
        embed.slice_embed.bias.normal_(0, 0.1)
        embed.proj.bias.normal_(0, 0.1)
    return embed


def assert_paths_agree(embed: VolumePatchEmbed, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        fast = embed(x)
        literal = LiteralPatchEmbed(embed)(x)
    g = embed.grid
    assert fast.shape == literal.shape == (x.shape[0], g, g, g, embed.dim)
    scale = literal.abs().max()
    assert scale > 0.1
    assert (fast - literal).abs().max() <= 1e-4 * scale
    return fast


@pytest.mark.parametrize("channels", [3, 1])
def test_fast_matches_literal_tiny(channels: int) -> None:
    embed = make_embed(**TINY)
    x = torch.randn(2 if channels == 3 else 1, channels, 64, 64, 64)
    assert_paths_agree(embed, x)


def test_single_channel_equals_repeated_channel() -> None:
    embed = make_embed(**TINY)
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(embed(x), embed(x.repeat(1, 3, 1, 1, 1)), atol=1e-5, rtol=1e-5)


def test_fast_matches_literal_vit_b_geometry() -> None:
    """The official geometry (128³ crop → 512³ → 32³ tokens, patch 16) at width 8."""
    embed = make_embed(dim=8, patch=16, crop=128, grid=32)
    x = torch.randn(1, 3, 128, 128, 128)
    assert_paths_agree(embed, x)


def test_token_layout_is_h_w_d() -> None:
    """Tokens are B×H'×W'×D'×C: a bump at voxel (d, h, w) shows up at token (h/4, w/4, d/4)."""
    embed = make_embed(**TINY)
    x = torch.zeros(1, 3, 64, 64, 64)
    x[0, :, 8 * 4 + 1, 2 * 4 + 1, 13 * 4 + 1] = 1.0  # (d, h, w) inside token (h=2, w=13, d=8)
    with torch.no_grad():
        base = embed(torch.zeros_like(x))
        delta = (embed(x) - base).abs().amax(-1)[0]
    assert delta.argmax() == torch.tensor(2 * 256 + 13 * 16 + 8)


def test_slice_embed_gradient_matches_literal() -> None:
    embed = make_embed(**TINY)
    x = torch.randn(1, 3, 64, 64, 64)
    weight = torch.randn(1, 16, 16, 16, 96)
    grads = []
    for fn in (embed, LiteralPatchEmbed(embed)):
        embed.zero_grad()
        (fn(x) * weight).sum().backward()
        grads.append((embed.slice_embed.weight.grad.clone(), embed.slice_embed.bias.grad.clone()))
    scale = grads[1][0].abs().max()
    assert scale > 0
    assert (grads[0][0] - grads[1][0]).abs().max() <= 1e-4 * scale
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("scale", "patch"), [(4, 16), (2, 16), (8, 16), (1, 4)])
def test_linear_upsample_taps(scale: int, patch: int) -> None:
    taps = linear_upsample_taps(scale, patch)
    stride = patch // scale
    assert taps.shape == (patch, stride + 2)
    torch.testing.assert_close(taps.sum(1), torch.ones(patch, dtype=torch.float64))
    assert (taps >= 0).all()
    # an interior patch of a real ×scale upsampling is exactly taps · (source voxels −1 … stride)
    signal = torch.randn(1, 1, 8 * stride, dtype=torch.float64)
    up = F.interpolate(signal, scale_factor=scale, mode="linear", align_corners=False)[0, 0]
    k = 3  # patch index, away from the borders
    window = signal[0, 0, k * stride - 1 : k * stride + stride + 1]
    torch.testing.assert_close(up[k * patch : (k + 1) * patch], taps @ window)


@pytest.mark.parametrize(
    "shape",
    [
        (1, 2, 64, 64, 64),
        (1, 3, 32, 64, 64),
        (1, 3, 64, 64, 65),
        (3, 64, 64, 64),
        (1, 4, 64, 64, 64),
    ],
)
def test_bad_input_shapes(shape: tuple[int, ...]) -> None:
    embed = VolumePatchEmbed(**TINY)
    x = torch.zeros(shape)
    for fn in (embed, LiteralPatchEmbed(embed)):
        with pytest.raises(ValueError, match=r"D = H = W = 64") as info:
            fn(x)
        assert str(tuple(shape)) in str(info.value)
        assert "C in (1, 3)" in str(info.value)


@pytest.mark.parametrize(
    "sizes",
    [
        {"dim": 8, "patch": 16, "crop": 48, "grid": 16},  # crop does not divide grid·patch
        {"dim": 8, "patch": 16, "crop": 64, "grid": 128},  # crop not a multiple of grid
        {"dim": 8, "patch": 16, "crop": 1024, "grid": 32},  # crop larger than grid·patch
        {"dim": 0, "patch": 16, "crop": 64, "grid": 16},
        {"dim": 8, "patch": 16, "crop": 64, "grid": 0},
    ],
)
def test_invalid_constructor(sizes: dict) -> None:
    with pytest.raises(ValueError):
        VolumePatchEmbed(**sizes)
