"""What the trainer, predictor, evaluation and checkpoints ask of any model: one small protocol.

sam3d trains, runs and saves two kinds of network — the promptable :class:`~sam3d.modeling.Sam3D`
and the prompt-free supervised baselines (:class:`sam3d.baselines.networks.PromptFree`). Code
outside the model asks a model only these questions, never its class or its attributes:

* ``name`` — the registered name a checkpoint records (a variant of :mod:`sam3d.config`, or a
  baseline of :data:`sam3d.baselines.networks.BASELINES`);
* ``crop`` — the input edge it was built for (an int for a cube, else ``(D, H, W)``);
* ``promptable`` — whether it takes clicks (``forward(volume, points)``); a prompt-free model
  ignores them and is scored with ``--mode auto``;
* ``negative_clicks`` — whether it understands negative clicks (the issue-13 extension);
* ``checkpoint_format`` — the ``"format"`` its checkpoint is written in
  (:mod:`sam3d.checkpoint`'s registry of formats);
* ``parameter_groups()`` — its trainable parameters by group (Sam3D: ``encoder``, ``prompt``,
  ``decoder``; a baseline: one group, ``network``), each with its own learning-rate schedule
  and gradient clipping in :mod:`sam3d.engine.optim`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class SegmentationModel(Protocol):
    """A network sam3d can train, evaluate and checkpoint (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def crop(self) -> int | tuple[int, int, int]: ...

    @property
    def promptable(self) -> bool: ...

    @property
    def negative_clicks(self) -> bool: ...

    @property
    def checkpoint_format(self) -> str: ...

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]: ...


def crop_size(crop: int | tuple[int, ...]) -> tuple[int, int, int]:
    """``(D, H, W)`` of a model's ``crop`` (an int edge is a cube)."""
    if isinstance(crop, int):
        return (crop, crop, crop)
    size = tuple(int(c) for c in crop)
    if len(size) != 3:
        raise ValueError(f"a crop is an int edge or (D, H, W), got {crop!r}")
    return size
