"""Reading CT volumes and label maps with clear errors.

Every reader returns a :class:`Volume`: the voxel array in NIfTI axis order (i, j, k) with the
affine that maps voxel indices to RAS+ millimetres (nibabel's convention). NIfTI is read with
nibabel; NRRD, MetaImage and DICOM series (a folder) with SimpleITK, whose LPS geometry is
converted to RAS. Problems — a missing, truncated or corrupt file, a 2D or 4D array, NaN or Inf
intensities, a label that is not integer-valued, an image and a label on different grids —
raise :class:`VolumeError` naming the file and the problem, before any transform sees the data.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: LPS (ITK, DICOM) ↔ RAS (NIfTI) flip of the first two world axes.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


class VolumeError(ValueError):
    """A volume cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class EmptyLabelError(VolumeError):
    """A label map without any voxel of the target class."""


@dataclass(frozen=True)
class Volume:
    """``array``: X×Y×Z voxels (NIfTI order); ``affine``: 4×4 voxel → RAS mm; ``path``."""

    array: np.ndarray
    affine: np.ndarray
    path: str

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)


def is_supported(path: str | Path) -> bool:
    """True for a NIfTI/NRRD/MetaImage file name or a folder (a DICOM series)."""
    p = Path(path)
    name = p.name.lower()
    return p.is_dir() or name.endswith((".nii", ".nii.gz", *_SITK_SUFFIXES))


def load_volume(path: str | Path, kind: str = "image") -> Volume:
    """Read ``path`` as a 3D ``kind`` ("image": finite float32; "label": integer-valued).

    Raises :class:`VolumeError` for anything that is not a usable 3D volume.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "file not found")
    if not is_supported(p):
        raise VolumeError(p, "unsupported format (expected .nii, .nii.gz, .nrrd, .nhdr, .mha, "
                             ".mhd or a DICOM folder)")
    if p.is_dir() or not p.name.lower().endswith((".nii", ".nii.gz")):
        array, affine = _read_sitk(p)
    else:
        array, affine = _read_nifti(p)
    array = _as_3d(array, p)
    if kind == "image":
        array = np.asarray(array, dtype=np.float32)
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise VolumeError(p, f"{bad} voxel(s) are NaN or Inf")
    else:
        if not np.issubdtype(array.dtype, np.integer) and (
                not np.all(np.isfinite(array)) or np.any(array != np.round(array))):
            raise VolumeError(p, "label map has non-integer values (is this an image?)")
        lo, hi = (int(array.min(initial=0)), int(array.max(initial=0)))
        for dtype in (np.int16, np.int32):
            if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
                array = array.astype(dtype)
                break
        else:
            raise VolumeError(p, f"label values {lo}..{hi} do not fit a 32-bit integer")
    return Volume(array=array, affine=affine, path=str(p))


def check_pair(image: Volume, label: Volume, atol_mm: float = 1e-3) -> None:
    """Raise :class:`VolumeError` unless ``label`` lies on ``image``'s grid."""
    if image.shape != label.shape:
        raise VolumeError(label.path, f"label shape {label.shape} differs from the image shape "
                                      f"{image.shape} ({image.path})")
    if not np.allclose(image.affine, label.affine, atol=atol_mm):
        raise VolumeError(label.path, "label affine differs from the image affine "
                                      f"({image.path}): spacing/origin/orientation do not match")


def load_case(image_path: str | Path, label_path: str | Path, target: int | None = None,
              ) -> tuple[Volume, Volume]:
    """Image and label of one case, checked to share a grid.

    With ``target`` given, a label without that value raises :class:`EmptyLabelError`.
    """
    image = load_volume(image_path, "image")
    label = load_volume(label_path, "label")
    check_pair(image, label)
    if target is not None and not np.any(label.array == target):
        raise EmptyLabelError(label.path, f"no voxel has the target label {target}")
    return image, label


def _read_nifti(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.load(str(p))
        array = np.asanyarray(img.dataobj)
    except (EOFError, OSError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise VolumeError(p, f"unreadable NIfTI (truncated or corrupt file?): {exc}") from None
    return array, np.asarray(img.affine, dtype=np.float64)


def _read_sitk(p: Path) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        if p.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(p))
            if not files:
                raise VolumeError(p, "folder holds no DICOM series")
            reader.SetFileNames(files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(p))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
        raise VolumeError(p, f"unreadable image (truncated or corrupt file?): {first}") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(p, f"expected one value per voxel, got "
                             f"{img.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(img)  # (k, j, i) → (i, j, k)
    array = np.ascontiguousarray(array.transpose(tuple(range(array.ndim))[::-1]))
    dim = img.GetDimension()
    if dim not in (3, 4):
        return array, np.eye(4)  # rejected by _as_3d with the shape in the message
    # A 4D image is only accepted (by _as_3d) with a trailing axis of length 1: its geometry
    # is the leading 3×3 block, which must be kept rather than replaced by the identity.
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing()[:3], dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()[:3]
    return array, _LPS_TO_RAS @ lps


def _as_3d(array: np.ndarray, p: Path) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(p, f"expected a 3D volume, got a {array.ndim}D array of shape "
                             f"{tuple(array.shape)}")
    if min(array.shape) < 2:
        raise VolumeError(p, f"volume of shape {tuple(array.shape)} has an axis shorter than 2 "
                             "voxels (a single slice is not a 3D volume)")
    return array
