"""Atomic writes: the one way sam3d writes a result file or swaps a result folder.

:func:`atomic_write` gives a writer a unique temporary file beside the target (``mkstemp`` in
the same folder, so two processes writing the same target never share a temporary), flushes it
to disk (``fsync``), gives it the usual file mode (``0o666`` less the umask, not ``mkstemp``'s
``0o600``) and moves it over the target with ``os.replace``. A reader therefore sees either the
earlier file or the complete new one, never a partial file; when the writer raises, the
temporary is removed and the earlier file is left as it was. The temporary keeps the target's
suffixes (``.nii.gz``, ``.png`` …) so writers that choose the format from the file name
(``nibabel.save``, ``Figure.savefig``) write the right one.

:func:`replace_dir` is the folder-level counterpart: a complete folder staged beside the
target takes the target's place, and the previous folder is put back if the swap fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "replace_dir"]


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status",
                                                         encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path``'s data to disk; for a folder, best effort (not every system allows it)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file beside it.

    Args:
        path: the target; its folder is created when missing.
        write: called once with the temporary file's path (which exists, empty, and ends in
            the target's suffixes); it writes the whole content there, by name (it may
            truncate or replace the file, but must not move it elsewhere).

    Returns the target path. On any exception from ``write`` (or from the flush, chmod or
    rename) the temporary is removed, the target is untouched and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent, directory=True)  # make the rename itself durable
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically, without newline translation (the same bytes on
    every system; see :func:`atomic_write`)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, doc: Any, indent: int | None = 1) -> Path:
    """Write ``doc`` as JSON (``indent`` 1 and a final newline, sam3d's result-file style) to
    ``path`` atomically."""
    return atomic_write_text(path, json.dumps(doc, indent=indent) + "\n")


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the complete folder ``staged`` to ``final``, replacing any folder there.

    ``staged`` must lie in ``final``'s parent folder (a rename, not a copy). An existing
    ``final`` is first renamed aside to a unique hidden name, then removed once ``staged`` is
    in place; if that rename fails, the previous folder is put back and the error propagates
    (``staged`` is then left for the caller to remove). Returns ``final``.
    """
    staged, final = Path(staged), Path(final)
    if not final.exists():
        staged.rename(final)
        return final
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    final.rename(old)
    try:
        staged.rename(final)
    except BaseException:
        old.rename(final)  # put the previous folder back
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final
