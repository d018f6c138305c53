"""The paper's evaluation protocol, a whole-volume variant and iterative refinement.

Per test case and per ``k`` (1, 3, 10): ``k`` lesion voxels drawn (seeded, with replacement)
from the label resampled to the model's 1 mm grid, a prediction from those clicks (``"roi"``:
one 128³ box centred on them, the official protocol; ``"sliding"``: the whole volume), mapped
back to the label's own grid and thresholded at 0.5; Dice, and NSD at ``tolerance_mm`` on the
original voxel spacing.

Refinement (the protocol of the CVPR 2025 "Foundation Models for Interactive 3D Biomedical
Image Segmentation" challenge, with the paper's first prompt): starting from the ``k = 1``
prediction (whole-volume mode, so a click anywhere counts), up to ``refine`` (the challenge:
5) corrective clicks, each at the deepest voxel of the largest error component
(:func:`sam3d.data.clicks.error_click`): positive on missed lesion, negative on false lesion.
A model with the negative-click extension (``predictor.negative_clicks``) takes both; the
paper's model, like the official one, takes positive points only, so a negative click is
counted but cannot change its prediction (rows say which kind each click was and whether it
was used). Dice, NSD and the wall time of each interaction (the model call, not the click
placement) are reported after every click; per case the areas under the Dice and NSD curves
two ways: ``auc`` (trapezoids over all clicks divided by their number − 1, so a flat curve at x
has area x) and the challenge's ``DSC_AUC`` / ``NSD_AUC`` (trapezoids at unit spacing over
the corrective clicks' scores only, not normalised: at most ``refine − 1``), with the final
DSC and NSD. The clicks go to clicks.json under ``refine-`` + the first click's protocol name
(e.g. ``refine-test-k1``) and are replayed in order from there; the masks after each click are
kept as ``refine<i>`` (written with ``save_masks``). Two differences from the challenge's
script: it takes the largest component of all error voxels together (ours: the larger of the
largest missed and the largest false component, which gives the same click unless the two
touch), and it sets NSD to 0 when DSC ≤ 0.2 (ours reports NSD as measured).

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
    Click,
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
        stored = _stored(replay, entry.case_id, protocol, lesion.shape)
        fallback = False
        if stored is not None:
            clicks = stored.array()
        else:
            clicks, fallback = draw_clicks(lesion, k, entry.case_id, settings, grid)
        result.clicks.append(ClickSet(case=entry.case_id,
                                      points=[tuple(map(int, p)) for p in clicks],
                                      positive=[True] * k, protocol=protocol,
                                      seed=settings.seed, shape=lesion.shape))
        for mode in (m for m in settings.modes if m != "auto"):
            t0 = time.time()
            # the k clicks are one first prompt (a model with click maps keeps them out of its maps)
            prob = predictor.probabilities(data["image"], clicks, mode, first_prompt=len(clicks))
            mask = predictor.to_input_grid(data, prob)
            seconds = time.time() - t0
            d, s = score(mask)
            result.rows.append({"case": entry.case_id, "k": k, "mode": mode, **where,
                                "position_fallback": fallback, "clicks": _fmt(clicks),
                                "clicks_used": predictor.clicks_used,
                                "dice": d, "nsd": s, "seconds": seconds})
            result.masks[f"k{k}_{mode}"] = mask
    if settings.refine:
        # the first click: the stored sequence's, else the stored (or drawn) k = 1 click
        name = refine_protocol(settings.position)
        replayed = _stored(replay, entry.case_id, name, lesion.shape)
        stored = replayed or _stored(replay, entry.case_id, protocol_name(1, settings.position),
                                     lesion.shape)
        first = stored.array()[:1] if stored is not None else \
            draw_clicks(lesion, 1, entry.case_id, settings, grid)[0]
        # the same windows click after click: the predictor decodes their stored embeddings
        result.refinement, placed, masks = _refine(predictor, data, lesion, first, entry,
                                                   settings, score, replayed)
        result.masks.update(masks)
        result.clicks.append(ClickSet.from_clicks(entry.case_id, placed, name, settings.seed,
                                                  lesion.shape))
    return result


def _stored(replay: dict[tuple[str, str], ClickSet] | None, case_id: str, protocol: str,
            shape: tuple[int, ...]) -> ClickSet | None:
    """The replayed clicks of (``case_id``, ``protocol``), if any, checked against the model
    grid ``shape``."""
    stored = (replay or {}).get((case_id, protocol))
    if stored is not None and tuple(stored.shape) != tuple(shape):
        raise ValueError(f"{case_id}: stored clicks are for grid {stored.shape}, "
                         f"the model grid is {tuple(shape)}")
    return stored


def refine_protocol(position: str = "random") -> str:
    """The clicks.json protocol name of a refinement sequence: ``refine-test-k1[-position]``."""
    return "refine-" + protocol_name(1, position)


def _refine(predictor, data, lesion, first, entry, settings, score, replayed=None):
    """The refinement curve from the ``1×3`` model-grid click ``first`` (the k = 1 click):
    ``(rows, placed clicks, {"refine<i>": mask})``; ``replayed``: a stored sequence to follow
    instead of placing clicks."""
    use_negative = predictor.negative_clicks
    placed = [Click(tuple(int(v) for v in first[0]), True)]
    stored = [] if replayed is None else [Click(tuple(p), bool(f)) for p, f in
                                          zip(replayed.points[1:], replayed.positive[1:],
                                              strict=True)]
    prompt = list(placed)
    rows: list[dict] = []
    masks: dict[str, np.ndarray] = {}
    changed = True
    for step in range(settings.refine + 1):
        seconds = 0.0
        if changed:  # an unusable click leaves the prompt, so the result, as it is
            t0 = time.perf_counter()
            prob = predictor.probabilities(data["image"], np.array([c.point for c in prompt]),
                                           "sliding", [int(c.positive) for c in prompt])
            mask = predictor.to_input_grid(data, prob)
            seconds = time.perf_counter() - t0
            pred = prob.numpy() >= 0.5
            d, s = score(mask)
        masks[f"refine{step + 1}"] = mask
        rows.append({"case": entry.case_id, "position": settings.position, "click": step + 1,
                     "dice": d, "nsd": s, "seconds": seconds,
                     "clicks": _fmt(np.array([c.point for c in prompt])),
                     "labels": "".join("+" if c.positive else "-" for c in prompt), "next": ""})
        if step == settings.refine:
            break
        if replayed is not None:
            click = stored[step] if step < len(stored) else None
        else:
            click = error_click(pred, lesion)
        if click is None:  # perfect on the model grid (or the stored sequence ends): flat
            rows.extend({**rows[-1], "click": step + 2 + i, "seconds": 0.0}
                        for i in range(settings.refine - step))
            break
        placed.append(click)
        changed = click.positive or use_negative
        rows[-1]["next"] = ("positive" if click.positive else
                            "negative" if use_negative else "negative (not usable)")
        if changed:
            prompt.append(click)
    return rows, placed, masks


def challenge_auc(values: list[float]) -> float:
    """The CVPR 2025 challenge's area: trapezoids at unit spacing over the corrective clicks'
    scores (``values[1:]``, the first prompt left out), not normalised."""
    v = np.asarray(values, dtype=float)[1:]
    if v.size < 2:
        raise ValueError("the challenge's area needs at least two corrective clicks")
    return float(np.sum((v[1:] + v[:-1]) / 2))


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
