"""Fixture datasets fetched and prepared by the real scripts, as a user's full run would be.

``prepare_rehearsal_dataset("kits", "data/rehearsal")`` writes the fixture of
:mod:`sam3d.rehearsal.fixtures` to ``<data_dir>/mirror/kits/``, serves it on 127.0.0.1
(:func:`sam3d.rehearsal.server.serve`) and runs, as subprocesses from the project root::

    python data_scripts/download_datasets.py --dataset kits --raw <data_dir>/raw
        --base-url http://127.0.0.1:<port> --checksums <data_dir>/mirror/kits-checksums.json
        --quiet --cases 0,1,2,5,20
    python data_scripts/prepare_dataset.py --dataset kits --raw <data_dir>/raw
        --out <data_dir>/prepared/kits --cases 0,1,2,5,20

then returns ``<data_dir>/prepared/kits`` (the common layout, ``sam3d.data.layout``). The marker
``<prepared>/.rehearsal.json`` records the fixture version: while it matches and
``dataset.json`` exists, a later call returns at once (no subprocess). A lock file beside the
prepared folder (``prepared/.kits.lock``, ``fcntl.flock``) makes two processes wait for each
other instead of writing the same files.

A folder this module did not write is never deleted: a ``raw/<dataset>`` or
``prepared/<dataset>`` without the rehearsal's marker (a real download, say) raises instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from ..data.layout import LayoutError, read_index
from ..provenance import project_path
from ..utils.files import atomic_write_json
from .fixtures import FIXTURE_CASES, FIXTURE_VERSION, case_number, write_raw_fixture
from .server import serve

MARKER = ".rehearsal.json"
MARKER_FORMAT = "sam3d-rehearsal-data/1"
SCRIPT_TIMEOUT = 600  # s, per script run
_TAIL = 20  # lines of a failed script's stderr quoted in the error


def project_root() -> Path:
    """The project checkout (:func:`sam3d.provenance.project_path`), which holds the real
    ``data_scripts/`` the rehearsal runs."""
    root = project_path(".")
    if not (root / "data_scripts" / "download_datasets.py").is_file():
        raise RuntimeError("cannot find data_scripts/download_datasets.py: run from the project "
                           "checkout (the folder holding pyproject.toml and sam3d/)")
    return root


def _marker(dataset: str, state: str) -> dict:
    return {"format": MARKER_FORMAT, "dataset": dataset, "fixture_version": FIXTURE_VERSION,
            "cases": list(FIXTURE_CASES[dataset]), "state": state}


def _read_marker(folder: Path) -> dict | None:
    try:
        doc = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == MARKER_FORMAT else None


def _write_marker(folder: Path, doc: dict) -> None:
    atomic_write_json(folder / MARKER, doc)


def is_current(prepared: str | Path, dataset: str) -> bool:
    """True when ``prepared`` holds a finished rehearsal preparation of the current fixture:
    its marker is complete and of this fixture version, and ``dataset.json`` lists exactly the
    fixture's cases, every file present."""
    prepared = Path(prepared)
    if _read_marker(prepared) != _marker(dataset, "complete"):
        return False
    try:
        index = read_index(prepared)
    except LayoutError:
        return False
    return index.case_ids() == sorted(FIXTURE_CASES[dataset])


def _clear(folder: Path) -> None:
    """Delete a rehearsal folder left by an older fixture or an interrupted run; refuse (raise
    ``RuntimeError``) to delete a non-empty folder without the rehearsal's marker."""
    if not folder.exists():
        return
    if _read_marker(folder) is None and any(folder.iterdir()):
        raise RuntimeError(f"{folder}: exists but was not written by the rehearsal (no {MARKER}); "
                           "not touching it — give the rehearsal a data folder of its own")
    shutil.rmtree(folder)


def _run(script: str, args: list[str], root: Path) -> subprocess.CompletedProcess:
    """Run ``data_scripts/<script> args`` with this interpreter; RuntimeError on failure."""
    cmd = [sys.executable, str(root / "data_scripts" / script), *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    for key in ("no_proxy", "NO_PROXY"):  # a proxy set for the real hosts must not get these
        env[key] = ",".join(p for p in (env.get(key), "127.0.0.1", "localhost") if p)
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=SCRIPT_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{script} {' '.join(args)}: no result after {SCRIPT_TIMEOUT} s"
                           ) from None
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-_TAIL:]) or "(no output on stderr)"
        raise RuntimeError(f"{script} {' '.join(args)} failed with exit status "
                           f"{proc.returncode}:\n{tail}")
    return proc


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"rehearsal data: {message}", file=sys.stderr, flush=True)


def prepare_rehearsal_dataset(dataset: str, data_dir: str | Path, *,
                              progress: bool = False) -> Path:
    """Fetch and prepare the fixture of ``dataset`` with the real scripts; returns the
    prepared folder ``<data_dir>/prepared/<dataset>`` (5 cases, see ``FIXTURE_CASES``).

    Idempotent (a current marker: returned at once) and safe for concurrent processes (an
    ``flock`` on ``<data_dir>/prepared/.<dataset>.lock``). ``progress`` prints each step to
    stderr.

    Raises:
        ValueError: ``dataset`` has no fixture.
        RuntimeError: a script failed (the message quotes the end of its stderr), or a folder
            to replace was not written by the rehearsal.
    """
    if dataset not in FIXTURE_CASES:
        raise ValueError(f"no rehearsal fixture for {dataset!r}; choose one of "
                         f"{', '.join(FIXTURE_CASES)}")
    data_dir = Path(data_dir).resolve()
    prepared = data_dir / "prepared" / dataset
    if is_current(prepared, dataset):
        return prepared
    prepared.parent.mkdir(parents=True, exist_ok=True)
    with open(prepared.parent / f".{dataset}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds it done
        if not is_current(prepared, dataset):
            _build(dataset, data_dir, prepared, progress)
    return prepared


def _build(dataset: str, data_dir: Path, prepared: Path, progress: bool) -> None:
    raw_root, mirror = data_dir / "raw", data_dir / "mirror" / dataset
    for folder in (prepared, raw_root / dataset, mirror):
        _clear(folder)
    _log(progress, f"{dataset}: writing the fixture to {mirror}")
    fixture = write_raw_fixture(dataset, mirror)
    _write_marker(mirror, _marker(dataset, "mirror"))  # hidden: not one of the sources' paths
    _write_marker(raw_root / dataset, _marker(dataset, "raw"))
    _write_marker(prepared, _marker(dataset, "preparing"))
    root = project_root()
    cases = ",".join(str(n) for n in sorted(case_number(c) for c in fixture["cases"]))
    with serve(mirror) as url:
        download = ["--dataset", dataset, "--raw", str(raw_root), "--base-url", url,
                    "--checksums", str(fixture["checksums"]), "--quiet"]
        if fixture["case_numbers"]:  # KiTS: per-case files
            download += ["--cases", ",".join(str(n) for n in sorted(fixture["case_numbers"]))]
        _log(progress, f"{dataset}: download_datasets.py from {url}")
        _run("download_datasets.py", download, root)
    _log(progress, f"{dataset}: prepare_dataset.py into {prepared}")
    _run("prepare_dataset.py", ["--dataset", dataset, "--raw", str(raw_root), "--out",
                                str(prepared), "--cases", cases], root)
    _write_marker(prepared, _marker(dataset, "complete"))


def prepare_rehearsal_datasets(datasets: Iterable[str], data_dir: str | Path, *,
                               progress: bool = False) -> dict[str, Path]:
    """:func:`prepare_rehearsal_dataset` for each of ``datasets``: ``{name: prepared folder}``."""
    return {name: prepare_rehearsal_dataset(name, data_dir, progress=progress)
            for name in dict.fromkeys(datasets)}
