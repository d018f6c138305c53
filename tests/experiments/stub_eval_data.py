"""Hand-made evaluation data for the chapter modules' tests: 1 mm cube volumes with cube lesions,
a fake training checkpoint that records where they are, and a stand-in for the trained model."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from stub_models import CubeModel, FloodModel

from sam3d.data import layout
from sam3d.data.specs import get_spec
from sam3d.engine.config import TrainConfig

SPEC = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)
SHAPE = (24, 24, 24)
BIG = (slice(6, 17),) * 3  # 11³ cube, centre voxel (11, 11, 11)
PAIR = ((slice(8, 13),) * 3, (slice(16, 21),) * 3)  # two 5³ cubes


def write_cases(root: Path, n: int, lesions=(BIG,)) -> Path:
    """``n`` cases, each with the given lesion boxes (model d, h, w = NIfTI z, y, x order);
    the image is 100 inside the lesions and 0 elsewhere."""
    cases = {}
    for i in range(n):
        cid = f"case_{i:02d}"
        (root / cid).mkdir(parents=True)
        label = np.zeros(SHAPE, np.uint8)
        for d, h, w in lesions:
            label[w, h, d] = 1
        nib.save(nib.Nifti1Image(label.astype(np.float32) * 100, np.eye(4)),
                 root / cid / "image.nii.gz")
        nib.save(nib.Nifti1Image(label, np.eye(4)), root / cid / "label.nii.gz")
        cases[cid] = layout.case_record(cid, SHAPE, (1, 1, 1), label, 1)
    layout.write_index(root, "custom", {0: "background", 1: "lesion"}, 1, cases)
    return root


def fake_checkpoint(path: Path, data_dir: Path, seed: int = 0) -> Path:
    """A file that records a training configuration the way the trainer does (no weights)."""
    cfg = TrainConfig(name="stub", dataset="custom", data_dir=str(data_dir), seed=seed)
    torch.save({"extra": {"train": {"config": cfg.as_dict()}}}, path)
    return path


def patch_model(monkeypatch, model) -> list:
    """Make :func:`sam3d.inference.predict.load_for_inference` return ``model`` and SPEC;
    returns the list of checkpoints it was asked for."""
    from sam3d.inference import predict

    asked = []

    def load(checkpoint, *args, **kwargs):  # a path, or the CheckpointFile a caller read
        asked.append(Path(getattr(checkpoint, "path", checkpoint)))
        return model, SPEC

    monkeypatch.setattr(predict, "load_for_inference", load)
    return asked


__all__ = ["BIG", "PAIR", "SHAPE", "SPEC", "CubeModel", "FloodModel", "fake_checkpoint",
           "patch_model", "write_cases"]
