"""download_file, safe_extract and download_dataset against a local HTTP server (offline)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3d.data import sources
from sam3d.data.download import DownloadError, download_file, hash_file, safe_extract

REPO = Path(__file__).resolve().parents[2]


class _Handler(BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` support; can drop the connection or ignore ranges."""

    def do_GET(self):
        state = self.server.state
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        state.log.append((path, rng))
        data = state.files.get(path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drop = state.drop_after.pop(path, None)
        if drop is not None:  # send part of the body, then hang up
            self.wfile.write(body[:drop])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@dataclasses.dataclass
class Server:
    url: str
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    log: list[tuple[str, str | None]] = dataclasses.field(default_factory=list)
    drop_after: dict[str, int] = dataclasses.field(default_factory=dict)
    ignore_range: bool = False


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    state = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.state = state
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def payload() -> bytes:
    return np.random.default_rng(0).bytes(300_000)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------
# download_file
# --------------------------------------------------------------------------------------

def test_download_and_md5(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(payload),
                         progress=False)
    assert dest.read_bytes() == payload
    assert not (tmp_path / "a.bin.part").exists()
    assert server.log == [("/a.bin", None)]


def test_sha256_and_hash_file(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    sha = hashlib.sha256(payload).hexdigest()
    dest = download_file(f"{server.url}/a.bin", tmp_path / "a.bin", sha256=sha, progress=True)
    assert hash_file(dest, "sha256") == sha
    assert hash_file(dest, "MD5") == md5(payload)
    with pytest.raises(ValueError, match="unsupported hash"):
        hash_file(dest, "sha1")


def test_resume_after_interrupted_transfer(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.drop_after["/a.bin"] = 100_000
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match="kept; run again to resume") as info:
        download_file(f"{server.url}/a.bin", dest, md5=md5(payload), progress=False, chunk=8192)
    assert f"{server.url}/a.bin" in str(info.value)
    part = tmp_path / "a.bin.part"
    assert part.stat().st_size == 100_000 and not dest.exists()
    download_file(f"{server.url}/a.bin", dest, md5=md5(payload), progress=False, chunk=8192)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.log == [("/a.bin", None), ("/a.bin", "bytes=100000-")]


def test_wrong_hash_deletes_file(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as info:
        download_file(f"{server.url}/a.bin", dest, md5="0" * 32, progress=False)
    message = str(info.value)
    assert "a.bin" in message and "0" * 32 in message and md5(payload) in message
    assert list(tmp_path.iterdir()) == []


def test_second_call_makes_no_request(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    download_file(f"{server.url}/a.bin", dest, md5=md5(payload), progress=False)
    server.log.clear()
    download_file(f"{server.url}/a.bin", dest, md5=md5(payload), progress=False)
    download_file(f"{server.url}/a.bin", dest, progress=False)  # no hash: existing file kept
    assert server.log == []


def test_existing_file_with_wrong_hash_is_fetched_again(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"stale")
    download_file(f"{server.url}/a.bin", dest, md5=md5(payload), progress=False)
    assert dest.read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(b"x" * 1000)  # would corrupt the file if appended to
    dest = download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(payload),
                         progress=False)
    assert dest.read_bytes() == payload
    assert server.log == [("/a.bin", "bytes=1000-")]


def test_complete_part_answered_416(server, payload, tmp_path):
    server.files["/a.bin"] = payload
    (tmp_path / "a.bin.part").write_bytes(payload)
    dest = download_file(f"{server.url}/a.bin", tmp_path / "a.bin", md5=md5(payload),
                         progress=False)
    assert dest.read_bytes() == payload
    assert server.log == [("/a.bin", f"bytes={len(payload)}-")]


def test_http_and_network_errors(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing\.bin: HTTP 404"):
        download_file(f"{server.url}/missing.bin", tmp_path / "m.bin", progress=False)
    with pytest.raises(DownloadError, match="cannot connect"):
        download_file("http://127.0.0.1:9/x.bin", tmp_path / "x.bin", progress=False, timeout=5)


# --------------------------------------------------------------------------------------
# safe_extract
# --------------------------------------------------------------------------------------

def make_tar(path: Path, entries: list[tuple[str, bytes | None]], **special) -> Path:
    """Tar with regular files (bytes) and directories (None); ``special``: name → TarInfo kw."""
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        for name, kw in special.items():
            info = tarfile.TarInfo(name)
            for key, value in kw.items():
                setattr(info, key, value)
            tf.addfile(info)
    return path


def test_extract_tar_and_zip(tmp_path):
    tar = make_tar(tmp_path / "a.tar.gz", [("top", None), ("top/x.txt", b"x"),
                                           ("top/sub/y.txt", b"yy")])
    target = safe_extract(tar, tmp_path / "out")
    assert (target / "top/sub/y.txt").read_bytes() == b"yy"
    assert (target / ".extracted-a.tar.gz").is_file()
    (target / "top/x.txt").write_bytes(b"changed")
    safe_extract(tar, target)  # marker present: nothing happens
    assert (target / "top/x.txt").read_bytes() == b"changed"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as zf:
        zf.writestr("d/volume-1.nii", b"data")
    safe_extract(tmp_path / "b.zip", tmp_path / "z")
    assert (tmp_path / "z/d/volume-1.nii").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_extract_selected_members(tmp_path):
    tar = make_tar(tmp_path / "a.tar", [("a.txt", b"a"), ("b.txt", b"b")])
    safe_extract(tar, tmp_path / "out", members=["b.txt"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".extracted-a.tar", "b.txt"]
    with pytest.raises(DownloadError, match="members not found: c.txt"):
        safe_extract(tar, tmp_path / "out2", members=["c.txt"])


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil-sam3d.txt"])
def test_refuses_paths_outside_target(tmp_path, name):
    tar = make_tar(tmp_path / "a.tar", [("fine.txt", b"ok"), (name, b"evil")])
    with pytest.raises(DownloadError, match=re.escape(repr(name))):
        safe_extract(tar, tmp_path / "deep/out")
    assert not (tmp_path / "deep/out").exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "deep/evil.txt").exists()
    assert list((tmp_path / "deep").iterdir()) == []  # the staging folder is gone too


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "device"])
def test_refuses_links_and_special_files(tmp_path, kind):
    types = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "fifo": tarfile.FIFOTYPE, "device": tarfile.CHRTYPE}
    tar = make_tar(tmp_path / "a.tar", [("fine.txt", b"ok")],
                   bad={"type": types[kind], "linkname": "/etc/passwd"})
    with pytest.raises(DownloadError, match="'bad'"):
        safe_extract(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_refuses_symlink_and_traversal(tmp_path):
    link = zipfile.ZipInfo("link")
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DownloadError, match="'link': links are not allowed"):
        safe_extract(tmp_path / "l.zip", tmp_path / "out")
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("../evil.txt", b"evil")
    with pytest.raises(DownloadError, match=r"'\.\./evil\.txt'"):
        safe_extract(tmp_path / "t.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_truncated_archive_leaves_no_target(tmp_path):
    data = np.random.default_rng(1).bytes(50_000)
    tar = make_tar(tmp_path / "a.tar.gz", [("big.bin", data), ("more.bin", data)])
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with pytest.raises(DownloadError, match="a.tar.gz"):
        safe_extract(tar, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


# --------------------------------------------------------------------------------------
# download_dataset and the CLI
# --------------------------------------------------------------------------------------

def nii_gz(shape=(8, 7, 6), values=(0, 1, 2), seed=0) -> bytes:
    data = np.random.default_rng(seed).choice(values, size=shape).astype(np.int16)
    return nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1])).to_bytes()


def msd_tar(task: str, prefix: str, numbers: list[int]) -> bytes:
    """An MSD-style tar: imagesTr/labelsTr, dataset.json and macOS ``._*`` junk files."""
    buf = io.BytesIO()
    entries = [(f"{task}/dataset.json", b'{"name": "%s"}' % task.encode())]
    for n in numbers:
        for sub in ("imagesTr", "labelsTr"):
            entries.append((f"{task}/{sub}/{prefix}_{n:03d}.nii.gz", nii_gz(seed=n)))
            entries.append((f"{task}/{sub}/._{prefix}_{n:03d}.nii.gz", b"\x00\x05\x16\x07junk"))
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def local_pancreas(server, monkeypatch):
    """Serve a tiny Task07 tar and make the pancreas source expect its md5."""
    tar = msd_tar("Task07_Pancreas", "pancreas", [1, 4])
    server.files["/Task07_Pancreas.tar"] = tar
    src = sources.SOURCES["pancreas"]
    patched = dataclasses.replace(src, files=(dataclasses.replace(src.files[0], md5=md5(tar)),))
    monkeypatch.setattr(sources, "SOURCES", {**sources.SOURCES, "pancreas": patched})
    return tar


def test_download_dataset_msd(server, local_pancreas, tmp_path):
    where = sources.download_dataset("pancreas", tmp_path / "raw", base_url=server.url,
                                     progress=False)
    assert where == tmp_path / "raw/pancreas"
    task = where / "Task07_Pancreas"
    assert (task / "imagesTr/pancreas_004.nii.gz").is_file()
    assert (task / "dataset.json").is_file() and (where / "Task07_Pancreas.tar").is_file()
    server.log.clear()
    sources.download_dataset("pancreas", tmp_path / "raw", base_url=server.url, progress=False)
    assert server.log == []
    with pytest.raises(ValueError, match="only applies to per-case"):
        sources.download_dataset("pancreas", tmp_path / "raw", cases=[1], base_url=server.url)


def test_download_dataset_msd_delete_archive(server, local_pancreas, tmp_path):
    where = sources.download_dataset("pancreas", tmp_path, base_url=server.url,
                                     progress=False, keep_archives=False)
    assert not (where / "Task07_Pancreas.tar").exists()
    assert (where / "Task07_Pancreas/labelsTr/pancreas_001.nii.gz").is_file()
    server.log.clear()
    sources.download_dataset("pancreas", tmp_path, base_url=server.url, progress=False)
    assert server.log == []


def serve_kits(server, numbers):
    for i in numbers:
        server.files[f"/master_{i:05d}.nii.gz"] = nii_gz(values=(-100, 50, 300), seed=i)
        server.files[f"/neheller/kits21/master/kits21/data/case_{i:05d}/"
                     "aggregated_MAJ_seg.nii.gz"] = nii_gz(seed=i)


def test_download_dataset_kits(server, tmp_path):
    serve_kits(server, [0, 13])
    where = sources.download_dataset("kits", tmp_path, cases=[0, 13], base_url=server.url,
                                     progress=False)
    for i in (0, 13):
        assert (where / f"case_{i:05d}/imaging.nii.gz").read_bytes() == \
            server.files[f"/master_{i:05d}.nii.gz"]
        assert (where / f"case_{i:05d}/aggregated_MAJ_seg.nii.gz").is_file()
    server.log.clear()
    sources.download_dataset("kits", tmp_path, cases=[0, 13], base_url=server.url)
    assert server.log == []
    with pytest.raises(ValueError, match=r"no case number\(s\) \[300\]"):
        sources.download_dataset("kits", tmp_path, cases=[300], base_url=server.url)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data_scripts/download_datasets.py"), *args],
                          check=False, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _script_main():
    """The CLI's ``main`` loaded in-process (cheap: this process has imported torch already)."""
    spec = importlib.util.spec_from_file_location(
        "download_datasets", REPO / "data_scripts/download_datasets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_exit_codes(server, tmp_path, capsys):
    serve_kits(server, [0, 1])
    ok = _cli("--dataset", "kits", "--raw", str(tmp_path), "--cases", "0-1", "--base-url",
              server.url, "--quiet")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "kits/case_00001/aggregated_MAJ_seg.nii.gz").is_file()
    bad = _cli("--dataset", "nope")  # argument errors exit before sam3d is imported: fast
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    wrong = _cli("--dataset", "colon", "--cases", "0-3")
    assert wrong.returncode == 2 and "--cases only applies" in wrong.stderr
    main = _script_main()
    assert main(["--dataset", "kits", "--raw", str(tmp_path / "f"), "--cases", "5",
                 "--base-url", server.url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("download_datasets: error: kits:") and "HTTP 404" in err
    assert main(["--dataset", "kits", "--raw", str(tmp_path), "--cases", "400"]) == 2
    assert "no case number(s) [400]" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--dataset", "kits", "--cases", "3-1"])
    assert info.value.code == 2
