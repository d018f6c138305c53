"""Provenance of a run: package versions, device, git commit, wall time."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

_START = time.time()
PACKAGES = ("sam3d", "torch", "monai", "segment-anything", "numpy", "nibabel")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(root: str | Path | None = None) -> str:
    """Short commit of the checkout (with ``+dirty`` if it has changes), or ``unknown``."""
    root = Path(root) if root else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, encoding="utf-8",
                                errors="replace", check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, encoding="utf-8",
                               errors="replace", check=False).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: str = "cpu", mode: str = "smoke", seed: int | None = None) -> dict:
    """A dict to print at the top (and bottom: wall time so far) of every notebook."""
    from .rehearsal import active

    info = {"mode": mode, "rehearsal": mode == "full" and active(), "seed": seed,
            "device": device_name(device), "git_commit": git_commit(),
            "python": platform.python_version()}
    info.update({name: _version(name) for name in PACKAGES})
    info["wall_time_s"] = round(time.time() - _START, 1)
    return info


def project_path(path: str | Path) -> Path:
    """``path`` as given when absolute; otherwise relative to the project root (the nearest
    folder above the working directory holding ``pyproject.toml`` and ``sam3d/``), so a
    notebook run from ``notebooks/`` (as the book build does) finds the same ``data/``."""
    p = Path(path)
    if p.is_absolute():
        return p
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "sam3d").is_dir():
            return folder / p
    return here / p
