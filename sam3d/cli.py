"""The ``sam3d`` command line: ``info``, ``bench``, ``train``, ``evaluate``, ``predict``.

Exit status: 0 success, 1 a failed measurement, 2 bad arguments or input."""

from __future__ import annotations

import argparse
import json
import sys

from .config import CONFIGS
from .inference.components import KEEP
from .utils.files import atomic_write_text

KEEP_HELP = ("what a mask keeps: all (every predicted voxel, the paper) or clicked (the "
             "predicted components a positive click is on); default: the model's own (clicked "
             "for the *_maps variants, e.g. the book's real-CT model)")
ZOOM_HELP = ("zoom factor on a small lesion (1: none, the paper): the clicks are predicted first "
             "in a box of 1/ZOOM of the crop's edge, enlarged to the crop, kept where the "
             "clicked lesion fits in half of it; default: the model's own (2 for the *_maps "
             "variants, 1 otherwise); modes roi and objects")


def _info(args: argparse.Namespace) -> int:
    from .info import variant_report

    report = variant_report(args.variant)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:{width}s}  {value:,}" if isinstance(value, int)
              else f"{key:{width}s}  {value}")
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
        atomic_write_text(args.json, json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    # a step refused at the memory cap is a measurement ("needs more than the cap"), not a failure
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v
              and "exceeded_memory_cap_gib" not in v]
    if failed:
        print(f"sam3d bench: error: measurements failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from .engine.config import load_config, parse_overrides
    from .engine.loop import Trainer

    overrides = parse_overrides(args.set)
    if args.out_dir:
        overrides["out_dir"] = args.out_dir
    cfg = load_config(args.config, overrides)
    history = Trainer(cfg, resume=args.resume).run()
    if history:
        last = history[-1]
        what = cfg.variant if cfg.model == "sam3d" else f"baseline {cfg.model}"
        print(f"trained {cfg.name} ({what}): {len(history)} epoch(s), last val Dice "
              f"{last['val_dice']:.3f} -> {cfg.out_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointFile
    from .evaluation.protocol import EvalSettings
    from .evaluation.runner import evaluate_dataset
    from .inference.predict import load_for_inference

    # read once: the recorded protocol, the model and the recorded split all come from it
    checkpoint = CheckpointFile.read(args.checkpoint)
    args.protocol = args.protocol or _recorded_protocol(checkpoint)
    if args.protocol == "official":
        _check_official_flags(args)
    model, spec = load_for_inference(checkpoint, args.sam_checkpoint, args.dataset,
                                     args.device, data_dir=args.data)
    if args.protocol == "official":
        return _evaluate_official(args, model, spec, checkpoint)
    mode = args.mode or "both"
    modes = ("roi", "sliding") if mode == "both" else (mode,)
    prompt_free = not model.promptable
    if prompt_free and mode != "auto":
        raise ValueError(f"{args.checkpoint} holds a prompt-free model (it cannot use clicks): "
                         "evaluate it with --mode auto")
    if not prompt_free and mode == "auto":
        raise ValueError(f"{args.checkpoint} holds a click-prompted model: use --mode roi, "
                         "sliding or both")
    split = None if args.case else _split_of(args, checkpoint)  # explicit cases need none
    settings = EvalSettings(ks=tuple(args.k), modes=modes, refine=args.refine,
                            tolerance_mm=args.tolerance, seed=args.seed,
                            position=args.position)
    res = evaluate_dataset(model, spec, args.data, args.out, settings, part=args.part,
                           ids=args.case, split=split, clicks=args.clicks,
                           save_masks=args.save_masks, overwrite=args.overwrite,
                           device=args.device, keep=args.keep, zoom=args.zoom)
    for row in res["summary"]:
        print(f"{row['position']:>8} {row['mode']:>7} k={row['k']:<2} n={row['cases']:<3} "
              f"Dice {row['dice_mean']:.4f}"
              f" ± {row['dice_std']:.4f}  NSD {row['nsd_mean']:.4f} ± {row['nsd_std']:.4f}")
    print(f"results: {args.out}")
    return 0


def _recorded_protocol(checkpoint) -> str:
    """"official" for a model trained with ``preprocessing: official`` (it only knows that
    layout), else "sam3d"."""
    from .checkpoint import recorded_training_config

    recorded = recorded_training_config(checkpoint.contents)
    return "official" if recorded.get("preprocessing") == "official" else "sam3d"


def _split_of(args: argparse.Namespace, checkpoint):
    """The training run's split (recorded file, fold and seed; the held-out cases must be its
    test cases), with the ``--split-file``/``--fold``/``--split-seed`` given on top."""
    from .checkpoint import split_reference

    return split_reference(checkpoint.contents).replace(
        split_file=args.split_file, fold=args.fold, seed=args.split_seed)


def _check_official_flags(args: argparse.Namespace) -> None:
    """The official protocol is one thing: k random clicks, one 128³ ROI, NSD at 5 mm."""
    if args.mode not in (None, "roi"):
        raise ValueError(f"--protocol official scores one 128³ ROI per case: --mode {args.mode} "
                         "is for --protocol sam3d")
    for flag, value, allowed in (("--position", args.position, ("random",)),
                                 ("--refine", args.refine, (0,)),
                                 ("--tolerance", args.tolerance, (5.0,)),
                                 ("--zoom", args.zoom, (None, 1)),
                                 ("--keep", args.keep, (None, "all"))):
        if value not in allowed:
            raise ValueError(f"{flag} {value} is not part of the official protocol (random "
                             "clicks, no refinement, NSD at 5 mm, the whole 128³ ROI, every "
                             "predicted voxel): use --protocol sam3d")


def _evaluate_official(args: argparse.Namespace, model, spec, checkpoint) -> int:
    from .evaluation.runner import evaluate_dataset_official

    if not model.promptable:
        raise ValueError(f"{args.checkpoint} holds a prompt-free model: the official click "
                         "protocol needs a click-prompted one")
    res = evaluate_dataset_official(model, args.dataset or spec.name, args.data, args.out,
                                    ks=tuple(args.k),
                                    seed=args.seed, ids=args.case, part=args.part,
                                    split=None if args.case else _split_of(args, checkpoint),
                                    clicks=args.clicks,
                                    save_masks=args.save_masks, overwrite=args.overwrite,
                                    device=args.device)
    for row in res["summary"]:
        print(f"official k={row['k']:<2} n={row['cases']:<3} Dice {row['dice_mean']:.4f} ± "
              f"{row['dice_std']:.4f}  NSD {row['nsd_mean']:.4f} ± {row['nsd_std']:.4f}")
    print(f"results: {args.out}")
    return 0


def _parse_click(text: str) -> tuple[int, int, int]:
    try:
        d, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"click must be d,h,w integers, got {text!r}") from None
    return d, h, w


class _LabelledClick(argparse.Action):
    """``--click`` / ``--negative-click``: append ``(point, label)`` to one list, so the clicks
    keep the order given on the command line (label ``const``: 1 positive, 0 negative)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        prompts = list(getattr(namespace, self.dest, None) or [])
        prompts.append((values, self.const))
        setattr(namespace, self.dest, prompts)


def _predict(args: argparse.Namespace) -> int:
    from .inference.predict import load_for_inference, predict_file

    prompts = args.prompts or []
    if not any(label for _, label in prompts):
        raise ValueError("give at least one --click d,h,w (a positive click on the lesion); "
                         "a --negative-click alone marks no object")
    clicks, labels = [p for p, _ in prompts], [label for _, label in prompts]
    model, spec = load_for_inference(args.checkpoint, args.sam_checkpoint, args.dataset,
                                     args.device)
    res = predict_file(model, spec, args.image, clicks, out=args.out, mode=args.mode,
                       device=args.device, labels=labels, keep=args.keep, zoom=args.zoom)
    negative = len(labels) - sum(labels)
    used = "" if res.clicks_used == len(clicks) else \
        f", {res.clicks_used} of them inside the {args.mode} box"
    print(f"{res.path}: {int(res.mask.sum())} lesion voxels of {res.mask.size} from "
          f"{len(clicks)} click(s) ({len(clicks) - negative}+, {negative}−{used}) "
          f"({res.seconds:.1f} s)")
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
    train = sub.add_parser("train", help="train with a YAML recipe (torchrun for several GPUs)")
    train.add_argument("--config", required=True,
                       help="a shipped configuration name (smoke_phantoms, kits, …) or a YAML file")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a setting, e.g. --set epochs=3 --set bf16=true; "
                       "--set model=swin_unetr|unetr|dynunet_smoke trains a supervised "
                       "baseline with the same pipeline")
    train.add_argument("--out-dir", default=None, help="where checkpoints and metrics go")
    train.add_argument("--resume", action="store_true",
                       help="continue from out_dir/last.pt (the last complete epoch)")
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="the paper's click protocol on a prepared dataset")
    ev.add_argument("--checkpoint", required=True,
                    help="a sam3d checkpoint (best.pt / last.pt) or an official one "
                         "(last.pth.tar: give --dataset)")
    ev.add_argument("--sam-checkpoint", default=None, help="the SAM file it was trained on")
    ev.add_argument("--data", required=True, help="prepared dataset folder (dataset.json)")
    ev.add_argument("--dataset", default=None,
                    help="use this dataset's constants instead of the checkpoint's")
    ev.add_argument("--part", default="test", choices=("train", "val", "test"))
    ev.add_argument("--case", action="append", default=None, help="evaluate only these cases")
    ev.add_argument("--split-file", default=None,
                    help="a sam3d-split/1 file (default: the training run's, if it had one)")
    ev.add_argument("--k", type=int, nargs="+", default=[1, 3, 10], help="clicks per case")
    ev.add_argument("--protocol", choices=("sam3d", "official"), default=None,
                    help="official: the authors' test.py path on the files as stored (raw axis "
                         "order, their resampling, one 128³ ROI; kits, lits, pancreas, colon); "
                         "sam3d: canonical orientation, MONAI resampling, any files (default: "
                         "official for a model trained with preprocessing: official, else sam3d)")
    ev.add_argument("--mode", choices=("roi", "sliding", "both", "auto"), default=None,
                    help="sam3d protocol: roi, sliding, both (default) or auto (prompt-free "
                         "models: whole volume, no clicks); the official protocol is roi")
    ev.add_argument("--position", default="random",
                    choices=("random", "centre", "adjacent", "margin"),
                    help="where the clicks fall in the lesion: random (the official protocol) or "
                         "the prompt-position ablation's centre / adjacent / margin")
    ev.add_argument("--refine", type=int, default=0, help="error-driven clicks after the first")
    ev.add_argument("--tolerance", type=float, default=5.0, help="NSD tolerance (mm)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the test clicks")
    ev.add_argument("--fold", type=int, default=None,
                    help="official fold (default: the training run's, read from the checkpoint)")
    ev.add_argument("--split-seed", type=int, default=None,
                    help="seed of the 70/10/20 split for datasets without an official one "
                         "(default: the training run's, read from the checkpoint)")
    ev.add_argument("--clicks", default=None, help="replay the clicks of an earlier clicks.json")
    ev.add_argument("--keep", choices=KEEP, default=None, help=KEEP_HELP)
    ev.add_argument("--zoom", type=int, default=None, help=ZOOM_HELP)
    ev.add_argument("--save-masks", action="store_true")
    ev.add_argument("--overwrite", action="store_true")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", required=True, help="result folder")
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="segment the lesion under clicks in a scan (no label)")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--sam-checkpoint", default=None)
    pr.add_argument("--dataset", default=None,
                    help="use this dataset's constants instead of the checkpoint's")
    pr.add_argument("--image", required=True, help="NIfTI, NRRD/MHA file or DICOM folder")
    pr.add_argument("--click", type=_parse_click, action=_LabelledClick, const=1,
                    dest="prompts", metavar="D,H,W",
                    help="a positive click: d,h,w = slice,row,column of the input file "
                    "(repeatable; at least one)")
    pr.add_argument("--negative-click", type=_parse_click, action=_LabelledClick, const=0,
                    dest="prompts", metavar="D,H,W",
                    help="a negative click (\"not this\"), same coordinates (repeatable); "
                    "needs a model with the negative-click extension (negative_clicks=True, "
                    "e.g. tiny_interactive). Clicks of both kinds keep the order given: with "
                    "--mode objects a negative click must come after a positive one whose "
                    "box holds it")
    pr.add_argument("--mode", choices=("roi", "objects", "sliding"), default="roi")
    pr.add_argument("--keep", choices=KEEP, default=None, help=KEEP_HELP)
    pr.add_argument("--zoom", type=int, default=None, help=ZOOM_HELP)
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--out", required=True, help="mask file (.nii.gz, .nrrd, .mha)")
    pr.set_defaults(func=_predict)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """Errors that mean bad input or set-up rather than a bug (exit status 2)."""
    from .engine.loop import TrainError

    return (TrainError, FileExistsError)


def _utf8_streams() -> None:
    """Print our messages (×, →, ±) even where the locale says ASCII (a bare CI shell)."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if enc and enc != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _utf8_streams()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError, *_user_errors()) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"sam3d {args.command}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
