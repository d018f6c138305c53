"""The MONAI baselines: registry, PromptFree wrapper, gradients, parameter counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam3d.baselines.networks import (
    BASELINES,
    PAPER_CROP,
    Baseline,
    PromptFree,
    build_baseline,
    count_parameters,
    get_baseline,
)

# Small sizes each network accepts (SwinUNETR: multiples of 32 with one of them ≥ 64, since
# training-mode instance norm needs > 1 voxel at the 1/32 bottleneck; UNETR: multiples of 16
# and exactly its build size; the smoke DynUNet: multiples of 8).
SMALL = {"swin_unetr": (64, 32, 32), "unetr": (32, 32, 32), "dynunet_smoke": (64, 64, 64)}
# MONAI's TransformerBlock always builds a cross-attention LayerNorm that UNETR never uses
UNUSED = ("norm_cross_attn",)


def test_registry() -> None:
    assert set(BASELINES) == {"swin_unetr", "unetr", "dynunet_smoke"}
    for name, b in BASELINES.items():
        assert b.name == name and b.in_channels == 1 and b.out_channels == 2
    assert BASELINES["swin_unetr"].crop == PAPER_CROP == (64, 160, 160)
    assert BASELINES["unetr"].crop == PAPER_CROP
    assert BASELINES["dynunet_smoke"].crop == (64, 64, 64)
    smoke = BASELINES["dynunet_smoke"]
    assert "smoke stand-in" in smoke.description.lower()
    assert "not a paper baseline" in smoke.description.lower() and smoke.paper is None
    assert BASELINES["swin_unetr"].paper == "Swin-UNETR"
    with pytest.raises(KeyError, match="known"):
        get_baseline("nnformer")


@pytest.mark.parametrize("name", [
    "dynunet_smoke",
    pytest.param("swin_unetr", marks=pytest.mark.slow),  # 62M parameters: ~10-30 s on CPU
    pytest.param("unetr", marks=pytest.mark.slow),
])
def test_forward_shape_and_gradients(name) -> None:
    torch.manual_seed(0)
    model = build_baseline(name, crop=SMALL[name])
    assert isinstance(model, PromptFree) and model.name == name and model.size == SMALL[name]
    volume = torch.randn(1, 3, *SMALL[name])  # 3 channels, as our pipeline feeds Sam3D
    points = torch.randint(0, 32, (1, 10, 3)).float()
    logits = model(volume, points)
    assert logits.shape == (1, 2, *SMALL[name]) and torch.isfinite(logits).all()
    logits.float().pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and p.grad is None and not any(u in n for u in UNUSED)]
    assert missing == []
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_points_are_ignored_and_only_the_first_channel_is_used() -> None:
    torch.manual_seed(0)
    model = build_baseline("dynunet_smoke", crop=(32, 32, 32)).eval()
    volume = torch.randn(2, 3, 32, 32, 32)
    other = volume.clone()
    other[:, 1:] = torch.randn(2, 2, 32, 32, 32)
    with torch.no_grad():
        ref = model(volume)
        assert torch.equal(model(volume, torch.zeros(2, 5, 3)), ref)
        assert torch.equal(model(other, None), ref)
        assert torch.equal(model(volume[:, :1]), ref)


def test_bad_inputs_are_refused() -> None:
    model = build_baseline("unetr", crop=(32, 32, 32))
    with pytest.raises(ValueError, match="only that size"):
        model(torch.zeros(1, 1, 32, 32, 48))
    with pytest.raises(ValueError, match="B×C×D×H×W"):
        model(torch.zeros(1, 32, 32, 32))
    with pytest.raises(ValueError, match="channel"):
        model(torch.zeros(1, 0, 32, 32, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        BASELINES["swin_unetr"].build((48, 64, 64))
    with pytest.raises(ValueError, match="crop"):
        BASELINES["dynunet_smoke"].model((64, 64))


def test_constructors_validate() -> None:
    with pytest.raises(TypeError):
        PromptFree("not a module", name="x", crop=(8, 8, 8))
    with pytest.raises(ValueError):
        PromptFree(nn.Identity(), name="", crop=(8, 8, 8))
    with pytest.raises(ValueError):
        PromptFree(nn.Identity(), name="x", crop=(8, 0, 8))
    with pytest.raises(ValueError, match="multiple"):
        Baseline("x", "d", (10, 16, 16), lambda c, i, o: nn.Identity(), divisor=8)
    with pytest.raises(ValueError, match="output classes"):
        Baseline("x", "d", (8, 8, 8), lambda c, i, o: nn.Identity(), out_channels=1)


def test_parameter_counts() -> None:
    counts = {name: count_parameters(name) for name in BASELINES}
    print("parameters:", {k: f"{v / 1e6:.2f}M" for k, v in counts.items()})
    # MONAI SwinUNETR, feature_size 48, 1 → 2 channels: exactly the paper's 62.19M
    assert counts["swin_unetr"] == 62_186_708
    assert round(counts["swin_unetr"] / 1e6, 2) == BASELINES["swin_unetr"].paper_params_m
    # UNETR's positional embedding grows with the crop: 4·10·10 patches of 16³ at (64,160,160);
    # 12 × 1,536 of its parameters are MONAI's never-used cross-attention LayerNorms
    assert counts["unetr"] == 92_943_586
    unused = sum(p.numel() for n, p in BASELINES["unetr"].build().named_parameters()
                 if "norm_cross_attn" in n)
    assert unused == 12 * 2 * 768
    assert counts["dynunet_smoke"] < 1_000_000


def test_engine_model_is_a_cube_with_only_used_parameters_trainable() -> None:
    model = BASELINES["dynunet_smoke"].engine_model()
    assert model.size == (64, 64, 64) and model.crop == 64  # int edge, as Sam3D.crop
    assert BASELINES["dynunet_smoke"].engine_model(32).crop == 32
    assert build_baseline("swin_unetr", crop=(64, 32, 32)).crop == (64, 32, 32)
    assert BASELINES["swin_unetr"].cube == BASELINES["unetr"].cube == 128
    with torch.device("meta"):
        unetr = BASELINES["unetr"].engine_model(32)
    frozen = [n for n, p in unetr.named_parameters() if not p.requires_grad]
    assert frozen and all("norm_cross_attn" in n for n in frozen)
    with pytest.raises(ValueError, match="multiple of 8"):
        BASELINES["dynunet_smoke"].engine_model(60)
    with pytest.raises(ValueError, match="positive integer"):
        BASELINES["dynunet_smoke"].engine_model(0)
    with pytest.raises(ValueError, match="multiple of 8"):
        Baseline("x", "d", (8, 8, 8), lambda c, i, o: nn.Identity(), divisor=8, cube=12)


def test_bf16_autocast_returns_float32_logits() -> None:
    from sam3d.engine.precision import autocast

    model = build_baseline("dynunet_smoke", crop=(32, 32, 32)).eval()
    with torch.no_grad(), autocast("cpu", True):
        logits = model(torch.randn(1, 1, 32, 32, 32))
    assert logits.dtype == torch.float32 and logits.shape == (1, 2, 32, 32, 32)
