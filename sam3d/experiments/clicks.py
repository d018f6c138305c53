"""Chapter 8, the number of clicks and iterative refinement.

* Clicks: the official protocol with k = 1, 3 and 10 random lesion clicks per volume (one
  128³ box around them), beside the paper's 3DSAM-adapter rows of Table 1 — scored through
  sam3d's pipeline (``"roi"``) or the authors' ``test.py`` path (``protocol="official"``).
* Refinement (not in the paper; the protocol of the CVPR 2025 interactive 3D segmentation
  challenge, :mod:`sam3d.evaluation.protocol`): from the k = 1 prediction, up to ``refine``
  error-driven clicks, the Dice and NSD after each, and the areas under those curves. The model
  takes positive points only, so a click on a false positive is counted but changes nothing.
* Negative clicks (not in the paper; issue 13): :func:`compare_refinement` runs the same
  refinement for the paper's model and for the negative-click extension on the same held-out
  cases, which uses the negative corrective clicks the paper's model can only count.
"""

from __future__ import annotations

from pathlib import Path

from ..reference import paper_metric
from ..reference import paper_rows as reported
from .training import evaluate_held_out

KS = (1, 3, 10)
PROMPTS = {1: "1 pt/volume", 3: "3 pts/volume", 10: "10 pts/volume"}


def paper_rows(dataset: str, ks=KS) -> list[dict]:
    """The paper's 3DSAM-adapter rows of Table 1 for ``dataset``: ``{"k", "dice", "nsd"}``."""
    ks = _check_ks(ks)
    rows = {r["prompt"]: r for r in reported("table1") if r["method"] == "3DSAM-adapter"}
    out = []
    for k in ks:
        row = rows.get(PROMPTS.get(k, ""))
        out.append({"k": k, "dice": paper_metric(row, dataset, "dice") if row else None,
                    "nsd": paper_metric(row, dataset, "nsd") if row else None})
    return out


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def run_clicks(checkpoint: str | Path, out_dir: str | Path, *, ks=KS, refine: int = 5,
               mode: str = "roi", seed: int = 0, data_dir: str | Path | None = None,
               device: str = "cpu", protocol: str = "sam3d") -> dict:
    """k-click evaluation and the refinement curve of ``checkpoint`` on its held-out split.

    ``protocol`` scores the k-click table: "sam3d" (``mode``), or "official" (the authors'
    ``test.py`` path, :mod:`sam3d.evaluation.official`). The refinement curve is sam3d's in
    both cases (whole volume, error-driven clicks: the official path has no refinement); with
    "official" it runs separately, into ``out_dir/refinement``.

    Returns ``{"clicks": rows (k, cases, dice, nsd in percent, ± std), "curve": rows (click,
    dice, nsd in percent, seconds per interaction), "auc": {"dice", "nsd"} (percent),
    "areas": {"final", "auc"} in percent and "challenge_auc" (the CVPR 2025 challenge's
    DSC_AUC / NSD_AUC, in its units) when refine ≥ 2, "refinement": per-case rows,
    "per_case": rows, "protocol", "seconds", "out_dir"}``.
    """
    from ..evaluation.runner import check_protocol

    ks = _check_ks(ks)
    if not isinstance(refine, int) or not 0 <= refine <= 20:
        raise ValueError(f"refine must be an integer in 0..20, got {refine!r}")
    check_protocol(protocol)
    common = {"seed": seed, "data_dir": data_dir, "device": device}
    together = protocol == "sam3d"  # one run gives the table and the curve
    res = evaluate_held_out(checkpoint, out_dir, ks=ks, modes=(mode,), protocol=protocol,
                            refine=refine if together else 0, **common)
    refinement, seconds = res.get("refinement", []), res["seconds"]
    if refine and not together:
        ref = evaluate_held_out(checkpoint, Path(out_dir) / "refinement", ks=(1,), modes=(mode,),
                                refine=refine, **common)
        refinement, seconds = ref["refinement"], seconds + ref["seconds"]
    clicks = [{"k": r["k"], "cases": r["cases"], "dice": 100 * r["dice_mean"],
               "dice_std": 100 * r["dice_std"], "nsd": 100 * r["nsd_mean"],
               "nsd_std": 100 * r["nsd_std"], "seconds_per_case": r["seconds_mean"]}
              for r in res["summary"]]
    curve, areas = [], {}
    if refine:
        from ..evaluation.runner import summarise_refinement

        for r in summarise_refinement(refinement):
            if isinstance(r["click"], int):
                curve.append({"click": r["click"], "dice": 100 * r["dice_mean"],
                              "nsd": 100 * r["nsd_mean"], "seconds": r["seconds_mean"]})
            else:  # the challenge's areas stay in its units (fractions × clicks)
                scale = 1 if r["click"] == "challenge_auc" else 100
                areas[r["click"]] = {"dice": scale * r["dice_mean"], "nsd": scale * r["nsd_mean"]}
    return {"clicks": clicks, "curve": curve, "auc": areas.get("auc", {}), "areas": areas,
            "refinement": refinement,
            "per_case": res["rows"], "protocol": protocol, "seconds": seconds,
            "out_dir": Path(out_dir)}


def click_kinds(refinement: list[dict]) -> dict[str, int]:
    """How many refinement clicks were positive, negative (unusable) or not needed."""
    kinds = {"positive": 0, "negative (not usable)": 0}
    for r in refinement:
        if r.get("next"):
            kinds[r["next"]] = kinds.get(r["next"], 0) + 1
    return kinds


def plot_curve(curve: list[dict], refinement: list[dict] | None = None, title: str = ""):
    """Mean Dice and NSD after each click (thin lines: each case's Dice). Returns the figure."""
    import matplotlib.pyplot as plt

    if not curve:
        raise ValueError("no refinement curve (run with refine ≥ 1)")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    for case in sorted({r["case"] for r in refinement or []}):
        pts = [(r["click"], 100 * r["dice"]) for r in refinement if r["case"] == case]
        ax.plot(*zip(*pts, strict=True), color="0.75", lw=0.8)
    x = [r["click"] for r in curve]
    ax.plot(x, [r["dice"] for r in curve], "o-", label="Dice (mean)")
    ax.plot(x, [r["nsd"] for r in curve], "s--", label="NSD (mean)")
    ax.set_xlabel("clicks (1 = the first random lesion click, then error-driven clicks)")
    ax.set_ylabel("%")
    ax.set_xticks(x)
    ax.set_ylim(0, 100)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def compare_refinement(checkpoints: dict[str, str | Path], out_dir: str | Path, *,
                       refine: int = 5, seed: int = 0, device: str = "cpu",
                       data_dir: str | Path | None = None) -> dict:
    """The refinement protocol for each named checkpoint (e.g. the paper's model and the
    negative-click extension), on the held-out split they share, into ``out_dir/<name>``.

    Returns ``{"curve": rows (model, click, dice, nsd in percent, seconds), "areas": rows
    (model, first and final Dice/NSD in percent, Dice gain in points, auc in percent, the
    challenge's DSC_AUC / NSD_AUC), "kinds": {model: click kinds}, "cases", "seconds"}``.
    Refuses checkpoints whose held-out cases differ (the curves would not compare).
    """
    if not checkpoints or refine < 2:
        raise ValueError("give at least one checkpoint and refine ≥ 2 (the challenge's areas "
                         "need two corrective clicks)")
    curve, areas, kinds, cases, seconds = [], [], {}, None, 0.0
    for name, checkpoint in checkpoints.items():
        res = run_clicks(checkpoint, Path(out_dir) / name, ks=(1,), refine=refine, mode="roi",
                         seed=seed, data_dir=data_dir, device=device)
        these = sorted({r["case"] for r in res["refinement"]})
        if cases is not None and these != cases:
            raise ValueError(f"{name}: held-out cases {these} differ from {cases}")
        cases, seconds = these, seconds + res["seconds"]
        curve += [{"model": name, **r} for r in res["curve"]]
        first, a = res["curve"][0], res["areas"]
        areas.append({"model": name, "first_dice": first["dice"], "first_nsd": first["nsd"],
                      "final_dice": a["final"]["dice"], "final_nsd": a["final"]["nsd"],
                      "gain_dice": a["final"]["dice"] - first["dice"],
                      "auc_dice": a["auc"]["dice"], "auc_nsd": a["auc"]["nsd"],
                      "DSC_AUC": a["challenge_auc"]["dice"],
                      "NSD_AUC": a["challenge_auc"]["nsd"]})
        kinds[name] = click_kinds(res["refinement"])
    return {"curve": curve, "areas": areas, "kinds": kinds, "cases": cases, "seconds": seconds}


def plot_curves(curve: list[dict], title: str = ""):
    """Mean Dice after each click, one line per model (:func:`compare_refinement`'s curve)."""
    import matplotlib.pyplot as plt

    if not curve:
        raise ValueError("no refinement curve")
    fig, ax = plt.subplots(figsize=(6.4, 3.6), constrained_layout=True)
    for name in dict.fromkeys(r["model"] for r in curve):
        rows = [r for r in curve if r["model"] == name]
        ax.plot([r["click"] for r in rows], [r["dice"] for r in rows], "o-", label=name)
    ax.set_xlabel("clicks (1 = the first random lesion click, then corrective clicks)")
    ax.set_ylabel("Dice (%)")
    ax.set_xticks(sorted({r["click"] for r in curve}))
    ax.legend()
    if title:
        ax.set_title(title, fontsize=10)
    return fig
