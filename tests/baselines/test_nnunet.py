"""nnU-Net v2 export of the real sample CTs, checked by nnU-Net's own integrity check.

The samples come from ``data/samples``, fetched on first use (idempotent, as
``python data_scripts/fetch_samples.py --out data/samples``). Only the three cases with a lesion are
used, with a hand-made 1/1/1 split (nnU-Net's fold 0 needs a validation case).
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import nibabel as nib
import nnunetv2  # noqa: F401  (extra 'baselines', installed by make test)
import numpy as np
import pytest

from sam3d.baselines import nnunet
from sam3d.baselines.nnunet import NnUNetError, export_nnunet, verify

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data/samples"
SPLIT = {"train": ["lits117"], "val": ["lung1"], "test": ["lung2"]}
DATASET_ID, NAME = 501, "Samples"
FOLDER = f"Dataset{DATASET_ID:03d}_{NAME}"


@pytest.fixture(scope="module")
def samples() -> Path:
    from sam3d.data.samples import fetch_samples

    fetch_samples(SAMPLES)  # idempotent: downloads only on a fresh checkout
    return SAMPLES


@pytest.fixture(scope="module")
def exported(samples, tmp_path_factory) -> Path:
    return export_nnunet(samples, tmp_path_factory.mktemp("raw"), DATASET_ID, NAME, split=SPLIT)


def _targets(samples: Path) -> dict[str, int]:
    cases = json.loads((samples / "dataset.json").read_text())["cases"]
    return {c: int(rec["target"]) for c, rec in cases.items()}


def test_file_names_and_dataset_json(exported, samples) -> None:
    assert exported.name == FOLDER
    names = {sub: sorted(p.name for p in (exported / sub).iterdir())
             for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    assert names == {"imagesTr": ["lits117_0000.nii.gz", "lung1_0000.nii.gz"],
                     "labelsTr": ["lits117.nii.gz", "lung1.nii.gz"],
                     "imagesTs": ["lung2_0000.nii.gz"], "labelsTs": ["lung2.nii.gz"]}
    doc = json.loads((exported / "dataset.json").read_text())
    assert doc["channel_names"] == {"0": "CT"}
    assert doc["labels"] == {"background": 0, "lesion": 1}
    assert doc["numTraining"] == 2 and doc["file_ending"] == ".nii.gz"
    assert doc["sam3d"]["target"] == {"lits117": 2, "lung1": 1, "lung2": 1}
    assert json.loads((exported / "splits_final.json").read_text()) == [
        {"train": ["lits117"], "val": ["lung1"]}]
    # images are copied byte for byte (HU kept; nnU-Net normalises CT itself)
    for case, sub in (("lits117", "imagesTr"), ("lung2", "imagesTs")):
        assert ((exported / sub / f"{case}_0000.nii.gz").read_bytes()
                == (samples / case / "image.nii.gz").read_bytes())
    assert not list(exported.parent.glob(".*")), "temporary folders left behind"


def test_labels_are_binary_lesion_masks(exported, samples) -> None:
    targets = _targets(samples)
    for case, sub in (("lits117", "labelsTr"), ("lung1", "labelsTr"), ("lung2", "labelsTs")):
        out = nib.load(exported / sub / f"{case}.nii.gz")
        src = nib.load(samples / case / "label.nii.gz")
        data = np.asanyarray(out.dataobj)
        assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}
        assert out.shape == src.shape and np.allclose(out.affine, src.affine)
        expected = np.asanyarray(src.dataobj) == targets[case]
        assert np.array_equal(data.astype(bool), expected) and expected.any()


@pytest.mark.slow  # nnU-Net's check in a child process: ~15 s
def test_nnunet_integrity_check_passes(exported) -> None:
    out = verify(exported)
    assert "verify_dataset_integrity Done" in out
    assert "Error" not in out


def _broken_copy(exported: Path, tmp_path: Path) -> Path:
    broken = tmp_path / FOLDER
    shutil.copytree(exported, broken)
    return broken


@pytest.mark.slow  # nnU-Net's check in a child process: ~15 s
def test_verify_rejects_a_label_of_another_shape(exported, tmp_path) -> None:
    broken = _broken_copy(exported, tmp_path)
    label = broken / "labelsTr/lits117.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 128, 128), np.uint8), nib.load(label).affine), label)
    with pytest.raises(NnUNetError, match=r"(?s)verify_dataset_integrity.*Shape mismatch"):
        verify(broken)


@pytest.mark.slow  # nnU-Net's check in a child process: ~15 s
def test_verify_rejects_an_unexpected_label_value(exported, tmp_path) -> None:
    broken = _broken_copy(exported, tmp_path)
    label = broken / "labelsTr/lung1.nii.gz"
    img = nib.load(label)
    data = np.asanyarray(img.dataobj).copy()
    data[0, 0, 0] = 2  # not binary
    nib.save(nib.Nifti1Image(data, img.affine, img.header), label)
    with pytest.raises(NnUNetError, match=r"(?s)unexpected labels.*Unexpected labels found"):
        verify(broken)


def test_verify_names_a_missing_channel_file(exported, tmp_path) -> None:
    broken = _broken_copy(exported, tmp_path)
    (broken / "imagesTr/lung1_0000.nii.gz").rename(broken / "imagesTr/lung1.nii.gz")
    with pytest.raises(NnUNetError, match=r"lung1\.nii\.gz: not named <case>_XXXX"):
        verify(broken)


@pytest.mark.slow  # nnU-Net's check in a child process: ~15 s each
def test_nnunet_itself_rejects_a_missing_channel_file(exported, tmp_path, monkeypatch) -> None:
    broken = _broken_copy(exported, tmp_path)
    (broken / "imagesTr/lung1_0000.nii.gz").rename(broken / "imagesTr/lung1.nii.gz")
    monkeypatch.setattr(nnunet, "check_names", lambda folder: None)
    # nnU-Net sees a case without label file (less direct than check_names)
    with pytest.raises(NnUNetError, match="verify_dataset_integrity.*label file"):
        verify(broken)
    (broken / "imagesTr/lung1.nii.gz").unlink()
    (broken / "labelsTr/lung1.nii.gz").unlink()
    with pytest.raises(NnUNetError, match="expected number of training cases"):
        verify(broken)  # numTraining says 2


def test_refuses_to_overwrite_unless_asked(exported, samples) -> None:
    before = (exported / "dataset.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_nnunet(samples, exported.parent, DATASET_ID, NAME, split=SPLIT)
    assert (exported / "dataset.json").stat().st_mtime_ns == before
    split = {"train": ["lung1"], "val": ["lits117"], "test": ["lung2"]}
    again = export_nnunet(samples, exported.parent, DATASET_ID, NAME, split=split,
                          overwrite=True)
    assert json.loads((again / "splits_final.json").read_text())[0]["train"] == ["lung1"]
    assert not list(exported.parent.glob(".*"))
    export_nnunet(samples, exported.parent, DATASET_ID, NAME, split=SPLIT, overwrite=True)


def test_refuses_a_second_name_for_the_same_id(exported, samples) -> None:
    with pytest.raises(NnUNetError, match="nnU-Net finds datasets by id"):
        export_nnunet(samples, exported.parent, DATASET_ID, "Other", split=SPLIT)


@pytest.mark.parametrize("split, error, match", [
    ({"train": ["lits117", "lung1"], "val": [], "test": ["lung2"]}, NnUNetError, "no val case"),
    ({"train": ["lits117"], "val": ["nope"], "test": []}, NnUNetError, "not in"),
    ({"train": ["lits117"], "val": ["lits117"], "test": []}, ValueError, "both"),
])
def test_bad_splits_are_refused(samples, tmp_path, split, error, match) -> None:
    with pytest.raises(error, match=match):
        export_nnunet(samples, tmp_path, DATASET_ID, NAME, split=split)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("dataset_id, name", [(0, "A"), (1000, "A"), (5, "a b"), (5, "_x"),
                                              (True, "A")])
def test_bad_ids_and_names(dataset_id, name) -> None:
    with pytest.raises(ValueError):
        nnunet.dataset_folder_name(dataset_id, name)


def test_binary_label_of_a_case_without_lesion(tmp_path) -> None:
    src, dst = tmp_path / "l.nii.gz", tmp_path / "o.nii.gz"
    lab = np.zeros((4, 5, 6), np.int16)
    lab[1, 2, 3], lab[0, 0, 0] = 2, 1
    nib.save(nib.Nifti1Image(lab, np.diag([2.0, 2.0, 3.0, 1.0])), src)
    assert nnunet._write_binary_label(src, dst, 2) == 1
    assert np.asanyarray(nib.load(dst).dataobj)[1, 2, 3] == 1
    assert nnunet._write_binary_label(src, dst, 0) == 0  # target 0: no lesion, empty label
    assert not np.asanyarray(nib.load(dst).dataobj).any()


def test_commands_are_nnunet_v2_entry_points(tmp_path) -> None:
    cmds = nnunet.commands(DATASET_ID, NAME, raw=tmp_path / "raw", preprocessed=tmp_path / "pp",
                           results=tmp_path / "res")
    assert cmds[0].startswith("export nnUNet_raw=")
    assert "nnUNet_preprocessed=" in cmds[0] and "nnUNet_results=" in cmds[0]
    assert cmds[1] == (f"nnUNetv2_plan_and_preprocess -d {DATASET_ID} -c 3d_fullres "
                       "--verify_dataset_integrity")
    assert cmds[2].startswith(f"nnUNetv2_train {DATASET_ID} 3d_fullres 0 ")
    assert cmds[3].startswith(f"nnUNetv2_predict -i {tmp_path / 'raw' / FOLDER / 'imagesTs'} ")
    assert " -f 0 " in cmds[3] and " -c 3d_fullres " in cmds[3]
    scripts = {e.name for e in entry_points(group="console_scripts")}
    steps = nnunet.steps(DATASET_ID, NAME, raw=tmp_path, results=tmp_path)
    assert [s[0] for s in steps if s[0] not in scripts] == []
    with pytest.raises(ValueError, match="configuration"):
        nnunet.steps(DATASET_ID, NAME, raw=tmp_path, results=tmp_path, configuration="3d")


def test_install_split(exported, tmp_path) -> None:
    dst = nnunet.install_split(exported, tmp_path / "pp")
    assert dst == tmp_path / "pp" / FOLDER / "splits_final.json"
    assert dst.read_text() == (exported / "splits_final.json").read_text()
