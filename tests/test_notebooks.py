"""Every book chapter runs headless in smoke mode (papermill, the venv's own kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# The golden check has its own test (tests/test_golden_equivalence.py); skip the 3-minute rerun.
OVERRIDES = {"01_architecture.ipynb": {"GOLDEN_CHECK": False}}


def test_every_notebook_is_in_the_book():
    toc = (Path(__file__).resolve().parents[1] / "_toc.yml").read_text()
    assert NOTEBOOKS, "no notebooks found"
    for nb in NOTEBOOKS:
        assert f"notebooks/{nb.stem}" in toc, f"{nb.name} is missing from _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_structure(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "needs a # Title first"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for name in ("MODE", "DATASET", "SEED", "N_CLICKS", "DEVICE", "CHECKPOINT", "DATA_DIR"):
        assert f"{name} =" in tagged[0].source, f"parameter {name} missing"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it unexecuted"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    params = {"MODE": "smoke", "DEVICE": "cpu", **OVERRIDES.get(path.name, {})}
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3",
                               cwd=str(path.parent.parent), progress_bar=False)
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
