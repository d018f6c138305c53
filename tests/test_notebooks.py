"""Every book chapter runs headless in smoke mode (papermill, the venv's own kernel), and the
book builds from the executed chapters with every warning an error (Jupyter Book 1.x)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
# The golden check has its own test (tests/test_golden_equivalence.py); skip the 3-minute rerun.
OVERRIDES = {"01_architecture.ipynb": {"GOLDEN_CHECK": False}}
PARAMETERS = ("MODE", "DATASET", "SEED", "N_CLICKS", "DEVICE", "CHECKPOINT", "DATA_DIR")


@pytest.fixture(scope="module")
def executed_dir(tmp_path_factory) -> Path:
    """Where the smoke runs below leave their executed notebooks for the book build."""
    return tmp_path_factory.mktemp("executed")


def test_every_notebook_is_in_the_book():
    toc = (REPO / "_toc.yml").read_text(encoding="utf-8")
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
    for name in PARAMETERS:
        assert f"{name} =" in tagged[0].source, f"parameter {name} missing"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it unexecuted"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "provenance(" in code, "needs a provenance cell (package versions, device, commit, time)"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_mode(path, executed_dir):
    params = {"MODE": "smoke", "DEVICE": "cpu", **OVERRIDES.get(path.name, {})}
    out = executed_dir / path.name
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(out), parameters=params, kernel_name="python3",
                               cwd=str(REPO), progress_bar=False)
    print(f"\n{path.name}: smoke run {time.perf_counter() - start:.0f} s")
    executed = nbformat.read(out, as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")


@pytest.mark.slow
def test_book_builds_from_the_executed_chapters(executed_dir, tmp_path):
    """The whole book renders with ``-W`` from the notebooks the smoke runs above executed."""
    missing = [p.name for p in NOTEBOOKS if not (executed_dir / p.name).is_file()]
    assert not missing, f"chapters that did not run (see their tests above): {missing}"
    site = tmp_path / "book"
    shutil.copytree(REPO / "book", site / "book")
    shutil.copy2(REPO / "_toc.yml", site / "_toc.yml")
    config = (REPO / "_config.yml").read_text(encoding="utf-8")
    assert "execute_notebooks: cache" in config
    (site / "_config.yml").write_text(config.replace("execute_notebooks: cache",
                                                     'execute_notebooks: "off"'), encoding="utf-8")
    (site / "notebooks").mkdir()
    for p in NOTEBOOKS:
        shutil.copy2(executed_dir / p.name, site / "notebooks" / p.name)
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(site), "-W", "--keep-going", "--all"],
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    html = site / "_build" / "html"
    assert (html / "index.html").is_file()
    for p in NOTEBOOKS:
        page = html / "notebooks" / f"{p.stem}.html"
        assert page.is_file(), f"{page} not rendered"
        assert "Traceback" not in page.read_text(encoding="utf-8"), f"{page.name} shows an error"
