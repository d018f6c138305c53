"""Click maps (:mod:`sam3d.modeling.click_maps`): the clicks as positive and negative maps at
the decoder's resolution, through a convolution that starts at zero, so a paper checkpoint
loaded into a model with them gives the paper's logits; with trained weights the logits
depend on where a click lies; bad settings are refused."""

from __future__ import annotations

import pytest
import torch
from test_checkpoint import official_from

from sam3d import build_sam3d
from sam3d.checkpoint import load_checkpoint, load_official_checkpoint, save_checkpoint
from sam3d.config import get_config
from sam3d.modeling.click_maps import click_maps
from sam3d.modeling.mask_decoder import MaskDecoder3D


def test_each_click_peaks_at_its_cell_in_its_own_channel() -> None:
    points = torch.tensor([[[10, 20, 30], [40, 2, 61]]])  # (d, h, w) in a 64³ volume
    maps = click_maps(points, torch.tensor([[1, 0]]), (64, 64, 64), 32)
    assert maps.shape == (1, 2, 32, 32, 32)
    for channel, (d, h, w) in enumerate(points[0].tolist()):
        peak = divmod(int(maps[0, channel].argmax()), 32 * 32)
        hw, dd = divmod(peak[1], 32)
        assert (peak[0], hw, dd) == (h // 2, w // 2, d // 2)  # (H, W, D) layout, 2 voxels a cell
        assert 0.9 < float(maps[0, channel].max()) <= 1.0
    assert torch.equal(click_maps(points, None, (64, 64, 64), 32)[:, 1],
                       torch.zeros(1, 32, 32, 32))  # no labels: every click positive
    both = click_maps(points, torch.ones(1, 2, dtype=torch.long), (64, 64, 64), 32)[0, 0]
    assert float(both.min()) >= 0 and torch.allclose(both, (
        click_maps(points[:, :1], None, (64, 64, 64), 32)[0, 0]
        + click_maps(points[:, 1:], None, (64, 64, 64), 32)[0, 0]))
    twice = click_maps(points[:, [0, 0]], None, (64, 64, 64), 32)[0, 0]
    assert torch.allclose(twice, 2 * click_maps(points[:, :1], None, (64, 64, 64), 32)[0, 0])
    # positions of one object: the maximum, so a click given twice is the map of one
    once = click_maps(points[:, :1], None, (64, 64, 64), 32, combine="max")
    assert torch.equal(click_maps(points[:, [0, 0]], None, (64, 64, 64), 32, combine="max"),
                       once)
    assert torch.equal(click_maps(points, None, (64, 64, 64), 32, combine="max")[0, 0],
                       torch.maximum(once[0, 0], click_maps(points[:, 1:], None, (64, 64, 64),
                                                            32)[0, 0]))
    with pytest.raises(ValueError, match="combine must be"):
        click_maps(points, None, (64, 64, 64), 32, combine="mean")


def test_a_paper_checkpoint_with_click_maps_gives_the_paper_logits(randomise, tiny_inputs,
                                                                    tmp_path) -> None:
    torch.manual_seed(0)
    paper = randomise(build_sam3d("tiny")).eval()
    ext = load_official_checkpoint(official_from(paper), "tiny_interactive",
                                   click_maps=True).eval()
    conv = ext.mask_decoder.click_conv
    assert conv is not None and torch.equal(conv.weight, torch.zeros_like(conv.weight))
    volume, points = tiny_inputs
    ones = torch.ones(points.shape[:2], dtype=torch.long)
    with torch.no_grad():
        want = paper(volume, points)
        assert torch.equal(ext(volume, points, ones), want)
        conv.weight.normal_(0, 0.5)  # as after training: the position of a click matters
        moved = points.clone()
        moved[:, -1] = (moved[:, -1] + 9) % 64
        labels = ones.clone()
        labels[:, -1] = 0
        one, other = ext(volume, points, labels), ext(volume, moved, labels)
        assert (one - other).abs().max() > 1e-3
        assert torch.equal(ext.decode(ext.encode(volume), points, labels), one)
    path = tmp_path / "maps.pt"
    save_checkpoint(ext, path)
    back = load_checkpoint(path).eval()
    assert back.config.click_maps
    with torch.no_grad():
        assert torch.equal(back(volume, points, labels), one)


def test_bad_click_map_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="click_maps needs a prompt encoder"):
        get_config("tiny").replace(click_maps=True, prompt_levels=())
    with pytest.raises(ValueError, match="maps_first_prompt needs click_maps"):
        get_config("tiny").replace(maps_first_prompt=True)
    with pytest.raises(ValueError, match="maps_first_prompt must be true or false"):
        get_config("tiny_maps").replace(maps_first_prompt=1)
    with pytest.raises(ValueError, match="click_maps must be true or false"):
        get_config("tiny_interactive").replace(click_maps="yes")
    with pytest.raises(ValueError, match="click_chans must be 0 or 2"):
        MaskDecoder3D(32, 16, 4, click_chans=1)
    decoder = MaskDecoder3D(32, 16, 4, click_chans=2)
    feats = [torch.zeros(1, 32, 4, 4, 4)] * 4
    pre = decoder.precompute(feats, torch.zeros(1, 1, 8, 8, 8), ())
    with pytest.raises(ValueError, match="click maps go with a decoder"):
        decoder.decode(pre, {}, 16)
    with pytest.raises(ValueError, match="click maps go with a decoder"):
        MaskDecoder3D(32, 16, 4).decode(pre, {}, 16, torch.zeros(1, 2, 8, 8, 8))


def test_the_first_prompt_stays_out_of_the_maps(randomise, tiny_inputs) -> None:
    """``first_prompt`` = N: the first N clicks enter as tokens only (the logits of the same
    model with an untrained click convolution); the maps carry the later clicks."""
    torch.manual_seed(0)
    ext = randomise(build_sam3d("tiny_interactive_maps")).eval()
    volume, points = tiny_inputs
    labels = torch.tensor([[1, 1, 0], [1, 0, 1]])
    assert ext.click_maps and not build_sam3d("tiny_interactive").click_maps
    assert torch.equal(click_maps(points[:, :0], None, (64, 64, 64), 32),
                       torch.zeros(2, 2, 32, 32, 32))  # no click: empty maps
    conv = ext.mask_decoder.click_conv
    assert conv is not None
    with torch.no_grad():
        emb = ext.encode(volume)
        conv.weight.normal_(0, 0.5)
        trained = {n: ext.decode(emb, points, labels, n) for n in (0, 2, 3)}
        saved = conv.weight.clone()
        conv.weight.zero_()
        tokens_only = ext.decode(emb, points, labels)
        conv.weight.copy_(saved)
        assert torch.equal(trained[3], tokens_only)  # the whole prompt is the first prompt
        assert (trained[2] - tokens_only).abs().max() > 1e-3  # the last click is a map
        assert (trained[0] - trained[2]).abs().max() > 1e-3
        assert torch.equal(ext(volume, points, labels, 2), trained[2])
        for bad in (-1, 4, True, 1.5):
            with pytest.raises(ValueError, match="first_prompt must be an integer in 0..3"):
                ext.decode(emb, points, labels, bad)


def test_a_maps_variant_puts_every_click_in_the_maps(randomise, tiny_inputs, tmp_path) -> None:
    """``tiny_maps`` (``maps_first_prompt``): whatever ``first_prompt`` says, every click is a
    map; positive clicks only (no negative-click extension); the setting survives a save."""
    torch.manual_seed(0)
    model = randomise(build_sam3d("tiny_maps")).eval()
    assert model.click_maps and not model.negative_clicks and model.config.maps_first_prompt
    volume, points = tiny_inputs
    conv = model.mask_decoder.click_conv
    assert conv is not None
    with torch.no_grad():
        emb = model.encode(volume)
        conv.weight.normal_(0, 0.5)
        every = model.decode(emb, points, None, 0)
        for first in (1, 3):
            assert torch.equal(model.decode(emb, points, None, first), every)
        moved = points.clone()
        moved[:, 0] = (moved[:, 0] + 9) % 64  # the first click is a position too
        assert (model.decode(emb, moved) - every).abs().max() > 1e-3
        with pytest.raises(ValueError, match="no negative-click extension"):
            model.decode(emb, points, torch.ones(points.shape[:2], dtype=torch.long))
    path = tmp_path / "maps.pt"
    save_checkpoint(model, path)
    back = load_checkpoint(path).eval()
    assert back.config.maps_first_prompt
    with torch.no_grad():
        assert torch.equal(back(volume, points), every)
    assert not get_config("vit_b_maps").negative_clicks and get_config("vit_b_maps").click_maps
