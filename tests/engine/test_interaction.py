"""Simulated interaction in training (:mod:`sam3d.engine.interaction`): the first prompt's
labels, corrective clicks on hand-made errors, and the rounds appended to the prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3d import build_sam3d
from sam3d.engine.config import ConfigError, TrainConfig
from sam3d.engine.interaction import click_labels, corrective_clicks, simulate_interaction


def _label(shape=(8, 8, 8), box=(slice(2, 5),) * 3) -> torch.Tensor:
    label = torch.zeros(1, 1, *shape)
    label[(0, 0, *box)] = 1
    return label


def _logits(fg: torch.Tensor) -> torch.Tensor:
    """``B×D×H×W`` bool foreground → ``B×2×D×H×W`` logits with that argmax."""
    return torch.stack([-fg.float(), fg.float()], 1)


def test_first_prompt_labels_follow_the_ground_truth() -> None:
    label = torch.cat([_label(), torch.zeros(1, 1, 8, 8, 8)])
    points = torch.tensor([[[3, 3, 3], [0, 0, 0], [4, 2, 3]],
                           [[3, 3, 3], [7, 7, 7], [1, 1, 1]]], dtype=torch.float32)
    # a row that clicks no lesion keeps the official all-positive prompt
    assert click_labels(label, points).tolist() == [[1, 0, 1], [1, 1, 1]]


def test_corrective_clicks_fall_in_the_error_with_its_label() -> None:
    label = _label()
    gt = label[:, 0] > 0.5
    rng = np.random.default_rng(0)
    over = gt.clone()
    over[0, 6, 6, 6] = True  # one false-positive voxel, nothing missed
    pts, labs = corrective_clicks(_logits(over), label, rng, negatives=True)
    assert pts.tolist() == [[[6.0, 6.0, 6.0]]] and labs.tolist() == [[0]]
    # without the extension a false positive gives nothing to click: a positive on the lesion
    pts, labs = corrective_clicks(_logits(over), label, rng, negatives=False)
    assert gt[0][tuple(pts[0, 0].long())] and labs.tolist() == [[1]]
    under = gt.clone()
    under[0, 2, 2, 2] = False  # one missed voxel
    for negatives in (True, False):
        pts, labs = corrective_clicks(_logits(under), label, rng, negatives)
        assert pts.tolist() == [[[2.0, 2.0, 2.0]]] and labs.tolist() == [[1]]
    # a perfect prediction: a positive click on a lesion voxel
    pts, labs = corrective_clicks(_logits(gt), label, rng, negatives=True)
    assert gt[0][tuple(pts[0, 0].long())] and labs.tolist() == [[1]]


@pytest.mark.parametrize("variant", ["tiny", "tiny_interactive"])
def test_rounds_append_one_click_per_sample_from_one_embedding(variant) -> None:
    torch.manual_seed(0)
    model = build_sam3d(variant)
    c = model.crop
    label = torch.zeros(2, 1, c, c, c)
    label[:, :, 20:30, 20:30, 20:30] = 1
    image = torch.randn(2, 3, c, c, c)
    points = torch.tensor([[[25, 25, 25]], [[22, 28, 24]]], dtype=torch.float32)
    labels = click_labels(label, points) if model.negative_clicks else None
    calls = []
    model.image_encoder.register_forward_hook(lambda m, a, o: calls.append(1))
    out, out_labels = simulate_interaction(model, image, label, points, labels, 3,
                                           np.random.default_rng(1))
    assert calls == [1]  # encoded once, decoded three times
    assert out.shape == (2, 4, 3) and torch.equal(out[:, :1], points)
    assert not out.requires_grad
    if model.negative_clicks:
        assert out_labels is not None and out_labels.shape == (2, 4)
        lesion = label[:, 0] > 0.5
        for b in range(2):  # each label says whether its click lies on lesion
            on = [bool(lesion[b][tuple(p)]) for p in out[b].long().tolist()]
            assert out_labels[b].tolist() == [int(v) for v in on]
    else:
        assert out_labels is None  # the paper's prompt: positive clicks only
    again, _ = simulate_interaction(model, image, label, points, labels, 3,
                                    np.random.default_rng(1))
    assert torch.equal(out, again)  # seeded


def test_interaction_rounds_need_a_promptable_sam3d_variant() -> None:
    assert TrainConfig(interaction_rounds=2, variant="tiny_interactive").interaction_rounds == 2
    with pytest.raises(ConfigError, match="interaction_rounds needs"):
        TrainConfig(interaction_rounds=2, variant="tiny_auto_ours")
    with pytest.raises(ConfigError, match="interaction_rounds must be an integer"):
        TrainConfig(interaction_rounds=-1)


@pytest.mark.slow
@pytest.mark.warms_cache
def test_book_interactive_fits_the_click_refiner_on_book_smoke() -> None:
    """The book's smoke extension model (trained once into outputs/runs, ≈ 1.5 min beyond
    ``book_smoke``, which ``tests/engine/test_cached.py`` trains first; the clicks chapter
    reuses it): ``book_smoke`` carried into ``tiny_interactive_local`` (``init_from``) with no
    epoch of the whole model, then the click refiner fitted alone: every other weight is
    ``book_smoke``'s, and the fit's loss fell."""
    from sam3d.checkpoint import load_checkpoint, read_checkpoint_file
    from sam3d.experiments.training import smoke_model

    run = smoke_model("book_interactive")
    cfg = run["config"]
    assert cfg.variant == "tiny_interactive_local" and cfg.init_from == "book_smoke"
    assert cfg.epochs == 0 and cfg.refiner_steps == 600 and not cfg.interaction_rounds
    model = load_checkpoint(run["checkpoint"])
    assert model.negative_clicks and not model.click_maps and model.config.refiner_only
    start = load_checkpoint(smoke_model("book_smoke")["checkpoint"]).state_dict()
    state = model.state_dict()
    kept = [k for k in state if "click_refiner" not in k and "label_embed" not in k]
    assert set(kept) == set(start) and all(torch.equal(state[k], start[k]) for k in kept)
    assert not state["prompt_encoders.4.label_embed.weight"][1].any()  # positive: zero start
    assert model.mask_decoder.click_refiner.net[-1].weight.abs().max() > 1e-4
    fit = read_checkpoint_file(run["checkpoint"])["extra"]["train"]["refiner"]
    assert [h["step"] for h in fit] == list(range(100, 601, 100))
    assert fit[-1]["loss"] < fit[0]["loss"]
    print(f"\nbook_interactive: {run['seconds']:.0f} s (trained now: {run['trained_now']}), "
          f"refiner loss {[round(h['loss'], 4) for h in fit]}")
