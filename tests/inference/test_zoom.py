"""Zooming in on small lesions (sam3d.inference.zoom) and the Predictor's use of it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from stub_models import FloodModel

from sam3d import build_sam3d
from sam3d.data.specs import get_spec
from sam3d.inference.predictor import Predictor
from sam3d.inference.zoom import check_zoom, enlarge, fits, shrink, zoom_points

SPEC = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)


class LesionFlood(FloodModel):
    """The flood-fill oracle as a model asked for the lesion a click is on (a *_maps variant)."""

    config = SimpleNamespace(maps_first_prompt=True)


def _image() -> torch.Tensor:
    """3×48×48×48: a small bright lesion (4³ at 10–13) and a large one (24³ at 22–45)."""
    image = torch.zeros(3, 48, 48, 48)
    image[:, 10:14, 10:14, 10:14] = 100.0
    image[:, 22:46, 22:46, 22:46] = 100.0
    return image


def test_factors_are_checked_against_the_crop():
    assert check_zoom(1, 64) == 1 and check_zoom(np.int64(2), 64) == 2 and check_zoom(8, 64) == 8
    for bad, message in ((0, "integer factor ≥ 1"), (True, "integer factor"),
                         (1.5, "integer factor"), ("2", "integer factor"),
                         (3, "must divide the model's crop 64"), (16, "at least 8 voxels")):
        with pytest.raises(ValueError, match=message):
            check_zoom(bad, 64)


def test_enlarging_and_shrinking_map_voxels_to_blocks():
    small = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    big = enlarge(small, 4)
    assert big.shape == (1, 1, 4, 4, 4)
    blocks = torch.zeros(4, 4, 4)
    blocks[:2, :2, :2], blocks[2:, 2:, 2:] = 1.0, 0.5
    assert torch.equal(shrink(blocks, 2), torch.tensor([[[1.0, 0.0], [0.0, 0.0]],
                                                        [[0.0, 0.0], [0.0, 0.5]]]))
    # the box's centre voxel stays the centre voxel: training clicked there
    assert zoom_points(np.array([[16, 16, 16], [0, 3, 31]]), 2).tolist() == [[32, 32, 32],
                                                                            [0, 6, 62]]


def test_a_lesion_fits_when_its_clicked_part_spans_half_the_box_or_less():
    prob = torch.zeros(16, 16, 16)
    prob[2:10, 4:6, 4:6] = 0.9  # spans 8 = 16 // 2
    prob[12:16, 12:16, 12:16] = 0.9  # another component, not clicked
    assert fits(prob, np.array([[3, 4, 4]]))
    prob[2:11, 4:6, 4:6] = 0.9  # 9: too large
    assert not fits(prob, np.array([[3, 4, 4]]))
    assert not fits(prob, np.array([[0, 15, 0]]))  # nothing found at the click
    assert not fits(prob, np.zeros((0, 3), np.int64))


def test_the_default_follows_what_the_model_is_for():
    """Only the *_maps variants (segment the lesion a click is on) zoom by default; the
    paper's model and the negative-click extension predict as the official code does."""
    assert Predictor(build_sam3d("tiny_maps"), SPEC).zoom == 2
    assert Predictor(build_sam3d("tiny"), SPEC).zoom == 1
    assert Predictor(build_sam3d("tiny_interactive_maps"), SPEC).zoom == 1
    assert Predictor(build_sam3d("tiny"), SPEC, zoom=4).zoom == 4
    with pytest.raises(ValueError, match="zoom 3 must divide the model's crop 64"):
        Predictor(build_sam3d("tiny"), SPEC, zoom=3)


def test_a_small_lesion_is_predicted_in_the_zoomed_box():
    model = LesionFlood(crop=32)
    image = _image()
    p = Predictor(model, SPEC)
    assert p.zoom == 2 and p.keep == "clicked"
    prob = p.probabilities(image, np.array([[11, 12, 11]]), "roi")
    assert [b.size for b in p.boxes] == [16] and p.boxes[0].start == (3, 4, 3)
    assert model.calls[-1].tolist() == [[[16, 16, 16]]]  # the click on the enlarged centre
    mask = prob >= 0.5
    assert torch.equal(mask[:20, :20, :20], image[0, :20, :20, :20] > 50)
    assert int(mask.sum()) == 64
    # without zoom: the crop's box, the same lesion
    plain = Predictor(model, SPEC, zoom=1)
    assert torch.equal(plain.probabilities(image, np.array([[11, 12, 11]]), "roi") >= 0.5, mask)
    assert [b.size for b in plain.boxes] == [32]


def test_a_large_lesion_falls_back_to_the_crop_box():
    model = LesionFlood(crop=32)
    p = Predictor(model, SPEC)
    prob = p.probabilities(_image(), np.array([[30, 30, 30]]), "roi")
    assert [b.size for b in p.boxes] == [32]  # 16 voxels of lesion fill the 16³ box: too big
    assert len(model.calls) == 2  # the zoomed try, then the crop's box
    assert int((prob >= 0.5).sum()) == 24 ** 3  # all of it, in the crop's box 14–45
    # clicks spread wider than the small box: no zoomed try at all
    model.calls.clear()
    p.probabilities(_image(), np.array([[11, 11, 11], [11, 11, 30]]), "roi")
    assert len(model.calls) == 1 and [b.size for b in p.boxes] == [32]


def test_objects_fix_the_zoom_with_their_first_click():
    model = LesionFlood(crop=32)
    p = Predictor(model, SPEC)
    clicks = np.array([[11, 11, 11], [30, 30, 30], [12, 12, 12]])
    prob = p.probabilities(_image(), clicks, "objects")
    assert [b.size for b in p.boxes] == [16, 32]  # the small lesion zoomed, the large one not
    assert int((prob[:20, :20, :20] >= 0.5).sum()) == 64
    # the third click joined the small lesion's zoomed box: one prompt of two clicks there
    assert any(c.shape[1] == 2 and c.tolist()[0][0] == [16, 16, 16] for c in model.calls)
