"""Write the real-CT training dataset (sam3d.data.real_dataset): LiTS 117's lesion-level
split plus synthetic tumours in real liver (and, from Python, lung), with its split file.

    python data_scripts/make_real_dataset.py [--samples data/samples] [--out data/real_ct]
        [--seed 0] [--per-source 6] [--phantoms 0] [--lesion-cases data/real_ct_lesions]

``--lesion-cases DIR`` also writes one evaluation case per held-out LiTS 117 lesion of at
least 100 voxels (that lesion the only target, the others excluded) with its split file, for
the per-lesion click scores of ``book_real``.

Idempotent: a second run with the same arguments writes nothing. Fetches the samples first
when they are missing (as data_scripts/fetch_samples.py does).
"""

from __future__ import annotations

import argparse
import sys

from sam3d.data.real_dataset import RealDatasetSpec, write_lesion_cases, write_real_dataset
from sam3d.data.samples import SampleDataError, fetch_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="data/samples")
    parser.add_argument("--out", default="data/real_ct")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-source", type=int, default=RealDatasetSpec.per_source,
                        help="synthetic cases per source (default %(default)s)")
    parser.add_argument("--phantoms", type=int, default=0)
    parser.add_argument("--lesion-cases", default=None, metavar="DIR",
                        help="also write one case per held-out lesion (≥ 100 voxels) here")
    args = parser.parse_args(argv)
    try:
        spec = RealDatasetSpec(seed=args.seed, per_source=args.per_source,
                               phantoms=args.phantoms)
        fetch_samples(args.samples)
        root = write_real_dataset(args.out, args.samples, spec)
        if args.lesion_cases:
            print(f"held-out lesion cases: {write_lesion_cases(root, args.lesion_cases)}")
    except (ValueError, SampleDataError) as exc:
        print(f"make_real_dataset: error: {exc}", file=sys.stderr)
        return 1
    print(f"real-CT dataset ready: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
