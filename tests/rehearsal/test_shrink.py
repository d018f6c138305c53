"""The rehearsal's shrink: sizes only, the recipe's own folders moved, overrides respected."""

from __future__ import annotations

import pytest

from sam3d.config import CONFIGS
from sam3d.engine.cached import config_key
from sam3d.engine.config import TrainConfig, load_config, parse_overrides
from sam3d.rehearsal import ENV, active, full_variant
from sam3d.rehearsal.shrink import (
    BASELINE_CROP,
    EPOCHS,
    ITERATIONS,
    SAM_FILE,
    shrink_recipe,
    shrink_sizes,
    small_variant,
)


def test_every_variant_has_a_small_counterpart_of_the_same_kind():
    for name, cfg in CONFIGS.items():
        small = CONFIGS[small_variant(name)]
        assert small.name.startswith("tiny")
        # the same experiment at toy size: prompt levels, PEFT method and tuning policy kept
        assert (small.prompt_levels, small.peft, small.tuning) == \
            (cfg.prompt_levels, cfg.peft, cfg.tuning), name
    assert small_variant("vit_b") == "tiny" and small_variant("auto_adapter") == "tiny_auto_adapter"
    assert small_variant("vit_b_levels_14") == "tiny_levels_14"
    with pytest.raises(KeyError, match="unknown"):
        small_variant("vit_q")


@pytest.mark.parametrize("dataset", ["kits", "lits", "pancreas", "colon"])
def test_load_config_shrinks_the_paper_recipe_in_size_only(dataset, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the rehearsal SAM file is written relative to the run
    full = load_config(dataset)
    assert not full.rehearsal and full.variant == "vit_b" and full.epochs == 500
    monkeypatch.setenv(ENV, "1")
    assert active()
    small = load_config(dataset)
    assert small.rehearsal and small.variant == "tiny" and small.name == f"rehearsal_{dataset}"
    assert small.epochs == EPOCHS and small.iterations_per_epoch == ITERATIONS
    assert small.data_dir == f"data/rehearsal/prepared/{dataset}"
    assert small.out_dir == f"outputs/rehearsal/train/{dataset}"
    assert small.sam_checkpoint == SAM_FILE and (tmp_path / SAM_FILE).is_file()
    kept = ("dataset", "fold", "split_file", "lr", "lr_end_factor", "weight_decay", "grad_clip",
            "lambda_dice", "lambda_ce", "train_lesion_clicks", "train_random_clicks",
            "val_clicks", "seed", "bf16", "tuning", "model")
    assert {k: getattr(small, k) for k in kept} == {k: getattr(full, k) for k in kept}
    assert config_key(small) != config_key(full)
    # rehearsal=False reads the recipe as written (the paper's column), env or not
    assert load_config(dataset, rehearsal=False) == full


def test_overrides_are_shrunk_but_their_folders_kept(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("kits", {"variant": "auto_medtuning", "tuning": None, "epochs": 7,
                               "data_dir": tmp_path / "prepared/kits", "out_dir": "runs/x"},
                      rehearsal=True)
    assert cfg.variant == "tiny_auto_medtuning" and cfg.epochs == EPOCHS
    assert cfg.data_dir == f"{tmp_path}/prepared/kits" and cfg.out_dir == "runs/x"
    one = load_config("kits", {"epochs": 1}, rehearsal=True)
    assert one.epochs == 1  # never more than asked
    base = load_config("lits", {"model": "swin_unetr"}, rehearsal=True)
    assert base.model == "swin_unetr" and base.crop == BASELINE_CROP
    # the same switch from the command line: --set rehearsal=true
    assert load_config("lits", parse_overrides(["rehearsal=true"])).variant == "tiny"


def test_shrink_functions_do_not_touch_their_input():
    raw = {"variant": "vit_b", "data_dir": "/abs/prepared", "out_dir": "outputs/train/k",
           "epochs": 500, "workers": 4}
    moved = shrink_recipe(raw)
    assert moved["data_dir"] == "/abs/prepared" and moved["out_dir"] == "outputs/rehearsal/train/k"
    assert shrink_recipe(moved)["out_dir"] == "outputs/rehearsal/train/k"  # idempotent
    sized = shrink_sizes(raw)
    assert sized["workers"] == 1 and sized["variant"] == "tiny" and sized["rehearsal"] is True
    assert raw == {"variant": "vit_b", "data_dir": "/abs/prepared", "out_dir": "outputs/train/k",
                   "epochs": 500, "workers": 4}
    assert TrainConfig(**{k: v for k, v in sized.items() if k != "data_dir"}).rehearsal


def test_full_variant_follows_the_switch(monkeypatch):
    assert full_variant("vit_b") == "vit_b"
    monkeypatch.setenv(ENV, "yes")
    assert full_variant("vit_b") == "tiny"
    monkeypatch.setenv(ENV, "0")
    assert not active() and full_variant("auto_full") == "auto_full"
