"""Run every chapter of the book with papermill, then build the book from the executed copies.

One set of steps for three callers: ``make book-full`` (a GPU user's full run), the GPU
workflow (``.github/workflows/gpu-book.yml``, which calls ``make book-full``) and the test
that rehearses full mode in CI (``tests/experiments/test_chapters_rehearsal.py``, the same
steps with ``--rehearsal``)::

    python -m sam3d.experiments.chapters --mode full --device cuda --dataset kits \\
        --data-dir /data/sam3d --sam-checkpoint /data/sam3d/checkpoints/sam_vit_b_01ec64.pth \\
        --out outputs/book-full/executed --build outputs/book-full/site

Each chapter gets the same parameters (``MODE``, ``DEVICE``, ``DATASET``, ``DATA_DIR``,
``SAM_CHECKPOINT``, ``REHEARSAL``, ``INTERACTIVE=False``; in a rehearsal the architecture
chapter's golden check is left to its own test and Tables 2 and 3 train two rows each).
Rerunning resumes: training runs are resumed or skipped by the chapters themselves
(``sam3d.experiments.training.train_full``, the content-keyed runs of
:mod:`sam3d.engine.cached`), so a finished chapter reruns in minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..provenance import project_path
from ..utils.files import atomic_write_json
from .report import MODES

PROG = "sam3d.experiments.chapters"


def chapters(root: str | Path | None = None) -> list[Path]:
    """The book's chapter notebooks, in the order of the table of contents."""
    import yaml

    root = Path(root) if root else project_path(".")
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [root / f"{f}.ipynb" for f in files if f.startswith("notebooks/")]


def chapter_parameters(mode: str = "full", *, rehearsal: bool = False, device: str = "cpu",
                       dataset: str | None = None, data_dir: str | Path | None = None,
                       sam_checkpoint: str | Path | None = None) -> dict:
    """The papermill parameters every chapter gets (None values are left to the chapter)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if rehearsal and mode != "full":
        raise ValueError("a rehearsal rehearses full mode: use mode 'full'")
    params = {"MODE": mode, "DEVICE": device, "REHEARSAL": bool(rehearsal), "INTERACTIVE": False}
    for key, value in (("DATASET", dataset), ("DATA_DIR", data_dir),
                       ("SAM_CHECKPOINT", sam_checkpoint)):
        if value is not None:
            params[key] = str(value)
    return params


#: the rows a rehearsal trains in the chapters of Tables 2 and 3 (every row is the same
#: full-mode code path with another variant; each variant's toy counterpart is built with the
#: rehearsal's SAM-format weights by ``tests/rehearsal/test_sam_weights.py``)
REHEARSED_ROWS = {"05_table2_peft": ("METHODS", ["Full fine-tuning", "3DSAM-adapter"]),
                  "07_feature_level": ("SETTINGS", ["1+2+3+4", "4"])}


def _overrides(path: Path, params: dict) -> dict:
    """Per-chapter exceptions in a rehearsal: the architecture chapter's 3-minute golden rerun
    has its own test (``tests/test_golden_equivalence.py``), so it is left out; the chapters
    of Tables 2 and 3 train two of their rows (:data:`REHEARSED_ROWS`: the first and the last
    of the table) instead of six and five, a shrink in size like the rest of a rehearsal."""
    if not params.get("REHEARSAL"):
        return {}
    if path.stem == "01_architecture":
        return {"GOLDEN_CHECK": False}
    if path.stem in REHEARSED_ROWS:
        key, rows = REHEARSED_ROWS[path.stem]
        return {key: list(rows)}
    return {}


def errors_of(notebook: str | Path) -> list[str]:
    """The error outputs (``ename: evalue``) of an executed notebook."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


def execute_chapter(path: str | Path, out_dir: str | Path, params: dict, *,
                    progress: bool = False, kernel: str = "python3") -> dict:
    """Execute one chapter into ``out_dir`` (from the project root) with those of ``params``
    its parameters cell declares; returns ``{"chapter", "output", "seconds", "parameters"}``.
    A failing cell raises papermill's ``PapermillExecutionError`` after the partial notebook is
    written (for inspection)."""
    import papermill

    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    declared = papermill.inspect_notebook(str(path))  # a chapter gets only what it declares
    given = {k: v for k, v in {**params, **_overrides(path, params)}.items() if k in declared}
    out = out_dir / path.name
    start = time.perf_counter()
    papermill.execute_notebook(str(path), str(out), parameters=given, kernel_name=kernel,
                               cwd=str(project_path(".")), progress_bar=progress)
    return {"chapter": path.stem, "output": out, "seconds": time.perf_counter() - start,
            "parameters": given}


def execute_chapters(out_dir: str | Path, params: dict, notebooks=None, *,
                     progress: bool = True) -> list[dict]:
    """Execute ``notebooks`` (default: every chapter, in book order) one after the other,
    with a progress bar over the chapters; writes ``out_dir/timings.json`` after each."""
    from tqdm.auto import tqdm

    notebooks = [Path(p) for p in (notebooks or chapters())]
    done: list[dict] = []
    bar = tqdm(notebooks, desc="chapters", unit="chapter", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.stem)
        done.append(execute_chapter(path, out_dir, params, progress=progress))
        atomic_write_json(Path(out_dir) / "timings.json",
                          [{"chapter": d["chapter"], "seconds": round(d["seconds"], 1)}
                           for d in done])
    return done


def build_book(executed_dir: str | Path, site_dir: str | Path,
               notebooks=None) -> Path:
    """Build the book (``jupyter-book build -W``, nothing executed again) from the executed
    chapters in ``executed_dir``, in a copy of the book's sources at ``site_dir``; returns the
    HTML folder. Raises ``RuntimeError`` with the build's output tail when it fails."""
    executed_dir, site = Path(executed_dir), Path(site_dir)
    root = project_path(".")
    notebooks = [Path(p) for p in (notebooks or chapters(root))]
    missing = [p.name for p in notebooks if not (executed_dir / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{executed_dir}: chapters not executed: {missing}")
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(root / "book", site / "book")
    shutil.copy2(root / "_toc.yml", site / "_toc.yml")
    config = (root / "_config.yml").read_text(encoding="utf-8")
    if "execute_notebooks: cache" not in config:
        raise RuntimeError("_config.yml no longer says 'execute_notebooks: cache'")
    (site / "_config.yml").write_text(config.replace("execute_notebooks: cache",
                                                     'execute_notebooks: "off"'),
                                      encoding="utf-8")
    (site / "notebooks").mkdir()
    for p in notebooks:
        shutil.copy2(executed_dir / p.name, site / "notebooks" / p.name)
    jb = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jb), "build", str(site), "-W", "--keep-going", "--all"],
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed:\n{proc.stdout[-6000:]}"
                           f"{proc.stderr[-3000:]}")
    return site / "_build" / "html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="full")
    parser.add_argument("--rehearsal", action="store_true",
                        help="rehearse full mode (tiny model, fixture data; sam3d.rehearsal)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", default=None, help="kits | pancreas | lits | colon")
    parser.add_argument("--data-dir", default=None, help="folder holding prepared/<dataset>")
    parser.add_argument("--sam-checkpoint", default=None, help="SAM ViT-B weights")
    parser.add_argument("--out", default="outputs/book-full/executed",
                        help="where the executed chapters go")
    parser.add_argument("--build", default=None, help="also build the book into this folder")
    parser.add_argument("--only", nargs="*", default=None,
                        help="chapter names (e.g. 03_training) to run; default: all")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        params = chapter_parameters(args.mode, rehearsal=args.rehearsal, device=args.device,
                                    dataset=args.dataset, data_dir=args.data_dir,
                                    sam_checkpoint=args.sam_checkpoint)
    except ValueError as exc:
        parser.error(str(exc))
    for name, value in (("--data-dir", args.data_dir), ("--sam-checkpoint", args.sam_checkpoint)):
        if value is not None and not project_path(value).exists():
            print(f"{PROG}: error: {name} {value} does not exist", file=sys.stderr)
            return 2
    notebooks = chapters()
    if args.only:
        unknown = sorted(set(args.only) - {p.stem for p in notebooks})
        if unknown:
            parser.error(f"unknown chapter(s) {unknown}; known: {[p.stem for p in notebooks]}")
        notebooks = [p for p in notebooks if p.stem in args.only]
    out = project_path(args.out)
    try:
        done = execute_chapters(out, params, notebooks, progress=not args.quiet)
    except Exception as exc:  # papermill names the failing cell; the partial notebook stays
        print(f"{PROG}: error: {type(exc).__name__}: {str(exc).strip()[-2000:]}",
              file=sys.stderr)
        return 1
    for d in done:
        print(f"{d['chapter']}: {d['seconds']:.0f} s -> {d['output']}")
    if args.build and not args.only:
        html = build_book(out, project_path(args.build))
        print(f"book: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
