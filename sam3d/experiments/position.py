"""Chapter 6, the prompt-position ablation: one click at the lesion's centre, adjacent to it, or
on its margin (and the official random lesion voxel), the same trained model, the same cases.

The paper reports this ablation only as a figure, saying the three positions give "almost the
same results"; it prints no numbers, so the "paper" column of the table is empty on purpose.
The positions are defined precisely in :mod:`sam3d.data.clicks` (largest lesion component,
depth from its Euclidean distance transform on the model's 1 mm grid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.click_store import load_clicks
from ..evaluation.protocol import CLICK_POSITIONS, protocol_name
from .training import checkpoint_config, evaluate_held_out, held_out_ids

PAPER_NOTE = ("The paper shows the prompt-position ablation only as a figure (\"almost the same "
              "results\" for centre, adjacent and margin clicks) and gives no numbers.")


def check_positions(positions) -> tuple[str, ...]:
    """``positions`` as a tuple: non-empty, each in ``CLICK_POSITIONS``, none twice."""
    positions = tuple(positions)
    if not positions or any(p not in CLICK_POSITIONS for p in positions):
        raise ValueError(f"positions must be among {CLICK_POSITIONS}, got {positions}")
    if len(set(positions)) != len(positions):
        raise ValueError(f"positions repeat: {positions}")
    return positions


def run_positions(checkpoint: str | Path, out_root: str | Path, *,
                  positions=CLICK_POSITIONS, k: int = 1, mode: str = "roi", seed: int = 0,
                  data_dir: str | Path | None = None, device: str = "cpu") -> dict:
    """Evaluate ``checkpoint`` with ``k`` click(s) at each position on its held-out split.

    One result folder per position under ``out_root``. Returns ``{"summary": rows (position,
    cases, dice, nsd in percent, fallbacks, seconds), "per_case": rows, "dirs": {position:
    folder}, "seconds"}``.
    """
    positions = check_positions(positions)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    summary, per_case, dirs, seconds = [], [], {}, 0.0
    for position in positions:
        dirs[position] = Path(out_root) / position
        res = evaluate_held_out(checkpoint, dirs[position], ks=(k,), modes=(mode,),
                                position=position, seed=seed, data_dir=data_dir, device=device)
        row = res["summary"][0]
        fallbacks = sum(bool(r["position_fallback"]) for r in res["rows"])
        summary.append({"position": position, "k": k, "cases": row["cases"],
                        "dice": 100 * row["dice_mean"], "dice_std": 100 * row["dice_std"],
                        "nsd": 100 * row["nsd_mean"], "nsd_std": 100 * row["nsd_std"],
                        "band_fallbacks": fallbacks, "seconds": res["seconds"]})
        per_case += [{**r, "dice": 100 * r["dice"], "nsd": 100 * r["nsd"]} for r in res["rows"]]
        seconds += res["seconds"]
    return {"summary": summary, "per_case": per_case, "dirs": dirs, "seconds": seconds}


def paper_rows(positions=CLICK_POSITIONS) -> list[dict]:
    """The paper's side of the table: no numbers (see :data:`PAPER_NOTE`)."""
    return [{"position": p, "dice": None, "nsd": None} for p in check_positions(positions)]


def position_table(summary: list[dict], mode: str):
    """Paper and this run side by side, one row per position in the run's order; the paper's
    cells say "not reported" (:data:`PAPER_NOTE`)."""
    from .report import side_by_side

    positions = [r["position"] for r in summary]
    table = side_by_side(paper_rows(positions), summary, on=["position"],
                         metrics=["dice", "nsd"], mode=mode)
    table = table.set_index("position").loc[positions].reset_index()
    for column in ("dice · paper", "nsd · paper"):
        table[column] = "not reported"
    return table


def spread(summary: list[dict], metric: str = "dice") -> float:
    """Largest minus smallest mean over the positions (percentage points)."""
    if metric not in ("dice", "nsd"):
        raise ValueError(f"metric must be 'dice' or 'nsd', got {metric!r}")
    if not summary:
        raise ValueError("no rows")
    values = [r[metric] for r in summary]
    return float(max(values) - min(values))


def case_clicks(dirs: dict[str, Path], case: str, k: int = 1) -> dict[str, np.ndarray]:
    """The clicks each position's evaluation used on ``case`` (model grid, ``k×3`` d, h, w)."""
    out = {}
    for position, folder in dirs.items():
        sets = {(c.case, c.protocol): c for c in load_clicks(Path(folder) / "clicks.json")}
        key = (case, protocol_name(k, position))
        if key not in sets:
            raise KeyError(f"{folder}: no clicks for {key}")
        out[position] = sets[key].array()
    return out


def model_grid_case(checkpoint: str | Path, case: str, data_dir: str | Path | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The (z-scored) image ``D×H×W`` and lesion mask ``D×H×W`` of ``case`` on the model grid,
    exactly as the evaluation saw them (the checkpoint's preprocessing)."""
    from ..checkpoint import CheckpointFile
    from ..data.layout import read_index
    from ..inference.predict import load_for_inference
    from ..inference.predictor import Predictor
    from ..provenance import project_path

    read = CheckpointFile.read(checkpoint)  # once: the recorded run and the model
    cfg = checkpoint_config(read)
    data = project_path(data_dir or cfg.data_dir)
    index = read_index(data)
    if case not in index.cases:
        raise KeyError(f"{data}: no case {case!r}")
    model, spec = load_for_inference(read, data_dir=data)
    entry = index.cases[case]
    loaded = Predictor(model, spec).load(entry.image, entry.label, entry.target)
    return loaded["image"][0].numpy(), loaded["label"][0].numpy() > 0.5


def plot_positions(image: np.ndarray, lesion: np.ndarray, clicks: dict[str, np.ndarray],
                   title: str = ""):
    """One row of three planes per position, each through that position's first click
    (``image``, ``lesion``: ``D×H×W`` on the model grid). Returns the figure."""
    import matplotlib.pyplot as plt

    from ..viz import show_planes

    if not clicks:
        raise ValueError("no clicks to show")
    fig, axes = plt.subplots(len(clicks), 3, figsize=(10, 3.1 * len(clicks)),
                             constrained_layout=True, squeeze=False)
    for row, (position, pts) in zip(axes, clicks.items(), strict=True):
        pts = np.asarray(pts).reshape(-1, 3)
        show_planes(image, lesion, point=tuple(int(v) for v in pts[0]), clicks=pts,
                    window=(-2.5, 2.5), axes=row)
        row[0].set_ylabel(f"{position}\n{tuple(int(v) for v in pts[0])}", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def held_out_cases(checkpoint: str | Path) -> list[str]:
    """The held-out cases of the checkpoint's training split."""
    return held_out_ids(checkpoint_config(checkpoint))
