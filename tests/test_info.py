"""Parameter accounting against the official counts (design notes §6)."""

from __future__ import annotations

import pytest
import torch

from sam3d import build_sam3d
from sam3d.info import encoder_breakdown, parameter_report, variant_report

VIT_B = {
    "encoder_tuned": 15_209_984,
    "paper_total": 25_462_400,
    "encoder_total": 104_056_588,
    "decoder": 7_088_256,
    "prompt_encoder": 2_900_736,
    "official_optimised": 34_954_880,
    "official_unused_per_prompt_encoder": 263_424,
    "prompt_encoders": 1,
    # everything the official code instantiates (123,801,484) minus the three unused prompt
    # encoders (3 × 3,164,160) and the unused token→image attention of the used one
    "total": 123_801_484 - 3 * 3_164_160 - 263_424,
}


@pytest.fixture(scope="module")
def vit_b_report() -> dict:
    return variant_report("vit_b")


@pytest.mark.parametrize("key", sorted(VIT_B))
def test_vit_b_counts(vit_b_report: dict, key: str) -> None:
    assert vit_b_report[key] == VIT_B[key]


def test_vit_b_identities(vit_b_report: dict) -> None:
    r = vit_b_report
    assert r["variant"] == "vit_b"
    assert r["tuned"] == r["encoder_tuned"] + r["prompt_encoder"] + r["decoder"] == 25_198_976
    assert r["prompt_encoder"] + r["official_unused_per_prompt_encoder"] == 3_164_160
    assert r["encoder_total"] - r["encoder_tuned"] == 88_846_604  # frozen (design notes §6)


def test_tiny_report_consistent_with_real_model() -> None:
    report = variant_report("tiny")
    model = build_sam3d("tiny")
    assert parameter_report(model) == report
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert report["tuned"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report["tuned"] == report["encoder_tuned"] + report["prompt_encoder"] + report["decoder"]
    assert report["paper_total"] == (
        report["encoder_tuned"]
        + report["prompt_encoder"]
        + report["official_unused_per_prompt_encoder"]
        + report["decoder"]
    )
    assert 0 < report["encoder_tuned"] < report["encoder_total"] < report["total"]


def test_report_with_overrides() -> None:
    auto = variant_report("tiny", prompt_levels=())
    assert auto["prompt_encoders"] == auto["prompt_encoder"] == 0
    assert auto["official_unused_per_prompt_encoder"] == 0
    assert auto["tuned"] == auto["paper_total"] == auto["encoder_tuned"] + auto["decoder"]
    four = variant_report("tiny", prompt_levels=(1, 2, 3, 4))
    base = variant_report("tiny")
    assert four["prompt_encoders"] == 4
    assert four["tuned"] == base["tuned"] + 3 * base["prompt_encoder"]


def test_unknown_variant() -> None:
    with pytest.raises(KeyError, match="known"):
        variant_report("vit_q")


def test_encoder_breakdown_sums() -> None:
    with torch.device("meta"):
        model = build_sam3d("vit_b")
    rows = encoder_breakdown(model)
    assert sum(n for _, n, _ in rows) == 104_056_588
    assert sum(n for _, n, tuned in rows if tuned) == 15_209_984
    table = {(name, tuned): n for name, n, tuned in rows}
    assert table[("blocks.*.adapter.linear1", True)] == 12 * (768 * 384 + 384)
    assert table[("blocks.*.attn.lr", False)] == 12
    assert table[("neck_3d.*.*", True)] == 7_868_416
