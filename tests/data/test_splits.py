"""Train/val/test splits (sam3d.data.splits): shipped official folds, seeded splits, files."""

from __future__ import annotations

import json
import warnings

import pytest

from sam3d.data.splits import (
    FORMAT,
    OFFICIAL,
    PARTS,
    SplitError,
    check_split,
    load_split,
    make_split,
    official_split,
    resolve_split,
    save_split,
)

FOLD0_SIZES = {"kits": (209, 30, 61), "pancreas": (196, 28, 57), "lits": (83, 11, 24),
               "colon": (89, 11, 26)}


def _ids(n: int, prefix: str = "case_") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def _all(split) -> set[str]:
    return set().union(*(set(split[p]) for p in PARTS))


def _assert_disjoint(split) -> None:
    sizes = sum(len(split[p]) for p in PARTS)
    assert len(_all(split)) == sizes, "parts overlap or hold duplicates"


# ----------------------------------------------------------------------- official


def test_official_names():
    assert set(OFFICIAL) == set(FOLD0_SIZES)


@pytest.mark.parametrize("name", sorted(FOLD0_SIZES))
def test_official_fold0_sizes(name):
    split = official_split(name)
    assert tuple(len(split[p]) for p in PARTS) == FOLD0_SIZES[name]
    assert split == official_split(name, 0)
    _assert_disjoint(split)
    for part in PARTS:
        assert split[part] == sorted(split[part])
        assert all(isinstance(i, str) and i for i in split[part])


@pytest.mark.parametrize("name", sorted(FOLD0_SIZES))
def test_official_test_sets_partition_all_cases(name):
    folds = [official_split(name, k) for k in range(5)]
    cases = _all(folds[0])
    assert len(cases) == sum(FOLD0_SIZES[name])
    for fold in folds:
        _assert_disjoint(fold)
        assert _all(fold) == cases  # every fold covers the same cases
    tests = [set(f["test"]) for f in folds]
    assert sum(len(t) for t in tests) == len(cases)
    assert set().union(*tests) == cases


def test_official_split_errors():
    with pytest.raises(SplitError, match="no official split"):
        official_split("samples")
    for fold in (-1, 5):
        with pytest.raises(SplitError, match="fold must be in 0..4"):
            official_split("kits", fold)


# ------------------------------------------------------------------------ seeded


def test_make_split_is_deterministic_by_seed():
    ids = _ids(50)
    a, b = make_split(ids, seed=3), make_split(ids, seed=3)
    assert a == b
    assert make_split(ids, seed=4) != a
    assert make_split(ids) == make_split(ids, seed=0)


def test_make_split_is_independent_of_input_order():
    ids = _ids(40)
    shuffled = ids[::-1][5:] + ids[::-1][:5]
    assert make_split(ids, seed=1) == make_split(shuffled, seed=1)
    assert make_split(ids, seed=1) == make_split(set(ids), seed=1)
    assert make_split(ids, seed=1) == make_split(iter(shuffled), seed=1)  # a one-pass iterator


@pytest.mark.parametrize("n, sizes", [(10, (7, 1, 2)), (100, (70, 10, 20)), (20, (14, 2, 4))])
def test_make_split_sizes(n, sizes):
    ids = _ids(n)
    split = make_split(ids, seed=7)
    assert tuple(len(split[p]) for p in PARTS) == sizes
    _assert_disjoint(split)
    assert _all(split) == set(ids)
    assert all(split[p] == sorted(split[p]) for p in PARTS)


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_make_split_every_part_non_empty_for_few_cases(n):
    for seed in range(5):
        split = make_split(_ids(n), seed=seed)
        assert all(len(split[p]) >= 1 for p in PARTS)
        assert _all(split) == set(_ids(n))


def test_make_split_custom_fractions():
    split = make_split(_ids(10), fractions=(0.5, 0.0, 0.5))
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (5, 0, 5)


@pytest.mark.parametrize("ids", [[], ["a"], ["a", "b"]])
def test_make_split_needs_three_cases(ids):
    with pytest.raises(SplitError, match="at least 3"):
        make_split(ids)


def test_make_split_duplicate_ids():
    with pytest.raises(SplitError, match="not unique"):
        make_split(["a", "b", "c", "a"])


@pytest.mark.parametrize("fractions", [
    (0.7, 0.2, 0.2), (0.8, -0.1, 0.3), (0.7, 0.3), (0.5, 0.25, 0.25, 0.0), (float("nan"), 0, 1),
])
def test_make_split_bad_fractions(fractions):
    with pytest.raises(SplitError, match="fractions"):
        make_split(_ids(10), fractions=fractions)


def test_make_split_without_training_case():
    with pytest.raises(SplitError, match="no training case"):
        make_split(_ids(3), fractions=(0.0, 0.5, 0.5))


# ------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    split = make_split(_ids(12), seed=2)
    path = save_split(tmp_path / "sub" / "split.json", split, seed=2, source="unit test")
    assert path == tmp_path / "sub" / "split.json"
    assert load_split(path) == split
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT and doc["seed"] == 2 and doc["source"] == "unit test"
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temporary left


def test_save_split_sorts_parts(tmp_path):
    path = save_split(tmp_path / "s.json", {"train": ["c", "a"], "val": ["b"], "test": ["d"]})
    assert load_split(path) == {"train": ["a", "c"], "val": ["b"], "test": ["d"]}


def test_save_split_refuses_overlap(tmp_path):
    with pytest.raises(SplitError, match="'a' is in both"):
        save_split(tmp_path / "s.json", {"train": ["a", "b"], "val": ["a"], "test": []})
    assert not (tmp_path / "s.json").exists()


def _write(tmp_path, doc) -> object:
    path = tmp_path / "split.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_load_split_rejects_overlap(tmp_path):
    path = _write(tmp_path, {"format": FORMAT, "train": ["a", "b"], "val": [], "test": ["b"]})
    with pytest.raises(SplitError, match="'b' is in both 'train' and 'test'") as info:
        load_split(path)
    assert "split.json" in str(info.value)


@pytest.mark.parametrize("doc", [
    "{broken",
    json.dumps(["train"]),
    json.dumps({"train": ["a"], "val": [], "test": []}),  # no format
    json.dumps({"format": "sam3d-split/0", "train": ["a"], "val": [], "test": []}),
    json.dumps({"format": FORMAT, "train": "abc", "val": [], "test": []}),
    json.dumps({"format": FORMAT, "train": {"a": 1}, "val": [], "test": []}),
    json.dumps({"format": FORMAT, "train": 5, "val": [], "test": []}),
    json.dumps({"format": FORMAT, "train": ["a", 1], "val": [], "test": []}),
])
def test_load_split_rejects_malformed_files(tmp_path, doc):
    with pytest.raises(SplitError):
        load_split(_write(tmp_path, doc))


def test_load_split_missing_or_binary_file(tmp_path):
    with pytest.raises(SplitError, match="cannot read"):
        load_split(tmp_path / "absent.json")
    path = tmp_path / "binary.json"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(SplitError, match="cannot read"):
        load_split(path)


def test_check_split_requires_all_parts():
    with pytest.raises(SplitError, match="'val'"):
        check_split({"train": ["a"], "test": ["b"]})
    check_split({"train": ["a"], "val": [], "test": ["b"]})  # raises on failure


# ----------------------------------------------------------------------- resolve


def test_resolve_split_file_wins(tmp_path):
    kits = official_split("kits")
    available = sorted(_all(kits))
    mine = {"train": available[:5], "val": available[5:6], "test": available[6:8]}
    path = save_split(tmp_path / "mine.json", mine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_split("kits", available, split_file=path) == mine
        assert resolve_split("phantoms", available, split_file=path, seed=9) == mine


def test_resolve_split_file_with_unknown_case(tmp_path):
    path = save_split(tmp_path / "s.json", {"train": ["a", "b"], "val": ["c"], "test": ["zz"]})
    with pytest.raises(SplitError, match="not in the dataset"):
        resolve_split("custom", ["a", "b", "c"], split_file=path)


def test_resolve_official_all_prepared_is_silent():
    kits = official_split("kits", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_split("kits", _all(kits), fold=2) == kits


def test_resolve_official_restricted_to_prepared_cases():
    lits = official_split("lits")
    available = set(lits["train"][:10] + lits["val"][:2] + lits["test"][:3])
    with pytest.warns(UserWarning, match="103 of 118 cases .* not prepared"):
        split = resolve_split("lits", available)
    assert split == {"train": lits["train"][:10], "val": lits["val"][:2],
                     "test": lits["test"][:3]}


def test_resolve_official_with_an_unknown_case():
    available = set(official_split("colon")["train"]) | {"not_a_colon_case"}
    with pytest.raises(SplitError, match="not_a_colon_case"):
        resolve_split("colon", available)


@pytest.mark.parametrize("name", ["samples", "phantoms", "custom", "my_data"])
def test_resolve_non_official_is_seeded(name):
    ids = _ids(20)
    assert resolve_split(name, ids, seed=5) == make_split(ids, seed=5)
    assert resolve_split(name, reversed(ids), seed=5) == make_split(ids, seed=5)
