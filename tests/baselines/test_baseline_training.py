"""Supervised baselines through the engine: ``sam3d train --set model=…``, the baseline
checkpoint format, ``load_for_inference`` and ``sam3d evaluate --mode auto``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

from sam3d.baselines.networks import BASELINE_FORMAT, BASELINES, PromptFree
from sam3d.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_file,
    save_checkpoint,
)
from sam3d.cli import main
from sam3d.engine.config import ConfigError, TrainConfig, load_config
from sam3d.engine.optim import build_optimizer
from sam3d.engine.state import load_training_state
from sam3d.inference.predict import load_for_inference


def _smoke_yaml(tmp_path: Path) -> Path:
    cfg = {"name": "baseline_test", "dataset": "phantoms", "data_dir": str(tmp_path / "ph"),
           "phantoms": 4, "phantom_difficulty": 0.0, "phantom_shape": [48, 48, 40],
           "cache_dir": str(tmp_path / "cache"), "variant": "tiny", "tuning": "full",
           "epochs": 1, "iterations_per_epoch": 2, "lr": 1.0e-3, "seed": 0, "device": "cpu",
           "progress": False, "tensorboard": False}
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_train_then_evaluate_auto_with_the_cli(tmp_path, capsys) -> None:
    recipe = _smoke_yaml(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--set", "model=dynunet_smoke",
                 "--out-dir", str(out)]) == 0
    assert "dynunet_smoke" in capsys.readouterr().out
    raw = read_checkpoint_file(out / "last.pt")
    assert raw["format"] == BASELINE_FORMAT and raw["variant"] == "dynunet_smoke"
    assert raw["size"] == [64, 64, 64] and raw["extra"]["train"]["config"]["model"] == (
        "dynunet_smoke")
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"]))

    model, spec = load_for_inference(out / "last.pt")
    assert isinstance(model, PromptFree) and model.crop == 64 and not model.training
    assert spec.mean is not None and spec.std is not None  # the training statistics

    res = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data",
                 str(tmp_path / "ph"), "--mode", "auto", "--out", str(res)]) == 0
    with open(res / "per_case.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and all(r["mode"] == "auto" and r["k"] == "0" for r in rows)
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)

    # clicks would be silently ignored by a prompt-free model: refused, nothing written
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "last.pt"), "--data",
                 str(tmp_path / "ph"), "--mode", "roi", "--out", str(tmp_path / "eval2")]) == 2
    assert "prompt-free" in capsys.readouterr().err and not (tmp_path / "eval2").exists()


def test_baseline_checkpoint_round_trip_and_refusals(tmp_path) -> None:
    torch.manual_seed(0)
    model = BASELINES["dynunet_smoke"].engine_model(32)
    path = tmp_path / "b.pt"
    save_checkpoint(model, path, extra={"note": "x"})
    back = load_checkpoint(path, variant="dynunet_smoke")
    assert isinstance(back, PromptFree) and back.size == (32, 32, 32)
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="requested"):
        load_checkpoint(path, variant="tiny")
    with pytest.raises(CheckpointError, match="without sam_checkpoint"):
        load_checkpoint(path, sam_checkpoint=tmp_path / "sam.pth")
    bad = read_checkpoint_file(path)
    bad["variant"] = "nnformer"
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="unknown baseline"):
        load_checkpoint(tmp_path / "bad.pt")
    bad = read_checkpoint_file(path)
    bad["state"].pop(next(iter(bad["state"])))
    torch.save(bad, tmp_path / "short.pt")
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path / "short.pt")


def test_training_state_resumes_a_baseline(tmp_path) -> None:
    from sam3d.engine.state import save_training_state

    model = BASELINES["dynunet_smoke"].engine_model(32)
    opt, sched = build_optimizer(model, 1e-3, 0.0, 3, 0.1)
    assert [g["name"] for g in opt.param_groups] == ["network"]
    save_training_state(tmp_path / "last.pt", model, opt, sched, epoch=2, best=0.5,
                        history=[], config={})
    other = BASELINES["dynunet_smoke"].engine_model(32)
    opt2, sched2 = build_optimizer(other, 1e-3, 0.0, 3, 0.1)
    state = load_training_state(tmp_path / "last.pt", other, opt2, sched2)
    assert state["epoch"] == 2
    assert all(torch.equal(p, q)
               for p, q in zip(model.parameters(), other.parameters(), strict=True))
    tiny = BASELINES["dynunet_smoke"].engine_model(64)
    opt3, sched3 = build_optimizer(tiny, 1e-3, 0.0, 3, 0.1)
    with pytest.raises(CheckpointError, match="crop"):
        load_training_state(tmp_path / "last.pt", tiny, opt3, sched3)


def test_config_checks_the_model_settings() -> None:
    base = load_config("smoke_phantoms")
    assert base.model == "sam3d" and base.crop is None
    assert load_config("smoke_phantoms", {"model": "swin_unetr", "crop": 96}).crop == 96
    with pytest.raises(ConfigError, match="model 'nnformer' unknown"):
        TrainConfig(model="nnformer")
    with pytest.raises(ConfigError, match="leave crop null"):
        TrainConfig(crop=64)
    with pytest.raises(ConfigError, match="multiple of 32"):
        TrainConfig(model="swin_unetr", crop=80)
    with pytest.raises(ConfigError, match="grad_checkpointing"):
        TrainConfig(model="unetr", grad_checkpointing=True)
