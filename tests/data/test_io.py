"""Volume reading (sam3d.data.io): NIfTI, NRRD/MetaImage, DICOM series and every bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sam3d.data.io import (
    EmptyLabelError,
    Volume,
    VolumeError,
    check_pair,
    is_supported,
    load_case,
    load_volume,
)

SHAPE = (6, 7, 8)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    """3×3 rotation about world axis ``axis``."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _affine(rotation=None, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = (np.eye(3) if rotation is None else np.asarray(rotation)) @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def _image(seed: int = 0, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(40.0, 30.0, size=shape).astype(np.float32)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def _expect_error(path: Path, match: str, kind: str = "image") -> VolumeError:
    with pytest.raises(VolumeError, match=match) as info:
        load_volume(path, kind)
    assert path.name in str(info.value)
    assert info.value.path == str(path)
    return info.value


def _sitk_image(array_xyz: np.ndarray, direction: np.ndarray, spacing, origin) -> sitk.Image:
    """A SimpleITK image (LPS geometry) holding ``array_xyz`` indexed (i, j, k)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    img.SetDirection(tuple(float(v) for v in np.asarray(direction).ravel()))
    img.SetSpacing(tuple(float(v) for v in spacing))
    img.SetOrigin(tuple(float(v) for v in origin))
    return img


# ------------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_keeps_array_order_and_affine(tmp_path, suffix):
    array = _image()
    affine = _affine(spacing=(0.8, 0.9, 2.5), origin=(-10.0, 5.0, 30.0))
    path = _save_nifti(tmp_path / f"ct{suffix}", array, affine)

    vol = load_volume(path)

    assert isinstance(vol, Volume)
    assert vol.shape == SHAPE
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-6)
    assert vol.spacing == pytest.approx((0.8, 0.9, 2.5), abs=1e-6)
    assert vol.path == str(path)


def test_spacing_from_oblique_anisotropic_affine(tmp_path):
    rotation = _rotation(2, 30.0) @ _rotation(0, -20.0)
    affine = _affine(rotation, spacing=(0.7, 1.3, 3.0), origin=(1.0, 2.0, 3.0))
    vol = load_volume(_save_nifti(tmp_path / "oblique.nii.gz", _image(), affine))

    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    assert vol.spacing == pytest.approx((0.7, 1.3, 3.0), abs=1e-5)
    # Not just the diagonal: the diagonal of this affine is far from the spacing.
    assert not np.allclose(np.abs(np.diag(affine)[:3]), (0.7, 1.3, 3.0), atol=0.05)


def test_spacing_property_on_a_plain_volume():
    affine = _affine(_rotation(1, 45.0), spacing=(2.0, 0.5, 1.5))
    vol = Volume(array=np.zeros(SHAPE, np.float32), affine=affine, path="x")
    assert vol.spacing == pytest.approx((2.0, 0.5, 1.5))
    assert vol.shape == SHAPE


def test_label_is_read_as_integers(tmp_path):
    label = np.zeros(SHAPE, np.float32)  # float storage with integer values is fine
    label[1:3, 2:4, 3:5] = 2
    label[0, 0, 0] = 1
    vol = load_volume(_save_nifti(tmp_path / "label.nii.gz", label), "label")
    assert np.issubdtype(vol.array.dtype, np.integer)
    np.testing.assert_array_equal(vol.array, label.astype(int))


@pytest.mark.parametrize("value", [40_000, -40_000])
def test_label_values_outside_int16_are_not_wrapped(tmp_path, value):
    label = np.zeros(SHAPE, np.int32)
    label[2, 3, 4] = value
    vol = load_volume(_save_nifti(tmp_path / "big.nii.gz", label), "label")
    assert vol.array[2, 3, 4] == value
    assert vol.array.dtype == np.int32


def test_label_values_beyond_int32_are_refused(tmp_path):
    label = np.zeros(SHAPE, np.float64)
    label[0, 0, 0] = 2.0**40
    _expect_error(_save_nifti(tmp_path / "huge.nii.gz", label), "32-bit", kind="label")


def test_four_d_with_trailing_axis_one_is_squeezed(tmp_path):
    array = _image()[..., None]
    affine = _affine(spacing=(1.0, 2.0, 3.0))
    vol = load_volume(_save_nifti(tmp_path / "four.nii.gz", array, affine))
    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.array, array[..., 0])
    np.testing.assert_allclose(vol.affine, affine)


def test_kind_must_be_image_or_label(tmp_path):
    path = _save_nifti(tmp_path / "ct.nii.gz", _image())
    with pytest.raises(ValueError, match="kind"):
        load_volume(path, "mask")


def test_is_supported(tmp_path):
    assert is_supported("a.nii") and is_supported("A.NII.GZ") and is_supported("b.nrrd")
    assert is_supported("c.mha") and is_supported("d.mhd") and is_supported("e.nhdr")
    assert is_supported(tmp_path)  # a folder: a DICOM series
    assert not is_supported("f.png") and not is_supported("g.nii.zip")


# ------------------------------------------------------------------- NRRD / MetaImage


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_sitk_file_matches_nibabel_on_the_same_image(tmp_path, suffix):
    """LPS → RAS: the NRRD reads back with the affine nibabel gives for the same NIfTI."""
    array = _image(3)
    direction = _rotation(2, 25.0) @ _rotation(1, 10.0)
    spacing, origin = (0.75, 1.25, 2.5), (-12.0, 7.5, 40.0)
    img = _sitk_image(array, direction, spacing, origin)
    sitk.WriteImage(img, str(tmp_path / f"ct{suffix}"))
    sitk.WriteImage(img, str(tmp_path / "ct_sitk.nii.gz"))

    vol = load_volume(tmp_path / f"ct{suffix}")
    ref = nib.load(str(tmp_path / "ct_sitk.nii.gz"))

    np.testing.assert_array_equal(vol.array, np.asarray(ref.dataobj))
    np.testing.assert_array_equal(vol.array, array)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)
    # Explicitly: RAS affine = diag(-1, -1, 1) applied to ITK's LPS direction·spacing, origin.
    expected = _affine(direction, spacing, origin)
    expected[:2] *= -1
    np.testing.assert_allclose(vol.affine, expected, atol=1e-9)
    assert vol.spacing == pytest.approx(spacing)


def test_sitk_four_d_with_trailing_axis_one_keeps_its_geometry(tmp_path):
    array = _image(4)
    img3 = _sitk_image(array, _rotation(2, 15.0), (0.5, 1.0, 2.0), (3.0, 4.0, 5.0))
    img4 = sitk.JoinSeries(img3)
    direction4 = np.eye(4)
    direction4[:3, :3] = _rotation(2, 15.0)
    img4.SetDirection(tuple(direction4.ravel()))
    img4.SetSpacing((0.5, 1.0, 2.0, 1.0))
    img4.SetOrigin((3.0, 4.0, 5.0, 0.0))
    assert img4.GetDimension() == 4
    sitk.WriteImage(img4, str(tmp_path / "four.nrrd"))
    sitk.WriteImage(img3, str(tmp_path / "three.nrrd"))

    four = load_volume(tmp_path / "four.nrrd")
    three = load_volume(tmp_path / "three.nrrd")

    assert four.shape == SHAPE
    np.testing.assert_array_equal(four.array, array)
    np.testing.assert_allclose(four.affine, three.affine, atol=1e-9)
    assert four.spacing == pytest.approx((0.5, 1.0, 2.0))


def test_truncated_nrrd_is_a_volume_error(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(_sitk_image(_image(), np.eye(3), (1, 1, 1), (0, 0, 0)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "unreadable")


# -------------------------------------------------------------------------- DICOM


def _write_dicom_series(folder: Path, array_xyz: np.ndarray, direction, spacing, origin):
    """One .dcm file per slice with position, orientation and spacing tags."""
    folder.mkdir()
    img = _sitk_image(array_xyz.astype(np.int16), direction, spacing, origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    d = np.asarray(direction)
    orientation = "\\".join(f"{v:.10f}" for v in (*d[:, 0], *d[:, 1]))
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.7",  # study
            "0020|000e": "1.2.826.0.1.3680043.2.1125.7.1",  # series
            "0020|0013": str(k + 1),  # instance number
            "0020|0032": "\\".join(f"{v:.10f}" for v in position),
            "0020|0037": orientation,
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",  # row spacing \ column spacing
            "0018|0050": str(spacing[2]),
        }
        for key, value in tags.items():
            sl.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_folder(tmp_path):
    array = np.random.default_rng(5).integers(-1000, 2000, size=SHAPE).astype(np.int16)
    direction = _rotation(2, 20.0)
    spacing, origin = (0.7, 0.8, 2.5), (10.0, -20.0, 30.0)
    _write_dicom_series(tmp_path / "series", array, direction, spacing, origin)
    assert len(list((tmp_path / "series").glob("*.dcm"))) == SHAPE[2]

    vol = load_volume(tmp_path / "series")

    assert vol.shape == SHAPE
    np.testing.assert_array_equal(vol.array, array.astype(np.float32))
    expected = _affine(direction, spacing, origin)
    expected[:2] *= -1  # LPS → RAS
    np.testing.assert_allclose(vol.affine, expected, atol=1e-4)
    assert vol.spacing == pytest.approx(spacing, abs=1e-4)


def test_empty_folder_is_not_a_dicom_series(tmp_path):
    folder = tmp_path / "empty_series"
    folder.mkdir()
    _expect_error(folder, "no DICOM series")


# ----------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nowhere.nii.gz", "not found")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG not really")
    _expect_error(path, "unsupported format")


@pytest.mark.parametrize("shape", [SHAPE, (24, 24, 24)])
def test_truncated_nifti_gz(tmp_path, shape):
    """Cut within the header (tiny volume) or within the voxel data (larger one)."""
    path = _save_nifti(tmp_path / "cut.nii.gz", _image(shape=shape))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "unreadable NIfTI")


def test_truncated_uncompressed_nifti(tmp_path):
    path = _save_nifti(tmp_path / "cut.nii", _image())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "unreadable NIfTI")


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii"])
def test_garbage_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    _expect_error(path, "unreadable NIfTI")


def test_two_d_array(tmp_path):
    err = _expect_error(_save_nifti(tmp_path / "flat.nii.gz", np.zeros((6, 7), np.float32)),
                        "expected a 3D volume")
    assert "2D" in err.problem


def test_four_d_array_with_several_volumes(tmp_path):
    err = _expect_error(_save_nifti(tmp_path / "time.nii.gz", np.zeros((*SHAPE, 2), np.float32)),
                        "expected a 3D volume")
    assert "4D" in err.problem and "(6, 7, 8, 2)" in err.problem


@pytest.mark.parametrize("shape", [(6, 1, 8), (1, 7, 8), (6, 7, 1)])
def test_axis_of_length_one(tmp_path, shape):
    _expect_error(_save_nifti(tmp_path / "slice.nii.gz", np.zeros(shape, np.float32)),
                  "shorter than 2")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_image(tmp_path, bad):
    array = _image()
    array[1, 2, 3] = bad
    array[4, 5, 6] = bad
    err = _expect_error(_save_nifti(tmp_path / "nan.nii.gz", array), "NaN or Inf")
    assert err.problem.startswith("2 voxel")


def test_non_integer_label(tmp_path):
    label = np.zeros(SHAPE, np.float32)
    label[2, 2, 2] = 0.5
    _expect_error(_save_nifti(tmp_path / "soft.nii.gz", label), "non-integer", kind="label")


def test_nan_label(tmp_path):
    label = np.zeros(SHAPE, np.float32)
    label[2, 2, 2] = np.nan
    _expect_error(_save_nifti(tmp_path / "nanlabel.nii.gz", label), "non-integer", kind="label")


def test_errors_are_value_errors():
    assert issubclass(VolumeError, ValueError)
    assert issubclass(EmptyLabelError, VolumeError)
    err = VolumeError("/x/y.nii.gz", "broken")
    assert str(err) == "/x/y.nii.gz: broken" and err.problem == "broken"


# ------------------------------------------------------------------ pairs and cases


def _case(tmp_path, label: np.ndarray | None = None, label_affine=None, label_shape=SHAPE):
    affine = _affine(spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 3.0))
    image = _save_nifti(tmp_path / "image.nii.gz", _image(), affine)
    if label is None:
        label = np.zeros(label_shape, np.uint8)
        label[2:4, 2:4, 2:4] = 1
        label[3, 3, 3] = 2
    lab = _save_nifti(tmp_path / "label.nii.gz", label,
                      affine if label_affine is None else label_affine)
    return image, lab


def test_load_case_returns_image_and_label(tmp_path):
    image_path, label_path = _case(tmp_path)
    image, label = load_case(image_path, label_path, target=2)
    assert image.array.dtype == np.float32 and np.issubdtype(label.array.dtype, np.integer)
    assert image.shape == label.shape == SHAPE
    assert int((label.array == 2).sum()) == 1 and int((label.array == 1).sum()) == 7


def test_check_pair_shape_mismatch(tmp_path):
    image_path, label_path = _case(tmp_path, label_shape=(6, 7, 9))
    with pytest.raises(VolumeError, match="shape") as info:
        load_case(image_path, label_path)
    assert info.value.path == str(label_path)
    assert "label.nii.gz" in str(info.value)


def test_check_pair_affine_mismatch(tmp_path):
    shifted = _affine(spacing=(0.8, 0.8, 2.0), origin=(1.0, 2.0, 4.0))
    image_path, label_path = _case(tmp_path, label_affine=shifted)
    with pytest.raises(VolumeError, match="affine") as info:
        load_case(image_path, label_path)
    assert info.value.path == str(label_path)
    assert "label.nii.gz" in str(info.value)


def test_check_pair_tolerance():
    a = _affine(spacing=(1.0, 1.0, 1.0))
    image = Volume(np.zeros(SHAPE, np.float32), a, "i.nii.gz")
    close = a.copy()
    close[0, 3] += 1e-4
    check_pair(image, Volume(np.zeros(SHAPE, np.int16), close, "l.nii.gz"))  # within 1e-3 mm
    far = a.copy()
    far[0, 0] = 1.01
    with pytest.raises(VolumeError, match="l.nii.gz"):
        check_pair(image, Volume(np.zeros(SHAPE, np.int16), far, "l.nii.gz"))


def test_load_case_without_the_target_label(tmp_path):
    label = np.zeros(SHAPE, np.int16)
    label[1:3, 1:3, 1:3] = 1
    image_path, label_path = _case(tmp_path, label=label)
    load_case(image_path, label_path)  # no target asked: fine
    load_case(image_path, label_path, target=1)
    with pytest.raises(EmptyLabelError, match="target label 2") as info:
        load_case(image_path, label_path, target=2)
    assert isinstance(info.value, VolumeError)
    assert info.value.path == str(label_path)
