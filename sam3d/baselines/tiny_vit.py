"""TinyViT-5M image encoder as used by MobileSAM (our implementation).

Architecture (TinyViT, Wu et al., ECCV 2022; MobileSAM, Zhang et al., 2023), with the sizes
pinned by the MobileSAM checkpoint's ``image_encoder.*`` tensors:

* stem (``patch_embed.seq``): 3×3 conv-BN stride 2 (3 → 32), GELU, 3×3 conv-BN stride 2
  (32 → 64): ``B×3×S×S`` → ``B×64×S/4×S/4``;
* stage 0 (``layers.0``): 2 MBConv blocks (1×1 expand ×4, GELU, 3×3 depthwise, GELU, 1×1
  project, residual, GELU), then patch merging (1×1 conv, GELU, 3×3 depthwise stride 2, GELU,
  1×1 conv) to 128 channels at ``S/8``;
* stages 1–3 (``layers.1..3``): TinyViT blocks of 128 / 160 / 320 channels, depth 2 / 6 / 2,
  4 / 5 / 10 heads of 32 channels, local windows of 7 / 14 / 7. A block is
  ``x + WindowAttention(x)``, then a 3×3 depthwise conv-BN (``local_conv``, no residual), then
  ``x + MLP(x)`` (LayerNorm, ×4 Linear, GELU, Linear). Stage 1 merges to 160 channels with
  stride 2 (``S/16``); stage 2 merges to 320 channels with stride 1 (MobileSAM keeps ``S/16``
  so that a 1024² image gives SAM's 64×64 embedding);
* neck (as SAM's ViT): 1×1 conv (320 → 256), LayerNorm2d, 3×3 conv, LayerNorm2d →
  ``B×256×S/16×S/16``. ``norm_head``/``head`` (the ImageNet classifier) are kept only so the
  checkpoint loads strictly; they are not used.

Window attention (LeViT-style): the feature map is zero-padded at the bottom/right to a
multiple of the window, cut into ``w×w`` windows, and each window attends within itself after a
LayerNorm. ``qkv`` is laid out per head as ``[q | k | v]`` (``3·32`` outputs per head, heads
consecutive). A learned bias per head and per absolute window offset is added to the
attention logits: ``attention_biases`` is ``heads × w²`` and ``attention_bias_idxs`` (a
non-persistent buffer, not in the checkpoint) maps a token pair ``(i, j), (i', j')`` of the
window to offset ``|i − i'|·w + |j − j'|``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

__all__ = ["TinyViT", "TinyViTBlock", "WindowAttention", "window_offset_index"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def window_offset_index(window: int) -> torch.Tensor:
    """``w²×w²`` int64: ``|i − i'|·w + |j − j'|`` for tokens ``(i, j)``, ``(i', j')``
    (row-major)."""
    window = _positive_int(window, "window")
    i, j = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    return (i[:, None] - i[None, :]).abs() * window + (j[:, None] - j[None, :]).abs()


class Conv2dBN(nn.Module):
    """Conv (no bias, "same" padding for odd kernels) then BatchNorm:
    ``B×Cin×H×W → B×Cout×H'×W'``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__()
        for v, n in ((in_ch, "in_ch"), (out_ch, "out_ch"), (kernel, "kernel"),
                     (stride, "stride"), (groups, "groups")):
            _positive_int(v, n)
        self.c = nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups,
                           bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.c(x))


class PatchEmbed(nn.Module):
    """Stem: ``B×3×S×S → B×dim×S/4×S/4`` (two stride-2 3×3 conv-BN with a GELU between)."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        _positive_int(dim, "dim")
        if dim % 2:
            raise ValueError(f"stem dim must be even (first conv has dim/2 channels), got {dim}")
        self.seq = nn.Sequential(Conv2dBN(in_chans, dim // 2, 3, 2), nn.GELU(),
                                 Conv2dBN(dim // 2, dim, 3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: ``B×C×H×W → B×C×H×W``; ``act(x + proj(act(dw(act(expand(x))))))``."""

    def __init__(self, dim: int, expand_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        _positive_int(hidden, "dim × expand_ratio")
        self.conv1 = Conv2dBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, 1)
        self.act3 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(x + self.conv3(y))


class PatchMerging(nn.Module):
    """``B×Cin×H×W → B×Cout×⌈H/s⌉×⌈W/s⌉``: 1×1 conv, GELU, 3×3 depthwise stride s, GELU, 1×1."""

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"patch-merging stride must be 1 or 2, got {stride!r}")
        self.conv1 = Conv2dBN(in_dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window with per-head offset biases.

    Input and output ``N×w²×C`` (``N`` windows of ``w×w`` tokens, row-major). LayerNorm first,
    then ``qkv`` (per-head ``[q | k | v]``), softmax(``q·kᵀ/√d + bias``), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        _positive_int(dim, "dim")
        _positive_int(num_heads, "num_heads")
        _positive_int(window, "window")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.window = num_heads, dim // num_heads, window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer("attention_bias_idxs", window_offset_index(window), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        if length != self.window**2:
            raise ValueError(f"expected {self.window**2} tokens per window, got {length}")
        qkv = self.qkv(self.norm(x)).view(n, length, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.transpose(1, 2).split(self.head_dim, dim=-1)  # each N×heads×L×d
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # heads×L×L
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class Mlp(nn.Module):
    """``…×C → …×C``: LayerNorm, Linear (×ratio), GELU, Linear."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        _positive_int(hidden, "dim × mlp_ratio")
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """``B×H×W×C → B×H×W×C``: windowed attention (residual), local 3×3 depthwise conv, MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int) -> None:
        super().__init__()
        if local_conv_size % 2 == 0:
            raise ValueError(f"local_conv_size must be odd, got {local_conv_size!r}")
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.mlp = Mlp(dim, mlp_ratio)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, groups=dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:  # zero tokens at the bottom/right, attended to like any other
            x = F.pad(x, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        win = x.view(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5)
        win = self.attn(win.reshape(-1, s * s, c))
        x = win.view(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, hp, wp, c)[:, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """``B×C×H×W``: MBConv blocks, then optional patch merging."""

    def __init__(self, dim: int, depth: int, expand_ratio: float,
                 downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim, expand_ratio) for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class AttentionStage(nn.Module):
    """``B×C×H×W``: TinyViT blocks (on ``B×H×W×C``), then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 local_conv_size: int, downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim, num_heads, window, mlp_ratio, local_conv_size)
            for _ in range(depth))
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        x = x.permute(0, 3, 1, 2)
        return x if self.downsample is None else self.downsample(x)


class TinyViT(nn.Module):
    """TinyViT image encoder for SAM: ``B×3×S×S`` (normalised pixels) → ``B×256×S/16×S/16``.

    Defaults are MobileSAM's TinyViT-5M (``S`` = 1024 → 64×64 embedding). ``num_heads[0]`` and
    ``window_sizes[0]`` belong to the convolutional stage 0 and are unused. ``merge_strides[i]``
    is the stride of the patch merging that ends stage ``i`` (the last stage has none); the
    total stride ``4·∏ merge_strides`` must be 16 for SAM's prompt encoder and mask decoder.
    ``img_size`` must be a multiple of that stride; SAM's predictor reads it.
    """

    def __init__(self, img_size: int = 1024, in_chans: int = 3,
                 embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7),
                 merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0,
                 mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 out_chans: int = 256, num_classes: int = 1000) -> None:
        super().__init__()
        dims, depths = tuple(embed_dims), tuple(depths)
        heads, windows, strides = tuple(num_heads), tuple(window_sizes), tuple(merge_strides)
        n = len(dims)
        if n < 2 or not len(depths) == len(heads) == len(windows) == n or len(strides) != n - 1:
            raise ValueError(f"embed_dims, depths, num_heads, window_sizes need one entry per "
                             f"stage (≥ 2) and merge_strides one fewer; got {dims}, {depths}, "
                             f"{heads}, {windows}, {strides}")
        for name, values in (("embed_dims", dims), ("depths", depths), ("num_heads", heads),
                             ("window_sizes", windows)):
            for v in values:
                _positive_int(v, name)
        for v in (img_size, in_chans, out_chans, num_classes):
            _positive_int(v, "img_size, in_chans, out_chans and num_classes")
        for ratio, name in ((mlp_ratio, "mlp_ratio"), (mbconv_expand_ratio, "mbconv_expand_ratio")):
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio <= 0:
                raise ValueError(f"{name} must be a positive number, got {ratio!r}")
        self.stride = 4 * (2 ** sum(s == 2 for s in strides))
        if any(s not in (1, 2) for s in strides) or self.stride != 16:
            raise ValueError(f"merge_strides must be 1 or 2 with a total stride 4·∏ = 16, got "
                             f"{strides}")
        if img_size % self.stride:
            raise ValueError(f"img_size must be a multiple of {self.stride}, got {img_size}")
        self.img_size, self.in_chans = img_size, in_chans
        self.patch_embed = PatchEmbed(in_chans, dims[0])
        self.layers = nn.ModuleList()
        for i in range(n):
            down = PatchMerging(dims[i], dims[i + 1], strides[i]) if i < n - 1 else None
            if i == 0:
                self.layers.append(ConvStage(dims[0], depths[0], mbconv_expand_ratio, down))
            else:
                self.layers.append(AttentionStage(dims[i], depths[i], heads[i], windows[i],
                                                  mlp_ratio, local_conv_size, down))
        self.norm_head = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[-1], out_chans, 1, bias=False), LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False), LayerNorm2d(out_chans))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B×in_chans×img_size×img_size`` → ``B×out_chans×img_size/16×img_size/16``."""
        expected = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input B×{'×'.join(map(str, expected))}, got "
                             f"{tuple(x.shape)}")
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.neck(x)
