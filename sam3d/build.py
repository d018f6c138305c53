"""Build named model variants and initialise them from SAM 2D checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Sam3DConfig, get_config
from .hashing import sha256_file  # re-exported: sam3d.build.sha256_file
from .modeling import ImageEncoder3D, MaskDecoder3D, PromptEncoder3D, Sam3D
from .tuning import policy_pattern


def apply_tuning_policy(model: Sam3D, policy: str) -> None:
    """Freeze the encoder except the policy's parameters; tune prompt encoders and decoder."""
    tuned = policy_pattern(policy)  # the policy's parameter groups (sam3d.tuning)
    for name, param in model.image_encoder.named_parameters():
        param.requires_grad_(tuned.match(name) is not None)
    for module in (model.prompt_encoders, model.mask_decoder):
        for param in module.parameters():
            param.requires_grad_(True)
    for block in model.image_encoder.blocks:  # official: the rel-pos scale stays at 1
        block.attn.lr.requires_grad_(False)


def build_from_config(cfg: Sam3DConfig) -> Sam3D:
    """Randomly initialised model for a configuration (SAM weights not loaded)."""
    encoder = ImageEncoder3D(
        dim=cfg.dim, depth=cfg.depth, num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio,
        patch=cfg.patch, sam_img_size=cfg.sam_img_size, crop=cfg.crop, grid=cfg.grid,
        window=cfg.window, global_attn_indexes=cfg.global_attn_indexes,
        rel_pos_window=cfg.rel_pos_window, taps=cfg.taps, out_chans=cfg.out_chans,
        adapter_dim=cfg.adapter_dim, shift_even_blocks=cfg.shift_even_blocks,
        peft=cfg.peft, peft_dim=cfg.peft_dim,
    )
    prompts = {
        level: PromptEncoder3D(cfg.out_chans, cfg.prompt_depth, cfg.prompt_heads,
                               cfg.prompt_mlp_dim, cfg.num_queries,
                               label_embedding=cfg.negative_clicks)
        for level in cfg.prompt_levels
    }
    decoder = MaskDecoder3D(cfg.out_chans, cfg.decoder_chans, len(cfg.taps), cfg.num_classes,
                            click_chans=2 if cfg.click_maps else 0,
                            refiner=cfg.click_refiner)
    model = Sam3D(encoder, decoder, prompts, cfg)
    apply_tuning_policy(model, cfg.tuning)
    return model


@dataclass
class SamLoadReport:
    """What happened when SAM 2D weights were copied into the 3D encoder."""

    loaded: list[str]
    missing: list[str]  # 3D-encoder tensors SAM does not have (new, randomly initialised)
    unexpected: list[str]  # SAM tensors the 3D model does not use
    sha256: str

    def summary(self) -> str:
        return (f"loaded {len(self.loaded)} SAM tensors; {len(self.missing)} new 3D tensors "
                f"initialised here; {len(self.unexpected)} SAM tensors unused")


def load_sam_state(model: Sam3D, state: dict[str, torch.Tensor], sha256: str = "") -> SamLoadReport:
    """Copy a segment-anything state dict into the encoder; refuse shape mismatches."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("a SAM checkpoint must be a state dict of tensors")
    enc_state = model.image_encoder.state_dict()
    prefix = "image_encoder."
    if not any(k.startswith(prefix) for k in state):
        raise ValueError("not a segment-anything checkpoint: no 'image_encoder.*' keys")
    pairs, unexpected = [], []
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        target = enc_state.get(name) if name is not None else None
        if target is None:
            unexpected.append(key)
        elif target.shape != value.shape:  # checked for all keys before anything is copied
            raise ValueError(
                f"SAM checkpoint tensor {key!r} has shape {tuple(value.shape)}, the 3D "
                f"encoder expects {tuple(target.shape)} (wrong SAM variant?)"
            )
        else:
            pairs.append((name, target, value))
    with torch.no_grad():
        for _, target, value in pairs:
            target.copy_(value)
        for block in model.image_encoder.blocks:
            block.attn.init_depth_table()
    loaded = [name for name, _, _ in pairs]
    missing = sorted(set(enc_state) - set(loaded))
    model.sam_checkpoint_sha256 = sha256 or None
    return SamLoadReport(loaded, missing, unexpected, sha256)


def build_sam3d(
    variant: str | Sam3DConfig = "vit_b", sam_checkpoint: str | Path | None = None,
    verbose: bool = False, **overrides,
) -> Sam3D:
    """Build a named variant, optionally initialised from an official SAM 2D checkpoint.

    Arguments:
      variant: a registered name (``vit_b``, ``vit_l``, ``vit_h``, ``tiny``, …) or a config.
      sam_checkpoint: path of a segment-anything checkpoint (``sam_vit_b_01ec64.pth`` …).
      overrides: config fields to change, e.g. ``prompt_levels=(1, 4)``.

    >>> model = build_sam3d("tiny")
    >>> logits = model(torch.zeros(1, 1, 64, 64, 64), torch.tensor([[[32, 32, 32]]]))
    """
    cfg = get_config(variant) if isinstance(variant, str) else variant
    if overrides:
        cfg = cfg.replace(**overrides)
    model = build_from_config(cfg)
    if sam_checkpoint is not None:
        path = Path(sam_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"SAM checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and truncation errors all end here
            raise ValueError(f"cannot read SAM checkpoint {path}: {exc}") from exc
        report = load_sam_state(model, state, sha256_file(path))
        model.sam_load_report = report  # a documented Sam3D attribute (None until now)
        if verbose:
            print(report.summary())
    return model
