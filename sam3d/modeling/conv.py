"""3D convolutions that take oneDNN's kernels on the CPU where torch would take slow_conv3d.

PyTorch sends a float32 CPU ``conv3d`` to oneDNN (mkldnn) only when a size rule holds
(:func:`torch_takes_slow_conv3d`: at batch 1 and groups 1 with a 3³ kernel, only when ``C·D·H``
of the input exceeds 20,480); otherwise it takes ``slow_conv3d``, an unfold-and-matmul loop.
Most of the decoder's convolutions fall on the slow side: its last convolution
(``1×16×32³ → 2`` channels, tiny model) took 75 ms forward and backward there against 10 ms in
oneDNN on the project's 2-core CPU, and a ``book_real`` epoch 28.6 s against 19.0 s (README,
"Speed and memory").

:func:`conv3d` computes those convolutions (stride 1, no dilation, zero padding) with
``torch.mkldnn_convolution`` in the forward pass and in both gradients: the input's gradient is
the convolution of the output's gradient with the flipped, transposed kernel, the weight's the
convolution of the input with the output's gradient (batch and channels exchanged). The result
equals ``F.conv3d`` up to float rounding (tests: ≤ 1e-5 relative, gradients included). Where
torch already picks oneDNN its own backward is the faster one (a weight gradient as a
convolution with a 48³ or 64³ "kernel" is slower), so every other case (those, GPU, another
dtype, CPU autocast, stride, dilation, a build without oneDNN) is ``F.conv3d`` itself.
:class:`Conv3d` is ``nn.Conv3d`` (same parameters and state-dict keys) computed that way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONE = (1, 1, 1)


def _triple(value: int | tuple[int, ...]) -> tuple[int, int, int]:
    t = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(t) != 3:
        raise ValueError(f"expected one int or three, got {value!r}")
    return (int(t[0]), int(t[1]), int(t[2]))


def _mkldnn(x: torch.Tensor, w: torch.Tensor, padding, groups: int,
            bias: torch.Tensor | None = None) -> torch.Tensor:
    return torch.mkldnn_convolution(x.contiguous(), w.contiguous(), bias, padding, _ONE, _ONE,
                                    groups)


class _OneDnnConv3d(torch.autograd.Function):
    """``B×Cin×D×H×W`` → ``B×Cout×D'×H'×W'``, stride 1, zero ``padding``, ``groups``."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, groups):
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.groups, ctx.has_bias = padding, groups, bias is not None
        return _mkldnn(x, weight, padding, groups, bias)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        pad, groups = ctx.padding, ctx.groups
        grad = grad.contiguous()
        gx = gw = gb = None
        kernel = w.shape[2:]
        if ctx.needs_input_grad[0]:  # full correlation with the flipped, transposed kernel
            out, per = w.shape[0], w.shape[1]
            wt = (w.flip(2, 3, 4).reshape(groups, out // groups, per, *kernel).transpose(1, 2)
                  .reshape(groups * per, out // groups, *kernel))
            gx = _mkldnn(grad, wt, tuple(k - 1 - p for k, p in zip(kernel, pad, strict=True)),
                         groups)
        if ctx.needs_input_grad[1]:
            if groups == 1:  # channels become the batch: Cin×B×… ⋆ Cout×B×… → Cin×Cout×k³
                gw = _mkldnn(x.transpose(0, 1), grad.transpose(0, 1), pad, 1).transpose(0, 1)
            else:  # grouped (1×1 on one thread; torch takes oneDNN for the others): torch's
                gw = torch.ops.aten.convolution_backward(
                    grad, x, w, None, _ONE, pad, _ONE, False, (0, 0, 0), groups,
                    (False, True, False))[1]
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = grad.sum((0, 2, 3, 4))
        return gx, gw, gb, None, None


def torch_takes_slow_conv3d(x: torch.Tensor, weight: torch.Tensor, groups: int) -> bool:
    """Whether torch's CPU float32 ``conv3d`` (stride 1, no dilation) of ``x`` (``B×C×D×H×W``)
    with ``weight`` runs ``slow_conv3d`` rather than oneDNN: its ``use_mkldnn`` size rule
    (pinned by ``tests/modeling/test_conv.py`` against the kernel torch actually calls)."""
    b, c, d, h = x.shape[:4]
    kh, kw = weight.shape[-2], weight.shape[-1]
    worth = b >= 16 or kw != 1 or kh != 1 or torch.get_num_threads() > 1
    large = groups > 1 or (kw > 3 and kh > 3) or b > 1 or b * c * d * h > 20480
    return not (worth and large)


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           padding: int | tuple[int, ...] = 0, groups: int = 1) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride=1, padding=padding, groups=groups)``, through oneDNN
    where torch would take ``slow_conv3d`` on a float32 CPU tensor (see module). ``x``:
    ``B×Cin×D×H×W``; ``weight``: ``Cout×Cin/groups×kD×kH×kW``."""
    pad = _triple(padding)
    if (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.dim() == 5 and not torch.is_autocast_enabled("cpu")  # bf16: torch's own
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and all(p < k for p, k in zip(pad, weight.shape[2:], strict=True))
            and (bias is None or bias.dtype == torch.float32)
            and torch_takes_slow_conv3d(x, weight, groups)):
        return _OneDnnConv3d.apply(x, weight, bias, pad, groups)
    return F.conv3d(x, weight, bias, 1, pad, 1, groups)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` whose stride-1, undilated, zero-padded case runs through :func:`conv3d`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor | None) -> torch.Tensor:
        if (self.padding_mode == "zeros" and self.stride == _ONE and self.dilation == _ONE
                and not isinstance(self.padding, str)):
            return conv3d(input, weight, bias, self.padding, self.groups)
        return super()._conv_forward(input, weight, bias)
