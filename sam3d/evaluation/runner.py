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
import io
import time
from pathlib import Path

import numpy as np

from ..data.click_store import ClickSet, load_clicks, save_clicks
from ..data.io import load_volume, save_nifti
from ..data.layout import read_index
from ..data.specs import DatasetSpec
from ..data.splits import SplitRef
from ..inference.geometry import save_mask
from ..inference.predictor import Predictor
from ..utils.files import atomic_write_text
from .protocol import EvalSettings, area_under_curve, challenge_auc, evaluate_case

ROW_FIELDS = ("case", "k", "mode", "position", "position_fallback", "clicks", "clicks_used",
              "dice", "nsd", "seconds")


def evaluate_dataset(model, spec: DatasetSpec, data_dir: str | Path, out_dir: str | Path,
                     settings: EvalSettings, *, part: str = "test", ids: list[str] | None = None,
                     split: SplitRef | None = None, clicks: str | Path | None = None,
                     save_masks: bool = False, overwrite: bool = False, device="cpu",
                     progress: bool = True, keep: str | None = None,
                     zoom: int | None = None) -> dict:
    """Run :func:`evaluate_case` over a split; returns the summary rows and file paths.
    ``keep``: what a prediction keeps, ``zoom``: its zoom factor on small lesions
    (:class:`~sam3d.inference.predictor.Predictor`; None: the model's own).

    The cases are ``ids``, else ``part`` of ``split`` — give the *training* run's reference
    (:func:`sam3d.checkpoint.split_reference`: its split file, fold and seed), or a test case
    may be one the model was trained on; ``None`` is the default reference (fold 0, seed 0).
    """
    predictor = Predictor(model, spec, device, keep=keep, zoom=zoom)  # bad settings: no folder
    out, index, ids, replay, iterator = _start(out_dir, overwrite, data_dir, spec.name, ids,
                                               part, split, clicks, progress, "evaluate")
    rows, refinement, click_sets = [], [], []
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
    summary, files = _finish(out, rows, click_sets)
    if refinement:
        ref_summary = summarise_refinement(refinement)
        write_csv(out / "refinement.csv", refinement, list(refinement[0]))
        write_csv(out / "refinement_summary.csv", ref_summary, list(ref_summary[0]))
        files["refinement"] = out / "refinement.csv"
        files["refinement_summary"] = out / "refinement_summary.csv"
    return {"summary": summary, "rows": rows, "refinement": refinement, "files": files}


#: the evaluation protocols (``sam3d evaluate --protocol``)
PROTOCOLS = ("sam3d", "official")


def check_protocol(protocol: str, refine: int = 0, position: str = "random") -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS` and can do what is asked (the official
    protocol has random clicks and no refinement); ``ValueError`` otherwise."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if protocol == "official" and (refine or position != "random"):
        raise ValueError("the official protocol has random clicks and no refinement: use "
                         "protocol 'sam3d' for click positions and refinement")
    return protocol


def evaluate_protocol(protocol: str, model, spec: DatasetSpec, data_dir: str | Path,
                      out_dir: str | Path, settings: EvalSettings, *,
                      dataset: str | None = None, **kw) -> dict:
    """Evaluate with ``protocol``: "sam3d" (:func:`evaluate_dataset` with ``settings``) or
    "official" (:func:`evaluate_dataset_official` with ``settings``' k and seed, on
    ``dataset``, default ``spec.name``). ``kw``: the runners' shared keywords (ids, part,
    split, clicks, save_masks, overwrite, device, progress)."""
    check_protocol(protocol, settings.refine, settings.position)
    if protocol == "sam3d":
        return evaluate_dataset(model, spec, data_dir, out_dir, settings, **kw)
    return evaluate_dataset_official(model, dataset or spec.name, data_dir, out_dir,
                                     ks=tuple(settings.ks), seed=settings.seed, **kw)


def _start(out_dir, overwrite: bool, data_dir, dataset: str, ids, part: str,
           split: SplitRef | None, clicks, progress: bool, desc: str):
    """Shared set-up of a run: refuse to overwrite results, resolve the cases (``ids``, else
    ``part`` of ``split``; lesion cases only), read replayed clicks, make the folder.
    Returns ``(out, index, ids, replay, iterator)``."""
    out = Path(out_dir)
    if (out / "per_case.csv").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds results; choose another folder or overwrite")
    index = read_index(data_dir)
    if ids is None:
        ids = (split or SplitRef()).resolve(dataset, index.case_ids())[part]
    unknown = [i for i in ids if i not in index.cases]
    if unknown:
        raise KeyError(f"{index.root}: unknown case(s) {unknown[:5]}")
    ids = index.lesion_cases(ids)  # the protocol needs a lesion to click on
    if not ids:
        raise ValueError(f"{index.root}: no test case with a lesion")
    replay = {(c.case, c.protocol): c for c in load_clicks(clicks)} if clicks else None
    out.mkdir(parents=True, exist_ok=True)
    iterator = ids
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(ids, desc=desc, unit="case")
    return out, index, ids, replay, iterator


def _finish(out: Path, rows: list[dict], click_sets: list) -> tuple[list[dict], dict]:
    """Write per_case.csv, summary.csv and clicks.json; returns (summary rows, file paths)."""
    summary = summarise(rows)
    write_csv(out / "per_case.csv", rows, ROW_FIELDS)
    write_csv(out / "summary.csv", summary, list(summary[0]))
    save_clicks(out / "clicks.json", click_sets)
    return summary, {"per_case": out / "per_case.csv", "summary": out / "summary.csv",
                     "clicks": out / "clicks.json"}


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
    """Per position of the first click: mean Dice/NSD and interaction seconds after each click
    (``click`` 1, 2, …), then the mean per-case ``"final"`` scores, areas ``"auc"``
    (normalised, :func:`area_under_curve`) and, with at least two corrective clicks, the
    challenge's ``"challenge_auc"`` (DSC_AUC / NSD_AUC, :func:`challenge_auc`)."""
    out = []
    for position in _positions(rows):
        sel = [r for r in rows if r.get("position", "random") == position]
        cases = sorted({r["case"] for r in sel})
        for c in sorted({r["click"] for r in sel}):
            at = [r for r in sel if r["click"] == c]
            out.append({"position": position, "click": c,
                        "dice_mean": float(np.mean([r["dice"] for r in at])),
                        "nsd_mean": float(np.mean([r["nsd"] for r in at])),
                        "seconds_mean": float(np.mean([r.get("seconds", np.nan) for r in at]))})
        curves = {c: ([r["dice"] for r in sel if r["case"] == c],
                      [r["nsd"] for r in sel if r["case"] == c]) for c in cases}
        areas = [("final", lambda v: v[-1]), ("auc", area_under_curve)]
        if min(len(d) for d, _ in curves.values()) >= 3:
            areas.append(("challenge_auc", challenge_auc))
        for name, area in areas:
            out.append({"position": position, "click": name,
                        "dice_mean": float(np.mean([area(d) for d, _ in curves.values()])),
                        "nsd_mean": float(np.mean([area(n) for _, n in curves.values()])),
                        "seconds_mean": float("nan")})
    return out


def _positions(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("position", "random") for r in rows))


def write_csv(path: Path, rows: list[dict], fields) -> Path:
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(fields))
    w.writeheader()
    w.writerows({k: r.get(k) for k in fields} for r in rows)
    return atomic_write_text(path, text.getvalue())


#: how the official protocol's clicks are stored in clicks.json
OFFICIAL_SPACE = ("DHW voxel indices of the official 1 mm grid "
                  "(raw array transposed by spatial_index)")


def official_seed(seed: int, case_id: str, k: int) -> int:
    """The legacy-RNG seed of one case's official click draw: a hash of (seed, case, k), so a
    run is replayable and every case and k draws independently."""
    import hashlib

    digest = hashlib.sha256(f"{int(seed)}/{case_id}/k{int(k)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def evaluate_dataset_official(model, dataset: str, data_dir: str | Path, out_dir: str | Path, *,
                              ks=(1, 3, 10), seed: int = 0, ids: list[str] | None = None,
                              part: str = "test", split: SplitRef | None = None,
                              clicks: str | Path | None = None,
                              save_masks: bool = False, overwrite: bool = False, device="cpu",
                              progress: bool = True) -> dict:
    """The official protocol (:mod:`sam3d.evaluation.official`) over a prepared benchmark
    dataset: each test case's files as stored, ``k`` seeded clicks (:func:`official_seed`),
    one 128³ ROI; the same files as :func:`evaluate_dataset` (mode ``official``). The cases:
    ``ids``, else ``part`` of ``split`` (the training run's); ``clicks``: replay a clicks.json."""
    from .official import evaluate_case as official_case
    from .official import get_dataset, load_case

    get_dataset(dataset)
    out, index, ids, replay, iterator = _start(out_dir, overwrite, data_dir, dataset, ids, part,
                                               split, clicks, progress, "evaluate (official)")
    replay = replay or {}
    rows, click_sets = [], []
    for case_id in iterator:
        entry = index.cases[case_id]
        case = load_case(entry.image, entry.label, dataset)
        for k in ks:
            protocol = f"official-k{k}"
            start = time.perf_counter()
            given = replay.get((case_id, protocol))
            indices = None if given is None else _indices_of(case.prompt, given.points)
            res = official_case(model, entry.image, entry.label, dataset, k=k,
                                seed=official_seed(seed, case_id, k), click_indices=indices,
                                device=device, case=case)
            rows.append({"case": case_id, "k": k, "mode": "official", "position": "random",
                         "position_fallback": False,
                         "clicks": ";".join(",".join(map(str, p)) for p in res["clicks"]),
                         "clicks_used": len(res["clicks"]), "dice": res["dice"],
                         "nsd": res["nsd"], "seconds": time.perf_counter() - start})
            click_sets.append(ClickSet(case_id, [tuple(int(v) for v in p) for p in res["clicks"]],
                                       [True] * len(res["clicks"]), protocol,
                                       official_seed(seed, case_id, k), case.prompt.shape,
                                       OFFICIAL_SPACE))
            if save_masks:
                (out / "masks").mkdir(exist_ok=True)
                _save_official_mask(res["mask"], entry.label, dataset,
                                    out / "masks" / f"{case_id}_k{k}_official.nii.gz")
    summary, files = _finish(out, rows, click_sets)
    return {"summary": summary, "rows": rows, "refinement": [], "files": files}


def _indices_of(prompt: np.ndarray, points) -> list[int]:
    """The foreground indices (C order) of replayed click voxels on the prompt grid."""
    flat_fg = np.flatnonzero(prompt)
    flat = np.ravel_multi_index(np.asarray(points, dtype=np.int64).T, prompt.shape)
    where = np.searchsorted(flat_fg, flat)
    if (where >= len(flat_fg)).any() or not np.array_equal(flat_fg[np.minimum(
            where, len(flat_fg) - 1)], flat):
        raise ValueError("replayed clicks are not lesion voxels of this case's prompt grid")
    return where.tolist()


def _save_official_mask(mask: np.ndarray, label_file: Path, dataset: str, path: Path) -> None:
    """The mask (``D0×H0×W0``, the label transposed by ``spatial_index``) back in the label
    file's own array order and geometry, written atomically."""
    import nibabel as nib

    from .official import get_dataset

    order = np.argsort(get_dataset(dataset).spatial_index)
    ref = nib.load(str(label_file))
    save_nifti(path, np.transpose(mask, order).astype(np.uint8), ref.affine)
