"""Prompt encoder: the official "visual sampler" with global-query attention layers.

A click carries no embedding of its own: its token is the image feature trilinearly sampled at
its position. Each layer mixes learnable global queries with the click tokens by
self-attention, refines the queries with an MLP, and lets every image token attend to the
queries; the refined image feature map is the output. (The official module also holds a
Fourier positional encoding and a token→image attention that never reach the output; they
are not built here — see ``OFFICIAL_UNUSED_PARAMS``.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import MLPBlock
from torch import nn

from .common import check_positive


class Attention(nn.Module):
    """SAM-style attention with an optional down-projection of the internal width."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        check_positive(dim=dim, num_heads=num_heads, downsample_rate=downsample_rate)
        internal = dim // downsample_rate
        if internal % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the internal width {internal}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, internal)
        self.k_proj = nn.Linear(dim, internal)
        self.v_proj = nn.Linear(dim, internal)
        self.out_proj = nn.Linear(internal, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``B×Nq×dim``, ``B×Nk×dim``, ``B×Nk×dim`` → ``B×Nq×dim``."""
        heads = [
            proj(t).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
            for proj, t in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v))
        ]
        out = F.scaled_dot_product_attention(*heads)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class GlobalQueryLayer(nn.Module):
    """One layer: queries+clicks self-attention, query MLP, image→query cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, num_queries: int) -> None:
        super().__init__()
        check_positive(num_queries=num_queries, mlp_dim=mlp_dim)
        self.num_queries = num_queries
        self.global_query = nn.Parameter(0.1 * torch.randn(1, num_queries, dim))
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate=2)
        self.norm4 = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image ``B×L×dim`` tokens, points ``B×N×dim`` → updated (image, points)."""
        tokens = torch.cat([self.global_query.expand(points.shape[0], -1, -1), points], dim=1)
        tokens = self.norm2(tokens + self.norm1(self.self_attn(tokens, tokens, tokens)))
        queries, points = tokens[:, : self.num_queries], tokens[:, self.num_queries :]
        queries = self.norm3(queries + self.mlp(queries))
        image = self.norm4(image + self.cross_attn_image_to_token(image, queries, queries))
        return image, points


class PromptEncoder3D(nn.Module):
    """Click-conditioned refinement of one feature level.

    Arguments:
      dim (int): feature width (256). depth (int): layers (2). num_heads (int): 8.
      mlp_dim (int): query MLP width (2048). num_queries (int): global queries per layer (10).

    ``label_embedding`` (bool, default False): the negative-click extension (not in the paper).
      A learned ``2×dim`` table is added to each sampled click token by the click's label
      (0 = negative, 1 = positive). The positive row starts at zero, so a paper checkpoint
      loaded into the extension gives the paper's logits on positive clicks; the negative row
      starts small and random, so negative and positive clicks differ from the first step.

    ``forward(features, grid_points, labels=None)``: features ``B×dim×X×Y×Z`` in (H, W, D)
    layout; ``grid_points`` ``B×N×3`` already normalised to [−1, 1] in ``grid_sample`` order
    (x → Z = D, y → Y = W, z → X = H); ``labels`` ``B×N`` int64 in {0, 1} (None: all
    positive; only the extension reads them). Returns ``B×dim×X×Y×Z``.
    """

    def __init__(
        self, dim: int = 256, depth: int = 2, num_heads: int = 8, mlp_dim: int = 2048,
        num_queries: int = 10, label_embedding: bool = False,
    ) -> None:
        super().__init__()
        check_positive(dim=dim, depth=depth)
        self.layers = nn.ModuleList(
            GlobalQueryLayer(dim, num_heads, mlp_dim, num_queries) for _ in range(depth)
        )
        self.label_embed: nn.Embedding | None = None
        if label_embedding:
            self.label_embed = nn.Embedding(2, dim)
            with torch.no_grad():
                self.label_embed.weight.normal_(0.0, 0.1)  # the global queries' scale
                self.label_embed.weight[1].zero_()  # positive: the paper's token, unchanged

    def forward(self, features: torch.Tensor, grid_points: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        b = features.shape[0]
        grid = grid_points.to(features.dtype).reshape(b, 1, 1, -1, 3)
        points = F.grid_sample(features, grid, mode="bilinear", align_corners=False)
        points = points.flatten(2).transpose(1, 2)  # B×N×C
        if self.label_embed is not None:
            if labels is None:  # all positive
                labels = torch.ones(points.shape[:2], dtype=torch.long, device=points.device)
            points = points + self.label_embed(labels).to(points.dtype)
        image = features.flatten(2).transpose(1, 2)  # B×L×C
        for layer in self.layers:
            image, points = layer(image, points)
        return image.transpose(1, 2).reshape(features.shape)


def official_unused_params(dim: int = 256, depth: int = 2, downsample_rate: int = 2) -> int:
    """Parameters of the official ``cross_attn_token_to_image`` modules we do not build."""
    internal = dim // downsample_rate
    return depth * (3 * (dim * internal + internal) + internal * dim + dim)
