"""Reading CT volumes and label maps with clear errors.

Every reader returns a :class:`Volume`: the voxel array in NIfTI axis order (i, j, k) with the
affine that maps voxel indices to RAS+ millimetres (nibabel's convention). NIfTI is read with
nibabel; NRRD, MetaImage and DICOM series (a folder) with SimpleITK, whose LPS geometry is
converted to RAS. Problems — a missing, truncated or corrupt file, a 2D or 4D array, NaN or Inf
intensities, a label that is not integer-valued, an image and a label on different grids —
raise :class:`VolumeError` naming the file and the problem, before any transform sees the data.

The checks themselves are :func:`volume_problems` (one array) and :func:`grid_problems` (an
image and its label), which return every problem found: :func:`load_volume` and
:func:`check_pair` raise the first, ``sam3d.data.prepare`` reports them all, so a case that
preparation accepts is one that training can load.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: LPS (ITK, DICOM) ↔ RAS (NIfTI) flip of the first two world axes (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: the volume file names read and written (NIfTI first: the longest match wins)
SUFFIXES = (*NIFTI_SUFFIXES, *SITK_SUFFIXES)
#: largest difference, in mm, between the affines of an image and its label on "one grid"
AFFINE_TOL_MM = 1e-3


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
    return p.is_dir() or name.endswith(SUFFIXES)


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
    problems = volume_problems(array, kind)
    if problems:
        raise VolumeError(p, problems[0])
    array = squeeze_to_3d(array)
    if kind == "image":
        array = np.asarray(array, dtype=np.float32)
    else:
        array = array.astype(np.int16 if _fits(array, np.int16) else np.int32)
    return Volume(array=array, affine=affine, path=str(p))


def squeeze_to_3d(array: np.ndarray) -> np.ndarray:
    """``array`` without its trailing axes of length 1 beyond the third (a NIfTI ``X×Y×Z×1``)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _fits(array: np.ndarray, dtype: type[np.integer]) -> bool:
    lo, hi = int(array.min(initial=0)), int(array.max(initial=0))
    return bool(np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max)


def volume_problems(array: np.ndarray, kind: str = "image") -> list[str]:
    """Every reason ``array`` (voxels as read, scaling applied) is not a usable 3D ``kind``
    volume; ``[]`` when there is none.

    A volume has three axes (further axes only of length 1, dropped by
    :func:`squeeze_to_3d`), each at least 2 voxels long. An ``"image"`` is finite once cast
    to float32; a ``"label"`` holds integer values that fit a 32-bit integer.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    problems = []
    vol = squeeze_to_3d(array)
    if vol.ndim != 3:
        problems.append(f"expected a 3D volume: the array of shape {tuple(array.shape)} is "
                        f"{array.ndim}D (axes beyond the third are allowed only with length 1)")
    elif min(vol.shape) < 2:
        problems.append(f"volume of shape {tuple(vol.shape)} has an axis shorter than 2 voxels "
                        "(a single slice is not a 3D volume)")
    if np.issubdtype(vol.dtype, np.integer):
        if kind == "label" and not _fits(vol, np.int32):
            problems.append(f"label values {int(vol.min())}..{int(vol.max())} do not fit a "
                            "32-bit integer")
        return problems
    if kind == "image":
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 counts as Inf
            as32 = np.asarray(vol, dtype=np.float32)
        bad = int(np.count_nonzero(~np.isfinite(as32)))
        if bad:
            nan = int(np.count_nonzero(np.isnan(as32)))
            problems.append(f"{bad} voxel(s) are NaN or Inf ({nan} NaN, {bad - nan} Inf)")
        return problems
    off = ~np.isfinite(vol) | (vol != np.round(vol))
    if off.any():
        problems.append(f"label map is not integer-valued: it has non-integer values such as "
                        f"{vol[off].flat[0]!r} (is this an image?)")
    elif not _fits(vol, np.int32):
        problems.append(f"label values {int(vol.min())}..{int(vol.max())} do not fit a 32-bit "
                        "integer")
    return problems


def grid_problems(image_shape: tuple[int, ...], image_affine: np.ndarray,
                  label_shape: tuple[int, ...], label_affine: np.ndarray, image_path: str,
                  atol_mm: float = AFFINE_TOL_MM) -> list[str]:
    """Every reason a label (shape, affine) does not lie on its image's grid; ``[]`` when it
    does. Affines match when no entry differs by more than ``atol_mm``."""
    if tuple(image_shape) != tuple(label_shape):
        return [f"label shape {tuple(label_shape)} differs from the image shape "
                f"{tuple(image_shape)} ({image_path})"]
    diff = float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max())
    if not diff <= atol_mm:  # also catches NaN
        return [f"label affine differs from the image affine ({image_path}) by up to "
                f"{diff:.4g} mm (tolerance {atol_mm} mm): spacing/origin/orientation do not "
                "match"]
    return []


def check_pair(image: Volume, label: Volume, atol_mm: float = AFFINE_TOL_MM) -> None:
    """Raise :class:`VolumeError` unless ``label`` lies on ``image``'s grid
    (:func:`grid_problems`)."""
    problems = grid_problems(image.shape, image.affine, label.shape, label.affine, image.path,
                             atol_mm)
    if problems:
        raise VolumeError(label.path, problems[0])


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


def save_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write ``data`` (``(x, y, z)``, NIfTI order) with ``affine`` (mm) to ``path``
    atomically (:func:`sam3d.utils.files.atomic_write`): the sform holds the affine; the
    qform too, unless the affine shears (a quaternion cannot say so: qform code 0)."""
    import nibabel as nib

    from ..utils.files import atomic_write

    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_sform(affine, code=1)
    columns = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    no_shear = np.allclose(columns.T @ columns, np.eye(3), atol=1e-6)
    img.set_qform(affine if no_shear else None, code=1 if no_shear else 0)
    atomic_write(path, lambda tmp: nib.save(img, tmp))


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
    if dim < 3:
        return array, np.eye(4)  # rejected by volume_problems with the shape in the message
    # An image of 4 or more axes is only accepted (by volume_problems) with trailing axes of
    # length 1: its geometry is the leading 3×3 block, kept rather than replaced by identity.
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(img.GetSpacing()[:3], dtype=np.float64)
    lps[:3, 3] = img.GetOrigin()[:3]
    return array, LPS_TO_RAS @ lps

