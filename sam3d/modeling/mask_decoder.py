"""Multi-layer-aggregation 3D mask decoder (the official ``VIT_MLAHead_h``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .click_refiner import ClickRefiner
from .common import check_positive
from .conv import Conv3d, conv3d


def conv_in_relu(cin: int, cout: int) -> list[nn.Module]:
    """3×3×3 conv (no bias) → InstanceNorm3d (no affine) → ReLU."""
    return [Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout), nn.ReLU()]


def upsample_matrix(n_in: int, n_out: int, dtype: torch.dtype, device) -> torch.Tensor:
    """``n_out×n_in`` weights of 1D linear upsampling with align_corners True."""
    eye = torch.eye(n_in, dtype=dtype, device=device)[:, None, :]  # n_in×1×n_in
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=True)[:, 0, :].T


def upsample_conv3d(h: torch.Tensor, weight: torch.Tensor, size: int) -> torch.Tensor:
    """``conv3d(upsample(h), weight, padding=1)`` without forming the upsampled input.

    ``h``: ``B×C×g×g×g``; ``weight``: ``O×C×3×3×3``; upsampling is trilinear with
    align_corners True to ``size³``. Both steps are linear, so the channel mixing of each of
    the 27 kernel offsets is applied at the low resolution (``size/g``³ times fewer
    multiply-adds) and the offsets are then resolved with shifted 1D upsampling matrices,
    one axis at a time. Equal to the literal composition up to float rounding.
    Returns ``B×O×size×size×size``.
    """
    b, c, g = h.shape[0], h.shape[1], h.shape[2]
    o = weight.shape[0]
    mixed = conv3d(h, weight.permute(2, 3, 4, 0, 1).reshape(27 * o, c, 1, 1, 1))
    mixed = mixed.view(b, 3, 3, 3, o, g, g, g)
    up = upsample_matrix(g, size, h.dtype, h.device)  # size×g
    padded = F.pad(up, (0, 0, 1, 1))  # rows −1 and size are zero (conv zero padding)
    shifted = torch.stack([padded[k : k + size] for k in range(3)], 1)  # size×3×g
    x = torch.einsum("Xai,bajkoiyz->bjkoXyz", shifted, mixed)
    x = torch.einsum("Yjy,bjkoXyz->bkoXYz", shifted, x)
    return torch.einsum("Zkz,bkoXYz->boXYZ", shifted, x)


class MLAHead(nn.Module):
    """One conv head per feature level, each upsampled ×2; concatenated along channels."""

    def __init__(self, in_chans: int, mid_chans: int, levels: int) -> None:
        super().__init__()
        check_positive(in_chans=in_chans, mid_chans=mid_chans, levels=levels)
        for i in range(levels):  # official names head2 … head5
            self.add_module(
                f"head{i + 2}",
                nn.Sequential(*conv_in_relu(in_chans, mid_chans),
                              *conv_in_relu(mid_chans, mid_chans)),
            )
        self.levels = levels

    def head(self, level: int) -> nn.Module:
        """The conv head of 0-based ``level`` (official name ``head{level + 2}``)."""
        return cast(nn.Module, getattr(self, f"head{level + 2}"))

    def forward(self, feats: Sequence[torch.Tensor], upsample: bool = True) -> torch.Tensor:
        """Heads on each level, concatenated; ×2 trilinear (align_corners True) if ``upsample``."""
        if len(feats) != self.levels:
            raise ValueError(f"expected {self.levels} feature levels, got {len(feats)}")
        outs = [getattr(self, f"head{i + 2}")(f) for i, f in enumerate(feats)]
        out = torch.cat(outs, dim=1)
        if upsample:
            out = F.interpolate(out, scale_factor=2, mode="trilinear", align_corners=True)
        return out


class MaskDecoder3D(nn.Module):
    """Four-level MLA head + half-resolution image skip → 2-class logits.

    Arguments:
      in_chans (int): neck width (256). mid_chans (int): head width (128).
      levels (int): feature levels (4). num_classes (int): 2. skip_chans (int): image skip (1).
      click_chans (int): click maps (0, the paper; 2 for the click-map extension,
        :mod:`sam3d.modeling.click_maps`): a 3×3×3 convolution ``click_conv`` of its own,
        initialised to zero, adds them to the first classifier convolution's output.
      refiner (bool): the click refiner's parameters live here too (``click_refiner``,
        :class:`~sam3d.modeling.click_refiner.ClickRefiner`; needs click maps), so they train
        with the decoder; :meth:`Sam3D.decode` applies it at full resolution.

    ``forward(feats, skip, out_size)``: feats = ``levels`` tensors ``B×in×g×g×g``; skip
    ``B×1×2g×2g×2g``; returns ``B×num_classes×S×S×S`` with ``S = out_size`` (trilinear,
    align_corners True, as the official final ×``S/2g``). Layout (H, W, D) throughout.
    """

    def __init__(
        self, in_chans: int = 256, mid_chans: int = 128, levels: int = 4, num_classes: int = 2,
        skip_chans: int = 1, click_chans: int = 0, refiner: bool = False,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, skip_chans=skip_chans)
        if click_chans not in (0, 2):
            raise ValueError(f"click_chans must be 0 or 2, got {click_chans!r}")
        self.mlahead = MLAHead(in_chans, mid_chans, levels)
        self.cls = nn.Sequential(
            *conv_in_relu(levels * mid_chans + skip_chans, mid_chans),
            Conv3d(mid_chans, num_classes, 3, padding=1, bias=False),
        )
        self.click_conv: nn.Conv3d | None = None
        if click_chans:
            self.click_conv = Conv3d(click_chans, mid_chans, 3, padding=1, bias=False)
            nn.init.zeros_(self.click_conv.weight)  # the paper's logits until trained
        self.click_refiner = ClickRefiner() if refiner else None

    def forward(self, feats: Sequence[torch.Tensor], skip: torch.Tensor, out_size: int,
                ) -> torch.Tensor:
        return self.decode(self.precompute(feats, skip, ()), {}, out_size)

    def precompute(self, feats: Sequence[torch.Tensor], skip: torch.Tensor,
                   prompted: Sequence[int]) -> dict[str, Any]:
        """Everything the decoder computes from the feature levels a prompt does not change.

        ``prompted``: 0-based levels that :meth:`decode` will receive anew. The first
        classifier conv is linear in its input, so the contribution of the other levels' heads
        and of ``skip`` (``B×mid×2g×2g×2g``) is computed here once, and :meth:`decode` adds
        the prompted levels' share. (The official upsample → concat → conv, which keeps every
        level, is :func:`sam3d.modeling.literal.decoder_literal`, the reference.)
        """
        prompted = check_prompted(self, feats, prompted)
        skip = skip.to(feats[0].dtype)
        w = cast(nn.Conv3d, self.cls[0]).weight  # conv_in_relu's convolution
        head_chans = w.shape[1] - skip.shape[1]  # levels × mid_chans, then the skip channels
        per = head_chans // self.mlahead.levels
        fixed = [i for i in range(len(feats)) if i not in prompted]
        x = conv3d(skip, w[:, head_chans:], padding=1)
        if fixed:
            heads = torch.cat([self.mlahead.head(i)(feats[i]) for i in fixed], 1)
            x = x + upsample_conv3d(heads, _level_weights(w, fixed, per), skip.shape[-1])
        return {"fixed": x, "prompted": prompted, "per": per}

    def decode(self, pre: dict[str, Any], levels: dict[int, torch.Tensor], out_size: int,
               clicks: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``B×num_classes×S×S×S`` from :meth:`precompute`'s result and the prompted
        levels ``{0-based level: B×in×g×g×g}`` (exactly the levels named there); ``clicks``:
        the click maps ``B×2×2g×2g×2g`` of a decoder with ``click_conv`` (else None)."""
        if sorted(levels) != pre["prompted"]:
            raise ValueError(f"decode needs the levels {pre['prompted']}, got {sorted(levels)}")
        if (clicks is None) != (self.click_conv is None):
            raise ValueError("click maps go with a decoder that has click_conv, and only there")
        x = pre["fixed"]
        if levels:
            order = sorted(levels)
            heads = torch.cat([self.mlahead.head(i)(levels[i]) for i in order], 1)
            w = _level_weights(cast(nn.Conv3d, self.cls[0]).weight, order, pre["per"])
            x = x + upsample_conv3d(heads, w, x.shape[-1])
        if self.click_conv is not None:
            assert clicks is not None
            x = x + self.click_conv(clicks.to(x.dtype))
        x = self.cls[1:](x)
        return F.interpolate(x, size=(out_size,) * 3, mode="trilinear", align_corners=True)


def check_prompted(decoder: MaskDecoder3D, feats: Sequence[torch.Tensor],
                   prompted: Sequence[int]) -> list[int]:
    """``prompted`` as sorted unique 0-based levels; ``ValueError`` if ``feats`` is not one
    tensor per level of ``decoder`` or a prompted level is outside them."""
    if len(feats) != decoder.mlahead.levels:
        raise ValueError(f"expected {decoder.mlahead.levels} feature levels, got {len(feats)}")
    out = sorted(set(prompted))
    if any(not 0 <= i < len(feats) for i in out):
        raise ValueError(f"prompted levels {out} outside 0..{len(feats) - 1}")
    return out


def _level_weights(w: torch.Tensor, levels: Sequence[int], per: int) -> torch.Tensor:
    """The input channels of the first classifier conv ``w`` that belong to ``levels``' heads."""
    return torch.cat([w[:, i * per:(i + 1) * per] for i in levels], 1)
