"""The paper's evaluation protocol, a whole-volume variant and iterative refinement.

Per test case and per ``k`` (1, 3, 10): ``k`` lesion voxels drawn (seeded, with replacement)
from the label resampled to the model's 1 mm grid, a prediction from those clicks (``"roi"``:
one 128³ box centred on them, the official protocol; ``"sliding"``: the whole volume), mapped
back to the label's own grid and thresholded at 0.5; Dice, and NSD at ``tolerance_mm`` on the
original voxel spacing.

Refinement (as in the CVPR 2025 interactive 3D segmentation challenge): starting from the
``k = 1`` prediction (whole-volume mode, so a click anywhere counts), up to ``refine`` further
clicks, each at the deepest voxel of the largest error region (:func:`sam3d.data.clicks.
error_click`). The model, like the official one, takes only positive points: a positive click
joins the prompt; a negative click (on a false positive) is counted but cannot change the
prediction, because the model — like the official one — has no negative prompt (rows say
which kind each click was). The curves therefore measure what positive clicks buy. Dice and
NSD are reported after every click, and the area under each curve (trapezoids over the click
index, divided by the number of clicks, so a flat curve at x has area x).

Prompt position (the paper's ablation): ``position="random"`` is the official protocol above;
``"centre"``, ``"adjacent"`` or ``"margin"`` draw the ``k`` clicks instead from that band of the
largest lesion component on the model grid (:func:`sam3d.data.clicks.position_clicks`, with the
model grid's spacing), under the protocol name ``test-k<k>-<position>`` so that a clicks file
keeps the kind of click it holds; the refinement then starts from such a click too (the
stored one when replaying). Rows say the position, and ``position_fallback`` is True when the
adjacent band was empty (tiny lesion) and the nearest depth was used.

``"auto"`` evaluates a prompt-free model (Table 2, supervised baselines) once per case over the
whole volume (sliding windows, no clicks; rows with k = 0).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from ..data.click_store import ClickSet
from ..data.clicks import (
    POSITIONS,
    PositionFallbackWarning,
    case_rng,
    error_click,
    lesion_clicks,
    position_clicks,
)
from ..data.io import load_volume
from ..data.layout import CaseEntry
from ..inference.predictor import MODES, Predictor
from .metrics import dice, nsd

CLICK_POSITIONS = ("random", *POSITIONS)


@dataclass(frozen=True)
class EvalSettings:
    """``ks``: clicks per case; ``modes``: "roi" and/or "sliding"; ``refine``: extra clicks;
    ``tolerance_mm``: NSD tolerance; ``seed``: click seed; ``position``: where the clicks fall,
    "random" (official: any lesion voxel) or one of "centre", "adjacent", "margin"."""

    ks: tuple[int, ...] = (1, 3, 10)
    modes: tuple[str, ...] = ("roi",)
    refine: int = 0
    tolerance_mm: float = 5.0
    seed: int = 0
    position: str = "random"

    def __post_init__(self):
        if not self.ks or any(not isinstance(k, int) or k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive integers, got {self.ks}")
        if not self.modes or any(m not in MODES for m in self.modes):
            raise ValueError(f"modes must be among {MODES}, got {self.modes}")
        if not 0 <= self.refine <= 20:
            raise ValueError(f"refine must be in 0..20, got {self.refine}")
        if self.tolerance_mm <= 0:
            raise ValueError(f"tolerance_mm must be positive, got {self.tolerance_mm}")
        if self.position not in CLICK_POSITIONS:
            raise ValueError(f"position must be one of {CLICK_POSITIONS}, got {self.position!r}")


@dataclass
class CaseResult:
    rows: list[dict]
    refinement: list[dict]
    clicks: list[ClickSet]
    masks: dict[str, np.ndarray]  # "k3_roi" → X×Y×Z uint8 on the label's grid


def protocol_name(k: int, position: str = "random") -> str:
    """``test-k<k>`` (the official random clicks) or ``test-k<k>-<position>``."""
    if position not in CLICK_POSITIONS:
        raise ValueError(f"position must be one of {CLICK_POSITIONS}, got {position!r}")
    return f"test-k{k}" if position == "random" else f"test-k{k}-{position}"


def draw_clicks(lesion: np.ndarray, k: int, case_id: str, settings: EvalSettings,
                spacing: float = 1.0) -> tuple[np.ndarray, bool]:
    """``k×3`` clicks on the model-grid lesion mask ``D×H×W`` for ``settings.position``, seeded
    by (seed, case, protocol name); and whether the adjacent band fell back to nearest depth."""
    rng = case_rng(settings.seed, case_id, protocol_name(k, settings.position))
    if settings.position == "random":
        return lesion_clicks(lesion, k, rng), False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PositionFallbackWarning)
        clicks = position_clicks(lesion, settings.position, k, rng, (float(spacing),) * 3)
    fallback = any(issubclass(w.category, PositionFallbackWarning) for w in caught)
    for w in caught:  # pass on anything else
        if not issubclass(w.category, PositionFallbackWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return clicks, fallback


def evaluate_case(predictor: Predictor, entry: CaseEntry, settings: EvalSettings,
                  replay: dict[tuple[str, str], ClickSet] | None = None,
                  data: dict | None = None) -> CaseResult:
    """Evaluate one case; ``replay`` maps (case, protocol) to stored clicks to reuse;
    ``data``: the case already run through ``predictor.load`` (with its label)."""
    if data is None:
        data = predictor.load(entry.image, entry.label, entry.target)
    lesion = data["label"][0].numpy() > 0.5
    gt_vol = load_volume(entry.label, "label")
    gt = gt_vol.array == entry.target
    spacing = gt_vol.spacing
    grid = getattr(predictor.spec, "spacing", 1.0)  # the model grid's isotropic spacing (mm)

    def score(mask: np.ndarray) -> tuple[float, float]:
        return dice(mask, gt), nsd(mask, gt, spacing, settings.tolerance_mm)

    where = {"position": settings.position}
    result = CaseResult([], [], [], {})
    if "auto" in settings.modes:  # prompt-free: one prediction per case, no clicks
        t0 = time.time()
        mask = predictor.to_input_grid(data, predictor.probabilities(data["image"], None, "auto"))
        d, s = score(mask)
        result.rows.append({"case": entry.case_id, "k": 0, "mode": "auto", "position": "none",
                            "position_fallback": False, "clicks": "", "clicks_used": 0,
                            "dice": d, "nsd": s, "seconds": time.time() - t0})
        result.masks["auto"] = mask
    for k in settings.ks:
        protocol = protocol_name(k, settings.position)
        stored = (replay or {}).get((entry.case_id, protocol))
        fallback = False
        if stored is not None:
            if tuple(stored.shape) != lesion.shape:
                raise ValueError(f"{entry.case_id}: stored clicks are for grid {stored.shape}, "
                                 f"the model grid is {lesion.shape}")
            clicks = stored.array()
        else:
            clicks, fallback = draw_clicks(lesion, k, entry.case_id, settings, grid)
        result.clicks.append(ClickSet(case=entry.case_id,
                                      points=[tuple(map(int, p)) for p in clicks],
                                      positive=[True] * k, protocol=protocol,
                                      seed=settings.seed, shape=lesion.shape))
        for mode in (m for m in settings.modes if m != "auto"):
            t0 = time.time()
            prob = predictor.probabilities(data["image"], clicks, mode)
            mask = predictor.to_input_grid(data, prob)
            seconds = time.time() - t0
            d, s = score(mask)
            result.rows.append({"case": entry.case_id, "k": k, "mode": mode, **where,
                                "position_fallback": fallback, "clicks": _fmt(clicks),
                                "clicks_used": predictor.clicks_used,
                                "dice": d, "nsd": s, "seconds": seconds})
            result.masks[f"k{k}_{mode}"] = mask
    if settings.refine:
        stored = (replay or {}).get((entry.case_id, protocol_name(1, settings.position)))
        first = stored.array()[:1] if stored is not None else \
            draw_clicks(lesion, 1, entry.case_id, settings, grid)[0]
        # the same windows click after click: the predictor decodes their stored embeddings
        result.refinement = _refine(predictor, data, lesion, first, entry, settings, score)
    return result


def _refine(predictor, data, lesion, first, entry, settings, score) -> list[dict]:
    """The refinement curve from the ``1×3`` model-grid click ``first`` (the k = 1 click)."""
    positives = [tuple(int(v) for v in first[0])]
    rows, scored = [], 0
    for step in range(settings.refine + 1):
        if scored != len(positives):  # a negative click leaves the prompt, so the result, as is
            prob = predictor.probabilities(data["image"], np.array(positives), "sliding")
            pred = prob.numpy() >= 0.5
            d, s = score(predictor.to_input_grid(data, prob))
            scored = len(positives)
        rows.append({"case": entry.case_id, "position": settings.position, "click": step + 1,
                     "dice": d, "nsd": s,
                     "clicks": _fmt(np.array(positives)), "next": ""})
        if step == settings.refine:
            break
        click = error_click(pred, lesion)
        if click is None:  # perfect on the model grid: the curve stays flat
            rows.extend({**rows[-1], "click": step + 2 + i}
                        for i in range(settings.refine - step))
            break
        rows[-1]["next"] = "positive" if click.positive else "negative (not usable)"
        if click.positive:
            positives.append(click.point)
    return rows


def area_under_curve(values: list[float]) -> float:
    """Trapezoidal area over click indices 1..n, divided by n − 1 (a flat curve at x → x)."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values")
    if v.size == 1:
        return float(v[0])
    return float(np.sum((v[1:] + v[:-1]) / 2) / (v.size - 1))


def _fmt(clicks: np.ndarray) -> str:
    return ";".join(",".join(str(int(c)) for c in p) for p in np.asarray(clicks).reshape(-1, 3))
