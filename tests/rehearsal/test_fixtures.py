"""The rehearsal's raw fixtures: the sources' own paths and layouts, real axis conventions,
official case ids, matching checksums; and the local HTTP server that serves them."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
import urllib.error
import urllib.request

import nibabel as nib
import numpy as np
import pytest

from sam3d.data.download import load_checksums, safe_extract
from sam3d.data.sources import SOURCES, find_raw_cases
from sam3d.data.splits import official_split
from sam3d.rehearsal.fixtures import (
    FIXTURE_CASES,
    SPACING,
    case_number,
    fixture_volume,
    msd_file_name,
    write_raw_fixture,
)
from sam3d.rehearsal.server import serve

MSD = ("lits", "pancreas", "colon")


def files_under(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def canonical(path) -> tuple[np.ndarray, np.ndarray]:
    """Array and affine of a NIfTI file brought to RAS voxel order."""
    img = nib.as_closest_canonical(nib.load(path))
    return np.asanyarray(img.dataobj), img.affine


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_cases_come_from_the_official_fold_0(name):
    split = official_split(name, 0)
    cases = FIXTURE_CASES[name]
    assert len(set(cases)) == 5 and all(SOURCES[name].is_case_id(c) for c in cases)
    first = {p: sorted(split[p], key=case_number) for p in split}
    assert cases == (*first["train"][:2], first["val"][0], *first["test"][:2])
    if name == "lits":  # LiTS volume-N is MSD Task03_Liver liver_N, N in 0..130
        assert all(0 <= case_number(c) <= 130 for c in cases)
        assert msd_file_name("lits", "volume-3") == "liver_3.nii.gz"


def test_kits_files_where_the_sources_say(tmp_path):
    mirror = tmp_path / "mirror" / "kits"
    fixture = write_raw_fixture("kits", mirror)
    numbers = [0, 1, 20, 2, 5]
    assert fixture["cases"] == list(FIXTURE_CASES["kits"]) and fixture["case_numbers"] == numbers
    expected = {f.path.format(i=i) for i in numbers for f in SOURCES["kits"].files}
    assert files_under(mirror) == expected == set(fixture["files"])
    for i, case_id in zip(numbers, fixture["cases"], strict=True):
        image = nib.load(mirror / f"master_{i:05d}.nii.gz")
        label = nib.load(mirror / f"neheller/kits21/master/kits21/data/case_{i:05d}/"
                         "aggregated_MAJ_seg.nii.gz")
        # KiTS21 storage: slices first, slice spacing first, axes (I, P, L)
        assert image.shape == label.shape == (24, 48, 48)
        assert image.header.get_zooms() == (3.0, 1.5, 1.5)
        assert nib.aff2axcodes(image.affine) == ("I", "P", "L")
        assert np.allclose(image.affine, label.affine)
        assert image.get_data_dtype() == np.int16
        values = set(np.unique(np.asanyarray(label.dataobj)).tolist())
        assert values == {0, 1, 2, 3}  # kidney, tumour, cyst
        ras_image, ras_label = fixture_volume("kits", case_id)
        got_image, affine = canonical(image.get_filename())
        assert np.array_equal(got_image, ras_image)  # same anatomy once reoriented to RAS
        assert np.array_equal(canonical(label.get_filename())[0], ras_label)
        assert np.allclose(np.diag(affine)[:3], SPACING)


@pytest.mark.parametrize("name", MSD)
def test_msd_tar_like_the_real_archive(tmp_path, name):
    source = SOURCES[name]
    task, target = source.msd_task, source.target
    mirror = tmp_path / "mirror" / name
    fixture = write_raw_fixture(name, mirror)
    assert files_under(mirror) == {f"{task}.tar"} == {source.files[0].path}
    assert fixture["case_numbers"] == []
    names = [msd_file_name(name, c) for c in FIXTURE_CASES[name]]
    with tarfile.open(mirror / f"{task}.tar") as tf:
        members = {m.name for m in tf.getmembers() if m.isfile()}
        doc = json.load(tf.extractfile(f"{task}/dataset.json"))
    assert members == ({f"{task}/dataset.json", f"{task}/imagesTr/._{names[0]}"}
                       | {f"{task}/{sub}/{n}" for sub in ("imagesTr", "labelsTr") for n in names})
    assert doc["numTraining"] == 5 and doc["modality"] == {"0": "CT"}
    assert [e["image"] for e in doc["training"]] == [f"./imagesTr/{n}" for n in names]
    raw = safe_extract(mirror / f"{task}.tar", tmp_path / "raw")
    scan = find_raw_cases(name, raw)  # the finder skips the ._ junk file
    assert sorted(c.case_id for c in scan.cases) == sorted(FIXTURE_CASES[name])
    assert not scan.problems and not scan.warnings
    for case in scan.cases:
        image, label = nib.load(case.image), nib.load(case.label)
        assert image.shape == label.shape == (48, 48, 24)  # MSD storage: (x, y, z)
        assert image.header.get_zooms() == (1.5, 1.5, 3.0)
        assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
        lab = np.asanyarray(label.dataobj)
        assert set(np.unique(lab).tolist()) == ({0, 1} if name == "colon" else {0, 1, 2})
        assert np.count_nonzero(lab == target) > 30
        ras_image, ras_label = fixture_volume(name, case.case_id)
        assert np.array_equal(canonical(case.image)[0], ras_image)
        assert np.array_equal(canonical(case.label)[0], ras_label)


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_volumes_are_ct_like(name):
    image, label = fixture_volume(name, FIXTURE_CASES[name][0])
    target = SOURCES[name].target
    assert image.dtype == np.int16 and label.dtype == np.uint8
    assert image.min() <= -1000 and np.count_nonzero(image <= -990) > 0.1 * image.size  # air
    body = image[(image > -200) & (label == 0)]
    assert -100 < np.median(body) < 100 and body.std() > 5  # soft tissue with noise
    lesion = image[label == target]
    assert lesion.size > 30 and -50 < np.median(lesion) < 100
    if target == 2:  # a hypodense tumour in its organ (colon labels the cancer only)
        assert np.median(lesion) < np.median(image[label == 1]) - 10
    # ≥ 64 voxels at 1 mm
    assert min(n * s for n, s in zip(image.shape, SPACING, strict=True)) >= 72


def test_checksums_outside_the_mirror_and_right(tmp_path):
    mirror = tmp_path / "mirror" / "kits"
    fixture = write_raw_fixture("kits", mirror)
    path = fixture["checksums"]
    assert path == tmp_path / "mirror" / "kits-checksums.json"
    assert not path.is_relative_to(mirror)
    table = load_checksums(path)
    assert set(table) == set(fixture["files"])
    for remote, digest in table.items():
        assert hashlib.sha256((mirror / remote).read_bytes()).hexdigest() == digest


def test_deterministic_from_seed_and_case(tmp_path):
    a = write_raw_fixture("pancreas", tmp_path / "a" / "pancreas")
    b = write_raw_fixture("pancreas", tmp_path / "b" / "pancreas")
    c = write_raw_fixture("pancreas", tmp_path / "c" / "pancreas", seed=1)
    tar = "Task07_Pancreas.tar"
    assert (tmp_path / "a/pancreas" / tar).read_bytes() == (tmp_path / "b/pancreas" / tar
                                                             ).read_bytes()
    assert load_checksums(a["checksums"]) == load_checksums(b["checksums"])
    assert load_checksums(a["checksums"]) != load_checksums(c["checksums"])
    first, second = (fixture_volume("pancreas", i)[0] for i in FIXTURE_CASES["pancreas"][:2])
    assert not np.array_equal(first, second)


def test_all_fixtures_are_quick(tmp_path):
    start = time.perf_counter()
    for name in FIXTURE_CASES:
        write_raw_fixture(name, tmp_path / name)
    seconds = time.perf_counter() - start
    print(f"four fixtures written in {seconds:.2f} s")
    assert seconds < 20


def test_unknown_dataset(tmp_path):
    with pytest.raises(ValueError, match="no rehearsal fixture for 'brats'"):
        write_raw_fixture("brats", tmp_path)


def test_serve_a_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/a.bin").write_bytes(b"payload" * 1000)
    with serve(tmp_path) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith("/")
        with urllib.request.urlopen(f"{url}/sub/a.bin", timeout=10) as response:
            assert response.read() == b"payload" * 1000
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/missing.bin", timeout=10)
        assert info.value.code == 404
        info.value.close()
    with pytest.raises(urllib.error.URLError):  # shut down and closed on exit
        urllib.request.urlopen(f"{url}/sub/a.bin", timeout=2)
    with pytest.raises(FileNotFoundError, match="no such folder"), serve(tmp_path / "nope"):
        pass
