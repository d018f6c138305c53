"""Fitting the click refiner alone (:mod:`sam3d.engine.refiner_fit`): the settings are checked,
an epochless run (``epochs: 0``, ``init_from``, ``refiner_steps``) moves the refiner and no
other weight, is deterministic for a seed, and a resumed run does not fit it twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3d import build_sam3d
from sam3d.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from sam3d.engine.config import ConfigError
from sam3d.engine.loop import Trainer
from sam3d.engine.refiner_fit import fit_click_refiner


def test_refiner_settings_are_checked(smoke_cfg) -> None:
    local = smoke_cfg.replace(variant="tiny_interactive_local")
    assert local.replace(epochs=0, init_from="book_smoke", refiner_steps=5).epochs == 0
    for changes, match in (({"epochs": 0}, "epochs must be"),
                           ({"epochs": 0, "refiner_steps": 5}, "0 only with init_from"),
                           ({"refiner_steps": -1}, "refiner_steps must be an integer"),
                           ({"refiner_steps": 2.5}, "refiner_steps must be an integer"),
                           ({"refiner_steps": 5, "refiner_lr": 0}, "refiner_lr must be"),
                           ({"refiner_steps": 5, "refiner_lr": True}, "refiner_lr must be")):
        with pytest.raises(ConfigError, match=match):
            local.replace(**changes)
    with pytest.raises(ConfigError, match="refiner_steps needs .*refiner_only"):
        smoke_cfg.replace(variant="tiny_interactive_refine", refiner_steps=5)


def test_fit_refuses_a_model_without_a_lone_refiner(randomise) -> None:
    with pytest.raises(ValueError, match="refiner_only"):
        fit_click_refiner(build_sam3d("tiny_interactive_refine"), None, [], steps=1, lr=1e-3,
                          seed=0)
    with pytest.raises(ValueError, match="steps must be an integer"):
        fit_click_refiner(build_sam3d("tiny_interactive_local"), None, [], steps=0, lr=1e-3,
                          seed=0)


def _states(path):
    return load_checkpoint(path).state_dict()


def test_an_epochless_run_fits_the_refiner_alone(smoke_cfg, randomise, tmp_path) -> None:
    start = randomise(build_sam3d("tiny_interactive"))
    save_checkpoint(start, tmp_path / "start.pt")
    cfg = smoke_cfg.replace(variant="tiny_interactive_local", init_from=str(tmp_path / "start.pt"),
                            epochs=0, refiner_steps=8)
    assert Trainer(cfg).run() == []
    best = tmp_path / "run" / "best.pt"
    train = read_checkpoint_file(best)["extra"]["train"]
    assert [h["step"] for h in train["refiner"]] == [8]
    assert np.isfinite(train["refiner"][0]["loss"]) and train["refiner"][0]["loss"] > 0
    fitted, before = _states(best), start.state_dict()
    moved = sorted(k for k in fitted if "click_refiner" in k)
    assert len(moved) == 6 and fitted["mask_decoder.click_refiner.net.4.weight"].any()
    # every other weight is the start's
    assert all(torch.equal(fitted[k], before[k]) for k in fitted if "click_refiner" not in k)
    assert all(torch.equal(fitted[k], v) for k, v in _states(tmp_path / "run" / "last.pt").items())
    # resumed, the run finds the fitted refiner and writes nothing
    stamp = best.read_bytes()
    assert Trainer(cfg, resume=True).run() == []
    assert best.read_bytes() == stamp
    # the same settings fit the same refiner
    Trainer(cfg.replace(out_dir=str(tmp_path / "again"))).run()
    again = _states(tmp_path / "again" / "best.pt")
    assert all(torch.equal(again[k], fitted[k]) for k in moved)
