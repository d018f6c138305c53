"""Training configurations: shipped YAML files, overrides and validation."""

from __future__ import annotations

from importlib import resources

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


def test_command_line_strings_are_parsed_as_yaml_scalars(tmp_path) -> None:
    assert parse_overrides(["epochs=3", "bf16=true", "tuning=null", "lr=2e-4"]) == {
        "epochs": 3, "bf16": True, "tuning": None, "lr": 2e-4}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["epochs"])
    with pytest.raises(TypeError, match="list"):
        parse_overrides("epochs=3")
    cfg = load_config("smoke_phantoms", {"epochs": 2, "out_dir": tmp_path})
    assert cfg.epochs == 2 and cfg.out_dir == str(tmp_path)  # a path is taken as its string
    assert TrainConfig(data_dir=tmp_path).replace(out_dir=tmp_path).as_dict()["out_dir"] == str(
        tmp_path)


def test_the_library_takes_typed_overrides_only() -> None:
    with pytest.raises(TypeError, match="parse_overrides"):
        load_config("smoke_phantoms", ["epochs=2"])


@pytest.mark.parametrize("override, match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 1.5}, "batch_size"),
    ({"variant": "vit_q"}, "variant"), ({"dataset": "mnist"}, "dataset"),
    ({"tuning": "most"}, "tuning"), ({"lr": -1}, "lr"), ({"device": "tpu"}, "device"),
    ({"colour": "red"}, "unknown setting"),
    ({"case_weights": {"a": 0}}, "case_weights"), ({"case_weights": {"a": "x"}}, "case_weights"),
    ({"case_weights": {}}, "case_weights"), ({"case_weights": [1, 2]}, "case_weights"),
    ({"case_weights": {"a": float("inf")}}, "case_weights"),
    ({"case_weights": {"a": 2}}, "iterations_per_epoch"),
])
def test_bad_settings_are_refused(override, match) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config("smoke_phantoms", override)


PER_DATASET = {"name", "dataset", "data_dir", "out_dir"}


def test_benchmark_files_hold_only_what_differs_per_dataset() -> None:
    """The recipe has one source, TrainConfig's defaults; the four files add their dataset and
    folders to the settings they share (``_paper.yaml``), nothing else."""
    shared = {"cache_dir": "data/cache", "sam_checkpoint": "checkpoints/sam_vit_b_01ec64.pth",
              "workers": 4}
    assert "_paper" not in shipped_configs()  # a base, not a run
    for name in ("kits", "lits", "pancreas", "colon"):
        cfg = load_config(name, rehearsal=False)
        expected = TrainConfig(**shared).replace(
            name=name, dataset=name, data_dir=f"data/prepared/{name}",
            out_dir=f"outputs/train/{name}")
        assert cfg == expected
        text = resources.files("sam3d").joinpath(f"configs/train/{name}.yaml").read_text()
        keys = {line.split(":")[0] for line in text.splitlines()
                if line and not line.startswith("#")}
        assert keys == PER_DATASET | {"base"}


def test_a_base_is_read_under_the_file(tmp_path) -> None:
    (tmp_path / "mine.yaml").write_text("base: kits\nname: mine\nepochs: 3\n")
    cfg = load_config(tmp_path / "mine.yaml", rehearsal=False)
    assert (cfg.name, cfg.dataset, cfg.epochs, cfg.workers) == ("mine", "kits", 3, 4)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="base"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("base: no_such_base\n")
    with pytest.raises(ConfigError, match="unknown configuration"):
        load_config(tmp_path / "gone.yaml")


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
