"""The dataset sources: URLs, checksums, case ids matching the official split files, and
``--checksums`` (a mirror's SHA-256s) against the local HTTP server of test_download.py."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import test_download as td  # its local HTTP server fixture and raw-file makers
from data_fixtures import official_ids

from sam3d.data import sources
from sam3d.data.download import CHECKSUMS_FORMAT, DownloadError, load_checksums
from sam3d.data.sources import SOURCES, get_source, parse_cases

server = td.server  # the fixture, visible to the tests of this module


def test_registry():
    assert set(SOURCES) == {"kits", "pancreas", "lits", "colon"}
    for name, src in SOURCES.items():
        assert src.name == name and src.target in src.labels and src.labels[0] == "background"
        assert src.licence in ("CC BY-NC-SA 4.0", "CC BY-SA 4.0")
    assert {n: s.target for n, s in SOURCES.items()} == {"kits": 2, "pancreas": 2, "lits": 2,
                                                         "colon": 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        SOURCES["kits"].target = 1
    with pytest.raises(TypeError):
        SOURCES["x"] = SOURCES["kits"]
    with pytest.raises(ValueError, match="unknown dataset 'brats'; choose one of kits"):
        get_source("brats")


def test_urls_and_base_url_override():
    kits = SOURCES["kits"]
    assert [f.url(i=13) for f in kits.files] == [
        "https://kits19.sfo2.digitaloceanspaces.com/master_00013.nii.gz",
        ("https://raw.githubusercontent.com/neheller/kits21/master/kits21/data/case_00013/"
         "aggregated_MAJ_seg.nii.gz")]
    assert [f.dest.format(i=13) for f in kits.files] == [
        "case_00013/imaging.nii.gz", "case_00013/aggregated_MAJ_seg.nii.gz"]
    assert all(f.md5 is None and f.sha256 is None for f in kits.files)
    assert kits.files[0].url("http://127.0.0.1:8000/mirror/", i=7) == \
        "http://127.0.0.1:8000/mirror/master_00007.nii.gz"
    for name, task in (("pancreas", "Task07_Pancreas"), ("colon", "Task10_Colon"),
                       ("lits", "Task03_Liver")):
        (remote,) = SOURCES[name].files
        assert remote.url() == f"https://msd-for-monai.s3-us-west-2.amazonaws.com/{task}.tar"
        assert remote.extract and remote.url("http://h") == f"http://h/{task}.tar"


def test_md5_and_urls_match_monai():
    """The MSD entries agree with MONAI's DecathlonDataset (read from its source: no import)."""
    spec = importlib.util.find_spec("monai")
    text = (Path(spec.origin).parent / "apps/datasets.py").read_text()
    for name, task in (("pancreas", "Task07_Pancreas"), ("colon", "Task10_Colon"),
                       ("lits", "Task03_Liver")):
        (remote,) = SOURCES[name].files
        assert f'"{task}": "{remote.md5}"' in text
        assert f'"{task}": "{remote.url()}"' in text


@pytest.mark.parametrize("name, number, case_id", [
    ("kits", 13, "case_00013"), ("lits", 97, "volume-97"), ("pancreas", 299, "pancreas_299"),
    ("colon", 8, "colon_008")])
def test_case_ids_match_official_splits(name, number, case_id):
    src = SOURCES[name]
    assert src.case_id(number) == case_id
    ids = official_ids(name)
    assert case_id in ids and all(src.is_case_id(c) for c in ids)
    if name == "kits":
        assert {src.case_id(i) for i in src.case_numbers} == ids


def test_parse_cases():
    assert parse_cases("0-3,7, 5-5") == [0, 1, 2, 3, 5, 7]
    for bad in ("", "a", "3-1", "1-", "-2"):
        with pytest.raises(ValueError, match="bad case list"):
            parse_cases(bad)


# --------------------------------------------------------------------------------------
# --checksums: a mirror's own SHA-256s instead of the published hashes
# --------------------------------------------------------------------------------------

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_checksums(path: Path, table: dict) -> Path:
    path.write_text(json.dumps({"format": CHECKSUMS_FORMAT, "sha256": table}), encoding="utf-8")
    return path


def test_checksums_replace_the_published_md5(server, tmp_path):
    """A re-packed tar fails the published md5 but passes the mirror's SHA-256."""
    tar = td.msd_tar("Task07_Pancreas", "pancreas", [1, 4])
    server.files["/Task07_Pancreas.tar"] = tar
    with pytest.raises(DownloadError, match="md5 mismatch"):
        sources.download_dataset("pancreas", tmp_path / "a", base_url=server.url, progress=False)
    table = load_checksums(write_checksums(tmp_path / "c.json",
                                           {"/Task07_Pancreas.tar": sha(tar).upper()}))
    assert table == {"Task07_Pancreas.tar": sha(tar)}
    where = sources.download_dataset("pancreas", tmp_path / "b", base_url=server.url,
                                     progress=False, checksums=table)
    assert (where / "Task07_Pancreas.tar").read_bytes() == tar
    assert (where / "Task07_Pancreas/labelsTr/pancreas_004.nii.gz").is_file()


def test_wrong_checksum_refused_and_deleted(server, tmp_path):
    td.serve_kits(server, [3])
    image = server.files["/master_00003.nii.gz"]
    label_path = "neheller/kits21/master/kits21/data/case_00003/aggregated_MAJ_seg.nii.gz"
    table = {"master_00003.nii.gz": sha(image), label_path: "0" * 64}
    with pytest.raises(DownloadError, match="aggregated_MAJ_seg.nii.gz: sha256 mismatch"):
        sources.download_dataset("kits", tmp_path, cases=[3], base_url=server.url,
                                 progress=False, checksums=table)
    case = tmp_path / "kits/case_00003"
    assert sorted(p.name for p in case.iterdir()) == ["imaging.nii.gz"]  # bad file deleted
    assert (case / "imaging.nii.gz").read_bytes() == image


def test_missing_entry_refused_before_any_download(server, tmp_path):
    td.serve_kits(server, [3, 4])
    table = {f"master_{i:05d}.nii.gz": sha(server.files[f"/master_{i:05d}.nii.gz"])
             for i in (3, 4)}
    with pytest.raises(DownloadError, match=r"no entry in the checksums file for "
                                            r"neheller/kits21/.*case_00003/aggregated_MAJ"):
        sources.download_dataset("kits", tmp_path, cases=[3, 4], base_url=server.url,
                                 progress=False, checksums=table)
    assert server.log == [] and not (tmp_path / "kits").exists()


def test_cli_checksums(server, tmp_path, capsys):
    main = td._script_main()
    td.serve_kits(server, [7])
    table = {path.lstrip("/"): sha(data) for path, data in server.files.items()}
    good = write_checksums(tmp_path / "good.json", table)
    assert main(["--dataset", "kits", "--raw", str(tmp_path / "raw"), "--cases", "7",
                 "--base-url", server.url, "--checksums", str(good), "--quiet"]) == 0
    assert (tmp_path / "raw/kits/case_00007/aggregated_MAJ_seg.nii.gz").is_file()
    capsys.readouterr()
    bad = {"notjson.json": "{", "format.json": json.dumps({"format": "x", "sha256": table}),
           "hex.json": json.dumps({"format": CHECKSUMS_FORMAT, "sha256": {"a": "zz"}}),
           "empty.json": json.dumps({"format": CHECKSUMS_FORMAT, "sha256": {}})}
    for name, text in [*bad.items(), ("absent.json", None)]:
        path = tmp_path / name
        if text is not None:
            path.write_text(text, encoding="utf-8")
        server.log.clear()
        assert main(["--dataset", "kits", "--raw", str(tmp_path / "r2"), "--cases", "7",
                     "--base-url", server.url, "--checksums", str(path), "--quiet"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith(f"download_datasets: error: --checksums: {path}") and \
            err.count("\n") == 1, (name, err)
        assert server.log == [] and not (tmp_path / "r2").exists()
    missing = write_checksums(tmp_path / "partial.json", {"master_00007.nii.gz": "a" * 64})
    assert main(["--dataset", "kits", "--raw", str(tmp_path / "r3"), "--cases", "7",
                 "--base-url", server.url, "--checksums", str(missing), "--quiet"]) == 1
    assert "no entry in the checksums file for neheller" in capsys.readouterr().err
