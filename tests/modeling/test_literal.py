"""The literal reference paths (``sam3d.modeling.literal``): a whole model on them, and back."""

from __future__ import annotations

import pytest
import torch

from sam3d.modeling.literal import LiteralMaskDecoder, LiteralPatchEmbed, literal_paths
from sam3d.modeling.mask_decoder import MaskDecoder3D
from sam3d.modeling.patch_embed import VolumePatchEmbed


def test_a_model_on_the_literal_paths_gives_the_fast_logits(tiny_model, tiny_inputs) -> None:
    volume, points = tiny_inputs
    fast_params = {id(p) for p in tiny_model.parameters()}
    with torch.no_grad():
        fast = tiny_model(volume, points)
        with literal_paths(tiny_model) as model:
            assert isinstance(model.image_encoder.patch_embed, LiteralPatchEmbed)
            assert isinstance(model.mask_decoder, LiteralMaskDecoder)
            assert {id(p) for p in model.parameters()} == fast_params  # shared, not copied
            literal = model(volume, points)
            assert model.crop == volume.shape[-1]
    assert isinstance(tiny_model.image_encoder.patch_embed, VolumePatchEmbed)
    assert isinstance(tiny_model.mask_decoder, MaskDecoder3D)
    assert not torch.equal(fast, literal)  # another computation …
    torch.testing.assert_close(fast, literal, atol=2e-4, rtol=1e-4)  # … of the same logits


def test_the_fast_modules_come_back_after_an_error(tiny_model, tiny_inputs) -> None:
    embed, decoder = tiny_model.image_encoder.patch_embed, tiny_model.mask_decoder
    with pytest.raises(RuntimeError, match="inside"), literal_paths(tiny_model):
        raise RuntimeError("inside")
    assert tiny_model.image_encoder.patch_embed is embed and tiny_model.mask_decoder is decoder


def test_the_literal_decoder_checks_its_levels(tiny_model, tiny_inputs) -> None:
    volume, _ = tiny_inputs
    with torch.no_grad(), literal_paths(tiny_model, patch_embed=False) as model:
        emb = model.encode(volume)
        with pytest.raises(ValueError, match="decode needs the levels"):
            model.mask_decoder.decode(emb.decoder, {}, model.crop)
        with pytest.raises(ValueError, match="outside"):
            model.mask_decoder.precompute(emb.decoder["feats"], emb.decoder["skip"], [7])
