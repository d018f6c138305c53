"""Results cached by content: one JSON file per entry, named by a digest of everything the
result depends on, so a stale result is never mistaken for a current one. Used by the SAM 2D
baseline (:mod:`sam3d.baselines.sam2d_cache`) and the protocol comparison
(:mod:`sam3d.experiments.protocols`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .utils.files import atomic_write_json

__all__ = ["content_key", "read_entry", "write_entry"]


def content_key(doc: dict[str, Any]) -> str:
    """12 hex digits of the SHA-256 of ``doc`` as sorted JSON."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def read_entry(path: Path, fmt: str, key: str) -> dict[str, Any] | None:
    """The entry stored at ``path`` when it has this ``format`` and ``key``, else None."""
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return doc if doc.get("format") == fmt and doc.get("key") == key else None


def write_entry(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (:func:`sam3d.utils.files.atomic_write_json`)."""
    atomic_write_json(path, doc)
