"""The ``sam3d`` command line: ``info`` and ``bench`` (``train``/``evaluate``/``predict`` follow)."""

from __future__ import annotations

import argparse
import json
import sys

from .config import CONFIGS


def _info(args: argparse.Namespace) -> int:
    from .info import variant_report

    report = variant_report(args.variant)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:{width}s}  {value:,}" if isinstance(value, int) else f"{key:{width}s}  {value}")
    print("\npaper_total = encoder_tuned + one prompt encoder as the official code builds it "
          f"(+{report['official_unused_per_prompt_encoder']:,} unused token→image attention "
          "parameters sam3d does not build) + decoder")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import torch

    from .bench import run_bench

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {args.device!r}")
    skip = tuple(s for s in args.skip.split(",") if s)
    res = run_bench(args.variant, args.device, args.threads, args.warmup, skip, args.mem_limit_gib)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
        print(f"wrote {args.json}")
    # a step refused at the memory cap is a measurement ("needs more than the cap"), not a failure
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v
              and "exceeded_memory_cap_gib" not in v]
    if failed:
        print(f"sam3d bench: error: measurements failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sam3d", description="3DSAM-adapter, reproduced.")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="parameter counts of a model variant")
    info.add_argument("--variant", default="vit_b", choices=sorted(CONFIGS))
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)
    bench = sub.add_parser("bench", help="time and memory of the 3D forward and training step")
    bench.add_argument("--variant", default="vit_b", choices=sorted(CONFIGS))
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    bench.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    bench.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed one")
    bench.add_argument("--skip", default="", help="comma-separated measurement names to skip "
                       "(matmul, flops, forward_fast, forward_literal, sam2d, train_plain, …)")
    bench.add_argument("--mem-limit-gib", type=float, default=20.0,
                       help="CPU: cap each measurement's extra address space (GiB)")
    bench.add_argument("--json", default=None, help="also write the figures to this file")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"sam3d {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
