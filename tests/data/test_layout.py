"""The common dataset layout (sam3d.data.layout): dataset.json writing, reading and checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam3d.data.layout import (
    FORMAT,
    INDEX,
    CaseEntry,
    DatasetIndex,
    LayoutError,
    case_record,
    check_case_ids,
    read_index,
    write_index,
)

LABELS = {0: "background", 1: "organ", 2: "tumour"}


def _touch_case(root: Path, case_id: str) -> None:
    (root / case_id).mkdir(parents=True, exist_ok=True)
    (root / case_id / "image.nii.gz").write_bytes(b"")
    (root / case_id / "label.nii.gz").write_bytes(b"")


def _record(case_id: str, target_voxels: int | None = 5, **extra) -> dict:
    rec = {"image": f"{case_id}/image.nii.gz", "label": f"{case_id}/label.nii.gz",
           "shape": [6, 7, 8], "spacing": [0.8, 0.9, 2.5]}
    if target_voxels is not None:
        rec["target_voxels"] = target_voxels
    rec.update(extra)
    return rec


def _dataset(root: Path, cases: dict[str, dict]) -> Path:
    for case_id in cases:
        _touch_case(root, case_id)
    return write_index(root, "toy", LABELS, 2, cases, source="unit test", description="tiny")


def _write_doc(root: Path, doc) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / INDEX).write_text(doc if isinstance(doc, str) else json.dumps(doc))


def _valid_doc(cases: dict | None = None) -> dict:
    return {"format": FORMAT, "name": "toy", "labels": {"0": "background", "2": "tumour"},
            "target": 2, "cases": {"a": _record("a")} if cases is None else cases}


def test_round_trip_with_per_case_overrides(tmp_path):
    cases = {
        "case_b": _record("case_b", 12),
        "case_a": _record("case_a", 0, target=1, labels={"0": "bg", "1": "cancer"},
                          note="relabelled"),
        "case_c": _record("case_c", None),
    }
    path = _dataset(tmp_path, cases)
    assert path == tmp_path / INDEX

    index = read_index(tmp_path)

    assert isinstance(index, DatasetIndex)
    assert index.root == tmp_path and index.name == "toy"
    assert index.source == "unit test" and index.description == "tiny"
    assert index.labels == LABELS and index.target == 2
    assert index.case_ids() == ["case_a", "case_b", "case_c"]

    a, b, c = (index.cases[i] for i in ("case_a", "case_b", "case_c"))
    assert isinstance(a, CaseEntry)
    assert a.target == 1 and a.labels == {0: "bg", 1: "cancer"} and a.note == "relabelled"
    assert a.target_voxels == 0
    assert b.target == 2 and b.labels == LABELS and b.note == "" and b.target_voxels == 12
    assert c.target_voxels is None
    assert b.image == tmp_path / "case_b/image.nii.gz"
    assert b.label == tmp_path / "case_b/label.nii.gz"
    assert b.shape == (6, 7, 8) and b.spacing == (0.8, 0.9, 2.5)
    assert a.as_dict() == {"case": "case_a", "image": str(tmp_path / "case_a/image.nii.gz"),
                           "label": str(tmp_path / "case_a/label.nii.gz"), "target": 1,
                           "spacing": [0.8, 0.9, 2.5]}


def test_written_file_is_sorted_and_formatted(tmp_path):
    _dataset(tmp_path, {"z": _record("z"), "a": _record("a")})
    doc = json.loads((tmp_path / INDEX).read_text())
    assert doc["format"] == FORMAT
    assert list(doc["cases"]) == ["a", "z"]
    assert doc["labels"] == {"0": "background", "1": "organ", "2": "tumour"}
    assert doc["target"] == 2


def test_atomic_write_leaves_no_temporary_file(tmp_path):
    _dataset(tmp_path, {"a": _record("a", 1)})
    _dataset(tmp_path, {"a": _record("a", 3)})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", INDEX]
    assert not list(tmp_path.rglob("*.tmp"))
    assert read_index(tmp_path).cases["a"].target_voxels == 3


def test_write_index_refuses_bad_case_ids(tmp_path):
    with pytest.raises(LayoutError, match="invalid case id"):
        write_index(tmp_path, "toy", LABELS, 2, {"a/b": _record("a")})
    assert not (tmp_path / INDEX).exists()


@pytest.mark.parametrize("case_id", ["a/b", "a\\b", "..", ".", ".hidden", "", 3])
def test_check_case_ids_rejects(case_id):
    with pytest.raises(LayoutError, match="invalid case id"):
        check_case_ids(["fine", case_id])


def test_check_case_ids_accepts_plain_names():
    check_case_ids(["case_00000", "colon_001", "a.b", "x-1"])  # raises on failure


# --------------------------------------------------------------------------- errors


def test_missing_dataset_json(tmp_path):
    with pytest.raises(LayoutError, match="not found"):
        read_index(tmp_path)


def test_invalid_json(tmp_path):
    _write_doc(tmp_path, "{not json")
    with pytest.raises(LayoutError, match="not valid JSON"):
        read_index(tmp_path)


@pytest.mark.parametrize("doc", [{"format": "sam3d-dataset/0"}, {"name": "x"}, [1, 2], "text"])
def test_wrong_format(tmp_path, doc):
    _write_doc(tmp_path, json.dumps(doc))
    with pytest.raises(LayoutError, match="format"):
        read_index(tmp_path)


@pytest.mark.parametrize("change", [
    {"labels": None}, {"target": "two"}, {"labels": ["background"]}, {"cases": ["a"]},
])
def test_malformed_top_level_fields(tmp_path, change):
    _touch_case(tmp_path, "a")
    doc = {**_valid_doc(), **change}
    _write_doc(tmp_path, doc)
    with pytest.raises(LayoutError, match="malformed|must be an object"):
        read_index(tmp_path)


def test_missing_top_level_field(tmp_path):
    doc = _valid_doc()
    del doc["target"]
    _write_doc(tmp_path, doc)
    with pytest.raises(LayoutError, match="missing or malformed"):
        read_index(tmp_path)


@pytest.mark.parametrize("change", [
    {"shape": [6, 7]}, {"spacing": [1.0, 1.0]}, {"shape": "big"}, {"labels": ["x"]},
    {"target": "two"},
])
def test_malformed_case_records(tmp_path, change):
    _touch_case(tmp_path, "a")
    _write_doc(tmp_path, _valid_doc({"a": {**_record("a"), **change}}))
    with pytest.raises(LayoutError, match="'a'"):
        read_index(tmp_path)


def test_case_record_missing_a_key(tmp_path):
    _touch_case(tmp_path, "a")
    rec = _record("a")
    del rec["label"]
    _write_doc(tmp_path, _valid_doc({"a": rec}))
    with pytest.raises(LayoutError, match="malformed"):
        read_index(tmp_path)


def test_missing_file(tmp_path):
    _touch_case(tmp_path, "a")
    (tmp_path / "a" / "label.nii.gz").unlink()
    _write_doc(tmp_path, _valid_doc())
    with pytest.raises(LayoutError, match="is missing") as info:
        read_index(tmp_path)
    assert "label.nii.gz" in str(info.value)


def test_path_escaping_the_root(tmp_path):
    root = tmp_path / "ds"
    _touch_case(root, "a")
    (tmp_path / "x.nii.gz").write_bytes(b"")  # exists, but outside the dataset folder
    _write_doc(root, _valid_doc({"a": _record("a", image="../x.nii.gz")}))
    with pytest.raises(LayoutError, match="outside the dataset folder"):
        read_index(root)


def test_absolute_path(tmp_path):
    root = tmp_path / "ds"
    _touch_case(root, "a")
    inside = str((root / "a" / "image.nii.gz").resolve())  # absolute, even though inside
    _write_doc(root, _valid_doc({"a": _record("a", image=inside)}))
    with pytest.raises(LayoutError, match="outside the dataset folder"):
        read_index(root)


@pytest.mark.parametrize("case_id", ["a/b", "..", ".hidden"])
def test_invalid_case_ids_in_the_index(tmp_path, case_id):
    _write_doc(tmp_path, _valid_doc({case_id: _record("a")}))
    with pytest.raises(LayoutError, match="invalid case id"):
        read_index(tmp_path)


# ---------------------------------------------------------------- lesions and records


def test_lesion_cases_skip_cases_without_target_voxels(tmp_path):
    _dataset(tmp_path, {"a": _record("a", 0), "b": _record("b", 4), "c": _record("c", None)})
    index = read_index(tmp_path)
    assert index.lesion_cases() == ["b", "c"]  # unknown count (None) is kept
    assert index.lesion_cases(["a", "b"]) == ["b"]
    assert index.lesion_cases([]) == []


def test_case_record_counts_target_voxels():
    image = np.zeros((6, 7, 8), np.float32)
    label = np.zeros((6, 7, 8), np.int16)
    label[1:3, 1:3, 1:3] = 1  # 8 organ voxels
    label[4, 4, 4:7] = 2  # 3 tumour voxels
    rec = case_record("case_7", image, (0.8, 0.9, 2.5), label, target=2, note="x", extra=None)
    assert rec == {"image": "case_7/image.nii.gz", "label": "case_7/label.nii.gz",
                   "shape": [6, 7, 8], "spacing": [0.8, 0.9, 2.5], "target_voxels": 3,
                   "note": "x"}
    assert case_record("case_7", image, (1, 1, 1), label, target=1)["target_voxels"] == 8
    assert case_record("case_7", image, (1, 1, 1), label, target=3)["target_voxels"] == 0


def test_case_record_from_a_shape_without_label():
    rec = case_record("c", (6, 7, 8), np.array([1, 2, 3]), None, target=2)
    assert rec["shape"] == [6, 7, 8] and rec["spacing"] == [1.0, 2.0, 3.0]
    assert "target_voxels" not in rec
    assert all(isinstance(s, int) for s in rec["shape"])
    json.dumps(rec)  # plain JSON types only


def test_case_record_feeds_write_index(tmp_path):
    label = np.zeros((6, 7, 8), np.uint8)
    label[0, 0, :2] = 2
    _touch_case(tmp_path, "c1")
    _touch_case(tmp_path, "c2")
    write_index(tmp_path, "toy", LABELS, 2, {
        "c1": case_record("c1", label, (1, 1, 1), label, 2),
        "c2": case_record("c2", label, (1, 1, 1), np.zeros_like(label), 2),
    })
    index = read_index(tmp_path)
    assert index.cases["c1"].target_voxels == 2
    assert index.lesion_cases() == ["c1"]
