"""Parameter-efficient tuning (PEFT) alternatives to the spatial adapter (paper Table 2).

The paper compares its spatial adapter (``adapter.py``) with four ways of tuning a frozen
encoder. Each is built here as a :class:`BlockTuner`: one module per encoder block that may act
at four places around that (frozen) block —

* ``before(x)``: on the block input, i.e. before the attention (ST-Adapter);
* ``attn_out(h)`` / ``mlp_out(h)``: on the attention / MLP sub-layer output, before its
  residual addition (Houlsby adapters; called per token chunk, so token-wise only);
* ``after(x_in, x_out, state)``: on the block output, seeing the block input and a state passed
  from block to block (Pro-tuning prompts, Med-Tuning's Med-Adapters).

Token grids are ``B×X×Y×Z×C`` in the encoder's (H, W, D) layout: ``Z`` is the slice axis.
Convolutions run on the channel-first view ``B×C×X×Y×Z``.

Methods (``method`` names as in ``sam3d.tuning.PEFT_REGISTRY``, where their Table 2 widths and
policies are; their classes are registered in :data:`TUNERS`):

* ``houlsby`` — Houlsby et al. 2019, "Parameter-efficient transfer learning for NLP".
* ``protuning`` — Nie et al. 2022, "Pro-tuning: unified prompt tuning for vision tasks".
* ``stadapter`` — Pan et al. 2022, "ST-Adapter: parameter-efficient image-to-video transfer".
* ``medtuning`` — Wang/Shen et al. 2023, "Med-Tuning: parameter-efficient transfer learning for
  medical volumetric segmentation".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..tuning import TUNER_METHODS
from .common import check_positive
from .conv import Conv3d


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """``B×X×Y×Z×C`` → ``B×C×X×Y×Z``."""
    return x.permute(0, 4, 1, 2, 3)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``B×C×X×Y×Z`` → ``B×X×Y×Z×C``."""
    return x.permute(0, 2, 3, 4, 1)


def depthwise(channels: int, kernel: tuple[int, int, int]) -> nn.Conv3d:
    """Depthwise 3D convolution (with bias) keeping the grid size (odd kernel edges)."""
    if any(k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel edges must be odd and positive, got {kernel}")
    # tuple() of a generator loses the length: it is the kernel's, three
    padding = cast("tuple[int, int, int]", tuple(k // 2 for k in kernel))
    return Conv3d(channels, channels, kernel, padding=padding, groups=channels)


class BlockTuner(nn.Module):
    """Base class: every hook is the identity. Subclasses override the hooks they use."""

    @classmethod
    def for_block(cls, dim: int, width: int, grid: int, ends_stage: bool) -> BlockTuner:
        """The tuner of one encoder block: token width ``dim``, the method's ``width``, ``grid``
        tokens per axis; ``ends_stage``: the block feeds a neck (an encoder tap). Default:
        ``cls(dim, width)``."""
        return cls(dim, width)  # the subclasses built this way take (dim, width)

    def before(self, x: torch.Tensor) -> torch.Tensor:
        """Block input ``B×X×Y×Z×C`` → same shape (runs before the attention)."""
        return x

    def attn_out(self, h: torch.Tensor) -> torch.Tensor:
        """Attention sub-layer output, tokens ``N×C`` → ``N×C`` (before its residual)."""
        return h

    def mlp_out(self, h: torch.Tensor) -> torch.Tensor:
        """MLP sub-layer output, tokens ``N×C`` → ``N×C`` (before its residual)."""
        return h

    def after(
        self, x_in: torch.Tensor, x_out: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Block input and output ``B×X×Y×Z×C`` and the carried state → (output, state)."""
        return x_out, state


class BottleneckAdapter(nn.Module):
    """Houlsby adapter: ``h + W_up·GELU(W_down·h)``, initialised near the identity.

    Arguments:
      dim (int): token width. width (int): bottleneck width ``m``.

    Input and output: ``…×dim`` (any leading shape). Weights ~ N(0, 0.01²) truncated at two
    standard deviations, biases zero (Houlsby et al.'s near-identity initialisation).
    """

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        check_positive(dim=dim, width=width)
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        for layer in (self.down, self.up):
            nn.init.trunc_normal_(layer.weight, std=1e-2, a=-2e-2, b=2e-2)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


class HoulsbyTuner(BlockTuner):
    """Two bottleneck adapters per block: on the attention output and on the MLP output.

    Arguments: dim (int): token width; width (int): bottleneck width of both adapters.
    Parameters per block: ``2·(2·dim·width + width + dim)``.
    """

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.attn = BottleneckAdapter(dim, width)
        self.mlp = BottleneckAdapter(dim, width)

    def attn_out(self, h: torch.Tensor) -> torch.Tensor:
        return self.attn(h)

    def mlp_out(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)


class STAdapterTuner(BlockTuner):
    """ST-Adapter before the attention: ``x + W_up·DWConv3D(W_down·x)``.

    As the authors' release: no nonlinearity, depthwise kernel 3 along the "temporal" axis and
    1 in-plane — here the slice axis ``Z`` (kernel ``1×1×3`` over X, Y, Z) — and the depthwise
    convolution and all biases initialised to zero, so the adapter starts as the identity.

    Arguments: dim (int): token width; width (int): bottleneck (paper: 384 for ViT-B);
    kernel (tuple): depthwise kernel over (X, Y, Z).
    Parameters per block: ``2·dim·width + dim + width·(kX·kY·kZ + 2)``.
    """

    def __init__(self, dim: int, width: int, kernel: tuple[int, int, int] = (1, 1, 3)) -> None:
        super().__init__()
        check_positive(dim=dim, width=width)
        self.down = nn.Linear(dim, width)
        self.conv = depthwise(width, kernel)
        self.up = nn.Linear(width, dim)
        for p in (self.conv.weight, self.conv.bias, self.down.bias, self.up.bias):
            assert p is not None  # the three layers are built with a bias
            nn.init.zeros_(p)

    def before(self, x: torch.Tensor) -> torch.Tensor:
        h = channels_last(self.conv(channels_first(self.down(x))))
        return x + self.up(h)


class ProTuningTuner(BlockTuner):
    """Pro-tuning prompt block: an input-dependent prompt added to the block's output.

    ``x_out + W_up·GELU(DWConv3D(W_down·x_in))``: a lightweight convolutional branch, parallel
    to the frozen block, turns the block input into a task-specific feature map that is added
    to the intermediate feature the block produces (one prompt block per encoder block).

    Arguments: dim (int): token width; width (int): prompt-block width;
    kernel (int): depthwise kernel edge (5, i.e. 5×5×5).
    Parameters per block: ``2·dim·width + dim + width·(kernel³ + 2)``.
    """

    def __init__(self, dim: int, width: int, kernel: int = 5) -> None:
        super().__init__()
        check_positive(dim=dim, width=width, kernel=kernel)
        self.down = nn.Linear(dim, width)
        self.conv = depthwise(width, (kernel,) * 3)
        self.up = nn.Linear(width, dim)

    def after(
        self, x_in: torch.Tensor, x_out: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        prompt = self.up(F.gelu(channels_last(self.conv(channels_first(self.down(x_in))))))
        return x_out + prompt, state


class MedAdapterTuner(BlockTuner):
    """Med-Adapter after the block (Med-Tuning), with inter-stage interaction on stage ends.

    ``z = GELU(W_down·x)``, then on ``z`` three parallel branches, summed and mixed by a 1×1×1
    convolution ``W_mix`` (intra-stage feature enhancement):

    * in-plane 3×3 then through-plane 3 depthwise convolutions → BatchNorm → ReLU;
    * the same with 5×5 and 5;
    * a global branch: ``|IFFT(FFT(z)·w + b)|`` over the grid, with ``w``, ``b`` one value
      per slice-axis frequency (initialised to one).

    On the last block of a stage (``inter_stage``: the encoder's tap blocks) the result ``m`` is
    fused with the previous stage's ``m`` (the state, zeros before the first stage):
    ``m ← W_fuse·[m, W_link·m_prev]`` (inter-stage feature interaction), and becomes the new
    state. Output ``x + GELU(W_up·(z + m))``.

    Arguments: dim (int): token width; width (int): bottleneck (paper: dim/6); grid (int):
    tokens along the slice axis (size of ``w``, ``b``); inter_stage (bool).
    Input and output: ``B×X×Y×Z×dim`` with ``Z = grid``; state ``B×width×X×Y×Z`` or None.
    """

    @classmethod
    def for_block(cls, dim: int, width: int, grid: int, ends_stage: bool) -> BlockTuner:
        return cls(dim, width, grid, inter_stage=ends_stage)

    def __init__(self, dim: int, width: int, grid: int, inter_stage: bool) -> None:
        super().__init__()
        check_positive(dim=dim, width=width, grid=grid)
        self.down = nn.Linear(dim, width)
        self.local3 = nn.Sequential(depthwise(width, (3, 3, 1)), depthwise(width, (1, 1, 3)),
                                    nn.BatchNorm3d(width), nn.ReLU())
        self.local5 = nn.Sequential(depthwise(width, (5, 5, 1)), depthwise(width, (1, 1, 5)),
                                    nn.BatchNorm3d(width), nn.ReLU())
        self.freq_weight = nn.Parameter(torch.ones(1, 1, 1, 1, grid))
        self.freq_bias = nn.Parameter(torch.ones(1, 1, 1, 1, grid))
        self.mix = Conv3d(width, width, 1)
        self.up = nn.Linear(width, dim)
        self.inter_stage = inter_stage
        if inter_stage:
            self.link = Conv3d(width, width, 1)
            self.fuse = Conv3d(2 * width, width, 1)

    def global_branch(self, z: torch.Tensor) -> torch.Tensor:
        """Frequency filtering along all three axes, in float32: ``B×C×X×Y×Z`` → same."""
        if z.shape[-1] != self.freq_weight.shape[-1]:
            raise ValueError(f"expected {self.freq_weight.shape[-1]} slices in the token grid, "
                             f"got {z.shape[-1]}")
        with torch.autocast(z.device.type, enabled=False):
            spec = torch.fft.fftn(z.float(), dim=(2, 3, 4))
            spec = spec * self.freq_weight.float() + self.freq_bias.float()
            return torch.fft.ifftn(spec, dim=(2, 3, 4)).abs().to(z.dtype)

    def after(
        self, x_in: torch.Tensor, x_out: torch.Tensor, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = channels_first(F.gelu(self.down(x_out)))
        m = self.mix(self.local3(z) + self.local5(z) + self.global_branch(z))
        if self.inter_stage:
            prev = torch.zeros_like(m) if state is None else state
            m = self.fuse(torch.cat([m, self.link(prev)], dim=1))
            state = m
        return x_out + F.gelu(self.up(channels_last(z + m))), state


#: The module-building PEFT methods (``sam3d.tuning.TUNER_METHODS``) → their tuner class.
#: ``spatial`` (the paper's adapter, inside ``Block3D``) and ``none`` (no PEFT module: full
#: fine-tuning or 3D additions only) need no tuner.
TUNERS: dict[str, type[BlockTuner]] = {
    "houlsby": HoulsbyTuner,
    "protuning": ProTuningTuner,
    "stadapter": STAdapterTuner,
    "medtuning": MedAdapterTuner,
}
if tuple(TUNERS) != TUNER_METHODS:  # the two registries name the same methods, in one order
    raise ImportError(f"TUNERS {tuple(TUNERS)} do not match sam3d.tuning.TUNER_METHODS "
                      f"{TUNER_METHODS}")


def build_block_tuners(
    method: str, dim: int, width: int, depth: int, grid: int, taps: Sequence[int]
) -> nn.ModuleList:
    """One :class:`BlockTuner` per encoder block for a method of :data:`TUNERS`.

    Arguments: dim (int): token width; width (int): the method's bottleneck / prompt width;
    depth (int): encoder blocks; grid (int): tokens per axis; taps: 0-based blocks ending a
    stage (Med-Tuning's inter-stage interaction sits there).
    """
    if method not in TUNERS:
        raise ValueError(f"unknown PEFT method {method!r}; known: {', '.join(TUNERS)}")
    check_positive(dim=dim, width=width, depth=depth, grid=grid)
    tuner = TUNERS[method]
    return nn.ModuleList(tuner.for_block(dim, width, grid, i in taps) for i in range(depth))
