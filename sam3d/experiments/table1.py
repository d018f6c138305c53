"""Table 1: supervised baselines, SAM 2D slice-wise and 3DSAM-adapter with 1 / 3 / 10 clicks.

Every function returns plain rows ``{"method", "prompt", "dataset", "dice", "nsd", "run"}``
(Dice and NSD in percent, as the paper) that :func:`table1` puts beside the paper's rows.
``method``/``prompt`` name the paper row a result stands for ("SAM-B", "1 pt/slice"); ``run``
says what was actually run (which weights, which model, which data), so a smoke stand-in is
never mistaken for the paper's setting.

* :func:`sam2d_rows` — SAM 2D slice by slice, k points per lesion slice, any SAM-format
  checkpoint (MobileSAM here, SAM ViT-B in full mode), cached by content
  (:mod:`sam3d.baselines.sam2d_cache`);
* :func:`promptable_rows` — our model with k clicks per volume (the official ROI protocol);
* :func:`automatic_rows` — a prompt-free model (a supervised baseline trained with
  ``sam3d train --set model=…``) over the whole volume;
* :func:`score_folder` — masks written by another program (nnU-Net's predictions of
  ``imagesTs``) scored with the same Dice and NSD;
* :func:`smoke_baseline_checkpoint` — the smoke DynUNet (**not nnU-Net**) trained once on the
  book's phantoms and reused;
* :func:`held_out_lesion_cases` — the test cases (with a lesion) of the split a checkpoint
  trained with, whatever seed the clicks use;
* :func:`dice_curves` — Dice against k per dataset, from paper or run rows (the chapter's
  figure).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..checkpoint import CheckpointFile, split_reference
from ..reference import DATASET_COLUMNS, paper_metric, paper_rows

DATASETS = tuple(DATASET_COLUMNS)  # kits, pancreas, lits, colon
#: the paper rows whose SAM-B numbers are shown (the SAM 2D run here is on a liver case)
SAM_DATASETS = ("lits",)
SMOKE_BASELINE = "dynunet_smoke"


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """``ks`` as distinct positive integers (clicks per slice or per volume)."""
    try:
        out = tuple(ks)
    except TypeError:
        raise ValueError(f"ks must be a sequence of positive integers, got {ks!r}") from None
    if not out or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1
                      for k in out) or len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct positive integers, got {ks!r}")
    return tuple(int(k) for k in out)


def prompt_label(k: int, per: str) -> str:
    """The paper's prompt column: ``"1 pt/slice"``, ``"3 pts/volume"`` …"""
    if per not in ("slice", "volume"):
        raise ValueError(f"per must be 'slice' or 'volume', got {per!r}")
    return f"{k} pt{'s' if k > 1 else ''}/{per}"


def prompt_k(label: str, per: str) -> int | None:
    """``k`` of a prompt label of :func:`prompt_label` ("3 pts/volume" → 3 for ``per``
    "volume"); None for any other label ("none", another ``per``)."""
    prompt_label(1, per)  # validates per
    head, _, tail = label.partition(" ")
    if not head.isdigit() or int(head) < 1 or label != prompt_label(int(head), per):
        return None
    return int(head)


def dice_curves(rows: Sequence[dict], method: str, per: str,
                ks: Sequence[int] | None = None) -> dict[str, dict]:
    """Dice against k for the rows of ``method`` with prompts "k pt(s)/``per``" (paper rows of
    :func:`paper_table1` or run rows), one curve per dataset (sorted).

    Returns ``{dataset: {"k": [...], "dice": [...], "run": str}}``, k increasing and limited
    to ``ks`` when given; ``run`` is the first row's ``run`` ("" for paper rows).
    """
    wanted = None if ks is None else set(check_ks(ks))
    points: dict[str, list[tuple[int, float, str]]] = {}
    for row in rows:
        k = prompt_k(row["prompt"], per) if row["method"] == method else None
        if k is None or (wanted is not None and k not in wanted) or row["dice"] is None:
            continue
        points.setdefault(row["dataset"], []).append((k, row["dice"], row.get("run", "")))
    curves = {}
    for dataset in sorted(points):
        pts = sorted(points[dataset], key=lambda p: p[0])
        if len({k for k, _, _ in pts}) != len(pts):
            raise ValueError(f"{method}, {dataset}: more than one row per k")
        curves[dataset] = {"k": [k for k, _, _ in pts], "dice": [d for _, d, _ in pts],
                           "run": points[dataset][0][2]}
    return curves


def held_out_lesion_cases(checkpoint: str | Path, data_dir: str | Path) -> list[str]:
    """The test cases of the prepared dataset ``data_dir`` in the split ``checkpoint`` trained
    with (its split file, fold and seed, not the seed of the clicks), those with a lesion."""
    from ..data.layout import read_index
    from .training import checkpoint_config, held_out_ids

    index = read_index(data_dir)
    return index.lesion_cases(held_out_ids(checkpoint_config(checkpoint), index.root))


def paper_table1(datasets: Sequence[str] = DATASETS,
                 sam_datasets: Sequence[str] = SAM_DATASETS) -> list[dict]:
    """The paper's Table 1 as long rows: one per (method, prompt, dataset); SAM-B rows only
    for ``sam_datasets``."""
    for name in (*datasets, *sam_datasets):
        if name not in DATASET_COLUMNS:
            raise ValueError(f"unknown dataset {name!r}; known: {DATASETS}")
    rows = []
    for row in paper_rows("table1"):
        for dataset in (sam_datasets if row["method"] == "SAM-B" else datasets):
            rows.append({"method": row["method"], "prompt": row["prompt"], "dataset": dataset,
                         "dice": paper_metric(row, dataset, "dice"),
                         "nsd": paper_metric(row, dataset, "nsd")})
    return rows


def _pct(value: float) -> float:
    return round(100.0 * float(value), 2)


def sam2d_rows(weights: str | Path, entries: Sequence, *, ks: Sequence[int] = (1, 3, 10),
               seed: int = 0, root: str | Path = "outputs/sam2d", encoder: str = "tiny_vit",
               dataset: str = "lits", run: str = "", refresh: bool = False,
               slab: int | None = None) -> list[dict]:
    """SAM 2D slice-wise on each case of ``entries`` (:class:`~sam3d.data.layout.CaseEntry`),
    k points per lesion slice; the mean over cases per k, as paper rows "SAM-B, k pt/slice".

    Each case's result is cached by content under ``root``; the returned rows say in
    ``cached`` how many cases came from the cache, and in ``seconds`` what computing them
    cost (the original run's time for cached ones). ``slab``: only that many slices through
    each lesion (:func:`sam3d.baselines.sam2d.lesion_slab`; None: every slice).
    """
    from ..baselines.sam2d_cache import cached_evaluate_case

    ks = check_ks(ks)
    entries = list(entries)
    if not entries:
        raise ValueError("no case to run the SAM 2D baseline on")
    per_case = []
    for entry in entries:
        res = cached_evaluate_case(weights, entry, ks, seed, root=root, encoder=encoder,
                                   refresh=refresh, slab=slab)
        per_case.append((res["cached"], res["rows"]))
    rows = []
    for k in ks:
        sel = [r for _, case_rows in per_case for r in case_rows if r["k"] == k]
        rows.append({"method": "SAM-B", "prompt": prompt_label(k, "slice"), "dataset": dataset,
                     "dice": _pct(np.mean([r["dice"] for r in sel])),
                     "nsd": _pct(np.mean([r["nsd"] for r in sel])),
                     "run": run or f"SAM 2D ({encoder}), {len(entries)} case(s)",
                     "cases": len(sel), "cached": sum(c for c, _ in per_case),
                     "seconds": round(float(sum(r["seconds"] for r in sel)), 1)})
    return rows


def _summary_rows(summary: list[dict], method: str, dataset: str, run: str,
                  per: str | None) -> list[dict]:
    return [{"method": method, "prompt": prompt_label(s["k"], per) if per else "none",
             "dataset": dataset, "dice": _pct(s["dice_mean"]), "nsd": _pct(s["nsd_mean"]),
             "run": run, "cases": s["cases"]} for s in summary
            # the official random clicks ("none": a prompt-free row)
            if s.get("position", "random") in ("random", "none")]


def promptable_rows(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path, *,
                    ks: Sequence[int] = (1, 3, 10), seed: int = 0, dataset: str = "phantoms",
                    run: str = "", part: str = "test", ids: list[str] | None = None,
                    sam_checkpoint: str | Path | None = None, spec_dataset: str | None = None,
                    device: str = "cpu", protocol: str = "sam3d") -> list[dict]:
    """Our model with k clicks per volume (official ROI protocol) on ``part`` (or ``ids``) of
    the prepared dataset ``data_dir`` (the checkpoint's training split); rows "3DSAM-adapter,
    k pt/volume". ``protocol``: "sam3d" or "official" (the authors' ``test.py`` path,
    :mod:`sam3d.evaluation.official`). Results (per case, clicks) are written to ``out_dir``
    (replaced: the run is seeded)."""
    from ..evaluation.protocol import EvalSettings
    from ..evaluation.runner import evaluate_protocol
    from ..inference.predict import load_for_inference

    read = CheckpointFile.read(checkpoint)  # once: the model and its recorded split
    model, spec = load_for_inference(read, sam_checkpoint, spec_dataset, device,
                                     data_dir=data_dir)
    settings = EvalSettings(ks=check_ks(ks), modes=("roi",), seed=seed)
    res = evaluate_protocol(protocol, model, spec, data_dir, out_dir, settings,
                            dataset=spec_dataset, part=part, ids=ids,
                            split=split_reference(read.contents),
                            overwrite=True, device=device, progress=False)
    return _summary_rows(res["summary"], "3DSAM-adapter", dataset, run or str(checkpoint),
                         "volume")


def automatic_rows(checkpoint: str | Path, data_dir: str | Path, out_dir: str | Path, *,
                   method: str, dataset: str = "phantoms", run: str = "", part: str = "test",
                   ids: list[str] | None = None, seed: int = 0, device: str = "cpu",
                   ) -> list[dict]:
    """A prompt-free model (``sam3d evaluate --mode auto``: sliding windows over the whole
    volume, no clicks) on ``part`` of ``data_dir`` (the checkpoint's training split); one row
    with prompt "none"."""
    from ..evaluation.protocol import EvalSettings
    from ..evaluation.runner import evaluate_dataset
    from ..inference.predict import load_for_inference

    if not method:
        raise ValueError("method must name the row (e.g. 'Swin-UNETR')")
    read = CheckpointFile.read(checkpoint)  # once: the model and its recorded split
    model, spec = load_for_inference(read, None, None, device, data_dir=data_dir)
    settings = EvalSettings(ks=(1,), modes=("auto",), seed=seed)
    res = evaluate_dataset(model, spec, data_dir, out_dir, settings, part=part, ids=ids,
                           split=split_reference(read.contents),
                           overwrite=True, device=device, progress=False)
    return _summary_rows(res["summary"], method, dataset, run or str(checkpoint), None)


def score_folder(predictions: str | Path, labels: str | Path, *, method: str = "nnU-Net",
                 dataset: str = "lits", run: str = "", tolerance_mm: float = 5.0) -> list[dict]:
    """Score binary masks written by another program (nnU-Net's ``nnUNetv2_predict`` output)
    against the binary labels of the same file names (``labelsTs`` of the nnU-Net export):
    mean Dice and NSD at ``tolerance_mm`` on each label's own spacing; one row."""
    from ..data.io import load_volume
    from ..evaluation.metrics import dice, nsd

    pred_dir, label_dir = Path(predictions), Path(labels)
    for folder in (pred_dir, label_dir):
        if not folder.is_dir():
            raise FileNotFoundError(f"folder not found: {folder}")
    names = sorted(p.name for p in label_dir.glob("*.nii.gz"))
    if not names:
        raise ValueError(f"{label_dir}: no .nii.gz labels")
    missing = [n for n in names if not (pred_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{pred_dir}: no prediction for {missing[:5]}")
    dices, nsds = [], []
    for name in names:
        gt = load_volume(label_dir / name, "label")
        pred = load_volume(pred_dir / name, "label")
        if pred.array.shape != gt.array.shape:
            raise ValueError(f"{name}: prediction {pred.array.shape} vs label {gt.array.shape}")
        dices.append(dice(pred.array > 0, gt.array > 0))
        nsds.append(nsd(pred.array > 0, gt.array > 0, gt.spacing, tolerance_mm))
    return [{"method": method, "prompt": "none", "dataset": dataset,
             "dice": _pct(np.mean(dices)), "nsd": _pct(np.mean(nsds)),
             "run": run or f"{method} predictions in {pred_dir}", "cases": len(names)}]


def book_phantoms(folder: str | Path) -> Path:
    """The phantoms of the book's smoke recipe (``book_smoke``) in ``folder``, written if
    absent (the same generator settings, so the same cases and the same held-out split)."""
    from ..data.phantoms import PhantomSpec, write_phantom_dataset
    from ..engine.config import load_config

    cfg = load_config("book_smoke")
    spec = PhantomSpec(shape=cfg.phantom_shape, difficulty=cfg.phantom_difficulty)
    return Path(write_phantom_dataset(folder, cfg.phantoms, seed=cfg.seed, spec=spec))


def smoke_baseline_checkpoint(root: str | Path = "outputs/runs", epochs: int = 3,
                              baseline: str = SMOKE_BASELINE, data_dir: str | Path | None = None,
                              cache_dir: str | Path | None = None) -> Path:
    """The smoke supervised baseline (default the DynUNet stand-in, **not nnU-Net**) trained
    once with the book's smoke recipe (``book_smoke``: same phantoms, split, loss, optimiser;
    ``epochs`` fixed: 3 of the DynUNet ≈ 1 minute on an idle 2-core CPU) and reused from
    ``root`` afterwards. ``data_dir`` / ``cache_dir`` replace the recipe's relative folders
    (pass absolute project paths from a notebook, whose working folder is not the root)."""
    from ..engine.cached import trained_checkpoint

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    overrides = {"model": baseline, "name": f"table1_{baseline}", "epochs": epochs}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if cache_dir is not None:
        overrides["cache_dir"] = cache_dir
    return trained_checkpoint("book_smoke", overrides, root=root)


def table1(paper: list[dict], run: list[dict], mode: str):
    """The paper's rows beside this run's (:func:`sam3d.experiments.report.side_by_side` on
    method, prompt and dataset), with a column saying what this run actually ran."""
    import pandas as pd

    from .report import side_by_side

    table = side_by_side(paper, run, on=["method", "prompt", "dataset"],
                         metrics=["dice", "nsd"], mode=mode)
    what = pd.DataFrame([{"method": r["method"], "prompt": r["prompt"], "dataset": r["dataset"],
                          "this run: model · data": r.get("run", "")} for r in run],
                        columns=["method", "prompt", "dataset", "this run: model · data"])
    table = table.merge(what, on=["method", "prompt", "dataset"], how="left")
    return table.fillna({"this run: model · data": ""})
