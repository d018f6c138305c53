"""The training loop: the official recipe, seeded, resumable, optionally distributed.

Determinism: the crop sampling (MONAI transform state), the data order and the clicks are
seeded from ``(seed, epoch, rank)`` at the start of every epoch, so a run resumed from the
checkpoint of epoch ``e`` continues exactly as the uninterrupted run would have (on the same
hardware and thread count). Validation uses the same lesion-centred crops and clicks every
epoch (the official code re-draws them unseeded), so its curve is comparable across epochs.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import compute_dice
from monai.utils import set_determinism
from torch.utils.data import DistributedSampler, RandomSampler, WeightedRandomSampler

from ..baselines.networks import BASELINES
from ..build import build_sam3d
from ..data.clicks import case_rng, random_clicks, training_clicks, validation_clicks
from ..data.layout import read_index
from ..data.phantoms import PhantomSpec, write_phantom_dataset
from ..data.pipeline import build_dataset, spec_with_statistics
from ..data.specs import get_spec
from ..data.splits import SplitRef
from ..utils.files import atomic_write, atomic_write_text
from .config import ConfigError, TrainConfig, load_config
from .distributed import DistContext, setup_distributed
from .interaction import click_labels, simulate_interaction
from .optim import build_optimizer, clip_per_group
from .precision import autocast
from .state import load_training_state, save_training_state
from .targets import SAMPLING_OF_TARGET, ignore_voxels, instance_targets, predicted_foreground
from .warm_start import init_chain, init_file, warm_start

METRICS = ("epoch", "train_loss", "train_dice", "val_loss", "val_dice", "lr", "seconds")


class TrainError(RuntimeError):
    """The run cannot start (e.g. it would overwrite an earlier run)."""


def batch_clicks(labels: torch.Tensor, rng: np.random.Generator, n_lesion: int,
                 n_random: int) -> torch.Tensor:
    """Official training prompts for a batch of crops ``B×1×D×H×W`` → ``B×N×3`` (d, h, w).

    Batch 1 is exactly the official rule (``n_lesion`` lesion voxels when the crop has any,
    then ``n_random`` voxels anywhere; only the random ones without lesion). In a larger
    batch every sample needs the same N, so a crop without lesion gets ``n_lesion + n_random``
    random voxels.
    """
    masks = (labels[:, 0] > 0.5).cpu().numpy()
    out = []
    for mask in masks:
        if mask.any() or len(masks) == 1:
            out.append(training_clicks(mask, rng, n_lesion, n_random))
        else:
            out.append(random_clicks(mask.shape, n_lesion + n_random, rng))
    return torch.as_tensor(np.stack(out), dtype=torch.float32)


def _first_prompt(model, points: torch.Tensor) -> dict:
    """``{"first_prompt": N}`` for a model with click maps or a click refiner given the first
    prompt ``B×N×3`` (its clicks are no corrections, :meth:`Sam3D.decode`), else no argument."""
    return {"first_prompt": int(points.shape[1])} \
        if getattr(model, "takes_first_prompt", False) else {}


def _dice(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean foreground Dice of argmax predictions (MONAI ``compute_dice``; empty/empty = 1)."""
    pred = predicted_foreground(logits).float()
    d = compute_dice(pred, (labels > 0.5).float(), include_background=True, ignore_empty=False)
    return float(torch.nan_to_num(d, nan=1.0).mean())


def case_weights(dataset, weights: dict[str, float]) -> list[float]:
    """The weight of each case of the training ``dataset`` (items with a ``"case"`` id), in
    its order: ``weights[case]``, 1 for a case not named. ``TrainError`` when ``weights``
    names a case that is not a training case."""
    cases = [item["case"] for item in dataset.data]
    unknown = sorted(set(weights) - set(cases))
    if unknown:
        raise TrainError(f"case_weights names {unknown}, not among the training cases "
                         f"{sorted(cases)}")
    return [float(weights.get(case, 1.0)) for case in cases]


class Trainer:
    """``Trainer(cfg, resume=False).run()`` trains and returns the metric history."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        self.resume = resume
        self.out = Path(cfg.out_dir)
        self.dist: DistContext = setup_distributed(cfg.device, cfg.progress)
        self.device = self.dist.device

    # ----------------------------------------------------------------------------- set-up
    def _check_output(self) -> None:
        last = self.out / "last.pt"
        if last.exists() and not self.resume:
            raise TrainError(f"{last} exists: pass --resume to continue that run, or choose "
                             "another out_dir (earlier results are never overwritten)")

    def _write_phantoms(self) -> None:
        """Generate the run's phantoms (``phantoms`` > 0) before anything trains, so a data
        folder that would be written over stops the run at once."""
        cfg = self.cfg
        if cfg.phantoms and self.dist.is_main:
            spec = PhantomSpec(shape=cfg.phantom_shape, difficulty=cfg.phantom_difficulty)
            try:  # the phantoms are drawn with the run's seed: never over another run's data
                write_phantom_dataset(cfg.data_dir, cfg.phantoms, seed=cfg.seed, spec=spec,
                                      replace=False)
            except FileExistsError as exc:
                raise TrainError(f"{exc}: give this run a data_dir of its own (--set "
                                 f"data_dir={cfg.data_dir.rstrip('/')}-seed{cfg.seed})") from None
        self.dist.barrier()

    def _data(self, crop: int):
        cfg = self.cfg
        index = read_index(cfg.data_dir)
        split = SplitRef.of(cfg.as_dict()).resolve(cfg.dataset, index.case_ids())
        # statistics (constants, or computed over the training split) are fixed once here and
        # stored in every checkpoint, so prediction preprocesses exactly as training did
        # the training cases with lesion: the statistics' cases, and the click refiner's fit
        self.lesion_cases = [index.cases[i] for i in index.lesion_cases(split["train"])]
        self.spec = spec_with_statistics(get_spec(cfg.dataset), index,
                                         [c.case_id for c in self.lesion_cases], cfg.cache_dir)
        kw: dict[str, Any] = {"crop": crop, "split_file": cfg.split_file, "fold": cfg.fold,
                              "seed": cfg.seed, "cache_dir": cfg.cache_dir,
                              "preprocessing": cfg.preprocessing,
                              # the centred lesion: crops cut around a lesion voxel
                              "sampling": SAMPLING_OF_TARGET.get(cfg.train_target, "paper")}
        train = build_dataset(cfg.data_dir, self.spec, "train", **kw)
        if cfg.case_weights:
            case_weights(train, cfg.case_weights)  # the named cases must be training cases
            if self.dist.world > 1:
                raise TrainError("case_weights is for one process (a distributed run shards "
                                 "the cases): leave it out or train on one device")
        return train, build_dataset(cfg.data_dir, self.spec, "val", **kw)

    def preprocessing(self) -> dict:
        s = self.spec
        assert s.window is not None  # spec_with_statistics (in _data) always sets it
        return {"name": s.name, "window": list(s.window), "mean": s.mean, "std": s.std,
                "spacing": s.spacing, "target": s.target}

    def _model(self):
        cfg = self.cfg
        if cfg.model != "sam3d":  # a supervised baseline: prompt-free, cubic crop
            model = BASELINES[cfg.model].engine_model(cfg.crop)
            return model.to(self.device)
        overrides = {"tuning": cfg.tuning} if cfg.tuning else {}
        model = build_sam3d(cfg.variant, sam_checkpoint=cfg.sam_checkpoint, **overrides)
        model.grad_checkpointing = cfg.grad_checkpointing
        return model.to(self.device)

    def _init_checkpoint(self) -> Path:
        """The checkpoint ``init_from`` names: a file, or a shipped configuration's cached run
        beside this run's folder (trained now if need be, in a single process)."""
        from .cached import DONE, run_dir, trained_checkpoint

        name = self.cfg.init_from
        assert name is not None
        if not init_chain(self.cfg):
            try:
                return init_file(name)
            except ConfigError as exc:  # the run's own error, like every other set-up error
                raise TrainError(str(exc)) from None
        root = self.out.parent
        if self.dist.world > 1 and not (run_dir(load_config(name), root) / DONE).is_file():
            raise TrainError(f"init_from {name!r}: train it first (sam3d train --config "
                             f"{name}); a distributed run does not train its starting point")
        return trained_checkpoint(name, root=root)

    def _loader(self, dataset, epoch: int) -> DataLoader:
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        sampler: DistributedSampler | RandomSampler | WeightedRandomSampler
        if cfg.case_weights:  # each crop's case drawn with the given weights
            assert cfg.iterations_per_epoch is not None  # TrainConfig requires it
            sampler = WeightedRandomSampler(case_weights(dataset, cfg.case_weights),
                                            cfg.iterations_per_epoch * cfg.batch_size,
                                            replacement=True, generator=gen)
        elif self.dist.world > 1:
            sampler = DistributedSampler(dataset, self.dist.world, self.dist.rank, shuffle=True,
                                         seed=cfg.seed)
            sampler.set_epoch(epoch)
        else:
            n = cfg.iterations_per_epoch * cfg.batch_size if cfg.iterations_per_epoch else None
            sampler = RandomSampler(dataset, replacement=n is not None, num_samples=n,
                                    generator=gen)
        dataset.transform.set_random_state(seed=(cfg.seed * 7919 + epoch * 31 + self.dist.rank)
                                           % 2**32)
        if cfg.workers:
            # the workers fork from this process: collect cyclic garbage first, or an earlier
            # loader's iterator inherited by a worker is finalised there and fails noisily
            # ("can only test a child process"; seen with in-process runs one after another)
            gc.collect()
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                          num_workers=cfg.workers, generator=gen)

    # ------------------------------------------------------------------------------- run
    def run(self, until: int | None = None) -> list[dict]:
        """Train (or, with ``resume``, go on training) to the last epoch, or to epoch ``until``
        when given: a run stopped there resumes exactly as if it had not stopped (the epoch's
        seeds and the optimiser and schedule states are in ``last.pt``)."""
        cfg = self.cfg
        if until is not None and (isinstance(until, bool) or not isinstance(until, int)
                                  or until < 1):
            raise ValueError(f"until must be a positive epoch number, got {until!r}")
        if self.dist.is_main:
            self._check_output()
            self.out.mkdir(parents=True, exist_ok=True)
        self._write_phantoms()
        resuming = self.resume and (self.out / "last.pt").exists()
        init = self._init_checkpoint() if cfg.init_from and not resuming else None
        set_determinism(seed=cfg.seed)  # after the init run, which may have trained just now
        torch.manual_seed(cfg.seed)
        model = self._model()
        if init is not None:
            kept = warm_start(model, init, cfg.sam_checkpoint)
            self.dist.log(f"warm start from {init}" + (f" (the extension's {kept} keep their "
                                                       "start)" if kept else ""))
        train_ds, val_ds = self._data(model.crop)
        optimizer, scheduler = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.epochs,
                                               cfg.lr_end_factor)
        start, best, history = 1, math.inf, []
        last = self.out / "last.pt"
        if self.resume and last.exists():
            state = load_training_state(last, model, optimizer, scheduler)
            start, best, history = state["epoch"] + 1, state["best"], state["history"]
            self.dist.log(f"resuming {last} after epoch {state['epoch']}")
        net = self.dist.wrap(model)
        loss_fn = DiceCELoss(include_background=False, softmax=True, to_onehot_y=True,
                             lambda_dice=cfg.lambda_dice, lambda_ce=cfg.lambda_ce)
        writer = self._tensorboard()
        t_run = time.time()
        for epoch in range(start, min(cfg.epochs, until or cfg.epochs) + 1):
            t0 = time.time()
            lr = optimizer.param_groups[0]["lr"]
            tr_loss, tr_dice = self._train_epoch(net, model, train_ds, optimizer, loss_fn, epoch)
            scheduler.step()
            val_loss = val_dice = float("nan")
            if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
                val_loss, val_dice = self._validate(model, val_ds)
            row = {"epoch": epoch, "train_loss": tr_loss, "train_dice": tr_dice,
                   "val_loss": val_loss, "val_dice": val_dice, "lr": lr,
                   "seconds": time.time() - t0}
            history.append(row)
            if self.dist.is_main:
                improved = not math.isnan(val_loss) and val_loss < best
                best = val_loss if improved else best
                kw: dict[str, Any] = {"epoch": epoch, "best": best, "history": history,
                                      "config": cfg.as_dict(),
                                      "preprocessing": self.preprocessing()}
                save_training_state(last, model, optimizer, scheduler, **kw)
                if improved:
                    save_training_state(self.out / "best.pt", model, optimizer, scheduler, **kw)
                write_metrics(self.out / "metrics.csv", history)
                if writer is not None:
                    for key in METRICS[1:]:
                        writer.add_scalar(key, row[key], epoch)
                self.dist.log(f"epoch {epoch}/{cfg.epochs}: loss {tr_loss:.4f} dice "
                              f"{tr_dice:.3f} | val loss {val_loss:.4f} dice {val_dice:.3f} | "
                              f"{row['seconds']:.1f} s")
            self.dist.barrier()
            if cfg.max_minutes and (time.time() - t_run) / 60 > cfg.max_minutes:
                self.dist.log(f"stopping after epoch {epoch}: time budget of "
                              f"{cfg.max_minutes} min reached")
                break
        self._after_epochs(model, optimizer, scheduler, best, history)
        if writer is not None:
            writer.close()
        self.dist.close()
        return history

    def _after_epochs(self, model, optimizer, scheduler, best: float,
                      history: list[dict]) -> None:
        """The curves, and the click refiner's fit once every epoch has run."""
        if self.cfg.refiner_steps and len(history) == self.cfg.epochs:
            if self.dist.is_main:
                self._fit_refiner(model, optimizer, scheduler, best, history)
            self.dist.barrier()
        if self.dist.is_main and history:
            plot_history(history, self.out / "curves.png")

    def _fit_refiner(self, model, optimizer, scheduler, best: float, history: list[dict]) -> None:
        """Fit the click refiner alone on the run's result (best.pt if the epochs wrote one,
        else the start) and write it to best.pt and last.pt (:mod:`sam3d.engine.refiner_fit`);
        nothing when best.pt already holds a fitted refiner (a resumed run)."""
        from ..inference.predictor import Predictor
        from .refiner_fit import fit_click_refiner

        cfg, path = self.cfg, self.out / "best.pt"
        if path.is_file() and load_training_state(path, model, optimizer, scheduler).get("refiner"):
            return
        fitted = fit_click_refiner(model, Predictor(model, self.spec, self.device),
                                   self.lesion_cases,
                                   steps=cfg.refiner_steps, lr=cfg.refiner_lr, seed=cfg.seed,
                                   log=self.dist.log)
        kw: dict[str, Any] = {"epoch": cfg.epochs, "best": best, "history": history,
                              "config": cfg.as_dict(), "preprocessing": self.preprocessing(),
                              "refiner": fitted}
        for name in ("best.pt", "last.pt"):
            save_training_state(self.out / name, model, optimizer, scheduler, **kw)

    def _train_epoch(self, net, model, dataset, optimizer, loss_fn, epoch: int):
        cfg = self.cfg
        net.train()
        rng = np.random.default_rng([cfg.seed, epoch, self.dist.rank])
        losses, dices = [], []
        loader = self._loader(dataset, epoch)
        bar = self.dist.progress(loader, desc=f"epoch {epoch}")
        for batch in bar:
            image = batch["image"].to(self.device).as_tensor()
            label = batch["label"].to(self.device).as_tensor()
            ignore = None
            if cfg.train_target != "crop":  # the clicked lesion alone (engine/targets.py)
                points, label, ignore = instance_targets(
                    cfg.train_target, label, rng, cfg.train_lesion_clicks, cfg.train_random_clicks)
            else:
                points = batch_clicks(label, rng, cfg.train_lesion_clicks,
                                      cfg.train_random_clicks).to(self.device)
            labels = click_labels(label, points) if model.negative_clicks \
                else None
            # a model with click maps keeps the first prompt out of its maps (Sam3D.decode)
            first = _first_prompt(model, points)
            with autocast(self.device, cfg.bf16):  # the run's precision (engine/precision.py)
                if cfg.interaction_rounds:  # simulated interaction (engine/interaction.py)
                    rounds = int(rng.integers(0, cfg.interaction_rounds + 1))
                    points, labels = simulate_interaction(model, image, label, points, labels,
                                                          rounds, rng, **first)
                logits = net(image, points, **first) if labels is None \
                    else net(image, points, labels, **first)
            if ignore is not None:
                logits = ignore_voxels(logits, ignore)
            loss = loss_fn(logits, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_per_group(optimizer, cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
            dices.append(_dice(logits.detach(), label))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(losses):.3f}", dice=f"{np.mean(dices):.3f}")
        return self.dist.mean(losses), self.dist.mean(dices)

    @torch.no_grad()
    def _validate(self, model, dataset) -> tuple[float, float]:
        """Mean Dice loss (official) and Dice on fixed lesion-centred crops with fixed clicks."""
        if not self.dist.is_main:
            return float("nan"), float("nan")
        cfg = self.cfg
        model.eval()
        dataset.transform.set_random_state(seed=cfg.seed)
        loss_fn = DiceLoss(include_background=False, softmax=True, to_onehot_y=True)
        losses, dices = [], []
        for i in range(len(dataset)):
            item = dataset[i]
            item = item[0] if isinstance(item, list) else item
            image = item["image"].as_tensor()[None].to(self.device)
            label = item["label"].as_tensor()[None].to(self.device)
            rng = case_rng(cfg.seed, item["case"], "val")
            ignore = None
            if cfg.train_target != "crop":  # scored as it is trained
                points, label, ignore = instance_targets(cfg.train_target, label, rng,
                                                         cfg.val_clicks, 0)
            else:
                pts = validation_clicks(label[0, 0].cpu().numpy() > 0.5, rng, cfg.val_clicks)
                points = torch.as_tensor(pts, dtype=torch.float32)[None].to(self.device)
            with autocast(self.device, cfg.bf16):
                logits = model(image, points, **_first_prompt(model, points))
            if ignore is not None:
                logits = ignore_voxels(logits, ignore)
            losses.append(float(loss_fn(logits, label)))
            dices.append(_dice(logits, label))
        model.train()
        return float(np.mean(losses)), float(np.mean(dices))

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(log_dir=str(self.out / "tensorboard"))


def write_metrics(path: Path, history: list[dict]) -> None:
    """The whole metric history as CSV, rewritten atomically each epoch."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=METRICS)
    w.writeheader()
    for row in history:
        w.writerow({k: row[k] for k in METRICS})
    atomic_write_text(path, text.getvalue())


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def plot_history(history: list[dict], path: Path) -> Path:
    """Training curves (loss and Dice per epoch) as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    a.plot(ep, [r["train_loss"] for r in history], label="train (Dice+CE)")
    a.plot(ep, [r["val_loss"] for r in history], label="val (Dice loss)")
    b.plot(ep, [r["train_dice"] for r in history], label="train")
    b.plot(ep, [r["val_dice"] for r in history], label="val")
    for ax, title in ((a, "loss"), (b, "Dice")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
    return path
