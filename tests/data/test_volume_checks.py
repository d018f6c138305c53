"""One set of volume checks (sam3d.data.io.volume_problems / grid_problems): a case that
prepare_folder accepts is one that load_case accepts, and the other way round, on hand-made
small NIfTI files, well- and malformed (these inputs used to split the two)."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3d.data.io import VolumeError, grid_problems, load_case, volume_problems
from sam3d.data.prepare import PrepareError, prepare_folder

AFFINE = np.array([[-0.8, 0, 0, 100], [0, -0.8, 0, 50], [0, 0, 2.5, -300], [0, 0, 0, 1]])
FAR = AFFINE + np.pad([[900.0]], ((0, 3), (3, 0)))  # origin 1000 mm along x


def _pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, size=(8, 7, 6)).astype(np.int16)
    label = np.zeros((8, 7, 6), np.uint8)
    label[2:5, 1:4, 2:5] = 2
    return image, label


def _case(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image, label, image affine, label affine) of a case of ``kind``."""
    image, label = _pair()
    img_aff, lab_aff = AFFINE, AFFINE
    if kind == "4d, last axis 1":
        image = image[..., None]
    elif kind == "5d, last axes 1":
        image = image[..., None, None]
    elif kind == "4d, two volumes":
        image = np.stack([image, image], axis=-1)
    elif kind == "2d":
        image = image[:, :, 0]
    elif kind == "single slice":
        image, label = image[:, :, :1], label[:, :, :1]
    elif kind == "nan image":
        image = image.astype(np.float32)
        image[1, 2, 3] = np.nan
    elif kind == "image beyond float32":
        image = image.astype(np.float64)
        image[1, 2, 3] = 1e39
    elif kind == "half-valued label":
        label = label.astype(np.float32) * 0.75
    elif kind == "nan label":
        label = label.astype(np.float32)
        label[0, 0, 0] = np.nan
    elif kind == "label beyond int32":
        label = label.astype(np.float64)
        label[0, 0, 0] = 2.0**40
    elif kind == "affine within 1e-3 mm":
        lab_aff = AFFINE + np.diag([0, 0, 1e-4, 0])
    elif kind == "affine off by 0.01 mm":
        lab_aff = AFFINE + np.diag([0, 0, 0.01, 0])
    elif kind == "far origin off by 5e-3 mm":  # within a relative tolerance, not 1e-3 mm
        img_aff = FAR
        lab_aff = FAR + np.pad([[5e-3]], ((0, 3), (3, 0)))
    elif kind == "label shape":
        label = label[:, :, :5]
    return image, label, img_aff, lab_aff


KINDS = {"good": True, "4d, last axis 1": True, "5d, last axes 1": True,
         "4d, two volumes": False, "2d": False, "single slice": False, "nan image": False,
         "image beyond float32": False, "half-valued label": False, "nan label": False,
         "label beyond int32": False, "affine within 1e-3 mm": True,
         "affine off by 0.01 mm": False, "far origin off by 5e-3 mm": False,
         "label shape": False}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_prepare_accepts_what_load_case_accepts(tmp_path: Path, kind: str) -> None:
    image, label, img_aff, lab_aff = _case(kind)
    img, lab = tmp_path / "img/c.nii.gz", tmp_path / "lab/c.nii.gz"
    for path, data, affine in ((img, image, img_aff), (lab, label, lab_aff)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), path)
    try:
        load_case(img, lab, target=2)
        loads = True
    except VolumeError:
        loads = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no case here is accepted only with a warning
            report = prepare_folder(img.parent, lab.parent, tmp_path / "out", name="m", target=2)
        prepared, problems = True, []
    except PrepareError as exc:
        prepared, problems = False, exc.problems
    assert (loads, prepared) == (KINDS[kind], KINDS[kind]), problems
    if prepared:  # and what preparation wrote loads for training
        out = report.out_dir / "c"
        image3d, label3d = load_case(out / "image.nii.gz", out / "label.nii.gz", target=2)
        assert image3d.shape == label3d.shape == (8, 7, 6)
    else:
        on_label = any(w in kind for w in ("label", "affine", "origin"))
        culprit = lab if on_label else img
        assert problems and all(str(culprit) in p for p in problems[:1]), problems


def test_problems_are_all_listed() -> None:
    bad = np.zeros((6, 7), np.float32)
    bad[0, 0] = np.nan
    problems = volume_problems(bad, "image")
    assert len(problems) == 2 and "is 2D" in problems[0] and "1 NaN" in problems[1]
    assert volume_problems(np.zeros((2, 2, 2, 1, 1), np.uint8), "label") == []
    assert grid_problems((2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) * 1.0005, "i") == []
    (far,) = grid_problems((2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) * 1.002, "i.nii")
    assert "by up to 0.002 mm" in far and "(i.nii)" in far
    with pytest.raises(ValueError, match="kind"):
        volume_problems(bad, "mask")
