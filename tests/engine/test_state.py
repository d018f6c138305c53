"""Resumable training checkpoints (sam3d.engine.state) of the tiny Sam3D: a resumed run takes
exactly the step the uninterrupted run takes (weights, Adam moments, schedule restored), the
file is also an inference checkpoint, and files that do not fit the run are refused.
(A supervised baseline's resume is checked in tests/baselines/test_baseline_training.py.)"""

from __future__ import annotations

import pytest
import torch

from sam3d import build_sam3d
from sam3d.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sam3d.engine.optim import build_optimizer
from sam3d.engine.state import TRAIN_FORMAT, load_training_state, save_training_state

RECIPE = {"lr": 1e-2, "weight_decay": 0.0, "epochs": 4, "end_factor": 0.01}


def _run(seed: int, **changes):
    torch.manual_seed(seed)
    model = build_sam3d("tiny", **changes)
    opt, sched = build_optimizer(model, **RECIPE)
    return model, opt, sched


def _step(model, opt, sched, seed: int) -> None:
    """One optimiser step with seeded gradients (no forward pass needed) and one epoch."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    sched.step()


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_takes_the_same_next_step(tmp_path) -> None:
    model, opt, sched = _run(0)
    _step(model, opt, sched, seed=1)
    history = [{"epoch": 1, "train_loss": 0.5}]
    path = tmp_path / "last.pt"
    save_training_state(path, model, opt, sched, epoch=1, best=0.25, history=history,
                        config={"fold": 3}, preprocessing={"mean": 1.5})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    saved = _weights(model)
    _step(model, opt, sched, seed=2)  # the uninterrupted run's second epoch

    other, opt2, sched2 = _run(7)  # a fresh process: other initial weights, no Adam state
    assert any(not torch.equal(v, saved[k]) for k, v in other.state_dict().items())
    state = load_training_state(path, other, opt2, sched2)
    assert state["format"] == TRAIN_FORMAT and state["epoch"] == 1 and state["best"] == 0.25
    assert state["history"] == history and state["config"] == {"fold": 3}
    assert state["preprocessing"] == {"mean": 1.5}
    restored = other.state_dict()
    assert all(torch.equal(restored[k], saved[k]) for k in saved)
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([1e-2 * (1 - 0.99 / 4)] * 3)
    _step(other, opt2, sched2, seed=2)
    final, want = other.state_dict(), model.state_dict()
    assert all(torch.equal(final[k], want[k]) for k in want)  # Adam moments came back too
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_the_training_file_loads_for_inference(tmp_path) -> None:
    model, opt, sched = _run(0)
    _step(model, opt, sched, seed=1)
    save_training_state(tmp_path / "best.pt", model, opt, sched, epoch=1, best=0.1, history=[],
                        config={})
    back = load_checkpoint(tmp_path / "best.pt", variant="tiny")
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_an_inference_checkpoint_has_nothing_to_resume(tmp_path) -> None:
    model, opt, sched = _run(0)
    save_checkpoint(model, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not a sam3d training checkpoint"):
        load_training_state(tmp_path / "model.pt", model, opt, sched)


def test_a_checkpoint_of_another_model_is_refused(tmp_path) -> None:
    model, opt, sched = _run(0)
    path = tmp_path / "last.pt"
    save_training_state(path, model, opt, sched, epoch=1, best=0.0, history=[], config={})
    levels, opt_l, sched_l = _run(0, prompt_levels=(1, 4))
    assert levels.config.name == "tiny"  # an override keeps the name: the weights decide
    with pytest.raises(CheckpointError, match="weights do not match the configured model"):
        load_training_state(path, levels, opt_l, sched_l)
    # another variant: refused by its name
    peft = build_sam3d("tiny_auto_adapter")
    opt_p, sched_p = build_optimizer(peft, **RECIPE)
    with pytest.raises(CheckpointError, match="holds variant 'tiny', the run builds "
                                              "'tiny_auto_adapter'"):
        load_training_state(path, peft, opt_p, sched_p)


def test_an_optimiser_of_another_layout_is_refused(tmp_path) -> None:
    model, opt, sched = _run(0)
    path = tmp_path / "last.pt"
    save_training_state(path, model, opt, sched, epoch=1, best=0.0, history=[], config={})
    fresh, _, _ = _run(1)
    one_group = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    sched1 = torch.optim.lr_scheduler.LinearLR(one_group, 1.0, 0.01, total_iters=4)
    with pytest.raises(CheckpointError, match="optimiser state does not fit this run"):
        load_training_state(path, fresh, one_group, sched1)
