"""Prompt-free supervised 3D baselines of Table 1, built from MONAI networks.

``BASELINES`` maps a name to a :class:`Baseline`:

* ``swin_unetr`` — MONAI ``SwinUNETR`` with ``feature_size=48`` (the paper's Swin-UNETR row;
  the official baseline code builds the same network, with gradient checkpointing and the
  self-supervised Swin-ViT weights, which are not loaded here). Sizes must be multiples of
  32, and in training one of them ≥ 64 (instance norm needs > 1 voxel at the 1/32 level).
* ``unetr`` — MONAI ``UNETR`` (ViT-B encoder, 16³ patches, ``feature_size=16``, perceptron
  patch embedding, residual blocks: the official code's settings). Table 1 has UNETR++, not
  UNETR; this is the UNETR family's MONAI reference, offered for comparison. MONAI builds a
  cross-attention LayerNorm in each of the 12 blocks that UNETR never uses (18,432 parameters
  without gradients: DDP needs ``find_unused_parameters``).
* ``dynunet_smoke`` — a tiny MONAI ``DynUNet`` for CPU smoke runs of the baseline plumbing.
  It is **not** a paper baseline and its numbers must never be reported as nnU-Net's (the
  nnU-Net row is produced by nnU-Net itself: :mod:`sam3d.baselines.nnunet`).

Crops are ``(D, H, W)`` with D the slice axis, as everywhere in sam3d; the paper baselines use
the official ``(64, 160, 160)``. Note that the official baseline code rescales intensities to
[0, 1] where the method z-scores HU (official-implementation.md §8 item 9); preprocessing is
the data pipeline's business, not this module's.

:class:`PromptFree` makes any of them callable like :class:`~sam3d.modeling.Sam3D`:
``model(volume, points)`` with the points ignored. :meth:`Baseline.engine_model` builds one for
sam3d's trainer and predictor, which sample and slide *cubic* windows: ``cube`` is the edge
(the paper baselines: 128³, the crop of our own model, where the official baseline code uses
64×160×160; the smoke DynUNet: 64³). ``sam3d train --set model=<name>`` trains it with the
data pipeline, loss and optimiser of our model (:mod:`sam3d.engine`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.nets import UNETR, DynUNet, SwinUNETR
from torch import nn

#: the ``"format"`` of a baseline's checkpoint (written and read by :mod:`.checkpoints`)
BASELINE_FORMAT = "sam3d-baseline/1"

Crop = tuple[int, int, int]
#: parameter-name fragments of modules MONAI builds but the network never calls
UNUSED_PARAMETERS = ("norm_cross_attn",)
PAPER_CROP: Crop = (64, 160, 160)
SMOKE_CROP: Crop = (64, 64, 64)


def _crop(crop) -> Crop:
    try:
        out = tuple(int(c) for c in crop)
    except TypeError:
        raise ValueError(f"crop must be three positive sizes (D, H, W), got {crop!r}") from None
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"crop must be three positive sizes (D, H, W), got {crop!r}")
    return out


@dataclass(frozen=True)
class Baseline:
    """A named prompt-free 3D segmentation network.

    ``crop``: default training crop (D, H, W); ``divisor``: every input size must be a
    multiple of it; ``fixed_size``: the network only accepts its build crop (learned
    positional embeddings); ``paper``/``paper_params_m``: the Table 1 row and its tuned
    parameter count in millions (None when the network is not in Table 1); ``cube``: the
    default edge of the cubic crop sam3d's engine trains it on (:meth:`engine_model`).
    """

    name: str
    description: str
    crop: Crop
    factory: Callable[[Crop, int, int], nn.Module]
    divisor: int = 1
    fixed_size: bool = False
    in_channels: int = 1
    out_channels: int = 2
    paper: str | None = None
    paper_params_m: float | None = None
    cube: int = 128

    def __post_init__(self):
        object.__setattr__(self, "crop", _crop(self.crop))
        self.check_size((self.cube,) * 3)
        if self.divisor < 1:
            raise ValueError(f"divisor must be ≥ 1, got {self.divisor}")
        if self.in_channels < 1 or self.out_channels < 2:
            raise ValueError("need ≥ 1 input channel and ≥ 2 output classes")
        self.check_size(self.crop)

    def check_size(self, size) -> Crop:
        """``size`` as a crop, or ValueError when this network cannot take it."""
        size = _crop(size)
        if any(s % self.divisor for s in size):
            raise ValueError(f"{self.name}: every size must be a multiple of {self.divisor}, "
                             f"got {size}")
        return size

    def build(self, crop=None) -> nn.Module:
        """The bare MONAI network (``B×in×D×H×W → B×out×D×H×W``), randomly initialised."""
        return self.factory(self.check_size(self.crop if crop is None else crop),
                            self.in_channels, self.out_channels)

    def model(self, crop=None) -> PromptFree:
        """The network wrapped in :class:`PromptFree`."""
        crop = self.check_size(self.crop if crop is None else crop)
        return PromptFree(self.build(crop), name=self.name, crop=crop,
                          in_channels=self.in_channels, divisor=self.divisor,
                          fixed_size=self.fixed_size)

    def engine_model(self, cube: int | None = None) -> PromptFree:
        """:meth:`model` on a ``cube``³ crop (default :attr:`cube`) for sam3d's trainer and
        predictor (``.crop`` is then the int edge, as :class:`~sam3d.modeling.Sam3D`'s).

        Parameters the network builds but never uses (MONAI UNETR's cross-attention norms)
        are frozen, so every trainable parameter gets a gradient (plain DDP works).
        """
        cube = self.cube if cube is None else cube
        if isinstance(cube, bool) or not isinstance(cube, int) or cube < 1:
            raise ValueError(f"{self.name}: cube must be a positive integer, got {cube!r}")
        model = self.model((cube,) * 3)
        for name, param in model.named_parameters():
            if any(unused in name for unused in UNUSED_PARAMETERS):
                param.requires_grad_(False)
        return model


class PromptFree(nn.Module):
    """Wraps a prompt-free segmentation network so it is called like our model.

    ``forward(volume B×C×D×H×W, points=None) -> logits B×out×D×H×W``: the points (``B×N×3``
    or anything else) are ignored; of the C input channels (3 in our pipeline, the CT
    repeated) the first ``in_channels`` are used. ``.name`` and ``.size`` (D, H, W) describe
    it; ``.crop`` is the int edge when ``size`` is a cube (the convention of
    :class:`~sam3d.modeling.Sam3D`, which the trainer and predictor rely on), else ``size``.
    Precision is the caller's (:func:`sam3d.engine.precision.autocast`); the logits are float32.
    Its model kind (:class:`sam3d.modeling.kind.SegmentationModel`): not promptable, no
    negative clicks, the baseline checkpoint format, one parameter group ``network``.
    """

    promptable = False
    negative_clicks = False
    checkpoint_format = BASELINE_FORMAT

    def __init__(self, net: nn.Module, *, name: str, crop, in_channels: int = 1,
                 divisor: int = 1, fixed_size: bool = False):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not name:
            raise ValueError("name must be non-empty")
        if in_channels < 1 or divisor < 1:
            raise ValueError("in_channels and divisor must be ≥ 1")
        self.net = net
        self.name = name
        self.size = _crop(crop)
        self.in_channels = in_channels
        self.divisor = divisor
        self.fixed_size = fixed_size

    @property
    def crop(self) -> int | Crop:
        return self.size[0] if len(set(self.size)) == 1 else self.size

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: one group, ``network``."""
        return {"network": [p for p in self.parameters() if p.requires_grad]}

    def forward(self, volume: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        if volume.ndim != 5:
            raise ValueError(f"{self.name}: volume must be B×C×D×H×W, got {tuple(volume.shape)}")
        if volume.shape[1] < self.in_channels:
            raise ValueError(f"{self.name}: needs {self.in_channels} channel(s), got "
                             f"{volume.shape[1]}")
        size = tuple(volume.shape[2:])
        if self.fixed_size and size != self.size:
            raise ValueError(f"{self.name} was built for {self.size} and takes only that size, "
                             f"got {size}")
        if any(s % self.divisor for s in size):
            raise ValueError(f"{self.name}: sizes must be multiples of {self.divisor}, got {size}")
        return self.net(volume[:, : self.in_channels]).float()  # float32 under any autocast


def _swin_unetr(crop: Crop, cin: int, cout: int) -> nn.Module:
    return SwinUNETR(in_channels=cin, out_channels=cout, feature_size=48, spatial_dims=3)


def _unetr(crop: Crop, cin: int, cout: int) -> nn.Module:
    return UNETR(in_channels=cin, out_channels=cout, img_size=crop, feature_size=16,
                 hidden_size=768, mlp_dim=3072, num_heads=12, proj_type="perceptron",
                 norm_name="instance", res_block=True, dropout_rate=0.0)


def _dynunet_smoke(crop: Crop, cin: int, cout: int) -> nn.Module:
    return DynUNet(spatial_dims=3, in_channels=cin, out_channels=cout,
                   kernel_size=[3, 3, 3, 3], strides=[1, 2, 2, 2],
                   upsample_kernel_size=[2, 2, 2], filters=[8, 16, 32, 64],
                   norm_name="instance", deep_supervision=False, res_block=False)


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("swin_unetr",
                 "Swin-UNETR (MONAI SwinUNETR, feature_size 48): the paper's Swin-UNETR row, "
                 "randomly initialised (the official code starts from self-supervised "
                 "Swin-ViT weights)",
                 PAPER_CROP, _swin_unetr, divisor=32, paper="Swin-UNETR", paper_params_m=62.19),
        Baseline("unetr",
                 "UNETR (MONAI UNETR, ViT-B, 16³ patches): the official code's UNETR settings; "
                 "not a Table 1 row (Table 1 has UNETR++)",
                 PAPER_CROP, _unetr, divisor=16, fixed_size=True),
        Baseline("dynunet_smoke",
                 "SMOKE STAND-IN, NOT A PAPER BASELINE: a tiny MONAI DynUNet (8–64 filters) "
                 "for CPU tests of the baseline plumbing; nnU-Net's row comes from nnU-Net "
                 "itself (sam3d.baselines.nnunet)",
                 SMOKE_CROP, _dynunet_smoke, divisor=8, cube=64),
    )
}


def get_baseline(name: str) -> Baseline:
    """The registry entry ``name``."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return BASELINES[name]


def build_baseline(name: str, crop=None) -> PromptFree:
    """``BASELINES[name]`` built for ``crop`` (default: its own) and wrapped in PromptFree."""
    return get_baseline(name).model(crop)


@functools.cache
def count_parameters(name: str, trainable_only: bool = True) -> int:
    """Parameters of ``BASELINES[name]`` at its default crop (built on the CPU, once).

    The crop matters only for UNETR (its positional embedding has one entry per patch).
    """
    net = get_baseline(name).build()
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
