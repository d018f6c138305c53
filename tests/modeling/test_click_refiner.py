"""The click refiner (:mod:`sam3d.modeling.click_refiner`): a full-resolution correction in a
box around the corrective clicks. It starts at zero, so a checkpoint without it (the paper's,
the click-map extension's, the authors' dict) gives its own logits; trained, it changes the
logits only near corrective clicks, never for the first prompt; bad settings are refused."""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import official_from

from sam3d import build_sam3d
from sam3d.checkpoint import load_checkpoint, load_official_checkpoint, save_checkpoint
from sam3d.config import get_config
from sam3d.engine.warm_start import warm_start
from sam3d.modeling.click_refiner import ClickRefiner

REFINER = sorted(f"mask_decoder.click_refiner.net.{i}.{p}" for i in (0, 2, 4)
                 for p in ("weight", "bias"))


def _corrected(tiny_inputs):
    """``tiny_inputs`` with corrective clicks after its first prompt: ``(volume, points,
    clicks, labels, first prompt size)``, one correction negative."""
    volume, points = tiny_inputs
    clicks = torch.cat([points, points.flip(1) // 2 + 3], 1)  # first prompt, then corrections
    labels = torch.ones(clicks.shape[:2], dtype=torch.long)
    labels[0, -1] = 0
    return volume, points, clicks, labels, points.shape[1]


def _trained(model):
    """``model`` with its refiner's parameters moved off their start, as after training."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.mask_decoder.click_refiner.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def test_bad_settings_are_refused() -> None:
    for kwargs, match in (({"chans": 0}, "chans"), ({"margin": -1}, "margin"),
                          ({"sigma": 0}, "sigma"), ({"sigma": True}, "sigma"),
                          ({"sigma": "4"}, "sigma")):
        with pytest.raises(ValueError, match=match):
            ClickRefiner(**kwargs)
    for changes in ({"click_refiner": True}, {"click_refiner": "yes", "click_maps": True},
                    {"click_refiner": True, "click_maps": True, "maps_first_prompt": True}):
        with pytest.raises(ValueError, match="click_refiner"):
            get_config("tiny_interactive").replace(**changes)
    assert get_config("tiny_interactive_refine").click_refiner
    assert not get_config("tiny_interactive_maps").click_refiner


def test_the_refiner_starts_at_the_logits_without_it(randomise, tiny_inputs, tmp_path) -> None:
    torch.manual_seed(0)
    maps = randomise(build_sam3d("tiny_interactive_maps")).eval()
    save_checkpoint(maps, tmp_path / "maps.pt")
    refine = build_sam3d("tiny_interactive_refine").eval()
    assert sorted(warm_start(refine, tmp_path / "maps.pt")) == REFINER
    volume, points, clicks, labels, first = _corrected(tiny_inputs)
    with torch.no_grad():
        assert torch.equal(refine(volume, clicks, labels, first_prompt=first),
                           maps(volume, clicks, labels, first_prompt=first))
    # the authors' dict loads into it too, the refiner at its zero start: the paper's logits
    paper = randomise(build_sam3d("tiny")).eval()
    ext = load_official_checkpoint(official_from(paper), "tiny_interactive_refine").eval()
    last = ext.mask_decoder.click_refiner.net[-1]
    assert not last.weight.any() and not last.bias.any()
    with torch.no_grad():
        assert torch.equal(ext(volume, clicks, labels, first_prompt=first),
                           without_refiner(ext)(volume, clicks, labels, first_prompt=first))
    # and a checkpoint of its own round-trips whole
    _trained(refine)
    save_checkpoint(refine, tmp_path / "refine.pt")
    again = load_checkpoint(tmp_path / "refine.pt").eval()
    with torch.no_grad():
        assert torch.equal(again(volume, clicks, labels, first_prompt=first),
                           refine(volume, clicks, labels, first_prompt=first))


def without_refiner(model):
    """The click-map extension with ``model``'s weights, less the refiner."""
    maps = build_sam3d("tiny_interactive_maps").eval()
    maps.load_state_dict({k: v for k, v in model.state_dict().items() if k not in REFINER})
    return maps


def test_a_trained_refiner_acts_only_near_corrective_clicks(randomise) -> None:
    torch.manual_seed(0)
    model = _trained(randomise(build_sam3d("tiny_interactive_refine"))).eval()
    maps = without_refiner(model)
    volume = torch.randn(2, 1, 64, 64, 64)
    # sample 0: first click at the centre, one negative correction near a corner;
    # sample 1: the same first click, a positive correction at the opposite corner
    clicks = torch.tensor([[[32, 32, 32], [8, 10, 12]], [[32, 32, 32], [55, 50, 52]]])
    labels = torch.tensor([[1, 0], [1, 1]])
    with torch.no_grad():
        got = model(volume, clicks, labels, first_prompt=1)
        want = maps(volume, clicks, labels, first_prompt=1)
        # the first prompt alone: no correction anywhere
        assert torch.equal(model(volume, clicks[:, :1], labels[:, :1], first_prompt=1),
                           maps(volume, clicks[:, :1], labels[:, :1], first_prompt=1))
    changed = (got != want).any(1)  # B×D×H×W
    margin = model.mask_decoder.click_refiner.margin
    for b in range(2):
        d, h, w = clicks[b, 1].tolist()
        assert changed[b, d, h, w]  # it corrects at the click
        box = torch.zeros_like(changed[b])
        box[max(d - margin, 0):d + margin + 1, max(h - margin, 0):h + margin + 1,
            max(w - margin, 0):w + margin + 1] = True
        assert not (changed[b] & ~box).any()  # and only in the box around it


def test_the_refiner_trains_from_corrective_clicks(randomise) -> None:
    torch.manual_seed(0)
    model = randomise(build_sam3d("tiny_interactive_refine")).train()
    volume = torch.randn(1, 1, 64, 64, 64)
    clicks = torch.tensor([[[32, 32, 32], [30, 36, 33]]])
    model(volume, clicks, torch.tensor([[1, 0]]), first_prompt=1)[:, 1].mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n in REFINER}
    # the zero last convolution gets a gradient at once; the ones before it once it moves
    assert grads["mask_decoder.click_refiner.net.4.weight"].abs().max() > 0
    assert all(g is not None for g in grads.values())


def test_refiner_only_keeps_the_corrections_out_of_the_decoder(randomise, tiny_inputs,
                                                               tmp_path) -> None:
    """``tiny_interactive_local``: the decoder sees the first prompt alone, so at its zero
    start the refiner gives exactly the start's logits for the first prompt, whatever the
    corrections; trained, it changes them only in the box around the corrections."""
    for changes in ({"refiner_only": True}, {"refiner_only": True, "click_refiner": True,
                                             "click_maps": True},
                    {"refiner_only": 1, "click_refiner": True}):
        with pytest.raises(ValueError, match="refiner_only"):
            get_config("tiny_interactive").replace(**changes)
    with pytest.raises(ValueError, match="refiner_only needs"):
        get_config("tiny").replace(click_refiner=True, refiner_only=True)
    torch.manual_seed(0)
    start = randomise(build_sam3d("tiny_interactive")).eval()
    save_checkpoint(start, tmp_path / "start.pt")
    local = build_sam3d("tiny_interactive_local").eval()
    assert local.takes_first_prompt and not local.click_maps
    assert sorted(warm_start(local, tmp_path / "start.pt")) == REFINER
    volume, points, clicks, labels, first = _corrected(tiny_inputs)
    with torch.no_grad():
        want = start(volume, points, labels[:, :first])
        assert torch.equal(local(volume, clicks, labels, first_prompt=first), want)
        _trained(local)
        assert torch.equal(local(volume, points, labels[:, :first], first_prompt=first), want)
        got = local(volume, clicks, labels, first_prompt=first)
    assert torch.equal(got[:, 0], want[:, 0])  # the refiner moves the foreground's logit
    changed = got[:, 1] != want[:, 1]
    refiner = local.mask_decoder.click_refiner
    for b in range(clicks.shape[0]):
        inside = torch.zeros_like(changed[b])
        inside[refiner.box(clicks[b, first:], tuple(changed.shape[1:]))] = True
        assert changed[b][inside].any() and not (changed[b] & ~inside).any()
    with pytest.raises(ValueError, match="first_prompt must be an integer in 1"):
        local(volume, clicks, labels, first_prompt=0)
