"""Helpers for the data tests: tiny datasets in the common layout (imported by the tests)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from sam3d.data import layout


def write_case(root: Path, case_id: str, image: np.ndarray, label: np.ndarray,
               affine: np.ndarray) -> None:
    (root / case_id).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), root / case_id / "image.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / case_id / "label.nii.gz")


def make_dataset(root: Path, n: int = 6, shape=(40, 44, 16), spacing=(0.8, 0.9, 2.5),
                 empty: tuple[int, ...] = (), seed: int = 0) -> Path:
    """``n`` cases: noisy soft tissue (40 HU), an organ box (label 1, 60 HU) holding a
    tumour box (label 2, 20 HU); the cases listed in ``empty`` have no tumour."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    cases = {}
    for i in range(n):
        cid = f"case_{i:03d}"
        image = rng.normal(40, 10, shape).astype(np.float32)
        image[:4] = -1000.0  # air at one side
        label = np.zeros(shape, np.uint8)
        label[8:32, 8:36, 3:13] = 1
        if i not in empty:
            o = i % 4
            label[14 + o:22 + o, 16:26, 6:10] = 2
        image[label == 1] += 20
        image[label == 2] -= 20
        write_case(root, cid, image, label, affine)
        cases[cid] = layout.case_record(cid, image, spacing, label, 2)
    layout.write_index(root, "custom", {0: "background", 1: "organ", 2: "tumour"}, 2, cases)
    return root


def official_ids(name: str) -> set[str]:
    """Every case id of the official split files (all five folds) of ``name``."""
    from sam3d.data.splits import official_split

    return {c for fold in range(5) for ids in official_split(name, fold).values() for c in ids}
