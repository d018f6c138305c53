"""GPU estimates per chapter: the arithmetic on the measured step times, in book order."""

from __future__ import annotations

import json

import pytest

from sam3d.experiments.chapters import chapters
from sam3d.experiments.gpu_cost import chapter_estimates, main


def test_estimates_follow_the_recipe_and_the_split(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"device": "cuda", "train_plain": {"seconds": 1.0},
                                 "forward_fast": {"seconds": 0.5}}), encoding="utf-8")
    rows = {r["chapter"]: r for r in chapter_estimates("kits", bench)}
    assert list(rows) == [p.stem for p in chapters()]
    train = 500 * (209 * 1.0 + 30 * 0.5)  # KiTS fold 0: 209 train, 30 val, 61 test
    assert rows["03_training"]["hours"] == pytest.approx((train + 61 * 0.5) / 3600)
    assert rows["05_table2_peft"]["hours"] == pytest.approx(6 * 8 * train / 3600)
    assert rows["07_feature_level"]["hours"] == pytest.approx(5 * train / 3600)
    assert rows["08_clicks_refinement"]["hours"] == pytest.approx(8 * 61 * 0.5 / 3600)
    assert main(["--dataset", "lits", "--bench", str(bench)]) == 0
    assert "estimates, not measured runs" in capsys.readouterr().out
