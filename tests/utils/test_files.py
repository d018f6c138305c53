"""sam3d.utils.files: atomic writes keep the earlier file on failure, use distinct temporaries,
leave nothing behind, give the usual file mode; replace_dir swaps folders."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from sam3d.utils import files
from sam3d.utils.files import (
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    replace_dir,
)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_text_bytes_and_json(tmp_path: Path) -> None:
    assert atomic_write_text(tmp_path / "sub/a.txt", "é\r\nx\n") == tmp_path / "sub/a.txt"
    assert (tmp_path / "sub/a.txt").read_bytes() == "é\r\nx\n".encode()  # no translation
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == '{\n "k": [\n  1,\n  2\n ]\n}\n'
    assert _listing(tmp_path) == ["b.bin", "c.json", "sub"]
    assert _listing(tmp_path / "sub") == ["a.txt"]


def test_earlier_file_survives_a_writer_that_raises(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "result.csv", "old\n")

    def broken(tmp: Path) -> None:
        tmp.write_text("half a fi", encoding="utf-8")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, broken)
    assert target.read_text(encoding="utf-8") == "old\n"
    assert _listing(tmp_path) == ["result.csv"]  # no temporary left behind


def test_interrupt_also_removes_the_temporary(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.json", interrupted)
    assert _listing(tmp_path) == []


def test_failed_rename_keeps_the_earlier_file(tmp_path: Path, monkeypatch) -> None:
    target = atomic_write_text(tmp_path / "r.txt", "old")

    def no_replace(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(files.os, "replace", no_replace)
    with pytest.raises(OSError, match="rename refused"):
        atomic_write_text(target, "new")
    assert target.read_text(encoding="utf-8") == "old" and _listing(tmp_path) == ["r.txt"]


def test_temporary_is_beside_the_target_with_its_suffixes(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "mask.nii.gz", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"")))
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".mask.nii.gz.")
    assert tmp.name.endswith(".tmp.nii.gz") and not tmp.exists()


def test_concurrent_writers_use_distinct_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    n = 4
    barrier = threading.Barrier(n)
    temporaries: list[Path] = []
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        def write(tmp: Path) -> None:
            temporaries.append(tmp)
            tmp.write_text(f"writer {i}\n" * 1000, encoding="utf-8")
            barrier.wait(timeout=10)  # every writer holds its temporary at the same time

        try:
            atomic_write(target, write)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(temporaries)) == n
    text = target.read_text(encoding="utf-8")
    assert text in {f"writer {i}\n" * 1000 for i in range(n)}  # one whole file, not a mix
    assert _listing(tmp_path) == ["metrics.csv"]


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "m.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_replace_dir_swaps_and_restores(tmp_path: Path, monkeypatch) -> None:
    final = tmp_path / "case"
    staged = tmp_path / ".case.partial"
    staged.mkdir()
    (staged / "a").write_text("1", encoding="utf-8")
    assert replace_dir(staged, final) == final and (final / "a").read_text() == "1"
    staged.mkdir()
    (staged / "b").write_text("2", encoding="utf-8")
    replace_dir(staged, final)
    assert _listing(final) == ["b"] and _listing(tmp_path) == ["case"]

    staged.mkdir()
    real_rename = Path.rename

    def refuse_staged(self: Path, target):
        if self == staged:
            raise OSError("cannot rename")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_staged)
    with pytest.raises(OSError, match="cannot rename"):
        replace_dir(staged, final)
    assert _listing(final) == ["b"]  # the previous folder is back
    assert _listing(tmp_path) == [".case.partial", "case"]
