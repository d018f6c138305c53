"""Numerical equivalence with the official implementation on the golden fixture (official-v2).

One ViT-B forward (fast paths, CPU, fp32) on the fixture's 128³ region with the fixture's
checkpoint, compared with the official logits and with sampled intermediate stages
(``stages.json``), all recorded by forward hooks during that single forward.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam3d.checkpoint import load_official_checkpoint
from sam3d.golden import (
    build_official_checkpoint,
    load_golden_inputs,
    load_manifest,
    recipe_tensor,
    verify,
)
from sam3d.modeling.literal import patch_embed_literal
from sam3d.modeling.patch_embed import VolumePatchEmbed

pytestmark = pytest.mark.slow

BLOCK_STAGES = [f"block{i:02d}" for i in range(1, 13)]
HOOKED_STAGES = [
    "pos_added",
    *BLOCK_STAGES,
    "neck0",
    "neck1",
    "neck2",
    "neck3",
    "prompt_encoder3",
    "image_skip",
    "decoder_mla_concat",
    "decoder_cls_64",
    "decoder_logits",
]


def load_stages(golden_dir: Path) -> dict[str, dict]:
    stages = json.loads((golden_dir / "stages.json").read_text(encoding="utf-8"))["stages"]
    return {s["name"]: s for s in stages}


def summarise(tensor: torch.Tensor, stage: dict) -> dict:
    """The 32 sampled values (flat C-order indices) plus mean/std, in the stage's layout."""
    t = tensor.detach()
    assert list(t.shape) == stage["shape"], (stage["name"], tuple(t.shape))
    flat = t.reshape(-1)
    d = t.double()
    return {
        "values": flat[torch.tensor(stage["indices"])].double().numpy(),
        "mean": float(d.mean()),
        "std": float(d.std(unbiased=False)),
    }


def assert_stage_close(got: dict, stage: dict) -> None:
    want = np.asarray(stage["values"], dtype=np.float64)
    err = np.abs(got["values"] - want)
    tol = 1e-4 + 1e-5 * np.abs(want)
    assert np.all(err <= tol), (
        f"{stage['name']}: max err {err.max():.3g} (worst index {err.argmax()})"
    )
    assert abs(got["std"] - stage["std"]) <= 1e-5 * stage["std"] + 1e-6, stage["name"]
    assert abs(got["mean"] - stage["mean"]) <= 1e-5 * stage["std"] + 1e-6, stage["name"]


@pytest.fixture(scope="module")
def golden_run(golden_dir: Path) -> dict:
    """Build the official checkpoint, load it, run the fixture once with stage hooks."""
    stages = load_stages(golden_dir)
    model = load_official_checkpoint(build_official_checkpoint(golden_dir)).eval()
    image, points, expected = load_golden_inputs(golden_dir)
    record: dict[str, dict] = {}

    def keep(name, fn=lambda t: t):
        return lambda module, args, out: record.__setitem__(name, summarise(fn(out), stages[name]))

    enc, dec = model.image_encoder, model.mask_decoder
    handles = [
        enc.blocks[0].register_forward_pre_hook(
            lambda m, args: record.__setitem__("pos_added", summarise(args[0], stages["pos_added"]))
        ),
        *(b.register_forward_hook(keep(name))
          for b, name in zip(enc.blocks, BLOCK_STAGES, strict=True)),
        *(enc.neck_3d[i].register_forward_hook(keep(f"neck{i}")) for i in range(4)),
        model.prompt_encoders["4"].register_forward_hook(keep("prompt_encoder3")),
        # the fused decoder never materialises the ×2 concat: keep each level's head, then
        # concatenate and upsample them below
        *(dec.mlahead.head(i).register_forward_hook(
            lambda m, args, out, i=i: heads.__setitem__(i, out)) for i in range(4)),
        dec.cls[3].register_forward_hook(keep("decoder_cls_64")),
    ]
    heads: dict[int, torch.Tensor] = {}
    # the decoder runs in two steps (Sam3D.encode → precompute, Sam3D.decode → decode): record
    # its skip input and its logits there
    precompute, decode = dec.precompute, dec.decode

    def recording_precompute(feats, skip, prompted):
        record["image_skip"] = summarise(skip, stages["image_skip"])
        return precompute(feats, skip, prompted)

    def recording_decode(pre, levels, out_size):
        out = decode(pre, levels, out_size)
        record["decoder_logits"] = summarise(out, stages["decoder_logits"])
        return out

    dec.precompute, dec.decode = recording_precompute, recording_decode
    ours_points = torch.from_numpy(
        np.ascontiguousarray(points[..., [0, 2, 1]])
    )  # (d,w,h) → (d,h,w)
    with torch.no_grad():
        embedding = model.encode(torch.from_numpy(image))
        logits = model.decode(embedding, ours_points)
    for h in handles:
        h.remove()
    del dec.precompute, dec.decode
    concat = torch.cat([heads[i] for i in range(4)], 1)
    record["decoder_mla_concat"] = summarise(
        F.interpolate(concat, scale_factor=2, mode="trilinear", align_corners=True),
        stages["decoder_mla_concat"])
    return {
        "logits": logits.numpy(),
        "embedding": embedding,
        "points": ours_points,
        "expected": np.transpose(expected, (0, 1, 4, 2, 3)),  # (B,2,H,W,D) → (B,2,D,H,W)
        "record": record,
        "stages": stages,
    }


def test_logits_match_official(golden_run: dict) -> None:
    ours, want = golden_run["logits"], golden_run["expected"]
    assert ours.shape == want.shape == (1, 2, 128, 128, 128)
    diff = np.abs(ours.astype(np.float64) - want)
    assert diff.max() <= 1e-4, f"max abs diff {diff.max():.3g}"
    assert diff.mean() <= 1e-5, f"mean abs diff {diff.mean():.3g}"
    flipped = int((ours.argmax(1) != want.argmax(1)).sum())
    print(f"golden logits: max abs {diff.max():.3g}, mean abs {diff.mean():.3g}, {flipped} flips")
    assert flipped <= 50, f"{flipped} voxels change class"


def test_negative_click_extension_keeps_official_logits(golden_dir: Path,
                                                        golden_run: dict) -> None:
    """The official checkpoint loaded into ``vit_b_interactive`` (the negative-click
    extension) gives the official model's logits on positive clicks, bit for bit: the encoder
    weights are the same tensors (so the golden embedding serves both) and the label
    embedding's positive row is zero."""
    ext = load_official_checkpoint(build_official_checkpoint(golden_dir),
                                   "vit_b_interactive").eval()
    assert ext.negative_clicks
    paper = load_official_checkpoint(build_official_checkpoint(golden_dir)).state_dict()
    extra = set(ext.state_dict()) - set(paper)
    assert extra == {"prompt_encoders.4.label_embed.weight"}
    for key, value in paper.items():
        assert torch.equal(ext.state_dict()[key], value), key
    points = golden_run["points"]
    with torch.no_grad():
        logits = ext.decode(golden_run["embedding"], points)
        both = ext.decode(golden_run["embedding"], points, torch.ones(points.shape[:2]).long())
    assert np.array_equal(logits.numpy(), golden_run["logits"])
    assert torch.equal(both, logits)


@pytest.mark.parametrize("name", HOOKED_STAGES)
def test_stage_matches_official(golden_run: dict, name: str) -> None:
    assert name in golden_run["record"], f"stage {name} was not reached"
    assert_stage_close(golden_run["record"][name], golden_run["stages"][name])


def test_patch_embedding_stage(golden_dir: Path) -> None:
    """Fast (composed conv) and literal (×4 upsample, 2D conv per slice, depth conv) patch
    embeddings against the official ``patch_embed_2d`` and ``slice_embed`` stages."""
    manifest = load_manifest(golden_dir)
    encoder = next(g for g in manifest["groups"] if g["group"] == "encoder")
    embed = VolumePatchEmbed(dim=768, patch=16, crop=128, grid=32)
    wanted = {
        "patch_embed.proj.weight": embed.proj.weight,
        "patch_embed.proj.bias": embed.proj.bias,
        "slice_embed.weight": embed.slice_embed.weight,
        "slice_embed.bias": embed.slice_embed.bias,
    }
    with torch.no_grad():
        for entry in encoder["tensors"]:
            if entry["key"] in wanted:
                values = recipe_tensor("encoder", entry)
                verify(values, entry)
                wanted.pop(entry["key"]).copy_(torch.from_numpy(values))
    assert not wanted
    stages = load_stages(golden_dir)
    image = torch.from_numpy(load_golden_inputs(golden_dir)[0])
    record = {}
    handle = embed.proj.register_forward_hook(  # 2D conv output D×C×H×W → stage layout D×H×W×C
        lambda m, a, out: record.__setitem__(
            "patch_embed_2d", summarise(out.permute(0, 2, 3, 1), stages["patch_embed_2d"])
        )
    )
    with torch.no_grad():
        fast = embed(image)
        assert_stage_close(summarise(fast, stages["slice_embed"]), stages["slice_embed"])
        literal = patch_embed_literal(embed, image)
    handle.remove()
    assert_stage_close(record["patch_embed_2d"], stages["patch_embed_2d"])
    assert_stage_close(summarise(literal, stages["slice_embed"]), stages["slice_embed"])
    assert (fast - literal).abs().max() <= 1e-4 * literal.abs().max()
