"""The evaluation protocol on hand-made cases whose Dice and NSD are known by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cube_cases import SHAPE, SPEC, write_cube_dataset
from stub_models import CubeModel, FloodModel, LabelledCubeModel, ThresholdModel

from sam3d.data import layout
from sam3d.data.click_store import ClickSet, load_clicks, save_clicks
from sam3d.evaluation.protocol import (
    EvalSettings,
    area_under_curve,
    challenge_auc,
    evaluate_case,
)
from sam3d.evaluation.runner import evaluate_dataset
from sam3d.inference.predictor import Predictor


def _dataset(root: Path, lesions: dict[str, tuple[slice, slice, slice]]) -> layout.DatasetIndex:
    return write_cube_dataset(root, lesions)


CUBE = (slice(8, 13), slice(8, 13), slice(8, 13))


def _replay(case: str, point, protocol="test-k1") -> dict:
    c = ClickSet(case=case, points=[tuple(point)], positive=[True], protocol=protocol, seed=0,
                 shape=SHAPE)
    return {(case, protocol): c}


@pytest.mark.parametrize("mode", ["roi", "sliding"])
def test_hand_computed_dice_and_nsd(tmp_path, mode) -> None:
    index = _dataset(tmp_path, {"a": CUBE})
    predictor = Predictor(CubeModel(crop=16, half=2), SPEC)
    settings = EvalSettings(ks=(1,), modes=(mode,))
    # a click at the cube's centre predicts the cube itself: Dice 1, NSD 1
    row = evaluate_case(predictor, index.cases["a"], settings, _replay("a", (10, 10, 10))).rows[0]
    assert row["dice"] == pytest.approx(1.0) and row["nsd"] == pytest.approx(1.0)
    # one voxel off along d: overlap 4·5·5 = 100 of 125 + 125 → Dice 0.8; surfaces ≤ 1 mm apart
    row = evaluate_case(predictor, index.cases["a"], settings, _replay("a", (9, 10, 10))).rows[0]
    assert row["dice"] == pytest.approx(200 / 250, abs=1e-6)
    assert row["nsd"] == pytest.approx(1.0)
    # a click whose cube misses the lesion entirely, its faces 7 mm away: Dice 0, NSD 0 at 5 mm
    row = evaluate_case(predictor, index.cases["a"], settings, _replay("a", (22, 10, 10))).rows[0]
    assert row["dice"] == pytest.approx(0.0) and row["nsd"] == pytest.approx(0.0)


def test_clicks_are_seeded_and_inside_the_lesion(tmp_path) -> None:
    index = _dataset(tmp_path, {"a": CUBE})
    predictor = Predictor(CubeModel(crop=16, half=2), SPEC)
    settings = EvalSettings(ks=(1, 3), modes=("roi",), seed=5)
    a = evaluate_case(predictor, index.cases["a"], settings)
    b = evaluate_case(predictor, index.cases["a"], settings)
    assert [c.points for c in a.clicks] == [c.points for c in b.clicks]
    for cs in a.clicks:
        assert all(8 <= v < 13 for p in cs.points for v in p)
    assert [len(c.points) for c in a.clicks] == [1, 3]


def test_refinement_adds_the_missed_lesion(tmp_path) -> None:
    """Two lesions; the first click finds one; the error click lands on the other."""
    second = (slice(16, 21), slice(16, 21), slice(16, 21))
    index = _dataset(tmp_path, {"a": CUBE})
    label_path = index.cases["a"].label
    img = nib.load(label_path)
    label = np.asarray(img.dataobj).copy()
    label[second[2], second[1], second[0]] = 1
    nib.save(nib.Nifti1Image(label, img.affine), label_path)
    nib.save(nib.Nifti1Image(label.astype(np.float32) * 100, img.affine), index.cases["a"].image)
    predictor = Predictor(FloodModel(crop=16), SPEC)
    res = evaluate_case(predictor, index.cases["a"], EvalSettings(ks=(1,), modes=("sliding",),
                                                                   refine=2))
    dices = [r["dice"] for r in res.refinement]
    assert len(dices) == 3
    assert dices[0] == pytest.approx(2 * 125 / 375)  # one of two equal cubes found
    assert dices[1] == pytest.approx(1.0) and res.refinement[0]["next"] == "positive"
    assert dices[2] == pytest.approx(1.0)  # nothing left to fix: the curve stays flat


@pytest.mark.parametrize("extension", [True, False])
def test_refinement_negative_click_on_a_false_positive(tmp_path, extension) -> None:
    """A 3³ lesion; the first click at its centre predicts a 7³ cube, so the only error is a
    false-positive shell and the corrective click is negative, at the shell's deepest voxel.
    The extension erases a 3³ cube there (Dice rises); the paper's model cannot use it (the
    curve stays flat, the click counted as not usable)."""
    small = (slice(9, 12), slice(9, 12), slice(9, 12))
    index = _dataset(tmp_path, {"a": small})
    model = LabelledCubeModel(crop=16, half=3, erase=1) if extension else CubeModel(16, 3)
    predictor = Predictor(model, SPEC)
    res = evaluate_case(predictor, index.cases["a"],
                        EvalSettings(ks=(1,), modes=("sliding",), refine=2),
                        _replay("a", (10, 10, 10)))
    rows = res.refinement
    assert rows[0]["dice"] == pytest.approx(2 * 27 / (27 + 343))
    assert rows[0]["next"] == ("negative" if extension else "negative (not usable)")
    placed = next(c for c in res.clicks if c.protocol == "refine-test-k1")
    assert placed.positive[:2] == [True, False] and placed.points[0] == (10, 10, 10)
    d, h, w = placed.points[1]
    assert not (9 <= d < 12 and 9 <= h < 12 and 9 <= w < 12)  # on the shell, not the lesion
    assert max(abs(d - 10), abs(h - 10), abs(w - 10)) <= 3
    if extension:
        assert rows[1]["labels"] == "+-" and rows[1]["dice"] > rows[0]["dice"] + 0.005
        assert rows[1]["seconds"] > 0
    else:
        assert rows[1]["labels"] == "+" and rows[1]["dice"] == rows[0]["dice"]
        assert rows[1]["seconds"] == 0.0  # the prompt did not change: no model call
    assert set(res.masks) >= {"refine1", "refine2", "refine3"}


def test_challenge_auc() -> None:
    # the corrective clicks only (the first prompt left out), unit trapezoids, not normalised
    assert challenge_auc([0.0, 0.5, 0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
    assert challenge_auc([0.9, 0.2, 0.4, 0.8]) == pytest.approx(0.3 + 0.6)
    with pytest.raises(ValueError, match="two corrective"):
        challenge_auc([0.3, 0.4])


def test_area_under_curve() -> None:
    assert area_under_curve([0.5]) == 0.5
    assert area_under_curve([0.6, 0.6, 0.6]) == pytest.approx(0.6)
    assert area_under_curve([0.0, 1.0]) == pytest.approx(0.5)
    assert area_under_curve([0.2, 0.4, 0.8]) == pytest.approx((0.3 + 0.6) / 2)
    with pytest.raises(ValueError):
        area_under_curve([])


def test_runner_writes_replayable_results_and_never_overwrites(tmp_path) -> None:
    _dataset(tmp_path / "ds", {"a": CUBE, "b": (slice(4, 9), slice(10, 15), slice(12, 17)),
                               "c": CUBE})
    model = CubeModel(crop=16, half=2)
    settings = EvalSettings(ks=(1, 3), modes=("roi", "sliding"), refine=1)
    out = tmp_path / "eval"
    res = evaluate_dataset(model, SPEC, tmp_path / "ds", out, settings, ids=["a", "b", "c"],
                           save_masks=True, progress=False)
    assert len(res["rows"]) == 3 * 2 * 2
    for name in ("per_case.csv", "summary.csv", "clicks.json", "refinement.csv",
                 "refinement_summary.csv"):
        assert (out / name).is_file()
    # the k-click masks, and the mask after each of the refinement's two clicks
    assert len(list((out / "masks").glob("*.nii.gz"))) == 3 * 2 * 2 + 3 * 2
    assert (out / "masks" / "a_refine2.nii.gz").is_file()
    mask = nib.load(out / "masks" / "a_k1_roi.nii.gz")
    assert mask.shape == SHAPE and np.allclose(mask.affine, np.eye(4))
    assert {(s["mode"], s["k"]) for s in res["summary"]} == {
        ("roi", 1), ("roi", 3), ("sliding", 1), ("sliding", 3)}
    with pytest.raises(FileExistsError):
        evaluate_dataset(model, SPEC, tmp_path / "ds", out, settings, ids=["a"], progress=False)
    # replaying the stored clicks reproduces every row exactly
    again = evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "replay", settings,
                             ids=["a", "b", "c"], clicks=out / "clicks.json", progress=False)
    strip = [{k: r[k] for k in ("case", "k", "mode", "clicks", "dice", "nsd")} for r in res["rows"]]
    assert strip == [{k: r[k] for k in ("case", "k", "mode", "clicks", "dice", "nsd")}
                     for r in again["rows"]]
    assert load_clicks(out / "clicks.json") == load_clicks(tmp_path / "replay" / "clicks.json")
    keep = ("case", "click", "clicks", "labels", "next", "dice", "nsd")
    assert [{k: r[k] for k in keep} for r in res["refinement"]] == \
        [{k: r[k] for k in keep} for r in again["refinement"]]
    assert {c.protocol for c in load_clicks(out / "clicks.json")} == {
        "test-k1", "test-k3", "refine-test-k1"}
    save_clicks(tmp_path / "bad.json", [ClickSet(case="a", points=[(1, 1, 1)], positive=[True],
                                                 protocol="test-k1", seed=0, shape=(9, 9, 9))])
    with pytest.raises(ValueError, match="grid"):
        evaluate_dataset(model, SPEC, tmp_path / "ds", tmp_path / "bad", settings, ids=["a"],
                         clicks=tmp_path / "bad.json", progress=False)


def test_automatic_mode_scores_a_prompt_free_model_once_per_case(tmp_path) -> None:
    index = _dataset(tmp_path, {"a": CUBE})
    label = np.asarray(nib.load(index.cases["a"].label).dataobj)
    nib.save(nib.Nifti1Image(label.astype(np.float32) * 100, np.eye(4)), index.cases["a"].image)
    predictor = Predictor(ThresholdModel(crop=16), SPEC)
    res = evaluate_case(predictor, index.cases["a"], EvalSettings(ks=(1,), modes=("auto",)))
    assert [(r["mode"], r["k"]) for r in res.rows] == [("auto", 0)]
    assert res.rows[0]["dice"] == pytest.approx(1.0) and res.rows[0]["nsd"] == pytest.approx(1.0)
