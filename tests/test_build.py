"""Building variants, the tuning policy, and initialisation from SAM 2D checkpoints."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from sam3d import build_sam3d, get_config
from sam3d.build import apply_tuning_policy, load_sam_state, sha256_file

# encoder tensors that SAM does not have: initialised here, reported as "missing" by the loader
NEW_3D_KEYS = re.compile(
    r"depth_embed|patch_embed\.slice_embed\.|neck_3d\."
    r"|blocks\.\d+\.(adapter\.|attn\.rel_pos_d|attn\.lr)"
)


def expected_tuned(name: str) -> bool:
    """The paper's tuned encoder set, spelled out without the policy's regular expressions."""
    parts = name.split(".")
    if (
        name == "depth_embed"
        or name.startswith("patch_embed.slice_embed.")
        or parts[0] == "neck_3d"
    ):
        return True
    if parts[0] == "blocks":
        return parts[2] in ("norm1", "norm2", "adapter") or name.endswith("attn.rel_pos_d")
    return False


@pytest.fixture(scope="module")
def vit_b_meta():
    with torch.device("meta"):
        return build_sam3d("vit_b")


def test_vit_b_tuned_set(vit_b_meta) -> None:
    enc = vit_b_meta.image_encoder
    tuned = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert tuned == {n for n, _ in enc.named_parameters() if expected_tuned(n)}
    assert sum(p.numel() for n, p in enc.named_parameters() if n in tuned) == 15_209_984
    # the frozen SAM weights and the rel-pos scale
    for name in (
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.11.mlp.lin2.bias",
        "blocks.5.attn.rel_pos_h",
        "blocks.5.attn.rel_pos_w",
    ):
        assert name not in tuned
    assert all(not b.attn.lr.requires_grad for b in enc.blocks)
    assert len([n for n in tuned if n.endswith("rel_pos_d")]) == 12
    for module in (vit_b_meta.prompt_encoders, vit_b_meta.mask_decoder):
        assert all(p.requires_grad for p in module.parameters())


def test_apply_tuning_policy_is_idempotent_and_resets(vit_b_meta) -> None:
    model = vit_b_meta
    for p in model.parameters():
        p.requires_grad_(True)
    apply_tuning_policy(model, "paper")
    enc = model.image_encoder
    assert {n for n, p in enc.named_parameters() if p.requires_grad} == {
        n for n, _ in enc.named_parameters() if expected_tuned(n)
    }


def test_build_variants_and_overrides() -> None:
    model = build_sam3d("tiny")
    assert model.config is get_config("tiny")
    assert model.sam_checkpoint_sha256 is None
    assert list(model.prompt_encoders) == ["4"]
    model = build_sam3d("tiny", prompt_levels=(1, 4), num_queries=3)
    assert model.config.prompt_levels == (1, 4)
    assert list(model.prompt_encoders) == ["1", "4"]
    assert model.prompt_encoders["1"].layers[0].global_query.shape == (1, 3, 32)
    cfg = get_config("tiny").replace(
        depth=2, taps=(0, 1), global_attn_indexes=(1,), prompt_levels=(2,)
    )
    model = build_sam3d(cfg)
    assert len(model.image_encoder.blocks) == 2 and model.config is cfg
    with pytest.raises(KeyError, match="vit_z"):
        build_sam3d("vit_z")
    with pytest.raises(ValueError, match="prompt level 5"):
        build_sam3d("tiny", prompt_levels=(5,))
    with torch.device("meta"):
        assert sum(p.numel() for p in build_sam3d("vit_l").image_encoder.parameters()) > 3e8


# ----------------------------------------------------------------------------- SAM loading


def test_load_sam_state_copies_and_reports(fake_sam_state) -> None:
    torch.manual_seed(0)
    model = build_sam3d("tiny")
    state = fake_sam_state(model)
    report = load_sam_state(model, state, sha256="abc")
    enc = model.image_encoder
    sd = enc.state_dict()
    for key, value in state.items():
        if key.startswith("image_encoder.") and not key.startswith("image_encoder.neck."):
            assert torch.equal(sd[key.removeprefix("image_encoder.")], value), key
    for block in enc.blocks:
        a = block.attn
        torch.testing.assert_close(a.rel_pos_d, (a.rel_pos_h + a.rel_pos_w) / 2)
        assert a.rel_pos_d.abs().max() > 0
    assert set(report.unexpected) == {
        "image_encoder.neck.0.weight",
        "image_encoder.neck.1.weight",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.iou_token.weight",
    }
    assert set(report.loaded) == {k.removeprefix("image_encoder.") for k in state} - {
        "neck.0.weight",
        "neck.1.weight",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.iou_token.weight",
    }
    assert set(report.missing) == {k for k in sd if NEW_3D_KEYS.match(k)}
    assert set(report.missing) | set(report.loaded) == set(sd)
    assert report.sha256 == model.sam_checkpoint_sha256 == "abc"
    assert "loaded" in report.summary()


def test_load_sam_state_shape_mismatch_names_key(fake_sam_state) -> None:
    model = build_sam3d("tiny")
    with pytest.raises(
        ValueError, match=r"image_encoder\.pos_embed.*\(1, 3, 3, 96\).*\(1, 16, 16, 96\)"
    ):
        load_sam_state(model, {"image_encoder.pos_embed": torch.zeros(1, 3, 3, 96)})
    bad = fake_sam_state(model)
    bad["image_encoder.blocks.2.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"blocks\.2\.attn\.qkv\.weight"):
        load_sam_state(model, bad)


@pytest.mark.parametrize(
    "state",
    [
        {"encoder.pos_embed": torch.zeros(1)},  # no image_encoder.* keys
        {"model": {"image_encoder.pos_embed": torch.zeros(1)}},  # nested, not a state dict
        [torch.zeros(1)],
    ],
)
def test_load_sam_state_rejects_non_sam(state) -> None:
    with pytest.raises(ValueError):
        load_sam_state(build_sam3d("tiny"), state)


def test_build_from_sam_file(tmp_path: Path, fake_sam_state) -> None:
    torch.manual_seed(0)
    state = fake_sam_state(build_sam3d("tiny"), seed=5)
    path = tmp_path / "sam_tiny.pth"
    torch.save(state, path)
    model = build_sam3d("tiny", sam_checkpoint=path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == digest
    assert model.sam_checkpoint_sha256 == model.sam_load_report.sha256 == digest
    assert torch.equal(
        model.image_encoder.blocks[1].mlp.lin1.weight,
        state["image_encoder.blocks.1.mlp.lin1.weight"],
    )


def test_build_rejects_bad_sam_files(tmp_path: Path, fake_sam_state) -> None:
    with pytest.raises(FileNotFoundError):
        build_sam3d("tiny", sam_checkpoint=tmp_path / "missing.pth")
    good = tmp_path / "sam.pth"
    torch.save(fake_sam_state(build_sam3d("tiny")), good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read SAM checkpoint"):
        build_sam3d("tiny", sam_checkpoint=truncated)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01not a zip at all" * 100)
    with pytest.raises(ValueError, match="cannot read SAM checkpoint"):
        build_sam3d("tiny", sam_checkpoint=garbage)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="not a segment-anything checkpoint"):
        build_sam3d("tiny", sam_checkpoint=other)


@pytest.mark.slow
def test_build_vit_b_from_segment_anything(sam_vit_b_checkpoint) -> None:
    path, state = sam_vit_b_checkpoint
    model = build_sam3d("vit_b", sam_checkpoint=path)
    enc = model.image_encoder
    for ours, theirs in [
        (enc.pos_embed, "pos_embed"),
        (enc.patch_embed.proj.weight, "patch_embed.proj.weight"),
        (enc.patch_embed.proj.bias, "patch_embed.proj.bias"),
        (enc.blocks[0].attn.qkv.weight, "blocks.0.attn.qkv.weight"),
        (enc.blocks[7].attn.proj.bias, "blocks.7.attn.proj.bias"),
        (enc.blocks[11].mlp.lin2.weight, "blocks.11.mlp.lin2.weight"),
        (enc.blocks[2].attn.rel_pos_h, "blocks.2.attn.rel_pos_h"),
        (enc.blocks[3].attn.rel_pos_w, "blocks.3.attn.rel_pos_w"),
        (enc.blocks[4].norm1.weight, "blocks.4.norm1.weight"),
    ]:
        assert torch.equal(ours, state["image_encoder." + theirs]), theirs
    for block in enc.blocks:
        a = block.attn
        assert torch.equal(a.rel_pos_d, (a.rel_pos_h + a.rel_pos_w) / 2)
    report = model.sam_load_report
    assert set(report.unexpected) == {
        k
        for k in state
        if not k.startswith("image_encoder.") or k.startswith("image_encoder.neck.")
    }
    assert len([k for k in report.unexpected if k.startswith("image_encoder.neck.")]) == 6
    assert any(k.startswith("prompt_encoder.") for k in report.unexpected)
    assert any(k.startswith("mask_decoder.") for k in report.unexpected)
    assert set(report.missing) == {k for k in enc.state_dict() if NEW_3D_KEYS.match(k)}
    assert len(report.missing) == 123  # the official 129 minus the 6 attention-mask buffers
    assert report.sha256 == model.sam_checkpoint_sha256 == sha256_file(path)
