"""segment-anything ViT SAMs of any size: built from shape numbers, or from a checkpoint's shapes.

``segment_anything.build_sam`` builds SAM ViT-B/L/H at a fixed 1024² input. The same modules
(:class:`~segment_anything.modeling.ImageEncoderViT`, ``PromptEncoder``, ``MaskDecoder`` with a
``TwoWayTransformer``), composed as its ``_build_sam`` composes them, give a SAM of any width,
depth and input size: :func:`build_sam_vit`. :func:`shape_from_state` reads those numbers back
from a SAM-format state dict, so one loader serves the official ViT-B/L/H files and the small
randomly initialised SAM-format checkpoint of the full-mode rehearsal
(:mod:`sam3d.rehearsal.sam_weights`), whose image encoder fits the ``tiny`` 3D variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

__all__ = ["SamViTShape", "build_sam_vit", "shape_from_state", "shape_of_variant"]

PROMPT_DIM = 256  # SAM's prompt / mask-decoder width, every size
_PIXEL_MEAN = [123.675, 116.28, 103.53]
_PIXEL_STD = [58.395, 57.12, 57.375]
_BLOCK = re.compile(r"image_encoder\.blocks\.(\d+)\.")


@dataclass(frozen=True)
class SamViTShape:
    """The numbers that fix a ViT SAM's tensor shapes (defaults: SAM ViT-B).

    ``img_size``: input edge (1024 for the released SAMs); ``window_size``: the windowed
    blocks' attention window in tokens; ``global_attn_indexes``: blocks with global attention.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for key in ("embed_dim", "depth", "num_heads", "img_size", "patch_size", "window_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not a multiple of num_heads "
                             f"{self.num_heads}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size "
                             f"{self.patch_size}")
        if not all(0 <= i < self.depth for i in self.global_attn_indexes):
            raise ValueError(f"global_attn_indexes {self.global_attn_indexes} outside 0.."
                             f"{self.depth - 1}")


def build_sam_vit(shape: SamViTShape = SamViTShape()) -> Sam:
    """An uninitialised (randomly initialised) SAM of ``shape``, eval mode.

    >>> sam = build_sam_vit(SamViTShape(96, 4, 4, (1, 3), img_size=256, window_size=7))
    >>> sam.image_encoder.img_size
    256
    """
    embedding = shape.img_size // shape.patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=shape.depth, embed_dim=shape.embed_dim, img_size=shape.img_size,
            mlp_ratio=shape.mlp_ratio, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=shape.num_heads, patch_size=shape.patch_size, qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=tuple(shape.global_attn_indexes),
            window_size=shape.window_size, out_chans=PROMPT_DIM),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM, image_embedding_size=(embedding, embedding),
            input_image_size=(shape.img_size, shape.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=2048,
                                          num_heads=8),
            transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=_PIXEL_MEAN, pixel_std=_PIXEL_STD,
    )
    return sam.eval()


def shape_from_state(state: dict) -> SamViTShape:
    """The :class:`SamViTShape` of a SAM-format state dict (``image_encoder.*`` keys).

    Width and patch from the patch embedding, input size from the position table, depth from
    the block count, head width from the relative-position tables (length ``2·window − 1`` in
    windowed blocks, ``2·tokens − 1`` in global ones). Raises ``ValueError`` for a state that
    is not a ViT SAM (a TinyViT MobileSAM, say).
    """
    try:
        proj = state["image_encoder.patch_embed.proj.weight"]  # dim × 3 × p × p
        pos = state["image_encoder.pos_embed"]  # 1 × tokens × tokens × dim
    except (KeyError, TypeError):
        raise ValueError("not a ViT SAM state dict: no image_encoder.patch_embed.proj.weight / "
                         "image_encoder.pos_embed") from None
    blocks = sorted({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(f"not a ViT SAM state dict: image-encoder blocks {blocks[:8]}")
    dim, patch, tokens = int(proj.shape[0]), int(proj.shape[-1]), int(pos.shape[1])
    head_dim, windows, global_blocks = None, set(), []
    for i in blocks:
        table = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if table is None:
            raise ValueError(f"block {i} has no relative-position table (use_rel_pos=False SAMs "
                             "are not supported)")
        head_dim = int(table.shape[1])
        length = int(table.shape[0])
        if length == 2 * tokens - 1:
            global_blocks.append(i)
        else:
            windows.add((length + 1) // 2)
    if len(windows) > 1:
        raise ValueError(f"windowed blocks disagree on the window size: {sorted(windows)}")
    hidden = state[f"image_encoder.blocks.{blocks[0]}.mlp.lin1.weight"].shape[0]
    return SamViTShape(embed_dim=dim, depth=len(blocks), num_heads=dim // head_dim,
                       global_attn_indexes=tuple(global_blocks), img_size=tokens * patch,
                       patch_size=patch, window_size=windows.pop() if windows else tokens,
                       mlp_ratio=hidden / dim)


def shape_of_variant(variant: str) -> SamViTShape:
    """The SAM whose image encoder fits the 3D variant ``variant`` (:mod:`sam3d.config`):
    the same width, depth, heads, global blocks, patch, input size and window."""
    from ..config import get_config

    cfg = get_config(variant)
    return SamViTShape(embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.num_heads,
                       global_attn_indexes=tuple(cfg.global_attn_indexes),
                       img_size=cfg.sam_img_size, patch_size=cfg.patch,
                       window_size=cfg.rel_pos_window, mlp_ratio=cfg.mlp_ratio)
