"""One registry of named model configurations.

Every variant of the model — backbone size, the CPU ``tiny`` model, and later the ablations
and parameter-efficient-tuning alternatives — is a :class:`Sam3DConfig` registered here by
name; code never copies the model to change one of these numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Tuning policies (``Sam3DConfig.tuning``) and PEFT methods (``Sam3DConfig.peft``) are tables of
# sam3d.tuning (parameter groups, policies as unions of groups, the registry of PEFT methods);
# sam3d.config.TUNING_POLICIES and .PEFT_METHODS stay importable from here.
from .tuning import PEFT_METHODS, PEFT_REGISTRY, TUNING_POLICIES


@dataclass(frozen=True)
class Sam3DConfig:
    """All numbers that define a model variant (defaults: the paper's ViT-B model).

    Encoder: ``dim``, ``depth``, ``num_heads``, ``global_attn_indexes`` (SAM's global blocks,
    which keep longer rel-pos tables), ``taps`` (0-based blocks feeding the four necks),
    ``patch``/``sam_img_size`` (SAM's patch size and input size), ``crop`` (input edge in
    voxels), ``grid`` (tokens per axis), ``window`` (attention window edge, in tokens),
    ``rel_pos_window`` (SAM's window size), ``out_chans`` (neck width), ``adapter_ratio``
    (spatial-adapter bottleneck / dim). ``peft``: a name of ``PEFT_METHODS`` (default
    ``"spatial"``, the paper's model); ``peft_dim``: the bottleneck / prompt width of the other
    methods (0 for ``spatial`` and ``none``).
    Prompt: ``prompt_levels`` (1-based feature levels with a prompt encoder; () = automatic),
    ``prompt_depth``, ``prompt_heads``, ``prompt_mlp_dim``, ``num_queries``.
    ``negative_clicks``: the negative-click extension (not in the paper; off by default): a
    learned label embedding on each click token (:class:`~sam3d.modeling.PromptEncoder3D`).
    ``click_maps``: the clicks also enter the decoder as positive and negative maps at its
    resolution (:mod:`sam3d.modeling.click_maps`; not in the paper; off by default): the
    corrective clicks, or with ``maps_first_prompt`` every click, the first prompt's too, as
    positions of one object (their maps combine by maximum, not by sum).
    ``click_refiner``: a small network corrects the logits at full resolution around the
    corrective clicks (:mod:`sam3d.modeling.click_refiner`; not in the paper; off by
    default; needs ``click_maps`` without ``maps_first_prompt``, or ``refiner_only``).
    ``refiner_only``: the corrective clicks act through the click refiner alone; the decoder
    sees the first prompt only (no click maps), so the refiner can be fitted on its own
    after training (``TrainConfig.refiner_steps``, :mod:`sam3d.engine.refiner_fit`).
    Decoder: ``decoder_chans``, ``num_classes``. ``sam_model`` names the segment-anything
    registry entry whose checkpoint fits the encoder (None: no SAM checkpoint exists).
    ``tuning``: a key of ``TUNING_POLICIES``.
    """

    name: str
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    taps: tuple[int, ...] = (2, 5, 8, 11)
    mlp_ratio: float = 4.0
    patch: int = 16
    sam_img_size: int = 1024
    crop: int = 128
    grid: int = 32
    window: int = 8
    rel_pos_window: int = 14
    shift_even_blocks: bool = True
    out_chans: int = 256
    adapter_ratio: float = 0.5
    peft: str = "spatial"
    peft_dim: int = 0
    prompt_levels: tuple[int, ...] = (4,)
    prompt_depth: int = 2
    prompt_heads: int = 8
    prompt_mlp_dim: int = 2048
    num_queries: int = 10
    negative_clicks: bool = False
    click_maps: bool = False
    maps_first_prompt: bool = False
    click_refiner: bool = False
    refiner_only: bool = False
    decoder_chans: int = 128
    num_classes: int = 2
    sam_model: str | None = "vit_b"
    tuning: str = "paper"
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.tuning not in TUNING_POLICIES:
            raise ValueError(f"unknown tuning policy {self.tuning!r}; "
                             f"known: {sorted(TUNING_POLICIES)}")
        if not 0 < self.adapter_ratio <= 4:
            raise ValueError(f"adapter_ratio must be in (0, 4], got {self.adapter_ratio}")
        if self.peft not in PEFT_METHODS:
            raise ValueError(f"unknown peft {self.peft!r}; known: {', '.join(PEFT_METHODS)}")
        with_modules = PEFT_REGISTRY[self.peft].modules
        is_int = isinstance(self.peft_dim, int) and not isinstance(self.peft_dim, bool)
        if not is_int or not (self.peft_dim > 0 if with_modules else self.peft_dim == 0):
            need = "a positive integer" if with_modules else "0"
            raise ValueError(f"peft_dim must be {need} for peft {self.peft!r}, "
                             f"got {self.peft_dim!r}")
        if with_modules and self.tuning == "paper":
            raise ValueError(f"tuning policy 'paper' would freeze the {self.peft} modules; "
                             "use tuning 'peft'")
        if len(set(self.prompt_levels)) != len(self.prompt_levels):
            raise ValueError(f"prompt_levels must be distinct, got {self.prompt_levels}")
        for level in self.prompt_levels:
            if not 1 <= level <= len(self.taps):
                raise ValueError(f"prompt level {level} outside 1..{len(self.taps)}")
        self._check_extensions()

    def _check_extensions(self) -> None:
        """The switches of the extensions (not the paper): booleans, and what each needs."""
        for name in ("negative_clicks", "click_maps", "maps_first_prompt", "click_refiner",
                     "refiner_only"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.negative_clicks and not self.prompt_levels:
            raise ValueError("negative_clicks needs a prompt encoder (prompt_levels is empty)")
        if self.click_maps and not self.prompt_levels:
            raise ValueError("click_maps needs a prompt encoder (prompt_levels is empty)")
        if self.maps_first_prompt and not self.click_maps:
            raise ValueError("maps_first_prompt needs click_maps=True")
        if self.refiner_only and (not self.click_refiner or not self.negative_clicks
                                  or self.click_maps):
            raise ValueError("refiner_only needs click_refiner=True, negative_clicks=True and "
                             "click_maps=False (the corrections act through the refiner alone)")
        if self.click_refiner and not self.refiner_only and (not self.click_maps
                                                             or self.maps_first_prompt):
            raise ValueError("click_refiner needs click_maps=True and maps_first_prompt=False, "
                             "or refiner_only=True (it corrects around the corrective clicks)")

    @property
    def adapter_dim(self) -> int:
        return max(1, int(self.dim * self.adapter_ratio))

    def replace(self, **changes) -> Sam3DConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


CONFIGS: dict[str, Sam3DConfig] = {}


def register(config: Sam3DConfig) -> Sam3DConfig:
    if config.name in CONFIGS:
        raise ValueError(f"configuration {config.name!r} is already registered")
    CONFIGS[config.name] = config
    return config


def get_config(name: str) -> Sam3DConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise KeyError(f"unknown model variant {name!r}; known: {', '.join(CONFIGS)}") from None


register(Sam3DConfig("vit_b", description="the paper's model: SAM ViT-B, 128³ crop, 32³ tokens"))
register(Sam3DConfig(
    "vit_l", dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23),
    taps=(5, 11, 17, 23), sam_model="vit_l", description="SAM ViT-L backbone, otherwise as vit_b",
))
register(Sam3DConfig(
    "vit_h", dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31),
    taps=(7, 15, 23, 31), sam_model="vit_h", description="SAM ViT-H backbone, otherwise as vit_b",
))
register(Sam3DConfig(
    "tiny", dim=96, depth=4, num_heads=4, global_attn_indexes=(1, 3), taps=(0, 1, 2, 3),
    sam_img_size=256, crop=64, grid=16, window=4, rel_pos_window=7, out_chans=32,
    prompt_heads=4, prompt_mlp_dim=64, decoder_chans=16, sam_model=None,
    description="same architecture at toy size (64³ crop, 16³ tokens) for CPU tests and smoke runs",
))


# ---------------------------------------------------------------------------------------------
# Paper Table 2: automatic segmentation (no prompt encoder, 256³ crops as the official
# train_auto.py) with different ways of tuning the same encoder: one pair of configurations per
# entry of sam3d.tuning.PEFT_REGISTRY (its widths: see there). The tiny versions keep the tiny
# 64³ crop.
# ---------------------------------------------------------------------------------------------
for _m in PEFT_REGISTRY.values():
    register(CONFIGS["vit_b"].replace(
        name=f"auto_{_m.table2_suffix}", crop=256, prompt_levels=(), peft=_m.name,
        peft_dim=_m.widths[0], tuning=_m.tuning,
        description=f"Table 2, automatic, 256³ crop: {_m.description}",
    ))
    register(CONFIGS["tiny"].replace(
        name=f"tiny_auto_{_m.table2_suffix}", prompt_levels=(), peft=_m.name,
        peft_dim=_m.widths[1], tuning=_m.tuning,
        description=f"tiny smoke version of auto_{_m.table2_suffix}: {_m.description}",
    ))

# Paper Table 3: the prompt encoder at other feature levels (vit_b / tiny: level 4 only).
for _levels in ((3, 4), (2, 4), (1, 4), (1, 2, 3, 4)):
    _tag = "".join(map(str, _levels))
    for _base in ("vit_b", "tiny"):
        register(CONFIGS[_base].replace(
            name=f"{_base}_levels_{_tag}", prompt_levels=_levels,
            description=f"Table 3: {_base}, prompt encoders on levels {'+'.join(_tag)}",
        ))

# The negative-click extension (issue 13; not in the paper): the paper's model plus a learned
# label embedding on each click token, trained with simulated interaction (TrainConfig.
# interaction_rounds). A paper checkpoint loads into it unchanged. ``*_interactive_maps``: the
# corrective clicks also enter the decoder as maps (sam3d.modeling.click_maps; zero start, so a
# paper checkpoint still loads unchanged), which makes a correction position-aware.
# ``*_interactive_refine``: also a full-resolution correction around the corrective clicks
# (sam3d.modeling.click_refiner; zero start). ``*_interactive_local``: the corrective clicks
# reach the refiner alone, the decoder sees the first prompt only, so the refiner is fitted on
# its own on a trained model (TrainConfig.refiner_steps; the book's smoke extension,
# book_interactive).
for _base, _what in (("tiny", "smoke"), ("vit_b", "full")):
    register(CONFIGS[_base].replace(
        name=f"{_base}_interactive", negative_clicks=True,
        description=f"{_base} with positive and negative clicks (extension, {_what} mode)",
    ))
    register(CONFIGS[f"{_base}_interactive"].replace(
        name=f"{_base}_interactive_maps", click_maps=True,
        description=f"{_base}_interactive with the clicks also as maps in the decoder "
                    f"(extension, {_what} mode)",
    ))
    register(CONFIGS[f"{_base}_interactive_maps"].replace(
        name=f"{_base}_interactive_refine", click_refiner=True,
        description=f"{_base}_interactive_maps with a full-resolution correction around the "
                    f"corrective clicks (extension, {_what} mode)",
    ))
    register(CONFIGS[f"{_base}_interactive"].replace(
        name=f"{_base}_interactive_local", click_refiner=True, refiner_only=True,
        description=f"{_base}_interactive whose corrective clicks act through the "
                    f"full-resolution refiner alone (extension, {_what} mode)",
    ))
    # every click as a map, the first prompt's too, positive clicks only: a click says where
    # the one lesion to segment is (the book's real-CT model, book_real; not in the paper)
    register(CONFIGS[_base].replace(
        name=f"{_base}_maps", click_maps=True, maps_first_prompt=True,
        description=f"{_base} with every click also as a map in the decoder (not in the "
                    f"paper; {_what} mode)",
    ))
