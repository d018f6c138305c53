"""Chapter 6 (prompt position): one evaluation per position on the held-out split, the table's
paper side, the clicks each position used and the figure, with a stand-in model whose Dice
for each position is known by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_eval_data import CubeModel, fake_checkpoint, patch_model, write_cases

from sam3d.experiments import position as P
from sam3d.experiments.report import side_by_side


@pytest.fixture
def stub_run(tmp_path, monkeypatch):
    data = write_cases(tmp_path / "ds", 5)  # split of 5: 1 held-out case
    ckpt = fake_checkpoint(tmp_path / "best.pt", data)
    patch_model(monkeypatch, CubeModel(crop=16, half=2))
    return ckpt, P.run_positions(ckpt, tmp_path / "pos", k=1)


def _depth(p) -> int:  # Chebyshev depth inside the 11³ lesion (1 on its surface)
    return min(min(v - 6, 16 - v) for v in p) + 1


def test_each_position_is_evaluated_on_the_held_out_cases(stub_run) -> None:
    ckpt, res = stub_run
    summary = {r["position"]: r for r in res["summary"]}
    assert list(summary) == ["random", "centre", "adjacent", "margin"]
    assert {r["case"] for r in res["per_case"]} == set(P.held_out_cases(ckpt))
    assert all(r["cases"] == 1 and r["band_fallbacks"] == 0 for r in summary.values())
    # the stub segments a 5³ cube around the click: wholly inside the lesion unless the click
    # lies within 2 voxels of the surface (depth ≥ 3 from centre and adjacent clicks)
    inside = 100 * 2 * 125 / (125 + 11**3)
    assert summary["centre"]["dice"] == pytest.approx(inside)
    assert summary["adjacent"]["dice"] == pytest.approx(inside)
    assert summary["margin"]["dice"] < inside
    assert P.spread(res["summary"]) == pytest.approx(inside - min(
        r["dice"] for r in res["summary"]))
    table = side_by_side(P.paper_rows(), res["summary"], on=["position"], metrics=["dice", "nsd"],
                         mode="smoke")
    assert table["dice · paper"].isna().all()  # the paper prints no numbers for this ablation
    shown = P.position_table(res["summary"], "smoke")
    assert list(shown["position"]) == ["random", "centre", "adjacent", "margin"]
    assert set(shown["nsd · paper"]) == {"not reported"}
    assert list(shown.iloc[:, 2]) == [r["dice"] for r in res["summary"]]
    assert "no numbers" in P.PAPER_NOTE


def test_clicks_and_figure_show_where_each_position_falls(stub_run, tmp_path) -> None:
    ckpt, res = stub_run
    case = res["per_case"][0]["case"]
    clicks = P.case_clicks(res["dirs"], case)
    assert tuple(clicks["centre"][0]) == (11, 11, 11)
    assert _depth(clicks["margin"][0]) == 1 and _depth(clicks["adjacent"][0]) == 3
    image, lesion = P.model_grid_case(ckpt, case)
    assert image.shape == lesion.shape == (24, 24, 24) and lesion.sum() == 11**3
    assert all(lesion[tuple(p[0])] for p in clicks.values())
    fig = P.plot_positions(image, lesion, clicks, title="t")
    assert len(fig.axes) == 4 * 3
    with pytest.raises(KeyError):
        P.case_clicks(res["dirs"], "no_such_case")
    with pytest.raises(KeyError):
        P.model_grid_case(ckpt, "no_such_case")


def test_arguments_are_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="positions"):
        P.run_positions(tmp_path / "x.pt", tmp_path, positions=("middle",))
    with pytest.raises(ValueError, match="repeat"):
        P.run_positions(tmp_path / "x.pt", tmp_path, positions=("centre", "centre"))
    with pytest.raises(ValueError, match="k must"):
        P.run_positions(tmp_path / "x.pt", tmp_path, k=0)
    with pytest.raises(ValueError):
        P.spread([], "dice")
    with pytest.raises(ValueError):
        P.plot_positions(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool), {})
