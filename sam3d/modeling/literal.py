"""The official code's literal compositions: the references the fast paths are checked against.

The production modules compute two steps in a cheaper but equal form (up to float rounding):

* :class:`~sam3d.modeling.patch_embed.VolumePatchEmbed` composes the official upsample ×s →
  2D patch conv per slice → depth conv into one strided 3D convolution;
  :func:`patch_embed_literal` is the three-step path.
* :class:`~sam3d.modeling.mask_decoder.MaskDecoder3D` applies the first classifier conv to
  each head at low resolution (:func:`~sam3d.modeling.mask_decoder.upsample_conv3d`) and
  precomputes the unprompted levels' share; :func:`decoder_literal` is the official
  upsample → concat → conv.

Only the tests and ``sam3d bench``'s ``forward_literal`` use this module.
:func:`literal_paths` runs a whole :class:`~sam3d.modeling.sam3d.Sam3D` on them by swapping
its two submodules for wrappers that share their parameters, and puts them back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .mask_decoder import MaskDecoder3D, check_prompted
from .patch_embed import VolumePatchEmbed

if TYPE_CHECKING:
    from .sam3d import Sam3D


def patch_embed_literal(embed: VolumePatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """The official path: upsample ×s, 2D patch conv per slice, depth conv.

    ``x``: ``B×C×D×H×W`` (C = 1 is repeated to the embedding's channels). Returns tokens
    ``B×g×g×g×dim`` in (H, W, D) order, as :meth:`VolumePatchEmbed.forward`."""
    embed.check(x)
    if x.shape[1] == 1:
        x = x.expand(-1, embed.in_chans, -1, -1, -1)
    out = []
    for vol in x:
        up = F.interpolate(vol[None], scale_factor=embed.scale, mode="trilinear",
                           align_corners=False)
        with torch.no_grad():  # SAM's patch convolution is frozen, as in the official code
            slices = embed.proj(up[0].transpose(0, 1))  # D'×dim×H'×W'
        grid = slices.permute(1, 2, 3, 0).unsqueeze(0)  # 1×dim×H'×W'×(s·D)
        out.append(embed.slice_embed(grid))
    return torch.cat(out).permute(0, 2, 3, 4, 1)


def decoder_literal(decoder: MaskDecoder3D, feats: Sequence[torch.Tensor], skip: torch.Tensor,
                    out_size: int) -> torch.Tensor:
    """The official decoder: every head upsampled ×2, concatenated with the image skip, the
    classifier, trilinear to ``out_size³``. ``feats``: ``levels`` tensors ``B×in×g×g×g``;
    ``skip``: ``B×1×2g×2g×2g``. Returns logits ``B×num_classes×S×S×S``."""
    x = decoder.cls(torch.cat([decoder.mlahead(feats), skip.to(feats[0].dtype)], dim=1))
    return F.interpolate(x, size=(out_size,) * 3, mode="trilinear", align_corners=True)


class LiteralPatchEmbed(nn.Module):
    """:func:`patch_embed_literal` in place of a :class:`VolumePatchEmbed` (shares its weights)."""

    def __init__(self, embed: VolumePatchEmbed) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return patch_embed_literal(self.embed, x)


class LiteralMaskDecoder(nn.Module):
    """:func:`decoder_literal` in place of a :class:`MaskDecoder3D` (shares its weights), with
    the same ``precompute`` / ``decode`` split: nothing is precomputed, every level is kept."""

    def __init__(self, decoder: MaskDecoder3D) -> None:
        super().__init__()
        self.decoder = decoder

    def precompute(self, feats: Sequence[torch.Tensor], skip: torch.Tensor,
                   prompted: Sequence[int]) -> dict[str, Any]:
        return {"feats": list(feats), "skip": skip,
                "prompted": check_prompted(self.decoder, feats, prompted)}

    def decode(self, pre: dict[str, Any], levels: dict[int, torch.Tensor], out_size: int,
               ) -> torch.Tensor:
        if sorted(levels) != pre["prompted"]:
            raise ValueError(f"decode needs the levels {pre['prompted']}, got {sorted(levels)}")
        feats = [levels.get(i, f) for i, f in enumerate(pre["feats"])]
        return decoder_literal(self.decoder, feats, pre["skip"], out_size)

    def forward(self, feats: Sequence[torch.Tensor], skip: torch.Tensor, out_size: int,
                ) -> torch.Tensor:
        return decoder_literal(self.decoder, feats, skip, out_size)


@contextmanager
def literal_paths(model: Sam3D, *, patch_embed: bool = True, decoder: bool = True,
                  ) -> Iterator[Sam3D]:
    """Run ``model`` (a :class:`~sam3d.modeling.sam3d.Sam3D`) on the literal patch embedding
    and/or decoder inside the ``with`` block; the fast modules are back afterwards, also on
    an exception. The wrappers hold the same parameters, so nothing is copied."""
    encoder = model.image_encoder
    fast_embed, fast_decoder = encoder.patch_embed, model.mask_decoder
    try:  # nn.Module's submodule replacement; the wrappers answer the same calls
        if patch_embed:
            setattr(encoder, "patch_embed", LiteralPatchEmbed(fast_embed))  # noqa: B010
        if decoder:
            setattr(model, "mask_decoder", LiteralMaskDecoder(fast_decoder))  # noqa: B010
        yield model
    finally:
        encoder.patch_embed, model.mask_decoder = fast_embed, fast_decoder
