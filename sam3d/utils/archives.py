"""Safe extraction of tar and zip archives: the one extractor of the package.

Every member is checked before anything is written. Refused, with :class:`ArchiveError`
naming the archive and the member: absolute paths (``/x``, ``C:x``), ``..`` components, any
path that would land outside the target folder, symbolic and hard links, devices, fifos and
other special files. Files are copied out one by one from the archive's stream, so nothing
relies on ``tarfile``'s extraction filters (absent from older Pythons) or on ``zipfile``'s
name sanitising.

:func:`extract_tree` unpacks the folder tree (or named members of it) under a folder;
:func:`extract_files` copies named regular-file members to flat output names of the caller's
choosing. Callers translate :class:`ArchiveError` into their own error type
(``sam3d.data.download.DownloadError``, ``sam3d.data.samples.SampleDataError``).
"""

from __future__ import annotations

import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

__all__ = ["ArchiveError", "Member", "extract_files", "extract_tree", "list_members",
           "member_path"]

_CHUNK = 1 << 20


class ArchiveError(RuntimeError):
    """An archive that is unreadable, lacks a requested member or holds a refused member."""


@dataclass(frozen=True)
class Member:
    """One archive entry: ``name`` as stored, ``kind`` ("file", "dir", "link" or "special")
    and, for a tar link, its ``link`` target."""

    name: str
    kind: str
    link: str = ""


class _Reader:
    """Uniform access to the members of a tar or zip archive."""

    def __init__(self, archive: Path, handle: Any, members: list[Member], raw: dict[str, Any]):
        self.archive, self.handle, self.members, self._raw = archive, handle, members, raw

    def copy(self, member: Member, dest: Path) -> None:
        """Stream the regular file ``member`` to ``dest``."""
        try:
            src: IO[bytes] | None
            if isinstance(self.handle, zipfile.ZipFile):
                src = self.handle.open(self._raw[member.name])
            else:
                src = self.handle.extractfile(self._raw[member.name])
            if src is None:
                raise ArchiveError(f"{self.archive}: {member.name!r} has no data")
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(f"{self.archive}: cannot extract {member.name!r} (truncated or "
                               f"corrupt archive? {exc})") from None


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.issym() or info.islnk():
        return "link"
    if info.isdir():
        return "dir"
    return "file" if info.isfile() else "special"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16  # Unix mode bits, when the archiver recorded them
    if mode and stat.S_ISLNK(mode):
        return "link"
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "special"
    return "dir" if info.is_dir() else "file"


@contextmanager
def _open(archive: Path) -> Iterator[_Reader]:
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    with ExitStack() as stack:
        if zipfile.is_zipfile(archive):
            try:
                zf = stack.enter_context(zipfile.ZipFile(archive))
            except (zipfile.BadZipFile, OSError) as exc:
                raise ArchiveError(f"{archive}: corrupt zip archive ({exc})") from None
            infos = zf.infolist()
            yield _Reader(archive, zf, [Member(i.filename, _zip_kind(i)) for i in infos],
                          {i.filename: i for i in infos})
            return
        try:
            tf = stack.enter_context(tarfile.open(archive))
            tinfos = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"{archive}: not a readable tar or zip archive ({exc})") from None
        yield _Reader(archive, tf, [Member(m.name, _tar_kind(m), m.linkname) for m in tinfos],
                      {m.name: m for m in tinfos})


def list_members(archive: str | Path) -> list[Member]:
    """The members of a tar or zip archive, in stored order."""
    with _open(Path(archive)) as reader:
        return list(reader.members)


def _refuse_special(archive: Path, member: Member) -> None:
    if member.kind == "link":
        target = f" to {member.link!r}" if member.link else ""
        raise ArchiveError(f"{archive}: refusing member {member.name!r}: links are not allowed "
                           f"(a link{target}, not a regular file)")
    if member.kind == "special":
        raise ArchiveError(f"{archive}: refusing member {member.name!r}: device, fifo or other "
                           "special file, not a regular file")


def member_path(archive: str | Path, name: str, root: str | Path) -> Path:
    """Where member ``name`` goes under ``root``; refuses absolute paths, ``..`` and anything
    else that would land outside ``root``."""
    norm = name.replace("\\", "/")
    pure = PurePosixPath(norm)
    if not norm or norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in pure.parts:
        raise ArchiveError(f"{archive}: refusing member {name!r}: absolute path or '..'")
    base = Path(root).resolve()
    dest = (base / pure).resolve()
    if dest != base and not dest.is_relative_to(base):
        raise ArchiveError(f"{archive}: refusing member {name!r}: it lands outside the target")
    return dest


def extract_tree(archive: str | Path, root: str | Path,
                 members: Iterable[str] | None = None) -> Path:
    """Unpack ``archive`` (or only the ``members`` named, each of which must exist) under the
    existing folder ``root``, keeping the members' relative paths; returns ``root``.

    Everything is checked first, so a refused member means nothing was written.
    """
    archive, root = Path(archive), Path(root)
    with _open(archive) as reader:
        chosen = reader.members
        if members is not None:
            wanted = {m.rstrip("/") for m in members}
            missing = wanted - {m.name.rstrip("/") for m in chosen}
            if missing:
                raise ArchiveError(f"{archive}: members not found: {', '.join(sorted(missing))}")
            chosen = [m for m in chosen if m.name.rstrip("/") in wanted]
        plan = []
        for member in chosen:  # check everything before writing anything
            _refuse_special(archive, member)
            plan.append((member, member_path(archive, member.name, root)))
        for member, dest in plan:
            if member.kind == "dir":
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            reader.copy(member, dest)
    return root


def extract_files(archive: str | Path, members: Mapping[str, str], dest: str | Path,
                  ) -> dict[str, Path]:
    """Copy regular-file members to ``dest/<output name>``; ``members`` maps output names
    (plain file names, no folders) to member names. Returns ``{output name: path}``."""
    archive, dest = Path(archive), Path(dest)
    for name in members:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ArchiveError(f"invalid output name {name!r}")
    with _open(archive) as reader:
        by_name = {m.name: m for m in reader.members}
        plan = []
        for name, wanted in members.items():
            member = by_name.get(wanted)
            if member is None:
                raise ArchiveError(f"{archive}: has no member {wanted}")
            member_path(archive, member.name, dest)
            _refuse_special(archive, member)
            if member.kind != "file":
                raise ArchiveError(f"{archive}: refusing member {member.name!r}: a folder, "
                                   "not a regular file")
            plan.append((name, member))
        dest.mkdir(parents=True, exist_ok=True)
        out = {}
        for name, member in plan:
            reader.copy(member, dest / name)
            out[name] = dest / name
    return out
