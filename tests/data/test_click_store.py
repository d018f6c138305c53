"""The click files for exact replay (sam3d.data.click_store): a ClickSet validates and normalises
what it is given, save/load round-trips exactly (one case per line, written atomically), and
malformed files are refused with a ClickFileError that says where.

Moved here from tests/data/test_clicks.py (the storage section) and extended."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sam3d.data import click_store
from sam3d.data.click_store import DEFAULT_SPACE, ClickSet, load_clicks, save_clicks
from sam3d.data.clicks import Click, ClickError, ClickFileError, case_rng, lesion_clicks


def ball(shape=(32, 32, 32), centre=(16, 16, 16), radius=8.0) -> np.ndarray:
    grid = np.indices(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2



def make_sets() -> list[ClickSet]:
    mask = ball(radius=4)
    pts = lesion_clicks(mask, 3, case_rng(0, "case_a", "test-k3"))
    return [
        ClickSet("case_a", pts, [True] * 3, "test-k3", 0, (32, 32, 32)),
        ClickSet.from_clicks("case_b", [Click((0, 1, 2), True), Click((3, 4, 5), False)],
                             "refine", 1, (4, 5, 6)),
        ClickSet("case_c", [], [], "test-k1", 2, (1, 1, 1), space="voxels"),
    ]


def test_json_round_trip(tmp_path):
    sets = make_sets()
    assert sets[0].points and all(type(v) is int for p in sets[0].points for v in p)
    path = save_clicks(tmp_path / "sub" / "clicks.json", sets)
    assert load_clicks(path) == sets
    doc = json.loads(path.read_text())
    assert doc["format"] == "sam3d-clicks/1" and len(doc["cases"]) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["clicks.json"]  # no temp left
    assert np.array_equal(load_clicks(path)[0].array(), sets[0].array())
    # Replay: the same seed regenerates exactly the stored clicks.
    again = lesion_clicks(ball(radius=4), 3, case_rng(0, "case_a", "test-k3"))
    assert np.array_equal(again, load_clicks(path)[0].array())


def write_doc(path: Path, cases: list[dict], fmt: str = "sam3d-clicks/1") -> Path:
    path.write_text(json.dumps({"format": fmt, "cases": cases}))
    return path


def test_load_rejects_click_outside_shape(tmp_path):
    good = make_sets()[1].to_dict()
    bad = {**good, "case": "liver_9", "points": [[0, 1, 2], [3, 5, 5]]}
    path = write_doc(tmp_path / "c.json", [good, bad])
    with pytest.raises(ClickFileError, match=r"cases\[1\]: case 'liver_9': click 1 \(3, 5, 5\)"):
        load_clicks(path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"points": [[0, 1, 2.0], [3, 4, 5]]}, "non-integer"),
        ({"positive": [1, 0]}, "only bools"),
        ({"positive": [True]}, "2 points but 1"),
        ({"seed": "0"}, "seed"),
        ({"shape": [4, 5]}, "shape"),
        ({"extra": 1}, "unknown keys"),
    ],
)
def test_load_validates_types(tmp_path, change, match):
    case = {**make_sets()[1].to_dict(), **change}
    with pytest.raises(ClickFileError, match=match):
        load_clicks(write_doc(tmp_path / "c.json", [case]))


def test_load_validates_file(tmp_path):
    case = make_sets()[1].to_dict()
    with pytest.raises(ClickFileError, match="expected format"):
        load_clicks(write_doc(tmp_path / "a.json", [case], fmt="other/1"))
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ClickFileError, match="not valid JSON"):
        load_clicks(tmp_path / "b.json")
    (tmp_path / "bin.json").write_bytes(b"\x80\x81 not UTF-8 text")
    with pytest.raises(ClickFileError, match=r"bin.json: not valid JSON: 'utf-8' codec"):
        load_clicks(tmp_path / "bin.json")
    with pytest.raises(ClickFileError, match="duplicate"):
        load_clicks(write_doc(tmp_path / "c.json", [case, case]))
    with pytest.raises(ClickFileError, match="duplicate"):
        save_clicks(tmp_path / "d.json", [make_sets()[1]] * 2)




# ------------------------------------------------------------------- ClickSet itself


def test_clickset_normalises_numpy_input_and_is_frozen():
    s = ClickSet("a", np.array([[1, 2, 3], [0, 0, 0]], dtype=np.int32),
                 np.array([True, False]), "test-k2", np.int64(4), [4, 5, 6])
    assert s.points == [(1, 2, 3), (0, 0, 0)] and all(type(v) is int for p in s.points for v in p)
    assert s.positive == [True, False] and all(type(b) is bool for b in s.positive)
    assert s.shape == (4, 5, 6) and type(s.seed) is int and s.seed == 4
    assert s.space == DEFAULT_SPACE
    assert s.array().dtype == np.int64 and s.array().tolist() == [[1, 2, 3], [0, 0, 0]]
    assert ClickSet("a", [], [], "p", 0, (2, 2, 2)).array().shape == (0, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"case": ""}, r"ClickSet.case must be a non-empty string, got ''"),
        ({"protocol": None}, r"ClickSet.protocol must be a non-empty string"),
        ({"space": ""}, r"ClickSet.space must be a non-empty string"),
        ({"seed": -1}, r"case 'a': seed must be an integer ≥ 0, got -1"),
        ({"seed": True}, "seed must be an integer"),
        ({"seed": 1.0}, "seed must be an integer"),
        ({"shape": (4, 5, 0)}, r"case 'a': shape must be 3 positive integers"),
        ({"points": [(0, 0, 6)]}, r"case 'a': click 0 \(0, 0, 6\) is outside"),
        ({"positive": True}, "positive must be a list of only bools"),
        ({"positive": [1]}, "positive must be a list of only bools"),
        ({"positive": [True, True]}, "1 points but 2 positive flags"),
    ],
)
def test_clickset_refuses_bad_fields(kwargs, match):
    fields = {"case": "a", "points": [(0, 1, 2)], "positive": [True], "protocol": "test-k1",
              "seed": 0, "shape": (4, 5, 6), **kwargs}
    with pytest.raises(ClickError, match=match):
        ClickSet(**fields)


def test_from_clicks_takes_only_clicks():
    s = ClickSet.from_clicks("b", [Click((1, 1, 1), False)], "refine", 0, (2, 2, 2))
    assert s.points == [(1, 1, 1)] and s.positive == [False]
    with pytest.raises(TypeError, match="Click instances"):
        ClickSet.from_clicks("b", [((1, 1, 1), False)], "refine", 0, (2, 2, 2))


def test_dict_round_trip_and_refusals():
    s = make_sets()[1]
    d = s.to_dict()
    assert d == {"case": "case_b", "protocol": "refine", "seed": 1, "shape": [4, 5, 6],
                 "space": DEFAULT_SPACE, "points": [[0, 1, 2], [3, 4, 5]],
                 "positive": [True, False]}
    assert ClickSet.from_dict(d) == s
    del d["space"]  # optional: the model grid
    assert ClickSet.from_dict(d).space == DEFAULT_SPACE
    with pytest.raises(ClickError, match="a case must be a JSON object, got list"):
        ClickSet.from_dict([1, 2])
    with pytest.raises(ClickError, match=r"missing keys \['seed'\], unknown keys \[\]"):
        ClickSet.from_dict({k: v for k, v in d.items() if k != "seed"})
    # a string of three digits must not pass as three coordinates
    with pytest.raises(ClickError, match="points must be a list, got '012'"):
        ClickSet.from_dict({**d, "points": "012", "positive": [True, True, True]})


# ------------------------------------------------------------------------- the file


def test_one_case_per_line_and_unicode_ids(tmp_path):
    sets = [*make_sets(), ClickSet("fall_é", [(0, 0, 0)], [True], "test-k1", 0, (1, 1, 1))]
    path = save_clicks(tmp_path / "clicks.json", sets)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == '{"format": "sam3d-clicks/1", "cases": [' and lines[-1] == "]}"
    assert [json.loads(line.rstrip(","))["case"] for line in lines[1:-1]] == [
        "case_a", "case_b", "case_c", "fall_é"]
    assert "fall_é" in text  # not \u-escaped
    assert load_clicks(path) == sets
    assert load_clicks(save_clicks(tmp_path / "empty.json", [])) == []
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_the_same_case_under_another_protocol_or_seed_is_not_a_duplicate(tmp_path):
    a = ClickSet("a", [(0, 0, 0)], [True], "test-k1", 0, (1, 1, 1))
    sets = [a, dataclasses.replace(a, protocol="test-k3"), dataclasses.replace(a, seed=1)]
    assert load_clicks(save_clicks(tmp_path / "c.json", sets)) == sets
    with pytest.raises(ClickFileError, match=r"duplicate case/protocol/seed \('a', 'test-k1', 0\)"):
        save_clicks(tmp_path / "d.json", [*sets, a])
    assert not (tmp_path / "d.json").exists()


def test_save_takes_only_clicksets(tmp_path):
    with pytest.raises(TypeError, match="iterable of ClickSet"):
        save_clicks(tmp_path / "c.json", [make_sets()[1].to_dict()])
    assert not (tmp_path / "c.json").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = save_clicks(tmp_path / "clicks.json", make_sets()[:1])
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(click_store.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_clicks(path, make_sets())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clicks.json"]


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], r"expected format 'sam3d-clicks/1', found 'list'"),
        ({"cases": []}, r"expected format 'sam3d-clicks/1', found None"),
        ({"format": "sam3d-clicks/1", "cases": {}}, "expected keys 'format' and 'cases'"),
        ({"format": "sam3d-clicks/1", "cases": [], "note": 1}, "expected keys"),
        ({"format": "sam3d-clicks/1", "cases": ["a"]},
         r"cases\[0\]: a case must be a JSON object, got str"),
    ],
)
def test_load_refuses_malformed_documents(tmp_path, doc, match):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ClickFileError, match=match) as info:
        load_clicks(path)
    assert str(info.value).startswith(str(path))  # the message names the file
