"""The official loader's geometry (``dataset/base_dataset.py``, spec §4.2): per-dataset axis
order, target label and intensity constants, and its resampling to 1 mm.

The authors read the raw voxel array with nibabel, ignore the affine and **transpose** it by a
per-dataset ``spatial_index`` into ``D×H×W`` (KiTS21 files are stored (z, y, x): identity;
MSD/LiTS files (x, y, z): reversed), then resample with ``F.interpolate`` by a *scale factor*
(``floor(n·s)`` voxels; source coordinate ``(dst + 0.5)/s − 0.5``), trilinear, or bilinear
in-plane and then trilinear along D when the largest zoom exceeds 8× the smallest. The
official evaluation (:mod:`sam3d.evaluation.official`) and training with
``preprocessing: official`` (:mod:`sam3d.data.transforms`) both read volumes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from .specs import SPECS

TWO_STEP_RATIO = 8.0

__all__ = ["OFFICIAL", "OfficialDataset", "OfficialError", "get_dataset", "read_volume",
           "resample_image", "resize_label"]


class OfficialError(ValueError):
    """Input the official protocol cannot score (unknown dataset, empty label, bad clicks)."""


@dataclass(frozen=True)
class OfficialDataset:
    """What ``test.py`` hard-codes per dataset: axis order, target label and intensity."""

    name: str
    spatial_index: tuple[int, int, int]
    target: int
    window: tuple[float, float]
    mean: float
    std: float


def _official(name: str, spatial_index: tuple[int, int, int]) -> OfficialDataset:
    spec = SPECS[name]  # the one registry of the official constants
    return OfficialDataset(name, spatial_index, spec.target, spec.window, spec.mean, spec.std)


OFFICIAL: dict[str, OfficialDataset] = {
    "kits": _official("kits", (0, 1, 2)),  # KiTS21 files are stored (z, y, x)
    "lits": _official("lits", (2, 1, 0)),  # MSD-style files are stored (x, y, z)
    "pancreas": _official("pancreas", (2, 1, 0)),
    "colon": _official("colon", (2, 1, 0)),
}


def get_dataset(name: str) -> OfficialDataset:
    """The official constants of ``name``; :class:`OfficialError` for any other dataset."""
    try:
        return OFFICIAL[name]
    except KeyError:
        raise OfficialError(f"the official protocol knows the datasets {sorted(OFFICIAL)}, "
                            f"not {name!r} (use --protocol sam3d for other data)") from None


def read_volume(path: str | Path, spatial_index: tuple[int, int, int], what: str = "image"
                ) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(array D×H×W float32, zooms (s_D, s_H, s_W))``: ``get_fdata`` (scaling applied),
    NaN → 0, transposed by ``spatial_index``; the header zooms permuted alike, as float32
    values (the affine is ignored)."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(), dtype=np.float32)
    except Exception as exc:  # unreadable, truncated, not NIfTI
        raise OfficialError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})"
                            ) from None
    if data.ndim != 3:
        raise OfficialError(f"{path}: the {what} must be a 3-D volume, got shape {data.shape}")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float32)
    data[np.isnan(data)] = 0
    return (np.ascontiguousarray(np.transpose(data, spatial_index)),
            tuple(float(z) for z in zooms[list(spatial_index)]))


def resample_image(image: np.ndarray, zooms: tuple[float, float, float]) -> torch.Tensor:
    """``D×H×W`` → ``1×1×D'×H'×W'`` at 1 mm, as the official loader resamples."""
    x = torch.from_numpy(image)[None, None]
    s_d, s_h, s_w = zooms
    if max(zooms) / min(zooms) > TWO_STEP_RATIO:
        planes = F.interpolate(x[0].permute(1, 0, 2, 3), scale_factor=(s_h, s_w),
                               mode="bilinear", align_corners=False)  # D×1×H'×W'
        x = planes.permute(1, 0, 2, 3)[None]
        return F.interpolate(x, scale_factor=(s_d, 1.0, 1.0), mode="trilinear",
                             align_corners=False)
    return F.interpolate(x, scale_factor=(s_d, s_h, s_w), mode="trilinear", align_corners=False)


def resize_label(label: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """A ``D0×H0×W0`` binary label nearest-resized (size-based, legacy nearest) to ``shape``:
    the official *prompt grid*."""
    x = torch.from_numpy(np.asarray(label, dtype=np.float32))[None, None]
    return F.interpolate(x, size=tuple(int(n) for n in shape), mode="nearest")[0, 0].numpy() > 0.5
