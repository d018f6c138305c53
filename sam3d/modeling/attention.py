"""3D window attention with decomposed relative position (the official ``Attention_3d``).

Tokens live on an ``X×Y×Z`` grid laid out as the official code lays them out, ``(H, W, D)``:
the two in-plane axes first, the slice axis last. Attention runs inside non-overlapping
``w×w×w`` windows; shifted blocks roll the grid by ``-w/2`` first and mask token pairs that
came from different regions (Swin), then roll back.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .common import check_positive

MASK_VALUE = -100.0  # the official additive mask value (not -inf)
CPU_TOKEN_CHUNK = 2048  # tokens per chunk on the CPU: intermediates stay ≤ ~25 MB


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``B×X×Y×Z×C`` → ``B×nW×w³×C`` (windows in raster order, tokens ``(x, y, z)`` z fastest)."""
    return rearrange(
        x, "b (nx wx) (ny wy) (nz wz) c -> b (nx ny nz) (wx wy wz) c",
        wx=window, wy=window, wz=window,
    )


@functools.lru_cache(maxsize=8)
def _shift_mask_cpu(grid: int, window: int, shift: int) -> torch.Tensor:
    bands = torch.zeros(grid, dtype=torch.long)
    bands[grid - window : grid - shift] = 1
    bands[grid - shift :] = 2
    label = bands[:, None, None] * 9 + bands[None, :, None] * 3 + bands[None, None, :]
    lab = window_partition(label[None, ..., None], window)[0, :, :, 0]  # nW×w³
    same = lab[:, :, None] == lab[:, None, :]
    return torch.where(same, 0.0, MASK_VALUE).unsqueeze(1)  # nW×1×w³×w³


def shifted_window_mask(
    grid: int, window: int, shift: int, device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive mask ``nW×1×w³×w³`` (0 within a region, -100 across) for a rolled grid.

    Always a fresh tensor: the cached CPU copy is never handed out.
    """
    return _shift_mask_cpu(grid, window, shift).to(device=device, dtype=dtype, copy=True)


@functools.lru_cache(maxsize=16)
def _window_order_cpu(grid: int, window: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    index = torch.arange(grid**3).view(1, grid, grid, grid, 1)
    if shift:
        index = torch.roll(index, shifts=(-shift,) * 3, dims=(1, 2, 3))
    order = window_partition(index, window).flatten()
    return order, torch.argsort(order)


def window_order(
    grid: int, window: int, shift: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token permutation for (optionally rolled) window partitioning, and its inverse.

    ``tokens.flatten(1, 3).index_select(1, order)`` equals
    ``window_partition(torch.roll(tokens, (-shift,) * 3, (1, 2, 3)), window)`` flattened, in one
    gather instead of a roll per axis plus a rearrangement; ``inverse`` undoes both.
    """
    order, inverse = _window_order_cpu(grid, window, shift)
    return order.to(device, copy=True), inverse.to(device, copy=True)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position table resized (linear, align_corners False) and gathered: ``q×k×C``."""
    max_rel_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_rel_dist:
        rel_pos = F.interpolate(
            rel_pos.T.unsqueeze(0), size=max_rel_dist, mode="linear"
        )[0].T
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3D windows with a decomposed 3D relative-position bias.

    The bias for query ``i`` and key ``j`` is ``lr·(q_i·R_x[x_i−x_j] + q_i·R_y[…] + q_i·R_z[…])``
    with unscaled ``q``; only ``q·kᵀ`` is scaled by ``head_dim^-0.5``. The official code keeps
    SAM's table lengths (``rel_pos_size`` rows, 27 or 127 for ViT-B) and resizes them to
    ``2w−1`` rows at run time.

    Arguments:
      dim (int): token width.
      num_heads (int): attention heads; must divide ``dim``.
      window (int): window edge ``w`` in tokens.
      rel_pos_size (int): rows of each stored relative-position table.
      token_chunk (int | None): tokens (whole windows) processed at once; bounds the memory
        of every intermediate. None (default): 2048 on the CPU, where small intermediates are
        cheap to allocate, and all tokens at once on accelerators, where big kernels win.

    Input and output: ``B×nW×w³×dim`` windows.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, rel_pos_size: int,
        token_chunk: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(dim=dim, num_heads=num_heads, window=window, rel_pos_size=rel_pos_size)
        if token_chunk is not None:
            check_positive(token_chunk=token_chunk)
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.token_chunk = token_chunk
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(rel_pos_size, self.head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(rel_pos_size, self.head_dim))
        self.rel_pos_d = nn.Parameter(torch.zeros(rel_pos_size, self.head_dim))
        self.lr = nn.Parameter(torch.ones(()), requires_grad=False)

    def init_depth_table(self) -> None:
        """Official initialisation of the new depth table: mean of the H and W tables."""
        with torch.no_grad():
            self.rel_pos_d.copy_((self.rel_pos_h + self.rel_pos_w) / 2)

    def chunk_for(self, x: torch.Tensor) -> int:
        """Tokens per chunk for a ``…×C`` tensor on its device (see ``token_chunk``)."""
        if self.token_chunk is not None:
            return self.token_chunk
        return CPU_TOKEN_CHUNK if x.device.type == "cpu" else x.numel() // x.shape[-1]

    def rel_pos_terms(self, q: torch.Tensor) -> torch.Tensor:
        """Per-axis relative-position logits ``lr·q·R``: ``N×heads×w³×3w`` for ``q``
        ``N×heads×w³×hd``.

        Column ``a·w + j`` holds the term for a key at index ``j`` along axis ``a`` (x, y, z).
        """
        w = self.window
        rq = q.unflatten(2, (w, w, w))
        terms = [
            torch.einsum(eq, rq, get_rel_pos(w, w, table).to(q.dtype))
            for eq, table in (
                ("nhxyzc,xkc->nhxyzk", self.rel_pos_h),
                ("nhxyzc,ykc->nhxyzk", self.rel_pos_w),
                ("nhxyzc,zkc->nhxyzk", self.rel_pos_d),
            )
        ]
        return (self.lr.to(q.dtype) * torch.cat(terms, -1)).flatten(2, 4)

    def key_positions(self, like: torch.Tensor) -> torch.Tensor:
        """One-hot key coordinates ``w³×3w`` selecting each key's column in the terms above."""
        w = self.window
        idx = torch.arange(w**3, device=like.device)
        coords = torch.stack([idx // (w * w), (idx // w) % w, idx % w], 1)  # w³×3
        cols = coords + torch.arange(3, device=like.device) * w
        return torch.zeros(w**3, 3 * w, dtype=like.dtype, device=like.device).scatter_(1, cols, 1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``B×nW×w³×dim`` windows (``mask``: ``nW×1×w³×w³`` additive, or None) → same shape.

        The decomposed bias is a dot product of per-query terms with one-hot key positions,
        so it is appended to ``q`` and ``k`` and one fused ``scaled_dot_product_attention``
        call computes ``softmax(scale·q·kᵀ + bias + mask)·v`` without materialising the bias.
        Windows are processed ``token_chunk`` tokens at a time, projections included, so every
        intermediate stays small (and cheap to allocate).
        """
        b, nw, n, c = x.shape
        x = x.reshape(b * nw, n, c)
        if mask is not None:
            mask = mask.to(x.dtype)
            mask = mask.repeat(b, 1, 1, 1) if b > 1 else mask
        onehot = self.key_positions(x)
        step = max(1, self.chunk_for(x) // n)
        outs = []
        for s in range(0, b * nw, step):
            xs = x[s : s + step]
            qkv = self.qkv(xs).reshape(xs.shape[0], n, 3, self.num_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each windows×heads×n×hd
            qa = torch.cat([q * self.scale, self.rel_pos_terms(q)], -1)
            ka = torch.cat([k, onehot.expand(*k.shape[:2], -1, -1)], -1)
            va = F.pad(v, (0, onehot.shape[1]))  # the fused kernels want equal q/k/v widths
            m = None if mask is None else mask[s : s + step]
            out = F.scaled_dot_product_attention(qa, ka, va, attn_mask=m, scale=1.0)
            outs.append(self.proj(out[..., : self.head_dim].transpose(1, 2).reshape(-1, n, c)))
        return torch.cat(outs).view(b, nw, n, c)
