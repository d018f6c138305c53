"""Rebuild the official-layout golden checkpoint from the fixture manifest.

The golden fixture (``shared/golden/official-v2``) does not ship weights. Its
``manifest.json`` lists every tensor of the official 3DSAM-adapter checkpoint in
state-dict order together with a deterministic recipe and the SHA-256 of the
expected float32 bytes. This module regenerates those tensors with numpy, checks
each one against its hash and assembles them into the dict that upstream
``train.py`` saves (``encoder_dict``, ``feature_dict`` list, ``decoder_dict``).
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils.files import atomic_write

__all__ = [
    "build_official_checkpoint",
    "load_golden_inputs",
    "load_manifest",
    "recipe_tensor",
    "shifted_window_mask",
    "verify",
]

MASK_VALUE = -100.0
"""Additive attention bias between tokens of different shifted regions."""

_CHECKPOINT_KEY = re.compile(r"^(?P<name>\w+)(?:\[(?P<index>\d+)\])?$")


def load_manifest(folder: str | Path) -> dict[str, Any]:
    """Read ``manifest.json`` from a golden fixture folder.

    Raises:
        FileNotFoundError: if the folder or its manifest does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"golden fixture folder not found: {folder}")
    path = folder / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"golden fixture manifest not found: {path}")
    with path.open("r", encoding="utf-8") as handle:
        return json.load(handle)


def _band_labels(grid: int, window: int, shift: int) -> np.ndarray:
    """Per-axis band index: 0 for [0, g-w), 1 for [g-w, g-s), 2 for [g-s, g)."""
    idx = np.arange(grid)
    return (idx >= grid - window).astype(np.int64) + (idx >= grid - shift)


def shifted_window_mask(grid: int = 32, window: int = 8, shift: int = 4) -> np.ndarray:
    """Build the Swin-style attention mask for a cubic token grid.

    Every position of the ``grid``³ volume (axes h, w, d) gets a region label
    ``9*band_h + 3*band_w + band_d``. The grid is cut into ``(grid/window)³``
    windows, numbered ``(h//w)*(g/w)**2 + (w//w)*(g/w) + d//w``; tokens inside a
    window are numbered ``(h%w)*w**2 + (w%w)*w + d%w``. Two tokens of the same
    window may attend to each other (0) only if their labels agree, otherwise the
    entry is ``-100``.

    Returns:
        float32 array of shape ``(num_windows, window**3, window**3)``.
    """
    if grid <= 0 or window <= 0 or grid % window:
        raise ValueError(f"grid {grid} must be a positive multiple of window {window}")
    if not 0 < shift < window:
        raise ValueError(f"shift {shift} must lie strictly between 0 and window {window}")
    band = _band_labels(grid, window, shift)
    labels = 9 * band[:, None, None] + 3 * band[None, :, None] + band[None, None, :]
    n = grid // window
    # (h_win, h_in, w_win, w_in, d_win, d_in) -> (h_win, w_win, d_win, h_in, w_in, d_in)
    tiles = labels.reshape(n, window, n, window, n, window).transpose(0, 2, 4, 1, 3, 5)
    per_window = tiles.reshape(n**3, window**3)
    same = per_window[:, :, None] == per_window[:, None, :]
    return np.where(same, np.float32(0.0), np.float32(MASK_VALUE)).astype(np.float32, copy=False)


def _computed_tensor(entry: dict[str, Any]) -> np.ndarray:
    """Rebuild a ``computed`` buffer; only shifted-window ``attn_mask`` is known."""
    key = entry["key"]
    shape = tuple(entry["shape"])
    if not key.endswith("attn_mask") or len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{key}: no rule for computed tensor of shape {shape}")
    window = round(shape[1] ** (1 / 3))
    per_axis = round(shape[0] ** (1 / 3))
    if window**3 != shape[1] or per_axis**3 != shape[0]:
        raise ValueError(f"{key}: shape {shape} is not a cubic window layout")
    return shifted_window_mask(grid=window * per_axis, window=window, shift=window // 2)


def recipe_tensor(group: str, entry: dict[str, Any]) -> np.ndarray:
    """Generate one tensor's float32 values from its manifest entry.

    ``normal``: seeded standard normals from PCG64, ``offset + scale*z`` evaluated
    in float64 and rounded once to float32. The seed is
    ``crc32(f"{group}/{key}")`` and must equal the manifest's ``seed`` field.
    ``computed``: the shifted-window attention mask.

    Raises:
        ValueError: on an unknown recipe or a seed that does not match.
    """
    key = entry["key"]
    recipe = entry["recipe"]
    if recipe == "computed":
        values = _computed_tensor(entry)
    elif recipe == "normal":
        seed = zlib.crc32(f"{group}/{key}".encode())
        if int(entry["seed"]) != seed:
            raise ValueError(f"{group}/{key}: manifest seed {entry['seed']} != crc32 {seed}")
        rng = np.random.Generator(np.random.PCG64(seed))
        z = rng.standard_normal(size=tuple(entry["shape"]))
        offset, scale = float(entry["offset"]), float(entry["scale"])
        values = np.asarray(offset + scale * z, dtype=np.float64).astype(np.float32)
    else:
        raise ValueError(f"{group}/{key}: unknown recipe {recipe!r}")
    if values.shape != tuple(entry["shape"]):
        raise ValueError(f"{key}: built shape {values.shape} != manifest {entry['shape']}")
    return values


def verify(values: np.ndarray, entry: dict[str, Any]) -> None:
    """Check ``values`` against the entry's ``sha256_f32le`` (float32 LE, C order).

    Raises:
        ValueError: naming the key if shape or hash differ.
    """
    key = entry["key"]
    if tuple(values.shape) != tuple(entry["shape"]):
        raise ValueError(f"{key}: shape {tuple(values.shape)} != manifest {entry['shape']}")
    data = np.ascontiguousarray(values, dtype="<f4")
    digest = hashlib.sha256(data.data).hexdigest()
    if digest != entry["sha256_f32le"]:
        raise ValueError(
            f"{key}: SHA-256 mismatch (got {digest}, manifest {entry['sha256_f32le']})"
        )


def _parse_checkpoint_key(text: str) -> tuple[str, int | None]:
    """Split ``"feature_dict[2]"`` into ``("feature_dict", 2)``."""
    match = _CHECKPOINT_KEY.match(text)
    if match is None:
        raise ValueError(f"unrecognised checkpoint_key {text!r}")
    index = match.group("index")
    return match.group("name"), None if index is None else int(index)


def build_official_checkpoint(
    folder: str | Path, out_path: str | Path | None = None
) -> dict[str, Any]:
    """Regenerate the official checkpoint described by ``folder/manifest.json``.

    Tensors are built one at a time, verified by SHA-256 and stored as float32
    torch tensors in manifest (state-dict) order. The six identical attention
    masks are generated once and copied, each key owning its own storage.

    Args:
        folder: golden fixture folder holding ``manifest.json``.
        out_path: if given, the result is also written there with ``torch.save``.

    Returns:
        ``{"encoder_dict": OrderedDict, "feature_dict": [OrderedDict, ...],
        "decoder_dict": OrderedDict}``.
    """
    manifest = load_manifest(folder)
    checkpoint: dict[str, Any] = {}
    mask_cache: dict[tuple[int, ...], np.ndarray] = {}
    for group in manifest["groups"]:
        name, index = _parse_checkpoint_key(group["checkpoint_key"])
        entries = group["tensors"]
        expected = group.get("num_tensors")
        if expected is not None and expected != len(entries):
            raise ValueError(f"group {group['group']}: {len(entries)} tensors, expected {expected}")
        state: OrderedDict[str, torch.Tensor] = OrderedDict()
        for entry in entries:
            if entry["recipe"] == "computed":
                shape = tuple(entry["shape"])
                if shape not in mask_cache:
                    mask_cache[shape] = recipe_tensor(group["group"], entry)
                values = mask_cache[shape].copy()
            else:
                values = recipe_tensor(group["group"], entry)
            verify(values, entry)
            if entry["key"] in state:
                raise ValueError(f"{entry['key']}: duplicate key in group {group['group']}")
            state[entry["key"]] = torch.from_numpy(values)
        if index is None:
            if name in checkpoint:
                raise ValueError(f"checkpoint entry {name!r} defined twice")
            checkpoint[name] = state
        else:
            slots = checkpoint.setdefault(name, [])
            if not isinstance(slots, list) or index != len(slots):
                raise ValueError(f"{group['checkpoint_key']}: list entries must come in order")
            slots.append(state)
    if out_path is not None:
        atomic_write(out_path, lambda tmp: torch.save(checkpoint, tmp))
    return checkpoint


def load_golden_inputs(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load the fixture's forward-pass inputs and expected output.

    Returns:
        ``(image, points, logits)``: the image as float32 (stored losslessly as
        float16), shape (1, 3, D, H, W); the prompt points as float32, shape
        (1, N, 3) in upstream (d, w, h) column order; the expected decoder logits
        as float32 with layout (B, class, H, W, D).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"golden fixture folder not found: {folder}")
    arrays = []
    for name in ("input.npy", "points.npy", "expected_logits.npy"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"golden fixture file not found: {path}")
        arrays.append(np.load(path, allow_pickle=False))
    image, points, logits = (a.astype(np.float32) for a in arrays)
    if image.ndim != 5 or logits.ndim != 5:
        raise ValueError(f"expected 5-D image and logits, got {image.shape} and {logits.shape}")
    if points.ndim != 3 or points.shape[0] != 1 or points.shape[2] != 3:
        raise ValueError(f"expected points of shape (1, N, 3), got {points.shape}")
    return image, points, logits


def default_golden_dir() -> Path:
    """``$SAM3D_GOLDEN_DIR`` or ``../shared/golden/official-v2`` next to the repository."""
    import os

    env = os.environ.get("SAM3D_GOLDEN_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/golden/official-v2"


def default_official_eval_dir() -> Path:
    """``$SAM3D_OFFICIAL_EVAL_DIR`` or ``../shared/golden/official-eval`` next to the
    repository: the official test-time evaluation fixture."""
    import os

    env = os.environ.get("SAM3D_OFFICIAL_EVAL_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared/golden/official-eval"


def check_equivalence(folder: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Rebuild the golden checkpoint, run sam3d's forward on the golden input and compare.

    Returns max and mean absolute logit difference, the number of voxels whose argmax
    differs, and the forward's wall time. Expected logits are official (B, class, H, W, D);
    they are compared in sam3d's (B, class, D, H, W).
    """
    import time

    from .checkpoint import load_official_checkpoint

    model = load_official_checkpoint(build_official_checkpoint(folder)).to(device).eval()
    image, points, expected = load_golden_inputs(folder)
    points_dhw = torch.from_numpy(points)[..., [0, 2, 1]]  # official (d, w, h) → (d, h, w)
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(torch.from_numpy(image).to(device), points_dhw.to(device)).cpu().numpy()
    seconds = time.perf_counter() - start
    expected = np.transpose(expected, (0, 1, 4, 2, 3))
    diff = np.abs(logits - expected)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "argmax_mismatch_voxels": int((logits.argmax(1) != expected.argmax(1)).sum()),
        "voxels": int(expected[:, 0].size),
        "forward_seconds": round(seconds, 1),
    }
