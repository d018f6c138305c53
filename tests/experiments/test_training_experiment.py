"""Chapter 3 (training): the recipe table, the held-out split and evaluation, the curves, the
command lines, and one tiny real run through the train-once cache."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_eval_data import CubeModel, fake_checkpoint, patch_model, write_cases

from sam3d import cli
from sam3d.data.splits import make_split
from sam3d.engine.loop import write_metrics
from sam3d.experiments import training as T
from sam3d.experiments.report import side_by_side


def test_recipe_table_puts_the_paper_recipe_beside_the_smoke_one() -> None:
    paper, smoke = T.recipe_rows(("lits", "kits"))
    p = {r["setting"]: r["value"] for r in paper}
    s = {r["setting"]: r["value"] for r in smoke}
    assert list(p) == list(s)
    # the official train.py recipe (spec §4.3–4.4) against the tiny CPU one
    assert (p["epochs"], p["lr"], p["variant"], p["crop (voxels³, 1 mm)"]) == \
        ("500", "0.0004", "vit_b", "128")
    assert p["dataset"] == "lits / kits" and p["tuning"].startswith("paper")
    assert (s["variant"], s["tuning"], s["crop (voxels³, 1 mm)"], s["dataset"]) == \
        ("tiny", "full", "64", "phantoms")
    table = side_by_side(paper, smoke, on=["setting"], metrics=["value"], mode="smoke")
    assert len(table) == len(p) and table.columns[1] == "value · paper"
    ordered = T.recipe_table("smoke")
    assert list(ordered["setting"]) == list(s)  # the recipe's order, not alphabetical
    assert ordered.set_index("setting").loc["epochs", "value · paper"] == "500"
    with pytest.raises(ValueError, match="dataset"):
        T.recipe_rows(("brats",))


def test_held_out_split_follows_the_checkpoint_not_the_click_seed(tmp_path, monkeypatch) -> None:
    data = write_cases(tmp_path / "ds", 10)
    ckpt = fake_checkpoint(tmp_path / "best.pt", data, seed=0)
    cfg = T.checkpoint_config(ckpt)
    expected = make_split([f"case_{i:02d}" for i in range(10)], seed=0)
    assert T.held_out_ids(cfg) == expected["test"]
    asked = patch_model(monkeypatch, CubeModel(crop=16, half=2))
    a = T.evaluate_held_out(ckpt, tmp_path / "eval", ks=(1,), seed=0, position="centre")
    b = T.evaluate_held_out(ckpt, tmp_path / "eval", ks=(1,), seed=7, position="centre")
    assert a["cases"] == b["cases"] == expected["test"]  # another click seed, the same cases
    assert not set(a["cases"]) & set(expected["train"])
    assert asked == [ckpt, ckpt]
    # a centred 5³ stub cube inside the 11³ lesion: Dice 2·125 / (125 + 1331)
    assert all(r["dice"] == pytest.approx(250 / 1456) for r in a["rows"])
    with pytest.raises(ValueError, match="training configuration"):
        import torch

        torch.save({"extra": {}}, tmp_path / "plain.pt")
        T.checkpoint_config(tmp_path / "plain.pt")


def test_curves_and_their_figure(tmp_path) -> None:
    history = [{"epoch": e, "train_loss": 1 / e, "train_dice": 0.1 * e,
                "val_loss": math.nan if e == 2 else 0.9 / e, "val_dice": 0.05 * e,
                "lr": 1e-3 * (1 - 0.3 * e), "seconds": 2.0} for e in (1, 2, 3)]
    write_metrics(tmp_path / "metrics.csv", history)
    rows = T.curves(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and math.isnan(rows[1]["val_loss"])
    assert isinstance(rows[0]["epoch"], int)
    fig = T.plot_curves(rows, title="t")
    assert len(fig.axes) == 3
    assert len(fig.axes[0].lines[1].get_xdata()) == 2  # the epoch without validation is skipped
    with pytest.raises(FileNotFoundError):
        T.curves(tmp_path / "nothing")
    with pytest.raises(ValueError):
        T.plot_curves([])


def test_command_lines_parse_and_full_mode_runs_the_cli(tmp_path, monkeypatch) -> None:
    parser = cli.build_parser()
    cmd = T.evaluate_command("run/best.pt", "data/prepared/lits", "out", ks=(1, 3, 10),
                             position="margin", refine=5)
    args = parser.parse_args(cmd[1:])
    assert (args.k, args.position, args.refine, args.mode) == ([1, 3, 10], "margin", 5, "roi")
    args = parser.parse_args(T.train_command("kits", "d/kits", "o", resume=True)[1:])
    assert (args.config, args.set, args.out_dir, args.resume) == ("kits", ["data_dir=d/kits"],
                                                                 "o", True)
    with pytest.raises(ValueError, match="dataset"):
        T.train_command("phantoms")
    calls = []
    monkeypatch.setattr(T.subprocess, "run", lambda argv, **kw: calls.append((argv, kw)))
    out = tmp_path / "lits_run"
    res = T.train_full("lits", data_dir=tmp_path / "prepared", out_dir=out)
    assert res["ran"] and calls[0][0][1:4] == ["-m", "sam3d.cli", "train"]
    assert "--resume" not in calls[0][0] and res["run_dir"] == out
    # a finished run (all 500 epochs in metrics.csv) is not trained again
    out.mkdir()
    write_metrics(out / "metrics.csv", [{"epoch": 500, "train_loss": 0, "train_dice": 0,
                                         "val_loss": 0, "val_dice": 0, "lr": 0, "seconds": 0}])
    assert not T.train_full("lits", data_dir=tmp_path / "prepared", out_dir=out)["ran"]
    assert len(calls) == 1


def test_a_tiny_run_trains_once_and_is_reused(tmp_path, monkeypatch) -> None:
    cfg = {"name": "tiny_test", "dataset": "phantoms", "data_dir": str(tmp_path / "phantoms"),
           "phantoms": 3, "phantom_difficulty": 0.0, "phantom_shape": [40, 40, 32],
           "variant": "tiny", "tuning": "full", "epochs": 1, "iterations_per_epoch": 1,
           "device": "cpu", "progress": False, "tensorboard": False,
           "cache_dir": str(tmp_path / "cache")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    monkeypatch.chdir(tmp_path / "..")  # anywhere: the helper runs from the project root
    first = T.smoke_model(str(path), root=tmp_path / "runs")
    assert first["trained_now"] and first["checkpoint"].is_file()
    assert [r["epoch"] for r in T.curves(first["run_dir"])] == [1]
    again = T.smoke_model(str(path), root=tmp_path / "runs")
    assert not again["trained_now"] and again["checkpoint"] == first["checkpoint"]
    res = T.evaluate_held_out(first["checkpoint"], tmp_path / "eval", ks=(1,))
    assert res["cases"] == T.held_out_ids(first["config"])
    assert all(0.0 <= r["dice"] <= 1.0 for r in res["rows"])


def test_chapter_protocol_defaults_and_refusals():
    from sam3d.experiments.training import chapter_protocol, evaluate_command, evaluate_held_out

    assert chapter_protocol("full") == "official" and chapter_protocol("smoke") == "sam3d"
    assert chapter_protocol("full", "sam3d") == "sam3d"
    with pytest.raises(ValueError, match="PROTOCOL must be one of"):
        chapter_protocol("full", "authors")
    with pytest.raises(ValueError, match="no refinement"):
        evaluate_held_out("unused.pt", "out", refine=2, protocol="official")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_held_out("unused.pt", "out", protocol="raw")
    cmd = evaluate_command("best.pt", "data", "out", ks=(1,), protocol="official")
    assert cmd[cmd.index("--protocol") + 1] == "official" and "--mode" not in cmd
