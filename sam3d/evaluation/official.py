"""The official test-time evaluation path of 3DSAM-adapter (``test.py``), step for step.

Released checkpoints were trained and scored on the raw voxel arrays, not on sam3d's canonical
RAS grid. This module re-derives that path from the spec (``official-implementation.md`` §4–5)
and the fixture ``shared/golden/official-eval`` (whose README states every convention), in
the official order, so a released checkpoint can be scored exactly the authors' way:

1. read image and label with nibabel (``get_fdata``, float32, NaN → 0), **transpose** both by
   the dataset's ``spatial_index`` (KiTS stored (z, y, x): identity; MSD/LiTS stored (x, y, z):
   reversed) into ``D×H×W``; the header zooms permuted alike; the affine is ignored;
2. label → ``label == target``, kept on its own grid ``D0×H0×W0`` (not resampled);
3. image → 1 mm with ``F.interpolate(scale_factor=zooms)`` (a scale factor, not a size:
   ``floor(n·s)`` voxels), trilinear, or bilinear in-plane then trilinear along D when
   ``max/min`` zoom > 8;
4. MONAI ``ScaleIntensityRange`` onto the window itself (a clip) and ``NormalizeIntensity``
   with the dataset constants; three identical channels;
5. the *prompt grid*: the label nearest-resized (size-based) to the image grid;
6. ``k`` clicks: ``k`` indices drawn with replacement among the prompt grid's foreground voxels
   in C order (``np.random.seed(seed); np.random.choice(l, k)``);
7. one 128³ ROI at the clicks' bounding-box midpoint (``(max + min) // 2``), cropped, zero
   padded where it leaves the volume; clicks relative to the padded patch;
8. the network, the un-padded softmax channel 1 pasted into a zero grid, resized (trilinear,
   size-based) to ``D0×H0×W0``, thresholded ``> 0.5``;
9. Dice = 1 − MONAI ``DiceLoss`` (float32, smoothing 1e-5) and NSD at 5 mm with the stored
   spacing in ``D0×H0×W0`` order (:func:`sam3d.evaluation.metrics.nsd`, DeepMind surfels).

Tensors: image ``1×3×D×H×W`` (the loader's output), patch ``1×3×128×128×128``, clicks
``k×3`` (d, h, w) on the image grid. The model sees ``points`` ``1×k×3`` in sam3d's (d, h, w)
order (the official code passes (d, w, h) to its own prompt encoder; same clicks).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.transforms import NormalizeIntensity, ScaleIntensityRange

from ..data.official import (
    OFFICIAL,
    OfficialDataset,
    OfficialError,
    get_dataset,
    read_volume,
    resample_image,
    resize_label,
)
from .metrics import nsd as surface_dice

ROI = 128
TOLERANCE_MM = 5.0

__all__ = ["OFFICIAL", "OfficialDataset", "OfficialError", "evaluate_case", "get_dataset",
           "load_case", "roi_of", "sample_clicks", "score"]


@dataclass
class OfficialCase:
    """One case as the official loader hands it to ``test.py``'s loop."""

    image: torch.Tensor  # 1×3×D×H×W float32, 1 mm, clipped and z-scored
    label: np.ndarray  # D0×H0×W0 bool (label == target), the original grid
    spacing: tuple[float, float, float]  # original zooms in D0×H0×W0 order (float32 values)
    prompt: np.ndarray  # D×H×W bool: the label nearest-resized to the image grid


def load_case(image: str | Path, label: str | Path, dataset: str) -> OfficialCase:
    """Steps 1–5 for one NIfTI pair of ``dataset`` (kits, lits, pancreas, colon)."""
    ds = get_dataset(dataset)
    raw, zooms = read_volume(image, ds.spatial_index, "image")
    lab, _ = read_volume(label, ds.spatial_index, "label")
    if lab.shape != raw.shape:
        raise OfficialError(f"{label}: label grid {lab.shape} differs from the image's "
                            f"{raw.shape}")
    target = lab == ds.target
    if not target.any():
        raise OfficialError(f"{label}: no voxel of the target label {ds.target} "
                            f"({dataset}): the official protocol samples its clicks there")
    x = resample_image(raw, zooms)[0]  # 1×D×H×W
    lo, hi = ds.window
    x = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True)(x)
    x = NormalizeIntensity(subtrahend=ds.mean, divisor=ds.std)(x)
    x = torch.as_tensor(x, dtype=torch.float32).repeat(3, 1, 1, 1)[None]
    grid = resize_label(target, tuple(x.shape[2:]))
    if not grid.any():
        raise OfficialError(f"{label}: the target vanishes on the 1 mm prompt grid")
    return OfficialCase(x.contiguous(), target, zooms, grid)


def sample_clicks(prompt: np.ndarray, k: int = 1, *, seed: int | None = None,
                  click_indices=None) -> tuple[np.ndarray, np.ndarray]:
    """``(sample, clicks)``: ``k`` indices among the prompt grid's foreground voxels (C order)
    and those voxels ``k×3`` (d, h, w). ``click_indices`` gives the indices (a replay, e.g. the
    fixture's); else they are drawn as ``np.random.seed(seed); np.random.choice(l, k)``
    (``seed=None``: unseeded, as the official code)."""
    fg = np.argwhere(prompt)
    n = len(fg)
    if click_indices is not None:
        sample = np.asarray(click_indices)
        if sample.ndim != 1 or sample.size < 1 or not np.issubdtype(sample.dtype, np.integer):
            raise OfficialError(f"click_indices must be a non-empty list of integers, got "
                                f"{click_indices!r}")
        if sample.min() < 0 or sample.max() >= n:
            raise OfficialError(f"click_indices must lie in [0, {n}) (the foreground voxels of "
                                f"the prompt grid), got {sample.tolist()}")
    else:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OfficialError(f"k must be a positive integer, got {k!r}")
        sample = np.random.RandomState(seed).choice(np.arange(n), k, replace=True)
    return sample.astype(np.int64), fg[sample]


def roi_of(clicks: np.ndarray, shape: tuple[int, int, int], size: int = ROI) -> dict:
    """The 128³ box of the clicks (step 7): unclamped ``start``/``stop`` per axis (d, h, w),
    the clamped ``slices`` and ``pad`` = (d_l, d_r, h_l, h_r, w_l, w_r)."""
    clicks = np.asarray(clicks, dtype=np.int64)
    if clicks.ndim != 2 or clicks.shape[1] != 3 or len(clicks) == 0:
        raise OfficialError(f"clicks must be k×3 (d, h, w), got shape {clicks.shape}")
    if (clicks < 0).any() or (clicks >= np.asarray(shape)).any():
        raise OfficialError(f"clicks {clicks.tolist()} lie outside the volume {tuple(shape)}")
    centre = (clicks.max(0) + clicks.min(0)) // 2
    start = centre - size // 2
    stop = start + size
    pad = []
    for s, e, n in zip(start, stop, shape, strict=True):
        pad += [max(0, -int(s)), max(0, int(e) - int(n))]
    slices = [(max(0, int(s)), min(int(e), int(n)))
              for s, e, n in zip(start, stop, shape, strict=True)]
    return {"start": start.tolist(), "stop": stop.tolist(), "slices": slices, "pad": pad}


def dice_official(mask: np.ndarray, label: np.ndarray) -> float:
    """``1 − DiceLoss`` exactly as ``test.py`` calls it (one channel, so MONAI ignores
    ``include_background`` and ``to_onehot_y`` and warns), in float32."""
    loss_fn = DiceLoss(include_background=False, softmax=False, to_onehot_y=True,
                       reduction="none")
    pred = torch.from_numpy(mask)[None, None]
    gt = torch.from_numpy(label.astype(np.float32))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = loss_fn(pred, gt)
    return float((1 - loss).reshape(-1)[0])


@torch.no_grad()
def evaluate_case(model: torch.nn.Module, image: str | Path, label: str | Path, dataset: str,
                  *, k: int = 1, seed: int | None = None, click_indices=None,
                  device: str | torch.device = "cpu", case: OfficialCase | None = None) -> dict:
    """Score one NIfTI pair the official way; returns ``dice``, ``nsd``, ``mask`` (``D0×H0×W0``
    bool, the label grid after the ``spatial_index`` transpose), ``probability`` (the ROI's
    lesion probability, un-padded, float32), ``roi`` (:func:`roi_of`), ``sample`` and ``clicks``
    (``k×3`` (d, h, w) on the 1 mm grid), ``points`` (``k×3`` relative to the padded patch),
    ``image_shape`` and ``spacing``. ``case``: an already loaded :func:`load_case` result.
    The ROI edge is the model's crop (``vit_b``, like the official code: 128)."""
    case = case or load_case(image, label, dataset)
    sample, clicks = sample_clicks(case.prompt, k, seed=seed, click_indices=click_indices)
    shape = tuple(int(n) for n in case.image.shape[2:])
    size = int(model.crop)  # vit_b: the official 128
    roi = roi_of(clicks, shape, size)
    (d0, d1), (h0, h1), (w0, w1) = roi["slices"]
    dl, dr, hl, hr, wl, wr = roi["pad"]
    patch = F.pad(case.image[:, :, d0:d1, h0:h1, w0:w1], (wl, wr, hl, hr, dl, dr))
    points = clicks - np.asarray(roi["start"])
    logits = model(patch.to(device), torch.as_tensor(points, dtype=torch.float32)[None]
                   .to(device)).float().cpu()
    logits = logits[:, :, dl:size - dr, hl:size - hr, wl:size - wr]
    prob = torch.softmax(logits, dim=1)[0, 1].numpy()  # d×h×w
    return {**score(prob, roi, case), "probability": prob, "roi": roi,
            "sample": sample.tolist(), "clicks": clicks, "points": points,
            "image_shape": shape, "spacing": case.spacing}


def score(probability: np.ndarray, roi: dict, case: OfficialCase) -> dict:
    """Step 8's paste and resize and step 9's scores, from the ROI's lesion probability
    (``d×h×w``, un-padded): ``{"mask", "dice", "nsd"}`` on the label grid."""
    shape = case.prompt.shape
    (d0, d1), (h0, h1), (w0, w1) = roi["slices"]
    prob = torch.as_tensor(np.asarray(probability, dtype=np.float32))
    if tuple(prob.shape) != (d1 - d0, h1 - h0, w1 - w0):
        raise OfficialError(f"probability of shape {tuple(prob.shape)} does not fit the ROI "
                            f"{roi['slices']}")
    grid = torch.zeros((1, *shape), dtype=torch.float32)
    grid[0, d0:d1, h0:h1, w0:w1] += prob
    final = F.interpolate(grid[:, None], size=case.label.shape, mode="trilinear")[0, 0]
    mask = (final > 0.5).numpy()
    return {"mask": mask, "dice": dice_official(mask, case.label),
            "nsd": surface_dice(mask, case.label, case.spacing, TOLERANCE_MM)}
