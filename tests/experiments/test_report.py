"""Side-by-side tables of reported and measured numbers, and run labels."""

from __future__ import annotations

import math

import pytest

from sam3d.experiments.report import chapter_dir, check_mode, run_label, run_stamp, side_by_side
from sam3d.provenance import project_path
from sam3d.rehearsal import ENV


def test_smoke_numbers_are_never_labelled_as_a_plain_run() -> None:
    assert "smoke" in run_label("smoke") and "smoke" not in run_label("full")
    with pytest.raises(ValueError, match="MODE"):
        check_mode("fast")


def test_smoke_full_and_rehearsal_write_to_separate_chapter_folders(monkeypatch) -> None:
    """A smoke run (make book) never overwrites a GPU run's evaluations, and a rehearsal
    neither (the rehearsal of chapter 8 used to write into the smoke chapter's folder)."""
    monkeypatch.delenv(ENV, raising=False)
    smoke, full = chapter_dir("08_clicks_refinement", "smoke"), chapter_dir("03_training", "full")
    assert smoke == project_path("outputs/book/smoke/08_clicks_refinement")
    assert full == project_path("outputs/book/full/03_training")
    monkeypatch.setenv(ENV, "1")
    assert chapter_dir("03_training", "full") == project_path(
        "outputs/rehearsal/book/full/03_training")
    with pytest.raises(ValueError, match="MODE"):
        chapter_dir("03_training", "quick")
    for bad in ("", "../03_training", "a/b", None):
        with pytest.raises(ValueError, match="chapter must be"):
            chapter_dir(bad, "smoke")


def test_rows_are_joined_on_the_keys_and_missing_sides_stay_empty() -> None:
    paper = [{"method": "ours", "k": 1, "dice": 73.78},
             {"method": "nnU-Net", "k": 0, "dice": 73.07}]
    run = [{"method": "ours", "k": 1, "dice": 61.0}, {"method": "dynunet", "k": 0, "dice": 40.0}]
    table = side_by_side(paper, run, ["method", "k"], ["dice"], "smoke")
    label = run_label("smoke")
    assert list(table.columns) == ["method", "k", "dice · paper", f"dice · {label}"]
    rows = {r["method"]: r for r in table.to_dict("records")}
    assert rows["ours"]["dice · paper"] == 73.78 and rows["ours"][f"dice · {label}"] == 61.0
    assert math.isnan(rows["nnU-Net"][f"dice · {label}"])
    assert math.isnan(rows["dynunet"]["dice · paper"])
    with pytest.raises(KeyError, match="key column"):
        side_by_side([{"dice": 1.0}], run, ["method"], ["dice"], "full")


def test_stamp_names_mode_device_seed_commit_and_time() -> None:
    prov = {"mode": "smoke", "device": "CPU (x86_64, 2 threads)", "seed": 0, "git_commit": "abc",
            "wall_time_s": 90.0}
    assert run_stamp(prov) == "smoke mode · CPU (x86_64, 2 threads) · seed 0 · commit abc · 1.5 min"


def test_rows_keep_the_papers_order_then_the_runs() -> None:
    paper = [{"m": "z", "dice": 1.0}, {"m": "a", "dice": 2.0}]
    run = [{"m": "q", "dice": 3.0}, {"m": "a", "dice": 4.0}, {"m": "b", "dice": 5.0}]
    table = side_by_side(paper, run, ["m"], ["dice"], "full")
    assert list(table["m"]) == ["z", "a", "q", "b"]
