"""Dice and normalised surface Dice (NSD) of binary 3-D masks, computed with MONAI.

Masks are numpy arrays or torch tensors of one shape ``D×H×W`` (any three spatial axes: the
metrics only need the voxel spacing in the arrays' own axis order), holding bool or 0/1 values.

Dice: ``2|P ∩ G| / (|P| + |G|)`` by :func:`monai.metrics.compute_dice` (``ignore_empty=False``).
Both masks empty → 1.0; exactly one empty → 0.0. The official code reports ``1 − DiceLoss`` with
smoothing ε = 1e-5, i.e. ``(2|P ∩ G| + ε) / (|P| + |G| + ε)``: it differs from ours by less than
``ε / (|P| + |G|)`` (≈ 1 for empty/empty, ≈ 0 for one empty mask, as here).

NSD at tolerance τ mm: :func:`monai.metrics.compute_surface_dice` with ``spacing`` (distances
in mm, exact Euclidean between surface points, stored as float32) and ``class_thresholds=[τ]``.
Two surface definitions (``surface=``):

* ``"surfel"`` (default, the official evaluation): MONAI's ``use_subvoxels=True``, which follows
  DeepMind's ``surface-distance`` package used by the official code. The surface is made of
  surface elements on the voxel-corner grid (half a voxel off the voxel centres): each corner's
  2×2×2 neighbourhood code selects a piece of surface whose area (mm², from the spacing) weights
  it. NSD = area of each surface within τ of the other / total area of both.
* ``"voxel"``: MONAI's default. Boundary voxels are the mask minus its erosion by the
  6-connected cross (outside the array counts as background); distances run between voxel
  centres and every boundary voxel counts once:
  ``(|{b ∈ ∂P : d(b, ∂G) ≤ τ}| + |{b ∈ ∂G : d(b, ∂P) ≤ τ}|) / (|∂P| + |∂G|)``.

Both masks empty → 1.0 (MONAI would give NaN); exactly one empty → 0.0. A tolerance equal to an
attainable distance can flip with float32 rounding; the official τ = 5 mm rarely is one.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_surface_dice

SURFACES = ("surfel", "voxel")
Mask = np.ndarray | torch.Tensor


def _binary(mask: object, name: str) -> torch.Tensor:
    """Validate a 3-D bool or 0/1 mask (numpy or torch) and return it as a bool tensor."""
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor (D×H×W), "
                        f"got {type(mask).__name__}")
    if mask.ndim != 3:
        raise ValueError(f"{name} must be 3-D (D×H×W), got shape {tuple(mask.shape)}")
    if mask.numel() == 0:
        raise ValueError(f"{name} has no voxel (shape {tuple(mask.shape)})")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex() or not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be binary (bool or only 0 and 1 values); threshold "
                         "probabilities and binarise label maps first")
    return mask != 0


def _pair(pred: object, gt: object) -> tuple[torch.Tensor, torch.Tensor]:
    p, g = _binary(pred, "pred"), _binary(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    return p, g.to(p.device)


def _spacing(spacing: object) -> tuple[float, float, float]:
    values = tuple(spacing) if isinstance(spacing, Sequence | np.ndarray) else ()
    if len(values) != 3 or not all(
        isinstance(s, numbers.Real) and not isinstance(s, bool | np.bool_)
        and math.isfinite(s) and s > 0 for s in values
    ):
        raise ValueError(f"spacing must be 3 finite positive numbers (mm along the mask axes), "
                         f"got {spacing!r}")
    return tuple(float(s) for s in values)  # type: ignore[return-value]


def dice(pred: Mask, gt: Mask) -> float:
    """Dice coefficient of two binary ``D×H×W`` masks (both empty → 1.0, one empty → 0.0)."""
    p, g = _pair(pred, gt)
    value = compute_dice(p[None, None], g[None, None], include_background=True,
                         ignore_empty=False)
    return float(value[0, 0])


def nsd(pred: Mask, gt: Mask, spacing: Sequence[float], tolerance_mm: float = 5.0, *,
        surface: str = "surfel") -> float:
    """Normalised surface Dice of two binary ``D×H×W`` masks at ``tolerance_mm``.

    Arguments:
      pred, gt: binary masks of one shape (numpy or torch; bool or 0/1).
      spacing (3 floats): voxel size in mm along the masks' three axes, in their order
        (anisotropic allowed).
      tolerance_mm (float): largest surface distance counted as correct (official: 5 mm).
      surface (str): "surfel" (DeepMind/official, area-weighted) or "voxel" (boundary voxels
        counted); see the module docstring.

    Returns NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    p, g = _pair(pred, gt)
    sp = _spacing(spacing)
    if isinstance(tolerance_mm, bool) or not isinstance(tolerance_mm, numbers.Real) \
            or not math.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be a finite number ≥ 0, got {tolerance_mm!r}")
    if surface not in SURFACES:
        raise ValueError(f"surface must be one of {SURFACES}, got {surface!r}")
    p_any, g_any = bool(p.any()), bool(g.any())
    if not (p_any and g_any):
        return 1.0 if p_any == g_any else 0.0
    with warnings.catch_warnings():  # MONAI 1.5–1.6 warns about its own internal call
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy",
                                category=FutureWarning)
        value = compute_surface_dice(p[None, None], g[None, None], [float(tolerance_mm)],
                                     include_background=True, spacing=list(sp),
                                     use_subvoxels=surface == "surfel")
    return float(value[0, 0])
