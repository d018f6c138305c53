"""The model-kind protocol (:mod:`sam3d.modeling.kind`): both kinds of network answer it, and
the checkpoint registry writes and reads each in its own format."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam3d.baselines.networks import BASELINE_FORMAT, BASELINES, PromptFree
from sam3d.build import build_from_config, build_sam3d
from sam3d.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointFormat,
    get_format,
    known_formats,
    load_checkpoint,
    read_checkpoint_file,
    register_format,
    save_checkpoint,
)
from sam3d.config import get_config
from sam3d.modeling import Sam3D
from sam3d.modeling.kind import SegmentationModel, crop_size


def test_both_kinds_answer_the_protocol() -> None:
    sam = build_sam3d("tiny")
    auto = build_sam3d("tiny_auto_adapter")
    base = BASELINES["dynunet_smoke"].engine_model()
    for model in (sam, auto, base):
        assert isinstance(model, SegmentationModel)
    assert (sam.name, sam.crop, sam.promptable, sam.checkpoint_format) == ("tiny", 64, True,
                                                                           FORMAT)
    assert not auto.promptable and not base.promptable and not base.negative_clicks
    assert base.checkpoint_format == BASELINE_FORMAT and list(base.parameter_groups()) == [
        "network"]
    assert list(sam.parameter_groups()) == ["encoder", "prompt", "decoder"]
    assert not isinstance(nn.Linear(2, 1), SegmentationModel)


def test_sam3d_refuses_parts_of_another_configuration() -> None:
    tiny = build_from_config(get_config("tiny"))
    with pytest.raises(ValueError, match="do not match configuration 'vit_b'"):
        Sam3D(tiny.image_encoder, tiny.mask_decoder,
              {int(k): v for k, v in tiny.prompt_encoders.items()}, get_config("vit_b"))


@pytest.mark.parametrize("kind", ["sam3d", "baseline"])
def test_each_kind_round_trips_in_its_own_format(kind, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_sam3d("tiny") if kind == "sam3d" else BASELINES["dynunet_smoke"].engine_model()
    path = tmp_path / "m.pt"
    save_checkpoint(model, path, extra={"note": kind})
    raw = read_checkpoint_file(path)
    assert raw["format"] == model.checkpoint_format and raw["extra"] == {"note": kind}
    back = load_checkpoint(path)
    assert type(back) is type(model) and back.name == model.name
    assert crop_size(back.crop) == crop_size(model.crop)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(),
                                                  model.state_dict().values(), strict=True))


def test_the_registry_refuses_unknown_and_repeated_formats(tmp_path) -> None:
    assert {FORMAT, BASELINE_FORMAT} <= set(known_formats())
    assert get_format("no-such/1") is None and get_format(["not", "a", "name"]) is None
    path = tmp_path / "other.pt"
    torch.save({"format": "no-such/1", "state": {}}, path)
    with pytest.raises(CheckpointError, match="not a sam3d checkpoint.*'sam3d-baseline/1'"):
        load_checkpoint(path)
    sam3d_format = get_format(FORMAT)
    assert isinstance(sam3d_format, CheckpointFormat)
    with pytest.raises(ValueError, match="already registered"):
        register_format(sam3d_format)
    with pytest.raises(TypeError, match="CheckpointFormat"):
        register_format("sam3d/1")  # type: ignore[arg-type]


def test_crop_size() -> None:
    assert crop_size(64) == (64, 64, 64) and crop_size((8, 16, 16)) == (8, 16, 16)
    with pytest.raises(ValueError, match="int edge or"):
        crop_size((8, 16))


def test_a_prompt_free_wrapper_is_a_model_kind() -> None:
    net = PromptFree(nn.Conv3d(1, 2, 1), name="conv", crop=(8, 8, 8))
    assert isinstance(net, SegmentationModel) and net.crop == 8
