"""Three-plane figures: axis conventions, overlays, clicks and argument checks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from sam3d.viz import lesion_centre, plane, show_planes, to_dhw


def test_to_dhw_puts_the_slice_axis_first() -> None:
    xyz = np.zeros((4, 5, 6))
    xyz[1, 2, 3] = 1
    dhw = to_dhw(xyz)
    assert dhw.shape == (6, 5, 4) and dhw[3, 2, 1] == 1
    with pytest.raises(ValueError, match="3D"):
        to_dhw(np.zeros((2, 2)))


def test_planes_and_centre() -> None:
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    assert plane(vol, "axial", 2).shape == (5, 6)
    assert plane(vol, "coronal", 1).shape == (4, 6)
    assert plane(vol, "sagittal", 0).shape == (4, 5)
    with pytest.raises(ValueError, match="outside"):
        plane(vol, "axial", 4)
    label = np.zeros((9, 9, 9), int)
    label[2:5, 3:6, 4:7] = 1
    assert lesion_centre(label) == (3, 4, 5)


def test_show_planes_draws_image_overlay_and_clicks() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(40, 10, (12, 14, 16))
    label = np.zeros(image.shape, np.uint8)
    label[4:8, 5:9, 6:10] = 1
    clicks = np.array([[6, 7, 8], [0, 0, 0]])
    fig = show_planes(image, label, clicks=clicks, positive=[True, False], title="t")
    axes = fig.axes
    assert len(axes) == 3
    assert [len(ax.images) for ax in axes] == [2, 2, 2]  # CT + label overlay
    # the click at the lesion centre lies on all three planes; the corner click on none
    assert [len(ax.collections) for ax in axes] == [1, 1, 1]
    assert axes[0].images[0].get_array().shape == (14, 16)
    with pytest.raises(ValueError, match="differs"):
        show_planes(image, label[:-1])
