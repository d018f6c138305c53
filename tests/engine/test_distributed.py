"""The training context (sam3d.engine.distributed): device resolution, the single-process
context (no process group, the model unwrapped, only rank 0 logs), and two real gloo ranks on the
CPU: the metric mean weighs every value of every rank, DDP averages the gradients."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sam3d.engine import distributed as D
from sam3d.engine.distributed import DistContext, resolve_device, setup_distributed

CPU = torch.device("cpu")


def test_resolve_device(monkeypatch) -> None:
    assert resolve_device("cpu") == CPU and resolve_device("meta", 3) == torch.device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == CPU
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", 2) == torch.device("cuda", 2)  # the local rank's device
    assert resolve_device("cuda", 1) == torch.device("cuda", 1)


def test_single_process_context(monkeypatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    ctx = setup_distributed("cpu", progress=False)
    assert ctx == DistContext(0, 1, 0, CPU, False) and ctx.is_main
    assert not dist.is_initialized()  # one process: no process group
    model = nn.Linear(2, 2)
    assert ctx.wrap(model) is model
    ctx.barrier()
    ctx.close()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup_distributed("cpu") == DistContext(0, 1, 0, CPU, True)


def test_mean_weighs_values_not_ranks() -> None:
    ctx = DistContext(0, 1, 0, CPU)
    assert ctx.mean([1.0, 2.0, 6.0]) == pytest.approx(3.0)
    assert ctx.mean([]) != ctx.mean([])  # nothing to average: NaN, not a ZeroDivisionError


def test_only_the_main_rank_logs_and_shows_progress(capsys) -> None:
    main, other = DistContext(0, 1, 0, CPU), DistContext(1, 2, 1, CPU)
    main.log("from rank 0")
    other.log("from rank 1")
    assert capsys.readouterr().err == "from rank 0\n"
    items = [1, 2, 3]
    assert other.progress(items, "x") is items
    assert DistContext(0, 1, 0, CPU, progress_bars=False).progress(items, "x") is items
    bar = main.progress(items, "epoch")
    assert bar is not items and list(bar) == items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, results) -> None:
    """One torchrun-like rank: the environment torchrun sets, then the context's own set-up."""
    try:
        os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        torch.set_num_threads(1)
        ctx = setup_distributed("cpu", progress=False)
        # rank 0 has three values, rank 1 one: the mean of all four, not of the two means
        mean = ctx.mean([1.0, 2.0, 3.0] if rank == 0 else [10.0])
        torch.manual_seed(0)  # the same initial weights on both ranks
        model = ctx.wrap(nn.Linear(2, 1, bias=False))
        wrapped = isinstance(model, DistributedDataParallel)
        model(torch.full((1, 2), float(rank + 1))).sum().backward()  # grad = the input
        grad = model.module.weight.grad.tolist()
        ctx.barrier()
        ctx.close()
        results.put((rank, mean, wrapped, grad, ctx.is_main, dist.is_initialized()))
    except BaseException:  # report, so the parent fails with the rank's traceback
        results.put((rank, traceback.format_exc()))


def test_two_gloo_ranks() -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    procs = [context.Process(target=_rank, args=(r, port, results)) for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = {r[0]: r[1:] for r in (results.get(timeout=90) for _ in procs)}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank in (0, 1):
        assert not isinstance(got[rank][0], str), got[rank][0]
        mean, wrapped, grad, is_main, still_initialised = got[rank]
        assert mean == pytest.approx(16.0 / 4)
        assert wrapped and is_main == (rank == 0) and not still_initialised
        assert grad == [[1.5, 1.5]]  # (1 + 2) / 2, exact in binary: averaged over the ranks


def test_mean_reduces_the_sum_and_the_count(monkeypatch) -> None:
    """What ``mean`` hands to ``all_reduce`` (here another rank's [sum, count] is added)."""
    sent = []

    def all_reduce(t):
        sent.append(t.clone())
        t += torch.tensor([10.0, 1.0], dtype=torch.float64)

    monkeypatch.setattr(D.dist, "all_reduce", all_reduce)
    assert DistContext(0, 2, 0, CPU).mean([1.0, 2.0, 3.0]) == pytest.approx(4.0)
    assert sent[0].tolist() == [6.0, 3.0] and sent[0].dtype == torch.float64
