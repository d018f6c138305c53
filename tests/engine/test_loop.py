"""The training loop: a smoke epoch, outputs, refusal to overwrite, kill-and-resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sam3d.checkpoint import load_checkpoint, read_checkpoint_file
from sam3d.engine.loop import Trainer, TrainError, batch_clicks, read_metrics

REPO = Path(__file__).resolve().parents[2]


def _write_yaml(cfg, path: Path, **changes) -> Path:
    d = {k: list(v) if isinstance(v, tuple) else v
         for k, v in cfg.replace(**changes).as_dict().items()}
    path.write_text(yaml.safe_dump(d))
    return path


def _cli(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "sam3d.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_a_bf16_run_trains_under_the_trainers_autocast(smoke_cfg, monkeypatch) -> None:
    """``bf16: true`` is the trainer's: its forward runs under bfloat16 autocast, the model
    computes in it (the encoder's matmuls come out bfloat16) and the loss sees float32."""
    from sam3d.modeling.image_encoder import ImageEncoder3D

    seen: list[torch.dtype] = []
    forward = ImageEncoder3D.forward

    def recording(self, x):
        out = forward(self, x)
        seen.append(out[-1].dtype)
        return out

    monkeypatch.setattr(ImageEncoder3D, "forward", recording)
    history = Trainer(smoke_cfg.replace(bf16=True)).run()
    assert np.isfinite(history[0]["train_loss"]) and np.isfinite(history[0]["val_loss"])
    assert seen and set(seen) == {torch.bfloat16}


def test_one_smoke_epoch_writes_every_output(smoke_cfg) -> None:
    history = Trainer(smoke_cfg).run()
    assert len(history) == 1
    row = history[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert 0.0 <= row["val_dice"] <= 1.0 and row["lr"] == pytest.approx(1e-3)
    out = Path(smoke_cfg.out_dir)
    for name in ("last.pt", "best.pt", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert read_metrics(out / "metrics.csv")[0]["epoch"] == 1.0
    model = load_checkpoint(out / "last.pt", variant="tiny")  # usable for inference as is
    assert model.crop == 64
    # earlier results are never overwritten without --resume …
    with pytest.raises(TrainError, match="--resume"):
        Trainer(smoke_cfg).run()
    # … and resuming a finished run trains nothing more
    before = (out / "last.pt").stat().st_mtime_ns
    assert len(Trainer(smoke_cfg, resume=True).run()) == 1
    assert (out / "last.pt").stat().st_mtime_ns == before


def test_a_run_never_writes_its_phantoms_over_another_runs(smoke_cfg, tmp_path) -> None:
    """The phantoms are drawn with the run's seed: another seed on the same data_dir would
    replace the data an earlier run (and its cached evaluations) used, so it is refused."""
    Trainer(smoke_cfg).run()
    data = Path(smoke_cfg.data_dir)
    before = {f: f.stat().st_mtime_ns for f in data.rglob("*") if f.is_file()}
    other = smoke_cfg.replace(seed=1, out_dir=str(tmp_path / "seed1"))
    with pytest.raises(TrainError, match=r"holds another dataset \(phantoms of other "
                       r"parameters: \{\"seed\": 0\}\).*data_dir=.*phantoms-seed1"):
        Trainer(other).run()
    assert {f: f.stat().st_mtime_ns for f in data.rglob("*") if f.is_file()} == before
    assert not (tmp_path / "seed1" / "last.pt").exists()


@pytest.mark.parametrize("target", ["clicked_lesion", "clicked_lesion_ignore", "centred_lesion"])
def test_a_clicked_lesion_run_trains_and_validates_on_the_clicked_lesion(smoke_cfg, monkeypatch,
                                                                         target) -> None:
    """``train_target: clicked_lesion[_ignore]``: every training and validation forward is
    scored against the one lesion its clicks fall on (sam3d.engine.targets); the other lesions
    are background, or ignored by the loss. ``centred_lesion``: the crops are cut around a
    lesion voxel (sam3d.data.lesion_crops), which is the first click."""
    import sam3d.engine.loop as loop
    import sam3d.engine.targets as targets_module

    calls: list[tuple[int, int]] = []
    ignored: list[int] = []
    targets, ignore_voxels = targets_module.clicked_lesion_targets, loop.ignore_voxels

    def recording(labels, rng, n_lesion, n_random, centred=False):
        calls.append((n_lesion, n_random))
        assert centred == (target == "centred_lesion")
        points, lesion, others = targets(labels, rng, n_lesion, n_random, centred)
        assert torch.equal((lesion > 0) | others, labels > 0.5)
        if centred:  # every crop is centred on a lesion voxel, the first click
            centre = [s // 2 for s in labels.shape[2:]]
            assert all(points[b, 0].tolist() == centre for b in range(len(points)))
            assert bool(labels[:, 0, centre[0], centre[1], centre[2]].all())
        return points, lesion, others

    def ignoring(logits, others):
        ignored.append(int(others.sum()))
        return ignore_voxels(logits, others)

    monkeypatch.setattr(targets_module, "clicked_lesion_targets", recording)
    monkeypatch.setattr(loop, "ignore_voxels", ignoring)
    cfg = smoke_cfg.replace(train_target=target)
    history = Trainer(cfg).run()
    assert np.isfinite(history[0]["train_loss"]) and 0.0 <= history[0]["val_dice"] <= 1.0
    assert (cfg.train_lesion_clicks, cfg.train_random_clicks) in calls  # training
    assert (cfg.val_clicks, 0) in calls  # validation
    assert len(ignored) == (len(calls) if target == "clicked_lesion_ignore" else 0)


def test_case_weights_draw_the_named_cases_that_much_more_often(smoke_cfg, monkeypatch) -> None:
    """``case_weights``: each crop's case drawn with the given weights (the others weigh 1),
    with replacement; a name that is not a training case stops the run before it trains."""
    import sam3d.engine.loop as loop

    cfg = smoke_cfg.replace(iterations_per_epoch=60, case_weights={"phantom_001": 8})
    drawn: list[str] = []
    train: list[str] = []
    original = loop.Trainer._loader

    def recording(self, dataset, epoch):
        loader = original(self, dataset, epoch)
        train.extend(d["case"] for d in dataset.data)
        drawn.extend(dataset.data[i]["case"] for i in loader.sampler)
        return loader

    monkeypatch.setattr(loop.Trainer, "_loader", recording)
    Trainer(cfg).run()
    assert len(drawn) == 60 and "phantom_001" in train and len(train) == 3
    share = drawn.count("phantom_001") / len(drawn)
    expected = 8 / (8 + len(train) - 1)  # 0.8
    print(f"\nphantom_001 drawn for {share:.0%} of the crops (expected {expected:.0%})")
    assert abs(share - expected) < 0.15 and set(drawn) <= set(train)
    with pytest.raises(TrainError, match="phantom_099"):
        Trainer(cfg.replace(case_weights={"phantom_099": 2},
                            out_dir=str(Path(cfg.out_dir) / "other"))).run()


def test_the_schedule_decays_linearly_per_epoch(smoke_cfg) -> None:
    history = Trainer(smoke_cfg.replace(epochs=2, lr_end_factor=0.5, val_every=2)).run()
    assert [r["lr"] for r in history] == pytest.approx([1e-3, 0.75e-3])
    assert np.isnan(history[0]["val_loss"]) and np.isfinite(history[1]["val_loss"])


def test_batch_clicks_follow_the_official_rule() -> None:
    rng = np.random.default_rng(0)
    labels = torch.zeros(2, 1, 8, 8, 8)
    labels[0, 0, 2:4, 2:4, 2:4] = 1
    pts = batch_clicks(labels, rng, 10, 20)
    assert pts.shape == (2, 30, 3)
    first = pts[0, :10].long()
    assert labels[0, 0, first[:, 0], first[:, 1], first[:, 2]].all()  # lesion clicks first
    one = batch_clicks(torch.zeros(1, 1, 8, 8, 8), rng, 10, 20)
    assert one.shape == (1, 20, 3)  # batch 1 without lesion: only the random ones (official)


def _weights(path: Path) -> dict:
    return read_checkpoint_file(path)["state"]


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_run(smoke_cfg, tmp_path) -> None:
    cfg = smoke_cfg.replace(epochs=3, phantoms=6)
    ref = _write_yaml(cfg, tmp_path / "ref.yaml", out_dir=str(tmp_path / "ref"))
    assert _cli("train", "--config", str(ref)).wait(timeout=600) == 0
    run = _write_yaml(cfg, tmp_path / "run.yaml", out_dir=str(tmp_path / "run"))
    proc = _cli("train", "--config", str(run))
    metrics = tmp_path / "run" / "metrics.csv"
    deadline = time.time() + 300
    while not (metrics.is_file() and len(read_metrics(metrics)) >= 1):
        assert proc.poll() is None and time.time() < deadline, "first epoch never finished"
        time.sleep(0.2)
    time.sleep(1.0)  # now inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(read_metrics(metrics)) < 3
    resumed = _cli("train", "--config", str(run), "--resume")
    out = resumed.communicate(timeout=600)[0].decode("utf-8", "replace")
    assert resumed.returncode == 0, out
    assert "resuming" in out
    assert [r["epoch"] for r in read_metrics(metrics)] == [1.0, 2.0, 3.0]
    a, b = _weights(tmp_path / "ref" / "last.pt"), _weights(tmp_path / "run" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # same seed, same result


@pytest.mark.slow
@pytest.mark.parametrize("changes", [
    {},
    # the click refiner acts only on corrective clicks, which each rank draws for itself
    # (0..3 rounds a step): a step can leave its parameters without gradient on one rank
    {"variant": "tiny_interactive_refine", "interaction_rounds": 3},
], ids=["paper", "click_refiner"])
def test_two_process_ddp_on_cpu(changes, smoke_cfg, tmp_path) -> None:
    cfg = _write_yaml(smoke_cfg, tmp_path / "ddp.yaml", phantoms=6, **changes)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m",
                           "sam3d.cli", "train", "--config", str(cfg)], cwd=REPO, env=env,
                          capture_output=True, timeout=600, check=False)
    log = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    assert proc.returncode == 0, log[-3000:]
    out = Path(smoke_cfg.out_dir)
    rows = read_metrics(out / "metrics.csv")
    assert len(rows) == 1 and np.isfinite(rows[0]["train_loss"])
    assert log.count("epoch 1/1") == 1  # only rank 0 reports
    saved = json.loads(json.dumps(
        read_checkpoint_file(out / "last.pt")["extra"]["train"]["config"]))
    assert saved["phantoms"] == 6
