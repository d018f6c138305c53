"""project_path: notebooks run from notebooks/ (the book build) find the repository's data/."""

from __future__ import annotations

from pathlib import Path

from sam3d.provenance import project_path

REPO = Path(__file__).resolve().parents[1]


def test_relative_paths_resolve_from_the_project_root(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(REPO / "notebooks")
    assert project_path("data/samples") == REPO / "data/samples"
    monkeypatch.chdir(REPO)
    assert project_path("data") == REPO / "data"
    assert project_path(tmp_path / "x") == tmp_path / "x"  # absolute paths are kept
    monkeypatch.chdir(tmp_path)  # outside any project: the working directory
    assert project_path("data") == tmp_path.resolve() / "data"
