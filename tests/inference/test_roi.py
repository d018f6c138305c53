"""The official single-ROI crop (sam3d.inference.roi): placement, zero padding, pasting back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam3d.data.clicks import ClickError
from sam3d.inference.roi import Box, clicks_in_roi, crop_roi, paste_roi, roi_box

SHAPE = (20, 24, 28)


def _volume(channels: int = 2, shape=SHAPE) -> torch.Tensor:
    """C×D×H×W with distinct positive values (so zero padding is recognisable)."""
    n = channels * int(np.prod(shape))
    return torch.arange(1, n + 1, dtype=torch.float32).reshape(channels, *shape)


def _official_crop(img: torch.Tensor, clicks: np.ndarray, ps: int):
    """The official test.py arithmetic, re-derived: per-axis floor midpoint, box of
    centre ± ps // 2, slicing with the start clamped at 0, then F.pad by the overhangs."""
    c = (clicks.min(0) + clicks.max(0)) // 2
    lo, hi = c - ps // 2, c + ps // 2
    left = np.maximum(0, -lo)
    right = np.maximum(0, hi - np.asarray(img.shape[-3:]))
    s = np.maximum(lo, 0)
    patch = img[:, s[0]:hi[0], s[1]:hi[1], s[2]:hi[2]]
    pad = (left[2], right[2], left[1], right[1], left[0], right[0])
    patch = F.pad(patch, tuple(int(v) for v in pad))
    return patch, clicks - lo


# ------------------------------------------------------------------------ placement


def test_one_click_is_the_centre():
    box = roi_box([(10, 5, 27)], SHAPE, 8)
    assert box == Box((6, 1, 23), 8)
    assert box.stop == (14, 9, 31)


def test_several_clicks_use_the_floor_midpoint_of_their_bounding_box():
    clicks = [(10, 20, 3), (13, 20, 8), (11, 21, 5)]
    box = roi_box(clicks, SHAPE, 16)
    assert box.start == (11 - 8, 20 - 8, 5 - 8)  # midpoints (11.5, 20.5, 5.5) floored


def test_box_may_leave_the_volume():
    box = roi_box(np.array([[0, 23, 1]]), SHAPE, 128)
    assert box.start == (-64, 23 - 64, 1 - 64)
    assert box.size == 128


def test_odd_size_gives_exactly_size_voxels():
    box = roi_box([(10, 10, 10)], SHAPE, 7)
    assert box.start == (7, 7, 7)
    assert crop_roi(_volume(), box).shape == (2, 7, 7, 7)


@pytest.mark.parametrize("clicks, size, error, match", [
    ([(20, 0, 0)], 8, ClickError, "outside the volume"),
    ([(-1, 0, 0)], 8, ClickError, "outside the volume"),
    ([(1.5, 0, 0)], 8, ClickError, "non-integer"),
    ([], 8, ClickError, "at least one click"),
    ([(1, 1, 1)], 0, ValueError, "size must be a positive integer"),
    ([(1, 1, 1)], -4, ValueError, "size must be a positive integer"),
    ([(1, 1, 1)], 8.0, ValueError, "size must be a positive integer"),
    ([(1, 1, 1)], True, ValueError, "size must be a positive integer"),
])
def test_roi_box_validates(clicks, size, error, match):
    with pytest.raises(error, match=match):
        roi_box(clicks, SHAPE, size)


def test_box_validates_its_fields():
    with pytest.raises(ValueError, match="Box.start"):
        Box((1, 2), 4)
    with pytest.raises(ValueError, match="Box.start"):
        Box((1.0, 2, 3), 4)
    with pytest.raises(ValueError, match="Box.size"):
        Box((1, 2, 3), 0)
    with pytest.raises(ValueError, match="shape"):
        roi_box([(1, 1, 1)], (4, 4), 8)


# ----------------------------------------------------------------------------- crop


def test_crop_inside_the_volume_is_a_plain_slice():
    vol = _volume()
    box = roi_box([(10, 12, 14)], SHAPE, 8)
    assert torch.equal(crop_roi(vol, box), vol[:, 6:14, 8:16, 10:18])


@pytest.mark.parametrize("clicks", [
    [(0, 0, 0)], [(19, 23, 27)], [(0, 23, 13)], [(2, 3, 4), (17, 20, 25)],
])
def test_crop_zero_pads_like_the_official_code(clicks):
    vol = _volume()
    pts = np.asarray(clicks)
    box = roi_box(pts, SHAPE, 16)
    ref_patch, ref_points = _official_crop(vol, pts, 16)
    patch = crop_roi(vol, box)
    assert torch.equal(patch, ref_patch)
    if (np.ptp(pts, axis=0) < 16).all():
        assert np.array_equal(clicks_in_roi(pts, box), ref_points)


def test_crop_against_a_padded_copy():
    vol = _volume(1, (6, 7, 8))
    big = F.pad(vol, (10,) * 6)  # the volume inside a sea of zeros, offset by 10
    for start in [(-3, -2, 5), (4, 5, 6), (-9, 6, -1)]:
        box = Box(start, 9)
        s = [a + 10 for a in start]
        assert torch.equal(crop_roi(vol, box), big[:, s[0]:s[0] + 9, s[1]:s[1] + 9,
                                                    s[2]:s[2] + 9])


def test_crop_of_a_box_outside_the_volume_is_zero():
    out = crop_roi(_volume(), Box((30, 0, 0), 4))
    assert out.shape == (2, 4, 4, 4) and not out.any()


def test_crop_keeps_leading_axes_dtype_and_device():
    vol3 = _volume(1)[0].to(torch.float64)
    box = roi_box([(1, 1, 1)], SHAPE, 6)
    out = crop_roi(vol3, box)
    assert out.shape == (6, 6, 6) and out.dtype == torch.float64
    assert crop_roi(_volume(3)[None], box).shape == (1, 3, 6, 6, 6)


def test_crop_validates():
    with pytest.raises(ValueError, match="tensor"):
        crop_roi(np.zeros((2, 4, 4, 4)), Box((0, 0, 0), 2))
    with pytest.raises(TypeError, match="Box"):
        crop_roi(_volume(), ((0, 0, 0), 2))


# --------------------------------------------------------------------------- clicks


def test_relative_clicks_address_the_same_voxels():
    vol = _volume()
    clicks = np.array([(0, 5, 27), (4, 9, 20), (2, 0, 25)])
    box = roi_box(clicks, SHAPE, 16)
    rel = clicks_in_roi(clicks, box)
    assert rel.dtype == np.int64 and rel.shape == (3, 3)
    assert ((rel >= 0) & (rel < 16)).all()
    patch = crop_roi(vol, box)
    for c, r in zip(clicks, rel, strict=True):
        assert torch.equal(patch[:, r[0], r[1], r[2]], vol[:, c[0], c[1], c[2]])


def test_clicks_spread_wider_than_the_roi_are_refused():
    clicks = [(0, 0, 0), (19, 0, 0)]
    box = roi_box(clicks, SHAPE, 8)
    with pytest.raises(ClickError, match=r"click 0 \(0, 0, 0\) lies outside the ROI"):
        clicks_in_roi(clicks, box)


# ---------------------------------------------------------------------------- paste


def test_paste_writes_the_box_into_zeros():
    vol = _volume(1)[0]
    for clicks in ([(0, 0, 0)], [(10, 12, 14)], [(19, 23, 27)]):
        box = roi_box(clicks, SHAPE, 12)
        pasted = paste_roi(crop_roi(vol, box), box, SHAPE)
        inside = torch.zeros(SHAPE, dtype=torch.bool)
        (vol_sl, _) = box.overlap(SHAPE)
        inside[vol_sl] = True
        assert pasted.shape == SHAPE
        assert torch.equal(pasted, torch.where(inside, vol, torch.zeros_like(vol)))


def test_paste_counts_box_voxels_by_hand():
    box = Box((-2, 18, 3), 4)  # covers d 0..1, h 18..21, w 3..6 of a 20×24×28 volume
    out = paste_roi(torch.ones(4, 4, 4), box, SHAPE)
    assert out.sum() == 2 * 4 * 4
    assert out[0:2, 18:22, 3:7].all()


def test_paste_validates():
    box = Box((0, 0, 0), 4)
    with pytest.raises(ValueError, match="4×4×4"):
        paste_roi(torch.ones(4, 4, 5), box, SHAPE)
    with pytest.raises(ValueError, match="shape"):
        paste_roi(torch.ones(4, 4, 4), box, (4, 4))
    with pytest.raises(TypeError, match="Box"):
        paste_roi(torch.ones(4, 4, 4), "box", SHAPE)
