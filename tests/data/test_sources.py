"""The dataset sources: URLs, checksums, case ids matching the official split files."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from data_fixtures import official_ids

from sam3d.data.sources import SOURCES, get_source, parse_cases


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
