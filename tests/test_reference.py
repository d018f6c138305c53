"""The paper's reported tables ship with the package, unchanged from the transcription."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sam3d.reference import TABLES, paper_metric, paper_rows, paper_tuned_params_M

SHARED = Path(__file__).resolve().parents[2] / "shared" / "paper"


def test_reported_values_are_read_as_numbers() -> None:
    t1 = paper_rows("table1")
    ours = [r for r in t1 if r["method"] == "3DSAM-adapter" and r["prompt"] == "1 pt/volume"]
    assert len(ours) == 1 and paper_metric(ours[0], "kits", "dice") == 73.78
    assert paper_metric(ours[0], "lits", "nsd") == 69.55
    sam = [r for r in t1 if r["method"] == "SAM-B"]
    assert len(sam) == 3 and all(r["tuned_params_M"] is None for r in sam)
    t2 = {r["method"]: r["tuned_params_image_encoder_M"] for r in paper_rows("table2")}
    assert t2 == {"Full fine-tuning": 89.67, "Adapter": 7.61, "Pro-tuning": 7.17,
                  "ST-Adapter": 7.15, "Med-tuning": 11.10, "3DSAM-adapter": 15.21}
    assert [r["levels_with_prompt"] for r in paper_rows("table3")] == \
        ["1+2+3+4", "1+4", "2+4", "3+4", "4"]


def test_paper_parameter_counts() -> None:
    """The figures the Architecture chapter sets beside its own counts: the paper's Table 2
    (tuned image encoder) and Table 1 (#Tuned Params, the same for the three prompt rows)."""
    assert paper_tuned_params_M() == {"image_encoder": 15.21, "model": 25.46}
    assert paper_tuned_params_M("Adapter") == {"image_encoder": 7.61, "model": None}
    assert paper_tuned_params_M("nnU-Net") == {"image_encoder": None, "model": 30.76}
    assert paper_tuned_params_M("SAM-B") == {"image_encoder": None, "model": None}
    with pytest.raises(ValueError, match="neither"):
        paper_tuned_params_M("LoRA")


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown table"):
        paper_rows("table9")
    row = paper_rows("table3")[0]
    with pytest.raises(ValueError, match="unknown dataset"):
        paper_metric(row, "brain", "dice")
    with pytest.raises(ValueError, match="metric"):
        paper_metric(row, "kits", "hd95")


@pytest.mark.skipif(not SHARED.is_dir(),
                    reason="the shared transcription is not beside the checkout")
def test_package_copy_equals_the_transcription() -> None:
    for name in TABLES.values():
        ours = (Path(__file__).resolve().parents[1] / "sam3d" / "reference" / name)
        assert ours.read_text(encoding="utf-8") == (SHARED / name).read_text(encoding="utf-8")
        assert list(csv.DictReader((SHARED / name).read_text(encoding="utf-8").splitlines()))
