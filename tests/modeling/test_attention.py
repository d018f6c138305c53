"""3D window attention: the fused implementation against a literal one written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos as sam_get_rel_pos

import sam3d.golden
from sam3d.modeling.attention import (
    MASK_VALUE,
    WindowAttention3D,
    get_rel_pos,
    shifted_window_mask,
    window_order,
    window_partition,
)
from sam3d.modeling.image_encoder import Block3D

DIM, HEADS, WINDOW, GRID = 32, 2, 4, 8


def naive_window_attention(attn: WindowAttention3D, x: torch.Tensor, mask: torch.Tensor | None):
    """softmax(scale·q·kᵀ + lr·(q·R_h + q·R_w + q·R_d) + mask)·v, fully materialised."""
    b, nw, n, c = x.shape
    h, w = attn.num_heads, attn.window
    hd = c // h
    qkv = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(b, nw, n, 3, h, hd)
    q, k, v = (qkv[:, :, :, i].permute(0, 1, 3, 2, 4) for i in range(3))  # b×nw×h×n×hd
    logits = (hd**-0.5) * q @ k.transpose(-1, -2)
    # token t of a window sits at (t // w², (t // w) % w, t % w) = (x, y, z)
    t = torch.arange(n)
    cx, cy, cz = t // (w * w), (t // w) % w, t % w
    rel = 0
    for table, coord in ((attn.rel_pos_h, cx), (attn.rel_pos_w, cy), (attn.rel_pos_d, cz)):
        r = get_rel_pos(w, w, table)  # w×w×hd, r[i, j] for axis coordinates i (query), j (key)
        rel = rel + r[coord[:, None], coord[None, :]]  # n×n×hd
    logits = logits + attn.lr * torch.einsum("bwhic,ijc->bwhij", q, rel)
    if mask is not None:
        logits = logits + mask[None]  # nW×1×n×n → broadcast over batch and heads
    out = torch.softmax(logits, -1) @ v  # b×nw×h×n×hd
    out = out.permute(0, 1, 3, 2, 4).reshape(b, nw, n, c)
    return out @ attn.proj.weight.T + attn.proj.bias


def make_attention(rel_pos_size: int, token_chunk: int = 1024, seed: int = 0) -> WindowAttention3D:
    torch.manual_seed(seed)
    attn = WindowAttention3D(DIM, HEADS, WINDOW, rel_pos_size, token_chunk=token_chunk)
    with torch.no_grad():
        for table in (attn.rel_pos_h, attn.rel_pos_w, attn.rel_pos_d):
            table.copy_(0.3 * torch.randn(table.shape))
        attn.lr.fill_(0.7)  # a non-unit scale, so a missing lr factor would show
    return attn


@pytest.mark.parametrize("shifted", [False, True], ids=["plain", "shifted"])
@pytest.mark.parametrize("rel_pos_size", [2 * WINDOW - 1, 13], ids=["table_fits", "table_resized"])
@pytest.mark.parametrize("token_chunk", [1024, 192, 1])
def test_matches_naive(shifted: bool, rel_pos_size: int, token_chunk: int) -> None:
    attn = make_attention(rel_pos_size, token_chunk)
    nw = (GRID // WINDOW) ** 3
    x = torch.randn(2, nw, WINDOW**3, DIM)
    mask = shifted_window_mask(GRID, WINDOW, WINDOW // 2) if shifted else None
    with torch.no_grad():
        got = attn(x, mask)
        want = naive_window_attention(attn, x, mask)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_mask_and_bias_matter() -> None:
    """Guard against a vacuous comparison: mask and rel-pos bias both change the output."""
    attn = make_attention(13)
    x = torch.randn(2, 8, WINDOW**3, DIM)
    mask = shifted_window_mask(GRID, WINDOW, WINDOW // 2)
    with torch.no_grad():
        plain, masked = attn(x), attn(x, mask)
        attn.lr.fill_(0.0)
        no_bias = attn(x)
    assert (plain - masked).abs().max() > 1e-2
    assert (plain - no_bias).abs().max() > 1e-2


def test_gradients_match_naive() -> None:
    attn = make_attention(13)
    x = torch.randn(1, 8, WINDOW**3, DIM)
    mask = shifted_window_mask(GRID, WINDOW, WINDOW // 2)
    weight = torch.randn_like(x)
    grads = []
    for fn in (lambda: attn(x, mask), lambda: naive_window_attention(attn, x, mask)):
        attn.zero_grad()
        (fn() * weight).sum().backward()
        grads.append({n: p.grad.clone() for n, p in attn.named_parameters() if p.grad is not None})
    assert set(grads[0]) == set(grads[1]) >= {"rel_pos_d", "rel_pos_h", "rel_pos_w", "qkv.weight"}
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-4, rtol=1e-4)


def test_get_rel_pos_matches_segment_anything() -> None:
    table = torch.randn(27, 8)
    for size in (4, 8, 14):
        torch.testing.assert_close(
            get_rel_pos(size, size, table), sam_get_rel_pos(size, size, table)
        )
    # resized table, then r[i, j] = table'[i − j + w − 1]
    r = get_rel_pos(8, 8, table)
    resized = F.interpolate(table.T[None], size=15, mode="linear", align_corners=False)[0].T
    torch.testing.assert_close(r[5, 2], resized[5 - 2 + 7])
    torch.testing.assert_close(r[0, 7], resized[0])


def test_official_mask_counts_and_golden_equality() -> None:
    mask = shifted_window_mask(32, 8, 4)
    assert mask.shape == (64, 1, 512, 512) and mask.dtype == torch.float32
    assert int((mask == 0).sum()) == 11_239_424
    assert int((mask == MASK_VALUE).sum()) == 5_537_792
    assert MASK_VALUE == -100.0
    np.testing.assert_array_equal(mask.squeeze(1).numpy(), sam3d.golden.shifted_window_mask())


def test_mask_device_dtype_and_cache_isolation() -> None:
    mask = shifted_window_mask(8, 4, 2, dtype=torch.float64)
    assert mask.dtype == torch.float64
    mask.fill_(1.0)  # mutating a returned mask must not poison the cache
    again = shifted_window_mask(8, 4, 2, dtype=torch.float64)
    assert set(again.unique().tolist()) == {0.0, -100.0}


def test_small_mask_equals_golden_rule() -> None:
    np.testing.assert_array_equal(
        shifted_window_mask(8, 4, 2).squeeze(1).numpy(), sam3d.golden.shifted_window_mask(8, 4, 2)
    )


def test_partition_round_trip_and_order() -> None:
    x = torch.randn(2, GRID, GRID, GRID, 5)
    windows = window_partition(x, WINDOW)
    assert windows.shape == (2, 8, WINDOW**3, 5)
    # the gather the encoder uses equals roll + partition, and its inverse undoes both
    for shift in (0, WINDOW // 2):
        order, inverse = window_order(GRID, WINDOW, shift)
        rolled = torch.roll(x, (-shift,) * 3, (1, 2, 3))
        gathered = x.flatten(1, 3).index_select(1, order)
        torch.testing.assert_close(gathered, window_partition(rolled, WINDOW).flatten(1, 2),
                                   rtol=0, atol=0)
        torch.testing.assert_close(gathered.index_select(1, inverse).view(x.shape), x,
                                   rtol=0, atol=0)
    # golden README numbering: window (h//w)·n² + (w//w)·n + d//w, token (h%w)·w² + (w%w)·w + d%w
    n = GRID // WINDOW
    for hh, ww, dd in [(0, 0, 0), (5, 2, 7), (7, 7, 7), (3, 6, 1)]:
        win = (hh // WINDOW) * n * n + (ww // WINDOW) * n + dd // WINDOW
        tok = (hh % WINDOW) * WINDOW**2 + (ww % WINDOW) * WINDOW + dd % WINDOW
        torch.testing.assert_close(windows[1, win, tok], x[1, hh, ww, dd], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((30, 4, 4, 7), "divisible"),  # dim not divisible by heads
        ((32, 2, 0, 7), "window"),  # zero window
        ((32, 0, 4, 7), "num_heads"),
        ((32, 2, 4, 0), "rel_pos_size"),
    ],
)
def test_invalid_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WindowAttention3D(*args)


def test_block_rejects_bad_shift() -> None:
    with pytest.raises(ValueError, match="shift"):
        Block3D(DIM, HEADS, 2.0, WINDOW, shift=WINDOW, rel_pos_size=7, adapter_dim=8)


def _influence(block: Block3D, src: tuple[int, int, int], dst: tuple[int, int, int]) -> float:
    """How much perturbing the token at ``src`` changes the block output at ``dst``."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, GRID, GRID, GRID, DIM, generator=gen)
    y = x.clone()
    y[(0, *src)] += 3.0 * torch.randn(DIM, generator=gen)  # not constant: LayerNorm removes that
    with torch.no_grad():
        return float((block(y) - block(x))[(0, *dst)].abs().max())


@pytest.fixture
def blocks() -> dict[str, Block3D]:
    out = {}
    for name, shift in (("plain", 0), ("shifted", WINDOW // 2)):
        torch.manual_seed(0)
        block = Block3D(DIM, HEADS, 2.0, WINDOW, shift=shift, rel_pos_size=7, adapter_dim=8).eval()
        with torch.no_grad():  # silence the adapter (its 3×3×3 conv also mixes neighbours)
            block.adapter.linear2.weight.zero_()
            block.adapter.linear2.bias.zero_()
        out[name] = block
    return out


def test_shifted_block_window_geometry(blocks: dict[str, Block3D]) -> None:
    """Roll by −w/2, mask across regions, roll back: which token pairs can interact."""
    plain, shifted = blocks["plain"], blocks["shifted"]
    # (3,3,3) and (4,4,4): different windows unshifted; same window and region after the roll
    assert _influence(plain, (3, 3, 3), (4, 4, 4)) < 1e-6
    assert _influence(shifted, (3, 3, 3), (4, 4, 4)) > 1e-3
    # (0,0,0) and (1,1,1): same window in both
    assert _influence(plain, (0, 0, 0), (1, 1, 1)) > 1e-3
    assert _influence(shifted, (0, 0, 0), (1, 1, 1)) > 1e-3
    # (0,0,0) and (7,7,7) share a rolled window but come from different regions: the mask
    # (−100) must keep them apart
    assert _influence(shifted, (0, 0, 0), (7, 7, 7)) < 1e-6
    assert _influence(shifted, (7, 7, 7), (0, 0, 0)) < 1e-6
    assert _influence(plain, (0, 0, 0), (7, 7, 7)) < 1e-6


def test_returned_mask_does_not_alias_the_cache() -> None:
    first = shifted_window_mask(8, 4, 1)  # (8, 4, 1): a combination no other test uses
    first.fill_(1.0)
    try:
        assert set(shifted_window_mask(8, 4, 1).unique().tolist()) == {0.0, -100.0}
    finally:
        from sam3d.modeling import attention

        attention._shift_mask_cpu.cache_clear()  # do not leave a poisoned cache behind


def test_token_chunk_depends_on_device() -> None:
    """Small chunks on the CPU (cheap allocations), one chunk on other devices."""
    from sam3d.modeling.attention import CPU_TOKEN_CHUNK

    attn = WindowAttention3D(DIM, HEADS, WINDOW, 13)
    assert attn.chunk_for(torch.zeros(2, 5000, DIM)) == CPU_TOKEN_CHUNK
    assert attn.chunk_for(torch.zeros(2, 5000, DIM, device="meta")) == 10000
    assert WindowAttention3D(DIM, HEADS, WINDOW, 13, token_chunk=64).chunk_for(
        torch.zeros(2, 5000, DIM, device="meta")) == 64
    with pytest.raises(ValueError, match="token_chunk"):
        WindowAttention3D(DIM, HEADS, WINDOW, 13, token_chunk=0)
