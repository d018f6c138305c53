"""Warm start (:mod:`sam3d.engine.warm_start`): a run that begins from trained weights. A paper
checkpoint carried into an extension variant keeps the paper's logits (the extension's own
parameters keep their zero start); other mismatches, cycles and missing files are refused; the
cache key follows the starting weights; the Trainer starts from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_checkpoint import official_from

from sam3d import build_sam3d
from sam3d.baselines.networks import BASELINES
from sam3d.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sam3d.engine import config as config_module
from sam3d.engine.cached import config_key
from sam3d.engine.config import ConfigError, TrainConfig, load_config
from sam3d.engine.loop import Trainer, TrainError
from sam3d.engine.warm_start import warm_start

EXTENSION = ["mask_decoder.click_conv.weight", "prompt_encoders.4.label_embed.weight"]


def _paper_file(randomise, path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    paper = randomise(build_sam3d("tiny")).eval()
    save_checkpoint(paper, path)
    return paper, path


def test_a_paper_checkpoint_starts_the_extension_at_the_paper_logits(randomise, tiny_inputs,
                                                                      tmp_path) -> None:
    paper, path = _paper_file(randomise, tmp_path / "paper.pt")
    ext = build_sam3d("tiny_interactive_maps").eval()
    kept = warm_start(ext, path)
    assert sorted(kept) == EXTENSION
    state = ext.state_dict()
    for key, value in paper.state_dict().items():
        assert torch.equal(state[key], value), key
    assert not ext.mask_decoder.click_conv.weight.any()
    volume, points = tiny_inputs
    ones = torch.ones(points.shape[:2], dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(ext(volume, points, ones, first_prompt=1), paper(volume, points))
    # the authors' dict of the same weights gives the same start
    official = build_sam3d("tiny_interactive_maps").eval()
    assert sorted(warm_start(official, _save(official_from(paper), tmp_path / "o.pt"))) \
        == EXTENSION
    assert all(torch.equal(official.state_dict()[k], v) for k, v in paper.state_dict().items())
    # and a checkpoint of the extension itself loads whole: nothing kept
    save_checkpoint(ext, tmp_path / "ext.pt")
    assert warm_start(build_sam3d("tiny_interactive_maps"), tmp_path / "ext.pt") == []


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_a_checkpoint_that_does_not_fit_is_refused(randomise, tmp_path) -> None:
    _, path = _paper_file(randomise, tmp_path / "paper.pt")
    with pytest.raises(CheckpointError, match="does not match the model"):
        warm_start(build_sam3d("tiny_auto_ours"), path)  # other parameters
    ext = build_sam3d("tiny_interactive_maps")
    save_checkpoint(ext, tmp_path / "ext.pt")
    with pytest.raises(CheckpointError, match="unexpected 2"):
        warm_start(build_sam3d("tiny"), tmp_path / "ext.pt")  # the paper model has no extension
    baseline = tmp_path / "baseline.pt"
    save_checkpoint(BASELINES["dynunet_smoke"].engine_model(32), baseline)
    with pytest.raises(CheckpointError, match="not a sam3d model"):
        warm_start(build_sam3d("tiny"), baseline)
    with pytest.raises(CheckpointError, match="starts a sam3d model"):
        warm_start(BASELINES["dynunet_smoke"].engine_model(32), path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        warm_start(build_sam3d("tiny"), tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        warm_start(build_sam3d("tiny"), tmp_path / "bad.pt")


def test_init_from_is_checked_and_keys_the_cache(randomise, tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="init_from must be"):
        TrainConfig(init_from="")
    with pytest.raises(ConfigError, match="for the sam3d model"):
        TrainConfig(model="dynunet_smoke", init_from="book_smoke")
    with pytest.raises(ConfigError, match="names this run itself"):
        TrainConfig(name="book_smoke", init_from="book_smoke")
    cfg = load_config("book_interactive")
    assert cfg.init_from == "book_smoke"
    # the key holds the starting run's key: a changed book_smoke recipe changes it
    real_load = config_module.load_config

    def other_smoke(name, overrides=None):
        loaded = real_load(name, overrides)
        return loaded.replace(lr=2e-3) if name == "book_smoke" else loaded

    key = config_key(cfg)
    monkeypatch.setattr(config_module, "load_config", other_smoke)
    assert config_key(cfg) != key
    monkeypatch.setattr(config_module, "load_config", real_load)
    assert config_key(cfg) == key
    # a file: its SHA-256, so other bytes at the same path give another key
    _, path = _paper_file(randomise, tmp_path / "paper.pt")
    trained = cfg.replace(epochs=1)  # (book_interactive's epochless run needs its init_from)
    from_file = trained.replace(init_from=str(path))
    first = config_key(from_file)
    assert first not in (config_key(trained), config_key(trained.replace(init_from=None)))
    torch.save({"format": "x"}, path)
    assert config_key(from_file) != first
    with pytest.raises(ConfigError, match="neither a shipped training configuration"):
        config_key(cfg.replace(init_from=str(tmp_path / "missing.pt")))
    # a cycle of shipped names is refused, not followed for ever
    shipped = {"a": TrainConfig(name="a", init_from="b"), "b": TrainConfig(name="b",
                                                                         init_from="a")}
    monkeypatch.setattr(config_module, "shipped_configs", lambda: sorted(shipped))
    monkeypatch.setattr(config_module, "load_config", lambda name, overrides=None: shipped[name])
    with pytest.raises(ConfigError, match="init_from cycle: a → b → a"):
        config_key(shipped["a"])


def test_the_trainer_starts_from_the_checkpoint(smoke_cfg, tmp_path) -> None:
    Trainer(smoke_cfg).run()
    start = tmp_path / "run" / "last.pt"
    cfg = smoke_cfg.replace(out_dir=str(tmp_path / "warm"), variant="tiny_interactive_maps",
                            init_from=str(start), lr=1e-12, lr_end_factor=1.0)
    Trainer(cfg).run()
    trained = load_checkpoint(start).state_dict()
    warm = load_checkpoint(tmp_path / "warm" / "last.pt").state_dict()
    assert set(warm) - set(trained) == set(EXTENSION)
    worst = max(float((warm[k].float() - v.float()).abs().max()) for k, v in trained.items())
    assert worst < 1e-6  # an lr of 1e-12: one epoch leaves the starting weights
    cold = smoke_cfg.replace(out_dir=str(tmp_path / "cold"), variant="tiny_interactive_maps",
                             lr=1e-12, lr_end_factor=1.0)
    Trainer(cold).run()
    fresh = load_checkpoint(tmp_path / "cold" / "last.pt").state_dict()
    assert max(float((fresh[k].float() - v.float()).abs().max()) for k, v in trained.items()) > 1e-3
    with pytest.raises(TrainError, match="neither a shipped training configuration"):
        Trainer(cfg.replace(out_dir=str(tmp_path / "none"),
                            init_from=str(tmp_path / "missing.pt"))).run()
    assert not (tmp_path / "none" / "last.pt").exists()
