"""Multi-layer-aggregation 3D mask decoder (the official ``VIT_MLAHead_h``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_positive


def conv_in_relu(cin: int, cout: int) -> list[nn.Module]:
    """3×3×3 conv (no bias) → InstanceNorm3d (no affine) → ReLU."""
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout), nn.ReLU()]


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
    mixed = F.conv3d(h, weight.permute(2, 3, 4, 0, 1).reshape(27 * o, c, 1, 1, 1))
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

    ``forward(feats, skip, out_size)``: feats = ``levels`` tensors ``B×in×g×g×g``; skip
    ``B×1×2g×2g×2g``; returns ``B×num_classes×S×S×S`` with ``S = out_size`` (trilinear,
    align_corners True, as the official final ×``S/2g``). Layout (H, W, D) throughout.
    """

    def __init__(
        self, in_chans: int = 256, mid_chans: int = 128, levels: int = 4, num_classes: int = 2,
        skip_chans: int = 1,
    ) -> None:
        super().__init__()
        check_positive(num_classes=num_classes, skip_chans=skip_chans)
        self.fused = True  # False: the literal upsample → concat → conv path (reference)
        self.mlahead = MLAHead(in_chans, mid_chans, levels)
        self.cls = nn.Sequential(
            *conv_in_relu(levels * mid_chans + skip_chans, mid_chans),
            nn.Conv3d(mid_chans, num_classes, 3, padding=1, bias=False),
        )

    def forward(
        self, feats: Sequence[torch.Tensor], skip: torch.Tensor, out_size: int
    ) -> torch.Tensor:
        skip = skip.to(feats[0].dtype)
        if self.fused:
            # cls[0] on cat(upsample(heads), skip) = fused upsample-conv of the heads + conv(skip)
            heads = self.mlahead(feats, upsample=False)
            w = cast(nn.Conv3d, self.cls[0]).weight  # conv_in_relu's convolution
            x = upsample_conv3d(heads, w[:, : heads.shape[1]], skip.shape[-1])
            x = x + F.conv3d(skip, w[:, heads.shape[1] :], padding=1)
            x = self.cls[1:](x)
        else:
            x = self.cls(torch.cat([self.mlahead(feats), skip], dim=1))
        return F.interpolate(x, size=(out_size,) * 3, mode="trilinear", align_corners=True)
