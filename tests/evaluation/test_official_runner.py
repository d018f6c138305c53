"""``sam3d evaluate --protocol official`` on prepared data, released-checkpoint detection, and
the official path's indifference to ``prepare_dataset.py`` (it keeps each file as stored)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3d import cli
from sam3d.build import build_sam3d
from sam3d.checkpoint import save_checkpoint
from sam3d.data.sources import find_raw_cases
from sam3d.evaluation.official import load_case
from sam3d.rehearsal.data import prepare_rehearsal_dataset

PREPROCESSING = {"name": "lits", "window": [-48, 163], "mean": 60.057533, "std": 40.198017,
                 "spacing": 1.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rehearsal")
    for dataset in ("lits", "kits"):
        prepare_rehearsal_dataset(dataset, root)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.manual_seed(0)
    extra = {"train": {"preprocessing": PREPROCESSING,
                       "config": {"dataset": "lits", "fold": 0, "seed": 0}}}
    save_checkpoint(build_sam3d("tiny"), path, extra=extra)
    return path


@pytest.mark.parametrize("dataset", ["lits", "kits"])
def test_prepared_files_give_the_raw_files_official_input(data, dataset):
    raw = {c.case_id: c for c in find_raw_cases(dataset, data / "raw" / dataset).cases}
    from sam3d.data.layout import read_index

    index = read_index(data / "prepared" / dataset)
    for case_id, entry in index.cases.items():
        a = load_case(raw[case_id].image, raw[case_id].label, dataset)
        b = load_case(entry.image, entry.label, dataset)
        assert torch.equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert a.spacing == b.spacing and np.array_equal(a.prompt, b.prompt)


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_cli_official_protocol_runs_and_replays(data, checkpoint, tmp_path, capsys):
    prepared = data / "prepared" / "lits"
    out = tmp_path / "official"
    argv = ["evaluate", "--protocol", "official", "--checkpoint", str(checkpoint),
            "--data", str(prepared), "--k", "1", "3", "--save-masks", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "official k=1" in capsys.readouterr().out
    rows = _rows(out / "per_case.csv")
    assert {r["case"] for r in rows} == {"volume-0", "volume-5"}  # fold 0's test cases
    assert (sorted(int(r["k"]) for r in rows) == [1, 1, 3, 3]
            and {r["mode"] for r in rows} == {"official"})
    clicks = json.loads((out / "clicks.json").read_text(encoding="utf-8"))["cases"]
    assert len(clicks) == 4 and all(len(c["points"]) == int(c["protocol"][-1]) for c in clicks)
    assert all("official 1 mm grid" in c["space"] for c in clicks)
    masks = sorted(p.name for p in (out / "masks").iterdir())
    assert masks == ["volume-0_k1_official.nii.gz", "volume-0_k3_official.nii.gz",
                     "volume-5_k1_official.nii.gz", "volume-5_k3_official.nii.gz"]
    again = tmp_path / "replay"
    assert cli.main([*argv[:-1], str(again), "--clicks", str(out / "clicks.json")]) == 0
    assert [(r["case"], r["k"], r["dice"], r["nsd"], r["clicks"])
            for r in _rows(again / "per_case.csv")] \
        == [(r["case"], r["k"], r["dice"], r["nsd"], r["clicks"]) for r in rows]
    assert cli.main(argv) == 2  # results there: refused, kept
    assert "already holds results" in capsys.readouterr().err
    assert len(_rows(out / "per_case.csv")) == 4


@pytest.mark.parametrize("flags,message", [
    (["--mode", "sliding"], "--mode sliding is for --protocol sam3d"),
    (["--refine", "2"], "--refine 2 is not part of the official protocol"),
    (["--position", "centre"], "--position centre is not part of the official protocol"),
    (["--zoom", "2"], "--zoom 2 is not part of the official protocol"),
    (["--keep", "clicked"], "--keep clicked is not part of the official protocol"),
])
def test_cli_refuses_what_the_official_protocol_does_not_do(data, checkpoint, tmp_path, capsys,
                                                           flags, message):
    out = tmp_path / "out"
    assert cli.main(["evaluate", "--protocol", "official", "--checkpoint", str(checkpoint),
                     "--data", str(data / "prepared" / "lits"), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


def test_released_checkpoints_are_detected_and_bad_ones_refused(data, tmp_path, capsys):
    prepared = str(data / "prepared" / "lits")

    def run(path: Path, *extra: str) -> str:
        out = tmp_path / f"out-{path.name}"
        code = cli.main(["evaluate", "--protocol", "official", "--checkpoint", str(path),
                         "--data", prepared, "--out", str(out), *extra])
        assert code == 2 and not out.exists()
        return capsys.readouterr().err

    partial = tmp_path / "partial.pth.tar"
    torch.save({"encoder_dict": {}, "decoder_dict": {}}, partial)
    assert "no 'feature_dict' entry" in run(partial, "--dataset", "lits")
    assert "records no dataset" in run(partial)
    torch.save({"encoder_dict": {}}, tmp_path / "whole.pth.tar")
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes((tmp_path / "whole.pth.tar").read_bytes()[:40])
    assert "not a readable PyTorch checkpoint" in run(truncated, "--dataset", "lits")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    assert "not a sam3d checkpoint" in run(foreign, "--dataset", "lits")


def test_official_protocol_refuses_datasets_it_does_not_know(tmp_path, capsys):
    path = tmp_path / "phantom.pt"
    extra = {"train": {"preprocessing": {**PREPROCESSING, "name": "phantoms"},
                       "config": {"dataset": "phantoms"}}}
    save_checkpoint(build_sam3d("tiny"), path, extra=extra)
    (tmp_path / "data").mkdir()
    code = cli.main(["evaluate", "--protocol", "official", "--checkpoint", str(path),
                     "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert code == 2 and "knows the datasets" in capsys.readouterr().err


def test_official_preprocessing_feeds_training_the_official_layout(data, tmp_path, monkeypatch):
    """``preprocessing: official``: the test chain's image is the official loader's (before its
    3 channels the same numbers), its label the official prompt grid; a training run with it
    trains, records it, and is evaluated with the official protocol by default."""
    from sam3d.data.layout import read_index
    from sam3d.data.specs import get_spec
    from sam3d.data.transforms import build_transforms
    from sam3d.engine.config import ConfigError, load_config

    entry = read_index(data / "prepared" / "kits").cases["case_00002"]
    item = build_transforms(get_spec("kits"), "test", preprocessing="official")(entry.as_dict())
    official = load_case(entry.image, entry.label, "kits")
    assert tuple(item["image"].shape) == tuple(official.image.shape[1:])
    assert float((item["image"].as_tensor() - official.image[0]).abs().max()) <= 1e-5
    assert np.array_equal(item["label"][0].numpy() > 0.5, official.prompt)
    train = build_transforms(get_spec("kits"), "train", crop=32, seed=0,
                             preprocessing="official")(entry.as_dict())[0]
    assert (tuple(train["image"].shape) == (3, 32, 32, 32)
            and set(np.unique(train["label"])) <= {0, 1})
    with pytest.raises(ConfigError, match="preprocessing must be one of"):
        load_config("kits", {"preprocessing": "raw"})
    with pytest.raises(ConfigError, match="needs preprocessing: sam3d"):
        load_config("smoke_phantoms", {"preprocessing": "official"})

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert cli.main(["train", "--config", "kits", "--set", "rehearsal=true", "--set",
                     "preprocessing=official", "--set", f"data_dir={data / 'prepared' / 'kits'}",
                     "--set", "epochs=1", "--set", "progress=false", "--set",
                     "tensorboard=false", "--out-dir", str(run)]) == 0
    ckpt = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data",
                     str(data / "prepared" / "kits"), "--k", "1", "--out", str(out)]) == 0
    assert {r["mode"] for r in _rows(out / "per_case.csv")} == {"official"}
