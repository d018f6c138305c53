"""The clicked-lesion training target (sam3d.engine.targets) on hand-made crops."""

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss

from sam3d.engine.config import ConfigError, TrainConfig
from sam3d.engine.targets import (
    SAMPLING_OF_TARGET,
    clicked_lesion_targets,
    ignore_voxels,
    instance_targets,
    predicted_foreground,
)


def _two_lesions() -> torch.Tensor:
    """1×1×12×12×12: a 4³ lesion (64 voxels) and a 2³ one (8 voxels), far apart."""
    label = torch.zeros(1, 1, 12, 12, 12)
    label[0, 0, 1:5, 1:5, 1:5] = 1
    label[0, 0, 8:10, 8:10, 8:10] = 1
    return label


def test_the_clicks_fall_on_one_lesion_which_is_the_target_the_others_apart():
    label = _two_lesions()
    chosen = []
    for seed in range(200):
        points, target, others = clicked_lesion_targets(label, np.random.default_rng(seed), 3, 2)
        assert points.shape == (1, 5, 3) and points.dtype == torch.float32
        assert target.shape == label.shape and others.shape == label.shape
        assert others.dtype == torch.bool
        # the target and the other lesions partition the lesion voxels
        assert torch.equal((target > 0) | others, label > 0)
        assert not ((target > 0) & others).any()
        lesion = points[0, :3].long()
        assert all(target[0, 0, d, h, w] == 1 for d, h, w in lesion.tolist())
        chosen.append(int(target.sum()))
    # the first click is the paper's, a lesion voxel drawn uniformly: a lesion is drawn in
    # proportion to its size (8 of 72 voxels: the small one ~22 times in 200)
    assert set(chosen) == {8, 64} and 8 <= chosen.count(8) <= 40


def test_a_crop_without_lesion_gets_random_clicks_and_nothing_to_segment():
    label = torch.zeros(2, 1, 6, 6, 6)
    label[1, 0, 2, 2, 2] = 1
    points, target, others = clicked_lesion_targets(label, np.random.default_rng(0), 2, 1)
    assert points.shape == (2, 3, 3)
    assert target[0].sum() == 0 and not others[0].any()
    assert torch.equal(target[1], label[1]) and not others[1].any()
    with pytest.raises(ValueError, match="B×1×D×H×W"):
        clicked_lesion_targets(label[:, 0], np.random.default_rng(0), 1, 0)


def test_an_ignored_voxel_adds_nothing_to_the_loss_and_takes_no_gradient():
    torch.manual_seed(0)
    label = _two_lesions()
    _, target, ignore = clicked_lesion_targets(label, np.random.default_rng(1), 1, 0)
    loss_fn = DiceCELoss(include_background=False, softmax=True, to_onehot_y=True)
    logits = torch.randn(1, 2, 12, 12, 12, requires_grad=True)
    loss = loss_fn(ignore_voxels(logits, ignore), target)
    loss.backward()
    assert logits.grad is not None
    grad = logits.grad.abs().sum(1, keepdim=True)
    assert (grad[ignore] == 0).all() and (grad[~ignore] > 0).any()
    # whatever the model says on an ignored voxel, the loss is the same
    other = logits.detach().clone()
    other[:, 1:][ignore] = 50.0
    again = loss_fn(ignore_voxels(other, ignore), target)
    assert torch.isclose(loss.detach(), again)


def test_the_setting_is_checked():
    assert TrainConfig().train_target == "crop"  # the paper's recipe by default
    for target in ("clicked_lesion", "clicked_lesion_ignore", "centred_lesion"):
        assert TrainConfig(train_target=target).train_target == target
    with pytest.raises(ConfigError, match="train_target must be one of"):
        TrainConfig(train_target="lesion")
    with pytest.raises(ConfigError, match="train_lesion_clicks ≥ 1"):
        TrainConfig(train_target="clicked_lesion", train_lesion_clicks=0)


def test_the_centred_lesion_is_clicked_at_the_centre_and_is_the_target():
    label = _two_lesions()
    label[0, 0, 8:10, 8:10, 8:10] = 0  # the small lesion moves to the centre voxel (6, 6, 6):
    label[0, 0, 5:7, 5:8, 6:8] = 1  # 12 voxels
    assert label[0, 0, 6, 6, 6] == 1
    for seed in range(30):
        points, target, ignore = instance_targets("centred_lesion", label,
                                                  np.random.default_rng(seed), 3, 1)
        assert ignore is None  # the other lesions are background
        assert points[0, 0].tolist() == [6.0, 6.0, 6.0]  # the first click: the centre voxel
        assert int(target.sum()) == 12  # its lesion, never the 64-voxel one
        assert all(target[0, 0, d, h, w] == 1 for d, h, w in points[0, :3].long().tolist())
    # no lesion at the centre (a fallback crop): a lesion voxel drawn as clicked_lesion does
    label[0, 0, 5:7, 5:8, 6:8] = 0
    points, target, _ = instance_targets("centred_lesion", label, np.random.default_rng(0), 1, 0)
    assert int(target.sum()) == 64 and target[0, 0, 1:5, 1:5, 1:5].all()
    assert SAMPLING_OF_TARGET == {"centred_lesion": "lesion"}  # its crops come cut around it


def test_the_predicted_foreground_is_the_channel_argmax_ties_to_background():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 6, 7, generator=gen)
    logits[0, 1, 0, 0, :3] = logits[0, 0, 0, 0, :3]  # ties: argmax takes channel 0
    fg = predicted_foreground(logits)
    assert fg.shape == (2, 1, 5, 6, 7) and fg.dtype == torch.bool
    assert torch.equal(fg, logits.argmax(1, keepdim=True) == 1)
    assert not fg[0, 0, 0, 0, :3].any()
    with pytest.raises(ValueError, match="B×2"):
        predicted_foreground(torch.zeros(1, 3, 2, 2, 2))
