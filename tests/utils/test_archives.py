"""sam3d.utils.archives: hand-made malicious tar and zip archives are refused before anything
is written, by both extract_tree (folder trees) and extract_files (named members)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from sam3d.utils.archives import ArchiveError, extract_files, extract_tree, list_members

TAR_TYPES = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}


def make_tar(path: Path, files: dict[str, bytes], **special: int) -> Path:
    """A tar of regular ``files`` plus members ``name=<tarfile type>`` pointing at /etc."""
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, kind in special.items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return path


def make_zip(path: Path, files: dict[str, bytes], links: tuple[str, ...] = (),
             modes: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
        for name, mode in (modes or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, b"")
    return path


def test_good_archives_extract(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "a.tar.gz", {"top/x.txt": b"x", "top/sub/y.txt": b"yy"})
    (tmp_path / "t").mkdir()
    extract_tree(tar, tmp_path / "t")
    assert (tmp_path / "t/top/sub/y.txt").read_bytes() == b"yy"
    zp = make_zip(tmp_path / "a.whl", {"pkg/d/x.bin": b"xx", "pkg/other": b"no"})
    got = extract_files(zp, {"x.bin": "pkg/d/x.bin"}, tmp_path / "f")
    assert got == {"x.bin": tmp_path / "f/x.bin"} and got["x.bin"].read_bytes() == b"xx"
    assert [m.name for m in list_members(zp)] == ["pkg/d/x.bin", "pkg/other"]


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil-sam3d.txt",
                                  "C:/evil.txt", "..\\evil.txt"])
@pytest.mark.parametrize("fmt", ["tar", "zip"])
def test_paths_outside_the_target_are_refused(tmp_path: Path, name: str, fmt: str) -> None:
    files = {"fine.txt": b"ok", name: b"evil"}
    archive = (make_tar(tmp_path / "a.tar", files) if fmt == "tar"
               else make_zip(tmp_path / "a.zip", files))
    root = tmp_path / "deep/out"
    root.mkdir(parents=True)
    with pytest.raises(ArchiveError, match="refusing member"):
        extract_tree(archive, root)
    assert list(root.iterdir()) == []  # checked before anything was written
    with pytest.raises(ArchiveError, match="refusing member"):
        extract_files(archive, {"x": name}, tmp_path / "flat")
    assert not (tmp_path / "flat").exists()
    assert not list(tmp_path.rglob("evil*"))


@pytest.mark.parametrize("kind", sorted(TAR_TYPES))
def test_tar_links_and_special_files_are_refused(tmp_path: Path, kind: str) -> None:
    tar = make_tar(tmp_path / "a.tar", {"fine.txt": b"ok"}, bad=TAR_TYPES[kind])
    (tmp_path / "out").mkdir()
    expected = "links are not allowed" if "link" in kind else "device, fifo or other special file"
    with pytest.raises(ArchiveError, match=f"'bad': {expected}"):
        extract_tree(tar, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(ArchiveError, match="not a regular file"):
        extract_files(tar, {"x": "bad"}, tmp_path / "flat")
    assert not (tmp_path / "flat").exists()


def test_zip_links_and_special_files_are_refused(tmp_path: Path) -> None:
    zp = make_zip(tmp_path / "l.zip", {"fine.txt": b"ok"}, links=("link",),
                  modes={"fifo": 0o010644})
    (tmp_path / "out").mkdir()
    with pytest.raises(ArchiveError, match="'link': links are not allowed"):
        extract_tree(zp, tmp_path / "out")
    with pytest.raises(ArchiveError, match="'link': links are not allowed"):
        extract_files(zp, {"x": "link"}, tmp_path / "flat")
    with pytest.raises(ArchiveError, match="'fifo': device, fifo"):
        extract_files(zp, {"x": "fifo"}, tmp_path / "flat")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "flat").exists()


def test_a_link_inside_the_target_is_refused_too(tmp_path: Path) -> None:
    """Even a link that points inside the archive could later be used to write through it."""
    tar = make_tar(tmp_path / "a.tar", {"d/x.txt": b"x"}, **{"d/y": tarfile.SYMTYPE})
    (tmp_path / "out").mkdir()
    with pytest.raises(ArchiveError, match="'d/y'"):
        extract_tree(tar, tmp_path / "out")


def test_members_and_output_names(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "a.tar", {"a.txt": b"a", "b.txt": b"b"})
    (tmp_path / "out").mkdir()
    extract_tree(tar, tmp_path / "out", members=["b.txt"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.txt"]
    with pytest.raises(ArchiveError, match="members not found: c.txt"):
        extract_tree(tar, tmp_path / "out", members=["c.txt"])
    with pytest.raises(ArchiveError, match="has no member c.txt"):
        extract_files(tar, {"c": "c.txt"}, tmp_path / "flat")
    for bad in ("../x", "sub/x", "..", ""):
        with pytest.raises(ArchiveError, match="invalid output name"):
            extract_files(tar, {bad: "a.txt"}, tmp_path / "flat")
    assert not (tmp_path / "flat").exists()


def test_unreadable_archives(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive" * 100)
    with pytest.raises(ArchiveError, match="not a readable tar or zip archive"):
        extract_tree(junk, tmp_path)
    with pytest.raises(ArchiveError, match="archive not found"):
        extract_files(tmp_path / "nowhere.zip", {"x": "x"}, tmp_path / "flat")
    data = bytes(range(256)) * 400
    tar = make_tar(tmp_path / "big.tar", {"big.bin": data})
    tar.write_bytes(tar.read_bytes()[: len(data) // 2])
    with pytest.raises(ArchiveError, match="big.tar"):
        extract_files(tar, {"b": "big.bin"}, tmp_path / "flat")
