"""Evaluate a checkpoint on a prepared dataset and write the results.

Outputs in ``out_dir``: ``per_case.csv`` (case, k, mode, click position, whether the position
band fell back, clicks on the model grid, clicks used, Dice, NSD, seconds), ``summary.csv``
(mean and standard deviation per click position, mode and k),
``refinement.csv`` and ``refinement_summary.csv`` (Dice/NSD after each click and the areas
under the curves) when refinement is on, ``clicks.json`` (every click, for exact replay with
``clicks=``) and, with ``save_masks``, ``masks/<case>_k<k>_<mode>.nii.gz`` in the label's
geometry. Every file is written atomically; an existing result folder is refused unless
``overwrite`` is set, so earlier results are never lost.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from ..data.click_store import load_clicks, save_clicks
from ..data.io import load_volume
from ..data.layout import read_index
from ..data.specs import DatasetSpec
from ..data.splits import resolve_split
from ..inference.geometry import save_mask
from ..inference.predictor import Predictor
from .protocol import EvalSettings, area_under_curve, evaluate_case

ROW_FIELDS = ("case", "k", "mode", "position", "position_fallback", "clicks", "clicks_used",
              "dice", "nsd", "seconds")


def evaluate_dataset(model, spec: DatasetSpec, data_dir: str | Path, out_dir: str | Path,
                     settings: EvalSettings, *, part: str = "test", ids: list[str] | None = None,
                     split_file: str | Path | None = None, clicks: str | Path | None = None,
                     save_masks: bool = False, overwrite: bool = False, device="cpu",
                     progress: bool = True, split_seed: int | None = None) -> dict:
    """Run :func:`evaluate_case` over a split; returns the summary rows and file paths.

    The split is ``ids``, else ``split_file``, else the official fold, else the seeded split of
    :func:`~sam3d.data.splits.resolve_split` with ``split_seed`` — give the *training* run's
    seed there (the CLI reads it from the checkpoint), or a test case may be one the model was
    trained on. ``None`` falls back to ``settings.seed`` (the click seed).
    """
    out = Path(out_dir)
    if (out / "per_case.csv").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds results; choose another folder or overwrite")
    index = read_index(data_dir)
    if ids is None:
        seed = settings.seed if split_seed is None else split_seed
        ids = resolve_split(spec.name, index.case_ids(), split_file=split_file, seed=seed)[part]
    unknown = [i for i in ids if i not in index.cases]
    if unknown:
        raise KeyError(f"{index.root}: unknown case(s) {unknown[:5]}")
    ids = index.lesion_cases(ids)  # the protocol needs a lesion to click on
    if not ids:
        raise ValueError(f"{index.root}: no test case with a lesion")
    replay = {(c.case, c.protocol): c for c in load_clicks(clicks)} if clicks else None
    predictor = Predictor(model, spec, device)
    rows, refinement, click_sets = [], [], []
    out.mkdir(parents=True, exist_ok=True)
    iterator = ids
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ids, desc="evaluate", unit="case")
    for case_id in iterator:
        entry = index.cases[case_id]
        res = evaluate_case(predictor, entry, settings, replay)
        rows += res.rows
        refinement += res.refinement
        click_sets += res.clicks
        if save_masks:
            reference = load_volume(entry.label, "label")
            (out / "masks").mkdir(exist_ok=True)
            for key, mask in res.masks.items():
                save_mask(mask, reference, out / "masks" / f"{case_id}_{key}.nii.gz")
    summary = summarise(rows)
    write_csv(out / "per_case.csv", rows, ROW_FIELDS)
    write_csv(out / "summary.csv", summary, list(summary[0]))
    save_clicks(out / "clicks.json", click_sets)
    files = {"per_case": out / "per_case.csv", "summary": out / "summary.csv",
             "clicks": out / "clicks.json"}
    if refinement:
        ref_summary = summarise_refinement(refinement)
        write_csv(out / "refinement.csv", refinement, list(refinement[0]))
        write_csv(out / "refinement_summary.csv", ref_summary, list(ref_summary[0]))
        files["refinement"] = out / "refinement.csv"
        files["refinement_summary"] = out / "refinement_summary.csv"
    return {"summary": summary, "rows": rows, "refinement": refinement, "files": files}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation of Dice and NSD per (position, mode, k), positions in the
    order met; a row without a position counts as the official random clicks."""
    out = []
    for position in _positions(rows):
        for mode in sorted({r["mode"] for r in rows}):
            for k in sorted({r["k"] for r in rows}):
                sel = [r for r in rows if r["mode"] == mode and r["k"] == k
                       and r.get("position", "random") == position]
                if not sel:
                    continue
                d, s = np.array([r["dice"] for r in sel]), np.array([r["nsd"] for r in sel])
                out.append({"position": position, "mode": mode, "k": k, "cases": len(sel),
                            "dice_mean": float(d.mean()), "dice_std": float(d.std()),
                            "nsd_mean": float(s.mean()), "nsd_std": float(s.std()),
                            "seconds_mean": float(np.mean([r["seconds"] for r in sel]))})
    return out


def summarise_refinement(rows: list[dict]) -> list[dict]:
    """Mean Dice/NSD after each click, and the mean per-case areas under the curves, per
    position of the first click."""
    out = []
    for position in _positions(rows):
        sel = [r for r in rows if r.get("position", "random") == position]
        cases = sorted({r["case"] for r in sel})
        for c in sorted({r["click"] for r in sel}):
            at = [r for r in sel if r["click"] == c]
            out.append({"position": position, "click": c,
                        "dice_mean": float(np.mean([r["dice"] for r in at])),
                        "nsd_mean": float(np.mean([r["nsd"] for r in at]))})
        auc_d = [area_under_curve([r["dice"] for r in sel if r["case"] == c]) for c in cases]
        auc_s = [area_under_curve([r["nsd"] for r in sel if r["case"] == c]) for c in cases]
        out.append({"position": position, "click": "auc", "dice_mean": float(np.mean(auc_d)),
                    "nsd_mean": float(np.mean(auc_s))})
    return out


def _positions(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("position", "random") for r in rows))


def write_csv(path: Path, rows: list[dict], fields) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        w.writerows({k: r.get(k) for k in fields} for r in rows)
    tmp.replace(path)
    return path
