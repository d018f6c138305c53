"""Keeping the clicked components (sam3d.inference.components) and the Predictor's rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stub_models import CubeModel

from sam3d import build_sam3d
from sam3d.data.specs import get_spec
from sam3d.inference.components import keep_clicked
from sam3d.inference.predictor import Predictor

SPEC = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)


def _two_blobs() -> torch.Tensor:
    """20³ probabilities: a blob at one end (0.9), a blob at the other (0.7), a faint haze."""
    prob = torch.full((20, 20, 20), 0.2)
    prob[2:6, 2:6, 2:6] = 0.9
    prob[12:18, 12:18, 12:18] = 0.7
    return prob


def test_only_the_clicked_component_stays_above_the_threshold():
    prob = _two_blobs()
    kept = keep_clicked(prob, np.array([[3, 3, 3]]))
    assert torch.equal(kept[2:6, 2:6, 2:6], prob[2:6, 2:6, 2:6])  # the clicked blob as it was
    assert kept[12:18, 12:18, 12:18].max() == 0  # the other is gone
    assert torch.equal(kept[prob < 0.5], prob[prob < 0.5])  # below the cut: untouched
    both = keep_clicked(prob, np.array([[3, 3, 3], [15, 15, 15]]))
    assert torch.equal(both, prob)
    assert keep_clicked(prob, np.zeros((0, 3), np.int64)).max() < 0.5  # no click, nothing kept


def test_a_click_one_voxel_off_the_rim_still_counts():
    prob = _two_blobs()
    assert keep_clicked(prob, np.array([[6, 3, 3]]))[2:6, 2:6, 2:6].min() == pytest.approx(0.9)
    assert keep_clicked(prob, np.array([[7, 3, 3]])).max() < 0.5  # two voxels off: not
    assert keep_clicked(prob, np.array([[7, 3, 3]]), reach=2)[3, 3, 3] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="reach"):
        keep_clicked(prob, np.array([[3, 3, 3]]), reach=-1)
    with pytest.raises(ValueError, match="D×H×W"):
        keep_clicked(prob[0], np.array([[3, 3, 3]]))


def test_the_predictor_keeps_what_the_model_is_for():
    """The *_maps variants segment the lesion a click is on: "clicked" by default; the paper's
    model every voxel; either can be asked for."""
    assert Predictor(build_sam3d("tiny_maps"), SPEC).keep == "clicked"
    assert Predictor(build_sam3d("tiny"), SPEC).keep == "all"
    assert Predictor(build_sam3d("tiny_interactive_maps"), SPEC).keep == "all"
    assert Predictor(build_sam3d("tiny"), SPEC, keep="clicked").keep == "clicked"
    with pytest.raises(ValueError, match="keep must be one of"):
        Predictor(build_sam3d("tiny"), SPEC, keep="largest")
    # two clicks far apart in one volume, sliding windows: "clicked" keeps both cubes, and
    # a cube no click is on never exists for the stand-in, so both rules agree here
    image = torch.zeros(3, 24, 24, 24)
    clicks = np.array([[4, 4, 4], [19, 19, 19]])
    for keep in ("all", "clicked"):
        prob = Predictor(CubeModel(crop=16), SPEC, keep=keep).probabilities(image, clicks,
                                                                             "sliding")
        assert prob[4, 4, 4] > 0.5 and prob[19, 19, 19] > 0.5
