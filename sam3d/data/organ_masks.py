"""Organ masks to paste synthetic tumours into (:mod:`sam3d.data.synth_tumours`).

* :func:`lung_mask`: the lungs of a chest CT from intensities alone: voxels below ``hu``
  (−400 HU: aerated lung, not soft tissue) that are not part of the air outside the body
  (the air components touching the in-plane border of the volume), the largest two components
  of at least ``min_ml`` mL, with the holes of each axial slice filled (vessels and nodules
  inside the lung belong to it).
* :func:`label_mask`: the voxels of a label map holding any of some values (e.g. liver = 5 in
  TotalSegmentator's ``total`` task, see :data:`TOTALSEG_LIVER`).

Arrays are (x, y, z) with z the slice axis, as read by :func:`sam3d.data.io.load_volume`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# TotalSegmentator's class number of the liver ("total" task of totalsegmentator==2.x, and
# "total_v1" of 1.x: totalsegmentator/map_to_binary.py, class_map)
TOTALSEG_LIVER = 5


def lung_mask(image: np.ndarray, spacing, hu: float = -400.0, min_ml: float = 50.0,
              keep: int = 2) -> np.ndarray:
    """X×Y×Z bool mask of the lungs of the X×Y×Z HU ``image`` (``spacing`` in mm)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (x, y, z), got shape {image.shape}")
    sp = np.asarray(spacing, float)
    if sp.shape != (3,) or np.any(~np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep must be a positive integer, got {keep!r}")
    if not min_ml > 0:
        raise ValueError(f"min_ml must be positive, got {min_ml!r}")
    air = image < hu
    comp, n = ndimage.label(air)
    if n == 0:
        raise ValueError(f"no voxel below {hu} HU: not a chest CT")
    border = np.zeros(n + 1, bool)
    for face in (comp[0], comp[-1], comp[:, 0], comp[:, -1]):
        border[np.unique(face)] = True  # outside air reaches the in-plane edge
    sizes = np.bincount(comp.ravel(), minlength=n + 1).astype(float) * float(np.prod(sp)) / 1e3
    sizes[0] = 0.0
    sizes[border] = 0.0
    order = [int(i) for i in np.argsort(sizes)[::-1][:keep] if sizes[i] >= min_ml]
    if not order:
        raise ValueError(f"no air region of ≥ {min_ml} mL inside the body: no lung found")
    lungs = np.isin(comp, order)
    for k in range(lungs.shape[2]):
        lungs[:, :, k] = ndimage.binary_fill_holes(lungs[:, :, k])
    return lungs


def label_mask(label: np.ndarray, values) -> np.ndarray:
    """X×Y×Z bool mask of the voxels of ``label`` holding any of ``values``."""
    values = [int(v) for v in np.atleast_1d(values)]
    if not values:
        raise ValueError("give at least one label value")
    mask = np.isin(np.asarray(label), values)
    if not mask.any():
        raise ValueError(f"label holds none of the values {values}")
    return mask
