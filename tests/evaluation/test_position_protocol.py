"""The prompt-position option of the evaluation protocol: where the clicks fall, what the rows
and files say, exact replay, and the ``sam3d evaluate --position`` flag."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cube_cases import SHAPE, SPEC, write_cube_dataset
from stub_models import CubeModel

from sam3d import cli
from sam3d.data import layout
from sam3d.data.click_store import load_clicks
from sam3d.data.specs import get_spec
from sam3d.evaluation.protocol import (
    CLICK_POSITIONS,
    EvalSettings,
    draw_clicks,
    evaluate_case,
    protocol_name,
)
from sam3d.evaluation.runner import evaluate_dataset
from sam3d.inference.predictor import Predictor

BIG = (slice(6, 17), slice(6, 17), slice(6, 17))  # an 11³ cube, centre voxel (11, 11, 11)


def _dataset(root: Path, lesions: dict) -> layout.DatasetIndex:
    return write_cube_dataset(root, lesions)


def _cube_depth(p) -> int:
    """Chebyshev distance of a voxel of BIG to the cube's outside (1 on the surface)."""
    return min(min(v - 6, 16 - v) for v in p) + 1


def test_settings_validate_the_position() -> None:
    assert EvalSettings().position == "random"  # the official protocol by default
    assert CLICK_POSITIONS == ("random", "centre", "adjacent", "margin")
    with pytest.raises(ValueError, match="position"):
        EvalSettings(position="middle")
    with pytest.raises(ValueError, match="position"):
        protocol_name(1, "edge")
    assert protocol_name(3) == "test-k3" and protocol_name(3, "margin") == "test-k3-margin"


def test_clicks_fall_where_the_position_says(tmp_path) -> None:
    index = _dataset(tmp_path, {"a": BIG})
    predictor = Predictor(CubeModel(crop=16, half=2), SPEC)
    res = {}
    for position in CLICK_POSITIONS:
        settings = EvalSettings(ks=(1, 3), modes=("roi",), position=position, seed=3)
        res[position] = evaluate_case(predictor, index.cases["a"], settings)
        again = evaluate_case(predictor, index.cases["a"], settings)
        assert [c.points for c in res[position].clicks] == [c.points for c in again.clicks]
        assert [c.protocol for c in res[position].clicks] == [protocol_name(1, position),
                                                              protocol_name(3, position)]
        assert {r["position"] for r in res[position].rows} == {position}
        assert not any(r["position_fallback"] for r in res[position].rows)
    centre = [p for c in res["centre"].clicks for p in c.points]
    assert centre == [(11, 11, 11)] * 4  # the one voxel of maximal depth
    assert all(_cube_depth(p) == 1 for c in res["margin"].clicks for p in c.points)
    # EDT of the padded cube: 6 at the centre; the 0.4–0.6 band holds depths of 3 voxels
    assert all(_cube_depth(p) == 3 for c in res["adjacent"].clicks for p in c.points)
    # a centred click recovers the whole 5³ stub cube inside the lesion; a margin click's cube
    # sticks out of the lesion, so it scores lower
    dice = {p: res[p].rows[0]["dice"] for p in CLICK_POSITIONS}
    assert dice["centre"] == pytest.approx(2 * 125 / (125 + 11**3))
    assert dice["margin"] < dice["centre"]


def test_a_tiny_lesion_records_the_band_fallback(tmp_path) -> None:
    index = _dataset(tmp_path, {"t": (slice(10, 12), slice(10, 12), slice(10, 12))})
    predictor = Predictor(CubeModel(crop=16, half=1), SPEC)
    res = evaluate_case(predictor, index.cases["t"], EvalSettings(ks=(1,), position="adjacent"))
    assert res.rows[0]["position_fallback"] is True
    lesion = np.zeros(SHAPE, bool)
    lesion[10:12, 10:12, 10:12] = True
    clicks, fallback = draw_clicks(lesion, 2, "t", EvalSettings(position="centre"))
    assert not fallback and all(lesion[tuple(p)] for p in clicks)


def test_runner_reports_the_position_and_replays_exactly(tmp_path) -> None:
    _dataset(tmp_path / "ds", {"a": BIG, "b": (slice(4, 13), slice(8, 17), slice(10, 19))})
    model = CubeModel(crop=16, half=2)
    settings = EvalSettings(ks=(1, 3), modes=("roi",), position="margin", refine=1)
    out = tmp_path / "eval"
    res = evaluate_dataset(model, SPEC, tmp_path / "ds", out, settings, ids=["a", "b"],
                           progress=False)
    with open(out / "per_case.csv", encoding="utf-8") as fh:
        per_case = list(csv.DictReader(fh))
    assert len(per_case) == 4 and {r["position"] for r in per_case} == {"margin"}
    with open(out / "summary.csv", encoding="utf-8") as fh:
        summary = list(csv.DictReader(fh))
    assert [(r["position"], r["k"]) for r in summary] == [("margin", "1"), ("margin", "3")]
    assert {r["position"] for r in res["refinement"]} == {"margin"}
    assert {c.protocol for c in load_clicks(out / "clicks.json")} == {
        "test-k1-margin", "test-k3-margin", "refine-test-k1-margin"}
    # the refinement starts from the margin click of k = 1
    first = [r["clicks"] for r in res["refinement"] if r["click"] == 1]
    assert first == [r["clicks"] for r in res["rows"] if r["k"] == 1]
    # replayed under another seed: the stored clicks, not new draws, for the rows and the
    # refinement's first click alike
    other = EvalSettings(ks=(1, 3), modes=("roi",), position="margin", refine=1, seed=99)
    again = evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "replay", other,
                             ids=["a", "b"], clicks=out / "clicks.json", progress=False)
    keys = ("case", "k", "position", "clicks", "dice", "nsd")
    assert [{k: r[k] for k in keys} for r in res["rows"]] == \
        [{k: r[k] for k in keys} for r in again["rows"]]
    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert untimed(again["refinement"]) == untimed(res["refinement"])
    fresh = evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "fresh", other,
                             ids=["a", "b"], progress=False)
    assert [r["clicks"] for r in fresh["rows"]] != [r["clicks"] for r in res["rows"]]
    # a file of random-click protocols holds no margin clicks: they are drawn, not replayed
    rand = evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "rand",
                            EvalSettings(ks=(1,), modes=("roi",)), ids=["a", "b"],
                            progress=False)
    assert {r["position"] for r in rand["rows"]} == {"random"}
    mixed = evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "mixed",
                             EvalSettings(ks=(1,), modes=("roi",), position="centre"),
                             ids=["a", "b"], clicks=tmp_path / "rand" / "clicks.json",
                             progress=False)
    assert [r["clicks"] for r in mixed["rows"]] == ["11,11,11", "8,12,14"]


def test_cli_evaluate_takes_a_position(tmp_path, monkeypatch, capsys) -> None:
    from sam3d.inference import predict

    _dataset(tmp_path / "ds", {"a": BIG})
    monkeypatch.setattr(predict, "load_for_inference",
                        lambda *a, **kw: (CubeModel(crop=16, half=2), SPEC))
    checkpoint = tmp_path / "unused.pt"  # read once for its recorded protocol (none: sam3d)
    torch.save({}, checkpoint)
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path / "ds"),
            "--case", "a", "--k", "1", "--mode", "roi", "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--position", "centre"]) == 0
    assert "centre" in capsys.readouterr().out
    assert load_clicks(tmp_path / "out" / "clicks.json")[0].points == [(11, 11, 11)]
    with pytest.raises(SystemExit):
        cli.main([*argv, "--position", "middle"])
    parser_choices = next(a.choices for a in cli.build_parser()._subparsers._group_actions[0]
                          .choices["evaluate"]._actions if a.dest == "position")
    assert tuple(parser_choices) == CLICK_POSITIONS


def test_seeded_split_follows_the_split_seed_not_the_click_seed(tmp_path) -> None:
    """A model trained on the seed-0 split is tested on that split's test cases, whatever seed
    the test clicks use (otherwise a test case could be a training case)."""
    from sam3d.data.layout import read_index
    from sam3d.data.phantoms import PhantomSpec, write_phantom_dataset
    from sam3d.data.splits import SplitRef, resolve_split
    from sam3d.evaluation.protocol import EvalSettings
    from sam3d.evaluation.runner import evaluate_dataset

    root = tmp_path / "ph"
    write_phantom_dataset(root, 10, seed=0, spec=PhantomSpec(shape=(40, 40, 32), difficulty=0.0))
    ids = read_index(root).case_ids()
    want = resolve_split("phantoms", ids, seed=0)["test"]
    assert resolve_split("phantoms", ids, seed=7)["test"] != want  # the seeds do differ here
    spec = get_spec("phantoms", window=(-1000.0, 1000.0), mean=0.0, std=1.0)
    res = evaluate_dataset(CubeModel(), spec, root, tmp_path / "out",
                           EvalSettings(ks=(1,), seed=7), split=SplitRef(seed=0),
                           progress=False)
    assert sorted({r["case"] for r in res["rows"]}) == sorted(read_index(root).lesion_cases(want))
