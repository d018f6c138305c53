"""File digests: the one place that hashes files (no torch import, so the data scripts stay
quick to start). ``sam3d.build`` and ``sam3d.data.download`` re-export these."""

from __future__ import annotations

import hashlib
from pathlib import Path

ALGORITHMS = ("md5", "sha256")


def hash_file(path: str | Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, ``algo`` = ``"md5"`` or ``"sha256"``, read in chunks."""
    algo = algo.lower()
    if algo not in ALGORITHMS:
        raise ValueError(f"unsupported hash algorithm {algo!r} (use 'md5' or 'sha256')")
    digest = hashlib.md5(usedforsecurity=False) if algo == "md5" else hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    return hash_file(path, "sha256", chunk)
