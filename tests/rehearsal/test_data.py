"""prepare_rehearsal_dataset end to end: fixtures served on 127.0.0.1, fetched by the real
download script (with --checksums), prepared by the real prepare script, then read by the
layout, split and pipeline code like any prepared dataset."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import numpy as np
import pytest

from sam3d.data.layout import read_index
from sam3d.data.pipeline import build_dataset
from sam3d.data.splits import resolve_split
from sam3d.rehearsal import data as rdata
from sam3d.rehearsal.fixtures import FIXTURE_CASES, write_raw_fixture

NAMES = ("kits", "lits", "pancreas", "colon")


@pytest.fixture(scope="module")
def rehearsal_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("rehearsal")
    start = time.perf_counter()
    prepared = rdata.prepare_rehearsal_datasets(NAMES, data_dir)
    seconds = time.perf_counter() - start
    print(f"\nfour rehearsal datasets fetched and prepared in {seconds:.1f} s")
    assert prepared == {n: data_dir / "prepared" / n for n in NAMES}
    return data_dir


def counting_runs(monkeypatch) -> list:
    """Record every subprocess.run of sam3d.rehearsal.data (and still run it)."""
    calls, real = [], subprocess.run

    def run(cmd, *args, **kw):
        calls.append(cmd)
        return real(cmd, *args, **kw)

    monkeypatch.setattr(rdata.subprocess, "run", run)
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_prepared_by_the_real_scripts(rehearsal_dir, name):
    prepared = rehearsal_dir / "prepared" / name
    index = read_index(prepared)
    assert index.name == name and index.case_ids() == sorted(FIXTURE_CASES[name])
    assert all(index.cases[c].target_voxels > 0 for c in index.case_ids())
    assert rdata.is_current(prepared, name)
    marker = json.loads((prepared / rdata.MARKER).read_text())
    assert marker["state"] == "complete" and marker["cases"] == list(FIXTURE_CASES[name])
    raw = rehearsal_dir / "raw" / name
    if name == "kits":  # fetched file by file, byte for byte
        mirror = rehearsal_dir / "mirror" / "kits"
        assert ((raw / "case_00020/imaging.nii.gz").read_bytes()
                == (mirror / "master_00020.nii.gz").read_bytes())
        assert sorted(p.name for p in raw.iterdir() if not p.name.startswith(".")) == \
            sorted(FIXTURE_CASES["kits"])
    else:  # the tar was downloaded and unpacked
        assert len(list(raw.glob(".extracted-Task*.tar"))) == 1
        assert len(list(raw.glob("Task*/imagesTr/*.nii.gz"))) == 6  # 5 cases + the ._ junk


@pytest.mark.parametrize("name", NAMES)
def test_official_split_has_every_part(rehearsal_dir, name):
    index = read_index(rehearsal_dir / "prepared" / name)
    with pytest.warns(UserWarning, match="cases of the official split are not prepared"):
        split = resolve_split(name, index.case_ids(), fold=0)
    cases = FIXTURE_CASES[name]
    assert split == {"train": sorted(cases[:2]), "val": [cases[2]], "test": sorted(cases[3:])}


@pytest.mark.parametrize("name", NAMES)
def test_pipeline_yields_model_ready_crops(rehearsal_dir, name):
    prepared = rehearsal_dir / "prepared" / name
    with pytest.warns(UserWarning, match="not prepared"):
        train = build_dataset(prepared, name, "train", crop=64, seed=0)
        val = build_dataset(prepared, name, "val", crop=64, seed=0)
        test = build_dataset(prepared, name, "test", crop=64, seed=0)
    assert (len(train), len(val), len(test)) == (2, 1, 2)
    item = train[0][0]
    assert tuple(item["image"].shape) == (3, 64, 64, 64)
    assert tuple(item["label"].shape) == (1, 64, 64, 64)
    assert np.isfinite(item["image"].numpy()).all()
    crop = val[0][0]  # lesion-centred: the lesion survived resampling to 1 mm
    assert float(crop["label"].sum()) > 100
    whole = test[0]
    assert min(whole["image"].shape[1:]) >= 64 and float(whole["label"].sum()) > 100


def test_second_call_is_a_no_op(rehearsal_dir, monkeypatch):
    prepared = rehearsal_dir / "prepared" / "kits"
    stamps = {p: p.stat().st_mtime_ns for p in (prepared / rdata.MARKER,
                                                 prepared / "dataset.json")}
    calls = counting_runs(monkeypatch)
    monkeypatch.setattr(rdata, "write_raw_fixture", lambda *a, **k: pytest.fail("rewritten"))
    assert rdata.prepare_rehearsal_dataset("kits", rehearsal_dir) == prepared
    assert rdata.prepare_rehearsal_datasets(["kits", "kits"], rehearsal_dir) == {"kits": prepared}
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_new_fixture_version_or_damage_rebuilds(tmp_path, monkeypatch):
    first = rdata.prepare_rehearsal_dataset("colon", tmp_path)
    stale = tmp_path / "raw/colon/stale.txt"
    stale.write_text("from an older fixture")
    monkeypatch.setattr(rdata, "FIXTURE_VERSION", 999)
    assert not rdata.is_current(first, "colon")
    calls = counting_runs(monkeypatch)
    assert rdata.prepare_rehearsal_dataset("colon", tmp_path) == first
    assert [c[1].rsplit("/", 1)[-1] for c in calls] == ["download_datasets.py",
                                                         "prepare_dataset.py"]
    assert "--checksums" in calls[0] and "--base-url" in calls[0]
    assert json.loads((first / rdata.MARKER).read_text())["fixture_version"] == 999
    assert not stale.exists() and len(read_index(first).cases) == 5
    (first / "colon_001/image.nii.gz").unlink()  # a damaged preparation is rebuilt too
    assert not rdata.is_current(first, "colon")
    rdata.prepare_rehearsal_dataset("colon", tmp_path)
    assert (first / "colon_001/image.nii.gz").is_file() and len(calls) == 4


def test_two_callers_prepare_once(tmp_path, monkeypatch):
    calls = counting_runs(monkeypatch)
    results, errors = [], []

    def worker():
        try:
            results.append(rdata.prepare_rehearsal_dataset("pancreas", tmp_path))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and results == [tmp_path / "prepared/pancreas"] * 2
    assert len(calls) == 2  # one download and one prepare: the second caller waited


def test_failing_download_reports_its_stderr(tmp_path, monkeypatch):
    def corrupted(dataset, mirror_root, seed=0):
        fixture = write_raw_fixture(dataset, mirror_root, seed)
        doc = json.loads(fixture["checksums"].read_text())
        doc["sha256"] = {k: "0" * 64 for k in doc["sha256"]}
        fixture["checksums"].write_text(json.dumps(doc))
        return fixture

    monkeypatch.setattr(rdata, "write_raw_fixture", corrupted)
    with pytest.raises(RuntimeError, match=r"download_datasets\.py .*failed with exit status 1"
                                           r":\n.*sha256 mismatch"):
        rdata.prepare_rehearsal_dataset("lits", tmp_path)
    prepared = tmp_path / "prepared/lits"
    assert not rdata.is_current(prepared, "lits") and not (prepared / "dataset.json").exists()
    monkeypatch.undo()  # the next call, with good checksums, replaces the broken attempt
    assert read_index(rdata.prepare_rehearsal_dataset("lits", tmp_path)).case_ids() == \
        sorted(FIXTURE_CASES["lits"])


def test_refuses_folders_it_did_not_write(tmp_path, monkeypatch):
    real = tmp_path / "raw/kits/case_00000/imaging.nii.gz"  # e.g. a real download
    real.parent.mkdir(parents=True)
    real.write_bytes(b"26 GB of KiTS")
    calls = counting_runs(monkeypatch)
    with pytest.raises(RuntimeError, match="not written by the rehearsal"):
        rdata.prepare_rehearsal_dataset("kits", tmp_path)
    assert real.read_bytes() == b"26 GB of KiTS" and calls == []
    with pytest.raises(ValueError, match="no rehearsal fixture for 'brats'"):
        rdata.prepare_rehearsal_dataset("brats", tmp_path)
