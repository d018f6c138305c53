"""The interactive chapter's non-widget steps: which checkpoint, which case, which default
clicks, and the paper-vs-this-run row of the headless segmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.clicks import ClickError, case_rng, check_clicks, lesion_clicks
from ..experiments.report import check_mode, side_by_side
from ..provenance import project_path

#: The paper's per-volume click counts (Table 1 rows of 3DSAM-adapter).
PAPER_CLICKS = (1, 3, 10)


def resolve_checkpoint(mode: str, checkpoint: str | Path | None,
                       runs_root: str | Path = "outputs/runs", *,
                       data_dir: str | Path = "data",
                       sam_checkpoint: str | Path | None = None) -> tuple[Path, str]:
    """The checkpoint to segment with and a label saying what it is.

    Smoke mode without ``checkpoint``: the book's shared smoke model (``book_smoke``: the tiny
    variant trained for ≈ 3 minutes on synthetic phantoms, trained on first use). Full mode
    without ``checkpoint``: the paper's LiTS model, ``sam3d train --config lits`` on
    ``data_dir/prepared/lits`` with ``sam_checkpoint`` (trained once by whichever chapter
    asks first, :func:`sam3d.experiments.training.train_full`).
    """
    mode = check_mode(mode)
    if checkpoint is not None:
        path = project_path(checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"CHECKPOINT {path} does not exist")
        return path, f"checkpoint {path.name}"
    if mode == "full":
        from ..experiments.training import train_full
        from ..rehearsal import LABEL, active

        run = train_full("lits", data_dir=project_path(data_dir) / "prepared" / "lits",
                         sam_checkpoint=None if sam_checkpoint is None
                         else project_path(sam_checkpoint))
        what = f"LiTS model ({LABEL})" if active() else "LiTS model (sam3d train --config lits)"
        return Path(run["checkpoint"]), what
    from ..engine.cached import trained_checkpoint

    path = trained_checkpoint("book_smoke", root=project_path(runs_root))
    return path, ("smoke model (book_smoke: tiny variant trained ≈ 3 min on synthetic "
                  "phantoms, never on CT) — not the paper's model")


def sample_case(data_dir: str | Path, case: str = "lits117") -> tuple[Path, Path, int]:
    """``(image, label, target label)`` of a sample CT (fetched on first use)."""
    from ..data.layout import read_index
    from ..data.samples import fetch_samples

    index = read_index(Path(fetch_samples(project_path(data_dir) / "samples")).parent)
    if case not in index.cases:
        raise ValueError(f"unknown sample case {case!r}; choose from {sorted(index.cases)}")
    entry = index.cases[case]
    if not entry.target:
        raise ValueError(f"sample case {case!r} has no lesion label to click on")
    return Path(entry.image), Path(entry.label), int(entry.target)


def default_clicks(clicks, n_clicks: int, lesion: np.ndarray, seed: int,
                   case: str) -> np.ndarray:
    """The headless run's clicks ``k×3`` (d, h, w): ``clicks`` when given, else ``n_clicks``
    seeded lesion voxels of ``lesion`` (``D×H×W``), as the test protocol draws them."""
    lesion = np.asarray(lesion) != 0
    if clicks is not None:
        pts = check_clicks(clicks, lesion.shape, "default click")
        if len(pts) == 0:
            raise ClickError("DEFAULT_CLICKS is empty; give at least one (d, h, w) or None")
        return pts
    if isinstance(n_clicks, bool) or not isinstance(n_clicks, int) or n_clicks < 1:
        raise ValueError(f"N_CLICKS must be a positive integer, got {n_clicks!r}")
    return lesion_clicks(lesion, n_clicks, case_rng(seed, case, f"test-k{n_clicks}"))


def comparison(dice_percent: float, n_clicks: int, mode: str, case: str):
    """Paper (3DSAM-adapter, LiTS test set mean) next to this run's Dice on one case."""
    from ..reference import paper_metric, paper_rows

    prompt = f"{n_clicks} pt{'s' if n_clicks > 1 else ''}/volume"
    paper = []
    if n_clicks in PAPER_CLICKS:
        row = next(r for r in paper_rows("table1")
                   if r["method"] == "3DSAM-adapter" and r["prompt"] == prompt)
        paper.append({"method": "3DSAM-adapter", "prompt": prompt,
                      "liver tumour Dice": paper_metric(row, "lits", "dice")})
    run = [{"method": "3DSAM-adapter", "prompt": prompt,
            "liver tumour Dice": round(float(dice_percent), 2)}]
    table = side_by_side(paper, run, ["method", "prompt"], ["liver tumour Dice"], mode)
    table["scope"] = f"paper: LiTS test set mean; this run: sample case {case} only"
    return table
