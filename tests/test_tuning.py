"""The tables of sam3d.tuning: parameter groups, tuning policies as unions of groups and the
registry of PEFT methods, checked against the literal lists they replaced (reference data
below, copied from the package before the tables existed)."""

from __future__ import annotations

import re

import pytest
import torch

from sam3d import CONFIGS, build_sam3d, get_config
from sam3d.config import PEFT_METHODS, TUNING_POLICIES
from sam3d.experiments.peft import METHODS, ROLES, parameter_groups
from sam3d.modeling.image_encoder import ENCODER_PEFT
from sam3d.modeling.peft import TUNERS, build_block_tuners
from sam3d.tuning import (
    PARAM_GROUPS,
    PEFT_REGISTRY,
    POLICY_GROUPS,
    TUNER_METHODS,
    groups_pattern,
    policy_pattern,
)

# --------------------------------------------------------------- reference data (old lists)
#: sam3d/config.py's TUNING_POLICIES as literal patterns (matched with re.match)
OLD_POLICIES = {
    "paper": (r"depth_embed", r"patch_embed\.slice_embed\.",
              r"blocks\.\d+\.(norm1|norm2|adapter)\.", r"blocks\.\d+\.attn\.rel_pos_d",
              r"neck_3d\."),
    "full": (r".",),
    "peft": (r"depth_embed", r"patch_embed\.slice_embed\.",
             r"blocks\.\d+\.(norm1|norm2|adapter)\.", r"blocks\.\d+\.attn\.rel_pos_d",
             r"neck_3d\.", r"peft\."),
}
#: sam3d/experiments/peft.py's GROUPS (matched with re.search, first match wins)
OLD_ROLES = {
    "method": r"^peft\.|^blocks\.\d+\.adapter\.",
    "norms": r"^blocks\.\d+\.norm[12]\.",
    "3d_additions": r"^depth_embed$|^patch_embed\.slice_embed\.|^blocks\.\d+\.attn\.rel_pos_d$"
                    r"|^neck_3d\.",
}
OLD_METHODS = {"Full fine-tuning": "full", "Adapter": "adapter", "Pro-tuning": "protuning",
               "ST-Adapter": "stadapter", "Med-tuning": "medtuning", "3DSAM-adapter": "ours"}
#: sam3d/config.py's _TABLE2: suffix → (peft, vit_b width, tiny width, tuning, description)
OLD_TABLE2 = {
    "ours": ("spatial", 0, 0, "paper", "3DSAM-adapter (spatial adapters)"),
    "full": ("none", 0, 0, "full", "full fine-tuning (no PEFT module, every encoder weight)"),
    "adapter": ("houlsby", 205, 26, "peft", "Adapter (Houlsby et al. 2019), 2 per block"),
    "protuning": ("protuning", 357, 45, "peft", "Pro-tuning (Nie et al. 2022) prompt blocks"),
    "stadapter": ("stadapter", 384, 48, "peft", "ST-Adapter (Pan et al. 2022), before attention"),
    "medtuning": ("medtuning", 389, 49, "peft", "Med-Tuning (2023) Med-Adapters after blocks"),
}
OLD_PEFT_METHODS = ("spatial", "none", "houlsby", "protuning", "stadapter", "medtuning")

#: encoders whose parameter names are checked: the paper's model (12 blocks: two-digit indices)
#: and every Table 2 variant, at ViT-B and at tiny size (the same names, fewer blocks)
VARIANTS = ("vit_b", "tiny", *(f"{p}{s}" for s in OLD_TABLE2 for p in ("auto_", "tiny_auto_")))


def encoder_names(variant: str) -> list[str]:
    with torch.device("meta"):
        return [n for n, _ in build_sam3d(variant).image_encoder.named_parameters()]


@pytest.fixture(scope="module")
def names() -> dict[str, list[str]]:
    return {v: encoder_names(v) for v in VARIANTS}


def test_policies_select_the_same_parameters_as_the_old_patterns(names) -> None:
    assert set(TUNING_POLICIES) == set(POLICY_GROUPS) == set(OLD_POLICIES)
    for variant, params in names.items():
        for policy, old in OLD_POLICIES.items():
            expected = {n for n in params if any(re.match(p, n) for p in old)}
            new = {n for n in params if any(re.match(p, n) for p in TUNING_POLICIES[policy])}
            assert new == expected, (variant, policy)
            assert {n for n in params if policy_pattern(policy).match(n)} == expected
        assert len({n for n in params if re.match(OLD_POLICIES["paper"][0], n)}) == 1


def test_build_tunes_what_the_old_patterns_select(names) -> None:
    for variant in ("tiny", "tiny_auto_adapter", "tiny_auto_full"):
        model = build_sam3d(variant)
        old = OLD_POLICIES[get_config(variant).tuning]
        flags = {n: p.requires_grad for n, p in model.image_encoder.named_parameters()}
        assert list(flags) == names[variant]
        for name, tuned in flags.items():
            # the rel-pos scale ``attn.lr`` stays frozen whatever the policy (official)
            expected = any(re.match(p, name) for p in old) and not name.endswith("attn.lr")
            assert tuned is expected, (variant, name)


def test_roles_assign_each_parameter_as_the_old_patterns(names) -> None:
    patterns = {role: groups_pattern(groups) for role, groups in ROLES.items()}
    assert list(patterns) == list(OLD_ROLES)
    for variant, params in names.items():
        for name in params:
            old = next((r for r, rx in OLD_ROLES.items() if re.search(rx, name)), None)
            new = next((r for r, rx in patterns.items() if rx.match(name)), None)
            assert new == old, (variant, name)
    counts = parameter_groups("tiny_auto_adapter")
    assert (counts["method"], counts["norms"], counts["3d_additions"]) == (40_912, 1_536, 128_672)


def test_method_lists_derive_from_the_registry() -> None:
    assert PEFT_METHODS == ENCODER_PEFT == tuple(PEFT_REGISTRY) == OLD_PEFT_METHODS
    assert TUNER_METHODS == tuple(TUNERS) == ("houlsby", "protuning", "stadapter", "medtuning")
    assert METHODS == OLD_METHODS and list(METHODS) == list(OLD_METHODS)  # paper order
    for method in PEFT_REGISTRY.values():
        assert method.tuning in POLICY_GROUPS
        assert method.modules == all(w > 0 for w in method.widths) == (method.name in TUNERS)
    table2 = [n for n in CONFIGS if n.startswith(("auto_", "tiny_auto_"))]
    assert table2 == [f"{p}{s}" for s in OLD_TABLE2 for p in ("auto_", "tiny_auto_")]
    for suffix, (peft, width, tiny_width, tuning, what) in OLD_TABLE2.items():
        auto, tiny = get_config(f"auto_{suffix}"), get_config(f"tiny_auto_{suffix}")
        assert (auto.peft, auto.peft_dim, auto.tuning) == (peft, width, tuning)
        assert (tiny.peft, tiny.peft_dim, tiny.tuning) == (peft, tiny_width, tuning)
        assert auto.description == f"Table 2, automatic, 256³ crop: {what}"
        assert tiny.description == f"tiny smoke version of auto_{suffix}: {what}"


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tuning policy"):
        policy_pattern("lora")
    with pytest.raises(ValueError, match="PARAM_GROUPS"):
        groups_pattern(["norms", "heads"])
    with pytest.raises(ValueError, match="PARAM_GROUPS"):
        groups_pattern([])
    with pytest.raises(ValueError, match="unknown PEFT method"):
        build_block_tuners("spatial", 96, 8, 4, 16, (0, 1, 2, 3))
    assert set(PARAM_GROUPS) >= {g for gs in POLICY_GROUPS.values() for g in gs}


def test_registered_tuners_build_one_module_per_block() -> None:
    taps = (0, 1, 2, 3)
    for method, cls in TUNERS.items():
        tuners = build_block_tuners(method, 96, 8, 4, 16, taps)
        assert len(tuners) == 4 and all(type(t) is cls for t in tuners)
    med = build_block_tuners("medtuning", 96, 8, 4, 16, (1, 3))
    assert [t.inter_stage for t in med] == [False, True, False, True]
