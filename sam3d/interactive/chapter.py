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

    Smoke mode without ``checkpoint``: the book's real-CT model (``book_real``: the tiny
    variant trained on LiTS 117's training slab and synthetic tumours in real livers, trained
    on first use, :func:`sam3d.experiments.real_ct.real_model`). Full mode
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
    from ..experiments.real_ct import real_model

    run = real_model(runs_root)
    return Path(run["checkpoint"]), ("real-CT smoke model (book_real: tiny variant trained "
                                     "minutes on a CPU on LiTS 117's training slab and "
                                     "synthetic tumours in real livers) — not the paper's model")


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


def held_out_lesion(label: np.ndarray) -> np.ndarray:
    """The largest held-out lesion of the real-CT split of LiTS 117 (the cut
    :func:`sam3d.data.real_dataset.write_real_dataset` makes, :mod:`sam3d.data.lesion_split`)
    in its ``label`` (the sample's X×Y×Z array): X×Y×Z bool. No model trained by sam3d's smoke
    recipes has seen it."""
    from ..data.real_dataset import held_out_lesions, lesion_mask

    return lesion_mask(label, held_out_lesions(label)[0])


def clicked_lesion(tumour: np.ndarray, click) -> np.ndarray:
    """The lesion a click is on: the 26-connected component of ``tumour`` (``D×H×W``, nonzero
    = tumour) holding voxel ``click`` (d, h, w); all False when the click is not on tumour."""
    from ..data.lesion_split import lesion_components

    comp, _ = lesion_components(np.asarray(tumour) != 0, 1)
    at = comp[tuple(int(v) for v in click)]
    return comp == at if at else np.zeros(comp.shape, dtype=bool)


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
    """Paper (3DSAM-adapter, LiTS test set mean) next to this run's Dice of the clicked lesion
    of one case."""
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
    table["scope"] = (f"paper: LiTS test set mean, every tumour of a volume; this run: the "
                      f"clicked lesion of sample case {case} only")
    return table
