"""Chapter 7 (Table 3, feature levels): the five settings as configurations, their parameter
counts, the paper's rows, and one tiny real train-once + one-click evaluation."""

from __future__ import annotations

import csv

import pytest

from sam3d.checkpoint import load_checkpoint
from sam3d.config import get_config
from sam3d.experiments import levels as L
from sam3d.experiments.report import side_by_side


def test_each_setting_is_a_configuration_with_those_prompt_levels() -> None:
    for setting in L.SETTINGS:
        for mode, base in (("full", "vit_b"), ("smoke", "tiny")):
            name = L.variant_of(setting, mode)
            assert name.startswith(base)
            assert tuple(sorted(get_config(name).prompt_levels)) == L.levels_of(setting)
    assert L.variant_of("4") == "vit_b" and L.variant_of("1+2+3+4", "smoke") == "tiny_levels_1234"
    assert L.levels_of("2+4") == (2, 4)


@pytest.mark.parametrize("mode", ["full", "smoke"])
def test_counts_differ_only_by_the_extra_prompt_encoders(mode) -> None:
    rows = {r["levels"]: r for r in L.count_rows(mode)}
    assert list(rows) == list(L.SETTINGS)
    base = rows["4"]
    assert base["prompt_encoders"] == 1 and base["extra"] == 0
    for setting, row in rows.items():
        assert row["prompt_encoders"] == len(L.levels_of(setting))
        assert row["encoder_tuned"] == base["encoder_tuned"]  # the encoder is untouched
        assert row["decoder"] == base["decoder"] and row["prompt_encoder"] == base["prompt_encoder"]
        assert row["extra"] == (row["prompt_encoders"] - 1) * row["prompt_encoder"]
        assert row["tuned"] == base["tuned"] + row["extra"]


def test_paper_rows_key_like_the_run_rows_and_arguments_are_checked() -> None:
    paper = L.paper_table3()
    assert sorted(r["levels"] for r in paper) == sorted(L.SETTINGS)
    best = max(paper, key=lambda r: r["dice"])
    assert best == {"levels": "4", "dice": 73.78, "nsd": 83.86}  # the paper's choice wins
    run = [{"levels": "2+4", "dice": 1.0, "nsd": 2.0}]
    table = side_by_side(paper, run, on=["levels"], metrics=["dice", "nsd"], mode="smoke")
    assert len(table) == 5 and table.set_index("levels").iloc[:, 1].notna().sum() == 1
    for bad in (lambda: L.check_settings(["4", "4"]), lambda: L.check_settings(["1+2"]),
                lambda: L.check_settings([]), lambda: L.variant_of("3+4", "quick")):
        with pytest.raises(ValueError):
            bad()


def test_a_setting_trains_once_and_is_evaluated_with_one_click(tmp_path) -> None:
    data = tmp_path / "phantoms"
    sets = {"data_dir": data, "phantoms": 5, "phantom_shape": (64, 64, 48), "cache_dir": None,
            "epochs": 1, "iterations_per_epoch": 1}
    (row,) = L.run_levels("smoke", ["1+4"], root=tmp_path / "runs", overrides=sets)
    (again,) = L.run_levels("smoke", ["1+4"], root=tmp_path / "runs", overrides=sets)
    assert row["trained_now"] and not again["trained_now"] and again["dice"] == row["dice"]
    assert row["config"] == "tiny_levels_14" and row["cases"] == 1
    assert 0 <= row["dice"] <= 100 and 0 <= row["nsd"] <= 100
    model = load_checkpoint(row["checkpoint"])
    assert sorted(model.prompt_encoders) == ["1", "4"]
    assert model.config.tuning == "full"  # the smoke recipe's policy: no pretrained weights
    with open(f"{row['eval_dir']}/per_case.csv", encoding="utf-8") as fh:
        per_case = list(csv.DictReader(fh))
    assert [(r["mode"], r["k"], r["clicks_used"]) for r in per_case] == [("roi", "1", "1")]
