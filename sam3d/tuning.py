"""Which encoder parameters are tuned: parameter groups, tuning policies and PEFT methods.

One table each, from which the rest of the package derives its lists:

* :data:`PARAM_GROUPS` — named groups of ``ImageEncoder3D`` parameters, each a regular
  expression matched from the start of a parameter name (``re.match``);
* :data:`POLICY_GROUPS` — the tuning policies (``Sam3DConfig.tuning``) as unions of group
  names; :data:`TUNING_POLICIES` is the same as regular expressions;
* :data:`PEFT_REGISTRY` — the ways of adapting the encoder (``Sam3DConfig.peft``) with what the
  configurations and the Table 2 experiment need to know of each; the module classes of the
  methods that build modules are registered under the same names in
  :data:`sam3d.modeling.peft.TUNERS` (this module imports no torch: ``sam3d.config`` uses it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: Named groups of ``ImageEncoder3D`` parameters: regular expressions matched from the start of
#: the parameter name (``blocks.3.norm1.weight``, ``peft.3.attn.down.weight``, …).
PARAM_GROUPS: dict[str, str] = {
    "depth_embed": r"depth_embed",  # the depth positional table (3D addition)
    "slice_embed": r"patch_embed\.slice_embed\.",  # the depthwise slice convolution (3D)
    "norms": r"blocks\.\d+\.(norm1|norm2)\.",  # every block's two LayerNorms
    "adapters": r"blocks\.\d+\.adapter\.",  # the paper's spatial adapters
    "rel_pos_d": r"blocks\.\d+\.attn\.rel_pos_d",  # the depth rel-pos tables (3D addition)
    "necks": r"neck_3d\.",  # the four 3D necks (3D addition)
    "peft_modules": r"peft\.",  # the modules of a sam3d.modeling.peft method (Table 2)
    "everything": r".",  # every encoder parameter
}

#: The 3D additions: encoder parameters SAM has no counterpart for; every variant tunes them.
ADDITIONS_3D: tuple[str, ...] = ("depth_embed", "slice_embed", "rel_pos_d", "necks")

#: Tuning policies as unions of :data:`PARAM_GROUPS`. Prompt encoders and the decoder are
#: always tuned.
POLICY_GROUPS: dict[str, tuple[str, ...]] = {
    # The paper (official train.py): depth/slice embeddings, norms, adapters, depth rel-pos
    # tables and the four necks; SAM's own weights stay frozen.
    "paper": ("depth_embed", "slice_embed", "norms", "adapters", "rel_pos_d", "necks"),
    # Every encoder parameter (full fine-tuning; smoke runs of the randomly initialised tiny
    # model, which has no pretrained weights worth freezing).
    "full": ("everything",),
    # The PEFT comparison (paper Table 2): what every variant shares with the paper's policy
    # (the 3D additions and the norms) plus the modules of the chosen PEFT method.
    "peft": ("depth_embed", "slice_embed", "norms", "adapters", "rel_pos_d", "necks",
             "peft_modules"),
}

#: The policies as regular expressions on ``ImageEncoder3D`` parameter names (``re.match``):
#: a parameter is tuned when one of its policy's patterns matches.
TUNING_POLICIES: dict[str, tuple[str, ...]] = {
    policy: tuple(PARAM_GROUPS[g] for g in groups) for policy, groups in POLICY_GROUPS.items()
}


def groups_pattern(groups: Iterable[str]) -> re.Pattern[str]:
    """One compiled expression matching (``.match``) a name of any of ``groups``."""
    names = tuple(groups)
    unknown = [g for g in names if g not in PARAM_GROUPS]
    if not names or unknown:
        raise ValueError(f"groups must be names of PARAM_GROUPS {sorted(PARAM_GROUPS)}, "
                         f"got {list(names)}")
    return re.compile("|".join(f"(?:{PARAM_GROUPS[g]})" for g in names))


def policy_pattern(policy: str) -> re.Pattern[str]:
    """The compiled expression of a tuning policy (a key of :data:`POLICY_GROUPS`)."""
    if policy not in POLICY_GROUPS:
        raise ValueError(f"unknown tuning policy {policy!r}; known: {sorted(POLICY_GROUPS)}")
    return groups_pattern(POLICY_GROUPS[policy])


@dataclass(frozen=True)
class PeftMethod:
    """One way of adapting the encoder (a value of ``Sam3DConfig.peft``).

    ``modules``: whether it builds modules of its own (``peft.<block>.*``, a class of
    :data:`sam3d.modeling.peft.TUNERS`; then ``peft_dim`` must be positive, else 0).
    The paper's Table 2: ``table2_row`` (its row name), ``table2_suffix`` (the configurations
    ``auto_<suffix>`` and ``tiny_auto_<suffix>``), ``widths`` (their ``peft_dim`` at ViT-B and
    tiny size), ``tuning`` (their policy), ``description``.
    """

    name: str
    modules: bool
    table2_row: str
    table2_suffix: str
    widths: tuple[int, int]
    tuning: str
    description: str


#: Widths: each method's paper default where it has one (ST-Adapter 384), else the width whose
#: tuned-module count (+ norms) comes closest to the figure the 3DSAM-adapter paper reports
#: (see book/peft.md); the tiny widths scale those by 96/768 (rounded).
PEFT_REGISTRY: dict[str, PeftMethod] = {m.name: m for m in (
    PeftMethod("spatial", False, "3DSAM-adapter", "ours", (0, 0), "paper",
               "3DSAM-adapter (spatial adapters)"),
    PeftMethod("none", False, "Full fine-tuning", "full", (0, 0), "full",
               "full fine-tuning (no PEFT module, every encoder weight)"),
    PeftMethod("houlsby", True, "Adapter", "adapter", (205, 26), "peft",
               "Adapter (Houlsby et al. 2019), 2 per block"),
    PeftMethod("protuning", True, "Pro-tuning", "protuning", (357, 45), "peft",
               "Pro-tuning (Nie et al. 2022) prompt blocks"),
    PeftMethod("stadapter", True, "ST-Adapter", "stadapter", (384, 48), "peft",
               "ST-Adapter (Pan et al. 2022), before attention"),
    PeftMethod("medtuning", True, "Med-tuning", "medtuning", (389, 49), "peft",
               "Med-Tuning (2023) Med-Adapters after blocks"),
)}

#: How the encoder is adapted (``Sam3DConfig.peft``): the paper's spatial adapter, no PEFT
#: module at all, or one of the module-building methods of ``sam3d/modeling/peft.py``.
PEFT_METHODS: tuple[str, ...] = tuple(PEFT_REGISTRY)
#: The methods that build modules of their own (one tuner per encoder block).
TUNER_METHODS: tuple[str, ...] = tuple(m.name for m in PEFT_REGISTRY.values() if m.modules)
