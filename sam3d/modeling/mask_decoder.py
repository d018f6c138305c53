"""Multi-layer-aggregation 3D mask decoder (the official ``VIT_MLAHead_h``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_positive


def conv_in_relu(cin: int, cout: int) -> list[nn.Module]:
    """3×3×3 conv (no bias) → InstanceNorm3d (no affine) → ReLU."""
    return [nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.InstanceNorm3d(cout), nn.ReLU()]


class MLAHead(nn.Module):
    """One conv head per feature level, each upsampled ×2; concatenated along channels."""

    def __init__(self, in_chans: int, mid_chans: int, levels: int) -> None:
        super().__init__()
        check_positive(in_chans=in_chans, mid_chans=mid_chans, levels=levels)
        for i in range(levels):  # official names head2 … head5
            self.add_module(
                f"head{i + 2}",
                nn.Sequential(*conv_in_relu(in_chans, mid_chans), *conv_in_relu(mid_chans, mid_chans)),
            )
        self.levels = levels

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(feats) != self.levels:
            raise ValueError(f"expected {self.levels} feature levels, got {len(feats)}")
        outs = [
            F.interpolate(getattr(self, f"head{i + 2}")(f), scale_factor=2, mode="trilinear",
                          align_corners=True)
            for i, f in enumerate(feats)
        ]
        return torch.cat(outs, dim=1)


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
        self.mlahead = MLAHead(in_chans, mid_chans, levels)
        self.cls = nn.Sequential(
            *conv_in_relu(levels * mid_chans + skip_chans, mid_chans),
            nn.Conv3d(mid_chans, num_classes, 3, padding=1, bias=False),
        )

    def forward(self, feats: Sequence[torch.Tensor], skip: torch.Tensor, out_size: int) -> torch.Tensor:
        x = torch.cat([self.mlahead(feats), skip.to(feats[0].dtype)], dim=1)
        x = self.cls(x)
        return F.interpolate(x, size=(out_size,) * 3, mode="trilinear", align_corners=True)
