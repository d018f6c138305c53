"""Dice and NSD (sam3d.evaluation.metrics) against hand-computed values and independent references.

References: a brute-force NSD on boundary voxels (mask minus its 6-connected erosion, distances
by scipy's EDT or by explicit pairs), and DeepMind's ``surface-distance`` package (the official
evaluation's) for the surfel definition, when installed (test extra).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss
from scipy import ndimage

from sam3d.evaluation.metrics import dice, nsd

ANISO = (0.7, 0.7, 2.5)


def _cube(shape=(10, 10, 10), lo=(2, 2, 2), side=4) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[tuple(slice(a, a + side) for a in lo)] = True
    return m


def _boundary(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m)  # cross structure, outside = background


def _nsd_edt(p: np.ndarray, g: np.ndarray, spacing, tol: float) -> float:
    """Voxel-boundary NSD with scipy's exact EDT in mm."""
    bp, bg = _boundary(p), _boundary(g)
    to_g = ndimage.distance_transform_edt(~bg, sampling=spacing)[bp]
    to_p = ndimage.distance_transform_edt(~bp, sampling=spacing)[bg]
    return ((to_g <= tol).sum() + (to_p <= tol).sum()) / (bp.sum() + bg.sum())


def _nsd_pairs(p: np.ndarray, g: np.ndarray, spacing, tol: float) -> float:
    """Voxel-boundary NSD from every pairwise distance (small shapes only)."""
    cp = np.argwhere(_boundary(p)) * np.asarray(spacing)
    cg = np.argwhere(_boundary(g)) * np.asarray(spacing)
    dist = np.sqrt(((cp[:, None, :] - cg[None, :, :]) ** 2).sum(-1))
    ok = (dist.min(axis=1) <= tol).sum() + (dist.min(axis=0) <= tol).sum()
    return ok / (len(cp) + len(cg))


def _blobs(seed: int, shape=(12, 14, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = ndimage.binary_opening(rng.random(shape) < 0.55)
    p = ndimage.binary_dilation(rng.random(shape) < 0.15)
    assert g.any() and p.any()
    return p, g


# ------------------------------------------------------------------------------- Dice


def test_dice_of_two_cubes_with_half_overlap():
    a = _cube(lo=(0, 0, 0))  # 64 voxels
    b = _cube(lo=(2, 0, 0))  # 64 voxels, 2×4×4 = 32 shared
    assert dice(a, b) == pytest.approx(2 * 32 / 128)


def test_dice_of_a_cube_inside_another():
    outer, inner = _cube(side=4), _cube(lo=(3, 3, 3), side=2)  # 64 and 8 voxels
    assert dice(inner, outer) == pytest.approx(16 / 72)
    assert dice(outer, inner) == pytest.approx(16 / 72)


def test_dice_identical_and_disjoint():
    a = _cube(lo=(0, 0, 0))
    assert dice(a, a) == 1.0
    assert dice(a, _cube(lo=(5, 5, 5))) == 0.0


def test_dice_empty_conventions():
    empty, cube = np.zeros((6, 6, 6), bool), _cube((6, 6, 6), (1, 1, 1), 3)
    assert dice(empty, empty) == 1.0
    assert dice(empty, cube) == 0.0
    assert dice(cube, empty) == 0.0


def test_dice_accepts_numpy_torch_and_0_1_numbers():
    p, g = _blobs(0)
    expected = 2 * (p & g).sum() / (p.sum() + g.sum())
    for pred, gt in [(p, g), (torch.from_numpy(p), torch.from_numpy(g)),
                     (p.astype(np.uint8), g.astype(np.float32)), (torch.from_numpy(p), g)]:
        assert dice(pred, gt) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dice_matches_the_official_smoothed_dice_loss(seed):
    p, g = _blobs(seed)
    loss = DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5, reduction="none")
    official = 1 - float(loss(torch.from_numpy(p)[None, None].float(),
                              torch.from_numpy(g)[None, None].float()).squeeze())
    assert dice(p, g) == pytest.approx(official, abs=1e-5 / (p.sum() + g.sum()) + 1e-7)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((4, 4)), ValueError, "3-D"),
    (np.full((4, 4, 4), 0.5), ValueError, "binary"),
    (np.full((4, 4, 4), 2), ValueError, "binary"),
    ([[[1]]], TypeError, "numpy array or torch tensor"),
    (np.zeros((0, 4, 4), bool), ValueError, "no voxel"),
])
def test_dice_rejects_bad_masks(bad, error, match):
    with pytest.raises(error, match=match):
        dice(bad, np.zeros((4, 4, 4), bool))


def test_dice_rejects_different_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\) vs \(4, 4, 5\)"):
        dice(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 5), bool))


# -------------------------------------------------------------------- NSD, hand-computed


# Cube of side 4 shifted by one voxel along axis 0: each boundary has 56 voxels, 36 of them
# shared with the other boundary (distance 0). With spacing s along axis 0: 16 voxels (the far
# face) lie s away; the 4 face-centre voxels of the near face lie min(s, in-plane spacing) away.
@pytest.mark.parametrize("spacing, tol, expected", [
    ((1.0, 1.0, 1.0), 0.5, 72 / 112),
    ((1.0, 1.0, 1.0), 1.0, 1.0),
    ((2.5, 0.7, 0.7), 0.5, 72 / 112),
    ((2.5, 0.7, 0.7), 1.0, 80 / 112),
    ((2.5, 0.7, 0.7), 2.4, 80 / 112),
    ((2.5, 0.7, 0.7), 3.0, 1.0),
])
def test_nsd_voxel_shifted_cube(spacing, tol, expected):
    g, p = _cube(), _cube(lo=(3, 2, 2))
    assert nsd(p, g, spacing, tol, surface="voxel") == pytest.approx(expected, abs=1e-6)
    assert _nsd_pairs(p, g, spacing, tol) == pytest.approx(expected)


@pytest.mark.parametrize("surface", ["surfel", "voxel"])
def test_nsd_shift_within_and_beyond_tolerance(surface):
    g, p = _cube(), _cube(lo=(3, 2, 2))
    assert nsd(g, g, ANISO, 0.0, surface=surface) == pytest.approx(1.0)
    assert nsd(p, g, (1.0, 1.0, 1.0), 1.0, surface=surface) == pytest.approx(1.0)
    assert nsd(p, g, (1.0, 1.0, 1.0), 0.5, surface=surface) < 1.0
    near, far = _cube((20, 10, 10)), _cube((20, 10, 10), (14, 2, 2))  # ≥ 8 mm apart
    assert nsd(far, near, (1.0, 1.0, 1.0), 5.0, surface=surface) == 0.0


@pytest.mark.parametrize("surface", ["surfel", "voxel"])
def test_nsd_applies_spacing_to_the_right_axis(surface):
    g = _cube()
    along_fine, along_coarse = _cube(lo=(3, 2, 2)), _cube(lo=(2, 2, 3))
    assert nsd(along_fine, g, ANISO, 1.0, surface=surface) == pytest.approx(1.0)
    assert nsd(along_coarse, g, ANISO, 1.0, surface=surface) < 0.9


@pytest.mark.parametrize("surface", ["surfel", "voxel"])
def test_nsd_empty_conventions_without_warnings(surface):
    empty, cube = np.zeros((8, 8, 8), bool), _cube((8, 8, 8), (2, 2, 2), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nsd(empty, empty, ANISO, surface=surface) == 1.0
        assert nsd(empty, cube, ANISO, surface=surface) == 0.0
        assert nsd(cube, empty, ANISO, surface=surface) == 0.0


# ---------------------------------------------------------------- NSD vs references


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO, (2.5, 0.8, 1.3)])
def test_nsd_voxel_matches_brute_force(seed, spacing):
    p, g = _blobs(seed)
    for tol in (0.6, 1.9, 5.0):
        ref = _nsd_edt(p, g, spacing, tol)
        assert nsd(p, g, spacing, tol, surface="voxel") == pytest.approx(ref, abs=1e-6)


def test_brute_force_references_agree():
    p, g = _blobs(7, shape=(8, 9, 10))
    for tol in (0.6, 1.9, 3.1):
        assert _nsd_edt(p, g, ANISO, tol) == pytest.approx(_nsd_pairs(p, g, ANISO, tol))


def _deepmind_nsd(p, g, spacing, tol):
    import surface_distance as sd  # the test extra
    with warnings.catch_warnings():  # the package uses deprecated scipy.ndimage namespaces
        warnings.simplefilter("ignore", DeprecationWarning)
        distances = sd.compute_surface_distances(g, p, spacing)
    return sd.compute_surface_dice_at_tolerance(distances, tol)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), ANISO, (2.5, 0.8, 1.3)])
def test_nsd_surfel_matches_deepmind_surface_distance(seed, spacing):
    p, g = _blobs(seed)
    for tol in (0.6, 1.9, 5.0):
        ref = _deepmind_nsd(p, g, spacing, tol)
        assert nsd(p, g, spacing, tol) == pytest.approx(ref, abs=1e-5)


def test_nsd_surfel_matches_deepmind_on_shifted_cubes():
    g = _cube()
    for lo in [(3, 2, 2), (2, 3, 2), (2, 2, 3)]:
        p = _cube(lo=lo)
        for tol in (0.3, 1.0, 2.0):
            assert nsd(p, g, ANISO, tol) == pytest.approx(_deepmind_nsd(p, g, ANISO, tol),
                                                          abs=1e-5)


def test_nsd_default_tolerance_is_5_mm():
    g, p = _cube((16, 10, 10), (2, 2, 2)), _cube((16, 10, 10), (6, 2, 2))  # 4 voxels apart
    assert nsd(p, g, (1.0, 1.0, 1.0)) == 1.0
    assert nsd(p, g, (1.5, 1.0, 1.0)) < 1.0  # 6 mm


@pytest.mark.parametrize("kwargs, match", [
    ({"spacing": (1.0, 1.0)}, "spacing"),
    ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
    ({"spacing": (1.0, math.nan, 1.0)}, "spacing"),
    ({"spacing": "1,1,1"}, "spacing"),
    ({"tolerance_mm": -1.0}, "tolerance_mm"),
    ({"tolerance_mm": math.inf}, "tolerance_mm"),
    ({"surface": "mesh"}, "surface"),
])
def test_nsd_rejects_bad_arguments(kwargs, match):
    args = {"spacing": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(ValueError, match=match):
        nsd(_cube(), _cube(), **args)


def test_nsd_rejects_non_binary_and_mismatched_masks():
    with pytest.raises(ValueError, match="binary"):
        nsd(np.full((4, 4, 4), 0.5), np.zeros((4, 4, 4)), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shapes differ"):
        nsd(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), (1.0, 1.0, 1.0))
