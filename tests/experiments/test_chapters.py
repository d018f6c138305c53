"""Every chapter in full-mode rehearsal (papermill, ``-p MODE full -p REHEARSAL True``), the
book built from those executed chapters with ``-W``, and the runner's own checks.

The rehearsal takes each chapter's full-mode branch end to end — the shipped recipes, the
fixture datasets fetched from 127.0.0.1 by ``download_datasets.py`` and prepared by
``prepare_dataset.py``, ``sam3d train``, ``sam3d evaluate`` — shrunk only in size
(:mod:`sam3d.rehearsal`). The book's chapters run with one dataset (LiTS, which the
interactive chapter needs); the training chapter also rehearses the other three recipes.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill
import pytest

from sam3d.experiments.chapters import (
    build_book,
    chapter_parameters,
    chapters,
    errors_of,
    execute_chapter,
    main,
)
from sam3d.rehearsal import LABEL

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = chapters(REPO)
BOOK_DATASET = "lits"
REHEARSAL = chapter_parameters("full", rehearsal=True, device="cpu", dataset=BOOK_DATASET)


def test_parameters_and_their_checks():
    assert REHEARSAL == {"MODE": "full", "DEVICE": "cpu", "REHEARSAL": True,
                         "INTERACTIVE": False, "DATASET": "lits"}
    full = chapter_parameters("full", device="cuda", dataset="kits", data_dir="/d",
                              sam_checkpoint="/s.pth")
    assert (full["REHEARSAL"] is False and full["DATA_DIR"] == "/d"
            and full["SAM_CHECKPOINT"] == "/s.pth")
    with pytest.raises(ValueError, match="rehearses full mode"):
        chapter_parameters("smoke", rehearsal=True)
    with pytest.raises(ValueError, match="mode must be"):
        chapter_parameters("quick")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_every_chapter_declares_what_the_runner_passes(path):
    declared = papermill.inspect_notebook(str(path))
    assert declared["REHEARSAL"]["default"] == "False"
    needs = {"MODE", "DEVICE", "DATASET", "DATA_DIR", "REHEARSAL"}
    if path.stem != "02_data":  # every chapter with a model: the SAM ViT-B weights it sits on
        needs.add("SAM_CHECKPOINT")
    assert needs <= set(declared), sorted(needs - set(declared))


def test_main_refuses_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--mode", "smoke", "--rehearsal"])
    assert exc.value.code == 2
    assert main(["--data-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--only", "99_nothing"])
    assert not (tmp_path / "x").exists()


def test_a_rehearsal_trains_two_rows_of_tables_2_and_3():
    from sam3d.experiments.chapters import _overrides

    by = {p.stem: p for p in CHAPTERS}
    assert _overrides(by["05_table2_peft"], REHEARSAL) == {
        "METHODS": ["Full fine-tuning", "3DSAM-adapter"]}
    assert _overrides(by["07_feature_level"], REHEARSAL) == {"SETTINGS": ["1+2+3+4", "4"]}
    assert _overrides(by["01_architecture"], REHEARSAL) == {"GOLDEN_CHECK": False}
    full = chapter_parameters("full", device="cuda", dataset="kits")
    assert all(_overrides(p, full) == {} for p in CHAPTERS)  # a real full run: every row


@pytest.fixture(scope="module")
def rehearsed_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rehearsed")


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_rehearses_full_mode(path, rehearsed_dir):
    run = execute_chapter(path, rehearsed_dir, REHEARSAL)
    print(f"\n{path.stem}: full-mode rehearsal {run['seconds']:.0f} s")
    assert not errors_of(run["output"])
    nb = nbformat.read(run["output"], as_version=4)
    text = "\n".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # the provenance (a dict, JSON or a pandas table) says it is a rehearsal
    assert re.search(r"rehearsal\W{1,60}true", text, re.IGNORECASE), "provenance must say so"
    if any(w in text for w in ("this run", "Dice")):
        assert "this run (smoke" not in text  # a full-mode run, never labelled smoke


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["kits", "pancreas", "colon"])
def test_training_chapter_rehearses_every_recipe(dataset, tmp_path):
    """Chapter 3 on the other three datasets: their recipe, fixture download, prepare, official
    fold, train, held-out evaluation."""
    params = {**REHEARSAL, "DATASET": dataset}
    run = execute_chapter(REPO / "notebooks" / "03_training.ipynb", tmp_path, params)
    print(f"\n03_training ({dataset}): full-mode rehearsal {run['seconds']:.0f} s")
    assert not errors_of(run["output"])
    text = "\n".join(str(o) for c in nbformat.read(run["output"], as_version=4).cells
                     if c.cell_type == "code" for o in c.outputs)
    assert f"sam3d train --config {dataset}" in text and LABEL in text
    assert (REPO / "outputs" / "rehearsal" / "train" / dataset / "metrics.csv").is_file()


@pytest.mark.slow
def test_book_builds_from_the_rehearsed_chapters(rehearsed_dir, tmp_path):
    html = build_book(rehearsed_dir, tmp_path / "book", CHAPTERS)
    for p in CHAPTERS:
        page = (html / "notebooks" / f"{p.stem}.html").read_text(encoding="utf-8")
        assert "Traceback" not in page, f"{p.stem} shows an error"
    tables = (html / "notebooks" / "03_training.html").read_text(encoding="utf-8")
    assert "rehearsal" in tables and "not a result" in tables
