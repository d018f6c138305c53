"""The optimisation recipe (sam3d.engine.optim): the three parameter groups partition exactly the
trainable parameters, one AdamW with three groups updates like the official three optimisers,
the schedule decays linearly to ``end_factor``, and clipping is per group, not global."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sam3d import build_sam3d
from sam3d.engine.optim import build_optimizer, clip_per_group, parameter_groups


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_sam3d("tiny")  # the paper's policy: part of the encoder is frozen


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_groups_partition_the_trainable_parameters(tiny) -> None:
    groups = parameter_groups(tiny)
    assert tuple(groups) == ("encoder", "prompt", "decoder")  # Sam3D.parameter_groups
    trainable = _ids(p for p in tiny.parameters() if p.requires_grad)
    seen = [id(p) for ps in groups.values() for p in ps]
    assert len(seen) == len(set(seen)) and set(seen) == trainable  # each exactly once
    assert _ids(groups["encoder"]) == _ids(
        p for p in tiny.image_encoder.parameters() if p.requires_grad)
    assert _ids(groups["prompt"]) == _ids(tiny.prompt_encoders.parameters())
    assert _ids(groups["decoder"]) == _ids(tiny.mask_decoder.parameters())
    frozen = dict(tiny.image_encoder.named_parameters())["blocks.0.attn.qkv.weight"]
    assert not frozen.requires_grad and id(frozen) not in set(seen)


def test_a_supervised_baseline_is_one_group() -> None:
    from sam3d.baselines.networks import PromptFree

    net = PromptFree(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), name="two_linear",
                     crop=(8, 8, 8))
    net.net[0].bias.requires_grad_(False)
    groups = parameter_groups(net)
    assert list(groups) == ["network"]
    assert _ids(groups["network"]) == {id(net.net[0].weight), id(net.net[1].weight),
                                       id(net.net[1].bias)}
    net.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(net)


def test_a_fully_frozen_sam3d_is_refused() -> None:
    model = build_sam3d("tiny").requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        parameter_groups(model)


def test_build_optimizer_leaves_out_empty_groups_and_sets_the_recipe() -> None:
    model = build_sam3d("tiny")
    model.image_encoder.requires_grad_(False)  # nothing of the encoder is tuned
    opt, sched = build_optimizer(model, lr=4e-4, weight_decay=0.0, epochs=10, end_factor=0.01)
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["name"] for g in opt.param_groups] == ["prompt", "decoder"]
    assert all(g["lr"] == 4e-4 and g["weight_decay"] == 0.0 for g in opt.param_groups)
    assert isinstance(sched, torch.optim.lr_scheduler.LinearLR)


def test_a_plain_network_is_refused_with_what_to_do() -> None:
    with pytest.raises(TypeError, match="not a sam3d model kind.*PromptFree"):
        parameter_groups(nn.Linear(2, 1))


def test_the_schedule_decays_linearly_to_end_factor_and_stays() -> None:
    from sam3d.baselines.networks import PromptFree

    net = PromptFree(nn.Linear(2, 1), name="linear", crop=(8, 8, 8))
    opt, sched = build_optimizer(net, lr=4e-4, weight_decay=0.0, epochs=4, end_factor=0.01)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(6):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # factor 1 + (0.01 - 1)·e/4 for epoch e ≤ 4, then 0.01
    want = [4e-4 * (1 - 0.99 * min(e, 4) / 4) for e in range(7)]
    assert lrs == pytest.approx(want, rel=1e-9)
    assert lrs[1] == pytest.approx(3.01e-4) and lrs[4] == lrs[6] == pytest.approx(4e-6)


def test_one_optimizer_with_three_groups_updates_like_three_optimizers() -> None:
    """The module docstring's claim: the official three AdamW optimisers and one AdamW with
    three groups give the same weights (Adam's state is per parameter)."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(5, generator=gen), torch.randn(2, 3, generator=gen),
             torch.randn(4, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(3)]

    class Three(nn.Module):  # a model kind with a Sam3D's three groups, one tensor each
        name, crop, promptable, negative_clicks, checkpoint_format = "three", 8, True, False, ""

        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = nn.ParameterList([nn.Parameter(start[0].clone())])
            self.prompt_encoders = nn.ParameterList([nn.Parameter(start[1].clone())])
            self.mask_decoder = nn.ParameterList([nn.Parameter(start[2].clone())])

        def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
            return {"encoder": list(self.image_encoder), "prompt": list(self.prompt_encoders),
                    "decoder": list(self.mask_decoder)}

    model = Three()
    opt, _ = build_optimizer(model, lr=1e-2, weight_decay=0.0, epochs=3, end_factor=0.01)
    ours = [model.image_encoder[0], model.prompt_encoders[0], model.mask_decoder[0]]
    theirs = [nn.Parameter(t.clone()) for t in start]
    official = [torch.optim.AdamW([p], lr=1e-2, weight_decay=0.0) for p in theirs]
    for step in grads:
        for p, q, g in zip(ours, theirs, step, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        for o in official:
            o.step()
    for p, q, s in zip(ours, theirs, start, strict=True):
        assert torch.equal(p.detach(), q.detach()) and not torch.equal(p.detach(), s)


def test_clipping_is_per_group() -> None:
    a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.AdamW([{"params": [a], "name": "encoder"},
                             {"params": [b], "name": "decoder"},
                             {"params": [c], "name": "prompt"}], lr=1e-3)
    a.grad = torch.tensor([3.0, 4.0])  # norm 5
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5
    # c has no gradient: its group is skipped
    norms = clip_per_group(opt, max_norm=1.0)
    assert set(norms) == {"encoder", "decoder"}
    assert norms["encoder"] == pytest.approx(5.0) and norms["decoder"] == pytest.approx(0.5)
    assert torch.allclose(a.grad, torch.tensor([0.6, 0.8]), atol=1e-5)  # scaled to norm 1
    # a global clip (norm √25.25) would have shrunk the small group too
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4])) and c.grad is None
    assert math.isclose(float(a.grad.norm()), 1.0, rel_tol=1e-5)
