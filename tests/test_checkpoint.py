"""Checkpoints: sam3d's own format (atomic, validated) and the authors' official layout."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from sam3d import build_sam3d
from sam3d.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    load_checkpoint,
    load_official_checkpoint,
    load_state_strict,
    read_checkpoint_file,
    save_checkpoint,
    stored_state,
)
from sam3d.modeling.attention import shifted_window_mask

VOLUME = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(7))
POINTS = torch.tensor([[[30.0, 12.0, 50.0], [5.0, 60.0, 33.0]]])


def predict(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(VOLUME, POINTS)


@pytest.fixture
def saved(tmp_path: Path, tiny_model):
    path = tmp_path / "ckpts" / "tiny.pt"
    save_checkpoint(tiny_model, path, extra={"epoch": 3})
    return path, tiny_model


# --------------------------------------------------------------------------- sam3d format


def test_round_trip(saved) -> None:
    path, model = saved
    torch.manual_seed(123)  # a different random init underneath
    loaded = load_checkpoint(path, variant="tiny")
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(predict(loaded), predict(model), atol=0, rtol=0)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["variant"] == "tiny" and raw["extra"] == {"epoch": 3}
    assert raw["sam_checkpoint_sha256"] is None
    assert set(raw["state"]) == set(model.state_dict())  # no SAM file: everything is stored


def test_round_trip_with_overridden_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_sam3d("tiny", prompt_levels=(2, 4), num_queries=4)
    path = tmp_path / "c.pt"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert loaded.config.prompt_levels == (2, 4) and loaded.config.num_queries == 4
    torch.testing.assert_close(predict(loaded), predict(model), atol=0, rtol=0)


def test_atomic_write_leaves_no_temp_files(saved) -> None:
    path, model = saved
    save_checkpoint(model, path)  # overwrite an existing file
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pt"]


def test_failed_save_keeps_existing_checkpoint(saved, monkeypatch) -> None:
    path, model = saved
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")  # the write starts, then fails
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(model, path)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"a": 1}, path.parent / "new.pt")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pt"]
    load_checkpoint(path)  # still loads


def test_rejects_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_rejects_truncated(saved) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load_checkpoint(path)


def test_rejects_plain_state_dict(tmp_path: Path, tiny_model) -> None:
    path = tmp_path / "plain.pt"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a sam3d checkpoint"):
        load_checkpoint(path)


def test_rejects_other_variant(saved) -> None:
    path, _ = saved
    with pytest.raises(CheckpointError, match=r"holds variant 'tiny', but 'vit_b' was requested"):
        load_checkpoint(path, variant="vit_b")


def test_rejects_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def test_rejects_mismatched_tensors(saved) -> None:
    path, _ = saved
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state"]["mask_decoder.cls.0.weight"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"mask_decoder\.cls\.0\.weight"):
        load_checkpoint(path)


def test_checkpoint_error_is_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)


def test_sam_based_checkpoint_stores_only_tuned(tmp_path: Path, fake_sam_state) -> None:
    """On a SAM file only the tuned tensors are stored; the SAM file must be passed back."""
    sam = tmp_path / "sam.pth"
    torch.save(fake_sam_state(build_sam3d("tiny"), seed=1), sam)
    torch.manual_seed(0)
    model = build_sam3d("tiny", sam_checkpoint=sam)
    with torch.no_grad():
        model.image_encoder.blocks[0].adapter.linear1.weight.add_(1.0)  # "training"
    path = tmp_path / "run" / "tuned.pt"
    save_checkpoint(model, path)
    raw = torch.load(path, weights_only=True)
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(raw["state"]) == tuned == set(stored_state(model))
    assert raw["sam_checkpoint_sha256"] == model.sam_checkpoint_sha256
    loaded = load_checkpoint(path, sam_checkpoint=sam)
    torch.testing.assert_close(predict(loaded), predict(model), atol=0, rtol=0)
    with pytest.raises(CheckpointError, match="pass it as sam_checkpoint"):
        load_checkpoint(path)
    other = tmp_path / "other_sam.pth"
    torch.save(fake_sam_state(build_sam3d("tiny"), seed=2), other)
    with pytest.raises(CheckpointError, match="differs"):
        load_checkpoint(path, sam_checkpoint=other)


def test_read_checkpoint_file(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"a": torch.ones(2)}, path)
    assert torch.equal(read_checkpoint_file(path)["a"], torch.ones(2))
    with pytest.raises(FileNotFoundError):
        read_checkpoint_file(tmp_path / "missing.pt")


# ------------------------------------------------------------------------- official layout


def official_from(model) -> dict:
    """The official train.py checkpoint layout, written from one of our tiny models."""
    grid = model.image_encoder.grid
    enc = {}
    for key, value in model.image_encoder.state_dict().items():
        parts = key.split(".")
        if parts[0] == "blocks" and parts[2] == "norm1":
            block = model.image_encoder.blocks[int(parts[1])]
            if block.shift and parts[3] == "weight":
                enc[f"blocks.{parts[1]}.attn_mask"] = (
                    shifted_window_mask(grid, block.window, block.shift).squeeze(1).clone()
                )
        enc[key.replace("patch_embed.slice_embed.", "slice_embed.")] = value.clone()
    features = []
    for level in range(1, 5):
        source = dict(model.prompt_encoders.items()).get(str(level))
        state = {"positional_encoding_gaussian_matrix": torch.randn(3, 16)}
        if source is not None:
            state.update({"transformer." + k: v.clone() for k, v in source.state_dict().items()})
        for layer in range(2):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                prefix = f"transformer.layers.{layer}.cross_attn_token_to_image.{proj}"
                state[prefix + ".weight"] = torch.randn(16, 32)
                state[prefix + ".bias"] = torch.randn(16)
        features.append(state)
    decoder = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    return {"encoder_dict": enc, "feature_dict": features, "decoder_dict": decoder, "epoch": 7}


@pytest.fixture
def official(tiny_model):
    return official_from(tiny_model), tiny_model


def test_official_layout_reproduces_outputs(official, tmp_path: Path) -> None:
    ckpt, model = official
    assert sorted(k for k in ckpt["encoder_dict"] if k.endswith("attn_mask")) == [
        "blocks.0.attn_mask",
        "blocks.2.attn_mask",
    ]
    assert "slice_embed.weight" in ckpt["encoder_dict"]
    torch.manual_seed(99)
    loaded = load_official_checkpoint(ckpt, "tiny")
    torch.testing.assert_close(predict(loaded), predict(model), atol=0, rtol=0)
    path = tmp_path / "official.pth.tar"
    torch.save(ckpt, path)
    torch.testing.assert_close(
        predict(load_official_checkpoint(path, "tiny")), predict(model), atol=0, rtol=0
    )


def test_official_prompt_levels_use_their_list_entry(tiny_model) -> None:
    torch.manual_seed(0)
    model = build_sam3d("tiny", prompt_levels=(1, 4))
    loaded = load_official_checkpoint(official_from(model), "tiny", prompt_levels=(1, 4))
    torch.testing.assert_close(predict(loaded), predict(model), atol=0, rtol=0)


def test_official_wrong_mask(official) -> None:
    ckpt, _ = official
    ckpt["encoder_dict"]["blocks.2.attn_mask"] = torch.zeros_like(
        ckpt["encoder_dict"]["blocks.2.attn_mask"]
    )
    with pytest.raises(CheckpointError, match=r"blocks\.2\.attn_mask"):
        load_official_checkpoint(ckpt, "tiny")


def test_official_mask_on_unshifted_block(official) -> None:
    ckpt, _ = official
    ckpt["encoder_dict"]["blocks.1.attn_mask"] = ckpt["encoder_dict"]["blocks.0.attn_mask"].clone()
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn_mask"):
        load_official_checkpoint(ckpt, "tiny")


@pytest.mark.parametrize("entry", ["encoder_dict", "feature_dict", "decoder_dict"])
def test_official_missing_entry(official, entry: str) -> None:
    ckpt, _ = official
    del ckpt[entry]
    with pytest.raises(CheckpointError, match=entry):
        load_official_checkpoint(ckpt, "tiny")


def test_official_missing_encoder_key(official) -> None:
    ckpt, _ = official
    del ckpt["encoder_dict"]["blocks.3.adapter.conv.bias"]
    with pytest.raises(
        CheckpointError, match=r"encoder_dict.*missing.*blocks\.3\.adapter\.conv\.bias"
    ):
        load_official_checkpoint(ckpt, "tiny")


def test_official_unexpected_and_wrong_shape(official) -> None:
    ckpt, _ = official
    bad = copy.deepcopy(ckpt)
    bad["decoder_dict"]["mlahead.head6.0.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected.*head6"):
        load_official_checkpoint(bad, "tiny")
    bad = copy.deepcopy(ckpt)
    bad["feature_dict"][3]["transformer.layers.0.global_query"] = torch.zeros(1, 9, 32)
    with pytest.raises(CheckpointError, match=r"feature_dict\[3\].*global_query"):
        load_official_checkpoint(bad, "tiny")
    bad = copy.deepcopy(ckpt)
    bad["feature_dict"] = bad["feature_dict"][:2]
    with pytest.raises(CheckpointError, match="prompt level 4"):
        load_official_checkpoint(bad, "tiny")
    bad["feature_dict"] = {"3": ckpt["feature_dict"][3]}
    with pytest.raises(CheckpointError, match="list"):
        load_official_checkpoint(bad, "tiny")


def test_official_rejects_non_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="dict"):
        load_official_checkpoint(path, "tiny")
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        load_official_checkpoint(path, "tiny")


# ------------------------------------------------------------- malformed input, file modes


def test_saved_checkpoint_has_normal_permissions(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.pt", tmp_path / "atomic.pt"
    torch.save({"a": 1}, plain)
    atomic_save({"a": 1}, atomic)
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_official_mask_of_a_deeper_model(official) -> None:
    ckpt, _ = official  # e.g. a ViT-L checkpoint (24 blocks) loaded as ViT-B
    ckpt["encoder_dict"]["blocks.6.attn_mask"] = ckpt["encoder_dict"]["blocks.0.attn_mask"].clone()
    with pytest.raises(CheckpointError, match=r"blocks\.6"):
        load_official_checkpoint(ckpt, "tiny")


@pytest.mark.parametrize("entry", ["encoder_dict", "feature_dict_item"])
def test_official_malformed_entries(official, entry: str) -> None:
    ckpt, _ = official
    if entry == "feature_dict_item":
        ckpt["feature_dict"][3] = None
    else:
        ckpt[entry] = [torch.zeros(1)]
    with pytest.raises(CheckpointError):
        load_official_checkpoint(ckpt, "tiny")


def test_sam3d_checkpoint_without_config(tmp_path: Path) -> None:
    path = tmp_path / "partial.pt"
    torch.save({"format": FORMAT, "variant": "tiny"}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@pytest.mark.slow
def test_vit_b_checkpoint_on_sam(sam_vit_b_checkpoint, tmp_path: Path) -> None:
    """ViT-B on a SAM file: only the 25.2M tuned numbers are written, and reloading on the same
    SAM file restores every tensor."""
    sam_path, _ = sam_vit_b_checkpoint
    model = build_sam3d("vit_b", sam_checkpoint=sam_path)
    with torch.no_grad():
        model.image_encoder.blocks[5].adapter.conv.weight.add_(0.5)
        model.mask_decoder.cls[3].weight.mul_(2.0)
    path = tmp_path / "vit_b.pt"
    save_checkpoint(model, path)
    stored = torch.load(path, weights_only=True)["state"]
    assert sum(v.numel() for v in stored.values()) == 25_198_976
    assert path.stat().st_size < 0.3 * sam_path.stat().st_size
    loaded = load_checkpoint(path, sam_checkpoint=sam_path, variant="vit_b")
    want = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, want[key]), key


def test_load_state_strict_lists_every_kind_of_mismatch() -> None:
    """The one strict loader (official, sam3d, baseline and SAM weights): counts and names the
    missing, unexpected and wrongly shaped tensors, refuses non-tensors, loads a match."""
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    state = {"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(2), "9.bias": torch.zeros(1)}
    with pytest.raises(CheckpointError) as info:
        load_state_strict(module, state, "test state")
    text = str(info.value)
    assert text.startswith("test state does not match the model (Sequential)")
    assert "missing 2 ['1.weight', '1.bias']" in text and "unexpected 1 ['9.bias']" in text
    assert "shape mismatches 1 ['0.weight: file (2, 4) vs model (2, 3)']" in text
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        load_state_strict(module, {**module.state_dict(), "0.bias": [0.0, 0.0]}, "test state")
    good = {k: torch.full_like(v, 0.5) for k, v in module.state_dict().items()}
    load_state_strict(module, good, "test state")
    assert all(torch.equal(v, good[k]) for k, v in module.state_dict().items())
