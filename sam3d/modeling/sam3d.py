"""The assembled promptable 3D model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .click_maps import click_maps as make_click_maps
from .image_encoder import ImageEncoder3D
from .mask_decoder import MaskDecoder3D
from .prompt_encoder import PromptEncoder3D

if TYPE_CHECKING:
    from ..config import Sam3DConfig

#: the ``"format"`` of a Sam3D's checkpoint (:mod:`sam3d.checkpoint`)
FORMAT = "sam3d/1"


def normalise_points(points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Voxel indices ``B×N×3`` ordered (d, h, w) → ``grid_sample`` coordinates ``B×N×3``.

    Voxel centres map to ``(p + 0.5)·2/size − 1``; the columns are reordered to (d, w, h),
    i.e. (x → D, y → W, z → H) for a feature map laid out ``B×C×H×W×D``, as the official code.
    """
    d, h, w = size
    scale = points.new_tensor([d, h, w])
    n = (points + 0.5) * 2 / scale - 1
    return n[..., [0, 2, 1]]


class Sam3D(nn.Module):
    """3DSAM-adapter: encoder, prompt encoders on chosen feature levels, MLA decoder.

    Arguments:
      image_encoder (ImageEncoder3D), mask_decoder (MaskDecoder3D).
      prompt_encoders (dict[int, PromptEncoder3D]): 1-based feature level → prompt encoder
        (the paper: ``{4: …}``; empty for the automatic, prompt-free variant).
      config (Sam3DConfig): the named configuration the parts were built from
        (:func:`sam3d.build.build_from_config`).

    The model kind (:class:`sam3d.modeling.kind.SegmentationModel`): ``name`` (the variant),
    ``crop``, ``promptable`` (it has a prompt encoder), ``negative_clicks``,
    ``checkpoint_format`` and :meth:`parameter_groups`. ``sam_checkpoint_sha256``: the SAM
    weights the encoder sits on (None: none loaded); ``sam_load_report``: what loading them did.

    Switch: ``grad_checkpointing`` (recompute encoder blocks in backward). Precision is the
    caller's (:func:`sam3d.engine.precision.autocast`); the logits are float32.
    ``negative_clicks`` (read-only): whether the prompt encoders carry the negative-click
    extension (``Sam3DConfig.negative_clicks``); with ``Sam3DConfig.click_maps`` the decoder
    also takes the clicks as maps (:mod:`sam3d.modeling.click_maps`), built in :meth:`decode`;
    with ``Sam3DConfig.click_refiner`` :meth:`decode` also corrects the logits at full
    resolution around the corrective clicks (:mod:`sam3d.modeling.click_refiner`; the
    embedding then keeps the input's first channel); with ``Sam3DConfig.refiner_only`` the
    corrective clicks reach the refiner alone and the decoder sees the first prompt only.

    ``forward(volume, points, labels=None)``: volume ``B×C×D×H×W`` (C = 1 or 3, D = H = W =
    crop), points ``B×N×3`` voxel indices (d, h, w) inside the volume (ignored by a prompt-free
    model), labels ``B×N`` (1 = positive, 0 = negative; only for a model with the extension,
    None = all positive; every row needs a positive click). Returns logits ``B×2×D×H×W``. It
    is ``decode(encode(volume), points, labels)``: embed a volume once, then prompt it many
    times (interactive use, refinement); ``first_prompt`` (a model with click maps or a click
    refiner): see :meth:`decode`. The model checks shapes, never values (no host
    synchronisation): a finite volume and clicks and labels that make sense are the caller's
    — :class:`sam3d.inference.predictor.Predictor` and the loaders check them.
    """

    def __init__(
        self, image_encoder: ImageEncoder3D, mask_decoder: MaskDecoder3D,
        prompt_encoders: dict[int, PromptEncoder3D], config: Sam3DConfig,
    ) -> None:
        super().__init__()
        levels = len(image_encoder.taps)
        for level in prompt_encoders:
            if not 1 <= level <= levels:
                raise ValueError(f"prompt level {level} outside 1..{levels}")
        if tuple(sorted(prompt_encoders)) != tuple(sorted(config.prompt_levels)) \
                or image_encoder.patch_embed.crop != config.crop:
            raise ValueError(f"the parts do not match configuration {config.name!r} (prompt "
                             f"levels {config.prompt_levels}, crop {config.crop})")
        self.image_encoder = image_encoder
        self.mask_decoder = mask_decoder
        self.prompt_encoders = nn.ModuleDict(
            {str(k): v for k, v in sorted(prompt_encoders.items())})
        self.config = config
        self.sam_checkpoint_sha256: str | None = None
        self.sam_load_report: Any = None  # a sam3d.build.SamLoadReport once SAM is loaded

    checkpoint_format = FORMAT

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def promptable(self) -> bool:
        return bool(self.prompt_encoders)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group: ``encoder``, ``prompt``, ``decoder``."""
        return {"encoder": [p for p in self.image_encoder.parameters() if p.requires_grad],
                "prompt": [p for p in self.prompt_encoders.parameters() if p.requires_grad],
                "decoder": [p for p in self.mask_decoder.parameters() if p.requires_grad]}

    @property
    def negative_clicks(self) -> bool:
        return any(p.label_embed is not None for p in self.prompt_encoders.values())

    @property
    def click_maps(self) -> bool:
        """Whether the decoder also takes the clicks as maps (``Sam3DConfig.click_maps``)."""
        # getattr: the literal decoder (modeling/literal.py) stands in without click_conv
        return getattr(self.mask_decoder, "click_conv", None) is not None

    @property
    def takes_first_prompt(self) -> bool:
        """Whether :meth:`decode` tells the first prompt from the corrective clicks after it
        (``first_prompt``): a model with click maps or a click refiner."""
        return self.click_maps or self._refiner is not None

    @property
    def conditional_parameters(self) -> bool:
        """Whether a training step may leave parameters without gradient: the click refiner
        acts only on corrective clicks, which a step of simulated interaction may not draw
        (DDP then looks for unused parameters,
        :meth:`sam3d.engine.distributed.DistContext.wrap`)."""
        return self._refiner is not None

    @property
    def _refiner(self) -> nn.Module | None:
        """The click refiner (``Sam3DConfig.click_refiner``), else None."""
        return getattr(self.mask_decoder, "click_refiner", None)

    @property
    def crop(self) -> int:
        return self.config.crop  # checked against the patch embedding's crop at construction

    @property
    def grad_checkpointing(self) -> bool:
        return self.image_encoder.grad_checkpointing

    @grad_checkpointing.setter
    def grad_checkpointing(self, value: bool) -> None:
        self.image_encoder.grad_checkpointing = bool(value)

    # Shape checks only: they read tensor metadata, never values, so a forward makes no host
    # synchronisation (and runs on the meta device). Values — a finite volume, clicks inside
    # it, labels 0/1 with a positive click per prompt — are checked where data enters:
    # sam3d.data.io (volumes), the Predictor and the CLI (clicks and labels).
    def check_inputs(self, volume: torch.Tensor) -> None:
        """Raise ``ValueError`` for a volume that is not ``B×C×D×H×W`` with C in (1, 3) and
        the model's crop (the clicks are checked by :meth:`check_points`)."""
        s = self.crop
        if volume.ndim != 5 or volume.shape[1] not in (1, 3) or tuple(volume.shape[2:]) != (s,) * 3:
            raise ValueError(
                f"volume must be B×C×D×H×W with C in (1, 3) and D = H = W = {s}, "
                f"got shape {tuple(volume.shape)}"
            )

    def check_points(self, points: torch.Tensor | None, shape: tuple[int, ...],
                     device: torch.device) -> None:
        """Raise ``ValueError`` for clicks that are not ``B×N×3`` for a volume of ``shape`` on
        ``device`` (whether they lie inside it is the caller's check)."""
        if not self.prompt_encoders:
            return
        if points is None:
            raise ValueError("this model is promptable: pass points of shape B×N×3")
        if points.ndim != 3 or points.shape[0] != shape[0] or points.shape[2] != 3 \
                or points.shape[1] < 1:
            raise ValueError(
                f"points must be B×N×3 (d, h, w) with B = {shape[0]} and N ≥ 1, "
                f"got shape {tuple(points.shape)}"
            )
        if points.device != device:
            raise ValueError(f"points are on {points.device}, the volume on {device}")

    def check_labels(self, labels: torch.Tensor | None, points: torch.Tensor | None) -> None:
        """Raise ``ValueError`` for click labels that are not integer ``B×N`` like ``points``
        ``B×N×3``, or labels given to a model without the negative-click extension (its
        prompt is all positive: pass None). Their values are the caller's check
        (:func:`sam3d.data.clicks.check_label_rows`)."""
        if labels is None or not self.prompt_encoders:
            return
        assert points is not None  # check_points ran first
        if not self.negative_clicks:
            raise ValueError("this model has no negative-click extension (its configuration "
                             "has negative_clicks=False): pass labels=None, every click "
                             "positive")
        if tuple(labels.shape) != tuple(points.shape[:2]):
            raise ValueError(f"labels must be B×N = {tuple(points.shape[:2])} like the points, "
                             f"got shape {tuple(labels.shape)}")
        if labels.dtype.is_floating_point or labels.dtype.is_complex:
            raise ValueError(f"labels must be integers 0 (negative) or 1 (positive), got "
                             f"dtype {labels.dtype}")

    def forward(self, volume: torch.Tensor, points: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, first_prompt: int = 0) -> torch.Tensor:
        return self.decode(self.encode(volume), points, labels, first_prompt)

    def encode(self, volume: torch.Tensor) -> Embedding:
        """Everything that does not depend on the prompt, for ``volume`` ``B×C×D×H×W``: the
        image encoder's levels, the raw-image skip, and the decoder's share of every level no
        prompt encoder touches (:meth:`MaskDecoder3D.precompute`). A click after the first
        then costs only :meth:`decode` (the prompt encoders and the prompted levels' heads)."""
        self.check_inputs(volume)
        feats = self.image_encoder(volume)
        # raw-image skip at twice the token resolution (a 2×2×2 mean for a 128³ crop)
        skip = F.adaptive_avg_pool3d(volume[:, :1].permute(0, 1, 3, 4, 2), 2 * feats[0].shape[-1])
        prompted = [int(k) - 1 for k in self.prompt_encoders]
        decoder = self.mask_decoder.precompute(feats, skip, prompted)
        if self._refiner is not None:  # the click refiner works on the input's voxels
            decoder["image"] = volume[:, :1]
        return Embedding({i: feats[i] for i in prompted}, decoder, tuple(volume.shape),
                         volume.device)

    def decode(self, embedding: Embedding, points: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, first_prompt: int = 0) -> torch.Tensor:
        """Logits ``B×2×D×H×W`` from :meth:`encode`'s ``embedding``, ``points`` ``B×N×3``
        (d, h, w) voxel indices and ``labels`` ``B×N`` (as :meth:`forward`; both ignored by a
        prompt-free model); ``decode(encode(v), p, l) == forward(v, p, l)``.

        ``first_prompt``: how many leading clicks form the first prompt of a model with click
        maps. They enter as tokens only and the maps carry the clicks after them (the
        corrections), so a model trained on the official 10 + 20 first prompt keeps its first
        click when it is given one; 0 puts every click in the maps. Ignored without maps, and
        by a model whose configuration has ``maps_first_prompt`` (every click is a map). With
        ``refiner_only`` (at least 1): the decoder sees those clicks alone and the click
        refiner the clicks after them."""
        if not isinstance(embedding, Embedding):
            raise TypeError("embedding must come from Sam3D.encode, got "
                            f"{type(embedding).__name__}")
        self.check_points(points, embedding.shape, embedding.device)
        self.check_labels(labels, points)
        if labels is not None:
            labels = labels.to(device=embedding.device, dtype=torch.long)
        local = self.config.refiner_only
        if self.click_maps or local:
            assert points is not None
            if isinstance(first_prompt, bool) or not isinstance(first_prompt, int) \
                    or not int(local) <= first_prompt <= points.shape[1]:
                raise ValueError(f"first_prompt must be an integer in {int(local)}.."
                                 f"{points.shape[1]} (the clicks given), got {first_prompt!r}")
        # refiner_only: the decoder sees the first prompt alone, the refiner the corrections
        prompt = (points, labels) if not local or points is None else \
            (points[:, :first_prompt], None if labels is None else labels[:, :first_prompt])
        levels = {}
        if self.prompt_encoders:
            assert prompt[0] is not None  # check_points refuses None for a promptable model
            grid_points = normalise_points(prompt[0].to(torch.float32), embedding.shape[2:])
            for key, prompt_encoder in self.prompt_encoders.items():
                level = int(key) - 1
                levels[level] = prompt_encoder(embedding.levels[level], grid_points, prompt[1])
        if not self.click_maps:
            logits = self.mask_decoder.decode(embedding.decoder, levels, self.crop)
        else:  # the click-map extension (Sam3DConfig.click_maps)
            assert points is not None
            # a *_maps variant: every click is a position of the one object, the first
            # prompt's too, and the clicks' maps combine by maximum (click_maps)
            positions = self.config.maps_first_prompt
            first_prompt = 0 if positions else first_prompt
            maps = make_click_maps(points[:, first_prompt:],
                                   None if labels is None else labels[:, first_prompt:],
                                   embedding.shape[2:], embedding.decoder["fixed"].shape[-1],
                                   combine="max" if positions else "sum")
            logits = self.mask_decoder.decode(embedding.decoder, levels, self.crop, maps)
        if self._refiner is not None:  # full-resolution correction (never *_maps)
            assert points is not None
            logits = self._refiner(logits.float().permute(0, 1, 4, 2, 3),
                                   embedding.decoder["image"], points[:, first_prompt:],
                                   None if labels is None else labels[:, first_prompt:])
            return logits.float()
        return logits.float().permute(0, 1, 4, 2, 3)  # float32 under any caller's autocast


@dataclass(frozen=True)
class Embedding:
    """:meth:`Sam3D.encode`'s result for one ``B×C×D×H×W`` volume (``shape``): the feature
    levels the prompt encoders refine (``{0-based level: B×dim×g×g×g}``, (H, W, D) layout)
    and the decoder's precomputed part (:meth:`MaskDecoder3D.precompute`)."""

    levels: dict[int, torch.Tensor]
    decoder: dict
    shape: tuple[int, ...]
    device: torch.device

    def nbytes(self) -> int:
        """Bytes held by the embedding's tensors."""
        tensors = [*self.levels.values(), *(v for v in self.decoder.values()
                                            if isinstance(v, torch.Tensor))]
        tensors += [t for v in self.decoder.values() if isinstance(v, list) for t in v
                    if isinstance(t, torch.Tensor)]
        # the literal reference decoder (modeling.literal) keeps every level, the prompted ones
        # too: count each tensor once
        unique = {id(t): t for t in tensors}
        return sum(t.numel() * t.element_size() for t in unique.values())
