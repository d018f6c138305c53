"""The MONAI chains: shapes, dtypes, geometry, determinism and bad input."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from data_fixtures import write_case

from sam3d.data.io import VolumeError
from sam3d.data.specs import get_spec
from sam3d.data.transforms import build_transforms

SPEC = get_spec("custom", target=2, window=(-100.0, 200.0), mean=50.0, std=20.0)
CROP = 16


def _case(root, cid="case_000"):
    return {"case": cid, "image": str(root / cid / "image.nii.gz"),
            "label": str(root / cid / "label.nii.gz"), "target": 2}


def _first(out):
    return out[0] if isinstance(out, list) else out


@pytest.mark.parametrize("mode", ["train", "val"])
def test_crops_have_model_shapes_and_dtypes(tiny_dataset, mode) -> None:
    out = _first(build_transforms(SPEC, mode, crop=CROP, seed=0)(_case(tiny_dataset)))
    assert out["image"].shape == (3, CROP, CROP, CROP) and out["image"].dtype == torch.float32
    assert out["label"].shape == (1, CROP, CROP, CROP)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    assert torch.equal(out["image"][0], out["image"][2])  # channel repeated ×3


def test_validation_crop_is_lesion_centred(tiny_dataset) -> None:
    chain = build_transforms(SPEC, "val", crop=CROP, seed=3)
    for _ in range(5):
        assert _first(chain(_case(tiny_dataset)))["label"].sum() > 0


def test_test_mode_resamples_to_1mm_in_dhw_order(tiny_dataset) -> None:
    out = build_transforms(SPEC, "test", crop=CROP)(_case(tiny_dataset))
    # 40×44×16 voxels of 0.8×0.9×2.5 mm (x, y, z) → about 32×40×40 mm; D, H, W = z, y, x
    d, h, w = out["image"].shape[1:]
    assert abs(d - 16 * 2.5) <= 3 and abs(h - 44 * 0.9) <= 2 and abs(w - 40 * 0.8) <= 2
    assert out["label"].shape[1:] == out["image"].shape[1:]
    # clipped to the window, then z-scored with the dataset constants
    lo, hi = (np.array(SPEC.window) - SPEC.mean) / SPEC.std
    assert out["image"].min() >= lo - 1e-5 and out["image"].max() <= hi + 1e-5
    assert float(out["image"].min()) == pytest.approx(lo, abs=1e-5)  # the air was clipped
    assert out["label"].sum() > 0
    assert torch.allclose(torch.diag(out["image"].affine[:3, :3]).abs(),
                          torch.ones(3, dtype=out["image"].affine.dtype), atol=1e-3)


def test_the_label_follows_the_image(tiny_dataset) -> None:
    """Tumour voxels are 40 HU darker than the organ around them, in every mode."""
    for mode in ("train", "val", "test"):
        out = _first(build_transforms(SPEC, mode, crop=CROP, seed=1)(_case(tiny_dataset)))
        img, lab = out["image"][0], out["label"][0] > 0.5
        if lab.any() and (~lab).any():
            assert img[lab].mean() < 40 / SPEC.std + (img[~lab].mean())


def test_same_seed_same_crops_different_seed_different(tiny_dataset) -> None:
    def crops(seed):
        chain = build_transforms(SPEC, "train", crop=CROP, seed=seed)
        return [_first(chain(_case(tiny_dataset)))["image"] for _ in range(3)]

    a, b, c = crops(0), crops(0), crops(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_a_volume_smaller_than_the_crop_is_padded(tmp_path) -> None:
    image = np.full((10, 9, 6), 40.0, np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[3:6, 3:6, 2:4] = 2
    write_case(tmp_path, "small", image, label, np.eye(4))
    for mode in ("train", "val"):
        out = _first(build_transforms(SPEC, mode, crop=CROP, seed=0)(_case(tmp_path, "small")))
        assert out["image"].shape == (3, CROP, CROP, CROP)


def test_bad_files_raise_the_volume_error_naming_them(tmp_path, tiny_dataset) -> None:
    chain = build_transforms(SPEC, "test", crop=CROP)
    good = _case(tiny_dataset)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(Path(good["image"]).read_bytes()[:100])
    with pytest.raises(VolumeError, match="broken.nii.gz"):
        chain({**good, "image": str(bad)})
    shifted = tmp_path / "shifted.nii.gz"
    lab = nib.load(good["label"])
    moved = lab.affine.copy()
    moved[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), moved), shifted)
    with pytest.raises(VolumeError, match="shifted.nii.gz.*affine"):
        chain({**good, "label": str(shifted)})
    nan = tmp_path / "nan.nii.gz"
    img = nib.load(good["image"])
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), nan)
    with pytest.raises(VolumeError, match="nan.nii.gz.*NaN"):
        chain({**good, "image": str(nan)})


def test_prediction_input_without_label(tiny_dataset) -> None:
    out = build_transforms(SPEC, "test", crop=CROP)({"image": _case(tiny_dataset)["image"]})
    assert out["image"].ndim == 4 and "label" not in out


def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        build_transforms(SPEC, "training")
    with pytest.raises(ValueError, match="crop"):
        build_transforms(SPEC, "train", crop=4)
    with pytest.raises(ValueError, match="statistics"):
        build_transforms(get_spec("custom"), "train")
