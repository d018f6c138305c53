"""MLA mask decoder: the fused upsample-conv path against the literal one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam3d.modeling.literal import LiteralMaskDecoder, decoder_literal
from sam3d.modeling.mask_decoder import MaskDecoder3D, upsample_conv3d, upsample_matrix

IN, MID, LEVELS, GRID = 32, 16, 4, 16  # the tiny variant's decoder


@pytest.fixture
def decoder_inputs():
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, IN, GRID, GRID, GRID, generator=gen) for _ in range(LEVELS)]
    skip = torch.randn(2, 1, 2 * GRID, 2 * GRID, 2 * GRID, generator=gen)
    return feats, skip


def test_fused_matches_literal(decoder_inputs) -> None:
    feats, skip = decoder_inputs
    torch.manual_seed(0)
    decoder = MaskDecoder3D(IN, MID, LEVELS, 2).eval()
    with torch.no_grad():
        fused = decoder(feats, skip, 64)
        literal = decoder_literal(decoder, feats, skip, 64)
    assert fused.shape == literal.shape == (2, 2, 64, 64, 64)
    scale = literal.abs().max()
    assert scale > 0.1
    assert (fused - literal).abs().max() <= 1e-4 * scale


def test_fused_gradients_match_literal() -> None:
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, IN, 8, 8, 8, generator=gen) for _ in range(LEVELS)]
    skip = torch.randn(1, 1, 16, 16, 16, generator=gen)
    torch.manual_seed(0)
    decoder = MaskDecoder3D(IN, MID, LEVELS, 2)
    grads = []
    for path in (decoder, LiteralMaskDecoder(decoder)):
        decoder.zero_grad()
        path(feats, skip, 32)[:, 1].mean().backward()
        grads.append({n: p.grad.clone() for n, p in decoder.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-5, rtol=1e-3, msg=name)


def test_batch_items_are_independent(decoder_inputs) -> None:
    feats, skip = decoder_inputs
    torch.manual_seed(0)
    decoder = MaskDecoder3D(IN, MID, LEVELS, 2).eval()
    with torch.no_grad():
        both = decoder(feats, skip, 64)
        second = decoder([f[1:] for f in feats], skip[1:], 64)
    torch.testing.assert_close(both[1:], second, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("g", "size"), [(4, 8), (5, 10), (4, 11), (3, 3)])
def test_upsample_conv3d_equals_literal(g: int, size: int) -> None:
    gen = torch.Generator().manual_seed(g * 100 + size)
    h = torch.randn(2, 6, g, g, g, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 6, 3, 3, 3, generator=gen, dtype=torch.float64)
    up = F.interpolate(h, size=(size,) * 3, mode="trilinear", align_corners=True)
    want = F.conv3d(up, weight, padding=1)
    got = upsample_conv3d(h, weight, size)
    assert got.shape == (2, 5, size, size, size)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_upsample_matrix() -> None:
    m = upsample_matrix(4, 8, torch.float64, "cpu")
    assert m.shape == (8, 4)
    torch.testing.assert_close(m.sum(1), torch.ones(8, dtype=torch.float64))
    # align_corners True: first and last output samples hit the end points exactly
    assert m[0, 0] == 1 and m[-1, -1] == 1


def test_parameter_count_matches_official() -> None:
    decoder = MaskDecoder3D()  # 256 → 128, 4 levels, 2 classes: the paper's decoder
    assert sum(p.numel() for p in decoder.parameters()) == 7_088_256
    assert sorted(decoder.state_dict()) == sorted(
        [f"mlahead.head{i}.{j}.weight" for i in (2, 3, 4, 5) for j in (0, 3)]
        + ["cls.0.weight", "cls.3.weight"]
    )


@pytest.mark.parametrize("n", [3, 5])
def test_wrong_number_of_levels(decoder_inputs, n: int) -> None:
    feats, skip = decoder_inputs
    decoder = MaskDecoder3D(IN, MID, LEVELS, 2)
    feats = (feats * 2)[:n]
    for path in (decoder, LiteralMaskDecoder(decoder)):
        with pytest.raises(ValueError, match=f"expected 4 feature levels, got {n}"):
            path(feats, skip, 64)
