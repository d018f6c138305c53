"""Tests for sam3d.data.organ_masks on a made-up chest (two lungs in a body in air)."""

from __future__ import annotations

import numpy as np
import pytest

from sam3d.data.organ_masks import TOTALSEG_LIVER, label_mask, lung_mask

SPACING = (2.0, 2.0, 5.0)


def _chest(shape=(80, 60, 12)):
    x, y, _ = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    image = np.full(shape, -1000.0)
    body = ((x - 40) / 36) ** 2 + ((y - 30) / 26) ** 2 <= 1
    image[body] = 40.0
    lungs = np.zeros(shape, bool)
    for cx in (24, 56):
        lungs |= ((x - cx) / 12) ** 2 + ((y - 30) / 16) ** 2 <= 1
    image[lungs] = -850.0
    image[24, 30, :] = 120.0  # a vessel inside the left lung
    image[5:75, 2, :] = -1000.0  # outside air already touches the edge; fine either way
    return image, lungs


def test_lung_mask_finds_both_lungs_with_their_vessels() -> None:
    image, lungs = _chest()
    mask = lung_mask(image, SPACING)
    np.testing.assert_array_equal(mask, lungs)
    assert mask[24, 30, 5]  # the vessel's hole is filled
    assert not mask[0, 0, 0]  # outside air is not lung


def test_lung_mask_errors() -> None:
    image, _ = _chest()
    with pytest.raises(ValueError, match="no lung"):
        lung_mask(np.where(image < -900, image, 40.0), SPACING)
    with pytest.raises(ValueError, match="not a chest"):
        lung_mask(np.zeros((8, 8, 8)), SPACING)
    with pytest.raises(ValueError):
        lung_mask(image, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        lung_mask(image[0], SPACING)


def test_label_mask() -> None:
    label = np.zeros((4, 4, 4), np.int16)
    label[1, 1, 1] = TOTALSEG_LIVER
    label[2, 2, 2] = 6
    assert label_mask(label, TOTALSEG_LIVER).sum() == 1
    assert label_mask(label, [5, 6]).sum() == 2
    with pytest.raises(ValueError):
        label_mask(label, 9)
    with pytest.raises(ValueError):
        label_mask(label, [])
