"""``sam3d bench``: wall time, peak memory and the compute floor of the 3D forward.

Every measurement runs in a fresh subprocess so that its peak memory is its own: on the CPU
the process's peak resident set (``ru_maxrss``), on CUDA ``max_memory_allocated``. A worker
can be capped (``--mem-limit-gib``) so that a step that would exhaust the machine fails with
an allocation error instead of invoking the OOM killer.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GIB = 1024**3


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def _cap_memory(limit_gib: float) -> None:
    """Limit the address space to what is mapped now plus ``limit_gib``."""
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    limit = int(vm + limit_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _peak(device: str) -> dict:
    import torch

    out = {"peak_rss_gib": round(_rss_gib(), 3)}
    if device.startswith("cuda"):
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    return out


def _model_inputs(variant: str, device: str):
    import torch

    from .build import build_sam3d

    torch.manual_seed(0)
    model = build_sam3d(variant).to(device)
    s = model.crop
    volume = torch.randn(1, 3, s, s, s, device=device)
    points = torch.tensor([[[s // 2, s // 2, s // 2]]], device=device)
    return model, volume, points


def work(kind: str, variant: str, device: str, warmup: int, opts: dict) -> dict:
    """One measurement (run inside the worker subprocess)."""
    import torch

    from .engine.precision import autocast

    if kind == "matmul":  # fp32 GEMM throughput: the compute floor's denominator
        n = 4096
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        best = min(_timed(lambda: a @ b, device, 1) for _ in range(3))
        return {"gflops": round(2 * n**3 / best / 1e9, 1)}
    if kind == "flops":  # forward FLOPs counted on the meta device (nothing is computed; the
        # model checks shapes only, so nothing reads a value)
        from torch.utils.flop_counter import FlopCounterMode

        from .build import build_sam3d

        with torch.device("meta"):
            model = build_sam3d(variant).eval()
            s = model.crop
            volume = torch.empty(1, 3, s, s, s)
            points = torch.zeros(1, 1, 3)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(volume, points)
        return {"tflops": round(counter.get_total_flops() / 1e12, 3)}
    if kind == "sam2d":  # segment-anything's ViT-B image encoder on one 1024² image
        from segment_anything import sam_model_registry

        encoder = sam_model_registry["vit_b"](checkpoint=None).image_encoder.to(device).eval()
        image = torch.randn(1, 3, 1024, 1024, device=device)
        before = _rss_gib()
        with torch.no_grad():
            seconds = _timed(lambda: encoder(image), device, warmup)
        return {"seconds": round(seconds, 2), "rss_before_gib": round(before, 3), **_peak(device)}
    model, volume, points = _model_inputs(variant, device)
    with autocast(device, bool(opts.get("bf16"))):  # the run's precision, not the model's
        return _model_work(kind, model, volume, points, device, warmup, opts)


def _model_work(kind: str, model, volume, points, device: str, warmup: int, opts: dict) -> dict:
    """The measurements of one model (:func:`work`, inside the run's autocast)."""
    import torch

    if kind == "forward":
        from .modeling.literal import literal_paths

        model.eval()
        literal = opts.get("path") == "literal"  # the official compositions, the reference
        before = _rss_gib()
        with torch.no_grad(), literal_paths(model, patch_embed=literal, decoder=literal):
            seconds = _timed(lambda: model(volume, points), device, warmup)
        return {"seconds": round(seconds, 2), "rss_before_gib": round(before, 3), **_peak(device)}
    if kind == "click":  # interactive: the first click embeds and decodes, a follow-up decodes
        model.eval()
        s = model.crop
        other = torch.tensor([[[s // 2, s // 2, s // 2], [s // 4, s // 3, s // 2]]],
                             device=device)
        before = _rss_gib()
        with torch.no_grad():
            emb: dict = {}

            # a model that tells a first prompt from corrections (click maps, click refiner):
            # the first click is its prompt, the follow-up a correction
            split = getattr(model, "takes_first_prompt", False)

            def first():
                emb["e"] = model.encode(volume)
                model.decode(emb["e"], points, **({"first_prompt": points.shape[1]} if split
                                                  else {}))

            first_s = _timed(first, device, warmup)
            follow_s = _timed(lambda: model.decode(emb["e"], other, **(
                {"first_prompt": 1} if split else {})), device, warmup)
        return {"first_click_seconds": round(first_s, 3),
                "follow_up_click_seconds": round(follow_s, 3),
                "embedding_gib": round(emb["e"].nbytes() / GIB, 3),
                "rss_before_gib": round(before, 3), **_peak(device)}
    if kind == "train":  # one optimisation step: forward, Dice+CE loss, backward
        from monai.losses import DiceCELoss

        model.train()
        model.grad_checkpointing = bool(opts.get("checkpointing"))
        loss_fn = DiceCELoss(include_background=False, softmax=True, to_onehot_y=True)
        label = (volume[:, :1] > 1.0).float()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(volume, points), label).backward()
            opt.step()

        before = _rss_gib()
        seconds = _timed(step, device, warmup)
        return {"seconds": round(seconds, 2), "rss_before_gib": round(before, 3), **_peak(device)}
    raise ValueError(f"unknown measurement {kind!r}")


def measure(kind: str, variant: str, device: str, threads: int | None, warmup: int,
            mem_limit_gib: float | None = None, **opts) -> dict:
    """Run :func:`work` in a fresh interpreter and return its JSON result (or the failure)."""
    spec = json.dumps({"kind": kind, "variant": variant, "device": device, "warmup": warmup,
                       "opts": opts, "threads": threads, "mem_limit_gib": mem_limit_gib})
    proc = subprocess.run([sys.executable, "-m", "sam3d.bench", "--worker", spec], check=False,
                          capture_output=True, text=True, encoding="utf-8", errors="replace")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        failed = {"error": tail[:300], "returncode": proc.returncode}
        if mem_limit_gib and "can't allocate memory" in tail:
            failed["exceeded_memory_cap_gib"] = mem_limit_gib
        return failed
    return json.loads(lines[-1])


def _worker(spec: str) -> None:
    cfg = json.loads(spec)
    import torch

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    if cfg["mem_limit_gib"]:
        _cap_memory(cfg["mem_limit_gib"])
    result = work(cfg["kind"], cfg["variant"], cfg["device"], cfg["warmup"], cfg["opts"])
    print(json.dumps(result), flush=True)


def run_bench(variant: str = "vit_b", device: str = "cpu", threads: int | None = None,
              warmup: int = 1, skip: tuple[str, ...] = (), mem_limit_gib: float = 20.0,
              log=print) -> dict:
    """All measurements of ``sam3d bench``; prints each figure as it arrives."""
    res: dict = {"variant": variant, "device": device,
                 "threads": threads or os.cpu_count(), "warmup": warmup}
    plan = [
        ("matmul", "matmul", {}),
        ("flops", "flops", {}),
        ("forward_fast", "forward", {"path": "fast"}),
        ("forward_literal", "forward", {"path": "literal"}),
        ("click", "click", {}),
        ("sam2d_vit_b_1024", "sam2d", {}),
        ("train_checkpointing", "train", {"checkpointing": True}),
        ("train_plain", "train", {"checkpointing": False}),
        ("forward_fast_bf16", "forward", {"path": "fast", "bf16": True}),
        ("train_checkpointing_bf16", "train", {"checkpointing": True, "bf16": True}),
    ]
    for name, kind, opts in plan:
        if any(s in name for s in skip):
            continue
        # a CPU training step takes minutes: warm up only on an accelerator
        steps = warmup if kind != "train" or device != "cpu" else 0
        res[name] = measure(kind, variant, device, threads, steps,
                            mem_limit_gib if device == "cpu" else None, **opts)
        log(f"{name:22s} {json.dumps(res[name])}")
    fast, lit, sam = (res.get(k, {})
                      for k in ("forward_fast", "forward_literal", "sam2d_vit_b_1024"))
    if "seconds" in fast and "seconds" in sam:
        res["ratio_fast_vs_sam2d_time"] = round(fast["seconds"] / sam["seconds"], 2)
    if "seconds" in fast and "seconds" in lit:
        res["speedup_fast_vs_literal"] = round(lit["seconds"] / fast["seconds"], 2)
        res["ratio_fast_vs_literal_peak"] = round(fast["peak_rss_gib"] / lit["peak_rss_gib"], 2)
    click = res.get("click", {})
    if "follow_up_click_seconds" in click:
        res["follow_up_vs_first_click"] = round(
            click["follow_up_click_seconds"] / click["first_click_seconds"], 3)
    if "tflops" in res.get("flops", {}) and "gflops" in res.get("matmul", {}):
        floor = res["flops"]["tflops"] * 1e3 / res["matmul"]["gflops"]
        res["compute_floor_seconds"] = round(floor, 1)
        if "seconds" in fast:
            res["fast_vs_floor"] = round(fast["seconds"] / floor, 2)
    for key in ("ratio_fast_vs_sam2d_time", "speedup_fast_vs_literal", "ratio_fast_vs_literal_peak",
                "follow_up_vs_first_click", "compute_floor_seconds", "fast_vs_floor"):
        if key in res:
            log(f"{key:28s} {res[key]}")
    return res


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", required=True)
    _worker(parser.parse_args().worker)
