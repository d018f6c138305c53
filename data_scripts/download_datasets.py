"""Download the paper's benchmark datasets (KiTS21, MSD Pancreas, LiTS17 via MSD Task03, MSD
Colon) into <raw>/<dataset>/, resumably and, where checksums exist, verified.

    python data_scripts/download_datasets.py --dataset {kits,pancreas,lits,colon,all}
        [--raw data/raw] [--cases 0-9] [--base-url URL] [--checksums FILE]
        [--delete-archives] [--quiet]

Interrupted downloads resume on the next run; finished files are not fetched again. A mirror
that re-packs the files comes with a checksums file from its operator (sam3d-checksums/1 JSON,
SHA-256 per remote path): --checksums verifies every file with it instead of the published
md5s. Exit status: 0 done, 1 a download failed, 2 bad arguments or a malformed checksums
file. Sources, sizes and licences: data_scripts/README.md. Then run
data_scripts/prepare_dataset.py.
"""

from __future__ import annotations

import argparse
import sys

PROG = "download_datasets"
DATASETS = ("kits", "pancreas", "lits", "colon")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=(*DATASETS, "all"))
    parser.add_argument("--raw", default="data/raw", help="raw root (default data/raw)")
    parser.add_argument("--cases", default=None,
                        help="KiTS case numbers, e.g. 0-9 or 0,5,10-12 (default: all 300)")
    parser.add_argument("--base-url", default=None,
                        help="replace every download host with this URL (a mirror)")
    parser.add_argument("--checksums", default=None, metavar="FILE",
                        help="local sam3d-checksums/1 JSON file of SHA-256s (from a mirror's "
                             "operator) replacing the published md5s; every file needs an entry")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each MSD tar once it is extracted")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    names = DATASETS if args.dataset == "all" else (args.dataset,)
    if args.cases is not None and "kits" not in names:
        parser.error("--cases only applies to --dataset kits (the others are single archives)")

    from sam3d.data.sources import DownloadError, download_dataset, load_checksums, parse_cases

    checksums = None
    if args.checksums is not None:
        try:
            checksums = load_checksums(args.checksums)
        except ValueError as exc:
            print(f"{PROG}: error: --checksums: {exc}", file=sys.stderr)
            return 2
    cases = None
    if args.cases is not None:
        try:
            cases = parse_cases(args.cases)
        except ValueError as exc:
            parser.error(str(exc))
    for name in names:
        try:
            where = download_dataset(name, args.raw, cases=cases if name == "kits" else None,
                                     base_url=args.base_url, progress=not args.quiet,
                                     keep_archives=not args.delete_archives,
                                     checksums=checksums)
        except DownloadError as exc:
            print(f"{PROG}: error: {name}: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:  # e.g. a KiTS case number that does not exist
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
        print(f"{name}: raw files in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
