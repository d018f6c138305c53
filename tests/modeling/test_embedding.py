"""Embed once, prompt many: ``Sam3D.encode`` / ``Sam3D.decode`` and the decoder's split
(``MaskDecoder3D.precompute`` / ``decode``)."""

from __future__ import annotations

import pytest
import torch

from sam3d import build_sam3d
from sam3d.modeling.literal import literal_paths
from sam3d.modeling.sam3d import Embedding


@pytest.mark.parametrize("levels", [(4,), (1, 4), (1, 2, 3, 4), ()])
def test_decode_of_encode_is_forward_and_matches_the_literal_decoder(tiny_inputs, randomise,
                                                                     levels) -> None:
    volume, points = tiny_inputs
    torch.manual_seed(0)
    model = randomise(build_sam3d("tiny", prompt_levels=levels)).eval()
    with torch.no_grad():
        emb = model.encode(volume)
        first = model.decode(emb, points)
        other = model.decode(emb, points.flip(1)[:, :2])  # the same embedding, other clicks
        assert torch.equal(first, model(volume, points))
        assert torch.equal(other, model(volume, points.flip(1)[:, :2]))
        with literal_paths(model, patch_embed=False):  # the official upsample → concat → conv
            literal = model(volume, points)
            assert torch.equal(model.decode(model.encode(volume), points), literal)
        assert torch.equal(model(volume, points), first)  # the fast decoder is back
    torch.testing.assert_close(first, literal, atol=2e-5, rtol=1e-4)
    assert set(emb.levels) == {lv - 1 for lv in levels}
    assert emb.shape == tuple(volume.shape) and emb.nbytes() > 0


def test_the_embedding_holds_no_unprompted_level(tiny_inputs) -> None:
    """Only the prompted level's features are kept; the others live on as the decoder's share
    (one ``B×mid×2g³`` tensor), so a follow-up click never runs their heads again."""
    volume, _ = tiny_inputs
    torch.manual_seed(0)
    model = build_sam3d("tiny").eval()
    calls = []
    for i in range(4):
        model.mask_decoder.mlahead.head(i).register_forward_hook(
            lambda m, a, o, i=i: calls.append(i))
    with torch.no_grad():
        emb = model.encode(volume)
        assert sorted(calls) == [0, 1, 2]  # level 4 (index 3) is prompted
        calls.clear()
        model.decode(emb, torch.zeros(2, 1, 3))
    assert calls == [3]
    g2 = 2 * emb.levels[3].shape[-1]
    assert emb.decoder["fixed"].shape == (2, model.mask_decoder.cls[0].out_channels, g2, g2, g2)


def test_decode_refuses_what_does_not_fit(tiny_model, tiny_inputs) -> None:
    volume, points = tiny_inputs
    with torch.no_grad():
        emb = tiny_model.encode(volume)
        with pytest.raises(TypeError, match="Sam3D.encode"):
            tiny_model.decode({"levels": {}}, points)
        with pytest.raises(ValueError, match="B = 2"):
            tiny_model.decode(emb, points[:1])
        with pytest.raises(ValueError, match="promptable"):
            tiny_model.decode(emb, None)
        with pytest.raises(ValueError, match="D = H = W"):
            tiny_model.encode(volume[..., :32])
        with pytest.raises(ValueError, match="decode needs the levels"):
            tiny_model.mask_decoder.decode(emb.decoder, {}, tiny_model.crop)
    assert isinstance(emb, Embedding)
