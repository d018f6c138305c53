"""Training configurations: shipped YAML files, overrides and validation."""

from __future__ import annotations

import pytest

from sam3d.engine.config import (
    ConfigError,
    TrainConfig,
    load_config,
    parse_overrides,
    shipped_configs,
)


def test_every_shipped_configuration_loads() -> None:
    names = shipped_configs()
    assert {"smoke_phantoms", "kits", "lits", "pancreas", "colon"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_full_configurations_hold_the_official_recipe() -> None:
    for name, dataset in (("kits", "kits"), ("lits", "lits"), ("pancreas", "pancreas"),
                          ("colon", "colon")):
        cfg = load_config(name)
        assert (cfg.dataset, cfg.variant, cfg.tuning) == (dataset, "vit_b", None)
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.lr_end_factor) == (500, 1, 4e-4, 0.01)
        assert ((cfg.grad_clip, cfg.lambda_dice, cfg.lambda_ce, cfg.weight_decay)
                == (1.0, 0.5, 0.5, 0))
        assert (cfg.train_lesion_clicks, cfg.train_random_clicks, cfg.val_clicks) == (10, 20, 10)


def test_overrides_are_parsed_as_yaml_scalars(tmp_path) -> None:
    assert parse_overrides(["epochs=3", "bf16=true", "tuning=null", "lr=2e-4"]) == {
        "epochs": 3, "bf16": True, "tuning": None, "lr": 2e-4}
    cfg = load_config("smoke_phantoms", ["epochs=2", f"out_dir={tmp_path}"])
    assert cfg.epochs == 2 and cfg.out_dir == str(tmp_path)


@pytest.mark.parametrize("override, match", [
    (["epochs=0"], "epochs"), (["batch_size=1.5"], "batch_size"), (["variant=vit_q"], "variant"),
    (["dataset=mnist"], "dataset"), (["tuning=most"], "tuning"), (["lr=-1"], "lr"),
    (["device=tpu"], "device"), (["colour=red"], "unknown setting"), (["epochs"], "key=value"),
])
def test_bad_settings_are_refused(override, match) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("smoke_phantoms", override)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown configuration"):
        load_config("no_such_config")


def test_config_is_frozen_and_replace_validates() -> None:
    cfg = TrainConfig()
    with pytest.raises(AttributeError):
        cfg.epochs = 3
    assert cfg.replace(epochs=3).epochs == 3
    with pytest.raises(ConfigError):
        cfg.replace(val_every=0)
