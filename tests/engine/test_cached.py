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
    rehearsal), ``preprocessing``, ``interaction_rounds``, ``train_target``, ``init_from``,
    ``case_weights``, ``refiner_steps`` and ``refiner_lr`` leave the keys of existing sam3d
    runs as they were; a baseline run, a rehearsal run and an official-layout run get their
    own keys."""
    import hashlib

    doc = {k: v for k, v in smoke_cfg.as_dict().items()
           if k not in ("out_dir", "progress", "tensorboard", "name", "model", "crop", "rehearsal",
                        "preprocessing", "interaction_rounds", "train_target", "init_from",
                        "case_weights", "refiner_steps", "refiner_lr")}
    before = hashlib.sha256(json.dumps(doc, sort_keys=True, default=list).encode()).hexdigest()
    assert config_key(smoke_cfg) == before[:10]
    baseline = smoke_cfg.replace(model="dynunet_smoke")
    assert config_key(baseline) != config_key(smoke_cfg)
    assert config_key(baseline.replace(crop=32)) != config_key(baseline)
    assert config_key(smoke_cfg.replace(rehearsal=True)) != config_key(smoke_cfg)
    assert config_key(smoke_cfg.replace(variant="tiny_interactive", interaction_rounds=2)) != \
        config_key(smoke_cfg.replace(variant="tiny_interactive"))
    assert config_key(smoke_cfg.replace(train_target="clicked_lesion")) != config_key(smoke_cfg)
    local = smoke_cfg.replace(variant="tiny_interactive_local")
    assert config_key(local.replace(refiner_steps=5)) != config_key(local)
    assert config_key(local.replace(refiner_steps=5, refiner_lr=1e-3)) != \
        config_key(local.replace(refiner_steps=5))
    weighted = smoke_cfg.replace(iterations_per_epoch=4)
    assert config_key(weighted.replace(case_weights={"phantom_000": 3})) != config_key(weighted)
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


def test_a_run_trained_in_parts_is_the_uninterrupted_run(smoke_cfg, tmp_path) -> None:
    """``until``: a run trained to epoch 1, then on to the end, is finished only then and
    holds the weights of the same run trained at once; a part asked for again trains nothing."""
    import torch

    from sam3d.engine.loop import Trainer, read_metrics

    cfg = smoke_cfg.replace(epochs=2)
    whole = trained_checkpoint(cfg, root=tmp_path / "whole")
    folder = run_dir(cfg, tmp_path / "parts")
    trained_checkpoint(cfg, root=tmp_path / "parts", until=1)
    assert not (folder / DONE).is_file()
    assert [r["epoch"] for r in read_metrics(folder / "metrics.csv")] == [1.0]
    stamp = (folder / "last.pt").stat().st_mtime_ns
    trained_checkpoint(cfg, root=tmp_path / "parts", until=1)  # done already: nothing trained
    assert (folder / "last.pt").stat().st_mtime_ns == stamp
    parts = trained_checkpoint(cfg, root=tmp_path / "parts")
    assert (folder / DONE).is_file() and parts.name == whole.name
    assert json.loads((folder / DONE).read_text())["epochs"] == 2
    a, b = (torch.load(p, map_location="cpu", weights_only=True)["state"] for p in (whole, parts))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(ValueError, match="until must be a positive epoch"):
        Trainer(cfg.replace(out_dir=str(tmp_path / "x"))).run(until=0)


def _real_part(until: int | None) -> dict:
    from sam3d.engine.loop import read_metrics
    from sam3d.experiments.real_ct import real_model

    run = real_model(until=until)
    history = read_metrics(run["run_dir"] / "metrics.csv")
    epochs, total = len(history), run["config"].epochs
    assert [int(h["epoch"]) for h in history] == list(range(1, epochs + 1))
    assert epochs >= (until or total)  # trained to there (or further, by an earlier run)
    assert (run["run_dir"] / DONE).is_file() == (epochs == total)
    print(f"\nbook_real to epoch {epochs}: {run['seconds']:.0f} s (trained now: "
          f"{run['trained_now']}), val Dice {[round(h['val_dice'], 3) for h in history]}")
    return run


@pytest.mark.slow
@pytest.mark.warms_cache
def test_book_real_first_part_trains_on_real_ct_from_book_smoke() -> None:
    """The book's real-CT model (20 epochs, ≈ 9 min on 2 cores) is trained by three tests in
    parts, one uninterrupted run (trained_checkpoint's ``until``), each within a test's time;
    collected after book_smoke's test, which it starts from."""
    run = _real_part(7)
    assert run["config"].init_from == "book_smoke" and run["config"].variant == "tiny_maps"


@pytest.mark.slow
@pytest.mark.warms_cache
def test_book_real_second_part() -> None:
    _real_part(14)


@pytest.mark.slow
@pytest.mark.warms_cache
def test_book_real_segments_held_out_real_lesions() -> None:
    """The finished book_real segments LiTS 117 lesions it never saw far better than the
    phantom-only book_smoke: mean 1-click Dice per held-out lesion (chapter 8's protocol)."""
    from sam3d.experiments.real_ct import lesion_scores
    from sam3d.experiments.training import smoke_model

    run = _real_part(None)
    assert smoke_model("book_real")["trained_now"] is False  # reused, not retrained
    smoke = smoke_model("book_smoke")["checkpoint"]
    res = lesion_scores({"book_real": run["checkpoint"], "book_smoke": smoke},
                        run["run_dir"] / "test_scores", lesions=run["lesions"], ks=(1,))
    mean = res["summary"].set_index("model")["mean Dice"]
    print(f"1-click mean Dice per held-out lesion: book_real {mean['book_real']:.1f} %, "
          f"book_smoke {mean['book_smoke']:.1f} %")
    assert mean["book_real"] > 45.0 and mean["book_real"] > mean["book_smoke"] + 40.0
