"""Resumable, verified downloads and safe archive extraction (standard library only).

``download_file`` writes to ``<dest>.part`` and resumes an interrupted transfer with an HTTP
``Range`` request; the finished file is checked against an MD5 or SHA-256 and only then renamed
to ``dest``. ``safe_extract`` unpacks a tar or zip archive member by member, refusing anything
that could write outside the target folder (absolute paths, ``..``, links, devices, fifos),
into a temporary sibling folder that is moved into place only when complete.
``load_checksums`` reads a mirror operator's ``sam3d-checksums/1`` file of SHA-256s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.client import HTTPException
from pathlib import Path

from ..hashing import hash_file  # re-exported: sam3d.data.download.hash_file
from ..utils.archives import ArchiveError, extract_tree
from ..utils.files import atomic_write_text

USER_AGENT = "sam3d-data/1 (+https://arxiv.org/abs/2306.13465)"
CHECKSUMS_FORMAT = "sam3d-checksums/1"


class DownloadError(RuntimeError):
    """A download, checksum or extraction failed (the message says which file and why)."""


def load_checksums(path: str | Path) -> dict[str, str]:
    """Read a ``sam3d-checksums/1`` file: ``{remote path: lower-case SHA-256 hex}``.

    The file, given by a mirror's operator for a mirror that re-packs the files, is
    ``{"format": "sam3d-checksums/1", "sha256": {"Task07_Pancreas.tar": "<64 hex>", ...}}``;
    keys are ``RemoteFile.path`` formatted (``master_00013.nii.gz``; a leading ``/`` is
    dropped).

    Raises:
        ValueError: unreadable, not JSON, wrong format, or an entry that is not 64 hex digits
            (a one-line message naming the file).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read checksums file ({exc.__class__.__name__}: "
                         f"{exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != CHECKSUMS_FORMAT:
        raise ValueError(f"{path}: not a checksums file (\"format\" must be "
                         f"\"{CHECKSUMS_FORMAT}\")")
    table = doc.get("sha256")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: \"sha256\" must be a non-empty object "
                         "{\"<remote path>\": \"<hex>\"}")
    out: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str) or re.fullmatch(r"[0-9a-fA-F]{64}", value) is None:
            raise ValueError(f"{path}: entry {key!r} is not a SHA-256 (64 hex digits): "
                             f"{value!r}")
        out[key.lstrip("/")] = value.lower()
    return out


def _expected(md5: str | None, sha256: str | None) -> tuple[str, str] | None:
    if md5 and sha256:
        raise ValueError("give md5 or sha256, not both")
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    return None


def _check_hash(path: Path, expected: tuple[str, str] | None) -> str | None:
    """None when ``path`` matches (or no hash is expected), else the actual digest."""
    if expected is None:
        return None
    actual = hash_file(path, expected[0])
    return None if actual == expected[1] else actual


def download_file(url: str, dest: str | Path, *, md5: str | None = None,
                  sha256: str | None = None, progress: bool = True, chunk: int = 1 << 20,
                  timeout: float = 60) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial transfer; returns ``dest``.

    Data go to ``<dest>.part``; when a ``.part`` exists the request asks for the remaining bytes
    (``Range: bytes=N-``). A server that ignores the range (``200``) restarts the file from zero;
    ``416`` means the part is already complete. The finished file is checked against ``md5`` or
    ``sha256`` (when given) and renamed to ``dest``. An existing ``dest`` whose hash matches (or
    any existing ``dest`` when no hash is given) is kept without contacting the server.

    Raises:
        DownloadError: network or HTTP failure (the partial file is kept for resuming), or a
            checksum mismatch (the bad file is deleted).
    """
    dest = Path(dest)
    expected = _expected(md5, sha256)
    if dest.is_file():
        if _check_hash(dest, expected) is None:
            return dest
        print(f"download: {dest} does not match its {expected[0]}; downloading it again",
              file=sys.stderr)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    for _attempt in range(3):  # a range the server cannot serve restarts from zero, once or twice
        if _fetch(url, part, progress=progress, chunk=chunk, timeout=timeout):
            break
    else:
        raise DownloadError(f"{url}: the server kept refusing the resume request; "
                            f"delete {part} and try again")
    actual = _check_hash(part, expected)
    if actual is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{dest.name}: {expected[0]} mismatch: expected {expected[1]}, "
                            f"got {actual} (the bad download was deleted; run again)")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, *, progress: bool, chunk: int, timeout: float) -> bool:
    """One request into ``part``; True when ``part`` is complete, False to retry from zero."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    kept = f"the partial file {part} is kept; run again to resume"
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            total = _range_total(exc.headers.get("Content-Range", ""))
            exc.close()
            if total is None or total == offset:
                return True  # nothing left to fetch: the checksum decides
            part.unlink()
            return False
        exc.close()
        note = f"; {kept}" if offset else ""
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}{note}") from None
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot connect ({reason}); {kept}") from None
    with response:
        status = response.status
        if offset and status == 206:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink()
                return False
            mode = "ab"
        else:
            offset, mode = 0, "wb"  # 200: the server sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        bar = _progress_bar(part.name[:-len(".part")], total, offset, progress)
        received = 0
        try:
            with open(part, mode) as fh:
                while block := response.read(chunk):
                    fh.write(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        except (HTTPException, OSError) as exc:
            raise DownloadError(f"{url}: transfer interrupted after {offset + received} bytes "
                                f"({exc.__class__.__name__}: {exc}); {kept}") from None
        finally:
            if bar is not None:
                bar.close()
    if length and length.isdigit() and received < int(length):
        raise DownloadError(f"{url}: transfer interrupted after {offset + received} of "
                            f"{total} bytes; {kept}")
    return True


def _range_start(content_range: str) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-\d+/", content_range)
    return int(match.group(1)) if match else None


def _range_total(content_range: str) -> int | None:
    match = re.match(r"\s*bytes\s+\*/(\d+)", content_range)
    return int(match.group(1)) if match else None


def _progress_bar(name: str, total: int | None, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency, but stay usable without it
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, leave=False)


# --------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------

def extracted_marker(archive: str | Path, target: str | Path) -> Path:
    """The file whose presence says ``archive`` was fully extracted into ``target``."""
    return Path(target) / f".extracted-{Path(archive).name}"


def safe_extract(archive: str | Path, target: str | Path, *,
                 members: Iterable[str] | None = None) -> Path:
    """Extract a ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive into ``target``; returns ``target``.

    Every member is checked before anything is written (:func:`sam3d.utils.archives.
    extract_tree`): absolute paths, ``..`` components, symbolic and hard links, devices and
    fifos are refused with ``DownloadError`` naming the member. Files are copied out one by one
    into a temporary sibling folder whose top-level entries are then moved into ``target``;
    ``target/.extracted-<archive name>`` is written last and makes a later call a no-op.
    ``members`` limits extraction to those member names (each must exist).
    """
    archive, target = Path(archive), Path(target)
    marker = extracted_marker(archive, target)
    if marker.is_file():
        return target
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    staging = target.parent / f".{target.name}.extracting-{archive.name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted run
    staging.mkdir(parents=True)
    try:
        try:
            extract_tree(archive, staging, members)
        except ArchiveError as exc:
            raise DownloadError(str(exc)) from None
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(staging.iterdir()):
            dest = target / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            os.replace(entry, dest)
        atomic_write_text(marker, f"{archive.name}\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
