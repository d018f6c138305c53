"""Hand-made datasets for the evaluation tests: 1 mm cubes (``SHAPE``, identity affine, zero
image) whose lesion is a box given in model (d, h, w) = NIfTI (z, y, x) order, in the common
layout (``dataset.json``), so Dice and NSD are known by hand."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from sam3d.data import layout
from sam3d.data.specs import get_spec

SPEC = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)
SHAPE = (24, 24, 24)


def write_cube_dataset(root: Path, lesions: dict) -> layout.DatasetIndex:
    """One case per entry of ``lesions``: its lesion box (three slices, (d, h, w)) or None
    (a case without lesion). Returns the dataset's index."""
    cases = {}
    for cid, box in lesions.items():
        (root / cid).mkdir(parents=True)
        label = np.zeros(SHAPE, np.uint8)
        if box is not None:
            d, h, w = box
            label[w, h, d] = 1  # NIfTI x, y, z
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)),
                 root / cid / "image.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / cid / "label.nii.gz")
        cases[cid] = layout.case_record(cid, SHAPE, (1, 1, 1), label, 1)
    layout.write_index(root, "custom", {0: "background", 1: "lesion"}, 1, cases)
    return layout.read_index(root)
