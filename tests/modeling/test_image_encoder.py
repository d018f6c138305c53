"""3D image encoder: feature levels, positional tables, construction checks."""

from __future__ import annotations

import itertools

import pytest
import torch

from sam3d import build_sam3d
from sam3d.config import get_config
from sam3d.modeling import ImageEncoder3D
from sam3d.modeling.literal import literal_paths


def encoder_kwargs(**changes) -> dict:
    cfg = get_config("tiny")
    kw = {
        "dim": cfg.dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "patch": cfg.patch,
        "sam_img_size": cfg.sam_img_size,
        "crop": cfg.crop,
        "grid": cfg.grid,
        "window": cfg.window,
        "global_attn_indexes": cfg.global_attn_indexes,
        "rel_pos_window": cfg.rel_pos_window,
        "taps": cfg.taps,
        "out_chans": cfg.out_chans,
        "adapter_dim": cfg.adapter_dim,
    }
    kw.update(changes)
    return kw


def test_feature_levels(tiny_model, tiny_inputs) -> None:
    volume, _ = tiny_inputs
    with torch.no_grad():
        feats = tiny_model.image_encoder(volume)
    assert len(feats) == 4
    for f in feats:
        assert f.shape == (2, 32, 16, 16, 16)
        # each neck ends in a channel LayerNorm (weight 1, bias 0 at init)
        torch.testing.assert_close(f.mean(1), torch.zeros_like(f.mean(1)), atol=1e-4, rtol=0)
    assert all((a - b).abs().max() > 1e-3 for a, b in itertools.pairwise(feats))


def test_literal_patch_embedding_path(tiny_model, tiny_inputs) -> None:
    volume, _ = tiny_inputs
    enc = tiny_model.image_encoder
    with torch.no_grad():
        fast = enc(volume[:1])
        with literal_paths(tiny_model, decoder=False):
            literal = enc(volume[:1])
    for a, b in zip(fast, literal, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_positional_table_pooled_and_broadcast(randomise) -> None:
    """A 32² SAM table (sam_img_size 512) is 2×2-averaged to the 16² grid; depth adds along D."""
    enc = randomise(ImageEncoder3D(**encoder_kwargs(sam_img_size=512)))
    with torch.no_grad():
        enc.depth_embed.normal_()
    assert enc.pos_embed.shape == (1, 32, 32, 96)
    assert enc.depth_embed.shape == (1, 16, 96)
    pos = enc.positional()
    assert pos.shape == (1, 16, 16, 16, 96)
    table, depth = enc.pos_embed[0].detach(), enc.depth_embed[0].detach()
    for h, w, d in [(0, 0, 0), (3, 9, 14), (15, 15, 1)]:
        pooled = table[2 * h : 2 * h + 2, 2 * w : 2 * w + 2].mean((0, 1))
        torch.testing.assert_close(pos[0, h, w, d], pooled + depth[d])


def test_depth_embed_starts_at_one_and_rel_pos_sizes() -> None:
    """v2 initialisation: depth_embed = 1; rel-pos rows 2·14−1 / 2·64−1 for ViT-B."""
    with torch.device("meta"):
        model = build_sam3d("vit_b")
    enc = model.image_encoder
    rows = [b.attn.rel_pos_h.shape[0] for b in enc.blocks]
    assert rows == [27, 27, 127] * 4
    assert all(
        b.attn.rel_pos_d.shape == b.attn.rel_pos_h.shape == b.attn.rel_pos_w.shape
        for b in enc.blocks
    )
    assert [b.shift for b in enc.blocks] == [4, 0] * 6
    assert enc.pos_embed.shape == (1, 64, 64, 768)
    tiny = build_sam3d("tiny").image_encoder
    assert torch.equal(tiny.depth_embed, torch.ones_like(tiny.depth_embed))


@pytest.mark.parametrize(
    "changes",
    [
        {"taps": (0, 0, 2, 3)},
        {"taps": (3, 2, 1, 0)},
        {"taps": (0, 1, 2, 4)},
        {"taps": ()},
        {"window": 5},  # grid 16 not a multiple of 5
        {"sam_img_size": 192},  # 12² table cannot be pooled to 16²
        {"depth": 0},
    ],
)
def test_invalid_construction(changes: dict) -> None:
    with pytest.raises(ValueError):
        ImageEncoder3D(**encoder_kwargs(**changes))
