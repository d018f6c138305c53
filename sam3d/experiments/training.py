"""Chapter 3, training: the paper's recipe beside the smoke recipe, the shared smoke model, its
learning curves and its held-out evaluation; also the helpers the ablation chapters share
(:func:`smoke_model`, :func:`held_out_ids`, :func:`evaluate_held_out`).

Smoke mode trains ``book_smoke`` (the tiny model on synthetic phantoms, ≈ 3 min on 2 CPU cores)
once through :func:`sam3d.engine.cached.trained_checkpoint` and reuses it afterwards. Full mode
runs the paper's recipe with the command line, ``sam3d train --config <dataset>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointError, CheckpointFile, recorded_training_config
from ..config import CONFIGS
from ..data.layout import read_index
from ..data.splits import SplitRef
from ..engine.cached import DONE, run_dir, trained_checkpoint
from ..engine.config import TrainConfig, load_config
from ..engine.loop import read_metrics
from ..provenance import project_path
from .report import side_by_side

SMOKE_CONFIG = "book_smoke"
PAPER_DATASETS = ("kits", "pancreas", "lits", "colon")
RUNS = "outputs/runs"
#: The recipe settings the chapter compares (TrainConfig field names), in display order.
RECIPE_FIELDS = ("dataset", "data_dir", "variant", "sam_checkpoint", "tuning", "epochs",
                 "batch_size", "lr", "lr_end_factor", "weight_decay", "grad_clip", "lambda_dice",
                 "lambda_ce", "train_lesion_clicks", "train_random_clicks", "val_clicks",
                 "iterations_per_epoch", "bf16", "max_minutes")


def _check_dataset(dataset: str) -> str:
    if dataset not in PAPER_DATASETS:
        raise ValueError(f"dataset must be one of {PAPER_DATASETS}, got {dataset!r}")
    return dataset


def _show(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _recipe(cfg: TrainConfig) -> dict[str, str]:
    model = CONFIGS[cfg.variant]
    rows = {f: _show(getattr(cfg, f)) for f in RECIPE_FIELDS}
    rows["tuning"] = cfg.tuning or f"{model.tuning} (the variant's policy)"
    rows["crop (voxels³, 1 mm)"] = str(model.crop)
    return rows


def recipe_rows(paper: tuple[str, ...] = ("lits", "kits"), smoke: str = SMOKE_CONFIG
                ) -> tuple[list[dict], list[dict]]:
    """(paper rows, smoke rows), each ``{"setting", "value"}``, for :func:`side_by_side`.

    The paper rows come from the shipped full-mode configurations of ``paper`` (the official
    ``train.py`` recipe); where they differ (data set and folder) the values are joined.
    """
    if not paper:
        raise ValueError("name at least one paper configuration")
    recipes = [_recipe(load_config(_check_dataset(d), rehearsal=False)) for d in paper]
    run = _recipe(load_config(smoke))
    paper_rows = []
    for key in run:
        values = list(dict.fromkeys(r[key] for r in recipes))
        paper_rows.append({"setting": key, "value": " / ".join(values)})
    return paper_rows, [{"setting": k, "value": v} for k, v in run.items()]


def recipe_table(mode: str, paper: tuple[str, ...] = ("lits", "kits"), run: str = SMOKE_CONFIG):
    """:func:`recipe_rows` as a side-by-side DataFrame, in :data:`RECIPE_FIELDS` order."""
    paper_rows, run_rows = recipe_rows(paper, run)
    table = side_by_side(paper_rows, run_rows, on=["setting"], metrics=["value"], mode=mode)
    order = [r["setting"] for r in run_rows]
    return table.set_index("setting").loc[order].reset_index()


@contextlib.contextmanager
def _at_project_root():
    """Run with the project root as working directory: the shipped recipes name their data
    and cache folders relative to it, and the book build runs notebooks from ``notebooks/``."""
    with contextlib.chdir(project_path(".")):
        yield


def smoke_model(config: str = SMOKE_CONFIG, overrides: Mapping[str, Any] | None = None,
                root: str | Path = RUNS, until: int | None = None) -> dict:
    """The book's shared smoke model, trained on first use (≈ 3 min on 2 cores), else reused.
    ``until``: train only to that epoch (:func:`~sam3d.engine.cached.trained_checkpoint`).

    Returns ``{"checkpoint", "run_dir", "config" (TrainConfig), "trained_now" (True when no
    finished run existed at the call: trained by it, or by a concurrent call it waited for),
    "seconds"}``; the data folder in ``config`` is absolute.
    """
    root = project_path(root)
    with _at_project_root():
        cfg = load_config(config, overrides)
        folder = run_dir(cfg, root)
        trained_now = not (folder / DONE).is_file()
        t0 = time.time()
        checkpoint = trained_checkpoint(cfg, root=root, until=until)
    cfg = cfg.replace(data_dir=str(project_path(cfg.data_dir)), out_dir=str(folder))
    return {"checkpoint": checkpoint, "run_dir": folder, "config": cfg,
            "trained_now": trained_now, "seconds": time.time() - t0}


def checkpoint_config(checkpoint: str | Path | CheckpointFile) -> TrainConfig:
    """The training configuration recorded in a sam3d training checkpoint (a path, or a
    :class:`~sam3d.checkpoint.CheckpointFile` already read)."""
    read = CheckpointFile.of(checkpoint)
    raw = recorded_training_config(read.contents)
    if not raw:
        raise CheckpointError(f"{read.path}: no training configuration recorded (not a training "
                              "checkpoint)")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in raw.items() if k in known})


def held_out_ids(cfg: TrainConfig, data_dir: str | Path | None = None) -> list[str]:
    """The test cases of the split the run trained with (same split file, fold and seed), so
    the evaluation never sees a training case, whatever seed the clicks use."""
    index = read_index(project_path(data_dir or cfg.data_dir))
    split = SplitRef.of(cfg.as_dict()).resolve(cfg.dataset, index.case_ids())
    if not split["test"]:
        raise ValueError(f"{index.root}: the split has no test case")
    return split["test"]


def chapter_protocol(mode: str, protocol: str | None = None) -> str:
    """A chapter's ``PROTOCOL``: as given, else "official" in full mode (the paper's datasets,
    scored the authors' way) and "sam3d" in smoke mode (phantoms and samples)."""
    from ..evaluation.runner import PROTOCOLS

    if protocol is None:
        return "official" if mode == "full" else "sam3d"
    if protocol not in PROTOCOLS:
        raise ValueError(f"PROTOCOL must be one of {PROTOCOLS} or None, got {protocol!r}")
    return protocol


def evaluate_held_out(checkpoint: str | Path, out_dir: str | Path, *, ks=(1,), modes=("roi",),
                      position: str = "random", refine: int = 0, seed: int = 0,
                      data_dir: str | Path | None = None, device: str = "cpu",
                      sam_checkpoint: str | Path | None = None,
                      protocol: str = "sam3d") -> dict:
    """The click protocol on the held-out (test) split of the data the checkpoint trained on.

    ``protocol``: "sam3d" (:func:`sam3d.evaluation.runner.evaluate_dataset`) or "official"
    (:func:`~sam3d.evaluation.runner.evaluate_dataset_official`: one ROI, random clicks, no
    refinement). ``out_dir`` is rewritten (it holds this chapter's latest results). Returns
    the runner's dict plus ``"cases"`` and ``"seconds"``.
    """
    from ..evaluation.protocol import EvalSettings
    from ..evaluation.runner import check_protocol, evaluate_protocol
    from ..inference.predict import load_for_inference

    check_protocol(protocol, refine, position)  # before any file is read
    read = CheckpointFile.read(checkpoint)  # once: the recorded run and the model
    cfg = checkpoint_config(read)
    data = project_path(data_dir or cfg.data_dir)
    ids = held_out_ids(cfg, data)
    model, spec = load_for_inference(read, sam_checkpoint, device=device, data_dir=data)
    t0 = time.time()
    settings = EvalSettings(ks=tuple(ks), modes=tuple(modes), refine=refine, seed=seed,
                            position=position)
    res = evaluate_protocol(protocol, model, spec, data, project_path(out_dir), settings,
                            dataset=cfg.dataset, ids=ids, overwrite=True, device=device,
                            progress=False)
    res["cases"] = sorted({r["case"] for r in res["rows"]})
    res["seconds"] = time.time() - t0
    return res


def curves(run: str | Path) -> list[dict]:
    """The run's ``metrics.csv`` (one row per epoch: losses, Dice, learning rate, seconds)."""
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics (has the run trained an epoch?)")
    return [{**r, "epoch": int(r["epoch"])} for r in read_metrics(path)]


def plot_curves(history: list[dict], title: str = ""):
    """Loss and Dice per epoch (train and validation) and the learning rate; returns the figure."""
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("no epochs to plot")
    ep = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.3), constrained_layout=True)
    for ax, key, what in ((axes[0], "loss", "loss"), (axes[1], "dice", "Dice")):
        ax.plot(ep, [r[f"train_{key}"] for r in history], "o-", ms=3, label="train")
        val = [(e, r[f"val_{key}"]) for e, r in zip(ep, history, strict=True)
               if not math.isnan(r[f"val_{key}"])]
        if val:
            ax.plot(*zip(*val, strict=True), "s-", ms=3, label="validation")
        ax.set_title(what)
        ax.legend()
    axes[0].set_ylabel("train: Dice+CE · val: Dice loss")
    axes[2].plot(ep, [r["lr"] for r in history], "k.-")
    axes[2].set_title("learning rate (linear decay)")
    for ax in axes:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def train_command(dataset: str, data_dir: str | Path | None = None,
                  out_dir: str | Path | None = None, resume: bool = False,
                  sam_checkpoint: str | Path | None = None) -> list[str]:
    """``sam3d train --config <dataset>`` (the paper's recipe), as an argument list."""
    cmd = ["sam3d", "train", "--config", _check_dataset(dataset)]
    if data_dir is not None:
        cmd += ["--set", f"data_dir={data_dir}"]
    if sam_checkpoint is not None:
        cmd += ["--set", f"sam_checkpoint={sam_checkpoint}"]
    if out_dir is not None:
        cmd += ["--out-dir", str(out_dir)]
    return cmd + (["--resume"] if resume else [])


def evaluate_command(checkpoint: str | Path, data_dir: str | Path, out: str | Path,
                     ks=(1, 3, 10), position: str = "random", refine: int = 0,
                     protocol: str = "sam3d") -> list[str]:
    """The ``sam3d evaluate`` command line of the held-out evaluation."""
    cmd = ["sam3d", "evaluate", "--checkpoint", str(checkpoint), "--data", str(data_dir),
           "--k", *map(str, ks)]
    cmd += ["--protocol", "official"] if protocol == "official" else ["--mode", "roi"]
    cmd += ["--out", str(out)]
    if position != "random":
        cmd += ["--position", position]
    if refine:
        cmd += ["--refine", str(refine)]
    return cmd


def shell(cmd: list[str]) -> str:
    """``cmd`` as one shell line, as it runs here: with ``SAM3D_REHEARSAL=1`` in front during
    a rehearsal (the switch that shrinks the recipe, :mod:`sam3d.rehearsal`)."""
    from ..rehearsal import ENV, active

    return (f"{ENV}=1 " if active() else "") + shlex.join(cmd)


def full_checkpoint(dataset: str) -> Path:
    """Where ``sam3d train --config <dataset>`` leaves its best checkpoint (the recipe's
    ``out_dir``; under ``outputs/rehearsal/`` in a rehearsal)."""
    return project_path(load_config(_check_dataset(dataset)).out_dir) / "best.pt"


def train_full(dataset: str, data_dir: str | Path | None = None,
               out_dir: str | Path | None = None,
               sam_checkpoint: str | Path | None = None) -> dict:
    """Full mode: run ``sam3d train --config <dataset>`` (GPU, prepared data, SAM weights) from
    the project root; resumes an interrupted run and skips a finished one. Returns the run's
    folder, checkpoint, configuration, the command and whether it ran (``ran``).

    Every chapter that needs the paper's model of ``dataset`` calls this, so the first trains
    it and the others reuse it. In a rehearsal (:mod:`sam3d.rehearsal`) the recipe is the
    shrunk one and the run lands under ``outputs/rehearsal/``.
    """
    given = {"data_dir": data_dir, "sam_checkpoint": sam_checkpoint, "out_dir": out_dir or None}
    cfg = load_config(_check_dataset(dataset),
                      {k: v for k, v in given.items() if v is not None})
    out = project_path(cfg.out_dir)
    history = read_metrics(out / "metrics.csv") if (out / "metrics.csv").is_file() else []
    finished = bool(history) and history[-1]["epoch"] >= cfg.epochs
    cmd = train_command(dataset, data_dir, out_dir, resume=(out / "last.pt").is_file(),
                        sam_checkpoint=sam_checkpoint)
    if not finished:
        argv = [sys.executable, "-m", "sam3d.cli", *cmd[1:]]
        subprocess.run(argv, cwd=project_path("."), check=True)
    best = out / "best.pt"
    return {"run_dir": out, "checkpoint": best if best.is_file() else out / "last.pt",
            "command": shell(cmd), "config": cfg, "ran": not finished}
