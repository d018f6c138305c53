"""The rehearsal's random SAM-format checkpoint: segment-anything's layout, the tiny encoder's
shapes, loadable by both the 3D model and the SAM 2D baseline."""

from __future__ import annotations

import pytest
import torch

from sam3d import build_sam3d
from sam3d.baselines.sam_vit import shape_from_state, shape_of_variant
from sam3d.baselines.weights import build_sam_from_checkpoint
from sam3d.build import sha256_file
from sam3d.rehearsal import rehearse
from sam3d.rehearsal.sam_weights import write_sam_checkpoint


def test_written_once_seeded_and_loadable_everywhere(tmp_path):
    path = write_sam_checkpoint(tmp_path / "sam.pth")
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert {k.split(".")[0] for k in state} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    assert shape_from_state(state) == shape_of_variant("tiny")
    again = write_sam_checkpoint(tmp_path / "other.pth")
    other = torch.load(again, weights_only=True)  # same seed, same tensors
    assert other.keys() == state.keys() and all(torch.equal(other[k], state[k]) for k in state)
    stamp = path.stat().st_mtime_ns
    assert write_sam_checkpoint(path) == path and path.stat().st_mtime_ns == stamp  # kept
    model = build_sam3d("tiny", sam_checkpoint=path)
    report = model.sam_load_report
    assert len(report.loaded) > 50 and model.sam_checkpoint_sha256 == sha256_file(path)
    encoder = model.image_encoder.state_dict()
    assert all(torch.equal(encoder[n], state[f"image_encoder.{n}"]) for n in report.loaded)
    sam = build_sam_from_checkpoint(path, "vit")  # the SAM 2D rows of Table 1, strict load
    assert sam.image_encoder.img_size == 256


def test_rehearse_outside_full_mode_or_with_a_bad_flag_is_refused():
    assert rehearse("smoke", False) is None and rehearse("full", False) is None
    with pytest.raises(ValueError, match="MODE = 'full'"):
        rehearse("smoke", True)
    with pytest.raises(ValueError, match="True or False"):
        rehearse("full", "yes")


def test_every_table_2_and_3_row_loads_the_rehearsal_weights(tmp_path):
    """A rehearsal trains two rows of Tables 2 and 3 (``chapters.REHEARSED_ROWS``); the toy
    counterpart of every row's full variant still builds on the rehearsal's SAM-format weights,
    the step of the full-mode path that differs between rows."""
    from sam3d.experiments import levels, peft
    from sam3d.experiments.chapters import REHEARSED_ROWS
    from sam3d.rehearsal.shrink import small_variant

    path = write_sam_checkpoint(tmp_path / "sam.pth")
    variants = {small_variant(peft.variant_of(m, "full")) for m in peft.METHODS}
    variants |= {small_variant(levels.variant_of(s, "full")) for s in levels.SETTINGS}
    assert len(variants) == 11  # six methods and five settings ("4" is the plain tiny)
    for name in sorted(variants):
        report = build_sam3d(name, sam_checkpoint=path).sam_load_report
        assert len(report.loaded) > 50, name
    (_, methods), (_, settings) = (REHEARSED_ROWS["05_table2_peft"],
                                   REHEARSED_ROWS["07_feature_level"])
    assert set(methods) <= set(peft.METHODS) and set(settings) <= set(levels.SETTINGS)
