"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The repository lives beside the project's shared/ folder (…/main and …/shared), so
# parents[2] of this file is the folder holding both.
_DEFAULT_GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared/golden/official-v2"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``warms_cache`` run first (otherwise in collection order): they compute,
    one case per test, a content-keyed result that a chapter test would otherwise compute as
    one long test (the protocols side by side of the Table 1 chapter)."""
    items.sort(key=lambda item: item.get_closest_marker("warms_cache") is None)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Folder of the official-v2 golden fixture (override with SAM3D_GOLDEN_DIR).

    Skips the test when the folder is absent.
    """
    path = Path(os.environ.get("SAM3D_GOLDEN_DIR", _DEFAULT_GOLDEN_DIR))
    if not path.is_dir():
        pytest.skip(
            f"golden fixture folder not found: {path} "
            "(set SAM3D_GOLDEN_DIR to the official-v2 fixture folder)"
        )
    return path


class OfficialRuns:
    """The official test-time path (:func:`sam3d.evaluation.official.evaluate_case`) with the
    golden-v2 weights, each (image, dataset, k, click indices) computed once per session.

    Two tests need the same vit_b 128³ forward on the official-eval fixture's p1 runs: the
    network test of ``tests/evaluation/test_official.py`` (probability, mask, Dice, NSD against
    the fixture) and the golden rows of ``tests/experiments/test_protocols.py`` (the side-by-side
    rows). Calling ``runs(model, image, label, dataset, **kw)`` returns the stored result when
    ``model`` holds exactly the golden weights (every tensor equal) and computes it otherwise;
    ``golden_calls`` counts the calls with the golden weights, ``computed`` the forwards run for
    them. It can stand in for ``evaluate_case`` (a test may patch it in): it keeps the original.
    """

    def __init__(self, model: torch.nn.Module):
        from sam3d.evaluation.official import evaluate_case

        self.model = model
        self.golden_calls = self.computed = 0
        self._evaluate = evaluate_case
        self._results: dict[tuple, dict] = {}

    def _is_golden(self, model: torch.nn.Module) -> bool:
        if model is self.model:
            return True
        ours, theirs = self.model.state_dict(), model.state_dict()
        return ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    def __call__(self, model, image, label, dataset, *, k=1, click_indices=None, case=None, **kw):
        if click_indices is None or not self._is_golden(model):  # only the fixture's own clicks
            return self._evaluate(model, image, label, dataset, k=k, click_indices=click_indices,
                                  case=case, **kw)
        self.golden_calls += 1
        key = (str(Path(image).resolve()), dataset, int(k), tuple(int(i) for i in click_indices))
        if key not in self._results:
            self.computed += 1
            self._results[key] = self._evaluate(
                self.model, image, label, dataset, k=k, click_indices=click_indices, case=case,
                **kw)
        return self._results[key]


@pytest.fixture(scope="session")
def official_runs(golden_dir) -> OfficialRuns:
    """:class:`OfficialRuns` with the golden-v2 checkpoint loaded the official way (vit_b)."""
    from sam3d.checkpoint import load_official_checkpoint
    from sam3d.golden import build_official_checkpoint

    return OfficialRuns(load_official_checkpoint(build_official_checkpoint(golden_dir)).eval())


# --------------------------------------------------------------------------------------
# Shared helpers for the model tests (tiny variant; everything here is CPU-cheap).
# --------------------------------------------------------------------------------------

TINY_CROP = 64


def _randomise(module: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """Overwrite every zero-initialised parameter (pos/rel-pos tables) with small noise.

    A freshly built model has all-zero ``pos_embed`` and ``rel_pos_*`` tables, which would
    let a wrong axis convention pass unnoticed; the tests fill them with distinct values.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.copy_(std * torch.randn(p.shape, generator=gen))
    return module


@pytest.fixture(scope="session")
def randomise():
    """``randomise(module, seed=0, std=0.05)``: fill zero-initialised tables with noise."""
    return _randomise


@pytest.fixture
def tiny_model():
    """A seeded, eval-mode ``tiny`` model with non-zero positional and rel-pos tables."""
    from sam3d import build_sam3d

    torch.manual_seed(0)
    return _randomise(build_sam3d("tiny")).eval()


@pytest.fixture
def tiny_inputs():
    """``(volume, points)`` for the tiny model: ``2×3×64³`` volume, ``2×3×3`` (d, h, w) clicks."""
    gen = torch.Generator().manual_seed(1)
    volume = torch.randn(2, 3, TINY_CROP, TINY_CROP, TINY_CROP, generator=gen)
    points = torch.tensor(
        [[[10.0, 20.0, 30.0], [33.0, 5.0, 60.0], [63.0, 0.0, 41.0]],
         [[40.0, 50.0, 12.0], [7.0, 7.0, 7.0], [20.0, 60.0, 33.0]]]
    )
    return volume, points


_SAM_PARTS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.lin1", "mlp.lin2")


def _fake_sam_state(model, seed: int = 0) -> dict:
    """A segment-anything-shaped state dict for ``model``'s encoder (any size, e.g. tiny).

    Holds SAM's image-encoder keys that the 3D encoder shares (``pos_embed``, ``patch_embed``,
    per block ``norm1/2``, ``attn.qkv/proj``, ``attn.rel_pos_h/w``, ``mlp``) with random values,
    plus keys the 3D model must report as unused (2D ``neck``, prompt encoder, mask decoder).
    """
    gen = torch.Generator().manual_seed(seed)
    enc = model.image_encoder.state_dict()
    keys = ["pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"] + [
        k for k in enc if k.startswith("blocks.") and (
            any(f".{part}." in k for part in _SAM_PARTS) or k.endswith(("rel_pos_h", "rel_pos_w")))
    ]
    state = {"image_encoder." + k: torch.randn(enc[k].shape, generator=gen) for k in keys}
    dim = model.config.dim
    state.update({
        "image_encoder.neck.0.weight": torch.randn(256, dim, 1, 1, generator=gen),
        "image_encoder.neck.1.weight": torch.ones(256),
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": torch.randn(2, 128),
        "mask_decoder.iou_token.weight": torch.randn(1, 256),
    })
    return state


@pytest.fixture(scope="session")
def fake_sam_state():
    """``fake_sam_state(model, seed=0)``: a SAM-shaped state dict for ``model`` (cheap)."""
    return _fake_sam_state


@pytest.fixture(scope="session")
def sam_vit_b_checkpoint(tmp_path_factory):
    """``(path, state)``: a randomly initialised segment-anything ViT-B saved like the official
    ``sam_vit_b_01ec64.pth`` (same keys and shapes; ~375 MB on disk). Slow tests only."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    state = sam_model_registry["vit_b"](checkpoint=None).state_dict()
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_random.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture(autouse=True)
def _no_rehearsal_leak(monkeypatch):
    """Each test starts outside a full-mode rehearsal (``SAM3D_REHEARSAL`` unset): a test that
    calls :func:`sam3d.rehearsal.rehearse` switches it on for the process, which would shrink
    every recipe the tests after it load."""
    monkeypatch.delenv("SAM3D_REHEARSAL", raising=False)
