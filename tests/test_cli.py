"""The ``sam3d`` command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sam3d import cli
from sam3d.info import variant_report

REPO = Path(__file__).resolve().parents[1]


def test_info_json(capsys) -> None:
    assert cli.main(["info", "--variant", "vit_b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "vit_b"
    assert report["encoder_tuned"] == 15_209_984
    assert report["paper_total"] == 25_462_400
    assert report["encoder_total"] == 104_056_588
    assert report["decoder"] == 7_088_256
    assert report["prompt_encoder"] == 2_900_736
    assert report["official_optimised"] == 34_954_880


def test_info_text(capsys) -> None:
    assert cli.main(["info"]) == 0  # vit_b is the default
    out = capsys.readouterr().out
    assert "paper_total" in out and "25,462,400" in out and "15,209,984" in out
    assert "+263,424 unused" in out


def test_bad_variant_exits_non_zero(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["info", "--variant", "vit_q"])
    assert info.value.code != 0
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main([])  # a command is required
    assert info.value.code != 0


def test_errors_are_reported_not_raised(monkeypatch, capsys) -> None:
    import sam3d.info

    def boom(variant):
        raise ValueError("something is wrong")

    monkeypatch.setattr(sam3d.info, "variant_report", boom)
    assert cli.main(["info", "--variant", "tiny"]) == 2
    assert "sam3d info: error: something is wrong" in capsys.readouterr().err


def test_bench_command_writes_json(monkeypatch, tmp_path: Path, capsys) -> None:
    import sam3d.bench

    seen = {}

    def fake_run_bench(variant, device, threads, warmup, skip, mem_limit_gib):
        seen.update(
            variant=variant,
            device=device,
            threads=threads,
            warmup=warmup,
            skip=skip,
            mem=mem_limit_gib,
        )
        return {"variant": variant, "forward_fast": {"seconds": 1.0}}

    monkeypatch.setattr(sam3d.bench, "run_bench", fake_run_bench)
    out = tmp_path / "bench.json"
    assert (
        cli.main(
            [
                "bench",
                "--variant",
                "tiny",
                "--threads",
                "2",
                "--skip",
                "matmul,,train",
                "--mem-limit-gib",
                "3",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert seen == {
        "variant": "tiny",
        "device": "cpu",
        "threads": 2,
        "warmup": 1,
        "skip": ("matmul", "train"),
        "mem": 3.0,
    }
    assert json.loads(out.read_text())["forward_fast"] == {"seconds": 1.0}


def test_console_script() -> None:
    script = Path(sys.executable).parent / "sam3d"
    assert script.is_file(), "the sam3d console script is not installed in this environment"
    ok = subprocess.run(
        [str(script), "info", "--variant", "tiny"],
        cwd=REPO,
        capture_output=True,
        text=True, encoding="utf-8", errors="replace",
        timeout=120,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    lines = dict(
        line.split(None, 1)
        for line in ok.stdout.splitlines()
        if line.strip()[:1].isalpha() and len(line.split(None, 1)) == 2
    )
    assert lines["variant"].strip() == "tiny"
    assert lines["tuned"].strip() == f"{variant_report('tiny')['tuned']:,}"


def test_bench_failures_exit_non_zero(monkeypatch, capsys) -> None:
    import sam3d.bench

    def fake_run_bench(*args):
        return {
            "forward_fast": {"error": "RuntimeError: boom", "returncode": 1},
            "train_plain": {"error": "can't allocate memory", "exceeded_memory_cap_gib": 20.0},
        }

    monkeypatch.setattr(sam3d.bench, "run_bench", fake_run_bench)
    assert cli.main(["bench", "--variant", "tiny"]) == 1
    err = capsys.readouterr().err
    assert "forward_fast" in err and "train_plain" not in err  # a cap refusal is a result


def test_bench_rejects_bad_device(capsys) -> None:
    assert cli.main(["bench", "--device", "tpu"]) == 2
    assert "--device must be cpu or cuda" in capsys.readouterr().err
