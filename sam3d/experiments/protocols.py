"""The two evaluation protocols side by side: what each feeds the model, and the scores.

``official`` (:mod:`sam3d.evaluation.official`) is the authors' ``test.py`` path: the stored
voxel array transposed by the dataset's ``spatial_index``, resampled to 1 mm with
``F.interpolate``, one ROI at the clicks, the probability interpolated back to the label grid.
``sam3d`` (:mod:`sam3d.evaluation.protocol`, mode ``roi``) reads the same files through MONAI:
canonical RAS orientation, ``Spacingd``, the same ROI rule, ``Invertd`` back to the file's grid.

:func:`compare_case` scores one case both ways **from the same physical clicks**: the official
clicks are drawn (or replayed: the golden fixture's indices) on the official 1 mm grid, carried
to the file's voxel grid (the inverse of the official resize, then of the transpose), and from
there into sam3d's model grid with the file's affine (:func:`sam3d.inference.geometry.
user_to_model`, the mapping ``sam3d predict --click`` uses). So the rows differ only by the
pipeline. :func:`cached_compare` keys each case's rows by content (weights digest, files,
dataset, clicks, intensity constants) under ``root``: four ViT-B forwards cost minutes on a CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

__all__ = ["cached_compare", "checkpoint_comparison", "compare_case", "fixture_comparison",
           "fixture_runs", "official_to_file", "table"]

CACHE_FORMAT = "sam3d-protocols/1"
PROTOCOL_NAMES = ("official", "sam3d")


def official_to_file(clicks: np.ndarray, grid: tuple[int, int, int],
                     label_grid: tuple[int, int, int],
                     spatial_index: tuple[int, int, int]) -> np.ndarray:
    """Official 1 mm clicks ``k×3`` (d, h, w) on ``grid`` → the stored array's voxels ``k×3``
    (i, j, k): the inverse of the official resize to ``grid`` from ``label_grid`` (both in the
    transposed order; ``align_corners=False`` centres), then of the ``spatial_index`` transpose;
    rounded to the nearest voxel."""
    clicks = np.asarray(clicks, dtype=np.float64).reshape(-1, 3)
    scale = np.asarray(label_grid, dtype=np.float64) / np.asarray(grid, dtype=np.float64)
    # the click's centre on the stored grid is (c + 0.5)·scale − 0.5; its nearest voxel is
    # floor(that + 0.5)
    transposed = np.clip(np.floor((clicks + 0.5) * scale), 0, np.asarray(label_grid) - 1)
    stored = np.empty_like(transposed)
    stored[:, list(spatial_index)] = transposed  # transposed axis a is stored axis spatial_index[a]
    return stored.astype(np.int64)


def _axes(codes) -> str:
    return "(" + ", ".join(codes) + ")"


def compare_case(model, spec, image: str | Path, label: str | Path, dataset: str, *,
                 case_id: str, k: int = 1, seed: int | None = 0, click_indices=None,
                 device: str = "cpu") -> list[dict]:
    """Score one NIfTI pair of ``dataset`` with both protocols from the same clicks.

    ``model``: a promptable model; ``spec``: the intensity constants the sam3d protocol uses
    (the official one uses the dataset's official constants). ``seed`` / ``click_indices``:
    the official click draw (:func:`sam3d.evaluation.official.sample_clicks`). Returns two
    rows (``protocol`` "official" then "sam3d"): Dice and NSD (fractions), the model input's
    shape, its axes (anatomical direction of each array axis, e.g. "(S, A, R)"), the voxel
    size, the intensity normalisation, the clicks in that protocol's grid and the ROI start.
    """
    import nibabel as nib

    from ..data.click_store import ClickSet
    from ..data.io import load_volume
    from ..data.layout import CaseEntry
    from ..evaluation import official
    from ..evaluation.protocol import EvalSettings, evaluate_case, protocol_name
    from ..inference.geometry import model_affine, user_shape, user_to_model
    from ..inference.predictor import Predictor
    from ..inference.roi import roi_box

    ds = official.get_dataset(dataset)
    case = official.load_case(image, label, dataset)
    t0 = time.perf_counter()
    off = official.evaluate_case(model, image, label, dataset, k=k, seed=seed,
                                 click_indices=click_indices, device=device, case=case)
    t_off = time.perf_counter() - t0
    stored = official_to_file(off["clicks"], off["image_shape"], case.label.shape,
                              ds.spatial_index)
    vol, lab = load_volume(image, "image"), load_volume(label, "label")
    codes = nib.aff2axcodes(vol.affine)
    rows = [{"case": case_id, "dataset": dataset, "protocol": "official", "k": k,
             "dice": off["dice"], "nsd": off["nsd"],
             "input": "×".join(map(str, (1, 3, *off["image_shape"]))),
             "axes": _axes(codes[i] for i in ds.spatial_index), "voxel_mm": "1 (F.interpolate)",
             "intensity": f"clip {ds.window[0]:g}…{ds.window[1]:g}, z-score "
                          f"{ds.mean:.4g} ± {ds.std:.4g}",
             "clicks": _fmt(off["clicks"]), "roi_start": _fmt(off["roi"]["start"]),
             "file_voxels": _fmt(stored), "on_lesion": True, "seconds": round(t_off, 1)}]

    predictor = Predictor(model, spec, device)
    entry = CaseEntry(case_id, Path(image), Path(label), tuple(lab.shape), tuple(lab.spacing),
                      ds.target)
    data = predictor.load(entry.image, entry.label, entry.target)
    shape = tuple(int(s) for s in data["image"].shape[1:])
    mapped = user_to_model(stored[:, ::-1], vol.affine, model_affine(data["image"]), shape,
                           user_shape(vol))
    lesion = data["label"][0].numpy() > 0.5
    on_lesion = bool(all(lesion[tuple(p)] for p in mapped))
    name = protocol_name(k)
    replay = {(case_id, name): ClickSet(case=case_id, points=[tuple(map(int, p)) for p in mapped],
                                        positive=[True] * len(mapped), protocol=name,
                                        seed=0 if seed is None else int(seed), shape=shape)}
    t0 = time.perf_counter()
    res = evaluate_case(predictor, entry, EvalSettings(ks=(k,), modes=("roi",)), replay,
                        data=data)
    row = res.rows[0]
    box = roi_box(mapped, shape, predictor.crop)
    ras = nib.aff2axcodes(model_affine(data["image"]))
    rows.append({"case": case_id, "dataset": dataset, "protocol": "sam3d", "k": k,
                 "dice": row["dice"], "nsd": row["nsd"],
                 "input": "×".join(map(str, (1, *data["image"].shape))),
                 "axes": _axes(ras[::-1]), "voxel_mm": f"{getattr(spec, 'spacing', 1.0):g} "
                                                      "(Spacingd)",
                 "intensity": f"clip {spec.window[0]:g}…{spec.window[1]:g}, z-score "
                              f"{spec.mean:.4g} ± {spec.std:.4g}",
                 "clicks": _fmt(mapped), "roi_start": _fmt(box.start), "file_voxels": _fmt(stored),
                 "on_lesion": on_lesion, "seconds": round(time.perf_counter() - t0, 1)})
    return rows


def _fmt(points) -> str:
    return ";".join(",".join(str(int(v)) for v in p) for p in np.asarray(points).reshape(-1, 3))


def cache_key(weights: str, image: str | Path, label: str | Path, dataset: str, k: int,
              seed: int | None, click_indices, spec) -> str:
    """12 hex digits of everything the two rows depend on (``weights``: a digest of them)."""
    from ..content_cache import content_key
    from ..hashing import sha256_file

    doc = {"format": CACHE_FORMAT, "weights": weights, "image": sha256_file(image),
           "label": sha256_file(label), "dataset": dataset, "k": int(k),
           "seed": None if seed is None else int(seed),
           "clicks": None if click_indices is None else [int(i) for i in click_indices],
           "spec": [spec.name, [float(w) for w in spec.window], float(spec.mean),
                    float(spec.std), float(getattr(spec, "spacing", 1.0))]}
    return content_key(doc)


def cached_compare(model_fn, weights: str, spec, image: str | Path, label: str | Path,
                   dataset: str, *, case_id: str, k: int = 1, seed: int | None = 0,
                   click_indices=None, root: str | Path = "outputs/protocols",
                   device: str = "cpu", refresh: bool = False) -> dict:
    """:func:`compare_case`, cached by content in ``root/<case>-<key>.json``. ``model_fn()``
    builds the model only when the rows are not cached; ``weights`` is the digest of its
    weights (a checkpoint file's SHA-256, or the golden recipe's). Returns ``{"rows",
    "cached", "path", "key"}``."""
    from ..content_cache import read_entry, write_entry

    key = cache_key(weights, image, label, dataset, k, seed, click_indices, spec)
    path = Path(root) / f"{case_id}-{key}.json"
    doc = None if refresh else read_entry(path, CACHE_FORMAT, key)
    if doc is not None:
        return {"rows": doc["rows"], "cached": True, "path": path, "key": key}
    rows = compare_case(model_fn(), spec, image, label, dataset, case_id=case_id, k=k,
                        seed=seed, click_indices=click_indices, device=device)
    write_entry(path, {"format": CACHE_FORMAT, "key": key, "weights": weights, "rows": rows})
    return {"rows": rows, "cached": False, "path": path, "key": key}


def fixture_runs(folder: str | Path, runs=("p1",)) -> list[dict]:
    """The golden official-eval fixture's runs: ``{"case", "dataset", "image", "label", "k",
    "click_indices", "fixture_dice", "fixture_nsd"}`` per case and run name in ``runs``."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"official-eval fixture not found: {manifest}")
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    out = []
    for name, c in doc["cases"].items():
        for run in runs:
            r = c["runs"].get(run)
            if r is None:
                continue
            out.append({"case": name, "dataset": c["data_arg"],
                        "image": folder / c["files"]["image"],
                        "label": folder / c["files"]["label"],
                        "k": int(r["clicks"]["num_prompts"]),
                        "click_indices": [int(i) for i in r["clicks"]["sample"]],
                        "fixture_dice": float(r["metrics"]["dice_test_py"]),
                        "fixture_nsd": float(r["metrics"]["nsd"])})
    return out


def fixture_comparison(eval_dir: str | Path | None = None, golden_dir: str | Path | None = None,
                       *, runs=("p1",), cases=None, root: str | Path = "outputs/protocols",
                       device: str = "cpu", refresh: bool = False) -> list[dict]:
    """Both protocols on the golden fixture's cases with the golden-v2 weights (random: the
    numbers check the paths, they do not segment), from the fixture's own click indices; the
    official rows carry the fixture's Dice/NSD (the authors' ``test.py``) beside ours.
    ``cases``: only these fixture cases (default: all).
    ``eval_dir`` / ``golden_dir``: default :func:`sam3d.golden.default_official_eval_dir` /
    :func:`~sam3d.golden.default_golden_dir`."""
    from ..data.specs import get_spec
    from ..golden import build_official_checkpoint, default_golden_dir, default_official_eval_dir
    from ..hashing import sha256_file

    eval_dir = Path(eval_dir or default_official_eval_dir())
    golden_dir = Path(golden_dir or default_golden_dir())
    recipe = golden_dir / "manifest.json"
    if not recipe.is_file():
        raise FileNotFoundError(f"golden checkpoint recipe not found: {recipe}")
    built = {}

    def model_fn():
        if "model" not in built:
            from ..checkpoint import load_official_checkpoint

            built["model"] = load_official_checkpoint(
                build_official_checkpoint(golden_dir)).eval().to(device)
        return built["model"]

    rows = []
    for run in fixture_runs(eval_dir, runs):
        if cases is not None and run["case"] not in cases:
            continue
        res = cached_compare(model_fn, f"golden-v2:{sha256_file(recipe)}", get_spec(run["dataset"]),
                             run["image"], run["label"], run["dataset"], case_id=run["case"],
                             k=run["k"], click_indices=run["click_indices"], root=root,
                             device=device, refresh=refresh)
        for r in res["rows"]:
            fixture = r["protocol"] == "official"
            rows.append({**r, "weights": "golden-v2 (random)", "cached": res["cached"],
                         "fixture_dice": run["fixture_dice"] if fixture else None,
                         "fixture_nsd": run["fixture_nsd"] if fixture else None})
    return rows


def checkpoint_comparison(checkpoint: str | Path, cases: list[tuple[str, Path, Path, str]], *,
                          seed: int = 0, k: int = 1, label: str = "",
                          sam_checkpoint: str | Path | None = None,
                          spec_dataset: str | None = None,
                          root: str | Path = "outputs/protocols", device: str = "cpu",
                          refresh: bool = False) -> list[dict]:
    """Both protocols for a trained checkpoint (a sam3d run or a released one) on ``cases``
    ``(case_id, image, label, dataset)``: the sam3d protocol with the preprocessing
    ``sam3d evaluate`` uses for it, the official one with the dataset's official constants;
    the clicks are the official seeded draw (:func:`sam3d.evaluation.runner.official_seed`).
    ``spec_dataset``: as ``sam3d evaluate --dataset`` (required for a released checkpoint)."""
    from ..evaluation.runner import official_seed
    from ..hashing import sha256_file
    from ..inference.predict import load_for_inference

    if not cases:
        raise ValueError("no case to compare")
    digest = sha256_file(checkpoint)
    model, spec = load_for_inference(checkpoint, sam_checkpoint, spec_dataset, device)
    rows = []
    for case_id, image, lab, dataset in cases:
        res = cached_compare(lambda m=model: m, digest, spec, image, lab, dataset,
                             case_id=case_id, k=k, seed=official_seed(seed, case_id, k),
                             root=root, device=device, refresh=refresh)
        rows += [{**r, "weights": label or Path(checkpoint).name, "cached": res["cached"]}
                 for r in res["rows"]]
    return rows


def table(rows: list[dict]):
    """The side-by-side table (a DataFrame): one line per case and protocol, Dice/NSD in %."""
    import pandas as pd

    cols = ["case", "dataset", "k", "protocol", "dice", "nsd", "input", "axes", "voxel_mm",
            "intensity", "clicks", "roi_start"]
    extra = [c for c in ("fixture_dice", "fixture_nsd", "weights") if any(c in r for r in rows)]
    df = pd.DataFrame(rows)[cols + extra]
    for c in ("dice", "nsd", "fixture_dice", "fixture_nsd"):
        if c in df:
            df[c] = (100 * df[c].astype(float)).round(3)
    return df.rename(columns={"dice": "Dice %", "nsd": "NSD %", "fixture_dice": "fixture Dice %",
                              "fixture_nsd": "fixture NSD %", "voxel_mm": "voxel (mm)",
                              "roi_start": "ROI start", "input": "model input"})
