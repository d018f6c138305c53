"""The interactive chapter's viewer logic, headless: click → 3D point on each plane, validation,
synthetic mouse events, the widget buttons, and a segmentation with a stub model."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sam3d.data.clicks import ClickError
from sam3d.data.specs import get_spec
from sam3d.interactive import Segmenter, ThreePlaneViewer, ViewerState, plane_click
from sam3d.interactive.itk import slices_to_click
from sam3d.interactive.state import overlay_rgba
from sam3d.viz import to_dhw

sys.path.insert(0, str(Path(__file__).parent / "inference"))
from stub_models import CubeModel

SHAPE = (12, 20, 30)  # D, H, W: every axis different, so a swapped axis cannot pass


def _image() -> np.ndarray:
    d, h, w = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    return (1000 * d + 10 * h + 0.01 * w).astype(np.float32)  # value encodes (d, h, w)


@pytest.fixture
def viewer():
    v = ThreePlaneViewer(_image(), live=False, position=(5, 7, 9), window=(0, 12000))
    yield v
    v.close()


@pytest.mark.parametrize(("plane", "x", "y", "expected"), [
    ("axial", 3.0, 4.0, (5, 4, 3)),      # fixed d: x = w, y = h
    ("coronal", 3.0, 4.0, (4, 7, 3)),    # fixed h: x = w, y = d
    ("sagittal", 3.0, 4.0, (4, 3, 9)),   # fixed w: x = h, y = d
    ("axial", 2.49, 2.5, (5, 3, 2)),     # nearest voxel, halves up
    ("axial", -0.5, 19.49, (5, 19, 0)),  # the image's outer edges still count
])
def test_plane_click_maps_each_plane(plane, x, y, expected):
    assert plane_click(plane, x, y, (5, 7, 9), SHAPE) == expected


@pytest.mark.parametrize(("plane", "x", "y", "match"), [
    ("axial", 29.5, 3, r"x \(w\) = 29.5 lies outside the volume \(valid voxels 0..29\)"),
    ("axial", 3, -0.51, r"y \(h\) = -0.5 lies outside"),
    ("coronal", 3, 12, r"y \(d\) = 12.0 lies outside .*0..11"),
    ("sagittal", 20, 0, r"x \(h\) = 20.0 lies outside .*0..19"),
    ("axial", None, 3, "must be a finite number"),
    ("axial", float("nan"), 3, "must be a finite number"),
])
def test_plane_click_outside_is_a_clear_error(plane, x, y, match):
    with pytest.raises(ClickError, match=match):
        plane_click(plane, x, y, (5, 7, 9), SHAPE)


def test_plane_click_rejects_bad_plane_and_position():
    with pytest.raises(ValueError, match="plane must be one of"):
        plane_click("transverse", 1, 1, (0, 0, 0), SHAPE)
    with pytest.raises(ClickError, match="outside the volume"):
        plane_click("axial", 1, 1, (12, 0, 0), SHAPE)
    with pytest.raises(ValueError, match="shape must be 3 positive integers"):
        plane_click("axial", 1, 1, (0, 0, 0), (12, 20))


def test_state_clicks_slices_and_mask():
    state = ViewerState(SHAPE)
    assert state.position == (6, 10, 15) and state.summary().startswith("click on a plane")
    assert state.add_plane_click("coronal", 3.2, 4.4) == (4, 10, 3)
    assert state.position == (4, 10, 3)  # the planes follow the click
    state.set_slice("axial", 11)
    np.testing.assert_array_equal(state.plane_clicks("axial"), np.zeros((0, 2)))
    np.testing.assert_array_equal(state.plane_clicks("coronal"), [[3.0, 4.0]])  # (x=w, y=d)
    with pytest.raises(ValueError, match=r"axial slice must be an integer in 0..11"):
        state.set_slice("axial", 12)
    with pytest.raises(ClickError, match="outside the volume"):
        state.add_click((0, 20, 0))
    with pytest.raises(ValueError, match="mask shape"):
        state.set_mask(np.zeros((12, 20, 29), bool))
    with pytest.raises(TypeError, match="threshold first"):
        state.set_mask(np.zeros(SHAPE, np.float32))
    mask = np.zeros(SHAPE, np.uint8)
    mask[11, 2:5, 7] = 1
    state.set_mask(mask)
    assert state.summary() == "mask: 3 voxels, 1 click (1+, 0−)"
    assert state.mask_plane("axial")[2:5, 7].all() and state.mask_plane("axial").sum() == 3
    state.add_click((0, 0, 0))
    assert state.mask is None  # a new click invalidates the mask
    state.clear()
    assert state.clicks == [] and state.mask is None


def test_state_labels_beside_clicks_and_undo_per_click():
    state = ViewerState(SHAPE)
    state.add_click((1, 2, 3))
    state.add_plane_click("axial", 4.0, 5.0, positive=False)  # at d = 1, the planes moved
    state.add_click((2, 2, 2), move=False, positive=np.bool_(True))
    assert state.prompts == [((1, 2, 3), True), ((1, 5, 4), False), ((2, 2, 2), True)]
    assert state.clicks == [(1, 2, 3), (1, 5, 4), (2, 2, 2)] and state.labels == [1, 0, 1]
    np.testing.assert_array_equal(state.click_array(), [[1, 2, 3], [1, 5, 4], [2, 2, 2]])
    labels = state.label_array()
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0, 1]
    assert state.counts() == (2, 1) and state.describe_clicks() == "3 clicks (2+, 1−)"
    assert state.summary() == "3 clicks (2+, 1−); press Segment"
    np.testing.assert_array_equal(state.plane_clicks("axial", positive=True), [[3.0, 2.0]])
    np.testing.assert_array_equal(state.plane_clicks("axial", positive=False), [[4.0, 5.0]])
    assert state.plane_clicks("axial").shape == (2, 2)  # both kinds on d = 1
    with pytest.raises(TypeError, match="positive must be True"):
        state.add_click((0, 0, 0), positive=1)
    with pytest.raises(ClickError, match="outside the volume"):
        state.add_click((12, 0, 0), positive=False)
    assert len(state.prompts) == 3  # a refused click adds nothing, label included
    state.set_mask(np.ones(SHAPE, bool))
    assert state.undo() == ((2, 2, 2), True) and state.mask is None
    assert state.undo() == ((1, 5, 4), False)
    assert state.prompts == [((1, 2, 3), True)] and state.label_array().tolist() == [1]
    state.undo()
    assert state.undo() is None and state.click_array().shape == (0, 3)
    assert state.label_array().shape == (0,)


def test_overlay_rgba_colours_only_the_mask():
    m = np.zeros((3, 4), bool)
    m[1, 2] = True
    rgba = overlay_rgba(m, (1.0, 0.0, 0.0, 0.5))
    assert rgba.shape == (3, 4, 4)
    np.testing.assert_allclose(rgba[1, 2], (1.0, 0.0, 0.0, 0.5))
    assert rgba[..., 3].sum() == pytest.approx(0.5)


@pytest.mark.parametrize(("plane", "x", "y", "expected"), [
    ("axial", 21.0, 13.0, (5, 13, 21)),
    ("coronal", 21.0, 2.0, (2, 7, 21)),
    ("sagittal", 16.0, 10.0, (10, 16, 9)),
])
def test_synthetic_mouse_event_adds_the_point(viewer, plane, x, y, expected):
    event = viewer.simulate_click(plane, x, y)
    assert event.inaxes is viewer.axes[plane]
    assert viewer.state.clicks == [expected]
    assert viewer.state.position == expected
    # the planes now show the clicked voxel: the image values encode (d, h, w)
    axial = viewer._artists["axial"]["image"].get_array()
    assert axial[expected[1], expected[2]] == pytest.approx(_image()[expected], abs=1e-3)
    np.testing.assert_array_equal(viewer._artists[plane]["dots"].get_offsets(), [[x, y]])


def test_mouse_event_off_the_image_or_other_button_is_ignored(viewer):
    viewer.simulate_click("axial", 35.0, 3.0)  # beyond the image: the event has no axes
    viewer.simulate_click("axial", 3.0, 3.0, button=2)  # middle button
    assert viewer.state.clicks == [] and viewer.last_error is None
    from matplotlib.backend_bases import MouseEvent

    viewer.figure.canvas.callbacks.process(  # the figure's margin, outside every plane
        "button_press_event", MouseEvent("button_press_event", viewer.figure.canvas, 1, 1,
                                         button=1))
    assert viewer.state.clicks == []


def test_mouse_event_with_invalid_position_reports_an_error(viewer):
    from matplotlib.backend_bases import MouseEvent

    px, py = viewer.data_to_display("coronal", 3.0, 4.0)
    event = MouseEvent("button_press_event", viewer.figure.canvas, px, py, button=1)
    assert event.inaxes is viewer.axes["coronal"]
    event.ydata = 12.2  # as if the image were smaller than its axes: d rounds to 12
    viewer.figure.canvas.callbacks.process("button_press_event", event)
    assert viewer.state.clicks == []
    assert "y (d) = 12.2 lies outside the volume" in viewer.last_error
    assert viewer.status.startswith("error:")


def test_scroll_steps_the_plane(viewer):
    from matplotlib.backend_bases import MouseEvent

    px, py = viewer.data_to_display("sagittal", 5, 5)
    viewer.figure.canvas.callbacks.process(
        "scroll_event", MouseEvent("scroll_event", viewer.figure.canvas, px, py, button="up",
                                   step=1))
    assert viewer.state.position == (5, 7, 10)


def test_viewer_validates_arguments():
    with pytest.raises(ValueError, match="D×H×W"):
        ThreePlaneViewer(np.zeros((4, 4)), live=False)
    with pytest.raises(TypeError, match="segment must be callable"):
        ThreePlaneViewer(_image(), segment="model", live=False)
    with pytest.raises(ValueError, match="low < high"):
        ThreePlaneViewer(_image(), window=(5, 5), live=False)
    v = ThreePlaneViewer(_image(), live=False)
    with pytest.raises(RuntimeError, match="no segmentation function"):
        v.segment()
    v.close()


def test_segment_with_a_stub_overlays_all_planes():
    calls = []

    def stub(clicks: np.ndarray, labels: np.ndarray) -> np.ndarray:
        calls.append(clicks.copy())
        assert labels.tolist() == [1] * len(clicks)
        mask = np.zeros(SHAPE, bool)
        for d, h, w in clicks:
            mask[max(d - 1, 0):d + 2, max(h - 1, 0):h + 2, max(w - 1, 0):w + 2] = True
        return mask

    v = ThreePlaneViewer(_image(), stub, live=False)
    with pytest.raises(ClickError, match="no click"):
        v.segment()
    v.simulate_click("axial", 20.0, 10.0)
    v.add_click((3, 4, 5))
    v.set_slice("axial", 6)
    mask = v.segment()
    np.testing.assert_array_equal(calls[0], [[6, 10, 20], [3, 4, 5]])
    assert mask.sum() == 2 * 27
    for plane in ("axial", "coronal", "sagittal"):  # planes through (6, 4, 5): second cube
        overlay = v._artists[plane]["overlay"].get_array()
        assert (overlay[..., 3] > 0).sum() == 9, plane
    assert re.fullmatch(r"mask: 54 voxels, 2 clicks \(2\+, 0−\), \d+\.\d s", v.status)
    v.clear()
    assert (v._artists["axial"]["overlay"].get_array()[..., 3] == 0).all()
    v.close()


def test_widget_buttons_sliders_and_status():
    v = ThreePlaneViewer(_image(), lambda c, labels: np.ones(SHAPE, bool), live=False)
    box = v.widget
    w = v._w
    assert "sam3d-status" in w["status"]._dom_classes
    assert "sam3d-segment" in w["segment"]._dom_classes
    w["segment"].click()  # no click yet: reported in the status, not raised
    assert "no click" in w["status"].value
    v.simulate_click("axial", 1.0, 2.0)
    assert "(d, h, w) = (6, 2, 1)" in w["clicks"].value and w["axial"].value == 6
    w["segment"].click()
    assert "mask: 7200 voxels" in w["status"].value
    w["coronal"].value = 3
    assert v.state.position == (6, 3, 1)
    w["undo"].click()
    assert v.state.clicks == [] and v.state.mask is None
    assert len(w["png"].value) > 1000  # the Agg picture is redrawn with the state
    assert box.children
    v.close()


class CubeSegment:
    """A segment function with the negative-click extension: the union of 3×3×3 cubes around
    the positive clicks, minus 3×3×3 cubes around the negative ones."""

    negative_clicks = True

    def __init__(self):
        self.calls: list[tuple[list, list]] = []

    def __call__(self, clicks: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self.calls.append((clicks.tolist(), labels.tolist()))
        mask = np.zeros(SHAPE, bool)
        for want in (1, 0):
            for d, h, w in clicks[labels == want]:
                mask[max(d - 1, 0):d + 2, max(h - 1, 0):h + 2, max(w - 1, 0):w + 2] = bool(want)
        return mask


def _offsets(v, plane: str, kind: str) -> list:
    return v._artists[plane][kind].get_offsets().tolist()


def test_right_click_is_negative_drawn_in_its_own_colour():
    from matplotlib.colors import to_rgba

    from sam3d.interactive.state import NEGATIVE_COLOUR, POSITIVE_COLOUR

    seg = CubeSegment()
    v = ThreePlaneViewer(_image(), seg, live=False, position=(5, 7, 9), window=(0, 12000))
    assert v.negative_clicks
    v.simulate_click("axial", 10.0, 8.0)  # left: positive at (5, 8, 10)
    v.simulate_click("axial", 11.0, 8.0, button=3)  # right: negative at (5, 8, 11)
    assert v.state.prompts == [((5, 8, 10), True), ((5, 8, 11), False)]
    assert v.status.startswith("negative click 2 at (d, h, w) = (5, 8, 11) on the axial plane")
    assert "2 clicks (1+, 1−)" in v.status
    assert _offsets(v, "axial", "dots") == [[10.0, 8.0]]
    assert _offsets(v, "axial", "negative") == [[11.0, 8.0]]
    dots, negative = v._artists["axial"]["dots"], v._artists["axial"]["negative"]
    np.testing.assert_allclose(dots.get_facecolor()[0], to_rgba(POSITIVE_COLOUR))
    np.testing.assert_allclose(negative.get_facecolor()[0], to_rgba(NEGATIVE_COLOUR))
    assert POSITIVE_COLOUR != NEGATIVE_COLOUR
    mask = v.segment()
    assert seg.calls == [([[5, 8, 10], [5, 8, 11]], [1, 0])]
    assert mask.sum() == 27 - 18  # the negative cube takes two of the three w-columns
    assert re.fullmatch(r"mask: 9 voxels, 2 clicks \(1\+, 1−\), \d+\.\d s", v.status)
    v.close()


def test_negative_toggle_makes_left_clicks_negative():
    seg = CubeSegment()
    v = ThreePlaneViewer(_image(), seg, live=False, position=(5, 7, 9))
    assert v.widget.children
    w = v._w
    assert not w["negative"].disabled and not w["negative"].value
    assert "sam3d-negative" in w["negative"]._dom_classes
    v.simulate_click("axial", 10.0, 8.0)
    w["negative"].value = True  # the touchpad user's toggle
    assert v.negative_mode and "left clicks add negative clicks" in v.status
    v.simulate_click("coronal", 10.0, 5.0)  # d = 5, h = 8 (the planes moved to the click)
    v.simulate_click("axial", 12.0, 8.0, button=3)  # a right click stays negative
    assert v.state.labels == [1, 0, 0]
    assert "− (d, h, w) = (5, 8, 10)" in w["clicks"].value
    assert "magenta" in w["clicks"].value and "lime" in w["clicks"].value
    v.set_negative_mode(False)
    assert not w["negative"].value  # the widget follows the code
    v.simulate_click("axial", 1.0, 1.0)
    assert v.state.labels == [1, 0, 0, 1]
    v.close()


def test_undo_removes_one_click_with_its_label():
    seg = CubeSegment()
    v = ThreePlaneViewer(_image(), seg, live=False, position=(5, 7, 9))
    assert v.widget.children
    w = v._w
    v.add_click((5, 8, 10))
    v.add_click((5, 8, 11), positive=False)
    v.add_click((5, 3, 3))
    v.segment()
    w["undo"].click()
    assert v.state.prompts == [((5, 8, 10), True), ((5, 8, 11), False)]
    assert v.state.mask is None and v.status.startswith("removed positive click at (d, h, w) = "
                                                        "(5, 3, 3)")
    w["undo"].click()
    assert v.state.prompts == [((5, 8, 10), True)]
    assert "removed negative click" in v.status and "1 click (1+, 0−)" in v.status
    assert _offsets(v, "axial", "negative") == [] and _offsets(v, "axial", "dots") == [[10, 8]]
    assert v.segment().sum() == 27 and seg.calls[-1] == ([[5, 8, 10]], [1])
    w["undo"].click()
    w["undo"].click()
    assert v.state.prompts == [] and v.status.startswith("nothing to undo")
    v.close()


def test_positive_only_model_refuses_negative_clicks():
    v = ThreePlaneViewer(_image(), lambda c, labels: np.ones(SHAPE, bool), live=False,
                         position=(5, 7, 9))
    assert v.widget.children
    w = v._w
    assert not v.negative_clicks and w["negative"].disabled
    assert "positive clicks only (negative_clicks=False)" in w["legend"].value
    v.simulate_click("axial", 3.0, 3.0, button=3)
    assert v.state.prompts == []
    assert v.status == ("error: this model takes positive clicks only (negative_clicks=False): "
                        "negative click not added")
    v.set_negative_mode(True)
    assert not v.negative_mode and not w["negative"].value
    assert "positive clicks only (negative_clicks=False)" in v.status
    with pytest.raises(ClickError, match=r"negative_clicks=False"):
        v.add_click((1, 1, 1), positive=False)
    v.simulate_click("axial", 3.0, 3.0)
    w["segment"].click()
    assert v.state.labels == [1] and "mask: 7200 voxels" in v.status
    assert w["negative"].disabled  # still disabled after a Segment press
    v.close()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    """A NIfTI image (X×Y×Z = 30×20×12, 1 mm) whose bright box is a stand-in lesion."""
    xyz = np.full((30, 20, 12), -50.0, np.float32)
    xyz[10:20, 5:15, 3:9] = 150.0
    path = tmp_path_factory.mktemp("interactive") / "image.nii.gz"
    nib.save(nib.Nifti1Image(xyz, np.eye(4)), path)
    return path


def test_segmenter_with_stub_model_and_viewer(image_file):
    model = CubeModel(crop=16, half=1)
    seg = Segmenter(model, get_spec("lits"), image_file)
    assert seg.image.shape == SHAPE  # D×H×W of the X×Y×Z file
    with pytest.raises(ClickError, match="outside the volume"):
        seg([(12, 0, 0)])
    with pytest.raises(ClickError, match="no click"):
        seg([])
    v = ThreePlaneViewer(seg.image, seg, live=False)
    v.simulate_click("axial", 17.0, 9.0)  # (d, h, w) = (6, 9, 17): voxel x=17, y=9, z=6
    mask = v.segment()
    assert mask.dtype == bool and mask.shape == SHAPE
    # the cube (half-width 1) around the click, on the input grid (identity, 1 mm)
    expected = np.zeros(SHAPE, bool)
    expected[5:8, 8:11, 16:19] = True
    np.testing.assert_array_equal(mask, expected)
    assert (v._artists["sagittal"]["overlay"].get_array()[..., 3] > 0).sum() == 9
    assert v.segment_seconds > 0
    v.close()
    with pytest.raises(ValueError, match="promptable"):
        Segmenter(model, get_spec("lits"), image_file, mode="auto")


class SignedCubeModel(CubeModel):
    """:class:`CubeModel` with the negative-click extension: the cubes around the negative
    clicks are background."""

    negative_clicks = True

    def forward(self, volume, points, labels=None):
        if labels is None:
            return super().forward(volume, points)
        pos = super().forward(volume, points[:, labels[0] == 1])[:, 1] > 0
        neg = super().forward(volume, points[:, labels[0] == 0])[:, 1] > 0
        fg = (pos & ~neg).float()
        return torch.stack([-10 * fg, 10 * fg - 10 * (1 - fg)], 1)


def test_segmenter_with_negative_clicks_in_the_viewer(image_file):
    seg = Segmenter(SignedCubeModel(crop=16, half=1), get_spec("lits"), image_file)
    assert seg.negative_clicks
    v = ThreePlaneViewer(seg.image, seg, live=False)
    assert v.negative_clicks
    v.simulate_click("axial", 17.0, 9.0)  # (6, 9, 17)
    first = v.segment()
    assert first.sum() == 27
    v.simulate_click("axial", 18.0, 9.0, button=3)  # (6, 9, 18): inside the object's box
    second = v.segment()
    assert second.sum() < first.sum() and not second[6, 9, 17:19].any()
    assert "2 clicks (1+, 1−)" in v.status and seg.seconds > 0
    v.clear()
    v.add_click((6, 9, 17), positive=False)  # a negative click alone is refused
    with pytest.raises(ValueError, match="negative click alone"):
        v.segment()
    v.close()
    paper = Segmenter(CubeModel(crop=16, half=1), get_spec("lits"), image_file)
    assert not ThreePlaneViewer(paper.image, paper, live=False).negative_clicks


def test_segmenter_matches_the_predict_command(image_file, tmp_path):
    """Viewer clicks and ``sam3d predict`` clicks are the same (d, h, w) of the file."""
    from sam3d.inference.predict import predict_file

    model = CubeModel(crop=16, half=2)
    clicks = [(3, 12, 25), (8, 6, 14)]
    for mode in ("objects", "roi"):
        seg = Segmenter(model, get_spec("lits"), image_file, mode=mode)
        res = predict_file(model, get_spec("lits"), image_file, clicks, mode=mode,
                           out=tmp_path / f"{mode}.nii.gz")
        np.testing.assert_array_equal(seg(clicks), to_dhw(res.mask) != 0)


def test_itk_slices_to_click():
    assert slices_to_click(17.2, 9.0, 5.6, SHAPE) == (6, 9, 17)
    assert slices_to_click(4.0, 2.0, 6.0, SHAPE, spacing=(2, 2, 3), origin=(-2, 0, 0)) == (2, 1, 3)
    with pytest.raises(ClickError, match="outside the volume"):
        slices_to_click(30.0, 0, 0, SHAPE)
    with pytest.raises(ClickError, match="finite number"):
        slices_to_click(None, 0, 0, SHAPE)
    with pytest.raises(ValueError, match="spacing"):
        slices_to_click(0, 0, 0, SHAPE, spacing=(1, 0, 1))


def test_itk_slices_from_futures():
    loop = asyncio.new_event_loop()
    try:
        done = [loop.create_future() for _ in range(3)]
        for f, v in zip(done, (1.0, 2.0, 3.0), strict=True):
            f.set_result(v)
        assert slices_to_click(*done, SHAPE) == (3, 2, 1)
        with pytest.raises(ClickError, match="has not arrived yet"):
            slices_to_click(loop.create_future(), 0, 0, SHAPE)
    finally:
        loop.close()


@pytest.mark.parametrize(("backend", "live"), [
    ("widget", True), ("ipympl", True), ("module://ipympl.backend_nbagg", True),
    ("agg", False), ("module://matplotlib_inline.backend_inline", False),
])
def test_widget_backend_detection(monkeypatch, backend, live):
    import matplotlib

    from sam3d.interactive.viewer import is_widget_backend

    monkeypatch.setattr(matplotlib, "get_backend", lambda: backend)
    assert is_widget_backend() is live


# ------------------------------------------------------------------ the chapter's helpers
def test_chapter_default_clicks():
    from sam3d.interactive.chapter import default_clicks

    lesion = np.zeros(SHAPE, bool)
    lesion[2:4, 5:8, 10:12] = True
    np.testing.assert_array_equal(default_clicks([(1, 2, 3)], 5, lesion, 0, "c"), [[1, 2, 3]])
    drawn = default_clicks(None, 3, lesion, 0, "c")
    assert drawn.shape == (3, 3) and lesion[tuple(drawn.T)].all()
    np.testing.assert_array_equal(drawn, default_clicks(None, 3, lesion, 0, "c"))  # seeded
    with pytest.raises(ClickError, match="outside the volume"):
        default_clicks([(12, 0, 0)], 1, lesion, 0, "c")
    with pytest.raises(ClickError, match="DEFAULT_CLICKS is empty"):
        default_clicks([], 1, lesion, 0, "c")
    with pytest.raises(ValueError, match="N_CLICKS must be a positive integer"):
        default_clicks(None, 0, lesion, 0, "c")


def test_chapter_resolve_checkpoint(tmp_path, monkeypatch):
    from sam3d.interactive.chapter import resolve_checkpoint
    from sam3d.provenance import project_path

    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x")
    assert resolve_checkpoint("full", ckpt) == (ckpt, "checkpoint model.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint("smoke", tmp_path / "missing.pt")
    from sam3d.experiments import training

    trained = []
    monkeypatch.setattr(training, "train_full", lambda dataset, **kw: trained.append(
        (dataset, kw)) or {"checkpoint": ckpt})
    path, label = resolve_checkpoint("full", None, data_dir=tmp_path, sam_checkpoint="sam.pth")
    assert path == ckpt and "LiTS model" in label
    assert trained == [("lits", {"data_dir": tmp_path / "prepared" / "lits",
                                 "sam_checkpoint": project_path("sam.pth")})]
    with pytest.raises(ValueError):
        resolve_checkpoint("quick", ckpt)
    asked = []
    from sam3d.experiments import real_ct

    monkeypatch.setattr(real_ct, "real_model", lambda root: asked.append(root) or
                        {"checkpoint": ckpt})
    path, label = resolve_checkpoint("smoke", None, runs_root=tmp_path)
    assert path == ckpt and asked == [tmp_path]  # book_real, trained on first use
    assert "book_real" in label and "real livers" in label and "not the paper's model" in label


def test_chapter_comparison_labels_smoke_and_paper():
    from sam3d.interactive.chapter import comparison
    from sam3d.reference import paper_metric, paper_rows

    table = comparison(12.345, 3, "smoke", "lits117")
    paper_col = "liver tumour Dice · paper"
    run_col = next(c for c in table.columns if c.startswith("liver tumour Dice · this run"))
    assert "smoke" in run_col
    row = next(r for r in paper_rows("table1")
               if r["method"] == "3DSAM-adapter" and r["prompt"] == "3 pts/volume")
    assert table[paper_col].iloc[0] == paper_metric(row, "lits", "dice")
    assert table[run_col].iloc[0] == 12.35 and "lits117 only" in table["scope"].iloc[0]
    two = comparison(50.0, 2, "full", "lits117")  # no paper row for 2 clicks
    assert two[paper_col].isna().all() and "this run" in two.columns[3]


def test_chapter_default_click_lies_on_the_largest_held_out_lesion():
    """The interactive chapter's default: LiTS 117's largest held-out lesion (the real-CT
    split's cut), and the lesion a click is on is what its Dice scores."""
    from sam3d.data.io import load_volume
    from sam3d.data.lesion_split import choose_split
    from sam3d.interactive.chapter import clicked_lesion, held_out_lesion, sample_case
    from sam3d.viz import to_dhw

    _, label_path, target = sample_case("data", "lits117")
    label = load_volume(label_path, "label").array
    lesion = held_out_lesion(label)
    split = choose_split(label, target)
    assert int(lesion.sum()) == max(les.voxels for les in split.with_role("test")) == 37179
    train_rows = split.region("train")  # nowhere near the training slab or its band
    assert not lesion[train_rows].any() and not lesion[split.region("band")].any()
    tumour = to_dhw(label == target)
    click = np.argwhere(to_dhw(lesion))[0]
    assert np.array_equal(clicked_lesion(tumour, click), to_dhw(lesion))
    assert not clicked_lesion(tumour, (0, 0, 0)).any()  # not on tumour: nothing to score


def test_chapter_sample_case():
    from sam3d.interactive.chapter import sample_case

    image, label, target = sample_case("data", "lits117")
    assert image.name == "image.nii.gz" and label.name == "label.nii.gz" and target == 2
    with pytest.raises(ValueError, match="unknown sample case"):
        sample_case("data", "nope")
    with pytest.raises(ValueError, match="no lesion label"):
        sample_case("data", "totalseg_ct")


def test_reference_outline_follows_the_slice():
    ref = np.zeros(SHAPE, bool)
    ref[2:5, 4:9, 10:16] = True
    with pytest.raises(ValueError, match="reference shape"):
        ThreePlaneViewer(_image(), live=False, reference=ref[:, :, :5])
    v = ThreePlaneViewer(_image(), live=False, reference=ref, position=(3, 6, 12))
    assert all(v._artists[p]["outline"] is not None for p in ("axial", "coronal", "sagittal"))
    v.set_slice("axial", 8)  # no reference voxel on that slice: no outline
    assert v._artists["axial"]["outline"] is None
    assert v._artists["coronal"]["outline"] is not None
    v.close()
