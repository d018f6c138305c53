"""Convert a downloaded benchmark dataset, or your own image/label folders, to the common
layout <out>/<case>/{image,label}.nii.gz + <out>/dataset.json.

    python data_scripts/prepare_dataset.py --dataset NAME [--raw data/raw]
        [--out data/prepared/NAME] [--cases 0-9] [--overwrite]
    python data_scripts/prepare_dataset.py --images DIR --labels DIR --name NAME --target T
        --out DIR [--label-names 0=background,1=tumour] [--overwrite]

Every case is checked (readable, 3D, same grid, finite image, integer label); the good cases
are written even when others fail. Exit status: 0 done, 2 bad arguments or bad input data
(each problem printed with its file name).
"""

from __future__ import annotations

import argparse
import sys
import warnings

PROG = "prepare_dataset"


def _label_names(text: str) -> dict[int, str]:
    try:
        pairs = (item.split("=", 1) for item in text.split(","))
        return {int(k): v.strip() for k, v in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected e.g. 0=background,1=tumour"
                                         ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("kits", "pancreas", "lits", "colon"),
                        help="a benchmark dataset downloaded with download_datasets.py")
    parser.add_argument("--raw", default="data/raw",
                        help="raw root (holding <dataset>/) or the dataset's raw folder")
    parser.add_argument("--cases", default=None, help="case numbers, e.g. 0-9 or 3,5,7")
    parser.add_argument("--images", help="your own folder of images (NIfTI / NRRD / MHA)")
    parser.add_argument("--labels", help="your own folder of label maps")
    parser.add_argument("--name", help="dataset name (with --images)")
    parser.add_argument("--target", type=int, help="label value of the lesion (with --images)")
    parser.add_argument("--label-names", type=_label_names, default=None,
                        help="label meanings, e.g. 0=background,1=tumour (with --images)")
    parser.add_argument("--out", help="output folder (default data/prepared/<name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite cases already prepared from the same files")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    folder_mode = args.images is not None or args.labels is not None
    if folder_mode == (args.dataset is not None):
        parser.error("give either --dataset NAME or --images DIR --labels DIR")
    if folder_mode:
        missing = [f"--{o}" for o in ("images", "labels", "name", "target", "out")
                   if getattr(args, o) is None]
        if missing:
            parser.error(f"with --images, also give {' '.join(missing)}")
        if args.cases is not None:
            parser.error("--cases only applies to --dataset")

    from sam3d.data.prepare import PrepareError, PrepareWarning, prepare_dataset, prepare_folder
    from sam3d.data.sources import parse_cases

    warnings.simplefilter("ignore", PrepareWarning)  # printed from the report below
    try:
        if folder_mode:
            report = prepare_folder(args.images, args.labels, args.out, name=args.name,
                                    target=args.target, labels=args.label_names,
                                    overwrite=args.overwrite)
        else:
            cases = parse_cases(args.cases) if args.cases else None
            out = args.out or f"data/prepared/{args.dataset}"
            report = prepare_dataset(args.dataset, args.raw, out, cases=cases,
                                     overwrite=args.overwrite)
    except PrepareError as exc:
        if exc.report is not None:
            _summary(exc.report)
        for problem in exc.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    except ValueError as exc:  # e.g. a malformed --cases
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    _summary(report)
    return 0


def _summary(report) -> None:
    for message in report.warnings:
        print(f"{PROG}: warning: {message}", file=sys.stderr)
    print(f"{report.name}: {len(report.written)} case(s) written, {len(report.kept)} already "
          f"prepared; index {report.index}")


if __name__ == "__main__":
    sys.exit(main())
