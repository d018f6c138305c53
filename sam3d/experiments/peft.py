"""Chapter 5, Table 2: parameter-efficient tuning of the encoder, automatic segmentation.

Six ways of tuning the same 3D encoder, each a named configuration (``auto_<method>`` at the
paper's size, ``tiny_auto_<method>`` for smoke runs; :mod:`sam3d.config`): no prompt encoder, the
decoder fed the four neck features, sliding-window inference over the whole volume.

* :func:`count_rows` — the tuned image-encoder parameters of every row, counted on the meta
  device (no memory, no initialisation), split into the method's own modules, the encoder's
  LayerNorms, the 3D additions every variant trains and (full fine-tuning) SAM's weights; with
  the count as the paper appears to have made it (``book/peft.md``) beside the reported figure.
* :func:`train_method` — one configuration trained once (content-keyed cache,
  :func:`sam3d.engine.cached.trained_checkpoint`) and :func:`evaluate_method` — its automatic
  segmentation (``sam3d evaluate --mode auto``) on the held-out split it never trained on.
* :func:`run_methods` / :func:`paper_table2` — the rows :func:`side_by_side` puts together.

Smoke mode trains the tiny versions on the book's phantoms for a few steps each: the numbers
show that every configuration trains and segments end to end, nothing about the methods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import get_config
from ..reference import DATASET_COLUMNS, paper_metric, paper_rows
from ..rehearsal import full_variant  # the variant a rehearsal trains instead
from ..tuning import ADDITIONS_3D, PEFT_REGISTRY, groups_pattern
from ..utils.files import atomic_write_json
from .report import check_mode

#: paper row → configuration suffix (``auto_<suffix>``, ``tiny_auto_<suffix>``), in paper order
#: (the rows of the reported table), from the registry of PEFT methods
_SUFFIXES = {m.table2_row: m.table2_suffix for m in PEFT_REGISTRY.values()}
METHODS: dict[str, str] = {r["method"]: _SUFFIXES[r["method"]] for r in paper_rows("table2")}
#: tuned encoder parameters by role: unions of parameter groups (:mod:`sam3d.tuning`); a tuned
#: parameter of none of them is one of SAM's own weights
ROLES: dict[str, tuple[str, ...]] = {
    "method": ("peft_modules", "adapters"),
    "norms": ("norms",),
    "3d_additions": ADDITIONS_3D,
}
#: the smoke recipe: the book's shared smoke configuration, cut to a fixed number of steps
SMOKE_BASE = "book_smoke"
SMOKE_EPOCHS = 1
SMOKE_ITERATIONS = 12
RUNS = "outputs/runs"
EVAL_RECORD = "eval.json"


def check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    """Paper row names (default: all six, in the paper's order)."""
    if methods is None:
        return tuple(METHODS)
    out = tuple(methods)
    unknown = [m for m in out if m not in METHODS]
    if not out or unknown or len(set(out)) != len(out):
        raise ValueError(f"methods must be distinct names among {list(METHODS)}, got {methods!r}")
    return out


def variant_of(method: str, mode: str = "full") -> str:
    """The configuration of a Table 2 row: ``auto_<suffix>`` (full) / ``tiny_auto_<suffix>``."""
    check_methods([method])
    prefix = "tiny_auto_" if check_mode(mode) == "smoke" else "auto_"
    return prefix + METHODS[method]


# ------------------------------------------------------------------------------ counting
def parameter_groups(variant: str) -> dict:
    """Tuned image-encoder parameters of ``variant`` by role, counted on the meta device.

    Returns ``{"variant", "peft", "width", "encoder_total", "encoder_tuned", "method",
    "norms", "3d_additions", "sam_weights"}``: ``sam_weights`` is every other tuned encoder
    parameter (SAM's own weights, trained only by full fine-tuning); ``width`` is the
    bottleneck of the method (the spatial adapter's for ``peft="spatial"``, 0 for none).
    """
    import torch

    from ..build import build_sam3d

    cfg = get_config(variant)
    with torch.device("meta"):
        model = build_sam3d(variant)
    roles = {role: groups_pattern(groups) for role, groups in ROLES.items()}
    counts = dict.fromkeys((*roles, "sam_weights"), 0)
    total = 0
    for name, p in model.image_encoder.named_parameters():
        total += p.numel()
        if not p.requires_grad:
            continue
        group = next((r for r, rx in roles.items() if rx.match(name)), "sam_weights")
        counts[group] += p.numel()
    width = cfg.adapter_dim if cfg.peft == "spatial" else cfg.peft_dim
    return {"variant": variant, "peft": cfg.peft, "width": width, "encoder_total": total,
            "encoder_tuned": sum(counts.values()), **counts}


def sam2d_encoder_params(sam_model: str = "vit_b") -> int:
    """Parameters of SAM's own 2D image encoder (segment-anything's registry, meta device)."""
    import torch
    from segment_anything import sam_model_registry

    if sam_model not in sam_model_registry or sam_model == "default":
        raise ValueError(f"sam_model must be one of vit_b, vit_l, vit_h, got {sam_model!r}")
    with torch.device("meta"):
        sam = sam_model_registry[sam_model]()
    return sum(p.numel() for p in sam.image_encoder.parameters())


def paper_convention(method: str, groups: dict, sam2d: int) -> tuple[int, str]:
    """The count as the paper appears to have made it (book/peft.md), and how.

    Its own row: every tuned encoder parameter (3D additions included). Full fine-tuning: SAM
    ViT-B's 2D image encoder. The other methods: the method's modules plus the LayerNorms.
    """
    check_methods([method])
    if METHODS[method] == "ours":
        return groups["encoder_tuned"], "all tuned (3D additions included)"
    if METHODS[method] == "full":
        return sam2d, "SAM's 2D image encoder"
    return groups["method"] + groups["norms"], "method modules + norms"


def count_rows(mode: str = "full", methods: Sequence[str] | None = None) -> list[dict]:
    """One row per Table 2 method: its configuration's tuned encoder parameters by role, the
    paper's figure (millions), and the count under the paper's convention.

    ``mode="full"`` counts the paper-size ``auto_*`` configurations (the rows to compare with
    the paper: a few seconds on a CPU); ``"smoke"`` the tiny ones (their paper columns stay
    empty: the tiny model has no counterpart in the paper).
    """
    methods = check_methods(methods)
    smoke = check_mode(mode) == "smoke"
    reported = {r["method"]: r["tuned_params_image_encoder_M"] for r in paper_rows("table2")}
    sam2d = None if smoke else sam2d_encoder_params(get_config("auto_full").sam_model)
    rows = []
    for method in methods:
        groups = parameter_groups(variant_of(method, mode))
        row = {"method": method, "config": groups["variant"], "width": groups["width"],
               "tuned_encoder": groups["encoder_tuned"], "method_modules": groups["method"],
               "norms": groups["norms"], "3d_additions": groups["3d_additions"],
               "sam_weights": groups["sam_weights"]}
        if not smoke:
            paper = reported[method]
            as_paper, how = paper_convention(method, groups, sam2d)
            row.update({"paper_M": paper, "diff": groups["encoder_tuned"] - round(paper * 1e6),
                        "as_paper": as_paper, "as_paper_diff": as_paper - round(paper * 1e6),
                        "as_paper_counts": how})
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ train and evaluate
def smoke_overrides(variant: str, epochs: int = SMOKE_EPOCHS,
                    iterations: int = SMOKE_ITERATIONS,
                    tuning: str | None = None) -> dict[str, Any]:
    """Overrides turning the book's smoke recipe into a short run of ``variant``
    (``tuning=None``: the variant's own policy)."""
    get_config(variant)
    for key, value in (("epochs", epochs), ("iterations", iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return {"variant": variant, "tuning": tuning, "epochs": epochs,
            "iterations_per_epoch": iterations}


def full_overrides(variant: str, data_dir: str | Path | None = None,
                   sam_checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Overrides of a dataset's paper recipe (``sam3d/configs/train/<dataset>.yaml``) for
    ``variant`` with its own tuning policy."""
    get_config(variant)
    out: dict[str, Any] = {"variant": variant, "tuning": None}
    if data_dir is not None:
        out["data_dir"] = data_dir
    if sam_checkpoint is not None:
        out["sam_checkpoint"] = sam_checkpoint
    return out


def train_variant(variant: str, mode: str, *, dataset: str = "kits", data_dir=None,
                  sam_checkpoint=None, root: str | Path = RUNS, tuning: str | None = None,
                  overrides: Mapping[str, Any] | None = None) -> dict:
    """Train ``variant`` once (cached by content under ``root``) and return
    :func:`sam3d.experiments.training.smoke_model`'s dict (checkpoint, run_dir, config,
    trained_now, seconds).

    Smoke: :data:`SMOKE_BASE` with :func:`smoke_overrides` (plus ``overrides``). Full: the
    paper recipe of ``dataset`` with :func:`full_overrides` (a GPU, the prepared data, SAM).
    ``tuning``: a policy for every encoder weight (None: the variant's own).
    """
    smoke = check_mode(mode) == "smoke"
    if not smoke and dataset not in DATASET_COLUMNS:
        raise ValueError(f"dataset must be one of {sorted(DATASET_COLUMNS)}, got {dataset!r}")
    from .training import smoke_model

    if smoke:
        sets = {"name": f"{SMOKE_BASE}_{variant}", **smoke_overrides(variant, tuning=tuning),
                **(overrides or {})}
        return smoke_model(SMOKE_BASE, sets, root)
    sets = {"name": f"{dataset}_{variant}", **full_overrides(variant, data_dir, sam_checkpoint),
            **(overrides or {})}
    if tuning is not None:
        sets["tuning"] = tuning
    return smoke_model(dataset, sets, root)


def variant_checkpoint(variant: str, mode: str, given: str | Path | None = None,
                       **train_kw) -> tuple[Path, Path, bool, float]:
    """``(checkpoint, run folder, trained now?, training seconds)``: ``given`` as is, else the
    (cached) run of :func:`train_variant` with ``train_kw``."""
    if given is not None:
        return Path(given), Path(given).parent, False, 0.0
    run = train_variant(variant, mode, **train_kw)
    return Path(run["checkpoint"]), Path(run["run_dir"]), run["trained_now"], run["seconds"]


def evaluate_variant(checkpoint: str | Path, out_dir: str | Path, *, modes=("auto",), k: int = 1,
                     seed: int = 0, device: str = "cpu", sam_checkpoint=None,
                     data_dir=None, reuse: bool = True) -> dict:
    """The held-out evaluation of a trained checkpoint: Dice and NSD (percent), cases, seconds.

    ``modes=("auto",)``: automatic segmentation (sliding windows, no clicks); ``("roi",)``:
    the paper's protocol with ``k`` clicks. The scores are recorded in ``out_dir/eval.json``
    with the settings and the checkpoint file's size and time; with ``reuse`` an identical
    request returns them (``eval_cached`` True) instead of evaluating again (the evaluation
    is seeded, so it would give the same numbers).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    modes = tuple(modes)
    if not modes:
        raise ValueError("modes must name at least one evaluation mode")
    from .training import evaluate_held_out

    ckpt, out = Path(checkpoint), Path(out_dir)
    stat = ckpt.stat()
    settings = {"checkpoint": str(ckpt.resolve()), "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "modes": list(modes), "k": k, "seed": seed,
                "data_dir": None if data_dir is None else str(data_dir)}
    record = out / EVAL_RECORD
    if reuse and record.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            return {**saved["scores"], "eval_cached": True}
    res = evaluate_held_out(ckpt, out, ks=(k,), modes=modes, seed=seed, device=device,
                            sam_checkpoint=sam_checkpoint, data_dir=data_dir)
    row = next(s for s in res["summary"] if s["mode"] == modes[0])
    scores = {"dice": 100 * row["dice_mean"], "nsd": 100 * row["nsd_mean"],
              "dice_std": 100 * row["dice_std"], "nsd_std": 100 * row["nsd_std"],
              "cases": row["cases"], "eval_seconds": round(res["seconds"], 1),
              "eval_dir": str(out)}
    atomic_write_json(record, {"settings": settings, "scores": scores})
    return {**scores, "eval_cached": False}


def run_methods(mode: str = "smoke", methods: Sequence[str] | None = None, *,
                dataset: str = "kits", seed: int = 0, device: str = "cpu", data_dir=None,
                sam_checkpoint=None, root: str | Path = RUNS, checkpoints: dict | None = None,
                overrides: Mapping[str, Any] | None = None) -> list[dict]:
    """Train (or reuse) and evaluate every method; one row per method.

    Rows: ``method``, ``config``, ``dice``, ``nsd`` (percent), their standard deviations,
    ``cases``, ``epochs`` trained, ``trained_now``, ``train_seconds``, ``eval_seconds``,
    ``eval_cached``, ``checkpoint``. ``checkpoints`` maps a method to an existing checkpoint
    to evaluate instead of training (full mode: runs made with ``sam3d train``).
    """
    methods = check_methods(methods)
    check_mode(mode)
    rows = []
    for method in methods:
        variant = variant_of(method, mode)
        ckpt, run_dir, trained_now, seconds = variant_checkpoint(
            variant, mode, (checkpoints or {}).get(method), dataset=dataset, data_dir=data_dir,
            sam_checkpoint=sam_checkpoint, root=root, overrides=overrides)
        scores = evaluate_variant(ckpt, Path(run_dir) / f"eval-auto-seed{seed}", seed=seed,
                                  device=device, sam_checkpoint=sam_checkpoint)
        rows.append({"method": method, "config": full_variant(variant), **scores,
                     "epochs": _epochs(run_dir), "trained_now": trained_now,
                     "train_seconds": round(seconds, 1), "checkpoint": str(ckpt)})
    return rows


def _epochs(run_dir: str | Path) -> int | None:
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def paper_table2(dataset: str = "kits") -> list[dict]:
    """The paper's Table 2 for one dataset column: ``method``, ``dice``, ``nsd`` (percent) and
    ``tuned_M`` (the reported tuned image-encoder parameters, millions)."""
    if dataset not in DATASET_COLUMNS:
        raise ValueError(f"dataset must be one of {sorted(DATASET_COLUMNS)}, got {dataset!r}")
    return [{"method": r["method"], "dice": paper_metric(r, dataset, "dice"),
             "nsd": paper_metric(r, dataset, "nsd"), "tuned_M": r["tuned_params_image_encoder_M"]}
            for r in paper_rows("table2")]

