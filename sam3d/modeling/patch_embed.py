"""Volumetric patch embedding: SAM's frozen 2D patch convolution × a trainable depth convolution.

The official code upsamples the ``S³`` crop trilinearly by ``s = grid·patch / S`` (×4 for a
128³ crop), runs SAM's 16×16 patch convolution on every one of the ``s·S`` axial slices and
then a depthwise convolution of length 16 along the slice axis. All three steps are linear
and shift-invariant with period ``patch/s`` voxels, so together they are one strided 3D
convolution on the original crop with kernel ``patch/s + 2`` (one voxel of trilinear support
on each side, replicate padding reproducing the border clamping of the upsampling).
:meth:`VolumePatchEmbed.forward` uses that composed convolution; the official three-step path
is kept as the reference in :func:`sam3d.modeling.literal.patch_embed_literal`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_positive


def linear_upsample_taps(scale: int, patch: int) -> torch.Tensor:
    """Interpolation weights ``patch×(patch/scale + 2)`` of ×``scale`` linear upsampling.

    Row ``t`` gives how upsampled offset ``t`` inside one patch mixes the original voxels
    ``−1 … patch/scale`` around the patch start (align_corners False).
    """
    stride = patch // scale
    taps = torch.zeros(patch, stride + 2, dtype=torch.float64)
    for t in range(patch):
        src = (t + 0.5) / scale - 0.5
        lo = math.floor(src)
        frac = src - lo
        taps[t, lo + 1] += 1.0 - frac
        taps[t, lo + 2] += frac
    return taps


class VolumePatchEmbed(nn.Module):
    """``B×C×D×H×W`` crop (C = 1 or 3) → token grid ``B×H'×W'×D'×dim``.

    Arguments:
      dim (int): token width.
      patch (int): SAM's 2D patch size (16).
      crop (int): crop edge ``S`` the model is built for.
      grid (int): tokens per axis (32 for the official model); ``grid·patch`` must be a
        multiple of ``crop`` and ``crop`` a multiple of ``grid``.
      in_chans (int): channels of SAM's patch convolution (3).

    Parameters keep the official names: ``proj`` is SAM's ``patch_embed.proj`` (frozen),
    ``slice_embed`` the depthwise ``1×1×patch`` convolution along the slice axis.
    """

    taps: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, dim: int, patch: int, crop: int, grid: int, in_chans: int = 3) -> None:
        super().__init__()
        check_positive(dim=dim, patch=patch, crop=crop, grid=grid, in_chans=in_chans)
        if (grid * patch) % crop or crop % grid:
            raise ValueError(
                f"crop {crop} must divide grid·patch = {grid * patch} and be a multiple of "
                f"grid {grid}"
            )
        self.dim, self.patch, self.crop, self.grid, self.in_chans = dim, patch, crop, grid, in_chans
        self.scale = grid * patch // crop
        self.stride = crop // grid
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.slice_embed = nn.Conv3d(dim, dim, (1, 1, patch), stride=(1, 1, patch), groups=dim)
        self.register_buffer(
            "taps", linear_upsample_taps(self.scale, patch).float(), persistent=False
        )

    def check(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is a ``B×C×S×S×S`` crop with C in (1, in_chans)."""
        if x.ndim != 5 or x.shape[1] not in (1, self.in_chans) or any(
            s != self.crop for s in x.shape[2:]
        ):
            raise ValueError(
                f"expected a B×C×D×H×W crop with C in (1, {self.in_chans}) and "
                f"D = H = W = {self.crop}, got shape {tuple(x.shape)}"
            )

    def composed_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent 3D kernel ``dim×C×k×k×k`` over ``(H, W, D)`` and its bias."""
        w2 = self.proj.weight  # dim×C×th×tw
        wd = self.slice_embed.weight.flatten(1)  # dim×td
        m = self.taps.to(w2.dtype)  # t×k
        kh = torch.einsum("octu,ta->ocau", w2, m)
        khw = torch.einsum("ocau,ub->ocab", kh, m)
        kd = wd @ m  # dim×k
        kernel = khw[..., None] * kd[:, None, None, None, :]
        # both convolutions are built with a bias (nn.Conv2d/Conv3d's default)
        assert self.proj.bias is not None and self.slice_embed.bias is not None
        bias = self.proj.bias * wd.sum(1) + self.slice_embed.bias
        return kernel, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        kernel, bias = self.composed_weight()
        if x.shape[1] == 1:  # a repeated single channel: fold the repeat into the kernel
            kernel = kernel.sum(1, keepdim=True)
        xs = F.pad(x.permute(0, 1, 3, 4, 2), (1,) * 6, mode="replicate")
        tokens = F.conv3d(xs, kernel.to(x.dtype), bias.to(x.dtype), stride=self.stride)
        return tokens.permute(0, 2, 3, 4, 1)
