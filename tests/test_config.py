"""The registry of named configurations."""

from __future__ import annotations

import dataclasses
import re

import pytest

from sam3d import CONFIGS, Sam3DConfig, build_sam3d, get_config
from sam3d.config import TUNING_POLICIES, register


def test_registry_names() -> None:
    assert {"vit_b", "vit_l", "vit_h", "tiny"} <= set(CONFIGS)
    for name, cfg in CONFIGS.items():
        assert cfg.name == name
        assert get_config(name) is cfg


def test_paper_defaults() -> None:
    cfg = get_config("vit_b")
    assert (cfg.dim, cfg.depth, cfg.num_heads, cfg.crop, cfg.grid, cfg.window) == (
        768,
        12,
        12,
        128,
        32,
        8,
    )
    assert cfg.taps == cfg.global_attn_indexes == (2, 5, 8, 11)
    assert cfg.prompt_levels == (4,)
    assert cfg.adapter_dim == 384 and cfg.tuning == "paper" and cfg.sam_model == "vit_b"
    assert get_config("vit_l").dim == 1024 and get_config("vit_h").dim == 1280
    tiny = get_config("tiny")
    assert tiny.sam_model is None and tiny.crop == 64 and tiny.grid * tiny.patch % tiny.crop == 0


def test_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError) as info:
        get_config("vit_x")
    message = str(info.value)
    assert "vit_x" in message
    for name in ("vit_b", "vit_l", "vit_h", "tiny"):
        assert name in message


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"tuning": "lora"}, "tuning policy"),
        ({"prompt_levels": (4, 4)}, "distinct"),
        ({"prompt_levels": (5,)}, "prompt level 5"),
        ({"prompt_levels": (0,)}, "prompt level 0"),
        ({"adapter_ratio": 0.0}, "adapter_ratio"),
        ({"adapter_ratio": 5.0}, "adapter_ratio"),
    ],
)
def test_invalid_fields(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sam3DConfig("bad", **changes)
    with pytest.raises(ValueError, match=match):  # replace() validates again
        get_config("vit_b").replace(**changes)


def test_replace_returns_new_config() -> None:
    base = get_config("tiny")
    cfg = base.replace(prompt_levels=(1, 2))
    assert cfg.prompt_levels == (1, 2) and base.prompt_levels == (4,)
    assert cfg.name == "tiny" and cfg != base
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.dim = 3  # type: ignore[misc]


def test_register_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(Sam3DConfig("vit_b"))
    assert CONFIGS["vit_b"] == Sam3DConfig("vit_b")


def _tuned(policy: str, name: str) -> bool:
    """Whether ``policy`` tunes the encoder parameter ``name`` (matched from its start, as
    :func:`sam3d.build.apply_tuning_policy` does)."""
    return any(re.match(p, name) for p in TUNING_POLICIES[policy])


#: encoder parameter names and whether the paper's policy tunes them: the 3D additions and the
#: norms, adapters and depth rel-pos tables are tuned, SAM's own 2D weights stay frozen
PAPER_TUNED = {
    "depth_embed": True,
    "patch_embed.slice_embed.weight": True,
    "blocks.0.norm1.weight": True,
    "blocks.11.norm2.bias": True,
    "blocks.3.adapter.linear1.weight": True,
    "blocks.3.attn.rel_pos_d": True,
    "neck_3d.0.0.weight": True,
    "pos_embed": False,
    "patch_embed.proj.weight": False,
    "blocks.3.attn.qkv.weight": False,
    "blocks.3.attn.proj.bias": False,
    "blocks.3.attn.rel_pos_h": False,
    "blocks.3.attn.rel_pos_w": False,
    "blocks.3.mlp.lin1.weight": False,
    "peft.3.attn.down.weight": False,
}


def test_tuning_policies_select_the_intended_parameters() -> None:
    assert set(TUNING_POLICIES) == {"paper", "full", "peft"}
    for name, tuned in PAPER_TUNED.items():
        assert _tuned("paper", name) is tuned, name
        assert _tuned("full", name), name  # full fine-tuning: everything
        # the PEFT comparison: the paper's set plus the PEFT modules (peft.<block>.*)
        assert _tuned("peft", name) is (tuned or name.startswith("peft.")), name
    # on the tiny encoder (no PEFT modules): "peft" tunes what "paper" tunes, "full" everything
    tiny = [n for n, _ in build_sam3d("tiny").image_encoder.named_parameters()]
    assert all(_tuned("full", n) for n in tiny)
    assert [n for n in tiny if _tuned("paper", n)] == [n for n in tiny if _tuned("peft", n)]


# ------------------------------------------------- PEFT (Table 2) and levels (Table 3)
TABLE2 = ("ours", "full", "adapter", "protuning", "stadapter", "medtuning")


def test_table2_and_table3_names() -> None:
    for suffix in TABLE2:
        auto, tiny = get_config(f"auto_{suffix}"), get_config(f"tiny_auto_{suffix}")
        assert auto.prompt_levels == tiny.prompt_levels == ()
        assert (auto.crop, auto.grid, tiny.crop, tiny.grid) == (256, 32, 64, 16)
        assert auto.peft == tiny.peft and auto.tuning == tiny.tuning
    for tag, levels in (("34", (3, 4)), ("24", (2, 4)), ("14", (1, 4)), ("1234", (1, 2, 3, 4))):
        assert get_config(f"vit_b_levels_{tag}").prompt_levels == levels
        assert get_config(f"tiny_levels_{tag}").prompt_levels == levels
    assert get_config("vit_b").peft == "spatial" and get_config("vit_b").peft_dim == 0


def test_peft_widths() -> None:
    widths = {s: (get_config(f"auto_{s}").peft_dim, get_config(f"tiny_auto_{s}").peft_dim)
              for s in TABLE2}
    assert widths == {"ours": (0, 0), "full": (0, 0), "adapter": (205, 26),
                      "protuning": (357, 45), "stadapter": (384, 48), "medtuning": (389, 49)}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"peft": "lora"}, "unknown peft"),
        ({"peft": "houlsby", "tuning": "peft"}, "peft_dim must be a positive integer"),
        ({"peft": "houlsby", "peft_dim": -3, "tuning": "peft"}, "peft_dim"),
        ({"peft": "houlsby", "peft_dim": 2.5, "tuning": "peft"}, "peft_dim"),
        ({"peft_dim": 8}, "peft_dim must be 0"),
        ({"peft": "none", "peft_dim": 8}, "peft_dim must be 0"),
        ({"peft": "stadapter", "peft_dim": 8}, "would freeze"),
    ],
)
def test_invalid_peft_fields(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sam3DConfig("bad", **changes)


def test_peft_policy_extends_paper_policy() -> None:
    assert TUNING_POLICIES["peft"][:-1] == TUNING_POLICIES["paper"]
    assert TUNING_POLICIES["peft"][-1] == r"peft\."
