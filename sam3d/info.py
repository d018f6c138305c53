"""Parameter accounting: what is tuned where, and how it maps to the paper's counts."""

from __future__ import annotations

import re

import torch

from .build import build_sam3d
from .config import get_config
from .modeling import Sam3D
from .modeling.prompt_encoder import official_unused_params


def _count(params, tuned_only: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not tuned_only)


def parameter_report(model: Sam3D) -> dict:
    """Parameter counts of a built model.

    ``paper_total`` is the paper's "#Tuned Params": encoder-tuned + one prompt encoder as the
    official code builds it (including its unused token→image attention, which sam3d does not
    build) + decoder. ``tuned`` is what sam3d actually optimises.
    """
    cfg = model.config
    enc = list(model.image_encoder.parameters())
    prompt_each = [_count(pe.parameters()) for pe in model.prompt_encoders.values()]
    unused = official_unused_params(cfg.out_chans, cfg.prompt_depth) if cfg.prompt_levels else 0
    report = {
        "variant": cfg.name,
        "total": _count(model.parameters()),
        "tuned": _count(model.parameters(), tuned_only=True),
        "encoder_total": _count(enc),
        "encoder_tuned": _count(enc, tuned_only=True),
        "prompt_encoders": len(prompt_each),
        "prompt_encoder": prompt_each[0] if prompt_each else 0,
        "decoder": _count(model.mask_decoder.parameters()),
        "official_unused_per_prompt_encoder": unused,
    }
    report["paper_total"] = (
        report["encoder_tuned"] + (report["prompt_encoder"] + unused if prompt_each else 0)
        + report["decoder"]
    )
    # what the official scripts optimise: four prompt encoders, each with the unused module
    report["official_optimised"] = report["paper_total"] + 3 * (report["prompt_encoder"] + unused)
    return report


def variant_report(variant: str, **overrides) -> dict:
    """:func:`parameter_report` of a variant built on the meta device (no memory, no init)."""
    get_config(variant)  # clear error for an unknown name before building anything
    with torch.device("meta"):
        model = build_sam3d(variant, **overrides)
    return parameter_report(model)


def encoder_breakdown(model: Sam3D) -> list[tuple[str, int, bool]]:
    """(parameter group, count, tuned) rows for the encoder — the frozen/tuned map.

    Block and neck indices are collapsed (``blocks.*.adapter.linear1``), weight and bias merged.
    """
    groups: dict[tuple[str, bool], int] = {}
    for name, p in model.image_encoder.named_parameters():
        key = re.sub(r"\.(weight|bias)$", "", re.sub(r"\.\d+", ".*", name))
        groups[(key, p.requires_grad)] = groups.get((key, p.requires_grad), 0) + p.numel()
    return [(k, n, tuned) for (k, tuned), n in groups.items()]


def stage_shapes(
    model: Sam3D, volume: torch.Tensor, points: torch.Tensor | None
) -> list[tuple[str, tuple]]:
    """Run one forward and record the output shape of every stage, in execution order.

    Encoder stages are in the official (H, W, D) layout; the final logits are ``B×2×D×H×W``.
    """
    rows: list[tuple[str, tuple]] = []
    enc = model.image_encoder
    named = [("patch embedding (tokens B×H×W×D×C)", enc.patch_embed)]
    named += [(f"block {i + 1}", b) for i, b in enumerate(enc.blocks)]
    named += [(f"neck {i + 1} (after block {t + 1})", n) for i, (t, n) in
              enumerate(zip(enc.taps, enc.neck_3d, strict=True))]
    named += [(f"prompt encoder (level {k})", pe) for k, pe in model.prompt_encoders.items()]
    named += [("decoder MLA heads (before ×2)", model.mask_decoder.mlahead),
              ("decoder logits (B×2×H×W×D)", model.mask_decoder)]
    hooks = [m.register_forward_hook(
                 lambda _m, _i, out, name=name: rows.append((name, tuple(out.shape))))
             for name, m in named]
    try:
        with torch.no_grad():
            logits = model(volume, points)
    finally:
        for h in hooks:
            h.remove()
    rows.append(("output logits (B×2×D×H×W)", tuple(logits.shape)))
    return rows
