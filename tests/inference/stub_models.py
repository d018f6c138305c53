"""A stand-in for the network whose output is known exactly: a cube around every click."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class CubeModel(nn.Module):
    """Logits ``B×2×c×c×c``: foreground (+10 vs −10) inside a cube of half-width ``half``
    around each click, background elsewhere. Records the clicks it was given. A model kind
    (:class:`sam3d.modeling.kind.SegmentationModel`) that is never trained or saved."""

    name = "cube_stub"
    promptable = True
    negative_clicks = False
    checkpoint_format = "none (a test stand-in)"

    def __init__(self, crop: int = 16, half: int = 2):
        super().__init__()
        self._crop, self.half = crop, half
        self.calls: list[torch.Tensor] = []

    @property
    def crop(self) -> int:
        return self._crop

    def forward(self, volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        b, c = volume.shape[0], self._crop
        assert volume.shape[2:] == (c, c, c)
        self.calls.append(points.detach().clone())
        fg = torch.zeros(b, c, c, c)
        for i in range(b):
            for d, h, w in points[i].long().tolist():
                assert min(d, h, w) >= 0 and max(d, h, w) < c, "click outside the crop"
                fg[i, max(d - self.half, 0):d + self.half + 1,
                   max(h - self.half, 0):h + self.half + 1,
                   max(w - self.half, 0):w + self.half + 1] = 1
        return torch.stack([-10 * fg + 0 * (1 - fg), 10 * fg - 10 * (1 - fg)], 1)


class FloodModel(CubeModel):
    """Foreground = the bright (> ``level``) connected regions of the input holding a click:
    an oracle that segments exactly the clicked lesion of a synthetic image."""

    def __init__(self, crop: int = 16, level: float = 50.0):
        super().__init__(crop)
        self.level = level

    def forward(self, volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        from scipy import ndimage

        self.calls.append(points.detach().clone())
        fg = torch.zeros(volume.shape[0], *volume.shape[2:])
        for i in range(volume.shape[0]):
            comps, _ = ndimage.label((volume[i, 0] > self.level).numpy())
            ids = {int(comps[tuple(p)]) for p in points[i].long().tolist()} - {0}
            fg[i] = torch.from_numpy(np.isin(comps, list(ids)))
        return torch.stack([-10 * fg, 10 * fg - 10 * (1 - fg)], 1)


class ThresholdModel(CubeModel):
    """A prompt-free stand-in: foreground wherever the input is brighter than ``level``."""

    promptable = False

    def __init__(self, crop: int = 16, level: float = 50.0):
        super().__init__(crop)
        self.level = level

    def forward(self, volume: torch.Tensor, points: torch.Tensor | None = None) -> torch.Tensor:
        assert points is None, "a prompt-free model gets no points"
        fg = (volume[:, 0] > self.level).float()
        return torch.stack([-10 * fg, 10 * fg - 10 * (1 - fg)], 1)


class LabelledCubeModel(CubeModel):
    """The negative-click extension's stand-in: foreground = the cubes of half-width ``half``
    around the positive clicks, minus the cubes of half-width ``erase`` around the negative
    ones (``labels`` ``B×N``, 0 = negative; None = all positive)."""

    negative_clicks = True

    def __init__(self, crop: int = 16, half: int = 2, erase: int = 1):
        super().__init__(crop, half)
        self.erase = erase

    def forward(self, volume: torch.Tensor, points: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        b, c = volume.shape[0], self._crop
        self.calls.append(points.detach().clone())
        labels = torch.ones(points.shape[:2], dtype=torch.long) if labels is None else labels
        fg = torch.zeros(b, c, c, c)
        for i in range(b):
            for sign in (1, 0):  # positives first, then the negatives erase
                half = self.half if sign else self.erase
                for (d, h, w), lab in zip(points[i].long().tolist(), labels[i].tolist(),
                                          strict=True):
                    if lab == sign:
                        fg[i, max(d - half, 0):d + half + 1, max(h - half, 0):h + half + 1,
                           max(w - half, 0):w + half + 1] = sign
        return torch.stack([-10 * fg, 10 * fg - 10 * (1 - fg)], 1)
