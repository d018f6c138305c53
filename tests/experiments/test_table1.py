"""Table 1 rows: the paper's long table, our model with k clicks, a prompt-free baseline, masks
from another program, the SAM 2D rows (their aggregation; the cache has its own tests) and the
joined table."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from sam3d.checkpoint import read_checkpoint_file, split_reference
from sam3d.data.layout import read_index
from sam3d.data.splits import SplitRef
from sam3d.engine.config import TrainConfig
from sam3d.engine.loop import Trainer
from sam3d.evaluation.metrics import nsd
from sam3d.experiments.table1 import (
    automatic_rows,
    check_ks,
    dice_curves,
    held_out_lesion_cases,
    paper_table1,
    prompt_k,
    prompt_label,
    promptable_rows,
    sam2d_rows,
    score_folder,
    smoke_baseline_checkpoint,
    table1,
)
from sam3d.reference import paper_rows


def test_ks_and_prompt_labels() -> None:
    assert check_ks([1, 3, 10]) == (1, 3, 10)
    for bad in ([], [0], [1, 1], [True], 3, [2.0]):
        with pytest.raises(ValueError, match="ks"):
            check_ks(bad)
    assert prompt_label(1, "slice") == "1 pt/slice"
    assert prompt_label(10, "volume") == "10 pts/volume"
    with pytest.raises(ValueError, match="per"):
        prompt_label(1, "case")


def test_prompt_k_reads_back_prompt_label() -> None:
    for k in (1, 3, 10):
        assert prompt_k(prompt_label(k, "volume"), "volume") == k
        assert prompt_k(prompt_label(k, "volume"), "slice") is None
    for other in ("none", "0 pt/slice", "3 pt/slice", "1 pts/slice", "x pts/slice", "1 pt/slice "):
        assert prompt_k(other, "slice") is None, other
    with pytest.raises(ValueError, match="per"):
        prompt_k("1 pt/case", "case")


def test_dice_curves_of_paper_and_run_rows() -> None:
    paper = dice_curves(paper_table1(), "SAM-B", "slice")
    assert list(paper) == ["lits"] and paper["lits"]["k"] == [1, 3, 10]
    source = {r["prompt"]: r["liver_dice"] for r in paper_rows("table1") if r["method"] == "SAM-B"}
    assert paper["lits"]["dice"] == [source[prompt_label(k, "slice")] for k in (1, 3, 10)]
    assert paper["lits"]["run"] == ""
    ours = dice_curves(paper_table1(), "3DSAM-adapter", "volume", ks=[10, 1])
    assert set(ours) == {"kits", "pancreas", "lits", "colon"} and ours["kits"]["k"] == [1, 10]
    assert ours["kits"]["dice"] == [73.78, 75.95]
    run = [{"method": "3DSAM-adapter", "prompt": prompt_label(k, "volume"), "dataset": d,
            "dice": float(k), "run": f"{d} run"} for k in (3, 1) for d in ("lits", "phantoms")]
    run.append({"method": "3DSAM-adapter", "prompt": "none", "dataset": "lits", "dice": 0.0})
    run.append({"method": "SAM-B", "prompt": "1 pt/volume", "dataset": "lits", "dice": 0.0})
    curves = dice_curves(run, "3DSAM-adapter", "volume")
    assert curves == {d: {"k": [1, 3], "dice": [1.0, 3.0], "run": f"{d} run"}
                      for d in ("lits", "phantoms")}
    with pytest.raises(ValueError, match="more than one row"):
        dice_curves(run + run, "3DSAM-adapter", "volume")
    with pytest.raises(ValueError, match="ks"):
        dice_curves(run, "3DSAM-adapter", "volume", ks=[0])


def test_paper_table_is_long_with_sam_rows_for_liver_only() -> None:
    rows = paper_table1()
    source = paper_rows("table1")
    n_sam = sum(r["method"] == "SAM-B" for r in source)
    assert len(rows) == n_sam * 1 + (len(source) - n_sam) * 4
    assert {r["dataset"] for r in rows if r["method"] == "SAM-B"} == {"lits"}
    nnunet_kits = next(r for r in rows if r["method"] == "nnU-Net" and r["dataset"] == "kits")
    assert nnunet_kits["dice"] == next(r for r in source if r["method"] == "nnU-Net")["kidney_dice"]
    # every paper prompt label is one prompt_label() produces (so our rows line up)
    prompts = {r["prompt"] for r in source} - {"none"}
    assert prompts == {prompt_label(k, per) for k in (1, 3, 10) for per in ("slice", "volume")}
    with pytest.raises(ValueError, match="unknown dataset"):
        paper_table1(datasets=("brats",))


#: the training seed, hence the seeded split: 5 tests phantom_001, which the default reference
#: (seed 0) trains on, so rows scored on the default split instead of the checkpoint's differ
SEED = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One smoke epoch of the tiny model and of the DynUNet stand-in on four small phantoms
    (split seeded with :data:`SEED`)."""
    root = tmp_path_factory.mktemp("table1")
    base = TrainConfig(name="t1", dataset="phantoms", data_dir=str(root / "ph"), phantoms=4,
                       phantom_difficulty=0.0, phantom_shape=(48, 48, 40),
                       cache_dir=str(root / "cache"), variant="tiny", tuning="full", epochs=1,
                       iterations_per_epoch=1, seed=SEED, device="cpu", progress=False,
                       tensorboard=False, out_dir=str(root / "ours"))
    Trainer(base).run()
    Trainer(base.replace(model="dynunet_smoke", out_dir=str(root / "dyn"))).run()
    return {"root": root, "data": root / "ph", "ours": root / "ours" / "last.pt",
            "dyn": root / "dyn" / "last.pt"}


def test_promptable_and_automatic_rows(trained) -> None:
    root = trained["root"]
    ours = promptable_rows(trained["ours"], trained["data"], root / "e_ours", ks=(1, 3),
                           run="tiny smoke model")
    assert [r["prompt"] for r in ours] == ["1 pt/volume", "3 pts/volume"]
    # the rows score the held-out cases of the split the checkpoint recorded, none it trained on
    ids = read_index(trained["data"]).case_ids()
    ref = split_reference(read_checkpoint_file(trained["ours"]))
    assert ref == SplitRef(None, 0, SEED)
    split = ref.resolve("phantoms", ids)
    assert split["test"] == ["phantom_001"]
    assert set(SplitRef().resolve("phantoms", ids)["test"]) <= set(split["train"])
    with open(root / "e_ours" / "per_case.csv", encoding="utf-8") as fh:
        scored = [(r["case"], r["k"]) for r in csv.DictReader(fh)]
    assert scored == [("phantom_001", "1"), ("phantom_001", "3")]
    for r in ours:
        assert r["method"] == "3DSAM-adapter" and r["dataset"] == "phantoms"
        assert 0.0 <= r["dice"] <= 100.0 and 0.0 <= r["nsd"] <= 100.0
        assert r["run"] == "tiny smoke model" and r["cases"] == len(split["test"]) == 1
    (auto,) = automatic_rows(trained["dyn"], trained["data"], root / "e_dyn",
                             method="DynUNet smoke (not nnU-Net)")
    assert auto["prompt"] == "none" and 0.0 <= auto["dice"] <= 100.0 and auto["cases"] == 1
    with open(root / "e_dyn" / "per_case.csv", encoding="utf-8") as fh:
        assert [r["case"] for r in csv.DictReader(fh)] == split["test"]
    with pytest.raises(ValueError, match="method"):
        automatic_rows(trained["dyn"], trained["data"], root / "e_x", method="")


def test_held_out_lesion_cases_are_the_checkpoint_split(trained) -> None:
    """The chapter's full-mode SAM 2D cases: the checkpoint's test split (seed 5: phantom_001),
    not the default split, whose test case the checkpoint trained on."""
    ids = read_index(trained["data"]).case_ids()
    assert held_out_lesion_cases(trained["ours"], trained["data"]) == ["phantom_001"]
    assert SplitRef().resolve("phantoms", ids)["test"] != ["phantom_001"]


def _save(path: Path, mask: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> None:
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), np.diag([*spacing, 1.0])), path)


def test_score_folder_scores_masks_of_another_program(tmp_path) -> None:
    labels, preds = tmp_path / "labelsTs", tmp_path / "pred"
    labels.mkdir()
    preds.mkdir()
    gt = np.zeros((10, 10, 6), np.uint8)
    gt[2:4, 2:4, 1:3] = 1  # 8 voxels
    half = gt.copy()
    half[2:4, 2:4, 2] = 0  # 4 of them
    _save(labels / "a.nii.gz", gt)
    _save(preds / "a.nii.gz", gt)
    _save(labels / "b.nii.gz", gt)
    _save(preds / "b.nii.gz", half)
    (row,) = score_folder(preds, labels, dataset="kits")
    # Dice: 1 for a, 2·4/(8+4) for b
    assert row["dice"] == pytest.approx(round(100 * (1 + 8 / 12) / 2, 2))
    want_nsd = (1 + nsd(half > 0, gt > 0, (1.0, 1.0, 2.0), 5.0)) / 2
    assert row["nsd"] == pytest.approx(round(100 * want_nsd, 2))
    assert row["method"] == "nnU-Net" and row["cases"] == 2
    (preds / "b.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no prediction"):
        score_folder(preds, labels)


def test_sam2d_rows_average_cases_in_percent(monkeypatch, tmp_path) -> None:
    import sam3d.baselines.sam2d_cache as cache

    calls = []

    def fake(weights, entry, ks, seed, root, encoder, refresh, slab):
        assert slab is None  # every slice unless asked
        calls.append((entry, tuple(ks), seed, encoder))
        dice = {"a": 0.5, "b": 0.25}[entry]
        return {"cached": entry == "a", "key": "k", "path": tmp_path,
                "rows": [{"k": k, "dice": dice / k, "nsd": 2 * dice / k, "seconds": 1.5}
                         for k in ks]}

    monkeypatch.setattr(cache, "cached_evaluate_case", fake)
    rows = sam2d_rows("w.pt", ["a", "b"], ks=(1, 10), seed=3, run="MobileSAM")
    assert calls == [("a", (1, 10), 3, "tiny_vit"), ("b", (1, 10), 3, "tiny_vit")]
    assert [r["prompt"] for r in rows] == ["1 pt/slice", "10 pts/slice"]
    assert rows[0]["dice"] == 37.5 and rows[0]["nsd"] == 75.0
    assert rows[1]["dice"] == 3.75 and rows[1]["method"] == "SAM-B"
    assert rows[0]["cases"] == 2 and rows[0]["cached"] == 1 and rows[0]["seconds"] == 3.0
    with pytest.raises(ValueError, match="no case"):
        sam2d_rows("w.pt", [])


def test_smoke_baseline_checkpoint_validates() -> None:
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="epochs"):
            smoke_baseline_checkpoint(epochs=bad)


def test_table_joins_paper_and_run_rows() -> None:
    run = [{"method": "SAM-B", "prompt": "1 pt/slice", "dataset": "lits", "dice": 50.0,
            "nsd": 40.0, "run": "MobileSAM, LiTS 117"},
           {"method": "DynUNet smoke (not nnU-Net)", "prompt": "none", "dataset": "phantoms",
            "dice": 10.0, "nsd": 20.0, "run": "smoke stand-in"}]
    table = table1(paper_table1(), run, "smoke")
    assert len(table) == len(paper_table1()) + 1
    sam = table[(table.method == "SAM-B") & (table.prompt == "1 pt/slice")].iloc[0]
    assert sam["dice · paper"] == 6.71 and sam["this run: model · data"] == "MobileSAM, LiTS 117"
    assert "smoke" in next(c for c in table.columns if c.startswith("dice · this run"))
    dyn = table[table.method.str.startswith("DynUNet")].iloc[0]
    assert np.isnan(dyn["dice · paper"]) and dyn["nsd · this run (smoke: tiny model, not "
                                                  "comparable)"] == 20.0
    nn = table[(table.method == "nnU-Net") & (table.dataset == "kits")].iloc[0]
    assert nn["this run: model · data"] == ""
