"""Full-mode rehearsal: the full path of every chapter, shrunk only in size.

No chapter's full mode can run on a CPU with the real datasets and SAM ViT-B. A rehearsal
runs that same code — the shipped recipes, ``download_datasets.py`` → ``prepare_dataset.py`` →
the official fold files → ``sam3d train`` → ``sam3d evaluate``, the full-mode tables — on small
fixture datasets in each source's raw layout (served from 127.0.0.1 and fetched by the real
download script, :mod:`sam3d.rehearsal.data`), the ``tiny`` architecture initialised from a
random SAM-format checkpoint (:mod:`sam3d.rehearsal.sam_weights`) and one or two epochs
(:mod:`sam3d.rehearsal.shrink`). Its numbers are labelled "rehearsal": they are never results.

Switch it on with the notebook parameter ``REHEARSAL = True`` (with ``MODE = "full"``), or on
the command line with ``SAM3D_REHEARSAL=1`` (every command) or ``--set rehearsal=true``
(``sam3d train``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .shrink import DATA_ROOT, SAM_FILE

ENV = "SAM3D_REHEARSAL"
LABEL = "rehearsal: tiny model, fixture data — not a result"
__all__ = ["ENV", "LABEL", "Rehearsal", "active", "enable", "full_variant", "rehearse"]


def active() -> bool:
    """True when the environment asks for a rehearsal (``SAM3D_REHEARSAL`` = 1/true/yes/on)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def enable() -> None:
    """Switch the rehearsal on for this process and the commands it starts."""
    os.environ[ENV] = "1"


def full_variant(name: str) -> str:
    """The variant a full-mode run builds for ``name``: ``name`` itself, or its small
    counterpart (``vit_b`` → ``tiny``) in a rehearsal — the one rule ``load_config`` applies."""
    from .shrink import small_variant

    return small_variant(name) if active() else name


@dataclass(frozen=True)
class Rehearsal:
    """Where a rehearsing chapter finds its data and SAM weights (absolute paths)."""

    data_dir: Path
    sam_checkpoint: Path
    prepared: dict[str, Path]


def rehearse(mode: str, rehearsal: bool, datasets=()) -> Rehearsal | None:
    """A chapter's set-up: ``None`` unless ``rehearsal``; else switch the rehearsal on, write
    the random SAM-format checkpoint, fetch and prepare the fixture ``datasets`` (once; later
    calls reuse them) and return where they are.

    Raises ``ValueError`` for a rehearsal outside full mode (smoke mode is already small).
    """
    if not isinstance(rehearsal, bool):
        raise ValueError(f"REHEARSAL must be True or False, got {rehearsal!r}")
    if not rehearsal:
        return None
    if mode != "full":
        raise ValueError(f"REHEARSAL rehearses full mode: set MODE = 'full' (got {mode!r})")
    from ..provenance import project_path
    from .data import prepare_rehearsal_datasets
    from .sam_weights import write_sam_checkpoint

    enable()
    data_dir = project_path(DATA_ROOT)
    sam = write_sam_checkpoint(project_path(SAM_FILE))
    prepared = prepare_rehearsal_datasets(list(datasets), data_dir) if datasets else {}
    return Rehearsal(data_dir, sam, dict(prepared))
