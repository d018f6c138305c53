"""Chapter 8 (number of clicks, refinement): the paper's rows, the k-click table and the
refinement curve with an oracle stand-in whose scores are known by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_eval_data import (
    PAIR,
    SPEC,
    CubeModel,
    FloodModel,
    fake_checkpoint,
    patch_model,
    write_cases,
)

from sam3d.evaluation.protocol import area_under_curve, challenge_auc
from sam3d.experiments import clicks as K
from sam3d.experiments.report import side_by_side
from sam3d.inference import predict


def test_paper_rows_are_the_3dsam_adapter_rows_of_table_1() -> None:
    rows = K.paper_rows("kits")
    assert [(r["k"], r["dice"], r["nsd"]) for r in rows] == [
        (1, 73.78, 83.86), (3, 74.91, 84.35), (10, 75.95, 84.92)]
    assert K.paper_rows("lits", ks=(1, 5))[1] == {"k": 5, "dice": None, "nsd": None}
    with pytest.raises(ValueError):
        K.paper_rows("brats")
    with pytest.raises(ValueError):
        K.paper_rows("kits", ks=(0,))


def test_clicks_table_and_refinement_curve(tmp_path, monkeypatch) -> None:
    """Two equal lesions per case; the oracle segments exactly the lesions it is clicked in.

    One click finds one lesion (Dice 2/3); the first error click lands in the other (Dice 1)
    and the curve then stays flat."""
    data = write_cases(tmp_path / "ds", 5, lesions=PAIR)
    ckpt = fake_checkpoint(tmp_path / "best.pt", data)
    patch_model(monkeypatch, FloodModel(crop=16))
    res = K.run_clicks(ckpt, tmp_path / "eval", ks=(1, 3), refine=3)
    rows = {r["k"]: r for r in res["clicks"]}
    assert list(rows) == [1, 3] and rows[1]["cases"] == 1
    assert rows[1]["dice"] == pytest.approx(100 * 2 / 3)
    assert 100 * 2 / 3 - 1e-6 <= rows[3]["dice"] <= 100 + 1e-6
    curve = [r["dice"] for r in res["curve"]]
    assert [r["click"] for r in res["curve"]] == [1, 2, 3, 4]
    assert curve == pytest.approx([100 * 2 / 3, 100, 100, 100])
    assert res["auc"]["dice"] == pytest.approx(100 * area_under_curve([2 / 3, 1, 1, 1]))
    assert K.click_kinds(res["refinement"]) == {"positive": 1, "negative (not usable)": 0}
    table = side_by_side(K.paper_rows("lits", ks=(1, 3)), res["clicks"], on=["k"],
                         metrics=["dice", "nsd"], mode="smoke")
    assert list(table["dice · paper"]) == [54.78, 56.30]
    fig = K.plot_curve(res["curve"], res["refinement"], title="t")
    assert len(fig.axes[0].lines) == 1 + 2  # one case, mean Dice, mean NSD
    without = K.run_clicks(ckpt, tmp_path / "eval2", ks=(1,), refine=0)
    assert without["curve"] == [] and without["auc"] == {}
    with pytest.raises(ValueError, match="refine"):
        K.run_clicks(ckpt, tmp_path / "eval3", refine=30)
    with pytest.raises(ValueError, match="no refinement"):
        K.plot_curve([])


def test_official_table_and_sam3d_curve(tmp_path) -> None:
    """``protocol="official"``: the k-click table is the official runner's on the held-out
    cases, the refinement curve sam3d's (the official path has none), in ``out/refinement``."""
    import torch

    from sam3d.build import build_sam3d
    from sam3d.checkpoint import save_checkpoint
    from sam3d.experiments.training import evaluate_held_out
    from sam3d.rehearsal.data import prepare_rehearsal_dataset

    prepare_rehearsal_dataset("lits", tmp_path)
    data = tmp_path / "prepared" / "lits"
    ckpt = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    pre = {"name": "lits", "window": [-48, 163], "mean": 60.057533, "std": 40.198017,
           "spacing": 1.0}
    save_checkpoint(build_sam3d("tiny"), ckpt, extra={"train": {
        "preprocessing": pre, "config": {"dataset": "lits", "fold": 0, "seed": 0,
                                         "data_dir": str(data)}}})
    res = K.run_clicks(ckpt, tmp_path / "eval", ks=(1, 3), refine=1, protocol="official")
    assert res["protocol"] == "official"
    assert {r["mode"] for r in res["per_case"]} == {"official"}
    alone = evaluate_held_out(ckpt, tmp_path / "alone", ks=(1, 3), protocol="official")
    assert [(r["case"], r["k"], r["dice"]) for r in res["per_case"]] == \
        [(r["case"], r["k"], r["dice"]) for r in alone["rows"]]
    curve = evaluate_held_out(ckpt, tmp_path / "curve", ks=(1,), refine=1)
    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert untimed(res["refinement"]) == untimed(curve["refinement"]) and len(res["curve"]) == 2
    assert (tmp_path / "eval" / "refinement" / "refinement.csv").is_file()
    with pytest.raises(ValueError, match="protocol must be one of"):
        K.run_clicks(ckpt, tmp_path / "bad", protocol="authors")


def test_compare_refinement_runs_each_model_on_the_same_cases(tmp_path, monkeypatch) -> None:
    """The oracle (finds the clicked lesions) beside a model that never changes its mind
    (cubes around the clicks, which the error clicks land outside of): one row per model and
    click, the gain and both kinds of area, per model."""


    data = write_cases(tmp_path / "ds", 5, lesions=PAIR)
    oracle, cubes = fake_checkpoint(tmp_path / "a.pt", data), fake_checkpoint(tmp_path / "b.pt",
                                                                              data)
    models = {oracle: FloodModel(crop=16), cubes: CubeModel(crop=16, half=1)}
    monkeypatch.setattr(predict, "load_for_inference",  # given the CheckpointFile read once
                        lambda checkpoint, *a, **k: (models[checkpoint.path], SPEC))
    res = K.compare_refinement({"oracle": oracle, "cubes": cubes}, tmp_path / "cmp", refine=3)
    assert [(r["model"], r["click"]) for r in res["curve"]] == [
        (m, c) for m in ("oracle", "cubes") for c in (1, 2, 3, 4)]
    areas = {r["model"]: r for r in res["areas"]}
    assert areas["oracle"]["first_dice"] == pytest.approx(100 * 2 / 3)
    assert areas["oracle"]["gain_dice"] == pytest.approx(100 / 3)
    assert areas["oracle"]["DSC_AUC"] == pytest.approx(challenge_auc([2 / 3, 1, 1, 1]))
    assert areas["cubes"]["gain_dice"] == pytest.approx(
        areas["cubes"]["final_dice"] - areas["cubes"]["first_dice"])
    assert len(res["cases"]) == 1 and set(res["kinds"]) == {"oracle", "cubes"}
    assert (tmp_path / "cmp" / "cubes" / "refinement.csv").is_file()
    fig = K.plot_curves(res["curve"], title="t")
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="refine ≥ 2"):
        K.compare_refinement({"oracle": oracle}, tmp_path / "x", refine=1)
