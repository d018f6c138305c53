"""Fitting the click refiner on its own, on a trained model (issue 13; an extension, not the
paper).

A model whose corrective clicks act through the click refiner alone
(``Sam3DConfig.refiner_only``, e.g. ``tiny_interactive_local``) predicts its first prompt
exactly as the model it was started from; only the refiner
(:mod:`sam3d.modeling.click_refiner`) sees the corrections. So the refiner can be fitted after
training with the rest frozen: each training case is predicted once per first click, as the
evaluation does (whole volume, sliding windows), and the refiner then learns, over many cheap
steps, from simulated interaction on those fixed predictions. A step draws one prediction and
a number of rounds in ``1..rounds``; each round places a corrective click where the CVPR 2025
protocol does (the deepest voxel of the largest error component, :func:`error_click`: positive
on missed lesion, negative on false lesion), the earlier rounds without gradient, and the loss
(cross-entropy + Dice) is taken in the refiner's box after the last. Inside a training step of
the whole model the refiner gets a few dozen updates in a smoke run; here it gets hundreds.

Run by :class:`~sam3d.engine.loop.Trainer` after its epochs when ``TrainConfig.refiner_steps``
is set (``epochs: 0`` with ``init_from``: the start's weights as they are, the refiner fitted
on them). Measured in smoke: see the README's negative-click section.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.clicks import error_click, lesion_clicks
from ..data.layout import CaseEntry
from ..inference.predictor import Predictor
from ..modeling.click_refiner import CLAMP
from ..modeling.sam3d import Sam3D

__all__ = ["fit_click_refiner"]

LOG_EVERY = 100


def _first_predictions(predictor: Predictor, cases: Sequence[CaseEntry], prompts: int,
                       pad: int, rng: np.random.Generator) -> list[tuple[torch.Tensor,
                                                                        np.ndarray,
                                                                        torch.Tensor]]:
    """``prompts`` first-click predictions per case: ``(image 1×1×d×h×w, lesion d×h×w bool,
    logits 1×2×d×h×w)`` on the model grid, the logits a blended probability's (0, logit p),
    all cut to the box ``pad`` voxels around the case's lesion (a CT's whole volume, kept
    hundreds of times over, would not fit in memory)."""
    samples = []
    for entry in cases:
        data = predictor.load(str(entry.image), str(entry.label), entry.target)
        lesion = data["label"][0].numpy() > 0.5
        if not lesion.any():
            continue
        where = np.argwhere(lesion)
        box = tuple(slice(max(int(a) - pad, 0), int(z) + pad + 1)
                    for a, z in zip(where.min(0), where.max(0), strict=True))
        image = data["image"][(slice(None, 1), *box)][None].float()
        for _ in range(prompts):
            first = lesion_clicks(lesion, 1, rng)
            prob = predictor.probabilities(data["image"], first, "sliding", [1])[box]
            p = prob.clamp(1 / (1 + np.exp(CLAMP)), 1 / (1 + np.exp(-CLAMP)))
            logit = torch.log(p / (1 - p)).float()
            samples.append((image, lesion[box],
                            torch.stack([torch.zeros_like(logit), logit])[None]))
    return samples


def _loss(logits: torch.Tensor, lesion: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice of the foreground margin ``logits`` (any shape)
    against ``lesion`` (0/1, same shape)."""
    prob = torch.sigmoid(logits)
    dice = (2 * (prob * lesion).sum() + 1) / (prob.sum() + lesion.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, lesion) + 1 - dice


def fit_click_refiner(model: Sam3D, predictor: Predictor, cases: Sequence[CaseEntry],
                      *, steps: int, lr: float, seed: int, prompts: int = 6, rounds: int = 5,
                      log: Callable[[str], None] = print) -> list[dict]:
    """Fit ``model``'s click refiner in place (every other weight unchanged) on ``cases``
    (training cases, through ``predictor``, which wraps ``model``): ``steps`` Adam steps at
    ``lr`` decaying linearly to 5 %, ``prompts`` first clicks per case, up to ``rounds``
    corrective clicks a step, in the box twice the refiner's margin around each case's lesion.
    Deterministic for a ``seed``. Returns ``[{"step", "loss"}]`` (the mean loss of each
    ``LOG_EVERY`` steps)."""
    if not isinstance(model, Sam3D) or not model.config.refiner_only:
        raise ValueError("fit_click_refiner needs a model whose corrective clicks act through "
                         "the click refiner alone (Sam3DConfig.refiner_only)")
    refiner = model.mask_decoder.click_refiner
    assert refiner is not None  # refiner_only needs click_refiner (Sam3DConfig)
    for name, value in (("steps", steps), ("prompts", prompts), ("rounds", rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    rng = np.random.default_rng([seed, 1])
    torch.manual_seed(seed)
    t0 = time.time()
    samples = _first_predictions(predictor, cases, prompts, 2 * refiner.margin, rng)
    if not samples:
        raise ValueError("no training case with lesion to fit the click refiner on")
    log(f"click refiner: {len(samples)} first-click predictions of {len(cases)} cases "
        f"({time.time() - t0:.1f} s)")
    for p in refiner.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.05, steps)
    device = next(refiner.parameters()).device
    history, losses = [], []
    refiner.train()
    for step in range(1, steps + 1):
        image, lesion, first = samples[int(rng.integers(len(samples)))]
        image, first = image.to(device), first.to(device)
        points: list[tuple[int, ...]] = []
        labels: list[int] = []
        logits = first
        for i in range(int(rng.integers(1, rounds + 1))):
            if i:  # the earlier rounds: the refiner's own prediction, no gradient
                with torch.no_grad():
                    logits = refiner(first, image, *_clicks(points, labels, device))
            click = error_click((logits[0, 1] > logits[0, 0]).cpu().numpy(), lesion)
            if click is None:
                break
            points.append(click.point)
            labels.append(int(click.positive))
        if points:
            pts, labs = _clicks(points, labels, device)
            out = refiner(first, image, pts, labs)
            box = refiner.box(pts[0], tuple(first.shape[2:]))
            target = torch.as_tensor(lesion[box], dtype=torch.float32, device=device)
            loss = _loss(out[0, 1][box] - out[0, 0][box], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        schedule.step()
        if step % LOG_EVERY == 0 or step == steps:
            history.append({"step": step, "loss": float(np.mean(losses)) if losses else 0.0})
            losses = []
    refiner.eval()
    log(f"click refiner: {steps} steps, loss {history[0]['loss']:.4f} → "
        f"{history[-1]['loss']:.4f} ({time.time() - t0:.1f} s)")
    return history


def _clicks(points: list[tuple[int, ...]], labels: list[int],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One sample's clicks as ``1×N×3`` float32 points and ``1×N`` labels."""
    return (torch.tensor([points], dtype=torch.float32, device=device),
            torch.tensor([labels], dtype=torch.long, device=device))
