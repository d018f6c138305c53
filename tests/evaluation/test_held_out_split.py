"""A held-out split that never leaks: train with ``fold=2`` and every evaluation entry point
scores fold 2's test cases, never one of its training cases.

Before the split reference, ``sam3d evaluate`` read only the recorded seed and tested on fold
0, whose test set shares 31 KiTS cases with fold 2's training set. The dataset here holds two
such cases (fold-2 training, fold-0 test), one fold-2 validation case (also a fold-0 test
case) and two fold-2 test cases that fold 0 trains on.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3d import cli
from sam3d.data import layout
from sam3d.data.splits import SplitRef, official_split
from sam3d.experiments.table1 import promptable_rows
from sam3d.experiments.training import checkpoint_config, evaluate_held_out, held_out_ids

FOLD = 2


def _cases() -> dict[str, list[str]]:
    f0, f2 = official_split("kits", 0), official_split("kits", FOLD)
    return {"train": sorted(set(f2["train"]) & set(f0["test"]))[:2],
            "val": f2["val"][:1],  # every fold-2 validation case is a fold-0 test case
            "test": sorted(set(f2["test"]) & set(f0["train"]))[:2]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A rehearsal-sized run of the KiTS recipe with fold 2 on five phantom cases named by
    official ids; returns (checkpoint, prepared folder)."""
    import nibabel as nib

    from sam3d.data.phantoms import PhantomSpec, make_phantom

    root = tmp_path_factory.mktemp("kits")
    spec = PhantomSpec(shape=(32, 32, 16), spacing=(2.0, 2.0, 4.0), difficulty=0.0, n_tumours=1)
    records = {}
    for i, case_id in enumerate(sorted(sum(_cases().values(), []))):
        ph = make_phantom(spec, seed=i)
        (root / case_id).mkdir()
        affine = np.diag([*spec.spacing, 1.0])
        nib.save(nib.Nifti1Image(ph.image.astype(np.int16), affine),
                 root / case_id / "image.nii.gz")
        nib.save(nib.Nifti1Image(ph.label.astype(np.uint8), affine),
                 root / case_id / "label.nii.gz")
        records[case_id] = layout.case_record(case_id, ph.image.shape, spec.spacing, ph.label, 2)
    layout.write_index(root, "kits", {0: "background", 1: "kidney", 2: "tumour"}, 2, records)
    work = tmp_path_factory.mktemp("work")
    out = work / "run"
    here = os.getcwd()
    os.chdir(work)  # the rehearsal's SAM file and cache land here
    try:
        assert cli.main(["train", "--config", "kits", "--set", "rehearsal=true", "--set",
                         f"fold={FOLD}", "--set", f"data_dir={root}", "--set", "epochs=1",
                         "--set", "progress=false", "--set", "tensorboard=false",
                         "--out-dir", str(out)]) == 0
    finally:
        os.chdir(here)
    best = out / "best.pt"
    return (best if best.is_file() else out / "last.pt"), root


def _cases_in(path: Path) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {r["case"] for r in csv.DictReader(fh)}


def test_split_reference_round_trips_and_overrides():
    ref = SplitRef.of({"fold": 2, "seed": 5, "split_file": None, "lr": 1})
    assert ref == SplitRef(None, 2, 5) and SplitRef.of(None) == SplitRef()
    assert ref.replace(fold=None, seed=7) == SplitRef(None, 2, 7)


def test_every_entry_point_scores_fold_2s_test_cases(trained, tmp_path, monkeypatch):
    checkpoint, data = trained
    cases = _cases()
    assert len(cases["train"]) == 2 and len(cases["test"]) == 2
    cfg = checkpoint_config(checkpoint)
    assert cfg.fold == FOLD and cfg.rehearsal
    want = set(cases["test"])
    assert set(held_out_ids(cfg, data)) == want
    monkeypatch.chdir(checkpoint.parents[1])  # the recorded (relative) SAM file is there
    reads: list[str] = []  # torch.load calls on the checkpoint: one per entry point
    load = torch.load

    def counting_load(f, *args, **kwargs):
        if Path(str(f)).resolve() == checkpoint.resolve():
            reads.append(str(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    for protocol in ("sam3d", "official"):
        out = tmp_path / protocol
        reads.clear()
        assert cli.main(["evaluate", "--protocol", protocol, "--checkpoint", str(checkpoint),
                         "--data", str(data), "--k", "1", "--mode", "roi", "--out", str(out)]) == 0
        assert len(reads) == 1, (protocol, len(reads))  # protocol, model and split: one read
        scored = _cases_in(out / "per_case.csv")
        assert scored == want and not scored & set(cases["train"]), protocol
    reads.clear()
    rows = promptable_rows(checkpoint, data, tmp_path / "table1", ks=(1,), dataset="kits")
    assert rows[0]["cases"] == 2 and len(reads) == 1
    assert _cases_in(tmp_path / "table1" / "per_case.csv") == want
    reads.clear()
    res = evaluate_held_out(checkpoint, tmp_path / "held_out", data_dir=data)
    assert set(res["cases"]) == want and len(reads) == 1
    # an explicit --fold still wins: fold 0's test cases are fold 2's training and validation
    # cases here — what the old evaluation scored
    out = tmp_path / "fold0"
    assert cli.main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--k", "1",
                     "--mode", "roi", "--fold", "0", "--out", str(out)]) == 0
    assert _cases_in(out / "per_case.csv") == set(cases["train"]) | set(cases["val"])
