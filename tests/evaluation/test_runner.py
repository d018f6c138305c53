"""The evaluation runner's own pieces (sam3d.evaluation.runner), on hand-computed values: the
summaries (per position, mode and k; the refinement curves and their areas), the CSV writer,
the official protocol's click seeds and replayed-click indices, the protocol check, and which
cases a run scores and when it refuses to run. Whole runs with replay are in test_protocol.py,
test_position_protocol.py and test_official_runner.py; the held-out split end to end in
test_held_out_split.py."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cube_cases import SPEC, write_cube_dataset
from stub_models import CubeModel

from sam3d.data.splits import SplitRef, save_split
from sam3d.evaluation.protocol import EvalSettings
from sam3d.evaluation.runner import (
    PROTOCOLS,
    ROW_FIELDS,
    _indices_of,
    check_protocol,
    evaluate_dataset,
    evaluate_protocol,
    official_seed,
    summarise,
    summarise_refinement,
    write_csv,
)

CUBE = (slice(8, 13), slice(8, 13), slice(8, 13))


def _row(case, k, mode, dice, nsd, seconds, position=None) -> dict:
    row = {"case": case, "k": k, "mode": mode, "dice": dice, "nsd": nsd, "seconds": seconds}
    return row if position is None else {**row, "position": position}


def _numbers(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if isinstance(v, float)} for r in rows]


def _labels(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not isinstance(v, float)} for r in rows]


# ------------------------------------------------------------------------- summaries


def test_summarise_groups_by_position_mode_and_k() -> None:
    rows = [
        _row("a", 1, "roi", 0.5, 0.4, 1.0, "centre"),
        _row("b", 1, "roi", 0.7, 0.8, 3.0, "centre"),
        _row("a", 10, "roi", 0.95, 1.0, 4.0, "centre"),
        _row("a", 3, "roi", 0.9, 1.0, 2.0, "centre"),
        _row("a", 1, "roi", 0.2, 0.1, 5.0),  # no position: the official random clicks
        _row("a", 1, "official", 0.4, 0.3, 1.0, "random"),
    ]
    out = summarise(rows)
    # positions in the order met, then modes alphabetically, then k numerically (10 after 3);
    # (centre, official) has no row and no summary
    assert _labels(out) == [
        {"position": "centre", "mode": "roi", "k": 1, "cases": 2},
        {"position": "centre", "mode": "roi", "k": 3, "cases": 1},
        {"position": "centre", "mode": "roi", "k": 10, "cases": 1},
        {"position": "random", "mode": "official", "k": 1, "cases": 1},
        {"position": "random", "mode": "roi", "k": 1, "cases": 1},
    ]
    want = [  # population standard deviations: (0.5, 0.7) → 0.1, (0.4, 0.8) → 0.2
        {"dice_mean": 0.6, "dice_std": 0.1, "nsd_mean": 0.6, "nsd_std": 0.2, "seconds_mean": 2.0},
        {"dice_mean": 0.9, "dice_std": 0.0, "nsd_mean": 1.0, "nsd_std": 0.0, "seconds_mean": 2.0},
        {"dice_mean": 0.95, "dice_std": 0.0, "nsd_mean": 1.0, "nsd_std": 0.0,
         "seconds_mean": 4.0},
        {"dice_mean": 0.4, "dice_std": 0.0, "nsd_mean": 0.3, "nsd_std": 0.0, "seconds_mean": 1.0},
        {"dice_mean": 0.2, "dice_std": 0.0, "nsd_mean": 0.1, "nsd_std": 0.0, "seconds_mean": 5.0},
    ]
    for got, exp in zip(_numbers(out), want, strict=True):
        assert got == pytest.approx(exp, abs=1e-12)
    assert summarise([]) == []


def test_summarise_refinement_curves_and_areas() -> None:
    def curve(case, position, dice, nsd):
        return [{"case": case, "position": position, "click": i + 1, "dice": d, "nsd": s}
                for i, (d, s) in enumerate(zip(dice, nsd, strict=True))]

    rows = (curve("a", "centre", [0.2, 0.4, 0.8], [0.1, 0.1, 0.1])
            + curve("b", "centre", [0.6, 0.6, 0.6], [0.0, 0.5, 1.0])
            + curve("a", "margin", [1.0], [0.5]))
    out = summarise_refinement(rows)
    assert [(r["position"], r["click"]) for r in out] == [
        ("centre", 1), ("centre", 2), ("centre", 3), ("centre", "final"), ("centre", "auc"),
        ("centre", "challenge_auc"), ("margin", 1), ("margin", "final"), ("margin", "auc")]
    dice = [r["dice_mean"] for r in out]
    nsd = [r["nsd_mean"] for r in out]
    # per click: the mean over the cases; auc: the mean of the per-case areas, each the
    # trapezoid over clicks 1..n divided by n − 1 — a: (0.3 + 0.6) / 2, b: 0.6 (flat);
    # challenge_auc: unit trapezoids over clicks 2..n, not normalised — a: (0.4 + 0.8) / 2,
    # b: 0.6; NSD a: 0.1, b: (0.5 + 1.0) / 2
    assert dice == pytest.approx([0.4, 0.5, 0.7, 0.7, (0.45 + 0.6) / 2, 0.6, 1.0, 1.0, 1.0])
    assert nsd == pytest.approx([0.05, 0.3, 0.55, 0.55, (0.1 + 0.5) / 2, (0.1 + 0.75) / 2,
                                 0.5, 0.5, 0.5])


def test_write_csv(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("old results\n", encoding="utf-8")
    rows = [{"case": "a", "k": 1, "dice": 0.5, "extra": "dropped"}, {"case": "b", "k": 3}]
    assert write_csv(path, rows, ("case", "dice", "k")) == path
    assert path.read_text(encoding="utf-8").splitlines() == ["case,dice,k", "a,0.5,1", "b,,3"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left
    write_csv(path, [], ROW_FIELDS)
    assert path.read_text(encoding="utf-8").strip() == ",".join(ROW_FIELDS)


# --------------------------------------------------------------------- official protocol


def test_official_seed_is_pinned_and_independent_per_case_and_k() -> None:
    # the seeds of stored official results: changing the hash would break their replay
    assert official_seed(0, "volume-0", 1) == 1261673751
    assert official_seed(0, "volume-0", 3) == 14584116
    assert official_seed(1, "volume-0", 1) == 374669691
    assert official_seed(0, "volume-5", 1) == 2692044552
    assert official_seed(np.int64(0), "volume-0", np.int64(1)) == 1261673751
    seeds = {official_seed(s, f"case_{c}", k) for s in range(3) for c in range(5)
             for k in (1, 3, 10)}
    assert len(seeds) == 45 and all(0 <= s < 2**32 for s in seeds)
    np.random.RandomState(max(seeds))  # a valid legacy-RNG seed


def test_indices_of_replayed_clicks() -> None:
    prompt = np.random.default_rng(0).random((4, 5, 6)) < 0.3
    fg = np.argwhere(prompt)  # C order, as np.flatnonzero
    picks = [5, 0, len(fg) - 1, 5]
    assert _indices_of(prompt, fg[picks]) == picks
    background = np.argwhere(~prompt)[0]
    with pytest.raises(ValueError, match="not lesion voxels of this case's prompt grid"):
        _indices_of(prompt, [fg[0], background])
    early = np.zeros((4, 5, 6), bool)
    early[0, 0, :2] = True
    with pytest.raises(ValueError, match="not lesion voxels"):  # after the last lesion voxel
        _indices_of(early, [(3, 4, 5)])
    with pytest.raises(ValueError):
        _indices_of(early, [(4, 0, 0)])  # outside the grid


def test_check_protocol() -> None:
    assert PROTOCOLS == ("sam3d", "official")
    assert check_protocol("official") == "official"
    assert check_protocol("sam3d", refine=3, position="centre") == "sam3d"
    with pytest.raises(ValueError, match=r"protocol must be one of \('sam3d', 'official'\), "
                                         r"got 'nnunet'"):
        check_protocol("nnunet")
    for bad in ({"refine": 1}, {"position": "margin"}):
        with pytest.raises(ValueError, match="random clicks and no refinement"):
            check_protocol("official", **bad)


def test_evaluate_protocol_checks_before_touching_anything(tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no refinement"):
        evaluate_protocol("official", None, SPEC, tmp_path / "no-data", out,
                          EvalSettings(ks=(1,), refine=2))
    assert not out.exists()


# ----------------------------------------------------------------- which cases, refusals


def _dataset(root: Path, lesions: dict) -> Path:
    """Each case's lesion a 5³ cube given in model (d, h, w) order, or None."""
    write_cube_dataset(root, lesions)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    other = (slice(4, 9), slice(10, 15), slice(12, 17))
    return _dataset(tmp_path_factory.mktemp("ds"),
                    {"a": CUBE, "b": other, "c": None, "d": CUBE, "e": other})


def _run(data: Path, out: Path, **kw) -> dict:
    return evaluate_dataset(CubeModel(crop=16, half=2), SPEC, data, out,
                            EvalSettings(ks=(1,), modes=("roi",)), progress=False, **kw)


def _csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_a_run_scores_the_lesion_cases_of_the_split_part(data, tmp_path) -> None:
    split = save_split(tmp_path / "split.json", {"train": ["b"], "val": ["e"],
                                                 "test": ["a", "c", "d"]})
    ref = SplitRef(split_file=str(split))
    test = _run(data, tmp_path / "test", split=ref)
    assert [r["case"] for r in test["rows"]] == ["a", "d"]  # c has no lesion to click on
    val = _run(data, tmp_path / "val", split=ref, part="val")
    assert [r["case"] for r in val["rows"]] == ["e"]
    # the files say what the run returned
    per_case = _csv(tmp_path / "test" / "per_case.csv")
    assert list(per_case[0]) == list(ROW_FIELDS) and [r["case"] for r in per_case] == ["a", "d"]
    summary = _csv(tmp_path / "test" / "summary.csv")
    (want,) = test["summary"]
    assert want == summarise(test["rows"])[0] and len(summary) == 1
    assert summary[0]["cases"] == "2" and float(summary[0]["dice_mean"]) == want["dice_mean"]
    stored = json.loads((tmp_path / "test" / "clicks.json").read_text(encoding="utf-8"))
    assert [(c["case"], c["protocol"]) for c in stored["cases"]] == [("a", "test-k1"),
                                                                     ("d", "test-k1")]


def test_refusals_write_nothing(data, tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyError, match=r"unknown case\(s\) \['zz'\]"):
        _run(data, out, ids=["a", "zz"])
    with pytest.raises(ValueError, match="no test case with a lesion"):
        _run(data, out, ids=["c"])
    for keep, zoom, message in (("some", None, "keep must be one of"),
                                (None, 0, "zoom must be an integer factor"),
                                (None, 3, "zoom 3 must divide the model's crop 16")):
        with pytest.raises(ValueError, match=message):
            _run(data, out, keep=keep, zoom=zoom)
    assert not out.exists()


def test_results_are_never_overwritten_unless_asked(data, tmp_path) -> None:
    out = tmp_path / "out"
    _run(data, out, ids=["a"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # refused before the data is even read: a missing data folder changes nothing
    with pytest.raises(FileExistsError, match="already holds results"):
        _run(tmp_path / "no-such-data", out, ids=["b"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _run(data, out, ids=["b"], overwrite=True)
    assert [r["case"] for r in _csv(out / "per_case.csv")] == ["b"]
