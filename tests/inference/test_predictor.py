"""Predictor: the ROI and sliding-window coverage and the way back to the input grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from stub_models import CubeModel

from sam3d.data.specs import get_spec
from sam3d.inference.predictor import Predictor

SPEC = get_spec("custom", target=1, window=(-1000.0, 1000.0), mean=0.0, std=1.0)


def _volume(tmp_path, shape=(40, 36, 30), affine=None):
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4) if affine is None else affine),
             path)
    return path


def test_roi_mode_predicts_only_inside_one_box(tmp_path) -> None:
    p = Predictor(CubeModel(crop=16), SPEC)
    data = p.load(str(_volume(tmp_path)))
    d, h, w = data["image"].shape[1:]
    assert (d, h, w) == (30, 36, 40)  # D×H×W = z, y, x at 1 mm
    prob = p.probabilities(data["image"], np.array([[10, 10, 10]]), "roi")
    assert prob.shape == (d, h, w)
    assert torch.equal(torch.nonzero(prob > 0.5).min(0).values, torch.tensor([8, 8, 8]))
    assert int((prob > 0.5).sum()) == 125 and p.clicks_used == 1
    # two clicks further apart than the box: one is left out, and the box follows the first
    prob = p.probabilities(data["image"], np.array([[1, 1, 1], [28, 34, 38]]), "roi")
    assert p.clicks_used == 1 and int((prob > 0.5).sum()) == 64  # the corner cube is clipped


def test_sliding_mode_covers_the_whole_volume(tmp_path) -> None:
    p = Predictor(CubeModel(crop=16), SPEC)
    data = p.load(str(_volume(tmp_path)))
    clicks = np.array([[3, 3, 3], [26, 32, 36]])
    prob = p.probabilities(data["image"], clicks, "sliding")
    mask = prob > 0.5
    assert mask[1:6, 1:6, 1:6].all() and mask[24:29, 30:35, 34:39].all()
    assert int(mask.sum()) == 2 * 125  # exactly the two cubes: unprompted windows do not vote


def test_masks_come_back_on_the_input_grid(tmp_path) -> None:
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    path = _volume(tmp_path, (40, 36, 12), affine)
    p = Predictor(CubeModel(crop=16, half=3), SPEC)
    data = p.load(str(path))
    prob = p.probabilities(data["image"], np.array([[15, 16, 16]]), "roi")
    mask = p.to_input_grid(data, prob)
    assert mask.shape == (40, 36, 12) and mask.dtype == np.uint8
    # a 7 mm cube at 0.8×0.9×2.5 mm voxels: about 7/0.8 × 7/0.9 × 7/2.5 voxels
    assert 0.5 * (7 / 0.8) * (7 / 0.9) * (7 / 2.5) < mask.sum() < 2 * (7 / 0.8) * (7 / 0.9) * 3


def test_arguments_are_checked(tmp_path) -> None:
    with pytest.raises(ValueError, match="statistics"):
        Predictor(CubeModel(), get_spec("custom"))
    p = Predictor(CubeModel(crop=16), SPEC)
    data = p.load(str(_volume(tmp_path)))
    with pytest.raises(ValueError, match="mode"):
        p.probabilities(data["image"], np.array([[1, 1, 1]]), "everywhere")


@pytest.mark.parametrize("mode", ["roi", "sliding", "objects"])
def test_values_are_checked_before_the_model_runs(tmp_path, mode: str) -> None:
    """The model checks shapes only (it reads no value); the predictor is the boundary that
    refuses a non-finite image and clicks outside it — in every mode, the sliding window too,
    which used to drop such a click silently."""
    from sam3d.data.clicks import ClickError

    model = CubeModel(crop=16)
    p = Predictor(model, SPEC)
    image = p.load(str(_volume(tmp_path)))["image"]  # 1×30×36×40
    for bad, where in ((float("nan"), (0, 3, 4, 5)), (float("inf"), (0, 29, 35, 39))):
        broken = image.clone()
        broken[where] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            p.probabilities(broken, np.array([[10, 10, 10]]), mode)
    with pytest.raises(ClickError, match=r"outside the volume of shape \(30, 36, 40\)"):
        p.probabilities(image, np.array([[10, 10, 10], [30, 1, 1]]), mode)
    with pytest.raises(ClickError, match="index -1 < 0"):
        p.probabilities(image, np.array([[10, -1, 10]]), mode)
    with pytest.raises(ClickError, match="non-integer"):
        p.probabilities(image, np.array([[10.5, 1.0, 1.0]]), mode)
    with pytest.raises(ValueError, match=r"C×D×H×W .* got shape \(30, 36, 40\)"):
        p.probabilities(image[0], np.array([[10, 10, 10]]), mode)
    assert model.calls == []  # nothing reached the model
    p.probabilities(image, np.array([[29, 35, 39]]), mode)  # the far corner is inside
    assert len(model.calls) == 1
