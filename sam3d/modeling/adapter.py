"""The spatial adapter placed before the attention of every encoder block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_positive
from .conv import Conv3d


class SpatialAdapter(nn.Module):
    """Bottleneck adapter with a depthwise 3×3×3 convolution over the token grid.

    ``x + relu(W_up · relu(dwconv(relu(W_down · x))))`` — note the ReLU after the up-projection,
    as in the official code (the residual branch can only add non-negative values).

    Arguments:
      dim (int): token width (768 for ViT-B).
      bottleneck (int): hidden width (official: dim // 2).

    Input and output: ``B×X×Y×Z×dim`` token grid.
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        check_positive(dim=dim, bottleneck=bottleneck)
        self.linear1 = nn.Linear(dim, bottleneck)
        self.conv = Conv3d(bottleneck, bottleneck, 3, padding=1, groups=bottleneck)
        self.linear2 = nn.Linear(bottleneck, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.linear1(x))
        h = F.relu(self.conv(h.permute(0, 4, 1, 2, 3))).permute(0, 2, 3, 4, 1)
        return x + F.relu(self.linear2(h))
