"""build_dataset: splits, statistics, empty-label skipping, caching, and surfaced input errors."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from data_fixtures import make_dataset

from sam3d.data.io import VolumeError
from sam3d.data.layout import read_index
from sam3d.data.pipeline import build_dataset, spec_with_statistics
from sam3d.data.specs import get_spec
from sam3d.data.splits import SplitError, make_split
from sam3d.data.stats import compute_statistics

CROP = 16


def test_parts_follow_the_seeded_split(tiny_dataset) -> None:
    split = make_split(read_index(tiny_dataset).case_ids(), seed=0)
    for part in ("train", "val", "test"):
        ds = build_dataset(tiny_dataset, "custom", part, crop=CROP, seed=0)
        assert [d["case"] for d in ds.data] == split[part]
        item = ds[0]
        item = item[0] if isinstance(item, list) else item
        assert item["image"].shape[0] == 3 and item["label"].shape[0] == 1


def test_statistics_are_computed_from_the_training_split_and_cached(tiny_dataset, tmp_path) -> None:
    index = read_index(tiny_dataset)
    train = make_split(index.case_ids(), seed=0)["train"]
    spec = spec_with_statistics(get_spec("custom", target=2), index, train, tmp_path / "cache")
    expected = compute_statistics(index, train)
    assert spec.window == expected.window and spec.mean == pytest.approx(expected.mean)
    cached = list((tmp_path / "cache").glob("stats-custom-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["n_cases"] == len(train)
    official = get_spec("kits")
    assert spec_with_statistics(official, index, train) is official  # constants are kept


def test_cases_without_lesion_are_skipped_with_a_warning(tmp_path) -> None:
    root = make_dataset(tmp_path / "ds", n=5, empty=(1, 3))
    ids = read_index(root).case_ids()
    with pytest.warns(UserWarning, match="skipping 2 case"):
        ds = build_dataset(root, "custom", "train", crop=CROP, ids=ids)
    assert [d["case"] for d in ds.data] == ["case_000", "case_002", "case_004"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = build_dataset(root, "custom", "test", crop=CROP, ids=ids, keep_empty=True)
    assert len(kept.data) == 5


def test_persistent_cache_gives_the_same_items(tiny_dataset, tmp_path) -> None:
    plain = build_dataset(tiny_dataset, "custom", "test", crop=CROP)
    cached = build_dataset(tiny_dataset, "custom", "test", crop=CROP, cache_dir=tmp_path / "c")
    a, b = plain[0], cached[0]
    assert torch.allclose(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert any((tmp_path / "c").rglob("*.pt"))
    again = build_dataset(tiny_dataset, "custom", "test", crop=CROP, cache_dir=tmp_path / "c")
    assert torch.allclose(again[0]["image"], a["image"])


def test_a_corrupt_file_surfaces_as_volume_error(tiny_dataset) -> None:
    ds = build_dataset(tiny_dataset, "custom", "test", crop=CROP)
    victim = tiny_dataset / ds.data[0]["case"] / "image.nii.gz"
    victim.write_bytes(victim.read_bytes()[:200])
    with pytest.raises(VolumeError, match=f"{ds.data[0]['case']}/image.nii.gz"):
        ds[0]


def test_official_dataset_names_check_the_case_ids(tiny_dataset) -> None:
    with pytest.raises(SplitError, match="not in the official split"):
        build_dataset(tiny_dataset, "kits", "train", crop=CROP)
    # explicit ids bypass the split: the official KiTS constants on any case
    ds = build_dataset(tiny_dataset, "kits", "test", crop=CROP, ids=["case_001"])
    assert [d["case"] for d in ds.data] == ["case_001"]


def test_unknown_ids_and_empty_parts_are_refused(tiny_dataset) -> None:
    with pytest.raises(KeyError, match="unknown case"):
        build_dataset(tiny_dataset, "custom", "train", crop=CROP, ids=["nope"])
    root = make_dataset(tiny_dataset.parent / "empty", n=3, empty=(0, 1, 2))
    with pytest.raises(ValueError, match="no cases"), pytest.warns(UserWarning):
        build_dataset(root, "custom", "train", crop=CROP, ids=["case_000"])


def test_resampled_label_matches_the_source_volume(tiny_dataset) -> None:
    """Tumour volume in mm³ survives resampling to 1 mm (within partial-volume error)."""
    index = read_index(tiny_dataset)
    entry = index.cases["case_000"]
    ds = build_dataset(tiny_dataset, "custom", "test", crop=CROP, ids=["case_000"])
    resampled = float(ds[0]["label"].sum())  # 1 mm³ voxels
    original = entry.target_voxels * float(np.prod(entry.spacing))
    assert resampled == pytest.approx(original, rel=0.2)
