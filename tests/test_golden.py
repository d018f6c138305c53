"""Tests for :mod:`sam3d.golden` (rebuilding the official golden checkpoint)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sam3d.golden import (
    build_official_checkpoint,
    load_golden_inputs,
    load_manifest,
    recipe_tensor,
    shifted_window_mask,
    verify,
)

DEFAULT_GOLDEN_DIR = Path(__file__).resolve().parents[1].parent / "shared/golden/official-v2"


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    """The fixture folder, from ``SAM3D_GOLDEN_DIR`` or the shared default."""
    folder = Path(os.environ.get("SAM3D_GOLDEN_DIR", DEFAULT_GOLDEN_DIR))
    if not (folder / "manifest.json").is_file():
        pytest.skip(f"golden fixture not available at {folder} (set SAM3D_GOLDEN_DIR)")
    return folder


@pytest.fixture(scope="module")
def manifest(golden_dir: Path) -> dict[str, Any]:
    return load_manifest(golden_dir)


@pytest.fixture(scope="module")
def default_mask() -> np.ndarray:
    return shifted_window_mask()


def _entry(manifest: dict[str, Any], group: str, key: str) -> dict[str, Any]:
    for g in manifest["groups"]:
        if g["group"] == group:
            for entry in g["tensors"]:
                if entry["key"] == key:
                    return entry
    raise KeyError(f"{group}/{key}")


def _sha(tensor: torch.Tensor) -> str:
    array = np.ascontiguousarray(tensor.numpy(), dtype="<f4")
    return hashlib.sha256(array.tobytes(order="C")).hexdigest()


def test_default_mask_counts(default_mask: np.ndarray) -> None:
    assert default_mask.shape == (64, 512, 512)
    assert default_mask.dtype == np.float32
    assert int((default_mask == 0).sum()) == 11_239_424
    assert int((default_mask == -100).sum()) == 5_537_792


def test_default_mask_matches_manifest(default_mask: np.ndarray, manifest: dict[str, Any]) -> None:
    entry = _entry(manifest, "encoder", "blocks.0.attn_mask")
    verify(default_mask, entry)
    assert entry["n_zero"] == 11_239_424
    assert entry["n_minus100"] == 5_537_792


def test_small_mask_symmetric_with_zero_diagonal() -> None:
    mask = shifted_window_mask(grid=8, window=4, shift=2)
    assert mask.shape == (8, 64, 64)
    np.testing.assert_array_equal(mask, mask.transpose(0, 2, 1))
    assert np.all(np.diagonal(mask, axis1=1, axis2=2) == 0)
    assert set(np.unique(mask).tolist()) == {-100.0, 0.0}
    # The first window sits entirely in band 0 on every axis: nothing is masked.
    assert np.all(mask[0] == 0)
    assert np.any(mask[-1] == -100)


@pytest.mark.parametrize(("grid", "window", "shift"), [(8, 3, 1), (8, 4, 0), (8, 4, 4), (0, 4, 2)])
def test_mask_rejects_bad_arguments(grid: int, window: int, shift: int) -> None:
    with pytest.raises(ValueError):
        shifted_window_mask(grid=grid, window=window, shift=shift)


def test_full_checkpoint_verifies(golden_dir: Path, manifest: dict[str, Any]) -> None:
    checkpoint = build_official_checkpoint(golden_dir)
    assert set(checkpoint) == {"encoder_dict", "feature_dict", "decoder_dict"}
    assert isinstance(checkpoint["feature_dict"], list) and len(checkpoint["feature_dict"]) == 4
    states = {
        "encoder": checkpoint["encoder_dict"],
        **{f"feature{i}": s for i, s in enumerate(checkpoint["feature_dict"])},
        "decoder": checkpoint["decoder_dict"],
    }
    n_tensors = n_elements = 0
    for group in manifest["groups"]:
        state = states[group["group"]]
        assert list(state) == [e["key"] for e in group["tensors"]]
        for entry in group["tensors"]:
            tensor = state[entry["key"]]
            assert tensor.dtype == torch.float32
            assert list(tensor.shape) == entry["shape"]
            assert _sha(tensor) == entry["sha256_f32le"], entry["key"]
            n_tensors += 1
            n_elements += tensor.numel()
    assert n_tensors == manifest["counts"]["tensors"] == 610
    assert n_elements == manifest["counts"]["elements"] == 224_466_316
    masks = [k for k in checkpoint["encoder_dict"] if k.endswith("attn_mask")]
    assert masks == [f"blocks.{i}.attn_mask" for i in (0, 2, 4, 6, 8, 10)]
    ptrs = {checkpoint["encoder_dict"][k].data_ptr() for k in masks}
    assert len(ptrs) == len(masks), "each attention mask must own its storage"


def test_tampered_sha_names_key(manifest: dict[str, Any]) -> None:
    entry = copy.deepcopy(_entry(manifest, "decoder", "mlahead.head2.0.weight"))
    values = recipe_tensor("decoder", entry)
    verify(values, entry)
    entry["sha256_f32le"] = "0" * 64
    with pytest.raises(ValueError, match=r"mlahead\.head2\.0\.weight"):
        verify(values, entry)


def test_tampered_manifest_fails_build(manifest: dict[str, Any], tmp_path: Path) -> None:
    tampered = copy.deepcopy(manifest)
    tampered["groups"][0]["tensors"][1]["sha256_f32le"] = "f" * 64
    key = tampered["groups"][0]["tensors"][1]["key"]
    (tmp_path / "manifest.json").write_text(json.dumps(tampered), encoding="utf-8")
    with pytest.raises(ValueError, match=key):
        build_official_checkpoint(tmp_path)


def test_wrong_seed_raises(manifest: dict[str, Any]) -> None:
    entry = copy.deepcopy(_entry(manifest, "encoder", "depth_embed"))
    entry["seed"] += 1
    with pytest.raises(ValueError, match="depth_embed"):
        recipe_tensor("encoder", entry)


def test_scalar_recipe(manifest: dict[str, Any]) -> None:
    entry = _entry(manifest, "encoder", "blocks.0.attn.lr")
    values = recipe_tensor("encoder", entry)
    assert values.shape == () and values.dtype == np.float32 and float(values) == 1.0
    verify(values, entry)


def test_save_round_trip(manifest: dict[str, Any], tmp_path: Path) -> None:
    small = copy.deepcopy(manifest)
    for group in small["groups"]:
        group["tensors"] = [e for e in group["tensors"] if e["recipe"] == "normal"][:2]
        group["num_tensors"] = 2
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(small), encoding="utf-8")
    out = tmp_path / "ckpt.pth"
    built = build_official_checkpoint(folder, out_path=out)
    loaded = torch.load(out, weights_only=True)
    assert list(loaded) == ["encoder_dict", "feature_dict", "decoder_dict"]
    assert len(loaded["feature_dict"]) == 4
    for name in ("encoder_dict", "decoder_dict"):
        assert list(loaded[name]) == list(built[name])
        for k, v in loaded[name].items():
            assert torch.equal(v, built[name][k])


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="manifest"):
        load_manifest(tmp_path)


def test_golden_inputs(golden_dir: Path) -> None:
    image, points, logits = load_golden_inputs(golden_dir)
    assert image.dtype == points.dtype == logits.dtype == np.float32
    assert image.shape == (1, 3, 128, 128, 128)
    assert logits.shape == (1, 2, 128, 128, 128)
    assert points.shape == (1, 3, 3)
    np.testing.assert_array_equal(points[0], [[70, 61, 55], [78, 65, 51], [61, 55, 58]])
    # Lossless float16 storage: every voxel is a multiple of 1/64; channels equal.
    np.testing.assert_array_equal(image * 64, np.round(image * 64))
    np.testing.assert_array_equal(image[:, 0], image[:, 2])
