"""Recompute a dataset's clip window and foreground mean/std over its training split and print
them beside the official code's constants (the paper reports none).

    python data_scripts/compute_stats.py --data data/prepared/kits --dataset kits \
        [--fold 0 | --split-file F] [--foreground any|target|both] [--json out.json]

Exit status 2 on bad arguments or input (missing/unprepared folder, unreadable volume).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from sam3d.data.io import VolumeError
from sam3d.data.layout import LayoutError, read_index
from sam3d.data.specs import SPECS
from sam3d.data.splits import SplitError, resolve_split
from sam3d.data.stats import compute_statistics, statistics_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="prepared dataset folder (dataset.json)")
    parser.add_argument("--dataset", default="custom", choices=sorted(SPECS))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--split-file", default=None)
    parser.add_argument("--seed", type=int, default=0, help="seed of the 70/10/20 split")
    parser.add_argument("--foreground", choices=("any", "target", "both"), default="both")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        index = read_index(args.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a partly prepared official dataset is fine here
            split = resolve_split(args.dataset, index.case_ids(), split_file=args.split_file,
                                  fold=args.fold, seed=args.seed)
        train = split["train"] or index.case_ids()
        kinds = ("any", "target") if args.foreground == "both" else (args.foreground,)
        recomputed = {k: compute_statistics(index, train, foreground=k, progress=True)
                      for k in kinds}
    except (LayoutError, SplitError, VolumeError, ValueError) as exc:
        print(f"compute_stats: error: {exc}", file=sys.stderr)
        return 2
    rows = statistics_rows(args.dataset, {f"foreground={k}": v for k, v in recomputed.items()})
    for r in rows:
        if r["window_low"] is None:
            print(f"{r['source']:<48} {r.get('note', '')}")
        else:
            print(f"{r['source']:<48} window [{r['window_low']:g}, {r['window_high']:g}] HU  "
                  f"mean {r['mean']:.3f}  std {r['std']:.3f}"
                  + (f"  ({r['cases']} training cases)" if r["cases"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
