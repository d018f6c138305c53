"""Seeded click simulation and click checks (sam3d.data.clicks); all cases are tiny and fast.
The JSON click files for replay are tests/data/test_click_store.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from sam3d.data import clicks as C
from sam3d.data.clicks import (
    Click,
    ClickError,
    EmptyMaskError,
    PositionFallbackWarning,
    case_rng,
    check_clicks,
    error_click,
    lesion_clicks,
    position_candidates,
    position_click,
    position_clicks,
    training_clicks,
    validation_clicks,
)

# First draw of case_rng(0, "liver_017", "test").integers(0, 2**31, size=3), computed once:
# pins the (seed, case, purpose) → generator derivation.
PINNED = [1987986854, 1341175320, 1157827592]


def ball(shape=(32, 32, 32), centre=(16, 16, 16), radius=8.0) -> np.ndarray:
    grid = np.indices(shape)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
    return d2 <= radius**2


def has_background_6_neighbour(mask: np.ndarray, p) -> bool:
    for axis in range(3):
        for step in (-1, 1):
            q = list(p)
            q[axis] += step
            if not 0 <= q[axis] < mask.shape[axis] or not mask[tuple(q)]:
                return True
    return False


def inside(mask: np.ndarray, pts: np.ndarray) -> bool:
    return bool(mask[tuple(pts.T)].all())


# --------------------------------------------------------------------------- case_rng


def test_case_rng_reproducible_and_distinct():
    def draw(*args):
        return case_rng(*args).integers(0, 2**31, size=4).tolist()

    assert draw(0, "a", "test") == draw(0, "a", "test")
    assert draw(0, "a", "test") != draw(1, "a", "test")
    assert draw(0, "a", "test") != draw(0, "b", "test")
    assert draw(0, "a", "test") != draw(0, "a", "train")
    assert draw(0, "a") == draw(0, "a", "")


def test_case_rng_pinned_and_order_independent():
    assert case_rng(0, "liver_017", "test").integers(0, 2**31, size=3).tolist() == PINNED
    cases = ["c1", "c2", "c3"]
    forward = {c: case_rng(7, c).integers(0, 1000, 5).tolist() for c in cases}
    backward = {c: case_rng(7, c).integers(0, 1000, 5).tolist() for c in reversed(cases)}
    assert forward == backward


def test_case_rng_stable_across_processes():
    # Load the module file alone (no torch import) under two hash seeds.
    path = Path(C.__file__)
    code = (
        f"import sys, importlib.util as u; s = u.spec_from_file_location('c', {str(path)!r}); "
        "m = sys.modules['c'] = u.module_from_spec(s); s.loader.exec_module(m); "
        "print(m.case_rng(0, 'liver_017', 'test').integers(0, 2**31, size=3).tolist())"
    )
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, encoding="utf-8", errors="replace", check=True).stdout
        assert json.loads(out) == PINNED


@pytest.mark.parametrize("args", [(-1, "a"), (0, ""), (0, 3), (1.5, "a"), (True, "a")])
def test_case_rng_rejects_bad_arguments(args):
    with pytest.raises((TypeError, ValueError)):
        case_rng(*args)


# ----------------------------------------------------------------- official protocols


def test_lesion_clicks_inside_and_reproducible():
    mask = ball(radius=4)
    for k in (1, 3, 10):
        pts = lesion_clicks(mask, k, np.random.default_rng(0))
        assert pts.shape == (k, 3) and pts.dtype == np.int64 and inside(mask, pts)
    a = lesion_clicks(mask, 10, case_rng(3, "x"))
    assert np.array_equal(a, lesion_clicks(mask, 10, case_rng(3, "x")))
    assert not np.array_equal(a, lesion_clicks(mask, 10, case_rng(4, "x")))


def test_lesion_clicks_with_replacement_and_uniform():
    mask = np.zeros((4, 5, 6), dtype=np.uint8)
    mask[1, 2, 3] = mask[2, 0, 5] = 2  # integer labels: nonzero is lesion
    pts = lesion_clicks(mask, 10, np.random.default_rng(0))  # k > number of lesion voxels
    assert pts.shape == (10, 3) and inside(mask != 0, pts)
    mask[0, 0, 0] = mask[3, 4, 5] = 1
    pts = lesion_clicks(mask, 4000, np.random.default_rng(1))
    _, counts = np.unique(pts, axis=0, return_counts=True)
    assert len(counts) == 4 and counts.min() > 880 and counts.max() < 1120


def test_empty_mask_errors():
    empty = np.zeros((8, 8, 8), dtype=bool)
    with pytest.raises(EmptyMaskError, match="no lesion voxel"):
        lesion_clicks(empty, 3, np.random.default_rng(0))
    with pytest.raises(EmptyMaskError):
        position_click(empty, "centre", np.random.default_rng(0))
    assert issubclass(EmptyMaskError, ValueError)


@pytest.mark.parametrize(
    ("mask", "rng", "error"),
    [
        (np.ones((4, 4), bool), np.random.default_rng(0), ValueError),
        (np.ones((2, 2, 2), np.float32), np.random.default_rng(0), TypeError),
        ([[[1]]], np.random.default_rng(0), TypeError),
        (np.ones((2, 2, 2), bool), np.random.RandomState(0), TypeError),
    ],
)
def test_argument_validation(mask, rng, error):
    with pytest.raises(error):
        lesion_clicks(mask, 1, rng)


def test_training_clicks():
    mask = ball(radius=5)
    pts = training_clicks(mask, case_rng(0, "case", "train"))
    assert pts.shape == (30, 3) and pts.dtype == np.int64
    assert inside(mask, pts[:10])
    assert (pts >= 0).all() and (pts < 32).all()
    assert not inside(mask, pts[10:])  # whole-crop draws: most fall outside a small ball
    assert np.array_equal(pts, training_clicks(mask, case_rng(0, "case", "train")))
    none = training_clicks(np.zeros((6, 7, 8), bool), np.random.default_rng(0))
    assert none.shape == (20, 3) and (none < [6, 7, 8]).all() and (none >= 0).all()
    assert training_clicks(mask, np.random.default_rng(0), 2, 5).shape == (7, 3)


def test_validation_clicks():
    mask = ball(radius=3)
    assert inside(mask, validation_clicks(mask, np.random.default_rng(0)))
    pts = validation_clicks(np.zeros((5, 6, 7), bool), np.random.default_rng(0), n=4)
    assert pts.shape == (4, 3) and (pts < [5, 6, 7]).all() and (pts >= 0).all()


# -------------------------------------------------------------------- prompt positions


def test_positions_on_sphere():
    mask = ball()
    edt = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1, 1:-1]
    depth = edt / edt.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        centre = position_click(mask, "centre", np.random.default_rng(0))
        margin = position_clicks(mask, "margin", 50, np.random.default_rng(0))
        adjacent = position_clicks(mask, "adjacent", 50, np.random.default_rng(0))
    assert centre.shape == (3,) and np.abs(centre - 16).max() <= 1
    assert inside(mask, margin) and all(has_background_6_neighbour(mask, p) for p in margin)
    assert inside(mask, adjacent)
    assert ((depth[tuple(adjacent.T)] >= 0.4) & (depth[tuple(adjacent.T)] <= 0.6)).all()
    dist = np.linalg.norm(adjacent - 16, axis=1)  # about halfway between centre and surface
    assert (dist > 2.5).all() and (dist < 6.5).all()
    band = position_candidates(mask, "margin")
    assert not band.fallback and np.allclose(band.depth, band.depth.min())


def test_positions_use_millimetres():
    # A 3×15×15 slab: in voxels the middle slice has many voxels of maximal EDT (2); with
    # 5 mm slices the through-plane distance is 10 mm, so the in-plane centre (8 mm) is unique.
    mask = np.zeros((5, 17, 17), bool)
    mask[1:4, 1:16, 1:16] = True
    assert len(position_candidates(mask, "centre").points) > 1
    band = position_candidates(mask, "centre", spacing=(5.0, 1.0, 1.0))
    assert band.points.tolist() == [[2, 8, 8]] and band.radius_mm == pytest.approx(8.0)
    for seed in range(5):
        pt = position_click(mask, "centre", np.random.default_rng(seed), (5.0, 1.0, 1.0))
        assert pt.tolist() == [2, 8, 8]
    margin = position_clicks(mask, "margin", 30, np.random.default_rng(0), (5.0, 1.0, 1.0))
    assert all(has_background_6_neighbour(mask, p) for p in margin)


def test_largest_component_rule():
    small, big = ball(centre=(7, 7, 7), radius=3), ball(centre=(20, 20, 20), radius=6)
    mask = (small | big).astype(np.int16)
    assert position_click(mask, "centre", np.random.default_rng(0)).tolist() == [20, 20, 20]
    for pos in ("adjacent", "margin"):
        assert inside(big, position_clicks(mask, pos, 20, np.random.default_rng(1)))


def test_components_are_26_connected():
    mask = np.zeros((20, 20, 20), bool)
    mask[0:4, 0:4, 0:4] = mask[4:8, 4:8, 4:8] = True  # touch at a corner: one 128-voxel lesion
    mask[12:17, 12:17, 12:16] = True  # a separate 100-voxel lesion
    assert (position_clicks(mask, "margin", 40, np.random.default_rng(0)) < 8).all()


def test_adjacent_fallback_is_recorded():
    mask = np.zeros((6, 6, 6), bool)
    mask[2, 2, 2:4] = True  # every voxel is at normalised depth 1
    band = position_candidates(mask, "adjacent")
    assert band.fallback and len(band.points) == 2
    with pytest.warns(PositionFallbackWarning, match="nearest depth"):
        pt = position_click(mask, "adjacent", np.random.default_rng(0))
    assert mask[tuple(pt)]
    with pytest.raises(ValueError, match="position must be one of"):
        position_click(mask, "edge", np.random.default_rng(0))
    with pytest.raises(ValueError, match="spacing"):
        position_click(mask, "centre", np.random.default_rng(0), spacing=(1, 0, 1))


# ------------------------------------------------------------------------ error clicks


def test_error_click_fn_bigger_than_fp():
    gt = np.zeros((24, 24, 24), bool)
    gt[2:14, 2:14, 2:14] = True
    pred = gt.copy()
    pred[3:8, 3:8, 3:8] = False  # 125-voxel FN blob, deepest voxel (5, 5, 5)
    pred[20:23, 20:23, 20:23] = True  # 27-voxel FP blob
    assert error_click(pred, gt) == Click((5, 5, 5), True)


def test_error_click_fp_only_and_perfect():
    gt = np.zeros((24, 24, 24), np.uint8)
    gt[2:10, 2:10, 2:10] = 1
    pred = gt.copy()
    pred[17:22, 17:22, 17:22] = 1
    assert error_click(pred, gt) == Click((19, 19, 19), False)
    assert error_click(gt, gt) is None
    assert error_click(np.zeros_like(gt), np.zeros_like(gt)) is None


def test_error_click_ties_and_spacing():
    gt = np.zeros((12, 12, 12), bool)
    gt[1:3, 1:3, 1:3] = True  # 8 FN voxels, all at depth 1
    pred = np.zeros_like(gt)
    pred[8:10, 8:10, 8:10] = True  # 8 FP voxels: FN wins the size tie
    assert error_click(pred, gt) == Click((1, 1, 1), True)  # lowest flat index
    picks = {error_click(pred, gt, np.random.default_rng(s)).point for s in range(20)}
    assert len(picks) > 1 and all(gt[p] for p in picks)
    box = np.zeros((5, 17, 17), bool)
    box[1:4, 1:16, 1:16] = True  # voxel units: the middle slice ties at EDT 2
    assert error_click(np.zeros_like(box), box).point == (2, 2, 2)
    assert error_click(np.zeros_like(box), box, spacing=(5, 1, 1)).point == (2, 8, 8)
    with pytest.raises(ValueError, match="shapes differ"):
        error_click(box, gt)


def test_click_dataclass():
    c = Click((np.int64(1), 2, 3), np.True_)
    assert c.point == (1, 2, 3) and c.positive is True and isinstance(c.point[0], int)
    with pytest.raises(ClickError):
        Click((1, 2), True)
    with pytest.raises(TypeError):
        Click((1, 2, 3), 1)


# ------------------------------------------------------------------------ check_clicks


def test_check_clicks_accepts_valid():
    out = check_clicks([(0, 0, 0), np.array([3, 4, 5])], (4, 5, 6))
    assert out.dtype == np.int64 and out.tolist() == [[0, 0, 0], [3, 4, 5]]
    assert check_clicks([], (4, 5, 6)).shape == (0, 3)


@pytest.mark.parametrize(
    ("points", "match"),
    [
        ([(0, 0, 0), (-1, 2, 3)], r"click 1 \(-1, 2, 3\) is outside .* D index -1 < 0"),
        ([(1, 5, 0)], (r"click 0 \(1, 5, 0\) is outside the volume of shape \(4, 5, 6\) "
                       r"\(D×H×W\): H index 5 ≥ 5")),
        ([(1, 2, 2.5)], r"click 0 \(1, 2, 2.5\) has a non-integer W coordinate"),
        ([(1, 2, True)], "non-integer"),
        ([(1, 2)], r"click 0 \(1, 2\) must have 3 coordinates"),
        (["abc"], "must be 3 integer coordinates"),
        (np.zeros((2, 3, 1), int), "k×3"),
    ],
)
def test_check_clicks_messages(points, match):
    with pytest.raises(ClickError, match=match):
        check_clicks(points, (4, 5, 6))


def test_check_clicks_custom_name():
    with pytest.raises(ClickError, match=r"^--point 0 \(9, 9, 9\)"):
        check_clicks([[9, 9, 9]], (4, 5, 6), name="--point")


def test_label_rows_are_checked() -> None:
    """The boundary's check of click labels (the model checks their shape only)."""
    C.check_label_rows(np.array([[True, False, True]]), negative_clicks=True)
    C.check_label_rows(np.array([True, True]), negative_clicks=False)  # one prompt, 1-D
    with pytest.raises(C.ClickError, match="a negative click alone marks no object"):
        C.check_label_rows(np.array([[True, False], [False, False]]), negative_clicks=True)
    with pytest.raises(C.ClickError, match="negative_clicks=False"):
        C.check_label_rows(np.array([[True, False]]), negative_clicks=False)
