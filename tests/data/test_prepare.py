"""prepare_dataset / prepare_folder on tiny fixtures imitating each source's raw layout."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from data_fixtures import official_ids

from sam3d.data.layout import read_index
from sam3d.data.prepare import (
    PrepareError,
    PrepareWarning,
    pair_files,
    prepare_dataset,
    prepare_folder,
)

REPO = Path(__file__).resolve().parents[2]
AFFINE = np.array([[-0.8, 0, 0, 100], [0, -0.8, 0, 50], [0, 0, 2.5, -300], [0, 0, 0, 1]])
TARGET = {"kits": 2, "pancreas": 2, "lits": 2, "colon": 1}


def volumes(seed: int = 0, shape=(8, 7, 6), labels=(0, 1, 2)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    for value in labels[1:]:
        label[value: value + 3, 1:4, 2:5] = value
    return image, label


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def make_case(image_path: Path, label_path: Path, seed: int = 0, labels=(0, 1, 2)) -> None:
    image, label = volumes(seed, labels=labels)
    save(image_path, image)
    save(label_path, label)


def make_raw(name: str, raw: Path) -> list[str]:
    """Raw layout of ``name`` as download_dataset leaves it; returns the expected case ids."""
    if name == "kits":
        for i in (0, 13):
            make_case(raw / f"kits/case_{i:05d}/imaging.nii.gz",
                      raw / f"kits/case_{i:05d}/aggregated_MAJ_seg.nii.gz", seed=i,
                      labels=(0, 1, 2, 3))
        return ["case_00000", "case_00013"]
    task, prefix, numbers, ids = {
        "pancreas": ("Task07_Pancreas", "pancreas", [1, 299], ["pancreas_001", "pancreas_299"]),
        "colon": ("Task10_Colon", "colon", [8, 1], ["colon_001", "colon_008"]),
        "lits": ("Task03_Liver", "liver", [0, 97], ["volume-0", "volume-97"]),
    }[name]
    root = raw / name / task
    for n in numbers:
        fname = f"{prefix}_{n}.nii.gz" if name == "lits" else f"{prefix}_{n:03d}.nii.gz"
        make_case(root / "imagesTr" / fname, root / "labelsTr" / fname, seed=n,
                  labels=(0, 1) if name == "colon" else (0, 1, 2))
        for sub in ("imagesTr", "labelsTr"):  # macOS AppleDouble junk, as in the real tars
            (root / sub / f"._{fname}").write_bytes(b"\x00\x05\x16\x07Mac OS X junk")
    save(root / "imagesTs" / f"{prefix}_500.nii.gz", volumes()[0])
    (root / "dataset.json").write_text(json.dumps({"name": task}))
    return ids


@pytest.mark.parametrize("name", ["kits", "pancreas", "colon", "lits"])
def test_prepare_each_dataset(name, tmp_path):
    ids = make_raw(name, tmp_path / "raw")
    report = prepare_dataset(name, tmp_path / "raw", tmp_path / "out")
    index = read_index(tmp_path / "out")
    assert index.case_ids() == ids == sorted(report.written)
    assert set(ids) <= official_ids(name)
    assert index.name == name and index.target == TARGET[name]
    case = index.cases[ids[0]]
    assert case.shape == (8, 7, 6) and case.spacing == pytest.approx((0.8, 0.8, 2.5))
    label = np.asanyarray(nib.load(case.label).dataobj)
    assert case.target_voxels == int((label == TARGET[name]).sum()) > 0
    src = tmp_path / "raw" / name / {
        "kits": "case_00000/imaging.nii.gz",
        "pancreas": "Task07_Pancreas/imagesTr/pancreas_001.nii.gz",
        "colon": "Task10_Colon/imagesTr/colon_001.nii.gz",
        "lits": "Task03_Liver/imagesTr/liver_0.nii.gz"}[name]
    image = nib.load(case.image)
    assert image.get_data_dtype() == np.int16
    np.testing.assert_allclose(image.affine, AFFINE)
    assert case.image.read_bytes() == src.read_bytes()  # gzip NIfTI copied byte for byte
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_lits_original_release_at_any_depth_and_zipped(tmp_path):
    raw = tmp_path / "lits"
    for n, folder in ((0, raw / "Training Batch 1"), (97, raw / "x/y/Training Batch 2")):
        make_case(folder / f"volume-{n}.nii", folder / f"segmentation-{n}.nii", seed=n)
    inner = tmp_path / "zipped"
    make_case(inner / "volume-5.nii", inner / "segmentation-5.nii", seed=5)
    with zipfile.ZipFile(raw / "Training_Batch2.zip", "w") as zf:
        for f in inner.iterdir():
            zf.write(f, f"media/nas/LITS/Training Batch 2/{f.name}")
    report = prepare_dataset("lits", raw, tmp_path / "out")
    assert report.written == ["volume-0", "volume-5", "volume-97"]
    index = read_index(tmp_path / "out")
    original = (raw / "Training Batch 1/volume-0.nii").read_bytes()
    assert gzip.decompress(index.cases["volume-0"].image.read_bytes()) == original
    assert nib.load(index.cases["volume-5"].label).get_data_dtype() == np.uint8
    assert set(index.case_ids()) <= official_ids("lits")


def test_lits_both_forms_prefers_original(tmp_path):
    make_raw("lits", tmp_path / "raw")
    folder = tmp_path / "raw/lits/Training Batch 1"
    make_case(folder / "volume-0.nii", folder / "segmentation-0.nii", seed=3)
    with pytest.warns(PrepareWarning, match="original files are used"):
        prepare_dataset("lits", tmp_path / "raw", tmp_path / "out")
    index = json.loads((tmp_path / "out/dataset.json").read_text())
    assert index["cases"]["volume-0"]["note"] == "LiTS original release"
    assert index["cases"]["volume-97"]["note"] == "MSD Task03_Liver liver_97.nii.gz"


def test_idempotent_and_overwrite(tmp_path):
    make_raw("kits", tmp_path / "raw")
    out = tmp_path / "out"
    prepare_dataset("kits", tmp_path / "raw", out, cases=[0])
    first = (out / "case_00000/image.nii.gz").stat().st_mtime_ns
    report = prepare_dataset("kits", tmp_path / "raw", out, cases=[13])
    assert report.written == ["case_00013"]
    assert read_index(out).case_ids() == ["case_00000", "case_00013"]  # every prepared case
    report = prepare_dataset("kits", tmp_path / "raw", out)
    assert report.written == [] and report.kept == ["case_00000", "case_00013"]
    assert (out / "case_00000/image.nii.gz").stat().st_mtime_ns == first
    report = prepare_dataset("kits", tmp_path / "raw", out, cases=["case_00000"], overwrite=True)
    assert report.written == ["case_00000"]
    image, _ = volumes(seed=9, shape=(8, 7, 7))  # the source changes: the case is redone
    save(tmp_path / "raw/kits/case_00013/imaging.nii.gz", image)
    with pytest.raises(PrepareError, match="shape"):
        prepare_dataset("kits", tmp_path / "raw", out)
    assert read_index(out).cases["case_00013"].shape == (8, 7, 6)  # old good case kept


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(PrepareError, match="raw folder not found"):
        prepare_dataset("colon", tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="no pancreas cases found; expected Task07"):
        prepare_dataset("pancreas", tmp_path / "empty", tmp_path / "out")
    make_raw("pancreas", tmp_path / "raw")
    (tmp_path / "raw/pancreas/Task07_Pancreas/labelsTr/pancreas_299.nii.gz").unlink()
    (tmp_path / "raw/kits/case_00003").mkdir(parents=True)
    save(tmp_path / "raw/kits/case_00003/imaging.nii.gz", volumes()[0])
    with pytest.raises(PrepareError, match=r"labelsTr/pancreas_299.nii.gz: missing") as info:
        prepare_dataset("pancreas", tmp_path / "raw", tmp_path / "out", cases=[1, 2, 299])
    assert "case pancreas_002 not found" in str(info.value)
    assert read_index(tmp_path / "out").case_ids() == ["pancreas_001"]
    with pytest.raises(PrepareError, match="aggregated_MAJ_seg.nii.gz: missing"):
        prepare_dataset("kits", tmp_path / "raw", tmp_path / "kits")


def test_empty_target_is_a_warning(tmp_path):
    make_case(tmp_path / "img/a.nii.gz", tmp_path / "lab/a.nii.gz", labels=(0, 1))
    with pytest.warns(PrepareWarning, match="no voxel of target 2"):
        report = prepare_folder(tmp_path / "img", tmp_path / "lab", tmp_path / "out",
                                name="mine", target=2)
    assert read_index(tmp_path / "out").cases["a"].target_voxels == 0
    assert report.warnings and report.written == ["a"]


# --------------------------------------------------------------------------------------
# Bad inputs: each is a PrepareError naming the file; the good case is still written
# --------------------------------------------------------------------------------------

def _truncated(folder: Path) -> Path:
    image, _ = volumes(shape=(40, 40, 30))
    path = save(folder / "bad.nii.gz", image)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    return path


def _write(kind: str, img: Path, lab: Path) -> Path:
    """Write a bad case ``bad`` of ``kind``; returns the file the error must name."""
    image, label = volumes(seed=1)
    if kind == "truncated":
        save(lab / "bad.nii.gz", label)
        return _truncated(img)
    if kind == "garbage":
        (img / "bad.nii.gz").write_bytes(b"not a nifti file at all" * 10)
        save(lab / "bad.nii.gz", label)
        return img / "bad.nii.gz"
    bad_image, bad_label, affine = image, label, AFFINE
    if kind == "shape":
        bad_label = label[:, :, :5]
    elif kind == "affine":
        affine = AFFINE + np.diag([0, 0, 0.01, 0])
    elif kind == "2d":
        bad_image = image[:, :, 0]
    elif kind == "4d":
        bad_image = np.stack([image, image], axis=-1)
    elif kind == "nan":
        bad_image = image.astype(np.float32)
        bad_image[1, 2, 3] = np.nan
    elif kind == "non-integer":
        bad_label = label.astype(np.float32) * 0.5
    save(img / "bad.nii.gz", bad_image)
    save(lab / "bad.nii.gz", bad_label, affine)
    return (lab if kind in ("shape", "affine", "non-integer") else img) / "bad.nii.gz"


@pytest.mark.parametrize("kind, message", [
    ("truncated", "cannot read"), ("garbage", "cannot read"), ("shape", "label shape"),
    ("affine", "affine differs"), ("2d", "is 2D"), ("4d", "is 4D"), ("nan", "1 NaN"),
    ("non-integer", "not integer-valued")])
def test_bad_input(kind, message, tmp_path):
    img, lab = tmp_path / "img", tmp_path / "lab"
    make_case(img / "good.nii.gz", lab / "good.nii.gz")
    culprit = _write(kind, img, lab)
    with pytest.raises(PrepareError) as info:
        prepare_folder(img, lab, tmp_path / "out", name="mine", target=2)
    assert len(info.value.problems) == 1
    assert str(culprit) in str(info.value) and message in str(info.value)
    assert read_index(tmp_path / "out").case_ids() == ["good"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset.json", "good"]


def test_all_problems_reported_together(tmp_path):
    img, lab = tmp_path / "img", tmp_path / "lab"
    image, label = volumes()
    save(img / "z.nii.gz", image)
    save(lab / "z.nii.gz", label.astype(np.float32) + 0.5)
    _write("2d", img, lab)
    with pytest.raises(PrepareError) as info:
        prepare_folder(img, lab, tmp_path / "out", name="mine", target=2)
    assert len(info.value.problems) == 2
    assert str(lab / "z.nii.gz") in str(info.value) and str(img / "bad.nii.gz") in str(info.value)
    assert not (tmp_path / "out/dataset.json").exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_tolerated_inputs(tmp_path):
    """4D with a last axis of 1 is squeezed; affines within 1e-3 mm match; NRRD converted;
    an uncompressed file named .nii.gz is compressed as it is."""
    import SimpleITK as sitk

    img, lab = tmp_path / "img", tmp_path / "lab"
    image, label = volumes()
    save(img / "a.nii.gz", image[..., None])
    save(lab / "a.nii.gz", label, AFFINE + np.diag([0, 0, 1e-4, 0]))
    nrrd = sitk.GetImageFromArray(np.transpose(image, (2, 1, 0)))
    nrrd.SetSpacing((0.7, 0.9, 3.0))
    sitk.WriteImage(nrrd, str(img / "b.nrrd"))
    lab_nrrd = sitk.GetImageFromArray(np.transpose(label, (2, 1, 0)))
    lab_nrrd.SetSpacing((0.7, 0.9, 3.0))
    sitk.WriteImage(lab_nrrd, str(lab / "b.nrrd"))
    save(img / "c.nii", image).rename(img / "c.nii.gz")  # uncompressed, misnamed .nii.gz
    save(lab / "c.nii.gz", label)
    prepare_folder(img, lab, tmp_path / "out", name="mine", target=2,
                   labels={0: "background", 1: "organ", 2: "tumour"})
    assert gzip.decompress((tmp_path / "out/c/image.nii.gz").read_bytes()) == \
        (img / "c.nii.gz").read_bytes()
    index = read_index(tmp_path / "out")
    a = nib.load(index.cases["a"].image)
    assert a.shape == (8, 7, 6) and a.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), image)
    b = nib.load(index.cases["b"].image)
    assert b.get_data_dtype() == np.int16 and b.shape == (8, 7, 6)
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), image)
    assert index.cases["b"].spacing == pytest.approx((0.7, 0.9, 3.0))
    assert index.labels == {0: "background", 1: "organ", 2: "tumour"}


# --------------------------------------------------------------------------------------
# Pairing rules
# --------------------------------------------------------------------------------------

def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_pairing_rules(tmp_path):
    img, lab = tmp_path / "images", tmp_path / "labels"
    _touch(img, "same.nii.gz", "c1_0000.nii.gz", "c2_image.nii.gz", "volume-3.nii",
           "case4.nrrd", "lonely.nii.gz", "._same.nii.gz", "notes.txt")
    _touch(lab, "same.nii.gz", "c1.nii.gz", "c2_label.nii.gz", "segmentation-3.nii",
           "case4-seg.nrrd", "orphan_mask.nii.gz", "._c1.nii.gz")
    pairs, unmatched, problems = pair_files(img, lab)
    assert [(p.case_id, p.image.name, p.label.name) for p in pairs] == [
        ("3", "volume-3.nii", "segmentation-3.nii"), ("c1", "c1_0000.nii.gz", "c1.nii.gz"),
        ("c2", "c2_image.nii.gz", "c2_label.nii.gz"), ("case4", "case4.nrrd", "case4-seg.nrrd"),
        ("same", "same.nii.gz", "same.nii.gz")]
    assert sorted(p.name for p in unmatched) == ["lonely.nii.gz", "orphan_mask.nii.gz"]
    assert problems == []


def test_pairing_same_folder_and_ambiguity(tmp_path):
    _touch(tmp_path / "both", "k1_imaging.nii.gz", "k1_segmentation.nii.gz", "k2_ct.nii",
           "k2_gt.nii")
    pairs, unmatched, _ = pair_files(tmp_path / "both", tmp_path / "both")
    assert [(p.case_id, p.image.name) for p in pairs] == [("k1", "k1_imaging.nii.gz"),
                                                         ("k2", "k2_ct.nii")]
    assert unmatched == []
    _touch(tmp_path / "i", "a_image.nii.gz", "a_img.nii.gz")
    _touch(tmp_path / "l", "a_label.nii.gz")
    pairs, _, problems = pair_files(tmp_path / "i", tmp_path / "l")
    assert pairs == [] and "ambiguous pairing for case 'a'" in problems[0]


def test_prepare_folder_reports_unmatched(tmp_path):
    make_case(tmp_path / "i/p1_0000.nii.gz", tmp_path / "l/p1.nii.gz")
    save(tmp_path / "i/extra.nii.gz", volumes()[0])
    with pytest.warns(PrepareWarning, match="extra.nii.gz: no matching"):
        report = prepare_folder(tmp_path / "i", tmp_path / "l", tmp_path / "o", name="m",
                                target=1)
    assert report.written == ["p1"] and [p.name for p in report.unmatched] == ["extra.nii.gz"]
    with pytest.warns(PrepareWarning), pytest.raises(PrepareError, match="no image/label pairs"):
        prepare_folder(tmp_path / "l", tmp_path / "o", tmp_path / "o2", name="m", target=1)


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "data_scripts/prepare_dataset.py"), *args],
                          check=False, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def _script_main():
    """The CLI's ``main`` loaded in-process (cheap: this process has imported torch already)."""
    spec = importlib.util.spec_from_file_location(
        "prepare_dataset_cli", REPO / "data_scripts/prepare_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_exit_codes(tmp_path, capsys):
    make_raw("colon", tmp_path / "raw")
    ok = _cli("--dataset", "colon", "--raw", str(tmp_path / "raw"), "--out",
              str(tmp_path / "out"))  # one slow run: the script imports torch through sam3d
    assert ok.returncode == 0, ok.stderr
    assert "colon: 2 case(s) written" in ok.stdout
    assert read_index(tmp_path / "out").case_ids() == ["colon_001", "colon_008"]
    img, lab = tmp_path / "img", tmp_path / "lab"
    usage = _cli("--dataset", "kits", "--images", str(img))  # fails before importing sam3d
    assert usage.returncode == 2 and "either --dataset NAME or --images" in usage.stderr
    usage = _cli("--images", str(img), "--labels", str(lab))
    assert usage.returncode == 2 and "also give --name --target --out" in usage.stderr

    make_case(img / "good.nii.gz", lab / "good.nii.gz")
    _write("nan", img, lab)
    main = _script_main()
    assert main(["--images", str(img), "--labels", str(lab), "--name", "mine", "--target", "2",
                 "--out", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err
    # the message of sam3d.data.io.volume_problems, which load_volume raises too
    assert f"prepare_dataset: error: {img / 'bad.nii.gz'}: 1 voxel(s) are NaN or Inf (1 NaN" in err
    assert read_index(tmp_path / "mine").case_ids() == ["good"]
    assert main(["--dataset", "colon", "--raw", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "out"), "--cases", "1-x"]) == 2
    assert "bad case list" in capsys.readouterr().err
    assert main(["--dataset", "colon", "--raw", str(tmp_path / "raw"), "--out",
                 str(tmp_path / "out"), "--cases", "1,8"]) == 0
    assert "0 case(s) written, 2 already prepared" in capsys.readouterr().out


def test_tar_fixture_round_trip(tmp_path):
    """An MSD-style tar (junk files included) extracts and prepares like the real one."""
    from sam3d.data.download import safe_extract

    make_raw("pancreas", tmp_path / "build")
    tar = tmp_path / "Task07_Pancreas.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(tmp_path / "build/pancreas/Task07_Pancreas", "Task07_Pancreas")
    safe_extract(tar, tmp_path / "raw/pancreas")
    report = prepare_dataset("pancreas", tmp_path / "raw/pancreas", tmp_path / "out")
    assert report.written == ["pancreas_001", "pancreas_299"] and report.warnings == []
