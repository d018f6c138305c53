"""trained_checkpoint: trains a configuration once into a content-keyed folder, then reuses it."""

from __future__ import annotations

import json

import pytest

from sam3d.checkpoint import load_checkpoint
from sam3d.engine.cached import DONE, config_key, run_dir, trained_checkpoint
from sam3d.engine.config import load_config


def test_key_ignores_where_and_how_a_run_reports_but_not_what_it_learns(smoke_cfg) -> None:
    key = config_key(smoke_cfg)
    assert len(key) == 10 and int(key, 16) >= 0
    assert config_key(smoke_cfg.replace(out_dir="elsewhere", progress=True, name="x")) == key
    assert config_key(smoke_cfg.replace(lr=2e-3)) != key
    assert config_key(smoke_cfg.replace(seed=1)) != key
    assert run_dir(smoke_cfg, "root").name == f"test-{key}"


def test_key_of_a_sam3d_run_is_that_of_before_the_model_setting(smoke_cfg) -> None:
    """``model``/``crop`` (added for the supervised baselines), ``rehearsal`` (the full-mode
    rehearsal), ``preprocessing``, ``interaction_rounds``, ``train_target`` and ``init_from``
    leave the keys of existing sam3d runs as they were; a baseline run, a rehearsal run and an
    official-layout run get their own keys."""
    import hashlib

    doc = {k: v for k, v in smoke_cfg.as_dict().items()
           if k not in ("out_dir", "progress", "tensorboard", "name", "model", "crop", "rehearsal",
                        "preprocessing", "interaction_rounds", "train_target", "init_from")}
    before = hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()
    assert config_key(smoke_cfg) == before[:10]
    baseline = smoke_cfg.replace(model="dynunet_smoke")
    assert config_key(baseline) != config_key(smoke_cfg)
    assert config_key(baseline.replace(crop=32)) != config_key(baseline)
    assert config_key(smoke_cfg.replace(rehearsal=True)) != config_key(smoke_cfg)
    assert config_key(smoke_cfg.replace(variant="tiny_interactive", interaction_rounds=2)) != \
        config_key(smoke_cfg.replace(variant="tiny_interactive"))
    assert config_key(smoke_cfg.replace(train_target="clicked_lesion")) != config_key(smoke_cfg)
    kits = smoke_cfg.replace(dataset="kits")
    assert config_key(kits.replace(preprocessing="official")) != config_key(kits)


def test_trains_once_then_returns_the_same_checkpoint(smoke_cfg, tmp_path) -> None:
    root = tmp_path / "runs"
    ckpt = trained_checkpoint(smoke_cfg, root=root)
    assert ckpt.parent == run_dir(smoke_cfg, root) and ckpt.name in ("best.pt", "last.pt")
    done = json.loads((ckpt.parent / DONE).read_text(encoding="utf-8"))
    assert done["epochs"] == 1 and done["config"]["lr"] == smoke_cfg.lr
    model = load_checkpoint(ckpt)
    assert model.config.name == "tiny"
    stamp = ckpt.stat().st_mtime_ns
    assert trained_checkpoint(smoke_cfg, root=root) == ckpt  # cached: not trained again
    assert ckpt.stat().st_mtime_ns == stamp
    other = trained_checkpoint(smoke_cfg, {"lr": 2e-3}, root=root)  # a new setting: a new folder
    assert other.parent != ckpt.parent and ckpt.stat().st_mtime_ns == stamp


def test_shipped_names_and_overrides_are_resolved_like_the_cli() -> None:
    cfg = load_config("book_smoke", {"max_minutes": 1})
    assert run_dir(cfg, "r") != run_dir(load_config("book_smoke"), "r")
    for config in (load_config("book_smoke"), "book_smoke"):  # strings only at the CLI
        with pytest.raises(TypeError, match="mapping"):
            trained_checkpoint(config, ["lr=1"], root="unused")


@pytest.mark.slow
@pytest.mark.warms_cache
def test_book_smoke_trains_into_the_shared_cache_and_learns() -> None:
    """The book's shared smoke model (≈ 2–3 min, trained once into outputs/runs): every smoke
    chapter reuses it, and ``book_interactive`` starts from it (``init_from``). Collected
    before that test, so neither trains both within its own time."""
    from sam3d.engine.loop import read_metrics
    from sam3d.experiments.training import smoke_model

    run = smoke_model("book_smoke")
    assert (run["run_dir"] / DONE).is_file() and run["checkpoint"].name == "best.pt"
    history = read_metrics(run["run_dir"] / "metrics.csv")
    assert len(history) == run["config"].epochs and max(h["val_dice"] for h in history) > 0.8
    assert smoke_model("book_smoke")["trained_now"] is False  # reused, not retrained
    print(f"\nbook_smoke: {run['seconds']:.0f} s (trained now: {run['trained_now']}), "
          f"val Dice {[round(h['val_dice'], 3) for h in history]}")
