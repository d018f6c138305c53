"""The user's image grid ↔ the model's grid, and masks written in the input's geometry.

**Click convention (user-facing).** A user click ``(d, h, w)`` on an input file is
``(slice, row, column)``: it is the file's voxel ``(i, j, k) = (w, h, d)`` of the ``X×Y×Z``
array that :func:`sam3d.data.io.load_volume` returns — the index order of a numpy array from
SimpleITK (``GetArrayFromImage``), ``D×H×W = Z×Y×X`` (:func:`user_shape`). It is mapped to
world coordinates (RAS mm) with the input's affine, then into the model grid with the inverse
of the model affine, rounded to the nearest voxel (halves up) and returned as model
``(d, h, w) = (z, y, x)``.

**Model grid.** The test chain (:func:`sam3d.data.transforms.build_transforms`, "test") orients
to RAS, resamples (``Spacingd``) and then reorders the axes with ``Transposed`` to
``D×H×W = (z, y, x)``. MONAI's ``Transpose`` does not update the affine (its docstring says so;
the tests check it equals the affine of the chain run without ``Transposed``), so the
transformed image's ``MetaTensor.affine`` (:func:`model_affine`) is the voxel → RAS affine of
the resampled RAS ``X×Y×Z`` array, exactly what :func:`user_to_model` needs.

**Writing masks.** :func:`save_mask` writes a uint8 ``X×Y×Z`` mask on the reference image's
grid: NIfTI with nibabel (reference affine as sform and, when it has no shear, qform; code 1),
NRRD/MetaImage with SimpleITK (geometry converted back from RAS to LPS). The file is written in
a temporary folder beside the target and moved into place with ``os.replace``, so a failure
never leaves a partial file and never touches an existing one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from sam3d.data.clicks import check_clicks
from sam3d.data.io import LPS_TO_RAS, NIFTI_SUFFIXES, SUFFIXES, Volume, save_nifti

#: How far (voxels) a mapped click may fall outside the target grid and still be clipped in.
_CLIP_SLACK = 1.0


def _affine(affine: object, name: str) -> np.ndarray:
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine,
                   dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a finite 4×4 matrix, got shape {a.shape}")
    if not np.allclose(a[3], (0.0, 0.0, 0.0, 1.0)) or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError(f"{name} must be an invertible affine with last row (0, 0, 0, 1)")
    return a


def _grid_shape(shape: object, name: str) -> tuple[int, int, int]:
    values = tuple(shape) if isinstance(shape, tuple | list | torch.Size) else ()
    if len(values) != 3 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0 for s in values
    ):
        raise ValueError(f"{name} must be 3 positive integers (D, H, W), got {shape!r}")
    return tuple(int(s) for s in values)  # type: ignore[return-value]


def user_shape(volume: Volume) -> tuple[int, int, int]:
    """The user's ``(D, H, W) = (Z, Y, X)`` shape of an ``X×Y×Z`` :class:`Volume`."""
    x, y, z = volume.shape
    return z, y, x


def model_affine(image: torch.Tensor) -> np.ndarray:
    """Voxel → RAS affine (4×4 float64) of the model grid from a transformed ``C×D×H×W`` image.

    ``image`` is the MetaTensor the test chain returns; its ``.affine`` maps the (x, y, z)
    indices of the grid before ``Transposed`` (see the module docstring).
    """
    affine = getattr(image, "affine", None)
    if affine is None or getattr(image, "ndim", 0) != 4:
        raise ValueError("image must be the C×D×H×W MetaTensor of the test chain (it carries "
                         "the affine); got " + type(image).__name__)
    return _affine(affine, "image.affine")


def _map(points_dhw: np.ndarray, src: np.ndarray, dst: np.ndarray,
         dst_shape: tuple[int, int, int]) -> np.ndarray:
    """(d, h, w) voxels of grid ``src`` → nearest (d, h, w) voxels of grid ``dst``."""
    xyz = points_dhw[:, ::-1].astype(np.float64)
    world = xyz @ src[:3, :3].T + src[:3, 3]
    dst_xyz = np.linalg.solve(dst[:3, :3], (world - dst[:3, 3]).T).T
    dhw = dst_xyz[:, ::-1]
    upper = np.asarray(dst_shape, dtype=np.float64) - 1
    far = np.flatnonzero(((dhw < -_CLIP_SLACK) | (dhw > upper + _CLIP_SLACK)).any(axis=1))
    if far.size:
        i = int(far[0])
        raise ValueError(
            f"click {i} {tuple(int(v) for v in points_dhw[i])} maps to "
            f"{tuple(round(float(v), 2) for v in dhw[i])}, outside the target grid of shape "
            f"{dst_shape} (D×H×W): the two affines do not describe the same image"
        )
    return np.clip(np.floor(dhw + 0.5), 0, upper).astype(np.int64).reshape(-1, 3)


def user_to_model(clicks: object, input_affine: object, model_affine: object,
                  model_shape: tuple[int, int, int],
                  input_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """User clicks on the input file → model-grid voxels.

    Arguments:
      clicks (k×3): integer (d, h, w) = (slice, row, column) of the input file, i.e. its
        ``X×Y×Z`` voxel (w, h, d).
      input_affine (4×4): voxel → RAS of the input (``Volume.affine``).
      model_affine (4×4): voxel → RAS of the model grid before ``Transposed``
        (:func:`model_affine`).
      model_shape (D, H, W): spatial shape of the transformed image.
      input_shape (D, H, W), optional: the input's user shape (:func:`user_shape`); when given,
        clicks outside it raise :class:`sam3d.data.clicks.ClickError`.

    Returns k×3 int64 model (d, h, w) = (z, y, x), rounded and clipped into the grid. A click
    landing more than one voxel outside the grid raises ``ValueError`` (mismatched affines).
    """
    src, dst = _affine(input_affine, "input_affine"), _affine(model_affine, "model_affine")
    dims = _grid_shape(model_shape, "model_shape")
    bound = (2**62,) * 3 if input_shape is None else _grid_shape(input_shape, "input_shape")
    return _map(check_clicks(clicks, bound), src, dst, dims)


def model_to_user(clicks: object, model_affine: object, input_affine: object,
                  input_shape: tuple[int, int, int]) -> np.ndarray:
    """Model-grid (d, h, w) voxels → user (d, h, w) clicks of the input file (for reporting).

    The inverse of :func:`user_to_model` up to rounding; ``input_shape`` is the input's user
    shape (D, H, W) = (Z, Y, X). Returns k×3 int64, rounded and clipped into the input grid.
    """
    src, dst = _affine(model_affine, "model_affine"), _affine(input_affine, "input_affine")
    dims = _grid_shape(input_shape, "input_shape")
    return _map(check_clicks(clicks, (2**62,) * 3), src, dst, dims)


def _as_uint8(mask: object) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array or torch tensor (X×Y×Z), "
                        f"got {type(mask).__name__}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise TypeError(f"mask must be bool or integer (threshold probabilities first), "
                        f"got {mask.dtype}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values {mask.min()}..{mask.max()} do not fit uint8 (0..255)")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def _write_sitk(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    img.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    sitk.WriteImage(img, str(path), useCompression=True)


def save_mask(mask: object, reference: Volume, path: str | Path) -> Path:
    """Write an ``X×Y×Z`` mask (bool/integer, 0..255) on ``reference``'s grid as uint8.

    ``path`` ends in .nii, .nii.gz (nibabel) or .nrrd, .nhdr, .mha, .mhd (SimpleITK). The mask
    must have exactly ``reference.shape``; the written file carries the reference's affine, so
    :func:`sam3d.data.io.load_volume` reads back the same shape and affine. Atomic: written in
    a temporary folder beside ``path`` and moved into place (header last). Returns ``path``.
    """
    if not isinstance(reference, Volume):
        raise TypeError(f"reference must be a sam3d.data.io.Volume, got {type(reference)}")
    out = Path(path)
    name = out.name.lower()
    if not name.endswith(SUFFIXES):
        raise ValueError(f"{out}: unknown mask file extension (expected one of "
                         f"{', '.join(SUFFIXES)})")
    array = _as_uint8(mask)
    if array.shape != reference.shape:
        raise ValueError(f"mask shape {array.shape} differs from the reference image shape "
                         f"{reference.shape} ({reference.path})")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder, not a mask file name")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: output folder does not exist")
    affine = _affine(reference.affine, "reference.affine")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if name.endswith(NIFTI_SUFFIXES):
            save_nifti(tmp / out.name, array, affine)
        else:
            _write_sitk(array, affine, tmp / out.name)
        header = tmp / out.name
        for part in sorted(tmp.iterdir()):  # data files of .nhdr/.mhd first, the header last
            if part != header:
                os.replace(part, out.parent / part.name)
        os.replace(header, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
