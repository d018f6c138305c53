"""``sam3d bench``: measurements in worker subprocesses, and the derived ratios."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import sam3d.bench
from sam3d.bench import measure, run_bench

CALLS = {
    "forward": (("forward", "tiny", "cpu", 2, 0), {"path": "fast"}),
    "flops": (("flops", "vit_b", "cpu", 2, 0), {}),
    "matmul": (("matmul", "tiny", "cpu", 1, 0), {}),
    "nope": (("nope", "tiny", "cpu", 1, 0), {}),
    "click": (("click", "tiny", "cpu", 2, 0), {}),
}


@pytest.fixture(scope="module")
def results() -> dict:
    """Each worker pays ~5–8 s of interpreter and torch start-up; run two at a time."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(measure, *args, **kw) for k, (args, kw) in CALLS.items()}
        return {k: f.result() for k, f in futures.items()}


def test_forward(results) -> None:
    r = results["forward"]
    assert "error" not in r, r
    assert 0 < r["seconds"] < 60
    assert 0 < r["rss_before_gib"] <= r["peak_rss_gib"] < 8


def test_flops_vit_b(results) -> None:
    r = results["flops"]
    assert "error" not in r, r
    assert 7 < r["tflops"] < 9


def _gflops_here(n: int = 1024) -> float:
    """An independent in-process figure: the best of three n×n fp32 products on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker above
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * n**3 / best / 1e9


def test_matmul(results) -> None:
    r = results["matmul"]
    assert "error" not in r, r
    assert set(r) == {"gflops"} and math.isfinite(r["gflops"])
    # the same machine and thread count measured here: a generous factor (the machine may be
    # busy), still far tighter than a wrong unit (10³) or FLOP count (n = 4096 → 4096×)
    here = _gflops_here()
    assert here / 30 < r["gflops"] < here * 30, (r["gflops"], here)


def test_matmul_is_the_gemm_flop_count_over_the_best_time(monkeypatch) -> None:
    """In process, with the timer replaced: 2·4096³ FLOP over the fastest of three runs."""
    times = iter([4.0, 2.0, 3.0])
    calls = []

    def timed(fn, device, warmup):
        calls.append((device, warmup))
        return next(times)

    monkeypatch.setattr(sam3d.bench, "_timed", timed)
    assert sam3d.bench.work("matmul", "tiny", "cpu", 0, {}) == {
        "gflops": round(2 * 4096**3 / 2.0 / 1e9, 1)}  # 68.7; the mean time would give 45.8
    assert calls == [("cpu", 1)] * 3


def test_click(results) -> None:
    r = results["click"]
    assert "error" not in r, r
    assert r["first_click_seconds"] > 0 and r["follow_up_click_seconds"] > 0
    assert 0 < r["embedding_gib"] < r["peak_rss_gib"]


def test_failing_worker_reports_error(results) -> None:
    r = results["nope"]
    assert set(r) == {"error", "returncode"}
    assert r["returncode"] != 0
    assert "unknown measurement 'nope'" in r["error"]


def test_run_bench_derives_ratios(monkeypatch) -> None:
    canned = {
        ("matmul", None): {"gflops": 100.0},
        ("flops", None): {"tflops": 8.0},
        ("forward", "fast"): {"seconds": 160.0, "peak_rss_gib": 4.0},
        ("forward", "literal"): {"seconds": 320.0, "peak_rss_gib": 16.0},
        ("sam2d", None): {"seconds": 2.0},
        ("click", None): {"first_click_seconds": 80.0, "follow_up_click_seconds": 4.0},
    }
    calls = []

    def fake_measure(kind, variant, device, threads, warmup, mem_limit_gib=None, **opts):
        calls.append((kind, opts, warmup, mem_limit_gib))
        if opts.get("bf16"):
            return {"seconds": 1.0}
        return canned.get((kind, opts.get("path")), {"seconds": 1.0, "peak_rss_gib": 1.0})

    monkeypatch.setattr(sam3d.bench, "measure", fake_measure)
    res = run_bench(
        "vit_b", "cpu", threads=2, warmup=1, skip=(), mem_limit_gib=5.0, log=lambda *_: None
    )
    assert res["ratio_fast_vs_sam2d_time"] == 80.0
    assert res["speedup_fast_vs_literal"] == 2.0
    assert res["ratio_fast_vs_literal_peak"] == 0.25
    assert res["compute_floor_seconds"] == 80.0  # 8 TFLOP at 100 GFLOP/s
    assert res["fast_vs_floor"] == 2.0
    assert res["follow_up_vs_first_click"] == 0.05
    kinds = [kind for kind, *_ in calls]
    assert set(kinds) == {"matmul", "flops", "forward", "click", "sam2d", "train"}
    assert {c[1].get("path") for c in calls if c[0] == "forward"} == {"fast", "literal"}
    assert {c[1].get("checkpointing") for c in calls if c[0] == "train"} == {True, False}
    assert all(w == 0 for kind, _, w, _ in calls if kind == "train")  # training steps: no warmup
    assert all(m == 5.0 for *_, m in calls)
    calls.clear()
    res = run_bench("tiny", "cuda", skip=("train", "literal", "sam2d"), log=lambda *_: None)
    assert [c[0] for c in calls] == ["matmul", "flops", "forward", "click", "forward"]
    assert all(m is None for *_, m in calls)  # no address-space cap on CUDA
    assert "speedup_fast_vs_literal" not in res and "train_plain" not in res
