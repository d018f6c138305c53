"""The content-keyed cache of the SAM 2D baseline (a random MobileSAM-shaped model on a toy
case)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sam3d.baselines.sam2d import evaluate_case
from sam3d.baselines.sam2d_cache import cache_key, cached_evaluate_case
from sam3d.baselines.weights import build_sam_from_checkpoint, build_sam_model
from sam3d.data.layout import CaseEntry


def write_toy_case(folder: Path, case_id: str = "toy") -> CaseEntry:
    """A 4×32×32 (D×H×W) CT ramp with a lesion (label 2) on two slices, spacing 1×1×2.5 mm."""
    image = np.linspace(-300.0, 300.0, 4 * 32 * 32).reshape(4, 32, 32).astype(np.float32)
    label = np.zeros((4, 32, 32), dtype=np.uint8)
    label[1, 10:20, 12:22] = 2
    label[2, 12:18, 14:20] = 2
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 2.5, 1.0])
    for name, arr in (("image", image), ("label", label)):
        nib.save(nib.Nifti1Image(np.transpose(arr, (2, 1, 0)), affine), folder / f"{name}.nii.gz")
    return CaseEntry(case_id, folder / "image.nii.gz", folder / "label.nii.gz", (32, 32, 4),
                     (1.0, 1.0, 2.5), target=2)


@pytest.fixture(scope="module")
def random_mobile_sam(tmp_path_factory) -> Path:
    """A randomly initialised SAM with the TinyViT encoder, saved like ``mobile_sam.pt``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random_mobile_sam.pt"
    torch.save(build_sam_model("tiny_vit").state_dict(), path)
    return path


def test_computes_once_then_reuses_by_content(random_mobile_sam, tmp_path) -> None:
    entry = write_toy_case(tmp_path / "toy")
    root = tmp_path / "cache"
    first = cached_evaluate_case(random_mobile_sam, entry, ks=(1, 3), seed=0, root=root)
    assert not first["cached"] and first["path"].is_file()
    assert first["path"].name == f"toy-{first['key']}.json"
    # the rows are those of the baseline itself
    direct = evaluate_case(build_sam_from_checkpoint(random_mobile_sam), entry, ks=(1, 3), seed=0)
    assert [(r["k"], r["dice"], r["nsd"]) for r in first["rows"]] == [
        (r["k"], r["dice"], r["nsd"]) for r in direct]
    again = cached_evaluate_case(random_mobile_sam, entry, ks=(1, 3), seed=0, root=root)
    assert again["cached"] and again["rows"] == json.loads(json.dumps(first["rows"]))
    # every input is part of the key: another seed, ks or label is another entry
    other = cached_evaluate_case(random_mobile_sam, entry, ks=(1, 3), seed=1, root=root)
    assert not other["cached"] and other["key"] != first["key"]
    assert cache_key("a" * 64, entry, (1, 3), 0) != cache_key("a" * 64, entry, (3, 1), 0)
    assert cache_key("a" * 64, entry, (1,), 0) != cache_key("b" * 64, entry, (1,), 0)
    label = nib.load(entry.label)
    data = np.asarray(label.dataobj).copy()
    data[5, 5, 1] = 2
    nib.save(nib.Nifti1Image(data, label.affine), entry.label)
    changed = cached_evaluate_case(random_mobile_sam, entry, ks=(1, 3), seed=0, root=root)
    assert not changed["cached"] and changed["key"] != first["key"]
    # refresh recomputes the same key
    fresh = cached_evaluate_case(random_mobile_sam, entry, ks=(1, 3), seed=0, root=root,
                                 refresh=True)
    assert not fresh["cached"] and fresh["key"] == changed["key"]


def test_missing_weights_are_reported(tmp_path) -> None:
    entry = write_toy_case(tmp_path / "toy")
    with pytest.raises(FileNotFoundError, match="SAM checkpoint"):
        cached_evaluate_case(tmp_path / "absent.pt", entry, root=tmp_path)
