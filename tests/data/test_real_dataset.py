"""Tests for sam3d.data.real_dataset on the real samples (LiTS 117 and the TotalSegmentator CT;
the lung sources are left out to keep the test quick: their masks and nodules are tested in
test_organ_masks and test_synth_tumours)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam3d.data import layout
from sam3d.data.io import load_volume
from sam3d.data.lesion_split import EXCLUDED, lesion_components
from sam3d.data.real_dataset import (
    LIVER_SOURCES,
    SPLIT_FILE,
    TUMOURS,
    RealDatasetSpec,
    held_out_lesions,
    lesion_mask,
    make_real_split,
    write_lesion_cases,
    write_real_dataset,
)
from sam3d.data.samples import fetch_samples
from sam3d.data.splits import load_split
from sam3d.hashing import sha256_file

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SPEC = RealDatasetSpec(sources=("lits117", "totalseg_ct"), per_source=2, tumours=(1, 2))


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    fetch_samples(SAMPLES)
    return write_real_dataset(tmp_path_factory.mktemp("real") / "ds", SAMPLES, SPEC)


def _read(root: Path, case: str):
    return (load_volume(root / case / "image.nii.gz"),
            load_volume(root / case / "label.nii.gz", "label"))


def test_layout_and_split(written) -> None:
    index = layout.read_index(written)
    split = load_split(written / SPLIT_FILE)
    assert split == make_real_split(SPEC)
    assert split["test"] == ["lits117_test"]
    assert split["val"] == ["synth_lits117_1", "synth_totalseg_ct_1"]
    assert sorted(sum(split.values(), [])) == index.case_ids()
    assert "lits117_train" in split["train"]
    assert index.target == 2 and all(index.cases[c].target_voxels for c in index.case_ids())


def test_no_leakage_via_recorded_offsets(written) -> None:
    original = load_volume(SAMPLES / "lits117" / "image.nii.gz")
    original_label = load_volume(SAMPLES / "lits117" / "label.nii.gz", "label")
    doc = json.loads((written / "dataset.json").read_text())["cases"]
    meta = doc["lits117_train"]["lesion_split"]
    assert meta == doc["lits117_test"]["lesion_split"]
    axis = meta["axis"]
    forbidden = set(range(*meta["test"])) | set(range(*meta["band"]))
    for case in ("lits117_train", "lits117_test"):
        image, label = _read(written, case)
        off = doc[case]["offset"]
        index = tuple(slice(o, o + s) for o, s in zip(off, image.shape, strict=True))
        np.testing.assert_array_equal(image.array,
                                      np.clip(np.rint(original.array[index]), -1024, 3071))
        np.testing.assert_allclose(image.affine[:3, 3],
                                   original.affine[:3, :3] @ off + original.affine[:3, 3])
        if case == "lits117_train":
            rows = set(range(off[axis], off[axis] + image.shape[axis]))
            assert not rows & forbidden  # no training voxel from the test slab or its band
            assert image.shape[axis] >= 64
            np.testing.assert_array_equal(label.array, original_label.array[index])
    # every test lesion is whole, as target, in the test sub-volume; nothing else is target
    _, test_label = _read(written, "lits117_test")
    comp, _ = lesion_components(original_label.array, 2)
    off = doc["lits117_test"]["offset"]
    sub = comp[tuple(slice(o, o + s) for o, s in zip(off, test_label.shape, strict=True))]
    tests = [les for les in meta["lesions"] if les["role"] == "test"]
    assert len([les for les in tests if les["voxels"] >= 100]) >= 3
    for les in tests:
        assert np.count_nonzero(sub == les["id"]) == les["voxels"]
        assert np.all(test_label.array[sub == les["id"]] == 2)
    assert np.count_nonzero(test_label.array == 2) == sum(les["voxels"] for les in tests)
    excluded = [les["id"] for les in meta["lesions"] if les["role"] == "excluded"]
    assert np.all(test_label.array[np.isin(sub, excluded)] == EXCLUDED)


def test_synthetic_cases_add_tumours_inside_the_liver(written) -> None:
    _, base = _read(written, "lits117_train")
    doc = json.loads((written / "dataset.json").read_text())["cases"]
    for case in ("synth_lits117_0", "synth_lits117_1"):
        _, label = _read(written, case)
        added = (label.array == 2) & (base.array != 2)
        assert added.any() and np.all(base.array[added] == 1)  # pasted into the liver only
        assert len(doc[case]["synthetic"]) >= 1
    _, ts = _read(written, "synth_totalseg_ct_0")
    organ = load_volume(SAMPLES / "totalseg_ct" / "label.nii.gz", "label").array == 5
    assert np.all(organ[ts.array == 2]) and np.count_nonzero(ts.array == 2) > 0


def test_idempotent_and_deterministic(written, tmp_path) -> None:
    files = sorted(p for p in written.rglob("*") if p.is_file())
    before = {p: (sha256_file(p), p.stat().st_mtime_ns) for p in files}
    write_real_dataset(written, SAMPLES, SPEC)  # the same arguments: nothing rewritten
    assert {p: (sha256_file(p), p.stat().st_mtime_ns) for p in files} == before
    other = write_real_dataset(tmp_path / "again", SAMPLES,
                               RealDatasetSpec(sources=("totalseg_ct",), per_source=2,
                                               tumours=(1, 2), val_sources=("totalseg_ct",)))
    a = sha256_file(other / "synth_totalseg_ct_0" / "label.nii.gz")
    b = sha256_file(written / "synth_totalseg_ct_0" / "label.nii.gz")
    assert a != b  # its own seed stream per source position (first source here, second there)
    again = write_real_dataset(tmp_path / "again2", SAMPLES,
                               RealDatasetSpec(sources=("totalseg_ct",), per_source=2,
                                               tumours=(1, 2), val_sources=("totalseg_ct",)))
    for rel in ("lits117_train/image.nii.gz", "lits117_test/label.nii.gz",
                "synth_totalseg_ct_0/image.nii.gz", "synth_totalseg_ct_1/label.nii.gz"):
        assert sha256_file(other / rel) == sha256_file(again / rel)


def test_by_default_the_livers_with_each_source_s_own_tumours(tmp_path) -> None:
    default = RealDatasetSpec()
    assert default.sources == LIVER_SOURCES and default.tumours is None
    spec = RealDatasetSpec(sources=("totalseg_ct",), per_source=2, val_sources=("totalseg_ct",))
    root = write_real_dataset(tmp_path / "own", SAMPLES, spec)
    doc = json.loads((root / "dataset.json").read_text())["cases"]
    lo, hi = TUMOURS["totalseg_ct"][1]
    for case in ("synth_totalseg_ct_0", "synth_totalseg_ct_1"):
        assert lo <= len(doc[case]["synthetic"]) <= hi  # the source's own count, not (2, 4)
        assert doc[case]["tumour_spec"] == TUMOURS["totalseg_ct"][0].params()


def test_the_pipeline_reads_it(written) -> None:
    from sam3d.data.pipeline import build_dataset
    from sam3d.data.splits import resolve_split

    split = resolve_split("samples", layout.read_index(written).case_ids(),
                          split_file=written / SPLIT_FILE)
    assert split == make_real_split(SPEC)
    # the test case loads (statistics from itself, to stay quick)
    ds = build_dataset(written, "samples", "test", crop=64, ids=["lits117_test"])
    sample = ds[0]
    sample = sample[0] if isinstance(sample, list) else sample
    assert sample["label"].shape[1:] == sample["image"].shape[1:]
    assert float(sample["label"].sum()) > 0


def test_one_case_per_held_out_lesion(written, tmp_path) -> None:
    out = write_lesion_cases(written, tmp_path / "lesions", min_voxels=100)
    index = layout.read_index(out)
    meta = json.loads((written / "dataset.json").read_text())["cases"]["lits117_test"]
    big = {les["id"]: les["voxels"] for les in meta["lesion_split"]["lesions"]
           if les["role"] == "test" and les["voxels"] >= 100}
    assert index.case_ids() == sorted(f"lits117_test_lesion_{i}" for i in big)
    _, full = _read(written, "lits117_test")
    for lesion_id, voxels in big.items():
        _, label = _read(out, f"lits117_test_lesion_{lesion_id}")
        assert np.count_nonzero(label.array == 2) == voxels
        # the other lesions are excluded, the rest of the label is as it was
        np.testing.assert_array_equal(label.array == EXCLUDED,
                                      (full.array == EXCLUDED)
                                      | ((full.array == 2) & (label.array != 2)))
    assert load_split(out / SPLIT_FILE)["test"] == index.case_ids()
    with pytest.raises(ValueError):
        write_lesion_cases(written, tmp_path / "x", min_voxels=0)


def test_held_out_lesions_are_the_recorded_ones_found_in_any_label(written) -> None:
    full = load_volume(SAMPLES / "lits117" / "label.nii.gz", "label").array
    doc = json.loads((written / "dataset.json").read_text())["cases"]["lits117_test"]
    lesions = held_out_lesions(full, SPEC)
    recorded = [les for les in doc["lesion_split"]["lesions"]
                if les["role"] == "test" and les["voxels"] >= 100]
    assert sorted(les["id"] for les in lesions) == sorted(les["id"] for les in recorded)
    assert [les["voxels"] for les in lesions] == sorted((les["voxels"] for les in recorded),
                                                        reverse=True)  # largest first
    _, sub = _read(written, "lits117_test")
    for les in lesions:
        whole = lesion_mask(full, les)
        assert int(whole.sum()) == les["voxels"]
        here = lesion_mask(sub.array, les, offset=doc["offset"])  # the same, in the sub-volume
        x, y, z = doc["offset"]
        np.testing.assert_array_equal(here, whole[x:x + sub.shape[0], y:y + sub.shape[1],
                                                  z:z + sub.shape[2]])


@pytest.mark.parametrize("kwargs", [{"sources": ("lits117", "kits")}, {"per_source": 1},
                                    {"tumours": (3, 1)}, {"seed": -1},
                                    {"val_sources": ("lung1",), "sources": ("lits117",)}])
def test_bad_spec(kwargs) -> None:
    with pytest.raises(ValueError):
        RealDatasetSpec(**kwargs)


def test_script_refuses_bad_arguments_with_a_message(tmp_path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_real_dataset_script",
        Path(__file__).resolve().parents[2] / "data_scripts/make_real_dataset.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--per-source", "1", "--out", str(tmp_path / "ds")]) == 1
    assert "make_real_dataset: error: per_source must be ≥ 2" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()
