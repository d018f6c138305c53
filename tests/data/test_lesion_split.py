"""Tests for sam3d.data.lesion_split: the rule on small made-up labels, and on LiTS 117 the
proof that the training sub-volume holds no voxel of the test slab or its band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam3d.data.io import load_volume
from sam3d.data.lesion_split import EXCLUDED, choose_split, lesion_components, split_arrays
from sam3d.data.samples import fetch_samples

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def _label_with_blobs(shape=(20, 90, 12)) -> np.ndarray:
    """Label of a 'liver' (1) with cubes of tumour (2) along y (three at low y, two at high
    y) and a 3×38×3 bar from y = 22 to 60."""
    lab = np.ones(shape, np.uint8)
    for y0, size in ((2, 5), (9, 4), (15, 5), (50, 5), (70, 6)):
        lab[5:5 + size, y0:y0 + size, 3:3 + size] = 2
    lab[14:17, 22:60, 3:6] = 2
    return lab


def test_rule_on_a_made_up_label() -> None:
    lab = _label_with_blobs()
    split = choose_split(lab, 2, band=4, min_train=30, min_test_lesions=3, min_lesion_voxels=60)
    # x and z are too thin for a 30-voxel training slab; from high y no three lesions are
    # whole in a slab thin enough; from low y, thicker slabs than 20 only add cut bar voxels
    # (the cube at y 50 never makes up for the bar it drags in): ties go to the thinnest
    assert (split.axis, split.side) == (1, "low")
    assert (split.test, split.band, split.train) == ((0, 20), (20, 24), (24, 90))
    roles = {les.bbox[1]: les.role for les in split.lesions}
    assert roles == {(2, 7): "test", (9, 13): "test", (15, 20): "test", (22, 60): "train_cut",
                     (50, 55): "train", (70, 76): "train"}


def test_deterministic_and_recorded() -> None:
    lab = _label_with_blobs()
    a = choose_split(lab, 2, band=4, min_train=30, min_lesion_voxels=60)
    b = choose_split(lab.copy(), 2, band=4, min_train=30, min_lesion_voxels=60)
    assert a == b
    doc = a.as_dict()
    assert doc["offsets"]["train"][a.axis] == a.train[0]
    assert len(doc["lesions"]) == lesion_components(lab, 2)[1] == 6


@pytest.mark.parametrize("kwargs", [{"band": 0}, {"min_train": -1}, {"band": 2.5},
                                    {"min_test_lesions": True}, {"connectivity": 18}])
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        choose_split(_label_with_blobs(), 2, **kwargs)


def test_no_admissible_cut_is_an_error() -> None:
    with pytest.raises(ValueError, match="no admissible cut"):
        choose_split(_label_with_blobs(), 2, min_train=85)
    with pytest.raises(ValueError, match="no voxel of target"):
        choose_split(np.ones((8, 8, 8), np.uint8), 2)


def test_split_arrays_rejects_mismatch() -> None:
    lab = _label_with_blobs()
    split = choose_split(lab, 2, band=4, min_train=30, min_lesion_voxels=60)
    with pytest.raises(ValueError):
        split_arrays(np.zeros((3, 3, 3)), lab, np.eye(4), split)


def test_lits117_split_has_no_leakage() -> None:
    fetch_samples(SAMPLES)
    image = load_volume(SAMPLES / "lits117" / "image.nii.gz")
    label = load_volume(SAMPLES / "lits117" / "label.nii.gz", "label")
    split = choose_split(label.array, 2, band=8, min_train=64)
    assert split.band[1] - split.band[0] >= 8 and split.train[1] - split.train[0] >= 64
    parts = split_arrays(image.array, label.array, image.affine, split)
    comp, _ = lesion_components(label.array, 2)
    for part, (img, _lab, aff) in parts.items():
        off = np.asarray(split.offset(part))
        index = tuple(slice(o, o + s) for o, s in zip(off, img.shape, strict=True))
        np.testing.assert_array_equal(img, image.array[index])  # the recorded offset is true
        np.testing.assert_allclose(aff[:3, 3], image.affine[:3, :3] @ off + image.affine[:3, 3])
    # the training sub-volume, placed by its recorded offset, misses the test slab and the band
    t_off, t_img = split.offset("train")[split.axis], parts["train"][0]
    train_rows = set(range(t_off, t_off + t_img.shape[split.axis]))
    assert not train_rows & set(range(*split.test)) and not train_rows & set(range(*split.band))
    # every test lesion is whole, with the target label, in the test sub-volume
    test_off = split.offset("test")
    test_comp = comp[split.region("test")]
    tests = split.with_role("test")
    assert len([les for les in tests if les.voxels >= 100]) >= 3
    for les in tests:
        assert np.count_nonzero(test_comp == les.id) == les.voxels
        assert np.all(parts["test"][1][test_comp == les.id] == 2)
        lo, hi = (b - test_off[split.axis] for b in les.bbox[split.axis])
        assert lo >= 0 and hi <= test_comp.shape[split.axis]
    # the test target voxels are exactly the whole test lesions; cut ones are EXCLUDED
    assert np.count_nonzero(parts["test"][1] == 2) == sum(les.voxels for les in tests)
    excl = [les.id for les in split.with_role("excluded")]
    assert np.all(parts["test"][1][np.isin(test_comp, excl)] == EXCLUDED)


def test_split_arrays_refuses_a_label_holding_the_excluded_value() -> None:
    lab = _label_with_blobs()
    split = choose_split(lab, 2, band=4, min_train=30, min_lesion_voxels=60)
    lab[0, 0, 0] = EXCLUDED
    with pytest.raises(ValueError, match="already holds"):
        split_arrays(np.zeros(lab.shape), lab, np.eye(4), split)
