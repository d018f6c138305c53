"""Fetch the real sample CT volumes (LiTS case 117 crop, two lung tumour CTs, an abdominal CT)
from PyPI distributions, verify their SHA-256 and convert them to NIfTI under data/samples.

    python data_scripts/fetch_samples.py [--out data/samples] [--vendor DIR]

Idempotent: a second run downloads nothing. Exits non-zero with the missing files named when
the package registry cannot be reached.
"""

from __future__ import annotations

import argparse
import sys

from sam3d.data.samples import SampleDataError, fetch_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/samples")
    parser.add_argument("--vendor", default=None, help="where downloaded archives are kept")
    args = parser.parse_args(argv)
    try:
        index = fetch_samples(args.out, args.vendor)
    except SampleDataError as exc:
        print(f"fetch_samples: error: {exc}", file=sys.stderr)
        return 1
    print(f"samples ready: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
