"""The book's real-CT model: trained on real CT lesions, scored on held-out real lesions.

Smoke mode only (the tiny model on a CPU), not the paper's protocol. :func:`real_data` writes,
from the sample CTs (:mod:`sam3d.data.samples`), the real-CT training data
(:func:`sam3d.data.real_dataset.write_real_dataset`: LiTS 117's lesion-level split plus
synthetic tumours in real liver and lung) and one evaluation case per held-out LiTS 117 lesion
(:func:`~sam3d.data.real_dataset.write_lesion_cases`: that lesion the only target, every other
lesion counted as background). :func:`real_model` trains ``book_real`` on first use and reuses
it (:func:`sam3d.experiments.training.smoke_model`). :func:`lesion_scores` runs the paper's
k-click protocol (clicks drawn uniformly in the lesion, one ROI centred on them) on every
held-out lesion for any number of checkpoints and reports each lesion, the mean over lesions
and the pooled Dice (``2 Σ|P ∩ G| / (Σ|P| + Σ|G|)`` over the lesions, the LiTS challenge's
"global Dice"), so one large lesion cannot hide the small ones, nor the reverse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..provenance import project_path
from .training import RUNS, smoke_model

REAL_CONFIG = "book_real"
#: where the data go under the data folder (book_real.yaml reads ``data/real_ct``)
REAL_DIR, LESIONS_DIR = "real_ct", "real_ct_lesions"
#: what every table of these scores must say about them
SCOPE = ("one patient (LiTS 117), lesion-level split (same anatomy as training), tiny model "
         "trained on a CPU — not the paper's protocol")


def real_data(data_dir: str | Path = "data") -> dict[str, Path]:
    """The real-CT dataset and the held-out lesion cases under ``data_dir`` (written on first
    use, from the sample CTs, fetched if missing): ``{"dataset", "lesions"}``."""
    from ..data.real_dataset import write_lesion_cases, write_real_dataset
    from ..data.samples import fetch_samples

    root = project_path(data_dir)
    samples = Path(fetch_samples(root / "samples")).parent
    dataset = write_real_dataset(root / REAL_DIR, samples)
    return {"dataset": dataset, "lesions": write_lesion_cases(dataset, root / LESIONS_DIR)}


def real_model(root: str | Path = RUNS, until: int | None = None) -> dict:
    """``book_real``'s checkpoint, trained on first use (from ``book_smoke``, trained first if
    need be, :mod:`sam3d.engine.warm_start`) on :func:`real_data` under the project's ``data/``
    (the folder its recipe names); as :func:`~sam3d.experiments.training.smoke_model` returns
    it, plus ``"lesions"``. ``until``: train only to that epoch (the tests train it in parts)."""
    data = real_data()
    return {**smoke_model(REAL_CONFIG, root=root, until=until), "lesions": data["lesions"]}


def lesion_scores(checkpoints: Mapping[str, str | Path], out_dir: str | Path, *,
                  lesions: str | Path, ks=(1, 3, 10), seed: int = 0, device: str = "cpu",
                  keep: Mapping[str, str] | None = None,
                  zoom: Mapping[str, int] | None = None,
                  position: str = "random") -> dict[str, Any]:
    """k-click Dice and NSD (5 mm, %) of each model of ``checkpoints`` (label → file) on every
    held-out lesion case under ``lesions``, with the clicks of ``seed`` (the same for every
    model) placed at ``position`` ("random": the paper's protocol, or "centre", "adjacent",
    "margin", :data:`sam3d.evaluation.protocol.CLICK_POSITIONS`). ``keep``: label → what its
    masks keep ("all" or "clicked", :class:`~sam3d.inference.predictor.Predictor`; a label not
    there: the model's own rule); ``zoom``: label → its zoom factor on small lesions (1: none;
    a label not there: the model's own, :mod:`sam3d.inference.zoom`).
    Each model's evaluation folder is ``out_dir/<label>`` (rewritten; characters other than
    letters, digits, ``.`` and ``-`` become ``_``).

    Returns ``{"per_lesion": DataFrame (model, position, lesion, voxels, k, dice, nsd),
    "summary": DataFrame (model, position, k, lesions, mean Dice, mean NSD, pooled Dice),
    "seconds": {label: evaluation seconds}}``.
    """
    import time

    import pandas as pd

    from ..data.io import load_volume
    from ..data.layout import read_index
    from ..evaluation.protocol import EvalSettings
    from ..evaluation.runner import evaluate_dataset
    from ..inference.predict import load_for_inference

    if not checkpoints:
        raise ValueError("checkpoints is empty: give at least one label → checkpoint")
    settings = EvalSettings(ks=tuple(ks), modes=("roi",), seed=seed, position=position)
    keep, zoom = dict(keep or {}), dict(zoom or {})
    for name, given in (("keep", keep), ("zoom", zoom)):
        if set(given) - set(checkpoints):
            raise ValueError(f"{name} names unknown models "
                             f"{sorted(set(given) - set(checkpoints))}")
    lesions = project_path(lesions)
    index = read_index(lesions)
    ids = sorted(index.cases)
    truth = {c: load_volume(index.cases[c].label, "label").array == index.target for c in ids}
    rows, summary, seconds = [], [], {}
    for label, checkpoint in checkpoints.items():
        model, spec = load_for_inference(project_path(checkpoint), device=device)
        out = project_path(out_dir) / re.sub(r"[^\w.-]+", "_", label)
        t0 = time.time()
        res = evaluate_dataset(model, spec, lesions, out, settings, ids=ids, save_masks=True,
                               overwrite=True, device=device, progress=False,
                               keep=keep.get(label), zoom=zoom.get(label))
        seconds[label] = time.time() - t0
        for k in settings.ks:
            sel = [r for r in res["rows"] if r["k"] == k]
            overlap = predicted = 0
            for r in sel:
                mask = load_volume(out / "masks" / f"{r['case']}_k{k}_roi.nii.gz",
                                   "label").array > 0
                gt = truth[r["case"]]
                overlap, predicted = overlap + int((mask & gt).sum()), predicted + int(mask.sum())
                rows.append({"model": label, "position": position,
                             "lesion": r["case"].rsplit("_", 1)[-1],
                             "voxels": int(gt.sum()), "k": k, "dice": 100 * r["dice"],
                             "nsd": 100 * r["nsd"]})
            gt_total = sum(int(truth[r["case"]].sum()) for r in sel)
            summary.append({"model": label, "position": position, "k": k, "lesions": len(sel),
                            "mean Dice": 100 * float(np.mean([r["dice"] for r in sel])),
                            "mean NSD": 100 * float(np.mean([r["nsd"] for r in sel])),
                            "pooled Dice": 100 * 2 * overlap / max(predicted + gt_total, 1)})
    return {"per_lesion": pd.DataFrame(rows), "summary": pd.DataFrame(summary),
            "seconds": seconds}


def position_scores(checkpoint: str | Path, out_dir: str | Path, *, lesions: str | Path,
                    positions=("random", "centre", "adjacent", "margin"), k: int = 1,
                    seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Chapter 6 on the held-out real lesions: :func:`lesion_scores` of one model with ``k``
    click(s) at each of ``positions``, one evaluation folder ``out_dir/<position>`` each.
    Returns ``{"per_lesion", "summary"}`` as :func:`lesion_scores` does without the model
    column, the positions stacked in the order given, and ``"seconds"`` (position → evaluation
    seconds)."""
    import pandas as pd

    from .position import check_positions

    positions = check_positions(positions)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    parts = [lesion_scores({position: checkpoint}, out_dir, lesions=lesions, ks=(k,),
                           seed=seed, device=device, position=position)
             for position in positions]
    return {key: pd.concat([p[key] for p in parts], ignore_index=True).drop(columns="model")
            for key in ("per_lesion", "summary")} | {
        "seconds": {pos: p["seconds"][pos] for pos, p in zip(positions, parts, strict=True)}}
