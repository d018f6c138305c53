"""segment-anything ViT SAMs of any size, and their size read back from a state dict."""

from __future__ import annotations

import pytest
import torch
from segment_anything import sam_model_registry

from sam3d.baselines.sam_vit import SamViTShape, build_sam_vit, shape_from_state, shape_of_variant
from sam3d.baselines.weights import build_sam_from_checkpoint, build_sam_model
from sam3d.checkpoint import CheckpointError


def test_vit_b_shape_matches_segment_anythings_own_builder():
    with torch.device("meta"):
        official = sam_model_registry["vit_b"](checkpoint=None)
        ours = build_sam_vit(SamViTShape())
    theirs = {k: tuple(v.shape) for k, v in official.state_dict().items()}
    assert theirs == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shape_from_state(official.state_dict()) == SamViTShape()


@pytest.mark.parametrize("shape", [
    shape_of_variant("tiny"),
    SamViTShape(64, 3, 2, (2,), img_size=128, window_size=4, mlp_ratio=2.0),
])
def test_shape_round_trips_through_a_state_dict(shape):
    assert shape_from_state(build_sam_vit(shape).state_dict()) == shape


def test_vit_encoder_loads_by_shape_and_refuses_other_files(tmp_path):
    small = SamViTShape(64, 2, 2, (1,), img_size=128, window_size=4)
    torch.save(build_sam_vit(small).state_dict(), tmp_path / "small.pth")
    sam = build_sam_from_checkpoint(tmp_path / "small.pth", "vit")
    assert sam.image_encoder.img_size == 128 and len(sam.image_encoder.blocks) == 2
    torch.save(build_sam_model("tiny_vit", img_size=64).state_dict(), tmp_path / "mobile.pt")
    with pytest.raises(CheckpointError, match="not a ViT SAM"):
        build_sam_from_checkpoint(tmp_path / "mobile.pt", "vit")
    with pytest.raises(ValueError, match="from a checkpoint"):
        build_sam_model("vit")


def test_shape_validation():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        SamViTShape(embed_dim=100, num_heads=3)
    with pytest.raises(ValueError, match="global_attn_indexes"):
        SamViTShape(depth=2, global_attn_indexes=(5,))
    with pytest.raises(ValueError, match="positive integer"):
        SamViTShape(depth=0)
