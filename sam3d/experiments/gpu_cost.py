"""What each chapter costs in full mode on a GPU: estimates from measured step times.

No full run of the book has been made on the project's machines, so these are *estimates*:
the ``vit_b`` step and forward times measured by ``sam3d bench`` on a GPU
(``benchmarks/vit_b_h200.json``) times the work the chapter's full mode does with the shipped
recipe on the official fold-0 split — model compute only (data loading, resampling and the
SAM 2D baseline's per-slice work are not counted)::

    python -m sam3d.experiments.gpu_cost --dataset kits

* an epoch: one training step per training volume (the official ``iterations_per_epoch``) and
  one ROI forward per validation volume;
* an evaluation: one ROI forward per test volume and per click setting or refinement click;
* Table 2's automatic models train on 256³ crops: 8× the voxels of a 128³ step, counted 8×.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..data.splits import official_split
from ..engine.config import load_config
from ..provenance import project_path

BENCH = "benchmarks/vit_b_h200.json"
AUTO_FACTOR = 8  # (256 / 128)³
TABLE2_MODELS = 6
TABLE3_MODELS = 5
POSITIONS = 4
KS = (1, 3, 10)
REFINE = 5


def step_times(bench: str | Path = BENCH) -> dict:
    """``{"device", "train_step", "forward"}`` (seconds) from a ``sam3d bench --json`` file."""
    doc = json.loads(project_path(bench).read_text(encoding="utf-8"))
    return {"device": doc.get("device", "?"), "train_step": float(doc["train_plain"]["seconds"]),
            "forward": float(doc["forward_fast"]["seconds"])}


def chapter_estimates(dataset: str = "kits", bench: str | Path = BENCH) -> list[dict]:
    """One row per chapter: ``chapter``, ``work`` (what is counted) and ``hours`` (estimate)."""
    t = step_times(bench)
    n = {part: len(ids) for part, ids in official_split(dataset, 0).items()}
    epochs = load_config(dataset, rehearsal=False).epochs
    epoch = n["train"] * t["train_step"] + n["val"] * t["forward"]
    train = epochs * epoch
    test = n["test"] * t["forward"]
    rows = [
        ("01_architecture", "one forward and the golden check", 2 * t["forward"]),
        ("02_data", "statistics and one crop (no model)", 0.0),
        ("03_training", f"{epochs} epochs × ({n['train']} steps + {n['val']} validation "
                        f"forwards), then {n['test']} test forwards", train + test),
        ("04_table1", f"{n['test']} test volumes × {len(KS)} click settings (model from "
                      "chapter 3; SAM 2D not counted)", len(KS) * test),
        ("05_table2_peft", f"{TABLE2_MODELS} automatic models × {epochs} epochs at 256³ "
                           f"(×{AUTO_FACTOR})", TABLE2_MODELS * AUTO_FACTOR * train),
        ("06_prompt_position", f"{POSITIONS} positions × {n['test']} test forwards",
         POSITIONS * test),
        ("07_feature_level", f"{TABLE3_MODELS} models × {epochs} epochs", TABLE3_MODELS * train),
        ("08_clicks_refinement", f"{n['test']} test volumes × ({len(KS)} + {REFINE} refinement) "
                                 "forwards", (len(KS) + REFINE) * test),
        ("09_interactive", "one ROI forward (model from chapter 3 on LiTS)", t["forward"]),
    ]
    return [{"chapter": c, "work": w, "hours": s / 3600, "device": t["device"]} for c, w, s in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sam3d.experiments.gpu_cost",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="kits", choices=("kits", "pancreas", "lits", "colon"))
    parser.add_argument("--bench", default=BENCH, help="a sam3d bench --json file")
    args = parser.parse_args(argv)
    rows = chapter_estimates(args.dataset, args.bench)
    print(f"estimated model compute per chapter, {args.dataset}, from {args.bench} "
          f"({rows[0]['device']}); estimates, not measured runs")
    for r in rows:
        print(f"{r['chapter']:<22} {r['hours']:8.2f} h  {r['work']}")
    print(f"{'total':<22} {sum(r['hours'] for r in rows):8.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
