"""User grid ↔ model grid (checked against the real MONAI test chain) and mask writing
(sam3d.inference.geometry): round trips through NIfTI, NRRD/MetaImage and DICOM inputs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Compose, Transposed

from sam3d.data.clicks import ClickError
from sam3d.data.io import Volume, load_volume
from sam3d.data.specs import DatasetSpec
from sam3d.data.transforms import build_transforms, deterministic_prefix
from sam3d.inference import geometry
from sam3d.inference.geometry import (
    model_affine,
    model_to_user,
    save_mask,
    user_shape,
    user_to_model,
)

SPEC = DatasetSpec("geometry-test", 1, window=(-1000.0, 3000.0), mean=0.0, std=1.0)
SHAPE = (14, 12, 9)  # X×Y×Z


def _rot_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def _affine(columns: np.ndarray, origin=(12.0, -30.0, 45.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = columns
    a[:3, 3] = origin
    return a


AFFINES = {
    "anisotropic_ras": _affine(np.diag([0.8, 0.7, 2.5])),
    "lps_flipped": _affine(np.diag([-0.8, -0.7, 2.5])),
    # array axes i, j, k along −A/P, +S/I, −R/L: permuted and flipped
    "permuted": _affine(np.array([[0, 0, -0.9], [-1.2, 0, 0], [0, 2.0, 0]])),
    "oblique": _affine(_rot_z(25.0) @ np.diag([0.9, 1.1, 2.0])),
}


def _model_grid(path: Path):
    out = build_transforms(SPEC, "test")({"image": str(path)})
    return out["image"]


# ------------------------------------------------------------------------ convention


def test_user_click_is_slice_row_column_of_the_file_array():
    volume = Volume(np.zeros((5, 6, 7), np.float32), np.diag([2.0, 1.0, 1.0, 1.0]), "x")
    assert user_shape(volume) == (7, 6, 5)
    # user (d, h, w) = (3, 4, 2) → file voxel (i, j, k) = (2, 4, 3) → world (4, 4, 3)
    # → model (x, y, z) = (4, 4, 3) on a 1 mm identity grid → model (d, h, w) = (3, 4, 4)
    got = user_to_model([(3, 4, 2)], volume.affine, np.eye(4), (10, 10, 10), user_shape(volume))
    assert got.dtype == np.int64
    assert got.tolist() == [[3, 4, 4]]
    assert model_to_user(got, np.eye(4), volume.affine, user_shape(volume)).tolist() == [[3, 4, 2]]


def test_rounding_is_to_the_nearest_voxel_halves_up_and_clips_within_one_voxel():
    model = np.diag([2.0, 2.0, 2.0, 1.0])  # user voxel 1 → model 0.5 → 1; 9 → 4.5 → 5 → 4
    got = user_to_model([(1, 1, 1), (9, 9, 9)], np.eye(4), model, (5, 5, 5))
    assert got.tolist() == [[1, 1, 1], [4, 4, 4]]


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_user_to_model_lands_on_the_bright_voxel_of_the_monai_chain(tmp_path, name):
    i, j, k = 9, 4, 5
    array = np.zeros(SHAPE, np.float32)
    array[i, j, k] = 2000.0
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(array, AFFINES[name]), str(path))
    image = _model_grid(path)
    grid = image[0].numpy()
    bright = np.array(np.unravel_index(np.argmax(grid), grid.shape))
    assert grid.max() > 100  # the bright voxel survived the resampling

    user = (k, j, i)
    got = user_to_model([user], AFFINES[name], model_affine(image), grid.shape,
                        (SHAPE[2], SHAPE[1], SHAPE[0]))[0]
    assert np.abs(got - bright).max() <= 1, (got, bright)
    back = model_to_user([bright], model_affine(image), AFFINES[name], user_shape(
        Volume(array, AFFINES[name], str(path))))[0]
    assert np.abs(back - np.array(user)).max() <= 1


def test_model_affine_is_the_affine_before_transposed(tmp_path):
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), AFFINES["permuted"]), str(path))
    image = _model_grid(path)
    steps = [s for s in deterministic_prefix(SPEC, "test") if not isinstance(s, Transposed)]
    before = Compose(steps)({"image": str(path)})["image"]
    np.testing.assert_allclose(model_affine(image), before.affine.numpy(), atol=1e-9)
    assert tuple(image.shape[1:]) == tuple(before.shape[1:])[::-1]  # (z, y, x) vs (x, y, z)
    with pytest.raises(ValueError, match="MetaTensor"):
        model_affine(torch.zeros(1, 4, 4, 4))


def test_far_outside_mapping_means_mismatched_affines():
    shifted = np.eye(4)
    shifted[:3, 3] = 50.0
    with pytest.raises(ValueError, match="outside the target grid"):
        user_to_model([(1, 1, 1)], np.eye(4), shifted, (10, 10, 10))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"clicks": [(9, 0, 0)]}, ClickError, "outside the volume"),
    ({"clicks": [(1.0, 0, 0)]}, ClickError, "non-integer"),
    ({"input_affine": np.eye(3)}, ValueError, "input_affine"),
    ({"model_affine": np.zeros((4, 4))}, ValueError, "model_affine"),
    ({"model_shape": (4, 4)}, ValueError, "model_shape"),
])
def test_user_to_model_validates(kwargs, error, match):
    args = {"clicks": [(1, 1, 1)], "input_affine": np.eye(4), "model_affine": np.eye(4),
            "model_shape": (9, 9, 9), "input_shape": (9, 9, 9), **kwargs}
    with pytest.raises(error, match=match):
        user_to_model(**args)


# --------------------------------------------------------------------------- writing


def _mask(shape, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) < 0.3).astype(np.uint8)


def _assert_round_trip(reference: Volume, path: Path, seed: int = 0) -> None:
    mask = _mask(reference.shape, seed)
    assert save_mask(mask, reference, path) == path
    back = load_volume(path, "label")
    assert back.shape == reference.shape
    np.testing.assert_allclose(back.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(back.array, mask)


def _sitk_reference(tmp_path: Path, direction: np.ndarray) -> Volume:
    array = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    img = sitk.GetImageFromArray(array.transpose(2, 1, 0).copy())
    img.SetDirection(tuple(float(v) for v in direction.ravel()))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    sitk.WriteImage(img, str(tmp_path / "ref.nrrd"))
    return load_volume(tmp_path / "ref.nrrd")


SUFFIXES = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"]


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_from_an_oblique_anisotropic_nifti(tmp_path, suffix):
    affine = _affine(_rot_z(25.0) @ np.diag([0.7, -0.8, 2.5]))
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine), str(tmp_path / "ref.nii.gz"))
    _assert_round_trip(load_volume(tmp_path / "ref.nii.gz"), tmp_path / f"mask{suffix}")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_from_an_nrrd_with_a_rotated_direction(tmp_path, suffix):
    reference = _sitk_reference(tmp_path, _rot_z(-30.0) @ np.diag([1.0, -1.0, 1.0]))
    assert not np.allclose(np.abs(reference.affine[:3, :3]), np.diag(reference.spacing))
    _assert_round_trip(reference, tmp_path / f"mask{suffix}")


def _write_dicom(folder: Path, array_xyz: np.ndarray, direction, spacing, origin) -> None:
    """A DICOM CT series: one file per k-slice with position/orientation/spacing tags."""
    folder.mkdir()
    vol = sitk.GetImageFromArray(array_xyz.transpose(2, 1, 0).astype(np.int16).copy())
    vol.SetDirection(tuple(float(v) for v in np.ravel(direction)))
    vol.SetSpacing(spacing)
    vol.SetOrigin(origin)
    d = np.asarray(direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array_xyz.shape[2]):
        piece = vol[:, :, k]
        corner = vol.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0008|0060": "CT", "0020|000d": "1.2.3.4", "0020|000e": "1.2.3.4.5",
                "0020|0013": str(k + 1),
                "0020|0032": "\\".join(f"{v:.6f}" for v in corner),
                "0020|0037": "\\".join(f"{v:.8f}" for v in (*d[:, 0], *d[:, 1])),
                "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2])}
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(piece)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_round_trip_from_a_dicom_series(tmp_path, suffix):
    array = np.random.default_rng(2).integers(-100, 100, SHAPE)
    _write_dicom(tmp_path / "series", array, _rot_z(15.0), (0.7, 0.8, 2.5), (5.0, -8.0, 20.0))
    reference = load_volume(tmp_path / "series")
    np.testing.assert_array_equal(reference.array, array)  # the series itself reads back
    _assert_round_trip(reference, tmp_path / f"mask{suffix}")


def test_bool_and_torch_masks_and_overwrite(tmp_path):
    reference = Volume(np.zeros(SHAPE, np.float32), AFFINES["oblique"], "ref")
    path = tmp_path / "mask.nii.gz"
    save_mask(_mask(SHAPE, 0).astype(bool), reference, path)
    second = _mask(SHAPE, 1)
    save_mask(torch.from_numpy(second), reference, path)
    np.testing.assert_array_equal(load_volume(path, "label").array, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]  # no leftovers


@pytest.mark.parametrize("writer", ["save_nifti", "_write_sitk"])
def test_a_failed_write_leaves_the_existing_file_untouched(tmp_path, monkeypatch, writer):
    suffix = ".nii.gz" if writer == "save_nifti" else ".nrrd"
    path = tmp_path / f"mask{suffix}"
    path.write_bytes(b"previous contents")

    def broken(*args):  # save_nifti(path, array, affine), _write_sitk(array, affine, path)
        target = next(a for a in args if isinstance(a, (str, Path)))
        Path(target).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(geometry, writer, broken)
    reference = Volume(np.zeros(SHAPE, np.float32), np.eye(4), "ref")
    with pytest.raises(OSError, match="disk full"):
        save_mask(_mask(SHAPE), reference, path)
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_save_mask_refuses_bad_input_before_touching_the_file(tmp_path):
    reference = Volume(np.zeros(SHAPE, np.float32), np.eye(4), "ref.nii.gz")
    path = tmp_path / "mask.nii.gz"
    path.write_bytes(b"keep")
    with pytest.raises(ValueError, match=r"\(9, 12, 14\).*\(14, 12, 9\)"):
        save_mask(np.zeros((9, 12, 14), np.uint8), reference, path)
    with pytest.raises(ValueError, match="unknown mask file extension"):
        save_mask(_mask(SHAPE), reference, tmp_path / "mask.png")
    with pytest.raises(TypeError, match="threshold probabilities"):
        save_mask(np.zeros(SHAPE, np.float32), reference, path)
    with pytest.raises(ValueError, match="uint8"):
        save_mask(np.full(SHAPE, 300), reference, path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_mask(_mask(SHAPE), reference, tmp_path / "missing" / "mask.nii.gz")
    with pytest.raises(TypeError, match="Volume"):
        save_mask(_mask(SHAPE), np.eye(4), path)
    assert path.read_bytes() == b"keep"
