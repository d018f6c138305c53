"""3D image encoder: SAM's ViT adapted to volumes (the official ``ImageEncoderViT_3d_v2``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import MLPBlock
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..tuning import PEFT_METHODS, TUNER_METHODS
from .adapter import SpatialAdapter
from .attention import WindowAttention3D, shifted_window_mask, window_order
from .common import LayerNorm3d, check_positive
from .conv import Conv3d
from .patch_embed import VolumePatchEmbed
from .peft import BlockTuner, build_block_tuners

#: ``peft`` values of :class:`ImageEncoder3D` (``sam3d.tuning.PEFT_METHODS``): the paper's
#: spatial adapter, no PEFT module, or one of the tuners of ``peft.py``.
ENCODER_PEFT = PEFT_METHODS


class Block3D(nn.Module):
    """Adapter → pre-norm (shifted) 3D window attention → pre-norm MLP, on ``B×X×Y×Z×dim``.

    ``adapter_dim`` None builds no spatial adapter (the PEFT alternatives of ``peft.py``).
    ``forward(x, tuner)`` optionally applies a :class:`~sam3d.modeling.peft.BlockTuner`'s
    sub-layer hooks (``attn_out``, ``mlp_out``); the encoder owns the tuner and applies its
    ``before``/``after`` hooks around the block.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, window: int, shift: int,
        rel_pos_size: int, adapter_dim: int | None,
    ) -> None:
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift must be in [0, window), got {shift} for window {window}")
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = WindowAttention3D(dim, num_heads, window, rel_pos_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.adapter = SpatialAdapter(dim, adapter_dim) if adapter_dim is not None else None

    def forward(self, x: torch.Tensor, tuner: BlockTuner | None = None) -> torch.Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        b, grid, c = x.shape[0], x.shape[1], x.shape[-1]
        w = self.window
        order, inverse = window_order(grid, w, self.shift, x.device)
        mask = shifted_window_mask(grid, w, self.shift, x.device, x.dtype) if self.shift else None
        # roll by −shift and cut into windows (one gather), attend, then undo both (one gather)
        h = self.norm1(x).flatten(1, 3).index_select(1, order).view(b, -1, w**3, c)
        h = self.attn(h, mask).flatten(1, 2).index_select(1, inverse)
        # both residuals and the MLP in token chunks: the 4×-wide hidden layer never exists
        # for all tokens at once
        step = self.attn.chunk_for(x)
        out = []
        for xt, ht in zip(x.reshape(-1, c).split(step), h.reshape(-1, c).split(step), strict=True):
            if tuner is not None:
                ht = tuner.attn_out(ht)
            t = xt + ht
            m = self.mlp(self.norm2(t))
            if tuner is not None:
                m = tuner.mlp_out(m)
            out.append(t + m)
        return torch.cat(out).view(x.shape)


def make_neck(dim: int, out_chans: int) -> nn.Sequential:
    """1×1×1 conv → channel LayerNorm → 3×3×3 conv → channel LayerNorm (no conv biases)."""
    return nn.Sequential(
        Conv3d(dim, out_chans, 1, bias=False),
        LayerNorm3d(out_chans),
        Conv3d(out_chans, out_chans, 3, padding=1, bias=False),
        LayerNorm3d(out_chans),
    )


class ImageEncoder3D(nn.Module):
    """SAM ViT on a volume, returning four feature levels.

    Arguments:
      dim, depth, num_heads, mlp_ratio: ViT width, blocks, heads, MLP ratio (SAM's).
      patch (int): SAM's 2D patch size; sam_img_size (int): SAM's input size (1024), which
        fixes the stored positional table (``sam_img_size/patch`` per side, pooled to ``grid``).
      crop (int): input crop edge; grid (int): tokens per axis; window (int): window edge.
      global_attn_indexes: SAM's global blocks — here only their longer rel-pos tables remain.
      rel_pos_window (int): SAM's window size (14), fixing the other tables' length.
      taps: 0-based blocks whose output feeds a neck (ViT-B: 2, 5, 8, 11).
      out_chans (int): neck width (256). adapter_dim (int): spatial-adapter bottleneck.
      shift_even_blocks (bool): roll windows by ``window/2`` in blocks 0, 2, 4, …
      peft (str): how the encoder is adapted, one of ``ENCODER_PEFT``: ``"spatial"`` (the
        paper's adapter in every block, default), ``"none"``, or a method of ``peft.py``, whose
        tuners (one per block, parameters ``peft.<block>.*``) replace the spatial adapters.
      peft_dim (int): bottleneck / prompt width of a ``peft.py`` method (0 otherwise).

    Input ``B×C×D×H×W`` (C = 1 or 3, D = H = W = crop). Output: list of ``len(taps)`` tensors
    ``B×out_chans×H'×W'×D'`` in the official (H, W, D) layout, with ``H' = W' = D' = grid``.
    """

    def __init__(
        self, *, dim: int, depth: int, num_heads: int, mlp_ratio: float, patch: int,
        sam_img_size: int, crop: int, grid: int, window: int, global_attn_indexes: Sequence[int],
        rel_pos_window: int, taps: Sequence[int], out_chans: int, adapter_dim: int,
        shift_even_blocks: bool = True, peft: str = "spatial", peft_dim: int = 0,
    ) -> None:
        super().__init__()
        check_positive(depth=depth, sam_img_size=sam_img_size, window=window,
                       rel_pos_window=rel_pos_window, out_chans=out_chans)
        pos_grid = sam_img_size // patch
        if grid % window:
            raise ValueError(f"grid {grid} must be a multiple of window {window}")
        if pos_grid % grid:
            raise ValueError(f"SAM's {pos_grid}² positional table cannot be pooled to {grid}²")
        if not taps or any(not 0 <= t < depth for t in taps) or list(taps) != sorted(set(taps)):
            raise ValueError(f"taps must be increasing block indices in [0, {depth}), got {taps}")
        if peft not in ENCODER_PEFT:
            raise ValueError(f"unknown peft {peft!r}; known: {', '.join(ENCODER_PEFT)}")
        if (peft_dim > 0) != (peft in TUNER_METHODS):
            raise ValueError(f"peft_dim must be positive for {', '.join(TUNER_METHODS)} and 0 "
                             f"otherwise, got {peft_dim} for {peft!r}")
        self.grid, self.taps = grid, tuple(taps)
        self.grad_checkpointing = False
        self.patch_embed = VolumePatchEmbed(dim, patch, crop, grid)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid, pos_grid, dim))
        self.depth_embed = nn.Parameter(torch.ones(1, grid, dim))
        self.blocks = nn.ModuleList(
            Block3D(
                dim, num_heads, mlp_ratio, window,
                shift=window // 2 if shift_even_blocks and i % 2 == 0 else 0,
                rel_pos_size=2 * (pos_grid if i in global_attn_indexes else rel_pos_window) - 1,
                adapter_dim=adapter_dim if peft == "spatial" else None,
            )
            for i in range(depth)
        )
        self.neck_3d = nn.ModuleList(make_neck(dim, out_chans) for _ in taps)
        self.peft = (build_block_tuners(peft, dim, peft_dim, depth, grid, taps)
                     if peft in TUNER_METHODS else None)

    def positional(self) -> torch.Tensor:
        """Pooled 2D table + depth table: ``1×grid×grid×grid×dim`` in (H, W, D) order."""
        k = self.pos_embed.shape[1] // self.grid
        pos = F.avg_pool2d(self.pos_embed.permute(0, 3, 1, 2), k).permute(0, 2, 3, 1)
        return pos[:, :, :, None, :] + self.depth_embed[:, None, None, :, :]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.patch_embed(x) + self.positional().to(x.dtype)
        feats: list[torch.Tensor] = []
        state = None  # carried from block to block by stateful tuners (Med-Tuning)
        for i, block in enumerate(self.blocks):
            # build_block_tuners fills self.peft with BlockTuners only
            tuner = cast(BlockTuner, self.peft[i]) if self.peft is not None else None
            x_in = tokens
            if tuner is not None:
                tokens = tuner.before(tokens)
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, tuner, use_reentrant=False)
            else:
                tokens = block(tokens, tuner)
            if tuner is not None:
                tokens, state = tuner.after(x_in, tokens, state)
            if i in self.taps:
                neck = self.neck_3d[len(feats)]
                feats.append(neck(tokens.permute(0, 4, 1, 2, 3)))
        return feats
