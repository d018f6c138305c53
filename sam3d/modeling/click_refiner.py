"""The click refiner: a full-resolution correction around the corrective clicks (an extension,
not the paper; issue 13).

The decoder predicts on a grid of 2 voxels per cell (its raw-image skip is a 2×2×2 mean) and
the click maps enter there (:mod:`sam3d.modeling.click_maps`), so a corrective click moves
the mask by whole cells and mostly everywhere at once: in smoke, after the first click,
95–100 % of the extension's wrong voxels lay within 1.5 voxels of the true boundary, and a
negative click shrank the whole mask. FocalClick (Chen et al., CVPR 2022) refines a local
"focus" region around the click at full resolution; this is that idea in 3D, in our own form:
a small network sees, in the box around the corrective clicks (``margin`` voxels beyond
them), the image at full resolution, the foreground's logit over the background's and the
clicks as two Gaussian maps (positive, negative; ``sigma`` voxels), and adds its output to the
foreground's logit weighted by the clicks' Gaussians (their sum, at most 1). Far from every
corrective click, and for the first prompt, the logits are the decoder's. Its last
convolution starts at zero, so a checkpoint without the refiner gives its own logits until
the refiner is trained: with the decoder (``*_interactive_refine``), or alone on a trained
model when the corrections reach the refiner only (``*_interactive_local``,
``Sam3DConfig.refiner_only``; :mod:`sam3d.engine.refiner_fit`).

Measured in smoke (``book_interactive``, five held-out phantoms, five corrective clicks):
see the README's negative-click section.
"""

from __future__ import annotations

import torch
from torch import nn

from .click_maps import gaussian_maps
from .common import check_positive
from .conv import Conv3d

# the refiner reads the foreground's margin over the background within ±CLAMP: the logit of a
# probability in [1e-4, 1 - 1e-4], so a window's logits and a blended probability map (the
# refiner's fit, sam3d.engine.refiner_fit) read alike
CLAMP = 9.21


class ClickRefiner(nn.Module):
    """Logits ``B×2×D×H×W`` corrected around the corrective clicks.

    Arguments:
      chans (int): width of the two hidden 3×3×3 convolutions.
      margin (int): voxels of the box beyond the outermost corrective clicks.
      sigma (float): the clicks' Gaussians, in voxels (maps and weight).
    """

    def __init__(self, chans: int = 8, margin: int = 12, sigma: float = 4.0) -> None:
        super().__init__()
        check_positive(chans=chans, margin=margin)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"sigma must be a positive number of voxels, got {sigma!r}")
        self.margin, self.sigma = int(margin), float(sigma)
        last = Conv3d(chans, 1, 3, padding=1)
        nn.init.zeros_(last.weight)  # no correction until trained
        assert last.bias is not None
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(Conv3d(4, chans, 3, padding=1), nn.ReLU(),
                                 Conv3d(chans, chans, 3, padding=1), nn.ReLU(), last)

    def box(self, points: torch.Tensor, size: tuple[int, ...]) -> tuple[slice, ...]:
        """The box (d, h, w slices) around one sample's corrective clicks ``N×3`` (N ≥ 1),
        ``margin`` voxels beyond them, inside a volume of ``size`` (D, H, W)."""
        where = points.detach().to("cpu", torch.float32)
        lo = (where.amin(0).floor().long() - self.margin).clamp(min=0)
        hi = torch.minimum(where.amax(0).ceil().long() + self.margin + 1, torch.tensor(size))
        return tuple(slice(int(a), int(z)) for a, z in zip(lo, hi, strict=True))

    def forward(self, logits: torch.Tensor, image: torch.Tensor, points: torch.Tensor,
                labels: torch.Tensor | None) -> torch.Tensor:
        """``logits`` ``B×2×D×H×W``, ``image`` ``B×1×D×H×W`` (the model's input), ``points``
        ``B×N×3`` the corrective clicks (d, h, w voxel indices), ``labels`` ``B×N`` (1
        positive, 0 negative; None: all positive) → logits ``B×2×D×H×W``. No click: the
        logits as given."""
        if points.shape[1] == 0:
            return logits
        out = logits.clone()
        for b in range(logits.shape[0]):
            box = self.box(points[b], tuple(logits.shape[2:]))
            axes = [torch.arange(s.start, s.stop, dtype=torch.float32, device=points.device)
                    for s in box]  # the box's voxels along d, h, w
            maps = gaussian_maps(points[b:b + 1].to(torch.float32),
                                 None if labels is None else labels[b:b + 1], axes,
                                 self.sigma).permute(0, 1, 4, 2, 3)  # 1×2×d×h×w
            gate = maps.sum(1, keepdim=True).clamp(max=1.0)
            whole: tuple[int | slice, ...] = (b, slice(None), *box)
            fore: tuple[int | slice, ...] = (b, slice(1, 2), *box)
            window = out[whole][None]
            # the foreground's logit over the background's: what a probability map gives too
            margin = (window[:, 1:] - window[:, :1]).clamp(-CLAMP, CLAMP) / 4
            x = torch.cat([image[whole][None].to(window.dtype), margin,
                           maps.to(window.dtype)], 1)
            out[fore] = (window[:, 1:] + self.net(x) * gate)[0]
        return out
