"""Lesion-centred training crops (sam3d.data.lesion_crops): the draw, the cut, the chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import write_case

from sam3d.data.lesion_crops import LesionCentredCropd, draw_lesion_voxel
from sam3d.data.specs import get_spec
from sam3d.data.transforms import build_transforms
from sam3d.inference.roi import crop_roi, roi_box

SPEC = get_spec("custom", target=2, window=(-100.0, 200.0), mean=50.0, std=20.0)


def _lesions() -> np.ndarray:
    """20³: a 5³ lesion (125 voxels), a 2×2×1 one (4 voxels) and a single voxel."""
    mask = np.zeros((20, 20, 20), bool)
    mask[2:7, 2:7, 2:7] = True
    mask[12:14, 12:14, 12] = True
    mask[18, 1, 18] = True
    return mask


def test_only_lesions_of_min_voxels_are_drawn_and_each_voxel_of_them_can_be():
    mask = _lesions()
    rng = np.random.RandomState(0)
    drawn = [draw_lesion_voxel(mask, rng, min_voxels=100) for _ in range(2000)]
    assert all(mask[v] for v in drawn)
    big = {tuple(int(i) for i in p) for p in np.argwhere(mask[:10, :10, :10])}
    assert set(drawn) <= big
    assert len(set(drawn)) > 110  # uniform over the lesion's 125 voxels
    # no lesion that large: every lesion counts, drawn ∝ voxels ** power
    small = mask.copy()
    small[:10, :10, :10] = False
    picks = [draw_lesion_voxel(small, rng, min_voxels=100, power=0.0) for _ in range(2000)]
    single = sum(p == (18, 1, 18) for p in picks)
    assert 850 <= single <= 1150  # power 0: both lesions alike, whatever their size
    picks = [draw_lesion_voxel(small, rng, min_voxels=100, power=1.0) for _ in range(2000)]
    assert 250 <= sum(p == (18, 1, 18) for p in picks) <= 550  # power 1: 1 voxel of 5


def test_the_power_balances_large_and_small_lesions():
    mask = np.zeros((30, 30, 30), bool)
    mask[1:11, 1:11, 1:11] = True  # 1000 voxels
    mask[20:25, 20:25, 20:24] = True  # 100 voxels
    rng = np.random.RandomState(1)
    small = [draw_lesion_voxel(mask, rng, power=0.5)[0] >= 20 for _ in range(4000)]
    # totals 1000 ** 0.5 = 31.6 and 100 ** 0.5 = 10: the small one 10 / 41.6 = 24 % of draws
    assert 0.20 <= np.mean(small) <= 0.28


def _whole_volume_draw(mask, rng, min_voxels=100, power=0.5):
    """The draw of the module's rule, numbered and listed over the whole volume (the oracle
    for the bounding-box shortcut of draw_lesion_voxel)."""
    from scipy import ndimage

    comp, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:].astype(np.float64)
    kept = sizes >= min_voxels
    weights = np.where(kept if kept.any() else sizes > 0, sizes ** power, 0.0)
    lesion = 1 + int(rng.choice(n, p=weights / weights.sum()))
    voxels = np.flatnonzero(comp.ravel() == lesion)
    return tuple(int(v) for v in np.unravel_index(voxels[rng.integers(len(voxels))],
                                                  mask.shape))


def test_the_draw_is_the_whole_volume_draw():
    """Lesions scattered in a larger volume (one touching its last corner): the same voxel
    for the same generator state as numbering the lesions over the whole volume."""
    gen = np.random.default_rng(7)
    mask = np.zeros((30, 40, 50), bool)
    for _ in range(12):
        c = gen.integers((3, 3, 3), (27, 37, 47))
        r = gen.integers(1, 4)
        mask[c[0] - r:c[0] + r, c[1] - r:c[1] + r + 1, c[2] - r - 1:c[2] + r] = True
    mask[-3:, -2:, -4:] = True
    for seed in range(20):
        for min_voxels, power in ((1, 0.5), (40, 1.0), (10**6, 0.0)):
            ours = draw_lesion_voxel(mask, np.random.default_rng(seed), min_voxels, power)
            assert ours == _whole_volume_draw(mask, np.random.default_rng(seed), min_voxels,
                                              power)


def test_no_lesion_any_voxel_and_bad_arguments():
    rng = np.random.default_rng(0)
    v = draw_lesion_voxel(np.zeros((3, 4, 5), bool), rng)
    assert all(0 <= a < s for a, s in zip(v, (3, 4, 5), strict=True))
    with pytest.raises(ValueError, match="min_voxels"):
        draw_lesion_voxel(_lesions(), rng, min_voxels=0)
    with pytest.raises(ValueError, match="power"):
        draw_lesion_voxel(_lesions(), rng, power=1.5)
    with pytest.raises(ValueError, match="D×H×W"):
        draw_lesion_voxel(np.zeros((3, 3), bool), rng)
    with pytest.raises(ValueError, match="crop"):
        LesionCentredCropd(("image", "label"), crop=1)


def test_the_crop_is_the_test_roi_of_a_click_on_the_drawn_voxel():
    mask = _lesions()
    image = torch.arange(mask.size, dtype=torch.float32).reshape(1, *mask.shape)
    label = torch.as_tensor(mask[None], dtype=torch.float32)
    crop = LesionCentredCropd(("image", "label"), crop=16)
    crop.set_random_state(seed=3)
    for _ in range(20):
        out = crop({"image": image, "label": label})
        assert out["image"].shape == (1, 16, 16, 16) and out["label"].shape == (1, 16, 16, 16)
        assert out["label"][0, 8, 8, 8] == 1  # the drawn voxel: index crop // 2
        flat = int(out["image"][0, 8, 8, 8])
        voxel = np.unravel_index(flat, mask.shape)
        box = roi_box([voxel], mask.shape, 16)  # exactly the ROI a click there gets
        assert torch.equal(out["image"], crop_roi(image, box))
        assert torch.equal(out["label"], crop_roi(label, box))


@pytest.mark.parametrize("mode", ["train", "val"])
def test_the_chain_centres_every_crop_on_a_lesion_voxel(tmp_path, mode):
    image = np.full((40, 36, 30), 60.0, np.float32)
    lab = np.zeros(image.shape, np.uint8)
    lab[4:12, 4:12, 4:12] = 2  # 512 voxels at one end
    lab[30:35, 28:33, 22:27] = 2  # 125 at the other
    image[lab == 2] = 20.0
    write_case(tmp_path, "two", image, lab, np.eye(4))
    case = {"case": "two", "image": str(tmp_path / "two" / "image.nii.gz"),
            "label": str(tmp_path / "two" / "label.nii.gz"), "target": 2}
    chain = build_transforms(SPEC, mode, crop=16, seed=0, sampling="lesion")
    sizes = set()
    for _ in range(12):
        out = chain(case)
        out = out[0] if isinstance(out, list) else out
        assert out["image"].shape == (3, 16, 16, 16)
        assert out["label"][0, 8, 8, 8] == 1
        sizes.add(int(out["label"].sum()))
    assert len(sizes) > 1  # both lesions are drawn
    with pytest.raises(ValueError, match="sampling"):
        build_transforms(SPEC, mode, crop=16, sampling="nope")
